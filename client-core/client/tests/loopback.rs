//! Loopback tests of the async client against a small scripted gateway (quinn + tern-wire
//! on 127.0.0.1). They prove the runtime's adapters: TLS trust and ALPN, framing on the
//! session stream, request matching, inbox acknowledgement, reconnection and goodbye,
//! 0-RTT (accepted and rejected), the offline queue, the state directory, and presence
//! synchronisation (`Have`, batches, `Applied`, `Mode`, `FetchIf`, the kept cache). The real
//! gateway's behaviour is tested elsewhere (`tests/`); this one only follows the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tern_client::{
    Basic, Client, ClientConfig, ClientError, ClientMode, ConnectionState, ErrorCode, Event,
    FetchIf, Message, Presence, PresenceDoc, ReceiptStatus, SendOutcome, Tuple, ZeroRtt,
};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::delta::Check;
use tern_wire::frame::{Opened, Welcome};
use tern_wire::limits::FRAME_MAX;
use tern_wire::{Batch, Change, Down, Held, InboxItem, Incoming, Open, Up};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// How the scripted gateway behaves.
#[derive(Clone, Default)]
struct Script {
    /// Inbox sequence numbers pushed after `Opened`, per session (the last entry repeats).
    inbox: Vec<Vec<u64>>,
    /// Answer `Open` with `Welcome`, as a gateway without device sessions would.
    welcome: bool,
    /// Sessions after the first resume the device's (`Opened.resumed`).
    resume: bool,
}

/// A frame the gateway received, with the index of the session it came on.
type Seen = (usize, Up);

struct Gateway {
    addr: SocketAddr,
    cert_pem: Vec<u8>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Frames received but not yet expected.
    backlog: Vec<Seen>,
    endpoint: quinn::Endpoint,
    /// While set, connection attempts are refused (the gateway is unreachable).
    refuse: Arc<AtomicBool>,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

/// The scripted gateway's TLS: TLS 1.3, ALPN, 0-RTT on a fresh session cache.
fn server_config(cert: &CertificateDer<'static>, key: &[u8]) -> quinn::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivatePkcs8KeyDer::from(key.to_vec());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .expect("server certificate");
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    tls.max_early_data_size = u32::MAX;
    let crypto = Arc::new(QuicServerConfig::try_from(tls).expect("QUIC suite"));
    quinn::ServerConfig::with_crypto(crypto)
}

impl Gateway {
    fn start(script: Script) -> Self {
        let cert =
            rcgen::generate_simple_self_signed(vec!["example.com".into()]).expect("certificate");
        let cert_der: CertificateDer<'static> = cert.cert.der().clone();
        let key = cert.signing_key.serialize_der();
        let config = server_config(&cert_der, &key);
        let loopback = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let endpoint = quinn::Endpoint::server(config, loopback).expect("UDP socket");
        let addr = endpoint.local_addr().expect("local address");
        let (tx, seen) = mpsc::unbounded_channel();
        let accept = endpoint.clone();
        let refuse = Arc::new(AtomicBool::new(false));
        let refusing = refuse.clone();
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(incoming) = accept.accept().await {
                if refusing.load(Ordering::SeqCst) {
                    incoming.ignore();
                    continue;
                }
                let Ok(conn) = incoming.await else { continue };
                let inbox = script
                    .inbox
                    .get(index)
                    .or(script.inbox.last())
                    .cloned()
                    .unwrap_or_default();
                let answer = Answer {
                    welcome: script.welcome,
                    resumed: script.resume && index > 0,
                };
                tokio::spawn(session(conn, index, inbox, answer, tx.clone()));
                index += 1;
            }
        });
        Self {
            addr,
            cert_pem: cert.cert.pem().into_bytes(),
            seen,
            backlog: Vec::new(),
            endpoint,
            refuse,
            cert: cert_der,
            key,
        }
    }

    /// Forgets every session ticket handed out so far: a returning client's 0-RTT data
    /// is rejected.
    fn forget_tickets(&self) {
        self.endpoint
            .set_server_config(Some(server_config(&self.cert, &self.key)));
    }

    fn config(&self, token: &str) -> ClientConfig {
        ClientConfig::new(
            self.addr.to_string(),
            "Alice@Example.com".into(),
            token.into(),
            self.cert_pem.clone(),
        )
    }

    /// Every frame received on session `index` so far, in order (they stay expected).
    fn frames_of(&mut self, index: usize) -> Vec<Up> {
        while let Ok(seen) = self.seen.try_recv() {
            self.backlog.push(seen);
        }
        self.backlog
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Waits for a frame matching `want` on session `index`, in any order with others.
    async fn expect(&mut self, index: usize, want: impl Fn(&Up) -> bool) -> Up {
        let found = |(i, frame): &Seen| *i == index && want(frame);
        if let Some(at) = self.backlog.iter().position(found) {
            return self.backlog.remove(at).1;
        }
        let wait = async {
            loop {
                let seen = self.seen.recv().await.expect("gateway gone");
                if found(&seen) {
                    return seen.1;
                }
                self.backlog.push(seen);
            }
        };
        timeout(WAIT, wait).await.expect("frame not seen in time")
    }
}

