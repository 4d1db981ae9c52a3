//! The presence service end to end: real gateway, real clients, real QUIC on loopback.

use std::time::Duration;

use tern_client::{Availability, Basic, Event, Presence, Tuple};
use tern_tests::relay::Relay;
use tern_tests::{Harness, events_within, expect_event};

fn presence(basic: Basic, availability: Availability, note: &str) -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic,
            availability: Some(availability),
            contact: Some("tern:alice@example.com".into()),
            note: Some(note.into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    }
}

fn note_of(event: Event) -> Option<(bool, Option<String>)> {
    match event {
        Event::Presence(doc) => Some((
            doc.presence.is_open(),
            doc.presence.tuples.first().and_then(|t| t.note.clone()),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn publish_fetch_subscribe_notify_unsubscribe() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;

    alice
        .publish(presence(Basic::Open, Availability::AVAILABLE, "desk"))
        .await
        .unwrap();
    let fetched = bob.fetch("Alice@Example.com".into()).await.unwrap();
    assert_eq!(fetched.presentity, "alice@example.com");
    assert!(fetched.presence.is_open());
    assert!(fetched.updated > 0);

    let current = bob.subscribe("alice@example.com".into()).await.unwrap();
    assert_eq!(current.presence.tuples[0].note.as_deref(), Some("desk"));

    alice
        .publish(presence(Basic::Open, Availability::AWAY, "lunch"))
        .await
        .unwrap();
    let seen = expect_event(&bob, note_of).await;
    assert_eq!(seen, (true, Some("lunch".into())));

    bob.unsubscribe("alice@example.com".into()).await.unwrap();
    alice
        .publish(presence(Basic::Open, Availability::BUSY, "meeting"))
        .await
        .unwrap();
    let after = events_within(&bob, Duration::from_millis(500)).await;
    assert!(
        after.iter().all(|e| !matches!(e, Event::Presence(_))),
        "no notification after unsubscribing: {after:?}"
    );
}

#[tokio::test]
async fn fetch_and_subscribe_while_presentity_is_out_of_contact() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;

    let never = bob.fetch("alice@example.com".into()).await.unwrap();
    assert_eq!(never.updated, 0, "never published");
    assert!(!never.presence.is_open(), "reads CLOSED");

    let sub = bob.subscribe("alice@example.com".into()).await.unwrap();
    assert!(!sub.presence.is_open());

    let alice = gw.connect("alice@example.com", &alice_token).await;
    alice
        .publish(presence(Basic::Open, Availability::AVAILABLE, "back"))
        .await
        .unwrap();
    let seen = expect_event(&bob, note_of).await;
    assert_eq!(seen, (true, Some("back".into())));
}

#[tokio::test]
async fn last_published_presence_is_fetched_with_its_time_after_goodbye() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;
    alice
        .publish(presence(Basic::Open, Availability::AVAILABLE, "on call"))
        .await
        .unwrap();
    let open = bob.fetch("alice@example.com".into()).await.unwrap();
    alice.close().await;
    let later = bob.fetch("alice@example.com".into()).await.unwrap();
    assert!(!later.presence.is_open(), "CLOSED once out of contact");
    assert!(later.updated >= open.updated, "marked with its time");
    assert_eq!(later.presence.tuples[0].note.as_deref(), Some("on call"));
}

#[tokio::test]
async fn client_that_vanishes_without_goodbye_goes_closed_after_the_idle_timeout() {
    let gw = Harness::start_with(|c| {
        c.timeouts.idle_timeout_ms = 1_500;
        c.timeouts.client_keepalive_ms = 400;
        // A vanished device's session is parked this long before it is gone for good.
        c.timeouts.resume_window_ms = 500;
    })
    .await;
    let alice_token = gw.add_user("alice@example.com");
    let bob_token = gw.add_user("bob@example.com");
    // Both keep their links alive well within the gateway's 1.5 s idle timeout.
    let mut bob_config = gw.client_config("bob@example.com", &bob_token);
    bob_config.keepalive = Duration::from_millis(400);
    let bob = tern_client::Client::connect(bob_config).await.unwrap();
    let relay = Relay::start(gw.addr()).await.unwrap();
    let mut config = gw.client_config("alice@example.com", &alice_token);
    config.gateway = relay.addr().to_string();
    config.reconnect = false;
    config.keepalive = Duration::from_millis(400);
    let alice = tern_client::Client::connect(config).await.unwrap();
    alice
        .publish(presence(Basic::Open, Availability::AVAILABLE, "here"))
        .await
        .unwrap();
    bob.subscribe("alice@example.com".into()).await.unwrap();

    relay.cut(); // the cable is pulled: no goodbye reaches the gateway
    let started = tokio::time::Instant::now();
    let seen = expect_event(&bob, note_of).await;
    assert_eq!(seen, (false, Some("here".into())), "watcher sees CLOSED");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "detected by the timeout, not by a goodbye"
    );
    drop(alice);
}

#[tokio::test]
async fn subscriptions_to_unknown_users_and_foreign_domains_fail_clearly() {
    let gw = Harness::start().await;
    let bob = gw.user("bob@example.com").await;
    let unknown = bob
        .subscribe("nobody@example.com".into())
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("unknown_user"), "{unknown}");
    let foreign = bob.subscribe("x@elsewhere.net".into()).await.unwrap_err();
    assert!(foreign.to_string().contains("unroutable"), "{foreign}");
    let bad = bob.fetch("not-an-address".into()).await.unwrap_err();
    assert!(
        bad.to_string().contains("local@domain"),
        "checked before sending: {bad}"
    );
    // The session is still good.
    bob.fetch("bob@example.com".into()).await.unwrap();
}
