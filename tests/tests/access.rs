//! Access, privacy and abuse (RFC 2779 2.3 and 5), end to end over real QUIC: each test
//! drives one requirement through a gateway on loopback with raw frames, so that what a
//! watcher receives can be compared byte for byte. `docs/requirements.md` names the test
//! for each requirement id.

use std::time::Duration;

use tern_gateway::config::RateTable;
use tern_tests::raw::RawSession;
use tern_tests::{Harness, open_presence};
use tern_wire::{
    AdminOp, Change, ClientMode, Decision, Delegate, Delivery, Down, ErrorCode, Have, Hello,
    InboxItem, InboxRule, Message, Open, Operate, PresenceRule, ReceiptStatus, Rules, SubInfo,
    SubState, Up, VERSION, View, When, Who,
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.org";
const QUIET: Duration = Duration::from_millis(300);

/// A gateway with Alice, Bob and Carol; returns it with their tokens.
async fn world() -> (Harness, [String; 3]) {
    world_with(|_| {}).await
}

async fn world_with(
    tune: impl FnOnce(&mut tern_gateway::config::GatewayConfig),
) -> (Harness, [String; 3]) {
    let gw = Harness::start_with(tune).await;
    let tokens = [gw.add_user(ALICE), gw.add_user(BOB), gw.add_user(CAROL)];
    (gw, tokens)
}

/// A plain session, its `Welcome` read.
async fn login(gw: &Harness, user: &str, token: &str) -> RawSession {
    let mut s = RawSession::login(gw.addr(), &gw.cert_pem(), user, token).await;
    assert!(matches!(s.recv().await, Some(Down::Welcome(_))));
    s
}

/// A synchronised device session, its `Opened` and the answer to an empty `Have` read.
async fn device(gw: &Harness, user: &str, token: &str, n: u8) -> RawSession {
    let flags = Open::INBOX | Open::SYNC;
    let mut s = RawSession::open_device(gw.addr(), &gw.cert_pem(), user, token, n, flags).await;
    assert!(matches!(s.recv().await, Some(Down::Opened(_))));
    let have = Have {
        req: 999,
        mode: ClientMode::ACTIVE,
        held: Vec::new(),
    };
    s.send(&Up::Have(have)).await;
    assert!(matches!(s.recv().await, Some(Down::Synced { .. })));
    s
}

/// Sends a request and returns its answer; pushed frames met on the way are returned
/// too, in order.
async fn ask(s: &mut RawSession, frame: Up) -> (Down, Vec<Down>) {
    let req = frame.req().expect("a request");
    s.send(&frame).await;
    let mut pushed = Vec::new();
    loop {
        let down = s.recv().await.expect("an answer");
        if down.req() == Some(req) {
            return (down, pushed);
        }
        pushed.push(down);
    }
}

/// The answer to a request, pushes ignored.
async fn answer(s: &mut RawSession, frame: Up) -> Down {
    ask(s, frame).await.0
}

fn rule(who: Who, decision: Decision) -> PresenceRule {
    PresenceRule {
        who,
        decision,
        view: None,
        when: None,
    }
}

fn presence_rules(rules: Vec<PresenceRule>) -> Rules {
    Rules {
        presence: rules,
        ..Rules::default()
    }
}

async fn set_rules(s: &mut RawSession, rules: Rules) {
    let ok = answer(s, Up::SetRules { req: 900, rules }).await;
    assert_eq!(ok, Down::Ok { req: 900 });
}

async fn publish(s: &mut RawSession, note: &str) {
    let presence = open_presence(note);
    let ok = answer(s, Up::Publish { req: 901, presence }).await;
    assert_eq!(ok, Down::Ok { req: 901 });
}

fn subscribe(target: &str) -> Up {
    Up::Subscribe {
        req: 10,
        target: target.into(),
    }
}

fn fetch(target: &str) -> Up {
    Up::Fetch {
        req: 11,
        target: target.into(),
    }
}

fn refused(frame: &Down) -> bool {
    matches!(frame, Down::Fail { code, .. } if *code == ErrorCode::REFUSED)
}

fn message(id: u8, to: &str) -> Message {
    Message {
        id: vec![id; 16],
        to: to.into(),
        reply_to: None,
        content_type: None,
        body: b"hello".to_vec(),
    }
}

/// 2.3.1, 2.3.2, 5.1.5, 5.1.13: Alice's rules decide who may fetch and subscribe; a
/// denied watcher is told (`refused`) and nothing is kept; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_watcher_is_told_and_cannot_fetch_or_subscribe() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "here").await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::User(BOB.into()), Decision::Deny)]),
    )
    .await;
    let mut bob = login(&gw, BOB, &b).await;
    assert!(refused(&answer(&mut bob, subscribe(ALICE)).await));
    assert!(refused(&answer(&mut bob, fetch(ALICE)).await));
    let (list, _) = ask(&mut alice, Up::Watchers { req: 5 }).await;
    assert!(matches!(list, Down::Watchers { subscribers, .. } if subscribers.is_empty()));
    let mut carol = login(&gw, CAROL, &c).await;
    assert!(matches!(
        answer(&mut carol, subscribe(ALICE)).await,
        Down::Presence { .. }
    ));
}

