//! The link emulator on real loopback sockets: what it does to an echo server's round
//! trips (delay, loss, blackouts), its counters, client address changes, its refusal of
//! anything but loopback, the `tern-linkem` command line, and a real tern session (QUIC)
//! through a 100 ms, 2 % loss link.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tern_client::{Availability, Basic, Client, Event, Presence, ReceiptStatus, Tuple};
use tern_tests::linkem::{ConfigError, Impairment, LinkConfig, Linkem};
use tern_tests::{Harness, expect_event};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const MS: Duration = Duration::from_millis(1);

/// A UDP server on loopback that answers every datagram with `reply(datagram, source)`.
async fn server(reply: fn(&[u8], SocketAddr) -> Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("server binds");
    let addr = socket.local_addr().expect("server address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2_048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&reply(&buf[..n], from), from).await;
        }
    });
    (addr, task)
}

async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    server(|datagram, _| datagram.to_vec()).await
}

async fn client_socket(link: &Linkem) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client binds");
    socket.connect(link.addr()).await.expect("client connects");
    socket
}

fn link_config(upstream: SocketAddr, impairment: Impairment) -> LinkConfig {
    LinkConfig::new(upstream).symmetric(impairment).seed(2024)
}

/// Sends `count` numbered datagrams in small paced bursts (so that no socket buffer
/// overflows) and returns the numbers echoed back within `linger` of the last send.
async fn echoed(socket: Arc<UdpSocket>, count: u32, linger: Duration) -> HashSet<u32> {
    let reader = socket.clone();
    let receiving = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 64];
        while let Ok(Ok(n)) = timeout(linger, reader.recv(&mut buf)).await {
            if let Ok(bytes) = <[u8; 4]>::try_from(&buf[..n]) {
                seen.insert(u32::from_be_bytes(bytes));
            }
        }
        seen
    });
    for seq in 0..count {
        socket.send(&seq.to_be_bytes()).await.expect("sent");
        if seq % 20 == 19 {
            tokio::time::sleep(2 * MS).await;
        }
    }
    receiving.await.expect("receiver ends")
}

async fn round_trip(socket: &UdpSocket, payload: &[u8]) -> Duration {
    let sent = Instant::now();
    socket.send(payload).await.expect("sent");
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo received");
    assert_eq!(&buf[..n], payload);
    sent.elapsed()
}

#[tokio::test]
async fn delay_adds_both_one_way_delays_to_the_round_trip() {
    let (echo, _server) = echo_server().await;
    let mut config = LinkConfig::new(echo);
    config.up.delay = 70 * MS;
    config.down.delay = 30 * MS;
    let link = Linkem::start(config).await.unwrap();
    let socket = client_socket(&link).await;
    let mut rtts = Vec::new();
    for i in 0u8..10 {
        rtts.push(round_trip(&socket, &[i; 16]).await);
    }
    rtts.sort();
    println!(
        "RTT with 70 ms up + 30 ms down: min {:?}, median {:?}, max {:?}",
        rtts[0], rtts[5], rtts[9]
    );
    for rtt in &rtts {
        assert!(*rtt >= 100 * MS, "{rtt:?} is shorter than the two delays");
        assert!(*rtt < 300 * MS, "{rtt:?}: far more than timer slack on top");
    }
    assert!(
        rtts[5] < 150 * MS,
        "median {:?}: more than timer slack on top",
        rtts[5]
    );
    let stats = link.shutdown().await;
    assert_eq!(
        (stats.up.packets_delivered, stats.down.packets_delivered),
        (10, 10)
    );
}

