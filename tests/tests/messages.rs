//! The instant-message service end to end: delivery online and offline, receipts for
//! every outcome, de-duplication, order, content types.

use std::time::Duration;

use tern_client::{ErrorCode, Event, Message, ReceiptStatus};
use tern_gateway::users::UserOptions;
use tern_tests::raw::RawSession;
use tern_tests::{Harness, events_within, expect_event};
use tern_wire::{Down, Up};

fn message_body(event: Event) -> Option<Vec<u8>> {
    match event {
        Event::Message { message, .. } => Some(message.body),
        _ => None,
    }
}

#[tokio::test]
async fn message_to_online_user_is_delivered_with_a_delivered_receipt() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;

    let receiving = tokio::spawn(async move {
        let got = expect_event(&bob, |e| match e {
            Event::Message { message, .. } => Some(message),
            _ => None,
        })
        .await;
        // Asking for the next event acknowledges the message.
        let _ = events_within(&bob, Duration::from_millis(300)).await;
        got
    });
    let outcome = alice
        .send("bob@example.com".into(), b"hello bob".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(outcome.status, ReceiptStatus::Delivered);
    let got = receiving.await.unwrap();
    assert_eq!(got.from, "alice@example.com", "stamped by the gateway");
    assert_eq!(got.to, "bob@example.com");
    assert_eq!(got.body, b"hello bob");
    assert_eq!(got.id, outcome.id);
    assert!(got.sent > 0);
}

#[tokio::test]
async fn message_to_offline_user_is_stored_then_delivered_and_receipted_late() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob_token = gw.add_user("bob@example.com");

    let outcome = alice
        .send(
            "bob@example.com".into(),
            b"while you were out".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome.status, ReceiptStatus::Stored);

    let bob = gw.connect("bob@example.com", &bob_token).await;
    let body = expect_event(&bob, message_body).await;
    assert_eq!(body, b"while you were out");
    let _ = events_within(&bob, Duration::from_millis(300)).await; // acknowledges

    let late = expect_event(&alice, |e| match e {
        Event::Receipt { receipt, .. } => Some(receipt),
        _ => None,
    })
    .await;
    assert_eq!(late.id, outcome.id);
    assert_eq!(late.to, "bob@example.com");
    assert_eq!(late.status, ReceiptStatus::Delivered);
}

#[tokio::test]
async fn offline_messages_arrive_in_the_order_sent() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob_token = gw.add_user("bob@example.com");
    for i in 0..40u32 {
        let body = format!("message {i}").into_bytes();
        let sent = alice
            .send("bob@example.com".into(), body, None)
            .await
            .unwrap();
        assert_eq!(sent.status, ReceiptStatus::Stored);
    }
    let bob = gw.connect("bob@example.com", &bob_token).await;
    for i in 0..40u32 {
        let body = expect_event(&bob, message_body).await;
        assert_eq!(body, format!("message {i}").into_bytes());
    }
}

#[tokio::test]
async fn failed_receipts_say_why() {
    let gw = Harness::start_with(|c| c.limits.body_max = 1_000).await;
    let alice = gw.user("alice@example.com").await;
    gw.add_user("bob@example.com");
    let cases = [
        (
            "nobody@example.com",
            vec![b'x'; 10],
            ErrorCode::UNKNOWN_USER,
        ),
        ("bob@elsewhere.net", vec![b'x'; 10], ErrorCode::UNROUTABLE),
    ];
    for (to, body, code) in cases {
        let outcome = alice.send(to.into(), body, None).await.unwrap();
        assert_eq!(outcome.status, ReceiptStatus::Failed(code), "to {to}");
    }
    // The client refuses an oversize body before it costs radio time...
    let local = alice
        .send("bob@example.com".into(), vec![b'x'; 1_001], None)
        .await
        .unwrap_err();
    assert!(local.to_string().contains("limit"), "{local}");
    // ...and the gateway refuses it from a client that does not check.
    let token = gw.add_user("mallory@example.com");
    let mut raw = RawSession::login(gw.addr(), &gw.cert_pem(), "mallory@example.com", &token).await;
    assert!(matches!(raw.recv().await, Some(Down::Welcome(_))));
    let oversize = Message {
        id: vec![1; 16],
        to: "bob@example.com".into(),
        reply_to: None,
        content_type: None,
        body: vec![b'x'; 1_001],
    };
    raw.send(&Up::Send {
        req: 9,
        msg: oversize,
    })
    .await;
    assert_eq!(
        raw.recv().await,
        Some(Down::Receipt {
            req: 9,
            status: ReceiptStatus::Failed(ErrorCode::TOO_LARGE)
        })
    );
    // A body exactly at the limit goes through.
    let ok = alice
        .send("bob@example.com".into(), vec![b'x'; 1_000], None)
        .await
        .unwrap();
    assert_eq!(ok.status, ReceiptStatus::Stored);
}

#[tokio::test]
async fn the_same_message_id_sent_twice_is_delivered_once() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob_token = gw.add_user("bob@example.com");
    let message = Message {
        id: vec![7; 16],
        to: "bob@example.com".into(),
        reply_to: None,
        content_type: None,
        body: b"only once".to_vec(),
    };
    let first = alice.send_message(message.clone()).await.unwrap();
    let second = alice.send_message(message).await.unwrap();
    assert_eq!(first.status, ReceiptStatus::Stored);
    assert_eq!(
        second.status,
        ReceiptStatus::Stored,
        "the resend reports the original"
    );

    let bob = gw.connect("bob@example.com", &bob_token).await;
    let mut bodies = Vec::new();
    for event in events_within(&bob, Duration::from_millis(800)).await {
        if let Some(body) = message_body(event) {
            bodies.push(body);
        }
    }
    assert_eq!(bodies, vec![b"only once".to_vec()]);
}

#[tokio::test]
async fn content_type_reply_to_and_binary_bodies_are_carried() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob_token = gw.add_user("bob@example.com");
    let body: Vec<u8> = (0..=255).collect();
    let message = Message {
        id: tern_client::new_message_id(),
        to: "bob@example.com".into(),
        reply_to: Some("Team@Example.com".into()),
        content_type: Some("application/octet-stream".into()),
        body: body.clone(),
    };
    alice.send_message(message).await.unwrap();
    let bob = gw.connect("bob@example.com", &bob_token).await;
    let got = expect_event(&bob, |e| match e {
        Event::Message { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(got.body, body);
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(got.reply_to.as_deref(), Some("team@example.com"));
}

#[tokio::test]
async fn an_inbox_alias_reaches_its_principal() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let options = UserOptions {
        presentity: false,
        inbox: true,
        aliases: vec!["helpdesk@example.com".into()],
    };
    let desk_token = gw.add_user_with("dave@example.com", options);
    let sent = alice
        .send(
            "helpdesk@example.com".into(),
            b"printer on fire".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.status, ReceiptStatus::Stored);
    let dave = gw.connect("dave@example.com", &desk_token).await;
    let got = expect_event(&dave, |e| match e {
        Event::Message { message, .. } => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(got.to, "helpdesk@example.com");
    // Dave has an inbox but no presentity.
    let err = alice.fetch("dave@example.com".into()).await.unwrap_err();
    assert!(err.to_string().contains("unknown_user"), "{err}");
}
