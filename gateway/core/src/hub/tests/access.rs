//! Access rules driven without sockets: decisions, views, polite blocking, pending
//! requests, cancellation, time windows, delivery rules, delegation, anonymous peers and
//! administrators. The same behaviours are driven over real QUIC in `tests/tests/access.rs`.

use tern_wire::{
    AdminOp, Decision, Delegate, Delivery, InboxRule, Item, Operate, PresenceDoc, PresenceRule,
    Rules, SubInfo, SubState, View, When, Who,
};

use super::*;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@other.org";

fn rule(who: Who, decision: Decision) -> PresenceRule {
    PresenceRule {
        who,
        decision,
        view: None,
        when: None,
    }
}

fn set_rules(w: &mut World, conn: ConnId, rules: Rules) -> Vec<Action> {
    let actions = w.frame(conn, Up::SetRules { req: 90, rules });
    assert!(
        frames_to(&actions, conn).contains(&Down::Ok { req: 90 }),
        "{actions:?}"
    );
    actions
}

fn publish(w: &mut World, conn: ConnId, note: &str) -> Vec<Action> {
    w.frame(
        conn,
        Up::Publish {
            req: 80,
            presence: open(note),
        },
    )
}

fn subscribe(w: &mut World, conn: ConnId, target: &str) -> Vec<Down> {
    let actions = w.frame(
        conn,
        Up::Subscribe {
            req: 7,
            target: target.into(),
        },
    );
    frames_to(&actions, conn)
}

fn notified(actions: &[Action], conn: ConnId) -> Vec<PresenceDoc> {
    frames_to(actions, conn)
        .into_iter()
        .filter_map(|f| match f {
            Down::Notify { doc } => Some(doc),
            _ => None,
        })
        .collect()
}

fn refused(frames: &[Down]) -> bool {
    frames
        .iter()
        .any(|f| matches!(f, Down::Fail { code, .. } if *code == ErrorCode::REFUSED))
}

#[test]
fn a_denied_watcher_is_told_and_nothing_is_stored() {
    let mut w = World::new();
    w.login(1, ALICE);
    w.login(2, BOB);
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![rule(Who::User(BOB.into()), Decision::Deny)],
            ..Rules::default()
        },
    );
    assert!(refused(&subscribe(&mut w, 2, ALICE)));
    let fetch = w.frame(
        2,
        Up::Fetch {
            req: 8,
            target: ALICE.into(),
        },
    );
    assert!(refused(&frames_to(&fetch, 2)));
    assert!(w.hub.watchers_of(ALICE).is_empty());
    // Carol, whom no rule names, is allowed.
    w.login(3, CAROL);
    assert!(matches!(
        subscribe(&mut w, 3, ALICE)[0],
        Down::Presence { .. }
    ));
}

#[test]
fn a_politely_blocked_watcher_sees_a_presentity_that_never_published() {
    let mut w = World::new();
    w.store.put_user(&user("dave@example.com")).unwrap();
    w.login(1, ALICE);
    publish(&mut w, 1, "at work");
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![rule(Who::User(BOB.into()), Decision::Polite)],
            ..Rules::default()
        },
    );
    w.login(2, BOB);
    let blocked = subscribe(&mut w, 2, ALICE);
    let never = subscribe(&mut w, 2, "dave@example.com");
    let strip = |frames: Vec<Down>| -> Vec<Down> {
        frames
            .into_iter()
            .map(|f| match f {
                Down::Presence { req, mut doc } => {
                    doc.presentity.clear();
                    Down::Presence { req, doc }
                }
                other => other,
            })
            .collect()
    };
    assert_eq!(strip(blocked), strip(never));
    // Alice is not told of a subscription she decided about; and changes cost nothing.
    let actions = publish(&mut w, 1, "home");
    assert!(notified(&actions, 2).is_empty());
    assert_eq!(frames_to(&actions, 2), vec![]);
}

#[test]
fn views_give_different_watchers_different_presence() {
    let mut w = World::new();
    w.login(1, ALICE);
    let colleagues = View {
        tuples: vec![],
        hide: View::NOTE | View::CONTACT,
        status: Some(Availability::BUSY),
    };
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![PresenceRule {
                view: Some(colleagues),
                ..rule(Who::Domain("other.org".into()), Decision::Allow)
            }],
            ..Rules::default()
        },
    );
    w.login(2, BOB);
    w.login(3, CAROL);
    subscribe(&mut w, 2, ALICE);
    subscribe(&mut w, 3, ALICE);
    let actions = publish(&mut w, 1, "at the beach");
    let bob = &notified(&actions, 2)[0].presence.tuples[0];
    let carol = &notified(&actions, 3)[0].presence.tuples[0];
    assert_eq!(bob.note.as_deref(), Some("at the beach"));
    assert_eq!(bob.availability, Some(Availability::AVAILABLE));
    assert_eq!(carol.note, None);
    assert_eq!(carol.contact, None);
    assert_eq!(carol.availability, Some(Availability::BUSY));
}

