//! tern-client's synchronised presence against the real gateway (issue 4): its cache
//! survives a restart through the state directory, the next session states it and gets
//! only what changed, and the client's mode decides when the radio wakes.

use std::time::Duration;

use tern_client::{Client, ClientMode, Event};
use tern_tests::{Harness, events_within, expect_event, open_presence};

fn note(doc: &tern_client::PresenceDoc) -> Option<String> {
    doc.presence.tuples.first()?.note.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_states_its_cache_and_gets_only_what_changed() {
    let gw = Harness::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;
    let carol = gw.user("carol@example.com").await;
    bob.publish(open_presence("bob here"))
        .await
        .expect("published");
    carol
        .publish(open_presence("carol here"))
        .await
        .expect("published");

    let mut config = gw.client_config("alice@example.com", &token);
    config.state_dir = Some(state.path().to_path_buf());
    let alice = Client::connect(config.clone())
        .await
        .expect("alice connects");
    alice
        .subscribe("bob@example.com".into())
        .await
        .expect("subscribed");
    alice
        .subscribe("carol@example.com".into())
        .await
        .expect("subscribed");
    alice.close().await;
    drop(alice);

    carol
        .publish(open_presence("carol moved"))
        .await
        .expect("published");
    let alice = Client::connect(config).await.expect("alice reconnects");
    // Bob is known from the cache on disk, before anything arrives.
    let cached = alice.presence("bob@example.com".into()).expect("cached");
    assert_eq!(note(&cached).as_deref(), Some("bob here"));
    let changed = expect_event(&alice, |e| match e {
        Event::Presence(doc) => Some(doc),
        _ => None,
    })
    .await;
    assert_eq!(changed.presentity, "carol@example.com");
    assert_eq!(note(&changed).as_deref(), Some("carol moved"));
    let more = events_within(&alice, Duration::from_millis(500)).await;
    assert!(
        !more.iter().any(|e| matches!(e, Event::Presence(_))),
        "bob did not change and is not restated: {more:?}"
    );
    assert_eq!(alice.session_info().presentities, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_client_gets_presence_with_its_next_message_or_when_it_comes_back() {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;
    alice
        .subscribe("bob@example.com".into())
        .await
        .expect("subscribed");
    alice.set_mode(ClientMode::INACTIVE);
    // Let the mode reach the gateway before bob changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.publish(open_presence("in a meeting"))
        .await
        .expect("published");
    let quiet = events_within(&alice, Duration::from_millis(600)).await;
    assert!(
        !quiet.iter().any(|e| matches!(e, Event::Presence(_))),
        "held back in the background: {quiet:?}"
    );
    // Bob writes: the message arrives at once, and the presence with it.
    bob.send("alice@example.com".into(), b"ping".to_vec(), None)
        .await
        .expect("sent");
    let events = events_within(&alice, Duration::from_millis(600)).await;
    assert!(
        events.iter().any(|e| matches!(e, Event::Message { .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Presence(d) if note(d).as_deref() == Some("in a meeting"))),
        "{events:?}"
    );
    // Back to the foreground: changes come within the active delay.
    alice.set_mode(ClientMode::ACTIVE);
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.publish(open_presence("free")).await.expect("published");
    let doc = expect_event(&alice, |e| match e {
        Event::Presence(doc) => Some(doc),
        _ => None,
    })
    .await;
    assert_eq!(note(&doc).as_deref(), Some("free"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sensor_reads_asleep_until_its_wake_time_then_out_of_contact() {
    let gw = Harness::start_with(|c| c.timeouts.resume_window_ms = 1_000).await;
    let sensor = gw.user("sensor@example.com").await;
    let watcher = gw.user("watcher@example.com").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut asleep = open_presence("greenhouse");
    asleep.tuples[0].basic = tern_client::Basic::Closed;
    asleep.tuples[0].availability = Some(tern_client::Availability::ASLEEP);
    asleep.tuples[0].ext = vec![tern_client::Ext::wake(now + 2)];
    sensor.publish(asleep).await.expect("published");
    // The device says goodbye and sleeps: it is asleep, not dead.
    sensor.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let doc = watcher
        .fetch("sensor@example.com".into())
        .await
        .expect("fetched");
    let tuple = &doc.presence.tuples[0];
    assert!(tuple.asleep(), "{doc:?}");
    assert_eq!(tuple.wake_at(), Some(now + 2));
    // It did not come back by its wake time plus the grace period: out of contact.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let doc = watcher
        .fetch("sensor@example.com".into())
        .await
        .expect("fetched");
    let tuple = &doc.presence.tuples[0];
    assert!(!tuple.asleep() && tuple.wake_at().is_none(), "{doc:?}");
    assert_eq!(tuple.note.as_deref(), Some("greenhouse"));
}
