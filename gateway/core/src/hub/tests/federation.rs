//! Federation driven without sockets: stanzas in as `Inbound`, out as
//! `Action::Federate`, with the durable outbox in the store. The same flows are driven
//! through a real Prosody in `tests/tests/federation.rs`.

use tern_wire::{Decision, Delivery, InboxRule, LateReceipt, PresenceRule, Rules, SubState, Who};

use super::*;
use crate::federation::{Inbound, Outbound, Show, SubKind, remote_tuple};

const ALICE: &str = "alice@example.com";
const CAROL: &str = "carol@other.org";
const ROMEO: &str = "romeo@xmpp.test";
const JULIET: &str = "juliet@xmpp.test";

/// A world whose `example.com` is joined to XMPP (`other.org` is served but not).
fn federated() -> World {
    let mut w = World::new();
    let mut config = w.hub.config().clone();
    config.federation = Some("example.com".into());
    w.hub = Hub::new(config);
    w.hub.load(w.now, &mut w.store).unwrap();
    w
}

fn inbound(w: &mut World, stanza: Inbound) -> Vec<Action> {
    w.hub.handle_federated(w.now, stanza, &mut w.store).unwrap();
    w.drain()
}

fn stanzas(actions: &[Action]) -> Vec<Outbound> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Federate { stanza, .. } => Some(stanza.clone()),
            _ => None,
        })
        .collect()
}

fn sub(from: &str, to: &str, kind: SubKind) -> Inbound {
    Inbound::Subscription {
        from: from.into(),
        to: to.into(),
        kind,
    }
}

fn out_sub(from: &str, to: &str, kind: SubKind) -> Outbound {
    Outbound::Subscription {
        from: from.into(),
        to: to.into(),
        kind,
    }
}

fn send(w: &mut World, conn: ConnId, msg: Message) -> (Vec<Down>, Vec<Outbound>) {
    let actions = w.frame(conn, Up::Send { req: 3, msg });
    (frames_to(&actions, conn), stanzas(&actions))
}

fn receipt(status: ReceiptStatus) -> Down {
    Down::Receipt { req: 3, status }
}

fn delivered_items(actions: &[Action], conn: ConnId) -> Vec<InboxItem> {
    frames_to(actions, conn)
        .into_iter()
        .filter_map(|f| match f {
            Down::Deliver { item, .. } => Some(item),
            _ => None,
        })
        .collect()
}

/// Romeo's resource that writes.
const ROMEO_PHONE: &str = "romeo@xmpp.test/phone";

fn remote_message(id: &[u8], body: &str, receipt: bool) -> Inbound {
    Inbound::Message {
        from: ROMEO.into(),
        to: ALICE.into(),
        id: id.to_vec(),
        body: body.into(),
        receipt,
        sender: ROMEO_PHONE.into(),
    }
}

#[test]
fn without_federation_remote_addresses_stay_unroutable() {
    let mut w = World::new();
    w.login(1, ALICE);
    let (frames, out) = send(&mut w, 1, msg(1, ROMEO, "hi"));
    assert_eq!(
        frames,
        [receipt(ReceiptStatus::Failed(ErrorCode::UNROUTABLE))]
    );
    assert!(out.is_empty());
}