/// 5.1.15: a politely blocked watcher's frames are exactly those of an accepted
/// subscription to a presentity that never published and never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polite_block_looks_exactly_like_acceptance_of_a_silent_presentity() {
    let (gw, [a, b, c]) = world().await;
    let d = gw.add_user("dave@example.com");
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "at work").await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::User(BOB.into()), Decision::Polite)]),
    )
    .await;
    let _dave = login(&gw, "dave@example.com", &d).await;
    // Bob watches Alice (blocked) and Carol watches Dave (silent), the same way; the
    // frames must differ only in the presentity's name.
    let transcript = |watcher: &'static str, token: String, target: &'static str| {
        let gw = &gw;
        async move {
            let mut s = device(gw, watcher, &token, 1).await;
            let mut frames = vec![answer(&mut s, subscribe(target)).await];
            frames.push(answer(&mut s, fetch(target)).await);
            let fetch_if = Up::FetchIf {
                req: 12,
                target: target.into(),
                version: 3,
            };
            frames.push(answer(&mut s, fetch_if).await);
            (s, frames)
        }
    };
    let (mut blocked, blocked_frames) = transcript(BOB, b, ALICE).await;
    let (_silent, silent_frames) = transcript(CAROL, c, "dave@example.com").await;
    let anonymise = |frames: Vec<Down>| {
        let text = format!("{frames:?}");
        text.replace(ALICE, "X").replace("dave@example.com", "X")
    };
    assert_eq!(anonymise(blocked_frames), anonymise(silent_frames));
    // Alice keeps changing; Bob hears nothing, ever.
    publish(&mut alice, "in a meeting").await;
    publish(&mut alice, "gone home").await;
    assert_eq!(blocked.recv_within(QUIET).await, None);
}

/// 2.3.3, 5.2.3: different watchers see different presence: colleagues a busy status
/// without the note, family the note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watcher_sees_the_view_its_rule_gives() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let colleagues = View {
        tuples: Vec::new(),
        hide: View::NOTE | View::CONTACT,
        status: Some(tern_wire::Availability::BUSY),
    };
    set_rules(
        &mut alice,
        presence_rules(vec![PresenceRule {
            view: Some(colleagues),
            ..rule(Who::Domain("example.org".into()), Decision::Allow)
        }]),
    )
    .await;
    let mut bob = login(&gw, BOB, &b).await;
    let mut carol = login(&gw, CAROL, &c).await;
    answer(&mut bob, subscribe(ALICE)).await;
    answer(&mut carol, subscribe(ALICE)).await;
    publish(&mut alice, "at the beach").await;
    let notified = |frame: Option<Down>| match frame {
        Some(Down::Notify { doc }) => doc.presence.tuples[0].clone(),
        other => panic!("{other:?}"),
    };
    let family = notified(bob.recv().await);
    let colleague = notified(carol.recv().await);
    assert_eq!(family.note.as_deref(), Some("at the beach"));
    assert_eq!(colleague.note, None);
    assert_eq!(colleague.availability, Some(tern_wire::Availability::BUSY));
    // A fetch gets the same view.
    match answer(&mut carol, fetch(ALICE)).await {
        Down::Presence { doc, .. } => assert_eq!(doc.presence.tuples[0].note, None),
        other => panic!("{other:?}"),
    }
}

