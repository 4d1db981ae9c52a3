//! IP privacy (RFC 2779 5.1.17, 5.1.18, 5.2.5, 5.2.6, 5.4.5): no frame carries another
//! party's network address. Bob connects from 127.0.0.2, Alice from 127.0.0.1; Alice's
//! sessions (a plain one and a synchronised device session) are driven through every
//! kind of frame the gateway sends, and every byte they read is searched for Bob's
//! address, as text and as bytes. The list of frame kinds is exhaustive: a new `Down`
//! variant does not compile until this test makes the gateway send it.

use std::net::SocketAddr;

use tern_gateway::config::RateTable;
use tern_tests::raw::RawSession;
use tern_tests::{Harness, open_presence};
use tern_wire::{
    ClientMode, Decision, Delegate, Down, Have, Hello, Message, Open, PresenceRule, Rules, Up,
    VERSION, Who,
};

const KINDS: usize = 22;

/// The position of a frame kind; exhaustive on purpose.
fn kind(frame: &Down) -> usize {
    match frame {
        Down::Welcome(_) => 0,
        Down::Ok { .. } => 1,
        Down::Fail { .. } => 2,
        Down::Presence { .. } => 3,
        Down::Receipt { .. } => 4,
        Down::Notify { .. } => 5,
        Down::Deliver { .. } => 6,
        Down::Close { .. } => 7,
        Down::Opened(_) => 8,
        Down::Batch(_) => 9,
        Down::Synced { .. } => 10,
        Down::Subscribed { .. } => 11,
        Down::Versioned { .. } => 12,
        Down::Limited { .. } => 13,
        Down::Watchers { .. } => 14,
        Down::Watched { .. } => 15,
        Down::Pending { .. } => 16,
        Down::Asked { .. } => 17,
        Down::Rules { .. } => 18,
        Down::Subscriptions { .. } => 19,
        Down::Subscription { .. } => 20,
        Down::Items { .. } => 21,
    }
}

fn message(id: u8, to: &str) -> Message {
    Message {
        id: vec![id; 16],
        to: to.into(),
        reply_to: None,
        content_type: None,
        body: b"where are you?".to_vec(),
    }
}

/// Reads Bob's frames until `done` accepts one.
async fn bob_until(s: &mut RawSession, done: impl Fn(&Down) -> bool) {
    while !done(&s.recv().await.expect("a frame")) {}
}