#[test]
fn a_message_out_is_relayed_once_and_its_receipt_comes_back_late() {
    let mut w = federated();
    w.login(1, ALICE);
    let (frames, out) = send(&mut w, 1, msg(1, ROMEO, "hello"));
    assert_eq!(frames, [receipt(ReceiptStatus::Relayed)]);
    let expected = Outbound::Message {
        from: ALICE.into(),
        to: ROMEO.into(),
        id: vec![1; 16],
        body: "hello".into(),
    };
    assert_eq!(out, std::slice::from_ref(&expected));
    assert_eq!(
        w.store.fed_after(0, 10).unwrap(),
        [(1, expected)],
        "durable"
    );

    // A resend is answered with the same status and sent nowhere.
    let (frames, out) = send(&mut w, 1, msg(1, ROMEO, "hello"));
    assert_eq!(frames, [receipt(ReceiptStatus::Relayed)]);
    assert!(out.is_empty());

    // A receipt from someone else changes nothing; the recipient's makes it Delivered.
    let forged = Inbound::Receipt {
        from: JULIET.into(),
        to: ALICE.into(),
        id: vec![1; 16],
    };
    assert!(delivered_items(&inbound(&mut w, forged), 1).is_empty());
    let real = Inbound::Receipt {
        from: ROMEO.into(),
        to: ALICE.into(),
        id: vec![1; 16],
    };
    let late = LateReceipt {
        id: vec![1; 16],
        to: ROMEO.into(),
        status: ReceiptStatus::Delivered,
    };
    let actions = inbound(&mut w, real.clone());
    assert_eq!(delivered_items(&actions, 1), [InboxItem::Receipt(late)]);
    assert!(
        delivered_items(&inbound(&mut w, real), 1).is_empty(),
        "once"
    );
    let (frames, _) = send(&mut w, 1, msg(1, ROMEO, "hello"));
    assert_eq!(frames, [receipt(ReceiptStatus::Delivered)]);
}

#[test]
fn a_bounce_fails_the_message_late_and_other_content_is_refused_at_once() {
    let mut w = federated();
    w.login(1, ALICE);
    send(&mut w, 1, msg(2, ROMEO, "anyone?"));
    let bounce = Inbound::Failed {
        from: ROMEO.into(),
        to: ALICE.into(),
        id: vec![2; 16],
        code: ErrorCode::UNKNOWN_USER,
        text: "item-not-found".into(),
    };
    let late = LateReceipt {
        id: vec![2; 16],
        to: ROMEO.into(),
        status: ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER),
    };
    assert_eq!(
        delivered_items(&inbound(&mut w, bounce), 1),
        [InboxItem::Receipt(late)]
    );

    let mut picture = msg(3, ROMEO, "\u{89}PNG");
    picture.content_type = Some("image/png".into());
    let (frames, out) = send(&mut w, 1, picture);
    let unsupported = ReceiptStatus::Failed(ErrorCode::UNSUPPORTED_CONTENT);
    assert_eq!(frames, [receipt(unsupported)]);
    assert!(out.is_empty());
    let mut latin1 = msg(4, ROMEO, "caf\u{e9}");
    latin1.content_type = Some("text/plain;charset=iso-8859-1".into());
    assert_eq!(send(&mut w, 1, latin1).0, [receipt(unsupported)]);

    // Only the domain joined to XMPP speaks through the component.
    w.login(2, CAROL);
    let (frames, out) = send(&mut w, 2, msg(5, ROMEO, "hi"));
    assert_eq!(
        frames,
        [receipt(ReceiptStatus::Failed(ErrorCode::UNROUTABLE))]
    );
    assert!(out.is_empty());
}

#[test]
fn a_message_in_is_delivered_once_and_receipted_when_acknowledged() {
    let mut w = federated();
    w.login(1, ALICE);
    let actions = inbound(&mut w, remote_message(b"m-1", "wherefore", true));
    let items = delivered_items(&actions, 1);
    let [InboxItem::Message(got)] = items.as_slice() else {
        panic!("{actions:?}");
    };
    assert_eq!(
        (got.from.as_str(), got.body.as_slice()),
        (ROMEO, &b"wherefore"[..])
    );
    assert!(
        stanzas(&actions).is_empty(),
        "no receipt before the acknowledgement"
    );

    // The same id again: nothing new.
    let again = inbound(&mut w, remote_message(b"m-1", "wherefore", true));
    assert!(delivered_items(&again, 1).is_empty());

    let acked = w.frame(1, Up::Ack { upto: 1 });
    // To the resource that asked (XEP-0184).
    let expected = Outbound::Receipt {
        from: ALICE.into(),
        to: ROMEO_PHONE.into(),
        id: b"m-1".to_vec(),
    };
    assert_eq!(stanzas(&acked), std::slice::from_ref(&expected));
    // A resend after delivery gets the receipt again (the first may have been lost).
    let resent = inbound(&mut w, remote_message(b"m-1", "wherefore", true));
    assert_eq!(stanzas(&resent), [expected]);

    // Without a request, no receipt.
    inbound(&mut w, remote_message(b"m-2", "quiet", false));
    assert!(stanzas(&w.frame(1, Up::Ack { upto: 2 })).is_empty());
}

