//! Durable state survives the gateway: messages, subscriptions and presence after a
//! restart on the same data directory.

use tern_client::{Availability, Basic, Event, Presence, ReceiptStatus, Tuple};
use tern_tests::{Harness, expect_event};

#[tokio::test]
async fn messages_and_subscriptions_survive_a_gateway_restart() {
    let mut gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob_token = gw.add_user("bob@example.com");
    {
        let alice = gw.connect("alice@example.com", &alice_token).await;
        let bob = gw.connect("bob@example.com", &bob_token).await;
        bob.subscribe("alice@example.com".into()).await.unwrap();
        bob.close().await;
        for i in 0..5 {
            let body = format!("stored {i}").into_bytes();
            let outcome = alice
                .send("bob@example.com".into(), body, None)
                .await
                .unwrap();
            assert_eq!(outcome.status, ReceiptStatus::Stored);
        }
        alice.close().await;
    }

    gw.restart().await;

    let bob = gw.connect("bob@example.com", &bob_token).await;
    for i in 0..5 {
        let body = expect_event(&bob, |e| match e {
            Event::Message { message, .. } => Some(message.body),
            _ => None,
        })
        .await;
        assert_eq!(body, format!("stored {i}").into_bytes());
    }
    let alice = gw.connect("alice@example.com", &alice_token).await;
    let presence = Presence {
        tuples: vec![Tuple {
            id: "laptop".into(),
            basic: Basic::Open,
            availability: Some(Availability::AVAILABLE),
            contact: None,
            note: Some("after the restart".into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    };
    alice.publish(presence).await.unwrap();
    let note = expect_event(&bob, |e| match e {
        Event::Presence(doc) if doc.presence.is_open() => doc.presence.tuples[0].note.clone(),
        _ => None,
    })
    .await;
    assert_eq!(
        note, "after the restart",
        "the subscription outlived the restart"
    );
}
