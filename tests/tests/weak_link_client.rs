//! The client's weak-link features against the real gateway, over real QUIC on loopback:
//! a process restart with a state directory resumes the device's session, a network
//! change moves the connection without a new handshake, and a reconnect after an outage
//! sends its first flight as 0-RTT data. In each, every message arrives exactly once.

use std::time::Duration;

use tern_client::{Client, ClientConfig, ClientError, Event, ZeroRtt};
use tern_tests::linkem::{LinkConfig, Linkem};
use tern_tests::relay::Relay;
use tern_tests::{Harness, PROMPTLY, events_within, expect_event, open_presence};

/// Short timings: the link counts as lost after a second of silence.
fn weak(mut config: ClientConfig) -> ClientConfig {
    config.keepalive = Duration::from_millis(250);
    config.idle_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    config
}

/// The body of the next message event.
async fn next_body(client: &Client) -> Vec<u8> {
    expect_event(client, |e| match e {
        Event::Message { message, .. } => Some(message.body),
        _ => None,
    })
    .await
}

/// Message bodies among `events`.
fn bodies(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect()
}

/// Waits until `client` has noticed that its link is gone (requests other than messages
/// are then refused at once), without taking events.
async fn until_offline(client: &Client) {
    let wait = async {
        loop {
            if let Err(ClientError::NotConnected) = client.fetch("bob@example.com".into()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PROMPTLY, wait)
        .await
        .expect("the client notices the lost link");
}

#[tokio::test]
async fn a_restarted_process_resumes_and_gets_each_message_once() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;
    let dir = tempfile::tempdir().expect("state directory");
    let state_dir = dir.path().join("alice");
    for body in ["m1", "m2"] {
        bob.send("alice@example.com".into(), body.into(), None)
            .await
            .expect("stored for alice");
    }

    // The first process, on a link that will fail.
    let relay = Relay::start(gw.addr()).await.expect("relay");
    let mut config = weak(gw.client_config("alice@example.com", &alice_token));
    config.gateway = relay.addr().to_string();
    config.state_dir = Some(state_dir.clone());
    let first = Client::connect(config).await.expect("alice connects");
    first
        .publish(open_presence("on a train"))
        .await
        .expect("publish");
    assert_eq!(next_body(&first).await, b"m1");
    assert_eq!(next_body(&first).await, b"m2", "m1 is released");
    // m2 is shown but never released: the process dies while handling it.

    relay.cut();
    until_offline(&first).await;
    let queued = first
        .send(
            "bob@example.com".into(),
            b"written in the tunnel".to_vec(),
            None,
        )
        .await;
    assert_eq!(queued, Err(ClientError::Timeout), "it waits in the outbox");
    bob.send("alice@example.com".into(), b"m3".to_vec(), None)
        .await
        .expect("stored while alice is away");
    first.abandon().await; // no goodbye

    // The next process: the same state directory, a working link.
    let mut config = weak(gw.client_config("alice@example.com", &alice_token));
    config.state_dir = Some(state_dir);
    let second = Client::connect(config).await.expect("alice reconnects");
    let info = second.session_info();
    assert!(info.resumed, "within the resume window: {info:?}");
    assert_eq!(info.connections, 1);

    let mut seen = Vec::new();
    let mut sent = None;
    let gather = async {
        while seen.len() < 2 || sent.is_none() {
            match second.next_event().await.expect("events") {
                Event::Message { message, .. } => seen.push(message.body),
                Event::Sent(outcome) => sent = Some(outcome),
                _ => {}
            }
        }
    };
    tokio::time::timeout(PROMPTLY, gather)
        .await
        .expect("m2, m3 and the receipt of the queued message");
    assert_eq!(seen, vec![b"m2".to_vec(), b"m3".to_vec()], "m1 never again");
    let sent = sent.expect("receipt");
    assert_eq!(sent.to, "bob@example.com");

    assert_eq!(next_body(&bob).await, b"written in the tunnel");
    let later = events_within(&bob, Duration::from_millis(800)).await;
    assert!(bodies(&later).is_empty(), "delivered once: {later:?}");
    let later = events_within(&second, Duration::from_millis(800)).await;
    assert!(bodies(&later).is_empty(), "nothing twice: {later:?}");

    let doc = bob.fetch("alice@example.com".into()).await.expect("fetch");
    assert!(doc.presence.is_open(), "presence kept through the restart");
    second.close().await;
}

#[tokio::test]
async fn a_network_change_moves_the_connection_and_loses_nothing() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;
    let alice = Client::connect(weak(gw.client_config("alice@example.com", &alice_token)))
        .await
        .expect("alice connects");
    bob.send("alice@example.com".into(), b"before".to_vec(), None)
        .await
        .expect("send");
    assert_eq!(next_body(&alice).await, b"before");

    alice.network_changed(); // Wi-Fi to cellular

    // Bob takes it meanwhile: the receipt waits for his acknowledgement.
    let (outcome, body) = tokio::join!(
        alice.send(
            "bob@example.com".into(),
            b"from the new path".to_vec(),
            None
        ),
        async {
            let body = next_body(&bob).await;
            bob.acknowledge();
            body
        }
    );
    assert_eq!(body, b"from the new path");
    let outcome = outcome.expect("send after the move");
    assert_eq!(outcome.to, "bob@example.com");
    bob.send("alice@example.com".into(), b"after".to_vec(), None)
        .await
        .expect("send");
    assert_eq!(next_body(&alice).await, b"after");
    // Well past the idle timeout: the connection lives on the new path.
    let events = events_within(&alice, Duration::from_millis(1_500)).await;
    assert!(
        events.iter().all(|e| !matches!(e, Event::Connection(_))),
        "no reconnect: {events:?}"
    );
    assert!(bodies(&events).is_empty(), "nothing twice: {events:?}");
    assert_eq!(alice.session_info().connections, 1, "no new handshake");
    assert!(alice.fetch("bob@example.com".into()).await.is_ok());
    alice.close().await;
}