#[test]
fn remote_messages_the_gateway_cannot_take_bounce_with_a_reason() {
    let mut w = federated();
    // Errors go to the full JID: XMPP servers drop message errors sent to a bare one.
    let error = |code: ErrorCode| move |s: &Outbound| matches!(s, Outbound::Error { code: c, message: true, to, .. } if *c == code && to == ROMEO_PHONE);
    let mut stranger = remote_message(b"x", "hi", false);
    if let Inbound::Message { to, .. } = &mut stranger {
        *to = "nobody@example.com".into();
    }
    let out = stanzas(&inbound(&mut w, stranger));
    assert!(out.iter().any(error(ErrorCode::UNKNOWN_USER)), "{out:?}");

    let huge = "x".repeat(w.hub.config().body_max as usize + 1);
    let out = stanzas(&inbound(&mut w, remote_message(b"y", &huge, false)));
    assert!(out.iter().any(error(ErrorCode::TOO_LARGE)), "{out:?}");

    // Alice's inbox refuses Romeo.
    w.login(1, ALICE);
    let rules = Rules {
        inbox: vec![InboxRule {
            who: Who::User(ROMEO.into()),
            delivery: Delivery::Refuse,
        }],
        ..Rules::default()
    };
    w.frame(1, Up::SetRules { req: 9, rules });
    let actions = inbound(&mut w, remote_message(b"z", "let me in", false));
    assert!(stanzas(&actions).iter().any(error(ErrorCode::REFUSED)));
    assert!(delivered_items(&actions, 1).is_empty());
}