fn doc(who: &str) -> PresenceDoc {
    PresenceDoc {
        presentity: who.into(),
        updated: 7,
        presence: Presence {
            tuples: vec![Tuple {
                id: "default".into(),
                basic: Basic::Open,
                availability: None,
                contact: None,
                note: None,
                at: None,
                ext: vec![],
            }],
            card: vec![],
        },
    }
}

/// The slot the scripted gateway gives a presentity: stable across sessions.
fn slot_of(target: &str) -> u32 {
    target.bytes().map(u32::from).sum()
}

/// The version of every document the scripted gateway hands out, and what a `FetchIf`
/// with it is answered `Ok` for.
const VERSION: u64 = 7;

/// "changing@example.com" moves to this version, with this note, right after it is
/// subscribed to.
const CHANGED: u64 = 8;

fn changed_doc(who: &str) -> Presence {
    let mut presence = doc(who).presence;
    presence.tuples[0].note = Some("changed".into());
    presence
}

/// A batch with one change, sealed with the checksum of the state it leads to.
fn batch_of(seq: u32, change: Change, name: &str, presence: &Presence) -> Batch {
    let mut check = Check::new();
    let version = match &change {
        Change::Full { version, .. } | Change::Delta { version, .. } => *version,
        Change::Gone { .. } => 0,
    };
    check.state(change.slot(), name, version, presence);
    Batch {
        seq,
        time: 1_700_000_000,
        check: check.finish(),
        changes: vec![change],
    }
}

fn item(seq: u64) -> InboxItem {
    InboxItem::Message(Incoming {
        id: vec![seq as u8; 16],
        from: "bob@example.com".into(),
        to: "alice@example.com".into(),
        reply_to: None,
        content_type: None,
        body: format!("message {seq}").into_bytes(),
        sent: 1,
    })
}

/// How one session answers `Open`.
#[derive(Clone, Copy)]
struct Answer {
    welcome: bool,
    resumed: bool,
}