/// 5.1.11 with *ask*: the request is pending, Alice is told at once, decides, and Bob
/// learns the decision and then gets presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asked_principal_decides_and_the_watcher_learns_the_outcome() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "free").await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::Anyone, Decision::Ask)]),
    )
    .await;
    let mut bob = login(&gw, BOB, &b).await;
    assert_eq!(
        answer(&mut bob, subscribe(ALICE)).await,
        Down::Pending { req: 10 }
    );
    assert_eq!(
        alice.recv().await,
        Some(Down::Asked {
            watcher: BOB.into()
        })
    );
    let mut carol = login(&gw, CAROL, &c).await;
    answer(&mut carol, subscribe(ALICE)).await;
    assert!(matches!(alice.recv().await, Some(Down::Asked { .. })));
    let incoming = Up::Subscriptions {
        req: 3,
        incoming: true,
    };
    let pending = |who: &str| SubInfo {
        who: who.into(),
        state: SubState::Pending,
    };
    assert_eq!(
        answer(&mut alice, incoming).await,
        Down::Subscriptions {
            req: 3,
            list: vec![pending(BOB), pending(CAROL)]
        }
    );
    let allow = Up::Decide {
        req: 4,
        watcher: BOB.into(),
        decision: Decision::Allow,
    };
    assert_eq!(answer(&mut alice, allow).await, Down::Ok { req: 4 });
    let deny = Up::Decide {
        req: 5,
        watcher: CAROL.into(),
        decision: Decision::Deny,
    };
    assert_eq!(answer(&mut alice, deny).await, Down::Ok { req: 5 });
    assert_eq!(
        bob.recv().await,
        Some(Down::Subscription {
            target: ALICE.into(),
            state: SubState::Active
        })
    );
    assert!(matches!(bob.recv().await, Some(Down::Notify { doc }) if doc.presentity == ALICE));
    assert_eq!(
        carol.recv().await,
        Some(Down::Subscription {
            target: ALICE.into(),
            state: SubState::Denied
        })
    );
}

/// 5.1.10: a watcher can learn the state of its subscriptions at any time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_can_query_the_state_of_its_subscriptions() {
    let (gw, [a, b, c]) = world().await;
    let mut carol = login(&gw, CAROL, &c).await;
    set_rules(
        &mut carol,
        presence_rules(vec![rule(Who::Anyone, Decision::Ask)]),
    )
    .await;
    let mut alice = login(&gw, ALICE, &a).await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::User(BOB.into()), Decision::Polite)]),
    )
    .await;
    let mut bob = login(&gw, BOB, &b).await;
    answer(&mut bob, subscribe(ALICE)).await;
    answer(&mut bob, subscribe(CAROL)).await;
    let mine = Up::Subscriptions {
        req: 6,
        incoming: false,
    };
    // The politely blocked subscription reads active, like any granted one.
    assert_eq!(
        answer(&mut bob, mine).await,
        Down::Subscriptions {
            req: 6,
            list: vec![
                SubInfo {
                    who: ALICE.into(),
                    state: SubState::Active
                },
                SubInfo {
                    who: CAROL.into(),
                    state: SubState::Pending
                },
            ]
        }
    );
}

/// 5.1.16, 5.1.9: the presentity's principal cancels a subscription; the watcher is
/// told and hears nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_cancels_a_subscription_and_the_watcher_is_told() {
    let (gw, [a, b, _]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let mut bob = device(&gw, BOB, &b, 1).await;
    assert!(matches!(
        answer(&mut bob, subscribe(ALICE)).await,
        Down::Subscribed { .. }
    ));
    assert!(matches!(alice.recv().await, Some(Down::Watched { .. })));
    let cancel = Up::Cancel {
        req: 7,
        watcher: BOB.into(),
    };
    assert_eq!(answer(&mut alice, cancel).await, Down::Ok { req: 7 });
    assert_eq!(
        bob.recv().await,
        Some(Down::Subscription {
            target: ALICE.into(),
            state: SubState::Cancelled
        })
    );
    // The synchronised session forgets the slot too.
    match bob.recv().await {
        Some(Down::Batch(batch)) => assert!(matches!(batch.changes[..], [Change::Gone { .. }])),
        other => panic!("{other:?}"),
    }
    publish(&mut alice, "after").await;
    assert_eq!(bob.recv_within(QUIET).await, None);
}

