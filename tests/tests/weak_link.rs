//! tern through a bad link: every client here talks to a real gateway through the
//! link emulator (tern-linkem) with the delay, loss and outages of a phone on a train.
//! Timers are scaled down in some tests (idle timeout, resumption window) so that an
//! outage longer than them fits in a test; the behaviour is the same at any scale.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tern_client::{Client, ClientConfig, Event};
use tern_tests::linkem::impairment::Impairment;
use tern_tests::linkem::relay::{LinkConfig, Linkem};
use tern_tests::{Harness, open_presence};

/// 200 ms each way (400 ms RTT), ±20 ms jitter, 5 % loss each way.
fn train() -> Impairment {
    Impairment {
        delay: Duration::from_millis(200),
        jitter: Duration::from_millis(20),
        loss: 0.05,
        ..Impairment::default()
    }
}

async fn link(gw: &Harness, impairment: Impairment, seed: u64) -> Linkem {
    let config = LinkConfig::new(gw.addr()).symmetric(impairment).seed(seed);
    Linkem::start(config).await.expect("link emulator starts")
}

fn through(gw: &Harness, link: &Linkem, user: &str, token: &str) -> ClientConfig {
    let mut config = gw.client_config(user, token);
    config.gateway = link.addr().to_string();
    config.request_timeout = Duration::from_secs(60);
    config
}

/// Reads events until `done` says so or `limit` passes; returns what was seen.
async fn collect_until(
    client: &Client,
    limit: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(event) = client.next_event().await {
            let stop = done(&event);
            seen.push(event);
            if stop {
                return;
            }
        }
    })
    .await;
    seen
}