#[tokio::test]
async fn loss_drops_about_the_configured_share_each_way() {
    let (echo, _server) = echo_server().await;
    let lossy = Impairment {
        loss: 0.2,
        ..Impairment::default()
    };
    let link = Linkem::start(link_config(echo, lossy)).await.unwrap();
    let socket = Arc::new(client_socket(&link).await);
    let sent = 2_000;
    let seen = echoed(socket, sent, 300 * MS).await;
    let stats = link.shutdown().await;
    assert_eq!(
        stats.up.packets_in,
        u64::from(sent),
        "no datagram lost before the emulator"
    );
    let up = stats.up.dropped_loss as f64 / stats.up.packets_in as f64;
    let down = stats.down.dropped_loss as f64 / stats.down.packets_in as f64;
    let round_trip = 1.0 - seen.len() as f64 / f64::from(sent);
    println!(
        "configured 20 % each way: measured up {up:.4}, down {down:.4}, round trip {round_trip:.4} (expected 0.36)"
    );
    assert!((0.17..=0.23).contains(&up), "up loss {up}");
    assert!((0.17..=0.23).contains(&down), "down loss {down}");
    assert!(
        (0.31..=0.41).contains(&round_trip),
        "round-trip loss {round_trip}"
    );
    assert_eq!(seen.len() as u64, stats.down.packets_delivered);
    assert_eq!(
        stats.up.dropped_loss + stats.up.packets_delivered,
        stats.up.packets_in
    );
}

#[tokio::test]
async fn a_blackout_drops_everything_in_its_window_then_the_link_recovers() {
    let (echo, _server) = echo_server().await;
    let link = Linkem::start(LinkConfig::new(echo)).await.unwrap();
    let socket = Arc::new(client_socket(&link).await);
    let reader = socket.clone();
    let receiving = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 16];
        // Longer than the blackout, which silences the echoes.
        while let Ok(Ok(n)) = timeout(900 * MS, reader.recv(&mut buf)).await {
            if let Ok(bytes) = <[u8; 4]>::try_from(&buf[..n]) {
                seen.insert(u32::from_be_bytes(bytes));
            }
        }
        seen
    });
    let mut sent_at = Vec::new();
    let mut window = None;
    let mut ticker = tokio::time::interval(10 * MS);
    for seq in 0u32..160 {
        ticker.tick().await;
        if seq == 40 {
            let start = link.elapsed();
            link.blackout_for(600 * MS);
            window = Some((start, link.elapsed() + 600 * MS));
        }
        sent_at.push(link.elapsed());
        socket.send(&seq.to_be_bytes()).await.unwrap();
    }
    let seen = receiving.await.unwrap();
    let (start, end) = window.expect("blackout started");
    let slack = 50 * MS;
    let mut lost_inside = 0;
    for (seq, at) in (0u32..).zip(&sent_at) {
        if *at + slack < start || *at > end + slack {
            assert!(
                seen.contains(&seq),
                "#{seq} sent at {at:?}, outside the blackout, was lost"
            );
        } else if *at > start + slack && *at + slack < end {
            assert!(
                !seen.contains(&seq),
                "#{seq} sent at {at:?} crossed the blackout"
            );
            lost_inside += 1;
        }
    }
    let stats = link.stats();
    println!(
        "blackout of 600 ms at {start:?}: {lost_inside} datagrams sent well inside it lost, {} echoes of 160",
        seen.len()
    );
    assert!(lost_inside >= 45, "{lost_inside}");
    assert_eq!(stats.up.dropped_blackout, 160 - stats.up.packets_delivered);
    assert!(seen.contains(&159), "recovered");
}

#[tokio::test]
async fn stats_serialise_to_the_documented_json_shape() {
    let (echo, _server) = echo_server().await;
    let link = Linkem::start(link_config(echo, Impairment::default()))
        .await
        .unwrap();
    let socket = client_socket(&link).await;
    round_trip(&socket, b"ping").await;
    let json = serde_json::to_value(link.stats()).unwrap();
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&json),
        [
            "clients_active",
            "clients_refused",
            "clients_total",
            "down",
            "elapsed_ms",
            "send_errors",
            "up"
        ]
    );
    let direction = [
        "bytes_delivered",
        "bytes_in",
        "dropped_blackout",
        "dropped_loss",
        "dropped_queue",
        "duplicated",
        "packets_delivered",
        "packets_in",
        "reordered",
    ];
    for way in ["up", "down"] {
        assert_eq!(keys(&json[way]), direction, "{way}");
        assert_eq!(json[way]["packets_in"], 1);
        assert_eq!(json[way]["bytes_delivered"], 4);
    }
    assert_eq!(json["clients_active"], 1);
    assert!(json["elapsed_ms"].is_u64());
}