/// 5.1.6, 5.1.8: nobody can subscribe someone else, and a third party cannot cancel
/// someone's subscription: the frames have no such field, and `Cancel` acts on the
/// sender's own presentity only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_cannot_create_or_cancel_a_subscription() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let mut bob = login(&gw, BOB, &b).await;
    let mut carol = login(&gw, CAROL, &c).await;
    answer(&mut bob, subscribe(ALICE)).await;
    assert!(matches!(alice.recv().await, Some(Down::Watched { .. })));
    // Carol's Cancel names Bob, but can only touch subscriptions to Carol.
    let cancel = Up::Cancel {
        req: 8,
        watcher: BOB.into(),
    };
    assert_eq!(answer(&mut carol, cancel).await, Down::Ok { req: 8 });
    // Carol subscribing to Alice subscribes Carol, never anyone else.
    answer(&mut carol, subscribe(ALICE)).await;
    let (list, _) = ask(&mut alice, Up::Watchers { req: 9 }).await;
    match list {
        Down::Watchers { subscribers, .. } => {
            assert_eq!(subscribers, vec![BOB.to_string(), CAROL.to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bob.recv_within(QUIET).await, None);
}

/// 5.3.2: a watcher is sent notifications only of presentities it subscribed to, in
/// the view it is granted; a cancelled or denied one gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_go_only_to_granted_subscribers() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let mut bob = login(&gw, BOB, &b).await;
    let mut carol = login(&gw, CAROL, &c).await;
    answer(&mut bob, subscribe(ALICE)).await;
    answer(&mut carol, subscribe(ALICE)).await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::User(CAROL.into()), Decision::Deny)]),
    )
    .await;
    // The rules change restates Alice's document to Bob, and cancels Carol's.
    assert!(matches!(bob.recv().await, Some(Down::Notify { .. })));
    assert!(matches!(
        carol.recv().await,
        Some(Down::Subscription {
            state: SubState::Cancelled,
            ..
        })
    ));
    publish(&mut alice, "news").await;
    assert!(matches!(bob.recv().await, Some(Down::Notify { .. })));
    assert_eq!(carol.recv_within(QUIET).await, None);
}

/// 2.3.7: decisions are made while the presentity is out of contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_apply_while_the_principal_is_offline() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "leaving").await;
    set_rules(
        &mut alice,
        presence_rules(vec![
            rule(Who::User(BOB.into()), Decision::Deny),
            rule(Who::User(CAROL.into()), Decision::Ask),
        ]),
    )
    .await;
    alice.send(&Up::Bye).await;
    alice.recv_until_closed().await;
    let mut bob = login(&gw, BOB, &b).await;
    assert!(refused(&answer(&mut bob, subscribe(ALICE)).await));
    let mut carol = login(&gw, CAROL, &c).await;
    assert_eq!(
        answer(&mut carol, subscribe(ALICE)).await,
        Down::Pending { req: 10 }
    );
    // Alice learns of the request when she is back.
    let mut alice = login(&gw, ALICE, &a).await;
    let incoming = Up::Subscriptions {
        req: 3,
        incoming: true,
    };
    assert_eq!(
        answer(&mut alice, incoming).await,
        Down::Subscriptions {
            req: 3,
            list: vec![SubInfo {
                who: CAROL.into(),
                state: SubState::Pending
            }]
        }
    );
}