#[test]
fn watching_a_remote_user_waits_for_its_answer_and_then_follows_its_resources() {
    let mut w = federated();
    w.login(1, ALICE);
    let actions = w.frame(
        1,
        Up::Subscribe {
            req: 7,
            target: ROMEO.into(),
        },
    );
    assert_eq!(frames_to(&actions, 1), [Down::Pending { req: 7 }]);
    assert_eq!(
        stanzas(&actions),
        [out_sub(ALICE, ROMEO, SubKind::Subscribe)]
    );

    // Presence before the answer is not taken.
    let tuple = remote_tuple("balcony", Show::Away, Some("sighing"), 3);
    let early = Inbound::Presence {
        from: ROMEO.into(),
        to: ALICE.into(),
        tuple: Some(tuple.clone()),
        resource: "balcony".into(),
    };
    assert!(frames_to(&inbound(&mut w, early.clone()), 1).is_empty());

    let actions = inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribed));
    let frames = frames_to(&actions, 1);
    assert!(frames.contains(&Down::Subscription {
        target: ROMEO.into(),
        state: SubState::Active
    }));

    let actions = inbound(&mut w, early.clone());
    let docs: Vec<_> = frames_to(&actions, 1)
        .into_iter()
        .filter_map(|f| match f {
            Down::Notify { doc } => Some(doc),
            _ => None,
        })
        .collect();
    assert_eq!(docs.len(), 1, "{actions:?}");
    assert_eq!(docs[0].presentity, ROMEO);
    assert_eq!(docs[0].presence.tuples, [tuple]);
    // The same presence again (XMPP sends it once per local watcher): no change.
    assert!(frames_to(&inbound(&mut w, early), 1).is_empty());

    let gone = Inbound::Presence {
        from: ROMEO.into(),
        to: ALICE.into(),
        tuple: None,
        resource: "balcony".into(),
    };
    let actions = inbound(&mut w, gone);
    assert!(frames_to(&actions, 1).iter().any(|f| matches!(
        f,
        Down::Notify { doc } if doc.presence.tuples.len() == 1 && !doc.presence.is_open()
    )));

    // A fetch answers what the gateway holds, for a subscriber only.
    let fetched = w.frame(
        1,
        Up::Fetch {
            req: 8,
            target: ROMEO.into(),
        },
    );
    assert!(
        matches!(&frames_to(&fetched, 1)[..], [Down::Presence { req: 8, doc }] if doc.presentity == ROMEO)
    );
    w.login(2, "bob@example.com");
    let refused = w.frame(
        2,
        Up::Fetch {
            req: 8,
            target: ROMEO.into(),
        },
    );
    assert!(matches!(
        &frames_to(&refused, 2)[..],
        [Down::Fail {
            code: ErrorCode::REFUSED,
            ..
        }]
    ));

    // Romeo ends it; unsubscribing from Juliet's pending request tells Juliet.
    let actions = inbound(&mut w, sub(ROMEO, ALICE, SubKind::Unsubscribed));
    assert!(frames_to(&actions, 1).contains(&Down::Subscription {
        target: ROMEO.into(),
        state: SubState::Cancelled
    }));
    w.frame(
        1,
        Up::Subscribe {
            req: 7,
            target: JULIET.into(),
        },
    );
    let actions = w.frame(
        1,
        Up::Unsubscribe {
            req: 8,
            target: JULIET.into(),
        },
    );
    assert_eq!(
        stanzas(&actions),
        [out_sub(ALICE, JULIET, SubKind::Unsubscribe)]
    );
}

#[test]
fn a_refused_request_is_told_and_reconnecting_probes_each_remote_contact_once() {
    let mut w = federated();
    w.login(1, ALICE);
    w.login(2, "bob@example.com");
    for (conn, target) in [(1, ROMEO), (1, JULIET), (2, ROMEO)] {
        w.frame(
            conn,
            Up::Subscribe {
                req: 7,
                target: target.into(),
            },
        );
    }
    let actions = inbound(&mut w, sub(JULIET, ALICE, SubKind::Unsubscribed));
    assert!(frames_to(&actions, 1).contains(&Down::Subscription {
        target: JULIET.into(),
        state: SubState::Denied
    }));
    // A request to an address whose server does not answer fails; an error about an
    // address already granted changes nothing.
    w.frame(
        1,
        Up::Subscribe {
            req: 7,
            target: "ghost@nowhere.test".into(),
        },
    );
    let unreachable = |from: &str| Inbound::Unreachable {
        from: from.into(),
        to: ALICE.into(),
        code: ErrorCode::UNROUTABLE,
    };
    let actions = inbound(&mut w, unreachable("ghost@nowhere.test"));
    assert!(frames_to(&actions, 1).contains(&Down::Subscription {
        target: "ghost@nowhere.test".into(),
        state: SubState::Denied
    }));
    inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribed));
    assert!(frames_to(&inbound(&mut w, unreachable(ROMEO)), 1).is_empty());
    inbound(&mut w, sub(ROMEO, "bob@example.com", SubKind::Subscribed));
    w.hub.handle_federation_up(w.now, &mut w.store).unwrap();
    let probes = stanzas(&w.drain());
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert!(
        matches!(&probes[0], Outbound::Subscription { to, kind: SubKind::Probe, .. } if to == ROMEO)
    );
}