#[tokio::test]
async fn after_an_outage_the_client_reconnects_with_0rtt_and_sends_the_queue_once() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;
    let link = Linkem::start(LinkConfig::new(gw.addr()).seed(11))
        .await
        .expect("link emulator");
    let mut config = weak(gw.client_config("alice@example.com", &alice_token));
    config.gateway = link.addr().to_string();
    let alice = Client::connect(config).await.expect("alice connects");
    assert_eq!(alice.session_info().zero_rtt, ZeroRtt::NotTried);
    // Let the session ticket of the first handshake arrive.
    assert!(alice.fetch("bob@example.com".into()).await.is_ok());

    link.blackout_for(Duration::from_secs(3)); // a tunnel
    let gone = expect_event(&alice, |e| match e {
        Event::Connection(state) => Some(state),
        _ => None,
    })
    .await;
    assert!(
        matches!(gone, tern_client::ConnectionState::Reconnecting { .. }),
        "{gone:?}"
    );
    let mut late = 0;
    for i in 0..2 {
        let body = format!("queued {i}").into_bytes();
        match alice.send("bob@example.com".into(), body, None).await {
            Ok(_) => {}
            Err(ClientError::Timeout) => late += 1,
            Err(e) => panic!("a message is queued, not refused: {e}"),
        }
    }

    let back = expect_event(&alice, |e| match e {
        Event::Connection(state) => Some(state),
        _ => None,
    })
    .await;
    assert_eq!(back, tern_client::ConnectionState::Connected);
    let info = alice.session_info();
    println!("after the outage: {info:?}");
    assert!(
        matches!(info.zero_rtt, ZeroRtt::Sent { accepted: true }),
        "the first flight went as early data and the gateway accepted it: {info:?}"
    );
    assert_eq!(info.connections, 2);
    assert!(info.resumed, "the parked session was resumed: {info:?}");

    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_body(&bob).await);
    }
    assert_eq!(got, vec![b"queued 0".to_vec(), b"queued 1".to_vec()]);
    let more = events_within(&bob, Duration::from_millis(800)).await;
    assert!(bodies(&more).is_empty(), "delivered once: {more:?}");
    // The receipt of each call that gave up waiting comes as an event, once.
    for _ in 0..late {
        expect_event(&alice, |e| matches!(e, Event::Sent(_)).then_some(())).await;
    }
    let more = events_within(&alice, Duration::from_millis(500)).await;
    assert!(
        more.iter().all(|e| !matches!(e, Event::Sent(_))),
        "{more:?}"
    );
    alice.close().await;
}

