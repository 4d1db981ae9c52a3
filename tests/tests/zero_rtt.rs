//! 0-RTT over real QUIC: a returning client's opening frame and message ride in its
//! first flight, and a recorded first flight replayed by an attacker delivers nothing
//! twice and changes no state.
//!
//! Here the replay is stopped by TLS: the gateway's tickets are single-use, so the
//! replayed ClientHello's early data is refused. The second defence, the hub acting on
//! nothing but de-duplicated message storage before a handshake is confirmed (for
//! replays TLS cannot recognise: another node, a restart), is shown by
//! `tern-gateway-core` `hub::tests::a_replayed_first_flight_delivers_nothing_twice_and_changes_nothing`.

use std::time::Duration;

use tern_client::{Event, ReceiptStatus};
use tern_tests::relay::Relay;
use tern_tests::{Harness, PROMPTLY, events_within, expect_event};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::{Down, Message, Open, Up, VERSION};

fn opening(token: &str) -> Up {
    Up::Open(Open {
        version: VERSION,
        user: "alice@example.com".into(),
        token: token.into(),
        device: vec![0xa1; 16],
        inbox_seen: 0,
        flags: Open::INBOX,
    })
}

fn message(body: &str) -> Up {
    Up::Send {
        req: 1,
        msg: Message {
            id: vec![0x5e; 16],
            to: "bob@example.com".into(),
            reply_to: None,
            content_type: None,
            body: body.as_bytes().to_vec(),
        },
    }
}

async fn read_until_receipt(recv: &mut quinn::RecvStream) -> Vec<Down> {
    let mut buf = FrameBuf::new(tern_wire::limits::FRAME_MAX);
    let mut frames = Vec::new();
    let read = async {
        loop {
            while let Ok(Some(frame)) = buf.next_frame::<Down>() {
                let done = matches!(frame, Down::Receipt { .. });
                frames.push(frame);
                if done {
                    return;
                }
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => buf.extend(&chunk.bytes),
                _ => return,
            }
        }
    };
    tokio::time::timeout(PROMPTLY, read)
        .await
        .expect("receipt in time");
    frames
}

#[tokio::test]
async fn a_returning_client_sends_its_message_in_0rtt_and_a_replay_changes_nothing() {
    let gw = Harness::start().await;
    let alice_token = gw.add_user("alice@example.com");
    let bob_token = gw.add_user("bob@example.com");
    let endpoint = tern_tests::raw::endpoint_with(&gw.cert_pem(), true);

    // First contact: a full handshake, which leaves alice's TLS stack a session ticket.
    let first = endpoint
        .connect(gw.addr(), "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = first.open_bi().await.expect("stream");
    send.write_all(&codec::encode(&opening(&alice_token)))
        .await
        .expect("write");
    let mut buf = FrameBuf::new(tern_wire::limits::FRAME_MAX);
    let opened = loop {
        if let Ok(Some(frame)) = buf.next_frame::<Down>() {
            break frame;
        }
        let chunk = recv
            .read_chunk(4096, true)
            .await
            .expect("read")
            .expect("open");
        buf.extend(&chunk.bytes);
    };
    assert!(matches!(opened, Down::Opened(_)), "{opened:?}");
    send.write_all(&codec::encode(&Up::Bye)).await.expect("bye");
    let _ = tokio::time::timeout(PROMPTLY, first.closed()).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the ticket has arrived

    // The return, through a relay that records the first flight like an eavesdropper.
    let relay = Relay::start(gw.addr()).await.expect("relay");
    let connecting = endpoint
        .connect(relay.addr(), "localhost")
        .expect("connect");
    let (conn, accepted) = connecting
        .into_0rtt()
        .unwrap_or_else(|_| panic!("a session ticket allows 0-RTT"));
    let (mut send, mut recv) = conn.open_bi().await.expect("early stream");
    let mut flight = codec::encode(&opening(&alice_token));
    flight.extend(codec::encode(&message(
        "sent before the handshake finished",
    )));
    send.write_all(&flight).await.expect("early write");
    let frames = read_until_receipt(&mut recv).await;
    assert!(accepted.await, "the gateway accepted the early data");
    // A new session (the first one said goodbye), opened and answered in one round trip.
    assert!(
        matches!(frames.first(), Some(Down::Opened(_))),
        "{frames:?}"
    );
    assert_eq!(
        frames.last(),
        Some(&Down::Receipt {
            req: 1,
            status: ReceiptStatus::Stored
        })
    );
    let recorded = relay.first_flight();
    assert!(!recorded.is_empty());
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;

    // The attacker replays the recorded flight to the gateway, from its own socket.
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    for datagram in &recorded {
        attacker.send_to(datagram, gw.addr()).await.expect("replay");
    }
    let mut answer = vec![0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_millis(500), attacker.recv_from(&mut answer)).await;

    // Bob gets the message exactly once; nothing else happened.
    let bob = gw.connect("bob@example.com", &bob_token).await;
    let body = expect_event(&bob, |e| match e {
        Event::Message { message, .. } => Some(message.body),
        _ => None,
    })
    .await;
    assert_eq!(body, b"sent before the handshake finished");
    let more = events_within(&bob, Duration::from_millis(800)).await;
    assert!(
        more.iter().all(|e| !matches!(e, Event::Message { .. })),
        "nothing twice: {more:?}"
    );
    let presence = bob.fetch("alice@example.com".into()).await.expect("fetch");
    assert!(!presence.presence.is_open(), "the replay published nothing");
}
