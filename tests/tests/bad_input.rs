//! Bad input and faults: each gets a clear error or a close with a reason code, the
//! gateway keeps serving everyone else, and nothing stored is lost.

use std::time::Duration;

use tern_client::{ErrorCode, Event, ReceiptStatus};
use tern_tests::raw::RawSession;
use tern_tests::{Harness, expect_event};
use tern_wire::codec;
use tern_wire::{Down, Hello, Up, VERSION};

/// The gateway still serves a well-behaved client, and what was stored before is there.
async fn still_serving(gw: &Harness, bob_token: &str) {
    let bob = gw.connect("bob@example.com", bob_token).await;
    let message = expect_event(&bob, |e| match e {
        Event::Message { message, .. } => Some(message.body),
        _ => None,
    })
    .await;
    assert_eq!(
        message, b"kept safe",
        "the stored message survived the abuse"
    );
    bob.fetch("bob@example.com".into())
        .await
        .expect("the gateway still answers");
    bob.close().await;
}

/// A gateway with alice (connected) and bob (a message waiting for him).
async fn setup() -> (Harness, String) {
    let gw = Harness::start().await;
    let alice = gw.user("alice@example.com").await;
    let bob_token = gw.add_user("bob@example.com");
    let sent = alice
        .send("bob@example.com".into(), b"kept safe".to_vec(), None)
        .await
        .expect("message sent");
    assert_eq!(sent.status, ReceiptStatus::Stored);
    alice.close().await;
    (gw, bob_token)
}

fn close_code(frames: &[Down]) -> Option<ErrorCode> {
    match frames.last() {
        Some(Down::Close { code, .. }) => Some(*code),
        _ => None,
    }
}

async fn logged_in(gw: &Harness, user: &str, token: &str) -> RawSession {
    let mut raw = RawSession::login(gw.addr(), &gw.cert_pem(), user, token).await;
    assert!(matches!(raw.recv().await, Some(Down::Welcome(_))));
    raw
}