#[tokio::test]
async fn a_client_that_changes_address_reaches_upstream_from_a_new_source() {
    // The server answers with the source address it saw.
    let (upstream, _server) = server(|_, from| from.to_string().into_bytes()).await;
    let link = Linkem::start(LinkConfig::new(upstream)).await.unwrap();
    let seen_as = |socket: UdpSocket| async move {
        socket.send(b"who am i").await.unwrap();
        let mut buf = [0u8; 64];
        let n = timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        let seen: SocketAddr = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
        (socket, seen)
    };
    let (first, first_seen) = seen_as(client_socket(&link).await).await;
    let (_second, second_seen) = seen_as(client_socket(&link).await).await;
    println!(
        "client {} seen upstream as {first_seen}; its new address as {second_seen}",
        first.local_addr().unwrap()
    );
    assert_ne!(first_seen, second_seen, "a new source address upstream");
    assert!(first_seen.ip().is_loopback() && second_seen.ip().is_loopback());
    assert_ne!(first_seen, link.addr());
    let (_first, again) = seen_as(first).await;
    assert_eq!(again, first_seen, "an address keeps its upstream socket");
    let stats = link.stats();
    assert_eq!((stats.clients_total, stats.clients_active), (2, 2));
}

#[tokio::test]
async fn addresses_off_loopback_are_refused_with_a_clear_error() {
    let off = [
        ("upstream", "127.0.0.1:0", "192.0.2.1:4433"),
        ("listen", "0.0.0.0:0", "127.0.0.1:4433"),
        ("listen", "[::]:0", "127.0.0.1:4433"),
    ];
    for (role, listen, upstream) in off {
        let mut config = LinkConfig::new(upstream.parse().unwrap());
        config.listen = listen.parse().unwrap();
        let Err(err) = Linkem::start(config).await else {
            panic!("{listen} → {upstream} accepted");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<ConfigError>());
        assert!(
            matches!(inner, Some(ConfigError::NotLoopback { role: r, .. }) if *r == role),
            "{err}"
        );
    }
    let v6 = LinkConfig::new("[::1]:4433".parse().unwrap());
    assert_eq!(v6.validate(), Ok(()), "::1 is loopback");
    let mut bad = LinkConfig::new("127.0.0.1:4433".parse().unwrap());
    bad.down.loss = 1.5;
    let err = Linkem::start(bad).await.err().expect("refused");
    assert!(
        err.to_string().starts_with("down impairment: loss is 1.5"),
        "{err}"
    );
}