#[test]
fn ask_waits_for_the_principal_who_is_told_and_decides() {
    let mut w = World::new();
    w.login(1, ALICE);
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![rule(Who::Anyone, Decision::Ask)],
            ..Rules::default()
        },
    );
    w.login(2, BOB);
    let actions = w.frame(
        2,
        Up::Subscribe {
            req: 7,
            target: ALICE.into(),
        },
    );
    assert_eq!(frames_to(&actions, 2), vec![Down::Pending { req: 7 }]);
    assert_eq!(
        frames_to(&actions, 1),
        vec![Down::Asked {
            watcher: BOB.into()
        }]
    );
    // Both sides can see the request.
    let mine = w.frame(
        2,
        Up::Subscriptions {
            req: 3,
            incoming: false,
        },
    );
    let pending = vec![SubInfo {
        who: ALICE.into(),
        state: SubState::Pending,
    }];
    assert_eq!(
        frames_to(&mine, 2),
        vec![Down::Subscriptions {
            req: 3,
            list: pending
        }]
    );
    let actions = w.frame(
        1,
        Up::Decide {
            req: 4,
            watcher: BOB.into(),
            decision: Decision::Allow,
        },
    );
    let to_bob = frames_to(&actions, 2);
    assert_eq!(
        to_bob[0],
        Down::Subscription {
            target: ALICE.into(),
            state: SubState::Active
        }
    );
    assert!(matches!(&to_bob[1], Down::Notify { doc } if doc.presentity == ALICE));
    assert_eq!(w.hub.watchers_of(ALICE), vec![BOB.to_string()]);
    let actions = publish(&mut w, 1, "now");
    assert_eq!(notified(&actions, 2).len(), 1);
}

#[test]
fn the_principal_cancels_and_the_watcher_is_told_and_hears_nothing_more() {
    let mut w = World::new();
    w.login(1, ALICE);
    w.login(2, BOB);
    w.login(3, CAROL);
    subscribe(&mut w, 2, ALICE);
    // A third party's Cancel acts on its own presentity only.
    let actions = w.frame(
        3,
        Up::Cancel {
            req: 5,
            watcher: BOB.into(),
        },
    );
    assert_eq!(frames_to(&actions, 3), vec![Down::Ok { req: 5 }]);
    assert!(frames_to(&actions, 2).is_empty());
    assert_eq!(w.hub.watchers_of(ALICE), vec![BOB.to_string()]);
    let actions = w.frame(
        1,
        Up::Cancel {
            req: 6,
            watcher: BOB.into(),
        },
    );
    assert_eq!(
        frames_to(&actions, 2),
        vec![Down::Subscription {
            target: ALICE.into(),
            state: SubState::Cancelled
        }]
    );
    assert!(w.hub.watchers_of(ALICE).is_empty());
    assert!(notified(&publish(&mut w, 1, "x"), 2).is_empty());
}

#[test]
fn new_rules_cancel_watchers_now_denied_and_keep_the_others() {
    let mut w = World::new();
    w.login(1, ALICE);
    w.login(2, BOB);
    w.login(3, CAROL);
    subscribe(&mut w, 2, ALICE);
    subscribe(&mut w, 3, ALICE);
    let actions = set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![rule(Who::Domain("other.org".into()), Decision::Deny)],
            ..Rules::default()
        },
    );
    assert!(frames_to(&actions, 3).contains(&Down::Subscription {
        target: ALICE.into(),
        state: SubState::Cancelled
    }));
    // Bob gets the document again (a new epoch), unchanged for him.
    assert_eq!(notified(&actions, 2).len(), 1);
    assert_eq!(w.hub.watchers_of(ALICE), vec![BOB.to_string()]);
}

