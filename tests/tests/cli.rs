//! The README tour, as processes: `tern-gateway user add` writing to the live
//! gateway's database, `tern` commands printing JSON lines, and a `tern listen` process
//! killed with SIGKILL (no goodbye) whose principal goes CLOSED for a watcher.
//!
//! Needs the binaries built (`cargo build --workspace --bins`; scripts/test.sh does it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tern_client::{Availability, Basic, Event, Presence, Tuple};
use tern_tests::{Harness, expect_event};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

struct Cli {
    addr: String,
    ca: PathBuf,
}

impl Cli {
    fn new(gw: &Harness) -> Self {
        let ca = gw.data_dir().join("cert.pem");
        assert!(
            ca.exists(),
            "the gateway keeps its certificate in its data directory"
        );
        Self {
            addr: gw.addr().to_string(),
            ca,
        }
    }

    fn command(&self, user: &str, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("tern"));
        cmd.env("TERN_GATEWAY", &self.addr)
            .env("TERN_CA", &self.ca)
            .env("TERN_USER", user)
            .env("TERN_TOKEN", token)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, user: &str, token: &str, args: &[&str]) -> Output {
        self.command(user, token, args).output().expect("tern runs")
    }

    fn json(&self, user: &str, token: &str, args: &[&str]) -> Value {
        let out = self.run(user, token, args);
        assert!(
            out.status.success(),
            "tern {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 output");
        let line = text.lines().last().expect("one JSON line");
        serde_json::from_str(line).expect("JSON")
    }

    /// Starts a long-running command and streams its JSON lines.
    fn spawn(&self, user: &str, token: &str, args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
        let mut child = self
            .command(user, token, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tern starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        (child, rx)
    }
}