fn bodies(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(String::from_utf8_lossy(&message.body).into()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_over_a_lossy_400ms_link_arrive_once_in_order() {
    const N: usize = 1_000;
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob_token = gw.add_user("bob@example.com");
    let alice_link = link(&gw, train(), 11).await;
    let bob_link = link(&gw, train(), 12).await;
    let alice = Client::connect(through(&gw, &alice_link, "alice@example.com", &alice_token))
        .await
        .expect("alice connects over the bad link");
    let bob = Client::connect(through(&gw, &bob_link, "bob@example.com", &bob_token))
        .await
        .expect("bob connects over the bad link");

    let receiving = tokio::spawn(async move {
        let mut count = 0;
        let events = collect_until(&bob, Duration::from_secs(120), |e| {
            count += usize::from(matches!(e, Event::Message { .. }));
            count == N
        })
        .await;
        // Take a little more: a duplicate would show up here.
        let extra = collect_until(&bob, Duration::from_secs(2), |_| false).await;
        (events, extra)
    });
    // Sends are issued in order, many in flight at once (the client writes them to its
    // session stream in the order they are first polled).
    let outcomes: Vec<_> = futures::stream::iter(0..N)
        .map(|i| alice.send("bob@example.com".into(), format!("{i}").into_bytes(), None))
        .buffered(128)
        .collect()
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "every send answered");

    let (events, extra) = receiving.await.expect("receiver");
    let got = bodies(&events);
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got.len(), N, "all arrived");
    assert_eq!(got, expected, "in the order sent, each once");
    assert!(
        bodies(&extra).is_empty(),
        "no duplicates afterwards: {extra:?}"
    );
    let stats = alice_link.stats();
    println!(
        "alice's link: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_converges_to_the_last_published_value_over_a_lossy_link() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let alice_link = link(&gw, train(), 21).await;
    let alice = Client::connect(through(&gw, &alice_link, "alice@example.com", &alice_token))
        .await
        .expect("alice connects");
    let mut watchers = Vec::new();
    for i in 0..3 {
        let who = format!("watcher{i}@example.com");
        let token = gw.add_user(&who);
        let wlink = link(&gw, train(), 30 + i).await;
        let client = Client::connect(through(&gw, &wlink, &who, &token))
            .await
            .expect("watcher connects");
        client
            .subscribe("alice@example.com".into())
            .await
            .expect("subscribed");
        watchers.push((client, wlink));
    }
    let published: Vec<_> = futures::stream::iter(0..50)
        .map(|i| alice.publish(open_presence(&format!("state {i}"))))
        .buffered(16)
        .collect()
        .await;
    assert!(published.iter().all(Result::is_ok));
    for (watcher, _link) in &watchers {
        let mut last = None;
        let _ = collect_until(watcher, Duration::from_secs(30), |e| {
            if let Event::Presence(doc) = e {
                last = doc.presence.tuples.first().and_then(|t| t.note.clone());
            }
            last.as_deref() == Some("state 49")
        })
        .await;
        assert_eq!(last.as_deref(), Some("state 49"), "every watcher converges");
    }
}

/// A gateway whose timers are scaled down: a link silent for 1.5 s is dead, and a dead
/// device session is kept 4 s for resumption.
async fn fast_gateway() -> Harness {
    Harness::start_with(|c| {
        c.timeouts.idle_timeout_ms = 1_500;
        c.timeouts.resume_window_ms = 4_000;
        c.timeouts.client_keepalive_ms = 400;
    })
    .await
}

fn fast_client(gw: &Harness, link: &Linkem, user: &str, token: &str) -> ClientConfig {
    let mut config = through(gw, link, user, token);
    config.idle_timeout = Duration::from_millis(1_500);
    config.keepalive = Duration::from_millis(400);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_shorter_than_the_grace_period_shows_watchers_no_flap() {
    let gw = fast_gateway().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob_token = gw.add_user("bob@example.com");
    let mut direct = gw.client_config("bob@example.com", &bob_token);
    direct.idle_timeout = Duration::from_millis(1_500);
    direct.keepalive = Duration::from_millis(400);
    let bob = Client::connect(direct).await.expect("bob connects");
    let alice_link = link(&gw, Impairment::default(), 41).await;
    let alice = Client::connect(fast_client(
        &gw,
        &alice_link,
        "alice@example.com",
        &alice_token,
    ))
    .await
    .expect("alice connects");
    alice
        .publish(open_presence("on the train"))
        .await
        .expect("published");
    bob.subscribe("alice@example.com".into())
        .await
        .expect("subscribed");

    // A tunnel: 2.5 s of nothing, longer than the idle timeout (the gateway notices the
    // link is dead) and shorter than the resumption window.
    alice_link.blackout_for(Duration::from_millis(2_500));
    let during = collect_until(&bob, Duration::from_secs(5), |_| false).await;
    assert!(
        !during.iter().any(|e| matches!(e, Event::Presence(_))),
        "no CLOSED/OPEN flap for the watcher: {during:?}"
    );
    // alice is back and usable.
    alice
        .publish(open_presence("out of the tunnel"))
        .await
        .expect("publishes again");
    let after = collect_until(&bob, Duration::from_secs(5), |e| {
        matches!(e, Event::Presence(_))
    })
    .await;
    assert!(after.iter().any(|e| matches!(e, Event::Presence(d)
        if d.presence.tuples[0].note.as_deref() == Some("out of the tunnel"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_inside_and_beyond_the_resumption_window_lose_and_duplicate_nothing() {
    // A link silent for 3 s is dead; a dead device session is kept 20 s. A 5 s outage
    // ends in a resumption; a 60 s one outlasts the window and ends in a fresh session.
    let gw = Harness::start_with(|c| {
        c.timeouts.idle_timeout_ms = 3_000;
        c.timeouts.resume_window_ms = 20_000;
        c.timeouts.client_keepalive_ms = 1_000;
    })
    .await;
    let alice_token = gw.add_user("alice@example.com");
    let slow_timers = |mut config: ClientConfig| {
        config.idle_timeout = Duration::from_secs(3);
        config.keepalive = Duration::from_secs(1);
        config
    };
    let alice = Client::connect(slow_timers(
        gw.client_config("alice@example.com", &alice_token),
    ))
    .await
    .expect("alice connects");
    let bob_token = gw.add_user("bob@example.com");
    let bob_link = link(&gw, Impairment::default(), 51).await;
    let bob = Client::connect(slow_timers(through(
        &gw,
        &bob_link,
        "bob@example.com",
        &bob_token,
    )))
    .await
    .expect("bob connects");
    // Bob's app reads all the time, as a real one does (reading acknowledges).
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(event) = bob.next_event().await {
            if let Event::Message { message, .. } = event {
                let _ = seen_tx.send(String::from_utf8_lossy(&message.body).into_owned());
            }
        }
    });
    let mut sent = 0usize;
    let mut got: Vec<String> = Vec::new();
    for outage in [Duration::from_secs(5), Duration::from_secs(60)] {
        // Traffic, then an outage in the middle of traffic, then more traffic.
        for _ in 0..10 {
            alice
                .send(
                    "bob@example.com".into(),
                    sent.to_string().into_bytes(),
                    None,
                )
                .await
                .expect("sent");
            sent += 1;
        }
        bob_link.blackout_for(outage);
        for _ in 0..10 {
            alice
                .send(
                    "bob@example.com".into(),
                    sent.to_string().into_bytes(),
                    None,
                )
                .await
                .expect("sent during the outage");
            sent += 1;
        }
        while got.len() < sent {
            let next = tokio::time::timeout(Duration::from_secs(90), seen.recv()).await;
            match next {
                Ok(Some(body)) => got.push(body),
                _ => panic!("only {} of {sent} arrived: {got:?}", got.len()),
            }
        }
    }
    // A duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(body) = seen.try_recv() {
        got.push(body);
    }
    reader.abort();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "nothing twice: {got:?}");
    let expected: Vec<String> = (0..sent).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "nothing lost, in order");
}