/// Reads frames until `done` accepts one, recording the kinds seen.
async fn until(s: &mut RawSession, seen: &mut [bool; KINDS], done: impl Fn(&Down) -> bool) {
    loop {
        let frame = s.recv().await.expect("a frame");
        seen[kind(&frame)] = true;
        if done(&frame) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_frame_carries_the_other_partys_address() {
    // Fetches are rate limited low, so that `Limited` is among the frames.
    let gw = Harness::start_with(|c| {
        let rates = RateTable {
            fetches_per_minute: 60,
            burst: 3,
            ..RateTable::default()
        };
        c.domains = vec![tern_tests::domain("example.com", rates)];
    })
    .await;
    let (alice, bob) = ("alice@example.com", "bob@example.com");
    let alice_token = gw.add_user(alice);
    let bob_token = gw.add_user(bob);
    let cert = gw.cert_pem();

    // Bob, from his own address: present, and later writing to Alice.
    let bob_at = SocketAddr::from(([127, 0, 0, 2], 0));
    let mut b = RawSession::open_from(gw.addr(), &cert, bob_at).await;
    let hello = Hello {
        version: VERSION,
        user: bob.into(),
        token: bob_token,
    };
    b.send(&Up::Hello(hello)).await;
    assert!(matches!(b.recv().await, Some(Down::Welcome(_))));
    let bob_ip = b.endpoint.local_addr().map(|a| a.ip().to_string());
    let presence = open_presence("at the station");
    b.send(&Up::Publish { req: 1, presence }).await;
    assert!(matches!(b.recv().await, Some(Down::Ok { .. })));

    let mut seen = [false; KINDS];
    // A plain session: Welcome, Presence, Notify, Receipt, Fail, Ok, Deliver, Close.
    let mut plain = RawSession::login(gw.addr(), &cert, alice, &alice_token).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Welcome(_))).await;
    let target = bob.to_string();
    plain.send(&Up::Subscribe { req: 1, target }).await;
    until(&mut plain, &mut seen, |f| {
        matches!(f, Down::Presence { .. })
    })
    .await;
    let version = 0;
    let target = bob.to_string();
    plain
        .send(&Up::FetchIf {
            req: 2,
            target,
            version,
        })
        .await;
    until(&mut plain, &mut seen, |f| {
        matches!(f, Down::Versioned { .. })
    })
    .await;
    plain
        .send(&Up::Send {
            req: 3,
            msg: message(1, bob),
        })
        .await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Receipt { .. })).await;
    let target = "nobody@example.com".to_string();
    plain.send(&Up::Fetch { req: 4, target }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Fail { .. })).await;
    let presence = open_presence("on the train");
    b.send(&Up::Publish { req: 2, presence }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Notify { .. })).await;
    b.send(&Up::Send {
        req: 3,
        msg: message(2, alice),
    })
    .await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Deliver { .. })).await;
    for req in 10..14 {
        let target = bob.to_string();
        plain.send(&Up::Fetch { req, target }).await;
    }
    until(&mut plain, &mut seen, |f| matches!(f, Down::Limited { .. })).await;
    let target = bob.to_string();
    plain.send(&Up::Unsubscribe { req: 5, target }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Ok { .. })).await;
    let target = alice.to_string();
    b.send(&Up::Subscribe { req: 5, target }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Watched { .. })).await;
    plain.send(&Up::Watchers { req: 6 }).await;
    until(&mut plain, &mut seen, |f| {
        matches!(f, Down::Watchers { .. })
    })
    .await;
    // The access frames: Rules, Subscriptions, Asked, Pending, Subscription, Items.
    plain.send(&Up::GetRules { req: 7 }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Rules { .. })).await;
    let incoming = true;
    plain.send(&Up::Subscriptions { req: 8, incoming }).await;
    until(&mut plain, &mut seen, |f| {
        matches!(f, Down::Subscriptions { .. })
    })
    .await;
    let ask_about = |who: &str| Rules {
        presence: vec![PresenceRule {
            who: Who::User(who.into()),
            decision: Decision::Ask,
            view: None,
            when: None,
        }],
        ..Rules::default()
    };
    let rules = ask_about(bob);
    plain.send(&Up::SetRules { req: 9, rules }).await;
    until(&mut plain, &mut seen, |f| *f == Down::Ok { req: 9 }).await;
    let target = alice.to_string();
    b.send(&Up::Unsubscribe { req: 6, target }).await;
    bob_until(&mut b, |f| *f == Down::Ok { req: 6 }).await;
    let target = alice.to_string();
    b.send(&Up::Subscribe { req: 7, target }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Asked { .. })).await;
    // Bob asks about Alice, and lets her read his inbox.
    let mut rules = ask_about(alice);
    rules.delegates = vec![Delegate {
        who: alice.into(),
        rights: Delegate::READ,
    }];
    b.send(&Up::SetRules { req: 8, rules }).await;
    bob_until(&mut b, |f| *f == Down::Ok { req: 8 }).await;
    let target = bob.to_string();
    plain.send(&Up::Subscribe { req: 10, target }).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Pending { .. })).await;
    let (watcher, decision) = (alice.to_string(), Decision::Allow);
    b.send(&Up::Decide {
        req: 9,
        watcher,
        decision,
    })
    .await;
    until(&mut plain, &mut seen, |f| {
        matches!(f, Down::Subscription { .. })
    })
    .await;
    let inbox = bob.to_string();
    plain
        .send(&Up::Read {
            req: 11,
            inbox,
            after: 0,
        })
        .await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Items { .. })).await;
    plain.send(&Up::Bye).await;
    until(&mut plain, &mut seen, |f| matches!(f, Down::Close { .. })).await;

    // A synchronised device session: Opened, Synced, Subscribed, Batch.
    let flags = Open::INBOX | Open::SYNC;
    let mut device = RawSession::open_device(gw.addr(), &cert, alice, &alice_token, 1, flags).await;
    let have = Have {
        req: 1,
        mode: ClientMode::ACTIVE,
        held: Vec::new(),
    };
    device.send(&Up::Have(have)).await;
    until(&mut device, &mut seen, |f| matches!(f, Down::Synced { .. })).await;
    let target = bob.to_string();
    device.send(&Up::Subscribe { req: 2, target }).await;
    until(&mut device, &mut seen, |f| {
        matches!(f, Down::Subscribed { .. })
    })
    .await;
    let presence = open_presence("arrived");
    b.send(&Up::Publish { req: 4, presence }).await;
    until(&mut device, &mut seen, |f| matches!(f, Down::Batch(_))).await;

    let missing: Vec<usize> = (0..KINDS).filter(|k| !seen[*k]).collect();
    assert!(missing.is_empty(), "frame kinds never sent: {missing:?}");

    // Bob's address appears in none of it, in any form.
    let ip = bob_ip.expect("bob's socket address");
    assert_eq!(ip, "127.0.0.2");
    for transcript in [&plain.transcript, &device.transcript] {
        // The search works: bob's identity is there, as it must be.
        let name = bob.as_bytes();
        assert!(transcript.windows(name.len()).any(|w| w == name));
        for needle in [ip.as_bytes(), &[127, 0, 0, 2][..]] {
            assert!(
                !transcript.windows(needle.len()).any(|w| w == needle),
                "bob's address {needle:?} found in what alice read"
            );
        }
    }
}