#[test]
fn a_time_window_flips_the_view_at_its_boundary() {
    // Monday 2026-11-23 08:59 UTC.
    let mut w = World::new();
    w.now = 1_795_424_340_000;
    w.login(1, ALICE);
    publish(&mut w, 1, "coffee");
    let office = When {
        days: 0x1f,
        from: 9 * 60,
        to: 17 * 60,
        offset: 0,
    };
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![
                PresenceRule {
                    when: Some(office),
                    view: Some(View {
                        hide: View::NOTE,
                        ..View::default()
                    }),
                    ..rule(Who::User(BOB.into()), Decision::Allow)
                },
                rule(Who::User(BOB.into()), Decision::Polite),
            ],
            ..Rules::default()
        },
    );
    w.login(2, BOB);
    let before = subscribe(&mut w, 2, ALICE);
    assert!(matches!(&before[0], Down::Presence { doc, .. } if doc.presence.tuples.is_empty()));
    assert_eq!(w.hub.poll_timeout(), Some(1_795_424_400_000));
    w.now = 1_795_424_400_000;
    w.hub.handle_timeout(w.now, &mut w.store).unwrap();
    let actions = w.drain();
    let doc = &notified(&actions, 2)[0];
    assert_eq!(doc.presence.tuples.len(), 1);
    assert_eq!(doc.presence.tuples[0].note, None);
}

#[test]
fn inbox_rules_refuse_or_discard_and_accept_by_default() {
    let mut w = World::new();
    w.login(1, ALICE);
    set_rules(
        &mut w,
        1,
        Rules {
            inbox: vec![
                InboxRule {
                    who: Who::User(BOB.into()),
                    delivery: Delivery::Refuse,
                },
                InboxRule {
                    who: Who::Domain("other.org".into()),
                    delivery: Delivery::Discard,
                },
            ],
            ..Rules::default()
        },
    );
    w.login(2, BOB);
    w.login(3, CAROL);
    let send = |w: &mut World, conn, id| {
        let actions = w.frame(
            conn,
            Up::Send {
                req: 11,
                msg: msg(id, ALICE, "hi"),
            },
        );
        (frames_to(&actions, conn), frames_to(&actions, 1))
    };
    let (to_bob, to_alice) = send(&mut w, 2, 1);
    assert_eq!(
        to_bob,
        vec![Down::Receipt {
            req: 11,
            status: ReceiptStatus::Failed(ErrorCode::REFUSED)
        }]
    );
    assert!(to_alice.is_empty());
    let (to_carol, to_alice) = send(&mut w, 3, 2);
    assert_eq!(
        to_carol,
        vec![Down::Receipt {
            req: 11,
            status: ReceiptStatus::Stored
        }]
    );
    assert!(to_alice.is_empty());
}

#[test]
fn delegates_publish_and_read_only_with_the_rights_given() {
    let mut w = World::new();
    w.login(1, ALICE);
    w.login(2, BOB);
    w.login(3, CAROL);
    set_rules(
        &mut w,
        1,
        Rules {
            delegates: vec![Delegate {
                who: BOB.into(),
                rights: Delegate::PUBLISH | Delegate::READ,
            }],
            ..Rules::default()
        },
    );
    subscribe(&mut w, 3, ALICE);
    let publish_for = |w: &mut World, conn| {
        let actions = w.frame(
            conn,
            Up::PublishFor {
                req: 12,
                presentity: ALICE.into(),
                presence: open("by my assistant"),
            },
        );
        (frames_to(&actions, conn), notified(&actions, 3))
    };
    let (answer, seen) = publish_for(&mut w, 3);
    assert!(refused(&answer));
    assert!(seen.is_empty());
    let (answer, seen) = publish_for(&mut w, 2);
    assert_eq!(answer, vec![Down::Ok { req: 12 }]);
    assert_eq!(seen[0].presentity, ALICE);
    w.disconnect(1);
    w.frame(
        3,
        Up::Send {
            req: 13,
            msg: msg(9, ALICE, "for alice"),
        },
    );
    let read = |w: &mut World, conn| {
        let actions = w.frame(
            conn,
            Up::Read {
                req: 14,
                inbox: ALICE.into(),
                after: 0,
            },
        );
        frames_to(&actions, conn)
    };
    assert!(refused(&read(&mut w, 3)));
    match &read(&mut w, 2)[0] {
        Down::Items { items, more, .. } => {
            assert!(!more);
            assert!(
                matches!(&items[..], [Item { item: InboxItem::Message(m), .. }] if m.body == b"for alice")
            );
        }
        other => panic!("{other:?}"),
    }
}

fn anonymous_world() -> World {
    let mut w = World::new();
    let mut config = w.hub.config().clone();
    config.domains[0].anonymous = true;
    w.hub = Hub::new(config);
    w.hub.load(w.now, &mut w.store).unwrap();
    w
}

fn login_anonymous(w: &mut World, conn: ConnId, domain: &str) -> Vec<Action> {
    w.hub.handle_connect(w.now, conn);
    let hello = Hello {
        version: VERSION,
        user: format!("anonymous@{domain}"),
        token: String::new(),
    };
    w.frame(conn, Up::Hello(hello))
}

