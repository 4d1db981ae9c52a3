//! Loopback tests of the async client against a small scripted gateway (quinn + tern-wire
//! on 127.0.0.1). They prove the runtime's adapters: TLS trust and ALPN, framing on the
//! session stream, request matching, inbox acknowledgement, reconnection and goodbye.
//! The real gateway's behaviour is tested elsewhere; this one only follows the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tern_client::{
    Basic, Client, ClientConfig, ClientError, ConnectionState, ErrorCode, Event, Message, Presence,
    PresenceDoc, ReceiptStatus, Tuple,
};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::frame::Welcome;
use tern_wire::limits::FRAME_MAX;
use tern_wire::{Down, InboxItem, Incoming, Up};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// How the scripted gateway behaves.
#[derive(Clone, Default)]
struct Script {
    /// Inbox sequence numbers pushed after `Welcome`, per session (the last entry repeats).
    inbox: Vec<Vec<u64>>,
}

/// A frame the gateway received, with the index of the session it came on.
type Seen = (usize, Up);

struct Gateway {
    addr: SocketAddr,
    cert_pem: Vec<u8>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Frames received but not yet expected.
    backlog: Vec<Seen>,
    _endpoint: quinn::Endpoint,
}

impl Gateway {
    fn start(script: Script) -> Self {
        let cert =
            rcgen::generate_simple_self_signed(vec!["example.com".into()]).expect("certificate");
        let cert_der: CertificateDer<'static> = cert.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key.into())
            .expect("server certificate");
        tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
        let crypto = Arc::new(QuicServerConfig::try_from(tls).expect("QUIC suite"));
        let config = quinn::ServerConfig::with_crypto(crypto);
        let loopback = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let endpoint = quinn::Endpoint::server(config, loopback).expect("UDP socket");
        let addr = endpoint.local_addr().expect("local address");
        let (tx, seen) = mpsc::unbounded_channel();
        let accept = endpoint.clone();
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(incoming) = accept.accept().await {
                let Ok(conn) = incoming.await else { continue };
                let inbox = script
                    .inbox
                    .get(index)
                    .or(script.inbox.last())
                    .cloned()
                    .unwrap_or_default();
                tokio::spawn(session(conn, index, inbox, tx.clone()));
                index += 1;
            }
        });
        Self {
            addr,
            cert_pem: cert.cert.pem().into_bytes(),
            seen,
            backlog: Vec::new(),
            _endpoint: endpoint,
        }
    }

    fn config(&self, token: &str) -> ClientConfig {
        ClientConfig::new(
            self.addr.to_string(),
            "Alice@Example.com".into(),
            token.into(),
            self.cert_pem.clone(),
        )
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

/// One session of the scripted gateway.
async fn session(
    conn: quinn::Connection,
    index: usize,
    inbox: Vec<u64>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut frames = FrameBuf::new(FRAME_MAX);
    let mut buf = vec![0; 4096];
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
            Up::Hello(hello) if hello.token == "good" => {
                out.push(Down::Welcome(Welcome {
                    version: tern_wire::VERSION,
                    user: "alice@example.com".into(),
                    frame_max: 64 * 1024,
                    body_max: 16 * 1024,
                    time: 1,
                }));
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
            Up::Fetch { req, target } | Up::Subscribe { req, target } => {
                out.push(Down::Presence {
                    req,
                    doc: doc(&target),
                });
            }
            Up::Send { req, .. } => out.push(Down::Receipt {
                req,
                status: ReceiptStatus::Delivered,
            }),
            Up::Ack { .. } => {}
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
    });
    let client = Client::connect(gw.config("good")).await.unwrap();
    assert_eq!(client.user(), "alice@example.com");
    let hello = gw.expect(0, |f| matches!(f, Up::Hello(_))).await;
    let Up::Hello(hello) = hello else {
        unreachable!()
    };
    assert_eq!(
        hello.user, "alice@example.com",
        "the client normalises the user"
    );

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