/// Time-based rules (IMPP meeting notes): a working-hours rule flips at its boundary.
/// The window is set to begin at the next minute, in UTC, so the test waits up to a
/// minute (it runs beside the others in this binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_hours_rule_flips_at_the_boundary() {
    let (gw, [a, b, _]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "coffee").await;
    let unix_secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    // Too close to the boundary to see both sides of it: start in the next minute.
    let into_minute = unix_secs() % 60;
    if into_minute > 45 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let minute = u16::try_from((unix_secs() / 60) % 1440).expect("a minute of the day");
    let from = (minute + 1) % 1440;
    let office = When {
        days: 0x7f,
        from,
        to: (from + 60) % 1440,
        offset: 0,
    };
    // Inside the window Bob sees Alice; outside it he is politely blocked.
    set_rules(
        &mut alice,
        presence_rules(vec![
            PresenceRule {
                when: Some(office),
                ..rule(Who::User(BOB.into()), Decision::Allow)
            },
            rule(Who::User(BOB.into()), Decision::Polite),
        ]),
    )
    .await;
    let mut bob = login(&gw, BOB, &b).await;
    match answer(&mut bob, subscribe(ALICE)).await {
        Down::Presence { doc, .. } => assert!(doc.presence.tuples.is_empty()),
        other => panic!("{other:?}"),
    }
    // At the boundary the gateway restates Alice's document in Bob's new view. Bob
    // keeps his link alive meanwhile (an `Ack` of nothing is answered by nothing).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(80);
    let doc = loop {
        assert!(tokio::time::Instant::now() < deadline, "no flip in time");
        match bob.recv_within(Duration::from_secs(10)).await {
            Some(Down::Notify { doc }) => break doc,
            Some(other) => panic!("{other:?}"),
            None => bob.send(&Up::Ack { upto: 0 }).await,
        }
    };
    assert_eq!(doc.presence.tuples[0].note.as_deref(), Some("coffee"));
}