#[test]
fn anonymous_peers_exist_only_where_allowed_and_the_principal_decides() {
    let mut w = anonymous_world();
    assert_eq!(
        closed_with(&login_anonymous(&mut w, 9, "other.org"), 9),
        Some(ErrorCode::UNAUTHORIZED)
    );
    assert!(matches!(
        frames_to(&login_anonymous(&mut w, 8, "example.com"), 8)[0],
        Down::Welcome(_)
    ));
    w.login(1, ALICE);
    // Denied by default (5.1.14), and refused as a sender by default.
    assert!(refused(&subscribe(&mut w, 8, ALICE)));
    let actions = w.frame(
        8,
        Up::Send {
            req: 15,
            msg: msg(3, ALICE, "boo"),
        },
    );
    assert_eq!(
        frames_to(&actions, 8),
        vec![Down::Receipt {
            req: 15,
            status: ReceiptStatus::Failed(ErrorCode::REFUSED)
        }]
    );
    // Allowed by Alice's rules (5.1.3): seen by her only as `anonymous@example.com`.
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![rule(Who::Anonymous, Decision::Allow)],
            inbox: vec![InboxRule {
                who: Who::Anonymous,
                delivery: Delivery::Accept,
            }],
            ..Rules::default()
        },
    );
    let actions = w.frame(
        8,
        Up::Subscribe {
            req: 7,
            target: ALICE.into(),
        },
    );
    assert_eq!(
        frames_to(&actions, 1),
        vec![Down::Watched {
            watcher: "anonymous@example.com".into()
        }]
    );
    let actions = w.frame(
        8,
        Up::Send {
            req: 16,
            msg: msg(4, ALICE, "hello from nobody"),
        },
    );
    let delivered = frames_to(&actions, 1);
    assert!(
        matches!(&delivered[0], Down::Deliver { item: InboxItem::Message(m), .. } if m.from == "anonymous@example.com")
    );
    // It may not publish or read rules; its subscriptions end with its session.
    let actions = w.frame(8, Up::GetRules { req: 17 });
    assert!(refused(&frames_to(&actions, 8)));
    w.disconnect(8);
    assert!(w.hub.watchers_of(ALICE).is_empty());
    assert!(w.store.subscriptions().unwrap().is_empty());
}

#[test]
fn an_administrator_acts_within_its_domain_and_every_action_is_logged() {
    let mut w = World::new();
    w.store
        .put_admin_token("example.com", &hash_token("root-secret"))
        .unwrap();
    w.login(2, BOB);
    subscribe(&mut w, 2, ALICE);
    let operate = |w: &mut World, conn, token: &str| {
        w.hub.handle_connect(w.now, conn);
        let op = Operate {
            version: VERSION,
            domain: "example.com".into(),
            token: token.into(),
        };
        w.frame(conn, Up::Operate(op))
    };
    assert_eq!(
        closed_with(&operate(&mut w, 20, "guess"), 20),
        Some(ErrorCode::UNAUTHORIZED)
    );
    assert!(matches!(
        &frames_to(&operate(&mut w, 21, "root-secret"), 21)[0],
        Down::Welcome(Welcome { user, .. }) if user == "example.com"
    ));
    let admin = |w: &mut World, user: &str, op| {
        let actions = w.frame(
            21,
            Up::Admin {
                req: 30,
                user: user.into(),
                op,
            },
        );
        frames_to(&actions, 21)
    };
    assert_eq!(
        admin(&mut w, ALICE, AdminOp::Watchers),
        vec![Down::Watchers {
            req: 30,
            subscribers: vec![BOB.into()],
            fetchers: vec![]
        }]
    );
    assert!(refused(&admin(&mut w, CAROL, AdminOp::Watchers)));
    assert_eq!(
        admin(&mut w, ALICE, AdminOp::Cancel(BOB.into())),
        vec![Down::Ok { req: 30 }]
    );
    assert!(w.hub.watchers_of(ALICE).is_empty());
    let log = w.store.admin_log("example.com", 10).unwrap();
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["watchers", "cancel bob@example.com"]);
    // A user's session cannot make administrator requests.
    let actions = w.frame(
        2,
        Up::Admin {
            req: 31,
            user: ALICE.into(),
            op: AdminOp::Watchers,
        },
    );
    assert!(
        matches!(&frames_to(&actions, 2)[0], Down::Fail { code, .. } if *code == ErrorCode::PROTOCOL)
    );
}

