//! Runtime-level checks of the gateway over real QUIC on loopback, with a raw quinn
//! client speaking frames by hand: the adapters (TLS, ALPN, framing, stream limits,
//! timers, closing, shutdown), not the protocol's services (those are the core's tests
//! and the end-to-end suite's).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tern_gateway::{GatewayConfig, RunningGateway, UserOptions, users};
use tern_wire::codec::{FrameBuf, encode};
use tern_wire::{Basic, Down, ErrorCode, Hello, Presence, Tuple, Up, VERSION};

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _dir: tempfile::TempDir,
    gateway: RunningGateway,
    alice: String,
    bob: String,
}

async fn start_with(tune: impl FnOnce(&mut GatewayConfig)) -> Result<Fixture> {
    // Shown only for a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tern_gateway=debug,tern_gateway_core=debug,warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let alice = users::add(dir.path(), "alice@localhost", UserOptions::default())?;
    let bob = users::add(dir.path(), "bob@localhost", UserOptions::default())?;
    let mut config = GatewayConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_owned(),
        ..GatewayConfig::default()
    };
    tune(&mut config);
    let gateway = tern_gateway::start(config).await?;
    Ok(Fixture {
        _dir: dir,
        gateway,
        alice,
        bob,
    })
}

async fn start() -> Result<Fixture> {
    start_with(|_| {}).await
}

/// A client endpoint trusting the gateway's certificate, speaking ALPN `tern/1`.
fn client(gateway: &RunningGateway, transport: quinn::TransportConfig) -> Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&gateway.cert_pem()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// One raw session: a connection and its bidirectional stream.
struct Raw {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuf,
}

impl Raw {
    async fn open(gateway: &RunningGateway) -> Result<Self> {
        Self::open_with(gateway, quinn::TransportConfig::default()).await
    }

    async fn open_with(
        gateway: &RunningGateway,
        transport: quinn::TransportConfig,
    ) -> Result<Self> {
        let endpoint = client(gateway, transport)?;
        let conn = endpoint.connect(gateway.local_addr(), "localhost")?.await?;
        let (send, recv) = conn.open_bi().await?;
        Ok(Self {
            _endpoint: endpoint,
            conn,
            send,
            recv,
            frames: FrameBuf::new(tern_wire::limits::FRAME_MAX),
        })
    }

    async fn send(&mut self, frame: &Up) -> Result<()> {
        self.raw(&encode(frame)).await
    }

    async fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.send.write_all(bytes).await?)
    }

    async fn hello(&mut self, user: &str, token: &str) -> Result<()> {
        self.send(&Up::Hello(Hello {
            version: VERSION,
            user: user.into(),
            token: token.into(),
        }))
        .await
    }

    /// The next frame from the gateway; `None` once the stream ends.
    async fn next(&mut self) -> Result<Option<Down>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(frame));
            }
            let read = tokio::time::timeout(WAIT, self.recv.read(&mut chunk))
                .await
                .context("no frame in time")?;
            match read? {
                Some(n) => self.frames.extend(&chunk[..n]),
                None => return Ok(None),
            }
        }
    }

    async fn expect_welcome(&mut self) -> Result<tern_wire::frame::Welcome> {
        match self.next().await? {
            Some(Down::Welcome(welcome)) => Ok(welcome),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    /// Reads frames until `Close`, which must be the last one.
    async fn expect_close(&mut self) -> Result<(ErrorCode, String)> {
        loop {
            match self.next().await? {
                Some(Down::Close { code, text }) => {
                    assert!(self.next().await?.is_none(), "a frame after Close");
                    return Ok((code, text));
                }
                Some(_) => {}
                None => bail!("stream ended without Close"),
            }
        }
    }

    /// The QUIC application error code the connection ended with.
    async fn closed_code(&self) -> Result<u64> {
        let reason = tokio::time::timeout(WAIT, self.conn.closed()).await?;
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => Ok(close.error_code.into_inner()),
            other => bail!("connection ended with {other:?}"),
        }
    }
}

fn online() -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: None,
            contact: Some("tern:alice@localhost".into()),
            note: None,
            at: None,
            ext: vec![],
        }],
        card: vec![],
    }
}