/// One session of the scripted gateway.
async fn session(
    conn: quinn::Connection,
    index: usize,
    inbox: Vec<u64>,
    answer: Answer,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut frames = FrameBuf::new(FRAME_MAX);
    let mut buf = vec![0; 4096];
    // Presence synchronisation: whether the session opened with SYNC, and the number of
    // the last batch sent.
    let mut syncs = false;
    let mut batches = 0u32;
    loop {
        let frame: Up = loop {
            match frames.next_frame() {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(_) => return,
            }
            match recv.read(&mut buf).await {
                Ok(Some(n)) => frames.extend(&buf[..n]),
                _ => return,
            }
        };
        let _ = seen.send((index, frame.clone()));
        let mut out = Vec::new();
        match frame {
            Up::Open(open)
                if open.token == "good"
                    || (open.token.is_empty() && open.user == "anonymous@example.com") =>
            {
                syncs = open.syncs();
                if answer.welcome {
                    out.push(Down::Welcome(Welcome {
                        version: tern_wire::VERSION,
                        user: "alice@example.com".into(),
                        frame_max: 64 * 1024,
                        body_max: 16 * 1024,
                        time: 1,
                    }));
                } else {
                    out.push(Down::Opened(Opened {
                        version: tern_wire::VERSION,
                        user: "alice@example.com".into(),
                        frame_max: 64 * 1024,
                        body_max: 16 * 1024,
                        time: 1,
                        resumed: answer.resumed,
                        resume_window: 30_000,
                        keepalive: 15_000,
                    }));
                }
                for seq in &inbox {
                    out.push(Down::Deliver {
                        seq: *seq,
                        item: item(*seq),
                    });
                }
            }
            Up::Hello(_) | Up::Open(_) => out.push(Down::Close {
                code: ErrorCode::UNAUTHORIZED,
                text: "wrong token".into(),
            }),
            Up::Publish { req, .. } | Up::Unsubscribe { req, .. } => out.push(Down::Ok { req }),
            Up::Fetch { target, .. } if target == "gone@example.com" => {
                // The gateway restarts with this request unanswered.
                conn.close(quinn::VarInt::from_u32(14), b"shutdown");
                return;
            }
            Up::Fetch { req, target } if target == "nobody@example.com" => out.push(Down::Fail {
                req,
                code: ErrorCode::UNKNOWN_USER,
                text: "no such user".into(),
            }),
            Up::Subscribe { req, target } if target == "denies@example.com" => {
                out.push(Down::Fail {
                    req,
                    code: ErrorCode::REFUSED,
                    text: "denied".into(),
                });
            }
            Up::Subscribe { req, target } if target == "asks@example.com" && syncs => {
                out.push(Down::Pending { req });
                out.push(Down::Asked {
                    watcher: "carol@example.com".into(),
                });
                out.push(Down::Subscription {
                    target: target.clone(),
                    state: tern_wire::SubState::Active,
                });
                batches += 1;
                let change = Change::Full {
                    slot: slot_of(&target),
                    version: VERSION,
                    age: 0,
                    name: Some(target.clone()),
                    presence: doc(&target).presence,
                };
                out.push(Down::Batch(batch_of(
                    batches,
                    change,
                    &target,
                    &doc(&target).presence,
                )));
            }
            Up::Subscribe { req, target } if syncs => {
                out.push(Down::Subscribed {
                    req,
                    slot: slot_of(&target),
                    version: VERSION,
                    doc: doc(&target),
                });
                if target == "changing@example.com" {
                    batches += 1;
                    let ops = tern_wire::delta::diff(&doc(&target).presence, &changed_doc(&target))
                        .expect("a delta");
                    let change = Change::Delta {
                        slot: slot_of(&target),
                        version: CHANGED,
                        back: 1,
                        age: 0,
                        ops,
                    };
                    let batch = batch_of(batches, change, &target, &changed_doc(&target));
                    out.push(Down::Batch(batch));
                }
            }
            Up::Fetch { req, target } | Up::Subscribe { req, target } => {
                out.push(Down::Presence {
                    req,
                    doc: doc(&target),
                });
            }
            Up::Watchers { req } => out.push(Down::Watchers {
                req,
                subscribers: vec!["bob@example.com".into()],
                fetchers: Vec::new(),
            }),
            Up::FetchIf { req, version, .. } if version == VERSION => out.push(Down::Ok { req }),
            Up::FetchIf { req, target, .. } => out.push(Down::Versioned {
                req,
                version: VERSION,
                doc: doc(&target),
            }),
            Up::Have(have) => {
                // Whatever the client holds is current: an empty answer.
                batches += 1;
                let batch = Batch {
                    seq: batches,
                    time: 1_700_000_000,
                    check: Check::new().finish(),
                    changes: vec![],
                };
                out.push(Down::Synced {
                    req: have.req,
                    batch,
                });
            }
            Up::Mode { .. } | Up::Applied { .. } => {}
            // The first session never answers this one (the link is about to drop).
            Up::Send { msg, .. } if msg.body == b"hold" && index == 0 => {}
            Up::Send { req, .. } => out.push(Down::Receipt {
                req,
                status: ReceiptStatus::Delivered,
            }),
            Up::Ack { .. } => {}
            // Access rules, subscriptions and delegation: an owner who keeps no rules,
            // has no subscriptions and no delegates.
            Up::GetRules { req } => out.push(Down::Rules {
                req,
                rules: tern_wire::Rules::default(),
            }),
            Up::Decide { req, .. } => {
                out.push(Down::Ok { req });
                out.push(Down::Subscription {
                    target: "asks@example.com".into(),
                    state: tern_wire::SubState::Cancelled,
                });
            }
            Up::SetRules { req, .. } | Up::Cancel { req, .. } => {
                out.push(Down::Ok { req });
            }
            Up::Subscriptions { req, incoming } => out.push(Down::Subscriptions {
                req,
                list: vec![tern_wire::SubInfo {
                    who: if incoming {
                        "carol@example.com"
                    } else {
                        "asks@example.com"
                    }
                    .into(),
                    state: tern_wire::SubState::Pending,
                }],
            }),
            Up::Read { req, after, .. } => out.push(Down::Items {
                req,
                items: vec![tern_wire::Item {
                    seq: after + 1,
                    item: item(after + 1),
                }],
                more: after == 0,
            }),
            Up::PublishFor { req, .. } => out.push(Down::Fail {
                req,
                code: ErrorCode::REFUSED,
                text: "not a delegate".into(),
            }),
            // Administrators' frames are not for clients.
            Up::Operate(_) | Up::Admin { .. } => out.push(Down::Close {
                code: ErrorCode::PROTOCOL,
                text: "not an administrator's session".into(),
            }),
            Up::Bye => out.push(Down::Close {
                code: ErrorCode::GOODBYE,
                text: "goodbye".into(),
            }),
        }
        for down in out {
            if send.write_all(&codec::encode(&down)).await.is_err() {
                return;
            }
        }
    }
}

fn is_message(event: &Option<Event>, want: u64) -> bool {
    matches!(event, Some(Event::Message { seq, .. }) if *seq == want)
}

async fn next(client: &Client) -> Option<Event> {
    timeout(WAIT, client.next_event())
        .await
        .expect("no event in time")
}