#[tokio::test]
async fn the_command_line_relays_impaired_and_prints_json_lines() {
    let (echo, _server) = echo_server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern-linkem"))
        .args([
            "--upstream",
            &echo.to_string(),
            "--seed",
            "3",
            "--loss",
            "0.5",
        ])
        .args([
            "--down-loss",
            "0",
            "--up-delay-ms",
            "5",
            "--blackout-at",
            "30-31",
        ])
        .args(["--stats-interval", "0.5", "--duration", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line = async |lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        let line = timeout(Duration::from_secs(5), lines.recv())
            .await
            .expect("a line in time")
            .expect("a line");
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let started = next_line(&mut lines).await;
    assert_eq!(started["kind"], "started");
    assert_eq!(started["seed"], 3);
    let listen: SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(listen).await.unwrap();
    let seen = echoed(Arc::new(socket), 400, 200 * MS).await;

    let mut rest = Vec::new();
    loop {
        let line = next_line(&mut lines).await;
        let last = line["kind"] == "final";
        rest.push(line);
        if last {
            break;
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let (last, periodic) = rest.split_last().unwrap();
    assert!(periodic.iter().all(|l| l["kind"] == "stats") && !periodic.is_empty());
    assert_eq!(last["up"]["packets_in"], 400);
    let up_loss = last["up"]["dropped_loss"].as_f64().unwrap() / 400.0;
    println!(
        "CLI, --loss 0.5 up (down overridden to 0): measured {up_loss:.3}, {} of 400 echoed",
        seen.len()
    );
    assert!((0.42..=0.58).contains(&up_loss), "{up_loss}");
    assert_eq!(last["down"]["dropped_loss"], 0);
    assert_eq!(
        last["down"]["packets_delivered"].as_u64(),
        Some(seen.len() as u64)
    );
}

#[test]
fn the_command_line_refuses_what_it_cannot_do() {
    let refused = |args: &[&str], says: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tern-linkem"))
            .args(args)
            .args(["--duration", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} started");
    };
    refused(&["--upstream", "10.0.0.1:4433"], "not a loopback address");
    refused(
        &["--upstream", "127.0.0.1:4433", "--listen", "0.0.0.0:5433"],
        "not a loopback address",
    );
    refused(
        &["--upstream", "127.0.0.1:4433", "--up-loss", "2"],
        "up impairment: loss is 2",
    );
    refused(
        &["--upstream", "127.0.0.1:4433", "--blackout", "10/5"],
        "shorter than its period",
    );
    refused(
        &["--upstream", "127.0.0.1:4433", "--rate-kbps", "0"],
        "positive rate",
    );
    refused(
        &["--upstream", "127.0.0.1:4433", "--burst-loss", "0.1,0.2"],
        "P_GB,P_BG,LOSS_BAD",
    );
}

fn presence(basic: Basic, note: &str) -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic,
            availability: Some(Availability::AVAILABLE),
            contact: None,
            note: Some(note.into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    }
}

#[tokio::test]
async fn a_tern_session_works_over_a_100ms_2pct_loss_link() {
    let began = Instant::now();
    let gw = Harness::start().await;
    let train = Impairment {
        delay: 100 * MS,
        loss: 0.02,
        ..Impairment::default()
    };
    // Fates depend only on each datagram's rank in its direction (one loss draw each),
    // and seed 362 loses the very first datagram up (alice's QUIC Initial) and the fifth
    // down: the handshake has to recover from loss, every run.
    let config = LinkConfig::new(gw.addr()).symmetric(train).seed(362);
    let link = Linkem::start(config).await.unwrap();
    let through_link = |user: &str| {
        let token = gw.add_user(user);
        let mut config = gw.client_config(user, &token);
        config.gateway = link.addr().to_string();
        config
    };
    let alice = Client::connect(through_link("alice@example.com"))
        .await
        .unwrap();
    let bob = Client::connect(through_link("bob@example.com"))
        .await
        .unwrap();
    let connected = began.elapsed();

    alice
        .publish(presence(Basic::Open, "on the train"))
        .await
        .unwrap();
    let current = bob.subscribe("alice@example.com".into()).await.unwrap();
    assert_eq!(
        current.presence.tuples[0].note.as_deref(),
        Some("on the train")
    );
    alice
        .publish(presence(Basic::Open, "in a tunnel"))
        .await
        .unwrap();
    let note = expect_event(&bob, |e| match e {
        Event::Presence(doc) => doc.presence.tuples.first().and_then(|t| t.note.clone()),
        _ => None,
    })
    .await;
    assert_eq!(note, "in a tunnel");

    let receiving = tokio::spawn(async move {
        let body = expect_event(&bob, |e| match e {
            Event::Message { message, .. } => Some(message.body),
            _ => None,
        })
        .await;
        bob.acknowledge(); // so that the gateway can answer Delivered
        (bob, body)
    });
    let outcome = alice
        .send("bob@example.com".into(), b"signal is weak".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(outcome.status, ReceiptStatus::Delivered);
    let (_bob, body) = receiving.await.unwrap();
    assert_eq!(body, b"signal is weak");

    let stats = link.stats();
    println!(
        "QUIC over 100 ms / 2 %: both connected after {connected:?}, all done after {:?}; {}",
        began.elapsed(),
        serde_json::to_string(&stats).unwrap()
    );
    assert_eq!(stats.clients_total, 2);
    assert!(
        stats.up.dropped_loss >= 1 && stats.down.dropped_loss >= 1,
        "{stats:?}"
    );
    assert!(stats.up.packets_delivered > 0 && stats.down.packets_delivered > 0);
    assert!(began.elapsed() < Duration::from_secs(20));
}