fn sync_login(w: &mut World, conn: ConnId, who: &str) -> Vec<Action> {
    w.hub.handle_connect(w.now, conn);
    let open = Up::Open(tern_wire::Open {
        version: VERSION,
        user: who.into(),
        token: format!("token-{who}"),
        device: vec![conn as u8; 16],
        inbox_seen: 0,
        flags: tern_wire::Open::INBOX | tern_wire::Open::SYNC,
    });
    w.frame(conn, open)
}

fn batch_changes(actions: &[Action], conn: ConnId) -> Vec<tern_wire::Change> {
    frames_to(actions, conn)
        .into_iter()
        .flat_map(|f| match f {
            Down::Batch(b) => b.changes,
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn synchronised_watchers_get_views_polite_blanks_and_whole_documents_across_rule_changes() {
    let mut w = World::new();
    w.login(1, ALICE);
    publish(&mut w, 1, "first");
    sync_login(&mut w, 2, BOB);
    sync_login(&mut w, 3, CAROL);
    let subscribed = |frames: Vec<Down>| match frames.into_iter().next() {
        Some(Down::Subscribed { version, doc, .. }) => (version, doc),
        other => panic!("{other:?}"),
    };
    set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![
                rule(Who::User(CAROL.into()), Decision::Polite),
                PresenceRule {
                    view: Some(View {
                        hide: View::NOTE,
                        ..View::default()
                    }),
                    ..rule(Who::User(BOB.into()), Decision::Allow)
                },
            ],
            ..Rules::default()
        },
    );
    let (_, bob_doc) = subscribed(subscribe(&mut w, 2, ALICE));
    assert_eq!(bob_doc.presence.tuples[0].note, None);
    let (carol_version, carol_doc) = subscribed(subscribe(&mut w, 3, ALICE));
    assert_eq!((carol_version, carol_doc.updated), (0, 0));
    assert!(carol_doc.presence.tuples.is_empty());
    // A change: Bob's batch is a delta in his view, Carol gets nothing at all.
    let actions = publish(&mut w, 1, "second");
    w.now += 100;
    w.hub.handle_timeout(w.now, &mut w.store).unwrap();
    let mut actions = [actions, w.drain()].concat();
    let bob = batch_changes(&actions, 2);
    assert!(
        matches!(&bob[..], [tern_wire::Change::Delta { .. }]),
        "{bob:?}"
    );
    assert!(frames_to(&actions, 3).is_empty());
    // New rules: Bob's next change cannot be a delta across the epoch.
    actions = set_rules(&mut w, 1, Rules::default());
    w.now += 100;
    w.hub.handle_timeout(w.now, &mut w.store).unwrap();
    actions.extend(w.drain());
    let bob = batch_changes(&actions, 2);
    match &bob[..] {
        [tern_wire::Change::Full { presence, .. }] => {
            assert_eq!(presence.tuples[0].note.as_deref(), Some("second"));
        }
        other => panic!("{other:?}"),
    }
    // Carol, no longer blocked, now sees the real document.
    let carol = batch_changes(&actions, 3);
    assert!(
        matches!(&carol[..], [tern_wire::Change::Full { presence, .. }] if presence.tuples.len() == 1)
    );
}

#[test]
fn a_fetch_only_watcher_polls_in_its_view_but_cannot_subscribe() {
    let mut w = World::new();
    w.login(1, ALICE);
    publish(&mut w, 1, "busy day");
    w.login(2, BOB);
    subscribe(&mut w, 2, ALICE);
    let poller = PresenceRule {
        view: Some(View {
            hide: View::NOTE,
            ..View::default()
        }),
        ..rule(Who::User(BOB.into()), Decision::FetchOnly)
    };
    // Bob's existing subscription ends: he may observe, not subscribe (2.3.1 vs 2.3.2).
    let actions = set_rules(
        &mut w,
        1,
        Rules {
            presence: vec![poller],
            ..Rules::default()
        },
    );
    assert!(frames_to(&actions, 2).contains(&Down::Subscription {
        target: ALICE.into(),
        state: SubState::Cancelled
    }));
    assert!(refused(&subscribe(&mut w, 2, ALICE)));
    assert!(w.hub.watchers_of(ALICE).is_empty());
    let fetched = w.frame(
        2,
        Up::Fetch {
            req: 8,
            target: ALICE.into(),
        },
    );
    match &frames_to(&fetched, 2)[..] {
        [Down::Presence { doc, .. }] => {
            assert_eq!(doc.presence.tuples.len(), 1);
            assert_eq!(doc.presence.tuples[0].note, None);
        }
        other => panic!("{other:?}"),
    }
}