fn add_user(gw: &Harness, address: &str) -> String {
    let out = Command::new(bin("tern-gateway"))
        .args(["user", "add", address, "--data-dir"])
        .arg(gw.data_dir())
        .output()
        .expect("tern-gateway runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines().last().expect("token line").trim().to_owned()
}

fn next_line(rx: &mpsc::Receiver<Value>) -> Value {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a JSON line in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_tour_works_with_the_real_binaries() {
    let gw = Harness::start().await;
    let cli = Cli::new(&gw);
    // Users are added by the operator tool while the gateway is running.
    let alice = add_user(&gw, "alice@example.com");
    let bob = add_user(&gw, "bob@example.com");

    let (mut watch, lines) = cli.spawn("bob@example.com", &bob, &["watch", "alice@example.com"]);
    let first = next_line(&lines);
    assert_eq!(first["type"], "presence");
    assert_eq!(first["open"], false, "alice has not published yet");

    // Alice publishes and holds her session: watchers get presence in batches, and
    // only the latest state counts, so a publish-then-goodbye inside one flush interval
    // would show Bob the goodbye alone.
    let (mut hold, held) = cli.spawn(
        "alice@example.com",
        &alice,
        &[
            "publish",
            "--status",
            "open",
            "--availability",
            "away",
            "--note",
            "lunch",
            "--hold",
        ],
    );
    assert_eq!(next_line(&held)["ok"], true);
    let seen = next_line(&lines);
    assert_eq!(seen["presentity"], "alice@example.com");
    assert_eq!(seen["open"], true);
    assert_eq!(seen["tuples"][0]["availability"], "away");
    assert_eq!(seen["tuples"][0]["note"], "lunch");
    // Stopping `publish --hold` says goodbye: alice goes CLOSED at once.
    let stopped = Command::new("kill")
        .args(["-TERM", &hold.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    hold.wait().expect("publish exits");
    let closed = next_line(&lines);
    assert_eq!(closed["open"], false);
    // Alice sees who watches her.
    let watchers = cli.json("alice@example.com", &alice, &["watchers"]);
    assert_eq!(watchers["type"], "watchers");
    assert_eq!(watchers["subscribers"][0], "bob@example.com");
    watch.kill().expect("stop watch");

    let fetched = cli.json("bob@example.com", &bob, &["fetch", "alice@example.com"]);
    assert_eq!(fetched["tuples"][0]["note"], "lunch");

    // Bob is offline: stored. Then he listens and gets it; alice's next session gets
    // the late receipt.
    let receipt = cli.json(
        "alice@example.com",
        &alice,
        &["send", "bob@example.com", "see you"],
    );
    assert_eq!(receipt["status"], "stored");
    let (mut listen, messages) = cli.spawn("bob@example.com", &bob, &["listen"]);
    let message = next_line(&messages);
    assert_eq!(message["type"], "message");
    assert_eq!(message["from"], "alice@example.com");
    assert_eq!(message["body"], "see you");

    // Bob is online now: delivered.
    let receipt = cli.json(
        "alice@example.com",
        &alice,
        &["send", "bob@example.com", "on my way"],
    );
    assert_eq!(receipt["status"], "delivered");
    assert_eq!(next_line(&messages)["body"], "on my way");
    listen.kill().expect("stop listen");

    let failed = cli.json(
        "alice@example.com",
        &alice,
        &["send", "nobody@example.com", "hi"],
    );
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "unknown_user");

    let wrong = cli.run(
        "alice@example.com",
        "wrong-token",
        &["fetch", "bob@example.com"],
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_goes_closed_for_its_watchers_without_a_goodbye() {
    let gw = Harness::start_with(|c| {
        c.timeouts.idle_timeout_ms = 2_000;
        c.timeouts.client_keepalive_ms = 500;
        // A vanished device's session is parked this long before it is gone for good.
        c.timeouts.resume_window_ms = 500;
    })
    .await;
    let cli = Cli::new(&gw);
    let alice_token = add_user(&gw, "alice@example.com");
    let bob = gw.user("bob@example.com").await;

    // alice's device: a `tern listen` process holding her session open...
    let (mut device, _lines) = cli.spawn("alice@example.com", &alice_token, &["listen"]);
    // ...and her presence published from a second session, which then ends.
    let alice = gw.connect("alice@example.com", &alice_token).await;
    let presence = Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: Some(Availability::AVAILABLE),
            contact: None,
            note: Some("online".into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    };
    alice.publish(presence).await.unwrap();
    bob.subscribe("alice@example.com".into()).await.unwrap();
    // Wait until the device's session is surely up before closing the helper session.
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.close().await;
    let still_open = bob.fetch("alice@example.com".into()).await.unwrap();
    assert!(
        still_open.presence.is_open(),
        "the device's session keeps alice OPEN"
    );

    device.kill().expect("SIGKILL the device"); // no goodbye of any kind
    let _ = device.wait();
    let closed = expect_event(&bob, |e| match e {
        Event::Presence(doc) if !doc.presence.is_open() => Some(doc),
        _ => None,
    })
    .await;
    assert_eq!(closed.presentity, "alice@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_restarted_with_its_state_directory_resumes_and_sees_nothing_twice() {
    let gw = Harness::start_with(|c| {
        c.timeouts.idle_timeout_ms = 2_000;
        c.timeouts.client_keepalive_ms = 500;
    })
    .await;
    let cli = Cli::new(&gw);
    let bob_token = add_user(&gw, "bob@example.com");
    let alice = gw.user("alice@example.com").await;
    let dir = tempfile::tempdir().expect("state directory");
    let state = dir.path().join("bob").display().to_string();
    let listen = ["--state-dir", state.as_str(), "--keepalive", "1", "listen"];

    let (mut first, lines) = cli.spawn("bob@example.com", &bob_token, &listen);
    for i in 1..=3 {
        let body = format!("before {i}");
        alice
            .send("bob@example.com".into(), body.into(), None)
            .await
            .unwrap();
        assert_eq!(next_line(&lines)["body"], format!("before {i}"));
    }
    // Printed means handed on; the CLI then asks for the next item, which releases it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first
        .kill()
        .expect("SIGKILL: no goodbye, no chance to save anything more");
    let _ = first.wait();
    for i in 1..=2 {
        let body = format!("while dead {i}");
        alice
            .send("bob@example.com".into(), body.into(), None)
            .await
            .unwrap();
    }

    let (mut second, lines) = cli.spawn("bob@example.com", &bob_token, &listen);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            next_line(&lines)["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["while dead 1", "while dead 2"], "nothing lost");
    assert!(
        lines.recv_timeout(Duration::from_millis(800)).is_err(),
        "nothing twice after the restart"
    );
    second.kill().expect("stop listen");
    let kept = std::fs::read_to_string(dir.path().join("bob").join("state.json"))
        .expect("the state directory was kept");
    assert!(kept.contains("\"inbox_seen\": 5"), "{kept}");
}

/// Issue 5 from the command line: `tern rules`, a request that waits for the
/// principal's decision, `tern subscriptions`, `tern block`, and the domain's
/// administrator through `tern-gateway admin` (token, remote requests, audit log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_requests_blocks_and_the_administrator_from_the_command_line() {
    let gw = Harness::start().await;
    let cli = Cli::new(&gw);
    let (alice, bob, carol) = ("alice@example.com", "bob@example.com", "carol@example.org");
    let alice_token = add_user(&gw, alice);
    let bob_token = add_user(&gw, bob);
    let carol_token = add_user(&gw, carol);

    // Alice wants to be asked first; Bob's watch waits for her.
    cli.json(alice, &alice_token, &["rules", "ask", "anyone"]);
    let (mut watch, lines) = cli.spawn(bob, &bob_token, &["watch", alice]);
    let pending = next_line(&lines);
    assert_eq!(pending["type"], "pending", "{pending}");
    let incoming = cli.json(alice, &alice_token, &["subscriptions", "--incoming"]);
    assert!(incoming.to_string().contains(bob), "{incoming}");
    assert!(incoming.to_string().contains("pending"), "{incoming}");
    cli.json(alice, &alice_token, &["decide", bob, "allow"]);
    let granted = next_line(&lines);
    assert_eq!(granted["type"], "subscription", "{granted}");
    assert_eq!(granted["state"], "active", "{granted}");
    let mine = cli.json(bob, &bob_token, &["subscriptions"]);
    assert!(mine.to_string().contains("active"), "{mine}");

    // Carol is blocked: her message is refused, and she is told.
    cli.json(alice, &alice_token, &["block", carol]);
    let out = cli.run(carol, &carol_token, &["send", alice, "hello?"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("refused"), "{text}");

    // The administrator of example.com: a token of its own, requests, the audit log.
    let config = gw.data_dir().join("admin-test.toml");
    std::fs::write(&config, "domains = [\"example.com\", \"example.org\"]\n").expect("config");
    let out = Command::new(bin("tern-gateway"))
        .args(["admin", "token", "example.com", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(gw.data_dir())
        .output()
        .expect("tern-gateway runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let token = token.lines().last().expect("token line").trim().to_owned();
    let admin = |args: &[&str]| {
        let out = Command::new(bin("tern-gateway"))
            .arg("admin")
            .args(["--gateway", &cli.addr, "--domain", "example.com"])
            .arg("--ca")
            .arg(&cli.ca)
            .env("TERN_ADMIN_TOKEN", &token)
            .args(args)
            .output()
            .expect("tern-gateway runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert!(admin(&["watchers", alice]).contains(bob));
    let presence = gw.data_dir().join("presence.json");
    let json = r#"{"tuples": [{"id": "desk", "basic": "Open", "availability": null,
        "contact": null, "note": "set by the administrator", "at": null, "ext": []}],
        "card": []}"#;
    std::fs::write(&presence, json).expect("presence file");
    admin(&[
        "set-presence",
        alice,
        presence.to_str().expect("utf-8 path"),
    ]);
    assert!(admin(&["presence", alice]).contains("set by the administrator"));
    admin(&["cancel", alice, bob]);
    // Alice's presence came after the grant; the cancellation follows it.
    let cancelled = std::iter::repeat_with(|| next_line(&lines))
        .find(|line| line["type"] == "subscription")
        .expect("a subscription line");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let out = Command::new(bin("tern-gateway"))
        .args(["admin", "log", "example.com", "--data-dir"])
        .arg(gw.data_dir())
        .output()
        .expect("tern-gateway runs");
    let log = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        log.contains("watchers") && log.contains("cancel bob@example.com"),
        "{log}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