#[tokio::test]
async fn garbage_bytes_close_with_malformed() {
    let (gw, bob_token) = setup().await;
    let mut raw = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    raw.write(&[0x03, 0xff, 0xff, 0xff]).await;
    assert_eq!(
        close_code(&raw.recv_until_closed().await),
        Some(ErrorCode::MALFORMED)
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn unknown_frame_type_closes_with_malformed() {
    let (gw, bob_token) = setup().await;
    let token = gw.add_user("mallory@example.com");
    let mut raw = logged_in(&gw, "mallory@example.com", &token).await;
    raw.write(&[0x02, 200, 0x01]).await; // tag 200 is no frame
    assert_eq!(
        close_code(&raw.recv_until_closed().await),
        Some(ErrorCode::MALFORMED)
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn truncated_frame_then_end_of_stream_closes_with_malformed() {
    let (gw, bob_token) = setup().await;
    let mut raw = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    let hello = codec::encode(&Up::Hello(Hello {
        version: VERSION,
        user: "bob@example.com".into(),
        token: bob_token.clone(),
    }));
    raw.write(&hello[..hello.len() - 3]).await;
    raw.send.finish().unwrap();
    assert_eq!(
        close_code(&raw.recv_until_closed().await),
        Some(ErrorCode::MALFORMED)
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn frame_over_the_size_limit_closes_with_too_large_before_the_body_is_sent() {
    let (gw, bob_token) = setup().await;
    let token = gw.add_user("mallory@example.com");
    let mut raw = logged_in(&gw, "mallory@example.com", &token).await;
    // Announce a 10 MiB frame and send only the prefix: the gateway must not wait for it.
    raw.write(&[0x80, 0x80, 0x80, 0x05]).await;
    assert_eq!(
        close_code(&raw.recv_until_closed().await),
        Some(ErrorCode::TOO_LARGE)
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn wrong_missing_or_foreign_credentials_are_unauthorized() {
    let (gw, bob_token) = setup().await;
    for (user, token) in [
        ("bob@example.com", "not-the-token"),
        ("bob@example.com", ""),
        ("nobody@example.com", bob_token.as_str()),
        ("bob@elsewhere.net", bob_token.as_str()),
    ] {
        let mut raw = RawSession::login(gw.addr(), &gw.cert_pem(), user, token).await;
        let frames = raw.recv_until_closed().await;
        assert_eq!(
            close_code(&frames),
            Some(ErrorCode::UNAUTHORIZED),
            "{user}/{token}"
        );
        assert_eq!(frames.len(), 1, "nothing but the close: {frames:?}");
    }
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn a_request_before_hello_is_a_protocol_error() {
    let (gw, bob_token) = setup().await;
    let mut raw = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    raw.send(&Up::Fetch {
        req: 1,
        target: "bob@example.com".into(),
    })
    .await;
    assert_eq!(
        close_code(&raw.recv_until_closed().await),
        Some(ErrorCode::PROTOCOL)
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn unknown_recipient_and_unknown_presentity_get_typed_answers() {
    let (gw, bob_token) = setup().await;
    let token = gw.add_user("mallory@example.com");
    let mut raw = logged_in(&gw, "mallory@example.com", &token).await;
    raw.send(&Up::Subscribe {
        req: 1,
        target: "ghost@example.com".into(),
    })
    .await;
    assert!(matches!(
        raw.recv().await,
        Some(Down::Fail {
            req: 1,
            code: ErrorCode::UNKNOWN_USER,
            ..
        })
    ));
    let msg = tern_wire::Message {
        id: vec![1; 16],
        to: "ghost@example.com".into(),
        reply_to: None,
        content_type: None,
        body: b"boo".to_vec(),
    };
    raw.send(&Up::Send { req: 2, msg }).await;
    assert_eq!(
        raw.recv().await,
        Some(Down::Receipt {
            req: 2,
            status: ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER)
        })
    );
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn a_client_opening_many_streams_gets_one_and_the_gateway_is_unharmed() {
    let (gw, bob_token) = setup().await;
    let token = gw.add_user("mallory@example.com");
    let mut raw = logged_in(&gw, "mallory@example.com", &token).await;
    // The gateway grants exactly one bidirectional stream: further opens wait for
    // credit that never comes, at no cost to the gateway.
    let more = tokio::time::timeout(Duration::from_millis(500), async {
        for _ in 0..100 {
            raw.conn.open_bi().await.unwrap();
        }
    })
    .await;
    assert!(more.is_err(), "no second stream may be opened");
    let uni = tokio::time::timeout(Duration::from_millis(200), raw.conn.open_uni()).await;
    assert!(uni.is_err(), "no unidirectional streams either");
    // The session stream still works.
    raw.send(&Up::Fetch {
        req: 5,
        target: "mallory@example.com".into(),
    })
    .await;
    assert!(matches!(
        raw.recv().await,
        Some(Down::Presence { req: 5, .. })
    ));
    still_serving(&gw, &bob_token).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_too_slow_and_loses_nothing() {
    let gw = Harness::start_with(|c| {
        c.limits.inbox_window = 8;
        c.limits.max_subscriptions = 8;
        c.limits.outbound_queue = 80;
        c.quic.send_window = 16 * 1024;
    })
    .await;
    let alice = gw.user("alice@example.com").await;
    let slow_token = gw.add_user("slow@example.com");
    let mut slow = logged_in(&gw, "slow@example.com", &slow_token).await;
    slow.send(&Up::Subscribe {
        req: 1,
        target: "alice@example.com".into(),
    })
    .await;
    assert!(matches!(slow.recv().await, Some(Down::Presence { .. })));
    // From now on `slow` reads nothing. Alice changes presence again and again, with
    // notes long enough to fill every window between the gateway and `slow`.
    let note = "n".repeat(900);
    for i in 0..400 {
        let presence = tern_client::Presence {
            tuples: vec![tern_client::Tuple {
                id: "phone".into(),
                basic: tern_client::Basic::Open,
                availability: None,
                contact: None,
                note: Some(format!("{i} {note}")),
                at: None,
                ext: Vec::new(),
            }],
            card: Vec::new(),
        };
        alice.publish(presence).await.unwrap();
    }
    // Presence alone does not close it: a presentity's queued notification is refreshed
    // in place, so 400 changes cost the gateway one queued frame.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        slow.conn.close_reason().is_none(),
        "closed for presence alone"
    );
    // Answers are not coalesced: requests whose answers it does not read overflow its
    // queue (80 frames).
    for req in 2..=300 {
        let fetch = codec::encode(&Up::Fetch {
            req,
            target: "alice@example.com".into(),
        });
        if slow.send.write_all(&fetch).await.is_err() {
            break; // already closed
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.conn.closed())
        .await
        .expect("the stalled connection is closed");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(u32::from(ErrorCode::TOO_SLOW.0))),
        "closed too_slow: {closed:?}"
    );
    // Alice was never held up, and a message to `slow` is kept for it.
    let sent = alice
        .send("slow@example.com".into(), b"later".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(sent.status, ReceiptStatus::Stored);
    let again = gw.connect("slow@example.com", &slow_token).await;
    let body = expect_event(&again, |e| match e {
        Event::Message { message, .. } => Some(message.body),
        _ => None,
    })
    .await;
    assert_eq!(body, b"later");
}