/// Messages issued concurrently from one task (many in flight at once) keep the order
/// of their calls: each is handed to the client's queue when its future is first polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_arrive_in_the_order_of_their_calls() {
    use futures::StreamExt;
    const N: usize = 400;
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob = gw.user("bob@example.com").await;
    let receiving = tokio::spawn(async move {
        let mut got = Vec::new();
        let take = async {
            while got.len() < N {
                match bob.next_event().await {
                    Some(Event::Message { message, .. }) => got.push(message.body),
                    Some(_) => {}
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(PROMPTLY, take).await;
        got
    });
    let outcomes: Vec<_> = futures::stream::iter(0..N)
        .map(|i| alice.send("bob@example.com".into(), i.to_string().into_bytes(), None))
        .buffered(128)
        .collect()
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "every send answered");
    let got = receiving.await.expect("receiver");
    let want: Vec<Vec<u8>> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    let first_wrong = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_wrong, None, "out of order");
    assert_eq!(got.len(), N);
}

/// The `tern` binary next to the test executable (`cargo build -p tern-cli` first).
fn tern_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join("tern");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p tern-cli` first",
        path.display()
    );
    path
}

/// Runs `tern` as `user` with `TERN_STATE_DIR` set; returns (exit code, stdout, stderr).
/// Killed if it has not finished within [`PROMPTLY`].
async fn tern(
    gw: &Harness,
    user: &str,
    token: &str,
    state_dir: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tern_bin())
        .env("TERN_GATEWAY", gw.addr().to_string())
        .env("TERN_CA", gw.data_dir().join("cert.pem"))
        .env("TERN_USER", user)
        .env("TERN_TOKEN", token)
        .env("TERN_STATE_DIR", state_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tern runs");
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tern") {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tern did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    (status.code(), out, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_keeps_its_device_and_inbox_position_in_the_state_directory() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob = gw.user("bob@example.com").await;
    for body in ["first", "second"] {
        bob.send("alice@example.com".into(), body.into(), None)
            .await
            .expect("stored for alice");
    }
    let dir = tempfile::tempdir().expect("state directory");
    let state = dir.path().join("alice");
    let listen = ["listen", "--count", "1"];

    let (code, out, err) = tern(&gw, "alice@example.com", &alice_token, &state, &listen).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"body\":\"first\""), "{out}");
    let kept = std::fs::read_to_string(state.join("state.json")).expect("state file");
    assert!(kept.contains("\"inbox_seen\": 1"), "{kept}");
    // The gateway's address-validation tokens are kept for the next run.
    assert!(kept.contains("\"server\": \"example.com\""), "{kept}");

    let (code, out, err) = tern(&gw, "alice@example.com", &alice_token, &state, &listen).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"body\":\"second\""), "{out}");
    assert!(!out.contains("first"), "never twice: {out}");
    let again = std::fs::read_to_string(state.join("state.json")).expect("state file");
    let device = |text: &str| {
        text.lines()
            .find(|l| l.contains("\"device\""))
            .map(str::to_owned)
    };
    assert_eq!(device(&kept), device(&again), "one device across runs");

    // The directory belongs to alice.
    let carol_token = gw.add_user("carol@example.com");
    let fetch = ["fetch", "bob@example.com"];
    let (code, _, err) = tern(&gw, "carol@example.com", &carol_token, &state, &fetch).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("belongs to alice@example.com"), "{err}");
}