fn presence_to(out: &[Outbound], watcher: &str) -> Vec<Presence> {
    out.iter()
        .filter_map(|s| match s {
            Outbound::Presence { to, presence, .. } if to == watcher => Some(presence.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_remote_watcher_is_decided_by_the_rules_like_a_local_one() {
    let mut w = federated();
    w.login(1, ALICE);
    w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("reading"),
        },
    );
    // Allowed by default: subscribed, then the presence.
    let out = stanzas(&inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribe)));
    assert_eq!(out[0], out_sub(ALICE, ROMEO, SubKind::Subscribed));
    assert_eq!(presence_to(&out, ROMEO), [open("reading")]);
    // Asked again: the same answer, no second watcher.
    let again = stanzas(&inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribe)));
    assert_eq!(again[0], out_sub(ALICE, ROMEO, SubKind::Subscribed));
    assert_eq!(w.hub.watchers_of(ALICE), [ROMEO]);
    // Changes follow; a probe gets the current presence.
    let out = stanzas(&w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("writing"),
        },
    ));
    assert_eq!(presence_to(&out, ROMEO), [open("writing")]);
    let probe = Inbound::Subscription {
        from: ROMEO.into(),
        to: ALICE.into(),
        kind: SubKind::Probe,
    };
    assert_eq!(
        presence_to(&stanzas(&inbound(&mut w, probe)), ROMEO),
        [open("writing")]
    );
    // Going offline is told.
    let out = stanzas(&w.disconnect(1));
    let [closed] = presence_to(&out, ROMEO).try_into().unwrap();
    assert!(closed.tuples.iter().all(|t| t.basic == Basic::Closed));

    // Denied now: the subscription is cancelled with `unsubscribed`; a new request too.
    w.login(1, ALICE);
    let rules = Rules {
        presence: vec![PresenceRule {
            who: Who::Domain("xmpp.test".into()),
            decision: Decision::Deny,
            view: None,
            when: None,
        }],
        ..Rules::default()
    };
    let out = stanzas(&w.frame(1, Up::SetRules { req: 9, rules }));
    assert!(
        out.contains(&out_sub(ALICE, ROMEO, SubKind::Unsubscribed)),
        "{out:?}"
    );
    let out = stanzas(&inbound(&mut w, sub(JULIET, ALICE, SubKind::Subscribe)));
    assert_eq!(out, [out_sub(ALICE, JULIET, SubKind::Unsubscribed)]);
    // A probe from a stranger is told `unsubscribed` and sees nothing.
    let out = stanzas(&inbound(&mut w, sub(JULIET, ALICE, SubKind::Probe)));
    assert_eq!(out, [out_sub(ALICE, JULIET, SubKind::Unsubscribed)]);
    // Nobody by that name: `unsubscribed`.
    let out = stanzas(&inbound(
        &mut w,
        sub(ROMEO, "nobody@example.com", SubKind::Subscribe),
    ));
    assert_eq!(
        out,
        [out_sub("nobody@example.com", ROMEO, SubKind::Unsubscribed)]
    );
}

#[test]
fn ask_waits_for_the_principal_and_polite_block_looks_like_a_contact_never_online() {
    let mut w = federated();
    w.login(1, ALICE);
    w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("here"),
        },
    );
    let rules = Rules {
        presence: vec![
            PresenceRule {
                who: Who::User(ROMEO.into()),
                decision: Decision::Ask,
                view: None,
                when: None,
            },
            PresenceRule {
                who: Who::User(JULIET.into()),
                decision: Decision::Polite,
                view: None,
                when: None,
            },
        ],
        ..Rules::default()
    };
    w.frame(1, Up::SetRules { req: 9, rules });

    let actions = inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribe));
    assert!(stanzas(&actions).is_empty());
    assert_eq!(
        frames_to(&actions, 1),
        [Down::Asked {
            watcher: ROMEO.into()
        }]
    );
    let decided = w.frame(
        1,
        Up::Decide {
            req: 4,
            watcher: ROMEO.into(),
            decision: Decision::Allow,
        },
    );
    let out = stanzas(&decided);
    assert!(
        out.contains(&out_sub(ALICE, ROMEO, SubKind::Subscribed)),
        "{out:?}"
    );
    assert_eq!(presence_to(&out, ROMEO), [open("here")]);

    // Politely blocked: subscribed, and the presence of a contact that never published.
    let out = stanzas(&inbound(&mut w, sub(JULIET, ALICE, SubKind::Subscribe)));
    assert_eq!(out[0], out_sub(ALICE, JULIET, SubKind::Subscribed));
    assert_eq!(presence_to(&out, JULIET), [Presence::default()]);
    let out = stanzas(&w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("still here"),
        },
    ));
    assert!(
        presence_to(&out, JULIET).is_empty(),
        "never told of changes"
    );
    assert_eq!(presence_to(&out, ROMEO), [open("still here")]);
    let probe = stanzas(&inbound(&mut w, sub(JULIET, ALICE, SubKind::Probe)));
    assert_eq!(presence_to(&probe, JULIET), [Presence::default()]);
    // Not a watcher the principal is told of.
    assert_eq!(w.hub.watchers_of(ALICE), [JULIET, ROMEO]);
}