/// 2.3.4: a delegate may update the principal's presence; nobody else may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_publishes_for_the_principal_and_others_cannot() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let rules = Rules {
        delegates: vec![Delegate {
            who: BOB.into(),
            rights: Delegate::PUBLISH,
        }],
        ..Rules::default()
    };
    set_rules(&mut alice, rules).await;
    let publish_for = |req| Up::PublishFor {
        req,
        presentity: ALICE.into(),
        presence: open_presence("by the assistant"),
    };
    let mut carol = login(&gw, CAROL, &c).await;
    assert!(refused(&answer(&mut carol, publish_for(20)).await));
    let mut bob = login(&gw, BOB, &b).await;
    assert_eq!(
        answer(&mut bob, publish_for(21)).await,
        Down::Ok { req: 21 }
    );
    match answer(&mut carol, fetch(ALICE)).await {
        Down::Presence { doc, .. } => {
            assert_eq!(
                doc.presence.tuples[0].note.as_deref(),
                Some("by the assistant")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// 2.3.6: a delegate may read the principal's inbox; nobody else may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_reads_the_inbox_and_others_cannot() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let rules = Rules {
        delegates: vec![Delegate {
            who: BOB.into(),
            rights: Delegate::READ,
        }],
        ..Rules::default()
    };
    set_rules(&mut alice, rules).await;
    alice.send(&Up::Bye).await;
    alice.recv_until_closed().await;
    let mut carol = login(&gw, CAROL, &c).await;
    let send = Up::Send {
        req: 30,
        msg: message(1, ALICE),
    };
    assert!(matches!(
        answer(&mut carol, send).await,
        Down::Receipt {
            status: ReceiptStatus::Stored,
            ..
        }
    ));
    let read = |req| Up::Read {
        req,
        inbox: ALICE.into(),
        after: 0,
    };
    assert!(refused(&answer(&mut carol, read(31)).await));
    let mut bob = login(&gw, BOB, &b).await;
    match answer(&mut bob, read(32)).await {
        Down::Items { items, more, .. } => {
            assert!(!more);
            assert_eq!(items.len(), 1);
            assert!(matches!(&items[0].item, InboxItem::Message(m) if m.from == CAROL));
        }
        other => panic!("{other:?}"),
    }
    // Reading acknowledged nothing: Alice still gets the message.
    let mut alice = login(&gw, ALICE, &a).await;
    assert!(matches!(alice.recv().await, Some(Down::Deliver { .. })));
}

/// 2.3.5, 5.4.10, AD5/AD6: the inbox's rules refuse a sender (who gets a failure
/// receipt) or discard in silence (the sender's receipt reads as for an offline
/// recipient); everyone else is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_rules_block_senders_with_a_failure_or_in_silence() {
    let (gw, [a, b, c]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let rules = Rules {
        inbox: vec![
            InboxRule {
                who: Who::User(BOB.into()),
                delivery: Delivery::Refuse,
            },
            InboxRule {
                who: Who::Domain("example.org".into()),
                delivery: Delivery::Discard,
            },
        ],
        ..Rules::default()
    };
    set_rules(&mut alice, rules).await;
    let mut bob = login(&gw, BOB, &b).await;
    let send = |id| Up::Send {
        req: 40,
        msg: message(id, ALICE),
    };
    assert_eq!(
        answer(&mut bob, send(1)).await,
        Down::Receipt {
            req: 40,
            status: ReceiptStatus::Failed(ErrorCode::REFUSED)
        }
    );
    let mut carol = login(&gw, CAROL, &c).await;
    assert_eq!(
        answer(&mut carol, send(2)).await,
        Down::Receipt {
            req: 40,
            status: ReceiptStatus::Stored
        }
    );
    assert_eq!(alice.recv_within(QUIET).await, None);
    let d = gw.add_user("dave@example.com");
    let mut dave = login(&gw, "dave@example.com", &d).await;
    dave.send(&send(3)).await;
    assert!(matches!(alice.recv().await, Some(Down::Deliver { .. })));
}

fn anonymous_hello() -> Up {
    Up::Hello(Hello {
        version: VERSION,
        user: "anonymous@example.com".into(),
        token: String::new(),
    })
}

async fn anonymous_world() -> (Harness, [String; 3]) {
    world_with(|c| {
        for domain in &mut c.domains {
            if let tern_gateway::config::DomainEntry::Table(t) = domain {
                t.anonymous = t.name == "example.com";
            }
        }
    })
    .await
}

/// 5.1.3, 5.1.14: unauthenticated watchers exist only where the operator allows them,
/// are refused unless the principal allows them, and are shown only as anonymous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_allows_or_forbids_anonymous_watchers() {
    let (gw, [a, _, _]) = anonymous_world().await;
    let mut nobody = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    nobody
        .send(&Up::Hello(Hello {
            version: VERSION,
            user: "anonymous@example.org".into(),
            token: String::new(),
        }))
        .await;
    assert!(matches!(
        nobody.recv().await,
        Some(Down::Close { code, .. }) if code == ErrorCode::UNAUTHORIZED
    ));
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "public").await;
    let mut anon = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    anon.send(&anonymous_hello()).await;
    assert!(matches!(anon.recv().await, Some(Down::Welcome(_))));
    // Forbidden by default (5.1.14).
    assert!(refused(&answer(&mut anon, subscribe(ALICE)).await));
    // Allowed by Alice (5.1.3): she sees an anonymous watcher, nothing more.
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::Anonymous, Decision::Allow)]),
    )
    .await;
    assert!(matches!(
        answer(&mut anon, subscribe(ALICE)).await,
        Down::Presence { .. }
    ));
    assert_eq!(
        alice.recv().await,
        Some(Down::Watched {
            watcher: "anonymous@example.com".into()
        })
    );
    // And forbidden again: the anonymous subscription is cancelled.
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::Anonymous, Decision::Deny)]),
    )
    .await;
    assert!(matches!(
        anon.recv().await,
        Some(Down::Subscription {
            state: SubState::Cancelled,
            ..
        })
    ));
}

/// Anonymous messages (RFC 2779 8.2.2, AD4, AD5): refused unless allowed, and marked
/// as anonymous when delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_messages_are_marked_and_refused_unless_allowed() {
    let (gw, [a, _, _]) = anonymous_world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    let mut anon = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    anon.send(&anonymous_hello()).await;
    assert!(matches!(anon.recv().await, Some(Down::Welcome(_))));
    let send = |id| Up::Send {
        req: 50,
        msg: message(id, ALICE),
    };
    assert_eq!(
        answer(&mut anon, send(1)).await,
        Down::Receipt {
            req: 50,
            status: ReceiptStatus::Failed(ErrorCode::REFUSED)
        }
    );
    let rules = Rules {
        inbox: vec![InboxRule {
            who: Who::Anonymous,
            delivery: Delivery::Accept,
        }],
        ..Rules::default()
    };
    set_rules(&mut alice, rules).await;
    anon.send(&send(2)).await;
    match alice.recv().await {
        Some(Down::Deliver {
            item: InboxItem::Message(m),
            ..
        }) => assert_eq!(m.from, "anonymous@example.com"),
        other => panic!("{other:?}"),
    }
}