#[tokio::test]
async fn hello_is_welcomed_and_bye_closes_with_goodbye() -> Result<()> {
    let fx = start().await?;
    let mut raw = Raw::open(&fx.gateway).await?;
    raw.hello("Alice@LOCALHOST", &fx.alice).await?;
    let welcome = raw.expect_welcome().await?;
    assert_eq!(welcome.user, "alice@localhost");
    assert_eq!(welcome.version, VERSION);
    assert_eq!(welcome.frame_max, tern_wire::limits::DEFAULT_FRAME_MAX);
    raw.send(&Up::Bye).await?;
    assert_eq!(raw.expect_close().await?.0, ErrorCode::GOODBYE);
    assert_eq!(raw.closed_code().await?, u64::from(ErrorCode::GOODBYE.0));
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn garbage_is_closed_malformed_and_the_gateway_serves_on() -> Result<()> {
    let fx = start().await?;
    let mut bad = Raw::open(&fx.gateway).await?;
    // A 3-byte body whose variant tag is not a valid varint.
    bad.raw(&[0x03, 0xff, 0xff, 0xff]).await?;
    assert_eq!(bad.expect_close().await?.0, ErrorCode::MALFORMED);
    assert_eq!(bad.closed_code().await?, u64::from(ErrorCode::MALFORMED.0));

    let mut good = Raw::open(&fx.gateway).await?;
    good.hello("alice@localhost", &fx.alice).await?;
    good.expect_welcome().await?;
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_oversize_length_prefix_is_closed_too_large() -> Result<()> {
    let fx = start().await?;
    let mut raw = Raw::open(&fx.gateway).await?;
    // Announces 10 MiB; nothing of the body needs to follow.
    raw.raw(&[0x80, 0x80, 0x80, 0x05]).await?;
    assert_eq!(raw.expect_close().await?.0, ErrorCode::TOO_LARGE);
    assert_eq!(raw.closed_code().await?, u64::from(ErrorCode::TOO_LARGE.0));
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_wrong_token_is_closed_unauthorized() -> Result<()> {
    let fx = start().await?;
    let mut raw = Raw::open(&fx.gateway).await?;
    raw.hello("alice@localhost", &fx.bob).await?;
    assert_eq!(raw.expect_close().await?.0, ErrorCode::UNAUTHORIZED);
    assert_eq!(
        raw.closed_code().await?,
        u64::from(ErrorCode::UNAUTHORIZED.0)
    );
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_second_stream_is_not_granted_and_the_first_works_on() -> Result<()> {
    let fx = start().await?;
    let mut raw = Raw::open(&fx.gateway).await?;
    raw.hello("alice@localhost", &fx.alice).await?;
    raw.expect_welcome().await?;
    let second = tokio::time::timeout(Duration::from_millis(500), raw.conn.open_bi()).await;
    assert!(second.is_err(), "a second bidirectional stream was granted");
    let uni = tokio::time::timeout(Duration::from_millis(200), raw.conn.open_uni()).await;
    assert!(uni.is_err(), "a unidirectional stream was granted");
    raw.send(&Up::Fetch {
        req: 1,
        target: "bob@localhost".into(),
    })
    .await?;
    match raw.next().await? {
        Some(Down::Presence { req: 1, doc }) => assert_eq!(doc.presentity, "bob@localhost"),
        other => bail!("expected Presence, got {other:?}"),
    }
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_hello_in_time_is_closed_too_slow() -> Result<()> {
    let fx = start_with(|c| c.timeouts.hello_timeout_ms = 300).await?;
    let mut raw = Raw::open(&fx.gateway).await?;
    // Half a frame: the stream exists, the Hello never completes.
    raw.raw(&[0x10, 0x00]).await?;
    assert_eq!(raw.expect_close().await?.0, ErrorCode::TOO_SLOW);
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_too_slow() -> Result<()> {
    let fx = start_with(|c| {
        c.limits.inbox_window = 8;
        c.limits.max_subscriptions = 8;
        c.limits.outbound_queue = 80;
    })
    .await?;
    // A tiny receive window: the gateway's writer blocks after about 1 KiB.
    let mut small = quinn::TransportConfig::default();
    small
        .stream_receive_window(quinn::VarInt::from_u32(1024))
        .receive_window(quinn::VarInt::from_u32(4096));
    let mut raw = Raw::open_with(&fx.gateway, small).await?;
    raw.hello("alice@localhost", &fx.alice).await?;
    for req in 1..=300 {
        let fetch = Up::Fetch {
            req,
            target: "bob@localhost".into(),
        };
        if raw.send(&fetch).await.is_err() {
            break; // already closed
        }
    }
    assert_eq!(raw.closed_code().await?, u64::from(ErrorCode::TOO_SLOW.0));
    // The gateway serves others on.
    let mut bob = Raw::open(&fx.gateway).await?;
    bob.hello("bob@localhost", &fx.bob).await?;
    bob.expect_welcome().await?;
    fx.gateway.shutdown().await;
    Ok(())
}

/// Alice's presence with this note.
fn noted(note: String) -> Presence {
    let mut presence = online();
    presence.tuples[0].note = Some(note);
    presence
}

/// Publishes `count` changes whose notes start with their number and are padded to
/// `note_len` bytes, pipelined in batches (smaller than any test's outbound queue)
/// whose `Ok`s are read before the next batch.
async fn publish_changes(raw: &mut Raw, count: u32, note_len: usize) -> Result<()> {
    const BATCH: u32 = 50;
    for first in (0..count).step_by(BATCH as usize) {
        let last = (first + BATCH).min(count);
        for i in first..last {
            let note = format!("{i:<note_len$}");
            raw.send(&Up::Publish {
                req: i + 1,
                presence: noted(note),
            })
            .await?;
        }
        for i in first..last {
            match raw.next().await? {
                Some(Down::Ok { req }) if req == i + 1 => {}
                other => bail!("expected Ok {}, got {other:?}", i + 1),
            }
        }
    }
    Ok(())
}

/// The change number a document's note carries.
fn change_of(doc: &tern_wire::PresenceDoc) -> Option<u32> {
    doc.presence
        .tuples
        .first()?
        .note
        .as_deref()?
        .trim()
        .parse()
        .ok()
}

/// A receive window of `stream` bytes for the session stream.
fn small_windows(stream: u32) -> quinn::TransportConfig {
    let mut small = quinn::TransportConfig::default();
    small
        .stream_receive_window(quinn::VarInt::from_u32(stream))
        .receive_window(quinn::VarInt::from_u32(4 * stream));
    small
}

#[tokio::test]
async fn a_slow_reader_is_not_closed_and_reads_the_newest_presence_last() -> Result<()> {
    const CHANGES: u32 = 2_000;
    let fx = start().await?;
    // Bob's link is narrow (2 KiB of stream window) and he reads it slowly.
    let mut bob = Raw::open_with(&fx.gateway, small_windows(2048)).await?;
    bob.hello("bob@localhost", &fx.bob).await?;
    bob.expect_welcome().await?;
    bob.send(&Up::Subscribe {
        req: 1,
        target: "alice@localhost".into(),
    })
    .await?;
    match bob.next().await? {
        Some(Down::Presence { req: 1, .. }) => {}
        other => bail!("expected Presence, got {other:?}"),
    }
    let mut alice = Raw::open(&fx.gateway).await?;
    alice.hello("alice@localhost", &fx.alice).await?;
    alice.expect_welcome().await?;
    let publisher = tokio::spawn(async move {
        publish_changes(&mut alice, CHANGES, 200).await?;
        anyhow::Ok(alice)
    });
    // About 8 KiB/s: far slower than Alice changes.
    let mut notifies = 0;
    let mut last = None;
    let mut chunk = [0u8; 256];
    loop {
        while let Some(frame) = bob.frames.next_frame::<Down>()? {
            let Down::Notify { doc } = frame else {
                bail!("expected Notify, got {frame:?}");
            };
            let change = change_of(&doc).context("a change without its number")?;
            assert!(last < Some(change), "{change} after {last:?}");
            last = Some(change);
            notifies += 1;
        }
        if last == Some(CHANGES - 1) {
            break;
        }
        let read = tokio::time::timeout(WAIT, bob.recv.read(&mut chunk))
            .await
            .context("no notification in time")??
            .context("the stream ended")?;
        bob.frames.extend(&chunk[..read]);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut alice = publisher.await??;
    assert!(
        notifies < 500,
        "{notifies} notifications for {CHANGES} changes"
    );
    // Nothing more is pending, and Bob's session is well.
    assert!(
        bob.conn.close_reason().is_none(),
        "the slow reader was closed"
    );
    bob.send(&Up::Fetch {
        req: 2,
        target: "alice@localhost".into(),
    })
    .await?;
    match bob.next().await? {
        Some(Down::Presence { req: 2, doc }) => assert_eq!(change_of(&doc), Some(CHANGES - 1)),
        other => bail!("expected Presence, got {other:?}"),
    }
    alice.send(&Up::Bye).await?;
    bob.send(&Up::Bye).await?;
    assert_eq!(bob.expect_close().await?.0, ErrorCode::GOODBYE);
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_reads_nothing_outlasts_presence_but_not_its_own_requests() -> Result<()> {
    let fx = start_with(|c| {
        c.limits.inbox_window = 8;
        c.limits.max_subscriptions = 8;
        c.limits.outbound_queue = 80;
    })
    .await?;
    let mut bob = Raw::open_with(&fx.gateway, small_windows(1024)).await?;
    bob.hello("bob@localhost", &fx.bob).await?;
    bob.expect_welcome().await?;
    bob.send(&Up::Subscribe {
        req: 1,
        target: "alice@localhost".into(),
    })
    .await?;
    assert!(matches!(bob.next().await?, Some(Down::Presence { .. })));
    // From now on Bob reads nothing. Presence changes, whatever their number, cost the
    // gateway one queued notification: Bob stays connected.
    let mut alice = Raw::open(&fx.gateway).await?;
    alice.hello("alice@localhost", &fx.alice).await?;
    alice.expect_welcome().await?;
    publish_changes(&mut alice, 400, 900).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bob.conn.close_reason().is_none(),
        "closed for presence alone"
    );
    // Answers cannot be coalesced: asking without reading overflows the queue.
    for req in 2..=300 {
        let fetch = Up::Fetch {
            req,
            target: "alice@localhost".into(),
        };
        if bob.send(&fetch).await.is_err() {
            break; // already closed
        }
    }
    assert_eq!(bob.closed_code().await?, u64::from(ErrorCode::TOO_SLOW.0));
    // Nothing is lost: a message sent meanwhile waits in Bob's inbox.
    alice
        .send(&Up::Send {
            req: 1,
            msg: tern_wire::Message {
                id: vec![7; 16],
                to: "bob@localhost".into(),
                reply_to: None,
                content_type: None,
                body: b"later".to_vec(),
            },
        })
        .await?;
    match alice.next().await? {
        Some(Down::Receipt { req: 1, status }) => {
            assert_eq!(status, tern_wire::ReceiptStatus::Stored)
        }
        other => bail!("expected Receipt, got {other:?}"),
    }
    let mut again = Raw::open(&fx.gateway).await?;
    again.hello("bob@localhost", &fx.bob).await?;
    again.expect_welcome().await?;
    loop {
        match again.next().await? {
            Some(Down::Deliver { item, .. }) => {
                let tern_wire::InboxItem::Message(message) = item else {
                    bail!("expected a message, got {item:?}");
                };
                assert_eq!(message.body, b"later");
                break;
            }
            Some(Down::Notify { .. }) => {}
            other => bail!("expected Deliver, got {other:?}"),
        }
    }
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_storage_failure_fails_one_request_not_the_gateway() -> Result<()> {
    let fx = start().await?;
    // Another process leaves an unreadable presence document for Bob.
    let db = rusqlite::Connection::open(fx._dir.path().join("tern.db"))?;
    db.busy_timeout(WAIT)?;
    db.execute(
        "INSERT INTO presence (presentity, doc) VALUES ('bob@localhost', X'FFFFFFFF')",
        [],
    )?;
    let mut raw = Raw::open(&fx.gateway).await?;
    raw.hello("alice@localhost", &fx.alice).await?;
    raw.expect_welcome().await?;
    let fetch = |req, target: &str| Up::Fetch {
        req,
        target: target.into(),
    };
    raw.send(&fetch(1, "bob@localhost")).await?;
    match raw.next().await? {
        Some(Down::Fail { req: 1, code, .. }) => assert_eq!(code, ErrorCode::INTERNAL),
        other => bail!("expected Fail, got {other:?}"),
    }
    raw.send(&fetch(2, "alice@localhost")).await?;
    match raw.next().await? {
        Some(Down::Presence { req: 2, .. }) => {}
        other => bail!("expected Presence, got {other:?}"),
    }
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_vanished_client_goes_out_of_contact() -> Result<()> {
    let fx = start().await?;
    // Bob stays connected (keep-alives) and watches Alice.
    let mut keep = quinn::TransportConfig::default();
    keep.keep_alive_interval(Some(Duration::from_millis(100)));
    let mut bob = Raw::open_with(&fx.gateway, keep).await?;
    bob.hello("bob@localhost", &fx.bob).await?;
    bob.expect_welcome().await?;
    // Alice's client goes silent without a goodbye: no keep-alives and a short idle
    // timeout, which QUIC negotiates down for both ends.
    let mut silent = quinn::TransportConfig::default();
    silent.max_idle_timeout(Some(Duration::from_millis(600).try_into()?));
    let mut alice = Raw::open_with(&fx.gateway, silent).await?;
    alice.hello("alice@localhost", &fx.alice).await?;
    alice.expect_welcome().await?;
    alice
        .send(&Up::Publish {
            req: 1,
            presence: online(),
        })
        .await?;
    assert_eq!(alice.next().await?, Some(Down::Ok { req: 1 }));
    bob.send(&Up::Subscribe {
        req: 1,
        target: "alice@localhost".into(),
    })
    .await?;
    match bob.next().await? {
        Some(Down::Presence { req: 1, doc }) => assert!(doc.presence.is_open()),
        other => bail!("expected Presence, got {other:?}"),
    }
    // Nothing more from Alice: the idle timeout ends her connection and the gateway
    // tells her watcher.
    match bob.next().await? {
        Some(Down::Notify { doc }) => {
            assert_eq!(doc.presentity, "alice@localhost");
            assert!(!doc.presence.is_open());
        }
        other => bail!("expected Notify, got {other:?}"),
    }
    drop(alice);
    fx.gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_sessions_with_shutdown_and_commits_departure() -> Result<()> {
    let fx = start().await?;
    let data_dir = fx._dir.path().to_owned();
    let mut raw = Raw::open(&fx.gateway).await?;
    raw.hello("alice@localhost", &fx.alice).await?;
    raw.expect_welcome().await?;
    raw.send(&Up::Publish {
        req: 1,
        presence: online(),
    })
    .await?;
    assert_eq!(raw.next().await?, Some(Down::Ok { req: 1 }));
    let Fixture { _dir, gateway, .. } = fx;
    let (close, ()) = tokio::join!(raw.expect_close(), gateway.shutdown());
    assert_eq!(close?.0, ErrorCode::SHUTDOWN);
    // The departure was committed: the stored document reads CLOSED.
    let store = tern_gateway::SqliteStore::open(&data_dir)?;
    let doc = store
        .read(|s| s.presence("alice@localhost"))?
        .context("no stored presence")?;
    assert!(!doc.doc.presence.is_open());
    Ok(())
}

#[tokio::test]
async fn the_certificate_is_made_once_and_reused_across_restarts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_owned(),
        ..GatewayConfig::default()
    };
    let first = tern_gateway::start(config.clone()).await?;
    let pem = first.cert_pem();
    assert_eq!(first.cert_path(), dir.path().join("cert.pem"));
    assert_eq!(std::fs::read(first.cert_path())?, pem);
    first.shutdown().await;
    let second = tern_gateway::start(config).await?;
    assert_eq!(second.cert_pem(), pem);
    // A client trusting the first run's certificate reaches the second run.
    let token = users::add(dir.path(), "carol@localhost", UserOptions::default())?;
    let mut raw = Raw::open(&second).await?;
    raw.hello("carol@localhost", &token).await?;
    raw.expect_welcome().await?;
    second.shutdown().await;
    Ok(())
}