#[test]
fn the_outbox_keeps_only_the_latest_presence_per_watcher() {
    let mut w = federated();
    w.login(1, ALICE);
    inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribe));
    for note in ["a", "b", "c"] {
        w.frame(
            1,
            Up::Publish {
                req: 2,
                presence: open(note),
            },
        );
    }
    let waiting: Vec<Outbound> = w
        .store
        .fed_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(waiting[0], out_sub(ALICE, ROMEO, SubKind::Subscribed));
    assert_eq!(presence_to(&waiting, ROMEO), [open("c")]);
    let last = w.store.fed_after(0, 100).unwrap().last().unwrap().0;
    w.store.fed_remove(last).unwrap();
    assert!(w.store.fed_after(0, 100).unwrap().is_empty());
}

#[test]
fn remote_floods_are_limited_like_a_principal_of_the_domain_written_to() {
    let mut w = World::new();
    let mut config = w.hub.config().clone();
    config.federation = Some("example.com".into());
    for domain in &mut config.domains {
        domain.rates.messages_per_minute = 2;
        domain.rates.subscriptions_per_minute = 1;
        domain.rates.burst = 1;
    }
    w.hub = Hub::new(config);
    w.hub.load(w.now, &mut w.store).unwrap();
    w.login(1, ALICE);
    let delivered = |w: &mut World, id: &[u8]| {
        let actions = inbound(w, remote_message(id, "spam", false));
        (delivered_items(&actions, 1).len(), stanzas(&actions))
    };
    assert_eq!(delivered(&mut w, b"s1").0, 1);
    let (n, out) = delivered(&mut w, b"s2");
    assert_eq!(n, 0);
    assert!(
        matches!(
            &out[..],
            [Outbound::Error {
                code: ErrorCode::RATE_LIMITED,
                ..
            }]
        ),
        "{out:?}"
    );
    // Subscriptions: Romeo's first is answered, his next new one in the same minute
    // dropped (another remote user has its own bucket).
    const BOB: &str = "bob@example.com";
    let first = stanzas(&inbound(&mut w, sub(ROMEO, ALICE, SubKind::Subscribe)));
    assert_eq!(first[0], out_sub(ALICE, ROMEO, SubKind::Subscribed));
    assert!(stanzas(&inbound(&mut w, sub(ROMEO, BOB, SubKind::Subscribe))).is_empty());
    let juliet = stanzas(&inbound(&mut w, sub(JULIET, BOB, SubKind::Subscribe)));
    assert_eq!(juliet[0], out_sub(BOB, JULIET, SubKind::Subscribed));
    // A minute later Romeo goes through again.
    w.now += 61_000;
    assert_eq!(delivered(&mut w, b"s3").0, 1);
    let later = stanzas(&inbound(&mut w, sub(ROMEO, BOB, SubKind::Subscribe)));
    assert_eq!(later[0], out_sub(BOB, ROMEO, SubKind::Subscribed));
}