#[tokio::test]
async fn requests_pushes_acks_and_goodbye() {
    let mut gw = Gateway::start(Script {
        inbox: vec![vec![1, 2]],
        ..Script::default()
    });
    let client = Client::connect(gw.config("good")).await.unwrap();
    assert_eq!(client.user(), "alice@example.com");
    let open = gw.expect(0, |f| matches!(f, Up::Open(_))).await;
    let Up::Open(open) = open else { unreachable!() };
    assert_eq!(
        open.user, "alice@example.com",
        "the client normalises the user"
    );
    assert_eq!(open.device.len(), 16);
    assert_eq!(open.inbox_seen, 0);
    assert!(open.takes_inbox());
    let info = client.session_info();
    assert_eq!(info.device, open.device);
    assert_eq!(info.connections, 1);
    assert!(!info.resumed);
    assert_eq!(info.zero_rtt, ZeroRtt::NotTried, "no ticket yet");
    assert_eq!(info.suggested_keepalive_ms, Some(15_000));

    client
        .publish(doc("alice@example.com").presence)
        .await
        .unwrap();
    let fetched = client.fetch("Bob@Example.com".into()).await.unwrap();
    assert_eq!(fetched, doc("bob@example.com"));
    assert_eq!(
        client.subscribe("carol@example.com".into()).await.unwrap(),
        doc("carol@example.com")
    );
    client
        .unsubscribe("carol@example.com".into())
        .await
        .unwrap();
    assert_eq!(
        client.fetch("nobody@example.com".into()).await,
        Err(ClientError::Failed {
            code: 6,
            text: "no such user".into()
        })
    );
    assert!(matches!(
        client.fetch("not an address".into()).await,
        Err(ClientError::InvalidArgument(_))
    ));

    let outcome = client
        .send("bob@example.com".into(), b"hi".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(outcome.id.len(), 16);
    assert_eq!(outcome.status, ReceiptStatus::Delivered);
    let resend = Message {
        id: outcome.id.clone(),
        to: "bob@example.com".into(),
        reply_to: None,
        content_type: Some("text/plain".into()),
        body: b"hi".to_vec(),
    };
    assert_eq!(client.send_message(resend).await.unwrap().id, outcome.id);

    // Items are acknowledged once the application has moved past them.
    assert!(is_message(&next(&client).await, 1));
    assert!(is_message(&next(&client).await, 2));
    gw.expect(0, |f| *f == Up::Ack { upto: 1 }).await;
    client.acknowledge();
    client.close().await;
    gw.expect(0, |f| *f == Up::Ack { upto: 2 }).await;
    gw.expect(0, |f| *f == Up::Bye).await;
    assert_eq!(next(&client).await, None);
    assert!(matches!(
        client.fetch("bob@example.com".into()).await,
        Err(ClientError::Closed { .. })
    ));
}

#[tokio::test]
async fn a_wrong_token_is_rejected() {
    let gw = Gateway::start(Script::default());
    let err = Client::connect(gw.config("bad")).await.unwrap_err();
    assert_eq!(
        err,
        ClientError::Rejected {
            code: ErrorCode::UNAUTHORIZED.0,
            text: "wrong token".into()
        }
    );
    assert_eq!(err.to_string(), "rejected: unauthorized: wrong token");
}

#[tokio::test]
async fn an_untrusted_certificate_fails_tls() {
    let gw = Gateway::start(Script::default());
    let other = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
    let config = ClientConfig {
        ca_pem: Some(other.cert.pem().into_bytes()),
        ..gw.config("good")
    };
    let err = Client::connect(config).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn reconnects_after_a_drop_and_surfaces_items_once() {
    let mut gw = Gateway::start(Script {
        inbox: vec![vec![1], vec![1, 2]],
        ..Script::default()
    });
    let client = Client::connect(gw.config("good")).await.unwrap();
    assert!(is_message(&next(&client).await, 1));
    let presence = doc("alice@example.com").presence;
    client.publish(presence.clone()).await.unwrap();

    // The gateway drops the link with this request in flight.
    let lost = client.fetch("gone@example.com".into()).await;
    assert!(matches!(lost, Err(ClientError::Closed { .. })), "{lost:?}");
    let Some(Event::Connection(ConnectionState::Reconnecting { reason })) = next(&client).await
    else {
        panic!("expected Reconnecting");
    };
    assert!(reason.contains("shutdown"), "{reason}");
    assert_eq!(
        next(&client).await,
        Some(Event::Connection(ConnectionState::Connected))
    );
    // Item 1 is redelivered by the new session; the application sees only item 2, and
    // item 1 is acknowledged there since the application had taken it.
    assert!(is_message(&next(&client).await, 2));
    gw.expect(1, |f| *f == Up::Ack { upto: 1 }).await;
    // The gateway marked the presentity CLOSED when the link dropped: it is restored.
    let restored = gw.expect(1, |f| matches!(f, Up::Publish { .. })).await;
    assert!(matches!(restored, Up::Publish { presence: p, .. } if p == presence));
    assert_eq!(
        client.fetch("bob@example.com".into()).await.unwrap(),
        doc("bob@example.com")
    );
    // Closing right after taking an item leaves it unacknowledged: the application may
    // have stopped because it could not handle it.
    client.close().await;
    gw.expect(1, |f| *f == Up::Bye).await;
    let acks: Vec<&Up> = gw
        .backlog
        .iter()
        .map(|(_, f)| f)
        .filter(|f| matches!(f, Up::Ack { .. }))
        .collect();
    assert!(acks.is_empty(), "{acks:?}");
}

#[tokio::test]
async fn a_client_without_inbox_leaves_items_alone() {
    let mut gw = Gateway::start(Script {
        inbox: vec![vec![1, 2]],
        ..Script::default()
    });
    let config = ClientConfig {
        inbox: false,
        ..gw.config("good")
    };
    let client = Client::connect(config).await.unwrap();
    // A request after Welcome: its answer comes after the pushed items.
    client.fetch("bob@example.com".into()).await.unwrap();
    client.close().await;
    assert_eq!(next(&client).await, None, "no inbox item was surfaced");
    let mut frames: Vec<Up> = gw.backlog.drain(..).map(|(_, f)| f).collect();
    while let Ok((_, frame)) = gw.seen.try_recv() {
        frames.push(frame);
    }
    assert!(frames.contains(&Up::Bye));
    assert!(
        !frames.iter().any(|f| matches!(f, Up::Ack { .. })),
        "{frames:?}"
    );
}

#[tokio::test]
async fn without_reconnect_a_drop_is_final() {
    let gw = Gateway::start(Script::default());
    let config = ClientConfig {
        reconnect: false,
        ..gw.config("good")
    };
    let client = Client::connect(config).await.unwrap();
    assert!(client.fetch("gone@example.com".into()).await.is_err());
    let Some(Event::Connection(ConnectionState::Disconnected { reason })) = next(&client).await
    else {
        panic!("expected Disconnected");
    };
    assert!(reason.contains("shutdown"), "{reason}");
    assert_eq!(next(&client).await, None);
}

fn message(id: u8, body: &str) -> Message {
    Message {
        id: vec![id; 16],
        to: "Bob@Example.com".into(),
        reply_to: None,
        content_type: None,
        body: body.as_bytes().to_vec(),
    }
}

fn is_send_of(frame: &Up, id: u8) -> bool {
    matches!(frame, Up::Send { msg, .. } if msg.id == vec![id; 16])
}

/// Drops the link (the scripted gateway closes it with `shutdown` on this fetch) and
/// waits for the client to notice.
async fn drop_link(client: &Client) {
    assert!(client.fetch("gone@example.com".into()).await.is_err());
    let event = next(client).await;
    assert!(
        matches!(
            event,
            Some(Event::Connection(ConnectionState::Reconnecting { .. }))
        ),
        "{event:?}"
    );
}

/// A message waits unanswered on session 0 when the link drops; the next session sends
/// `Open` and then the message, first thing, with its id, and the caller gets its receipt.
async fn resend_after_reconnect(gw: &mut Gateway, client: &Client) -> Vec<Up> {
    let sending = client.send_message(message(7, "hold"));
    let dropping = async {
        gw.expect(0, |f| is_send_of(f, 7)).await;
        drop_link(client).await;
    };
    let (sent, ()) = tokio::join!(sending, dropping);
    assert_eq!(
        sent,
        Ok(SendOutcome {
            id: vec![7; 16],
            to: "bob@example.com".into(),
            status: ReceiptStatus::Delivered
        })
    );
    assert_eq!(
        next(client).await,
        Some(Event::Connection(ConnectionState::Connected))
    );
    let frames = gw.frames_of(1);
    assert!(matches!(frames[0], Up::Open(_)), "{frames:?}");
    assert!(matches!(frames[1], Up::Have(_)), "{frames:?}");
    assert!(is_send_of(&frames[2], 7), "{frames:?}");
    frames
}

#[tokio::test]
async fn a_reconnect_sends_open_and_the_outbox_as_0rtt_data() {
    let mut gw = Gateway::start(Script {
        resume: true,
        ..Script::default()
    });
    let client = Client::connect(gw.config("good")).await.unwrap();
    let first = gw.expect(0, |f| matches!(f, Up::Open(_))).await;
    let frames = resend_after_reconnect(&mut gw, &client).await;
    assert_eq!(frames[0], first, "the same device, the same Open");
    let info = client.session_info();
    assert_eq!(info.zero_rtt, ZeroRtt::Sent { accepted: true });
    assert!(info.resumed);
    assert_eq!(info.connections, 2);
    // Requests that are not replay-safe work once the handshake is confirmed.
    assert_eq!(
        client.fetch("bob@example.com".into()).await.unwrap(),
        doc("bob@example.com")
    );
    client.close().await;
}

#[tokio::test]
async fn rejected_early_data_is_sent_again_after_the_handshake() {
    let mut gw = Gateway::start(Script::default());
    let client = Client::connect(gw.config("good")).await.unwrap();
    client
        .publish(doc("alice@example.com").presence)
        .await
        .unwrap();
    gw.forget_tickets();
    let frames = resend_after_reconnect(&mut gw, &client).await;
    let info = client.session_info();
    assert_eq!(info.zero_rtt, ZeroRtt::Sent { accepted: false });
    assert!(!info.resumed);
    // A fresh session: the presence is published again, after the outbox.
    let restored = gw.expect(1, |f| matches!(f, Up::Publish { .. })).await;
    assert!(
        matches!(restored, Up::Publish { presence, .. } if presence == doc("alice@example.com").presence)
    );
    assert!(
        !frames
            .iter()
            .take(3)
            .any(|f| matches!(f, Up::Publish { .. }))
    );
    client.close().await;
}

#[tokio::test]
async fn messages_wait_offline_and_late_receipts_come_as_events() {
    let mut gw = Gateway::start(Script::default());
    let config = ClientConfig {
        request_timeout: Duration::from_millis(800),
        ..gw.config("good")
    };
    let client = Client::connect(config).await.unwrap();
    gw.refuse.store(true, Ordering::SeqCst);
    drop_link(&client).await;

    // Offline: a message waits in the outbox; other requests are refused at once.
    let sent = client.send_message(message(3, "while offline")).await;
    assert_eq!(sent, Err(ClientError::Timeout));
    assert_eq!(
        client.fetch("bob@example.com".into()).await,
        Err(ClientError::NotConnected)
    );
    // The same id again joins the waiting message instead of queueing a second one.
    assert_eq!(
        client.send_message(message(3, "while offline")).await,
        Err(ClientError::Timeout)
    );

    gw.refuse.store(false, Ordering::SeqCst);
    client.network_changed(); // try at once instead of after the backoff
    assert_eq!(
        next(&client).await,
        Some(Event::Connection(ConnectionState::Connected))
    );
    assert_eq!(
        next(&client).await,
        Some(Event::Sent(SendOutcome {
            id: vec![3; 16],
            to: "bob@example.com".into(),
            status: ReceiptStatus::Delivered
        }))
    );
    let frames = gw.frames_of(1);
    assert!(matches!(frames[0], Up::Open(_)), "{frames:?}");
    assert!(is_send_of(&frames[2], 3), "{frames:?}");
    assert_eq!(
        frames.iter().filter(|f| is_send_of(f, 3)).count(),
        1,
        "sent once: {frames:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn network_changed_moves_the_connection_without_a_handshake() {
    let mut gw = Gateway::start(Script::default());
    let client = Client::connect(gw.config("good")).await.unwrap();
    client.network_changed();
    assert_eq!(
        client.fetch("bob@example.com".into()).await.unwrap(),
        doc("bob@example.com")
    );
    let outcome = client
        .send("bob@example.com".into(), b"moved".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(outcome.status, ReceiptStatus::Delivered);
    assert_eq!(client.session_info().connections, 1);
    gw.expect(0, |f| matches!(f, Up::Send { .. })).await;
    assert!(gw.frames_of(1).is_empty(), "no second connection");
    client.close().await;
}

#[tokio::test]
async fn a_gateway_without_device_sessions_answers_welcome() {
    let gw = Gateway::start(Script {
        welcome: true,
        ..Script::default()
    });
    let client = Client::connect(gw.config("good")).await.unwrap();
    let info = client.session_info();
    assert!(!info.resumed);
    assert_eq!(info.suggested_keepalive_ms, None);
    assert_eq!(
        client.fetch("bob@example.com".into()).await.unwrap(),
        doc("bob@example.com")
    );
    client.close().await;
}

#[tokio::test]
async fn a_restarted_client_resumes_with_its_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(Script {
        inbox: vec![vec![1, 2]],
        resume: true,
        ..Script::default()
    });
    let config = ClientConfig {
        state_dir: Some(dir.path().join("alice")),
        request_timeout: Duration::from_millis(800),
        ..gw.config("good")
    };
    let first = Client::connect(config.clone()).await.unwrap();
    first
        .publish(doc("alice@example.com").presence)
        .await
        .unwrap();
    assert!(is_message(&next(&first).await, 1));
    assert!(is_message(&next(&first).await, 2)); // item 1 is released
    let sent = first.send_message(message(9, "hold")).await;
    assert_eq!(sent, Err(ClientError::Timeout), "unanswered: stays queued");
    let Up::Open(open) = gw.expect(0, |f| matches!(f, Up::Open(_))).await else {
        unreachable!()
    };
    // Another client cannot use the directory meanwhile.
    assert!(matches!(
        Client::connect(config.clone()).await,
        Err(ClientError::Storage(_))
    ));
    first.abandon().await; // a crash: no goodbye
    assert!(first.fetch("bob@example.com".into()).await.is_err());

    let second = Client::connect(config.clone()).await.unwrap();
    let frames = gw.frames_of(1);
    let Up::Open(again) = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(again.device, open.device, "the same device");
    assert_eq!(again.inbox_seen, 1, "what the application released");
    assert!(matches!(frames[1], Up::Have(_)), "{frames:?}");
    assert!(
        is_send_of(&frames[2], 9),
        "the outbox right after Open and Have"
    );
    let info = second.session_info();
    assert!(info.resumed);
    assert_eq!(info.connections, 1);
    // Item 2 was shown but not released: it comes again; item 1 does not.
    assert!(is_message(&next(&second).await, 2));
    assert_eq!(
        next(&second).await,
        Some(Event::Sent(SendOutcome {
            id: vec![9; 16],
            to: "bob@example.com".into(),
            status: ReceiptStatus::Delivered
        }))
    );
    gw.expect(1, |f| *f == Up::Ack { upto: 1 }).await;
    assert!(
        !gw.frames_of(1)
            .iter()
            .any(|f| matches!(f, Up::Publish { .. })),
        "a resumed session keeps its presence"
    );
    second.acknowledge();
    second.close().await;
    gw.expect(1, |f| *f == Up::Ack { upto: 2 }).await;
    drop(second);

    let bob = ClientConfig {
        user: "bob@example.com".into(),
        ..config
    };
    let err = Client::connect(bob).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn after_a_fresh_start_the_kept_presence_is_published_until_a_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(Script::default());
    let config = ClientConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..gw.config("good")
    };
    let presence = doc("alice@example.com").presence;
    let first = Client::connect(config.clone()).await.unwrap();
    first.publish(presence.clone()).await.unwrap();
    first.abandon().await;

    let second = Client::connect(config.clone()).await.unwrap();
    assert!(!second.session_info().resumed);
    let restored = gw.expect(1, |f| matches!(f, Up::Publish { .. })).await;
    assert!(matches!(restored, Up::Publish { presence: p, .. } if p == presence));
    second.close().await;
    drop(second);

    let third = Client::connect(config).await.unwrap();
    third.fetch("bob@example.com".into()).await.unwrap();
    assert!(
        !gw.frames_of(2)
            .iter()
            .any(|f| matches!(f, Up::Publish { .. })),
        "a goodbye forgets the presence"
    );
    third.close().await;
}

#[tokio::test]
async fn presence_is_synchronised_cached_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(Script {
        resume: true,
        ..Script::default()
    });
    let config = ClientConfig {
        state_dir: Some(dir.path().to_path_buf()),
        mode: ClientMode::INACTIVE,
        ..gw.config("good")
    };
    let client = Client::connect(config.clone()).await.unwrap();
    let frames = gw.frames_of(0);
    let Up::Open(open) = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(open.flags, Open::INBOX | Open::SYNC);
    let Up::Have(have) = gw.expect(0, |f| matches!(f, Up::Have(_))).await else {
        unreachable!()
    };
    assert_eq!(have.mode, ClientMode::INACTIVE);
    assert!(have.held.is_empty(), "a new directory holds nothing");
    gw.expect(0, |f| *f == Up::Applied { batch: 1 }).await;

    // Subscribed documents enter the cache; a batch changes one of them.
    let carol = client.subscribe("Carol@Example.com".into()).await.unwrap();
    assert_eq!(carol, doc("carol@example.com"));
    let cached = client.cached("carol@example.com".into()).unwrap();
    assert_eq!(
        (cached.slot, cached.version),
        (slot_of("carol@example.com"), VERSION)
    );
    client
        .subscribe("changing@example.com".into())
        .await
        .unwrap();
    let Some(Event::Presence(changed)) = next(&client).await else {
        panic!("expected the batch's change");
    };
    assert_eq!(changed.presence, changed_doc("changing@example.com"));
    assert_eq!(changed.updated, 1_700_000_000_000);
    // Batch 2's `Applied` is owed lazily: it waits for a second batch, another frame or
    // the keep-alive.
    let names: Vec<(String, u64)> = client
        .roster()
        .into_iter()
        .map(|e| (e.doc.presentity, e.version))
        .collect();
    assert_eq!(
        names,
        vec![
            ("carol@example.com".into(), VERSION),
            ("changing@example.com".into(), CHANGED)
        ]
    );
    assert_eq!(
        client.presence("changing@example.com".into()),
        Some(changed)
    );
    assert_eq!(client.presence("nobody@example.com".into()), None);
    assert_eq!(client.presence("not an address".into()), None);
    assert_eq!(client.session_info().presentities, 2);

    // The mode goes at once; conditional fetches.
    client.set_mode(ClientMode::SLEEPY);
    gw.expect(0, |f| {
        *f == Up::Mode {
            mode: ClientMode::SLEEPY,
        }
    })
    .await;
    assert_eq!(
        client.fetch_if("bob@example.com".into(), VERSION).await,
        Ok(FetchIf::Unchanged)
    );
    assert_eq!(
        client.fetch_if("bob@example.com".into(), 0).await,
        Ok(FetchIf::Changed {
            version: VERSION,
            doc: doc("bob@example.com")
        })
    );
    client.close().await;
    drop(client);

    // The next process states the kept cache (and its mode) in its first flight.
    let again = Client::connect(config).await.unwrap();
    let Up::Have(have) = gw.expect(1, |f| matches!(f, Up::Have(_))).await else {
        unreachable!()
    };
    let mut held = vec![
        Held {
            slot: slot_of("carol@example.com"),
            version: VERSION,
        },
        Held {
            slot: slot_of("changing@example.com"),
            version: CHANGED,
        },
    ];
    held.sort_by_key(|h| h.slot);
    assert_eq!(have.held, held);
    assert_eq!(have.mode, ClientMode::INACTIVE, "the configured mode");
    assert_eq!(again.roster().len(), 2);
    // Unsubscribing drops the presentity from the cache.
    again.unsubscribe("carol@example.com".into()).await.unwrap();
    assert_eq!(again.presence("carol@example.com".into()), None);
    again.close().await;
}

#[tokio::test]
async fn access_rules_pending_subscriptions_and_delegation() {
    use tern_client::{Decision, PresenceRule, Rules, SubState, SubscribeOutcome, Who};
    let mut gw = Gateway::start(Script::default());
    let client = Client::connect(gw.config("good")).await.unwrap();
    assert_eq!(client.rules().await.unwrap(), Rules::default());
    let rules = Rules {
        presence: vec![PresenceRule {
            who: Who::User("Bob@Example.COM".into()),
            decision: Decision::Ask,
            view: None,
            when: None,
        }],
        ..Rules::default()
    };
    client.set_rules(rules).await.unwrap();
    let Up::SetRules { rules, .. } = gw.expect(0, |f| matches!(f, Up::SetRules { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(rules.presence[0].who, Who::User("bob@example.com".into()));
    let bad = Rules {
        delegates: vec![tern_client::Delegate {
            who: "nobody".into(),
            rights: 1,
        }],
        ..Rules::default()
    };
    assert!(matches!(
        client.set_rules(bad).await,
        Err(ClientError::InvalidArgument(_))
    ));

    // A subscription that waits, someone who asks, the grant and the presence.
    let outcome = client.subscribe_request("Asks@example.com".into()).await;
    assert_eq!(outcome, Ok(SubscribeOutcome::Pending));
    assert_eq!(
        next(&client).await,
        Some(Event::Asked {
            watcher: "carol@example.com".into()
        })
    );
    assert_eq!(
        next(&client).await,
        Some(Event::SubscriptionChanged {
            target: "asks@example.com".into(),
            state: SubState::Active
        })
    );
    let Some(Event::Presence(doc)) = next(&client).await else {
        panic!("presence follows the grant");
    };
    assert_eq!(doc.presentity, "asks@example.com");
    assert!(client.cached("asks@example.com".into()).is_some());
    // `subscribe` says the same as an error.
    let pending = client.subscribe("asks@example.com".into()).await;
    assert_eq!(
        pending,
        Err(ClientError::SubscriptionPending {
            presentity: "asks@example.com".into()
        })
    );
    while let Ok(Some(_)) = timeout(Duration::from_millis(200), client.next_event()).await {}

    let denied = client.subscribe("denies@example.com".into()).await;
    assert!(
        matches!(&denied, Err(ClientError::Refused { text }) if text == "denied"),
        "{denied:?}"
    );

    // A decision; the scripted gateway then cancels the subscription made above.
    client
        .decide("Carol@Example.com".into(), Decision::Allow)
        .await
        .unwrap();
    let Up::Decide {
        watcher, decision, ..
    } = gw.expect(0, |f| matches!(f, Up::Decide { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        (watcher.as_str(), decision),
        ("carol@example.com", Decision::Allow)
    );
    assert_eq!(
        next(&client).await,
        Some(Event::SubscriptionEnded {
            presentity: "asks@example.com".into()
        })
    );
    assert_eq!(
        next(&client).await,
        Some(Event::SubscriptionChanged {
            target: "asks@example.com".into(),
            state: SubState::Cancelled
        })
    );
    assert!(client.cached("asks@example.com".into()).is_none());

    client.cancel("carol@example.com".into()).await.unwrap();
    let list = client.subscriptions(true).await.unwrap();
    assert_eq!(list[0].who, "carol@example.com");
    assert_eq!(list[0].state, SubState::Pending);

    let refused = client
        .publish_for("boss@example.com".into(), Presence::default())
        .await;
    assert!(
        matches!(refused, Err(ClientError::Refused { .. })),
        "{refused:?}"
    );
    let page = client
        .read_inbox("boss@example.com".into(), 0)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.more);
    assert_eq!(page.next_after(0), 1);
    let page = client
        .read_inbox("boss@example.com".into(), 1)
        .await
        .unwrap();
    assert!(!page.more);
    assert!(matches!(
        client.read_inbox("boss".into(), 0).await,
        Err(ClientError::InvalidArgument(_))
    ));
    client.close().await;
}

#[tokio::test]
async fn an_anonymous_client_opens_without_token_or_inbox() {
    let mut gw = Gateway::start(Script {
        inbox: vec![vec![1]],
        ..Script::default()
    });
    let config = ClientConfig::anonymous(
        gw.addr.to_string(),
        "Example.com".into(),
        gw.cert_pem.clone(),
    );
    let client = Client::connect(config).await.unwrap();
    let Up::Open(open) = gw.expect(0, |f| matches!(f, Up::Open(_))).await else {
        unreachable!()
    };
    assert_eq!(open.user, "anonymous@example.com");
    assert!(open.token.is_empty());
    assert!(!open.takes_inbox());
    assert!(open.syncs());
    let doc = client.fetch("bob@example.com".into()).await.unwrap();
    assert_eq!(doc.presentity, "bob@example.com");
    // The item the gateway pushes is not taken (nor acknowledged).
    assert!(
        timeout(Duration::from_millis(300), client.next_event())
            .await
            .is_err()
    );
    client.close().await;
    assert!(!gw.frames_of(0).iter().any(|f| matches!(f, Up::Ack { .. })));
}