/// 5.1.16 (C1) and the administrator: listing who is subscribed to a user, reading and
/// changing its rules and presence, removing a subscription; outside its domain and
/// with a wrong token it can do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_lists_and_removes_subscriptions_of_its_domain() {
    let (gw, [a, b, c]) = world().await;
    let admin_token = gw.add_admin("example.com");
    let mut alice = login(&gw, ALICE, &a).await;
    let mut bob = login(&gw, BOB, &b).await;
    let mut carol = login(&gw, CAROL, &c).await;
    answer(&mut bob, subscribe(ALICE)).await;
    answer(&mut carol, subscribe(ALICE)).await;
    let operate = |token: &str| {
        Up::Operate(Operate {
            version: VERSION,
            domain: "example.com".into(),
            token: token.into(),
        })
    };
    let mut wrong = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    wrong.send(&operate(&a)).await;
    assert!(matches!(
        wrong.recv().await,
        Some(Down::Close { code, .. }) if code == ErrorCode::UNAUTHORIZED
    ));
    let mut admin = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    admin.send(&operate(&admin_token)).await;
    assert!(matches!(admin.recv().await, Some(Down::Welcome(_))));
    let op = |req, user: &str, op| Up::Admin {
        req,
        user: user.into(),
        op,
    };
    match answer(&mut admin, op(1, ALICE, AdminOp::Watchers)).await {
        Down::Watchers { subscribers, .. } => {
            assert_eq!(subscribers, vec![BOB.to_string(), CAROL.to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(refused(
        &answer(&mut admin, op(2, CAROL, AdminOp::Watchers)).await
    ));
    assert_eq!(
        answer(&mut admin, op(3, ALICE, AdminOp::Cancel(BOB.into()))).await,
        Down::Ok { req: 3 }
    );
    assert!(matches!(
        bob.recv().await,
        Some(Down::Subscription {
            state: SubState::Cancelled,
            ..
        })
    ));
    let rules = presence_rules(vec![rule(Who::User(CAROL.into()), Decision::Deny)]);
    assert_eq!(
        answer(&mut admin, op(4, ALICE, AdminOp::SetRules(rules.clone()))).await,
        Down::Ok { req: 4 }
    );
    assert_eq!(
        answer(&mut admin, op(5, ALICE, AdminOp::GetRules)).await,
        Down::Rules { req: 5, rules }
    );
    assert!(matches!(
        answer(
            &mut admin,
            op(6, ALICE, AdminOp::SetPresence(open_presence("set by ops")))
        )
        .await,
        Down::Ok { req: 6 }
    ));
    match answer(&mut admin, op(7, ALICE, AdminOp::GetPresence)).await {
        Down::Versioned { doc, .. } => {
            assert_eq!(doc.presence.tuples[0].note.as_deref(), Some("set by ops"));
        }
        other => panic!("{other:?}"),
    }
    // Alice's own sessions saw none of this as a request of theirs; her rules did change.
    let (mine, _) = ask(&mut alice, Up::GetRules { req: 8 }).await;
    assert!(matches!(mine, Down::Rules { rules, .. } if rules.presence.len() == 1));
    // Every action is in the audit log.
    let log = gw.admin_log("example.com");
    assert_eq!(log.len(), 6, "{log:?}");
}

/// Abuse limits per source address: anonymous peers from one address share one budget;
/// a limited peer is told when to retry, and others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_peers_are_limited_per_source_address() {
    let (gw, [a, _, _]) = world_with(|c| {
        let rates = RateTable {
            fetches_per_minute: 60,
            burst: 2,
            ..RateTable::default()
        };
        let mut entry = tern_tests::domain("example.com", rates);
        if let tern_gateway::config::DomainEntry::Table(t) = &mut entry {
            t.anonymous = true;
        }
        c.domains = vec![entry, tern_tests::domain("example.org", rates)];
    })
    .await;
    let mut alice = login(&gw, ALICE, &a).await;
    set_rules(
        &mut alice,
        presence_rules(vec![rule(Who::Anonymous, Decision::Allow)]),
    )
    .await;
    let mut first = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    first.send(&anonymous_hello()).await;
    assert!(matches!(first.recv().await, Some(Down::Welcome(_))));
    let mut second = RawSession::open(gw.addr(), &gw.cert_pem()).await;
    second.send(&anonymous_hello()).await;
    assert!(matches!(second.recv().await, Some(Down::Welcome(_))));
    assert!(matches!(
        answer(&mut first, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
    assert!(matches!(
        answer(&mut second, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
    // The third fetch from the same address, on either connection, is limited.
    let limited = answer(&mut first, fetch(ALICE)).await;
    let Down::Limited { retry_after, .. } = limited else {
        panic!("{limited:?}");
    };
    // Alice, authenticated, is unaffected.
    assert!(matches!(
        answer(&mut alice, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
    tokio::time::sleep(Duration::from_millis(u64::from(retry_after) + 50)).await;
    assert!(matches!(
        answer(&mut second, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
}

/// Abuse limits per source address for authenticated principals too, where the domain
/// sets them: principals behind one address share its budget, a limited one is told
/// when to retry and gets through after it, and another address is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_behind_one_address_share_its_budget_and_others_are_unaffected() {
    let (gw, [a, b, _]) = world_with(|c| {
        let mut entry = tern_tests::domain("example.com", RateTable::default());
        if let tern_gateway::config::DomainEntry::Table(t) = &mut entry {
            t.address_rates = Some(RateTable {
                fetches_per_minute: 60,
                burst: 2,
                ..RateTable::default()
            });
        }
        c.domains = vec![
            entry,
            tern_tests::domain("example.org", RateTable::default()),
        ];
    })
    .await;
    let d = gw.add_user("dave@example.com");
    let mut alice = login(&gw, ALICE, &a).await;
    let mut bob = login(&gw, BOB, &b).await;
    let elsewhere = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    let mut dave = RawSession::open_from(gw.addr(), &gw.cert_pem(), elsewhere).await;
    dave.send(&Up::Hello(Hello {
        version: VERSION,
        user: "dave@example.com".into(),
        token: d,
    }))
    .await;
    assert!(matches!(dave.recv().await, Some(Down::Welcome(_))));
    assert!(matches!(
        answer(&mut alice, fetch(BOB)).await,
        Down::Presence { .. }
    ));
    assert!(matches!(
        answer(&mut bob, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
    let limited = answer(&mut alice, fetch(BOB)).await;
    let Down::Limited { retry_after, .. } = limited else {
        panic!("{limited:?}");
    };
    assert!(matches!(
        answer(&mut dave, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
    tokio::time::sleep(Duration::from_millis(u64::from(retry_after) + 50)).await;
    assert!(matches!(
        answer(&mut bob, fetch(ALICE)).await,
        Down::Presence { .. }
    ));
}

/// 2.3.1 apart from 2.3.2: a principal lets a poller observe its presence (in a view)
/// without letting it subscribe; the poller is told when it tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_may_be_allowed_to_fetch_but_not_to_subscribe() {
    let (gw, [a, b, _]) = world().await;
    let mut alice = login(&gw, ALICE, &a).await;
    publish(&mut alice, "in a meeting").await;
    let poller = PresenceRule {
        view: Some(View {
            hide: View::NOTE,
            ..View::default()
        }),
        ..rule(Who::User(BOB.into()), Decision::FetchOnly)
    };
    set_rules(&mut alice, presence_rules(vec![poller])).await;
    let mut bob = login(&gw, BOB, &b).await;
    assert!(refused(&answer(&mut bob, subscribe(ALICE)).await));
    match answer(&mut bob, fetch(ALICE)).await {
        Down::Presence { doc, .. } => {
            assert_eq!(doc.presence.tuples.len(), 1);
            assert_eq!(doc.presence.tuples[0].note, None);
        }
        other => panic!("{other:?}"),
    }
    let poll = Up::FetchIf {
        req: 12,
        target: ALICE.into(),
        version: 0,
    };
    assert!(matches!(
        answer(&mut bob, poll).await,
        Down::Versioned { .. }
    ));
    let (list, _) = ask(&mut alice, Up::Watchers { req: 5 }).await;
    assert!(matches!(list, Down::Watchers { subscribers, .. } if subscribers.is_empty()));
}
