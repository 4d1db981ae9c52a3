//! Federation with XMPP through a real XMPP server (issue 7, docs/federation.md): a
//! Prosody 0.12 on loopback with the gateway as its XEP-0114 component for
//! `example.com`, XMPP users of `xmpp.test` played by slixmpp processes
//! (`tests/xmpp/peer.py`), tern users by `tern-client` over QUIC. Every stanza is real:
//! it crosses Prosody's client and component streams, the bridge, the hub and its
//! durable outbox. Each test has its own Prosody and gateway.
//!
//! Where a test must show that something does *not* happen, it first passes a barrier
//! ([`barrier`]): the XMPP user sends a tern user a message and waits for the answer,
//! and since both directions keep their order (Prosody is single-threaded, the component
//! stream is one TCP connection, the hub handles stanzas in order and sends from one
//! outbox), everything the gateway sent before has then arrived.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tern_client::{
    Availability, Basic, Client, Decision, ErrorCode, Event, Ext, Message, Presence, PresenceDoc,
    PresenceRule, ReceiptStatus, Rules, SubState, SubscribeOutcome, Tuple, Who,
};
use tern_gateway_core::federation::xmpp_id;
use tern_tests::Harness;
use tern_tests::xmpp::{PATIENTLY, Peer, Prosody, bare, from_bare, kind, presence_from, resource};

const ALICE: &str = "alice@example.com";
const MARK: &str = "mark@example.com";
const QUIET: Duration = Duration::from_millis(700);

/// A Prosody and a gateway joined to it as `example.com`, its component connected.
async fn world() -> (Prosody, Harness) {
    let xmpp = Prosody::start().await;
    let config = xmpp.xmpp_config();
    let gw = Harness::start_with(|c| c.xmpp = Some(config)).await;
    xmpp.wait_component(1).await;
    (xmpp, gw)
}

/// Waits up to [`PATIENTLY`] for the first tern event `pick` accepts; returns it and
/// the events skipped on the way.
async fn wait_event<T>(
    client: &Client,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> (T, Vec<Event>) {
    let mut skipped = Vec::new();
    let wait = async {
        loop {
            match client.next_event().await {
                Some(event) => match pick(&event) {
                    Some(found) => return found,
                    None => skipped.push(event),
                },
                None => panic!(
                    "{}: the event stream ended waiting for {what}",
                    client.user()
                ),
            }
        }
    };
    match tokio::time::timeout(PATIENTLY, wait).await {
        Ok(found) => (found, skipped),
        Err(_) => panic!(
            "{}: no {what} within {PATIENTLY:?}; events seen meanwhile: {skipped:#?}",
            client.user()
        ),
    }
}

/// Waits for a presence document of `presentity` that `want` accepts.
async fn wait_presence(
    client: &Client,
    presentity: &str,
    what: &str,
    want: impl Fn(&PresenceDoc) -> bool,
) -> PresenceDoc {
    let what = format!("{presentity}'s presence: {what}");
    wait_event(client, &what, |e| match e {
        Event::Presence(doc) if doc.presentity == presentity && want(doc) => Some(doc.clone()),
        _ => None,
    })
    .await
    .0
}

/// Waits for a message whose body is `body`; returns it and the events skipped.
async fn wait_message(client: &Client, body: &str) -> (tern_client::Incoming, Vec<Event>) {
    let what = format!("the message {body:?}");
    wait_event(client, &what, |e| match e {
        Event::Message { message, .. } if message.body == body.as_bytes() => Some(message.clone()),
        _ => None,
    })
    .await
}

/// Everything the gateway sent `peer` before it handled the barrier has arrived, and
/// `via` has handled everything `peer` sent before it: `peer` sends the tern user `via`
/// a message, `via` answers, `peer` gets the answer. Returns the events `via` skipped.
async fn barrier(peer: &mut Peer, via: &Client, tag: &str) -> Vec<Event> {
    let ping = format!("barrier {tag}");
    let pong = format!("barrier {tag} answered");
    peer.cmd(
        json!({"cmd": "send", "to": via.user(), "body": ping, "id": format!("barrier-{tag}")}),
    )
    .await;
    let (_, skipped) = wait_message(via, &ping).await;
    via.acknowledge();
    let sent = via
        .send(peer.bare().to_string(), pong.clone().into_bytes(), None)
        .await
        .expect("the barrier's answer is accepted");
    assert_eq!(sent.status, ReceiptStatus::Relayed, "the barrier's answer");
    peer.expect("the barrier's answer", |e| {
        kind(e) == "message" && e["body"] == pong.as_str()
    })
    .await;
    skipped
}

/// A one-tuple presence, `phone`, OPEN, with the XMPP priority as an extension.
fn presence(availability: Availability, note: &str, priority: Option<&str>) -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: Some(availability),
            contact: None,
            note: Some(note.into()),
            at: None,
            ext: priority
                .map(|p| {
                    vec![Ext {
                        key: "priority".into(),
                        value: p.as_bytes().to_vec(),
                    }]
                })
                .unwrap_or_default(),
        }],
        card: Vec::new(),
    }
}

fn presence_rule(who: &str, decision: Decision) -> Rules {
    Rules {
        presence: vec![PresenceRule {
            who: Who::User(who.into()),
            decision,
            view: None,
            when: None,
        }],
        ..Rules::default()
    }
}

/// A presence stanza's fields: show, status, priority.
fn shown(e: &Value) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        e["show"].as_str(),
        e["status"].as_str(),
        e["priority"].as_str(),
    )
}

/// The tuple of a remote resource in a document.
fn tuple<'d>(doc: &'d PresenceDoc, resource: &str) -> Option<&'d Tuple> {
    doc.presence.tuples.iter().find(|t| t.id == resource)
}

fn priority_of(t: &Tuple) -> Option<String> {
    t.ext
        .iter()
        .find(|e| e.key == "priority")
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
}

/// The XMPP user's roster entry for `jid`: (subscription, ask).
async fn roster_entry(peer: &mut Peer, jid: &str) -> (Option<String>, Option<String>) {
    peer.cmd(json!({"cmd": "roster"})).await;
    let roster = peer.expect("the roster", |e| kind(e) == "roster").await;
    let item = &roster["items"][jid];
    let text = |v: &Value| v.as_str().map(String::from);
    (text(&item["subscription"]), text(&item["ask"]))
}

fn message(id: &str, to: &str, body: &str) -> Message {
    Message {
        id: id.as_bytes().to_vec(),
        to: to.into(),
        reply_to: None,
        content_type: None,
        body: body.as_bytes().to_vec(),
    }
}

async fn relay(client: &Client, msg: Message) {
    let what = format!("{msg:?}");
    let sent = client
        .send_message(msg)
        .await
        .expect("the send is answered");
    assert_eq!(sent.status, ReceiptStatus::Relayed, "{what}");
}

// ---- An XMPP user watches a tern user ------------------------------------------------

/// An XMPP user subscribes to a tern user (rules: the default, allow) and sees every
/// change of its presence (show, status, priority), its current presence again when it
/// logs in anew (Prosody's probe), then unavailable when the tern client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    alice
        .publish(presence(Availability::AWAY, "in a meeting", None))
        .await
        .unwrap();
    let x = xmpp.add_user("xavier").await;
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    xavier.cmd(json!({"cmd": "subscribe", "to": ALICE})).await;
    let subscribed = xavier
        .expect("`subscribed` from Alice", |e| {
            presence_from(e, ALICE, "subscribed")
        })
        .await;
    assert_eq!(subscribed["from"], ALICE, "answered from Alice's bare JID");
    let first = xavier
        .expect("Alice's presence", |e| presence_from(e, ALICE, "available"))
        .await;
    assert_eq!(shown(&first), (Some("away"), Some("in a meeting"), None));
    let (watcher, _) = wait_event(&alice, "Watched", |e| match e {
        Event::Watched { watcher } => Some(watcher.clone()),
        _ => None,
    })
    .await;
    assert_eq!(watcher, x.jid, "Alice learns of her XMPP watcher");
    assert_eq!(
        roster_entry(&mut xavier, ALICE).await,
        (Some("to".into()), None),
        "Prosody records the subscription"
    );

    let changes = [
        (Availability::DND, "do not disturb", Some("7"), Some("dnd")),
        (Availability::AVAILABLE, "back", None, None),
        (
            Availability::EXTENDED_AWAY,
            "on holiday",
            Some("-3"),
            Some("xa"),
        ),
    ];
    for (availability, note, priority, show) in changes {
        alice
            .publish(presence(availability, note, priority))
            .await
            .unwrap();
        let what = format!("Alice's presence {note:?}");
        let got = xavier
            .expect(&what, |e| {
                presence_from(e, ALICE, "available") && e["status"] == note
            })
            .await;
        assert_eq!(shown(&got), (show, Some(note), priority), "{got}");
    }

    // Away and back: Prosody probes Alice for Xavier's new session (RFC 6121 4.3), and
    // the gateway answers with what Alice says now.
    xavier.quit().await;
    alice
        .publish(presence(Availability::BUSY, "changed meanwhile", None))
        .await
        .unwrap();
    let mut xavier = Peer::login(&xmpp, &x, "phone").await;
    let got = xavier
        .expect("Alice's presence after the probe", |e| {
            presence_from(e, ALICE, "available")
        })
        .await;
    assert_eq!(shown(&got), (Some("dnd"), Some("changed meanwhile"), None));

    alice.close().await;
    let gone = xavier
        .expect("Alice unavailable", |e| {
            presence_from(e, ALICE, "unavailable")
        })
        .await;
    assert_eq!(gone["show"], Value::Null, "{gone}");
}

// ---- A tern user watches an XMPP user -------------------------------------------------

/// A tern user asks for an XMPP user's presence; the XMPP user approves: the
/// subscription turns Active, and the XMPP user's presence arrives as a document with
/// one tuple per resource (availability from show, note from status, the priority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_subscribes_to_an_xmpp_user_who_approves() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let y = xmpp.add_user("yvonne").await;
    let mut laptop = Peer::login(&xmpp, &y, "laptop").await;
    laptop
        .cmd(json!({"cmd": "presence", "show": "away", "status": "lunch", "priority": 5}))
        .await;

    let outcome = alice.subscribe_request(y.jid.clone()).await.unwrap();
    assert!(matches!(outcome, SubscribeOutcome::Pending), "{outcome:?}");
    let ask = laptop
        .expect("Alice's request", |e| presence_from(e, ALICE, "subscribe"))
        .await;
    assert_eq!(
        ask["from"], ALICE,
        "a request comes from a bare JID (RFC 6121 3.1.2)"
    );
    laptop.cmd(json!({"cmd": "approve", "to": ALICE})).await;
    let (state, _) = wait_event(&alice, "the request's outcome", |e| match e {
        Event::SubscriptionChanged { target, state } if *target == y.jid => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(state, SubState::Active);

    let doc = wait_presence(&alice, &y.jid, "the laptop", |d| {
        tuple(d, "laptop").is_some()
    })
    .await;
    let t = tuple(&doc, "laptop").unwrap();
    assert_eq!(t.basic, Basic::Open);
    assert_eq!(t.availability, Some(Availability::AWAY));
    assert_eq!(t.note.as_deref(), Some("lunch"));
    assert_eq!(priority_of(t).as_deref(), Some("5"));
    assert_eq!(doc.presence.tuples.len(), 1, "{doc:?}");

    laptop
        .cmd(json!({"cmd": "presence", "show": "dnd", "status": "busy", "priority": 5}))
        .await;
    let doc = wait_presence(&alice, &y.jid, "the laptop busy", |d| {
        tuple(d, "laptop").is_some_and(|t| t.note.as_deref() == Some("busy"))
    })
    .await;
    assert_eq!(
        tuple(&doc, "laptop").unwrap().availability,
        Some(Availability::DND)
    );

    // A second resource is a second tuple.
    let phone = Peer::login(&xmpp, &y, "phone").await;
    let doc = wait_presence(&alice, &y.jid, "the phone too", |d| {
        tuple(d, "phone").is_some()
    })
    .await;
    let t = tuple(&doc, "phone").unwrap();
    assert_eq!(
        (t.basic, t.availability, t.note.as_deref(), priority_of(t)),
        (Basic::Open, Some(Availability::AVAILABLE), None, None)
    );
    assert!(tuple(&doc, "laptop").is_some(), "{doc:?}");

    phone.quit().await;
    let doc = wait_presence(&alice, &y.jid, "the phone gone", |d| {
        tuple(d, "phone").is_none()
    })
    .await;
    assert_eq!(
        doc.presence.tuples.len(),
        1,
        "only the laptop is left: {doc:?}"
    );
    laptop.cmd(json!({"cmd": "unavailable"})).await;
    let doc = wait_presence(&alice, &y.jid, "nothing open", |d| !d.presence.is_open()).await;
    assert!(
        doc.presence.tuples.iter().all(|t| t.basic != Basic::Open),
        "{doc:?}"
    );
}

/// The XMPP user refuses: the tern user is told Denied, and nothing is left of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_subscribes_to_an_xmpp_user_who_denies() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let z = xmpp.add_user("zoe").await;
    let mut zoe = Peer::login(&xmpp, &z, "desk").await;

    let outcome = alice.subscribe_request(z.jid.clone()).await.unwrap();
    assert!(matches!(outcome, SubscribeOutcome::Pending), "{outcome:?}");
    zoe.expect("Alice's request", |e| presence_from(e, ALICE, "subscribe"))
        .await;
    zoe.cmd(json!({"cmd": "deny", "to": ALICE})).await;
    let (state, skipped) = wait_event(&alice, "the request's outcome", |e| match e {
        Event::SubscriptionChanged { target, state } if *target == z.jid => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(state, SubState::Denied);
    assert!(
        !skipped.iter().any(|e| matches!(e, Event::Presence(_))),
        "{skipped:?}"
    );
    let mine = alice.subscriptions(false).await.unwrap();
    assert!(mine.iter().all(|s| s.who != z.jid), "{mine:?}");
    assert_eq!(alice.presence(z.jid.clone()), None);
}

/// The XMPP user never answers (a polite block on the XMPP side): the tern
/// subscription stays pending and no presence arrives, whatever the XMPP user does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_subscribes_to_an_xmpp_user_who_never_answers() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let w = xmpp.add_user("walter").await;
    let mut walter = Peer::login(&xmpp, &w, "desk").await;

    let outcome = alice.subscribe_request(w.jid.clone()).await.unwrap();
    assert!(matches!(outcome, SubscribeOutcome::Pending), "{outcome:?}");
    walter
        .expect("Alice's request", |e| presence_from(e, ALICE, "subscribe"))
        .await;
    walter
        .cmd(json!({"cmd": "presence", "show": "chat", "status": "talk to me"}))
        .await;
    walter
        .cmd(json!({"cmd": "unavailable", "status": "gone"}))
        .await;
    walter
        .cmd(json!({"cmd": "presence", "status": "back"}))
        .await;
    let skipped = barrier(&mut walter, &alice, "1").await;
    let later = tern_tests::events_within(&alice, QUIET).await;
    let about_walter = |e: &&Event| match e {
        Event::Presence(doc) => doc.presentity == w.jid,
        Event::SubscriptionChanged { target, .. } => *target == w.jid,
        _ => false,
    };
    let told: Vec<&Event> = skipped.iter().chain(&later).filter(about_walter).collect();
    assert!(told.is_empty(), "Alice was told of Walter: {told:?}");
    let mine = alice.subscriptions(false).await.unwrap();
    let entry = mine.iter().find(|s| s.who == w.jid);
    assert_eq!(entry.map(|s| s.state), Some(SubState::Pending), "{mine:?}");
    assert_eq!(alice.presence(w.jid.clone()), None);
}

// ---- The tern user's rules decide an XMPP user's request ------------------------------

/// Rules that deny the XMPP user: it gets `unsubscribed`, never `subscribed` nor
/// presence; Prosody's roster keeps nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_whose_rules_deny_answers_unsubscribed() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    alice
        .set_rules(presence_rule(&x.jid, Decision::Deny))
        .await
        .unwrap();
    alice
        .publish(presence(Availability::AVAILABLE, "here", None))
        .await
        .unwrap();
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    xavier.cmd(json!({"cmd": "subscribe", "to": ALICE})).await;
    xavier
        .expect("`unsubscribed` from Alice", |e| {
            presence_from(e, ALICE, "unsubscribed")
        })
        .await;
    let skipped = barrier(&mut xavier, &alice, "1").await;
    let from_alice: Vec<&Value> = xavier
        .history()
        .iter()
        .filter(|e| from_bare(e, "presence", ALICE))
        .collect();
    assert_eq!(from_alice.len(), 1, "only `unsubscribed`: {from_alice:#?}");
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, Event::Watched { .. } | Event::Asked { .. })),
        "{skipped:?}"
    );
    let (subscription, ask) = roster_entry(&mut xavier, ALICE).await;
    assert_eq!(ask, None, "nothing pending");
    assert!(
        matches!(subscription.as_deref(), None | Some("none")),
        "{subscription:?}"
    );
}

/// Rules that say ask: the tern user is asked, allows, and the XMPP user gets
/// `subscribed` and the presence; nothing before the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_asked_about_an_xmpp_user_allows_it() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    alice
        .set_rules(presence_rule(&x.jid, Decision::Ask))
        .await
        .unwrap();
    alice
        .publish(presence(Availability::AVAILABLE, "at home", None))
        .await
        .unwrap();
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    xavier.cmd(json!({"cmd": "subscribe", "to": ALICE})).await;
    let (asker, _) = wait_event(&alice, "Asked", |e| match e {
        Event::Asked { watcher } => Some(watcher.clone()),
        _ => None,
    })
    .await;
    assert_eq!(asker, x.jid);
    let incoming = alice.subscriptions(true).await.unwrap();
    let entry = incoming.iter().find(|s| s.who == x.jid);
    assert_eq!(
        entry.map(|s| s.state),
        Some(SubState::Pending),
        "{incoming:?}"
    );
    barrier(&mut xavier, &alice, "1").await;
    let early: Vec<&Value> = xavier
        .history()
        .iter()
        .filter(|e| from_bare(e, "presence", ALICE))
        .collect();
    assert!(early.is_empty(), "nothing before Alice decides: {early:#?}");

    alice.decide(x.jid.clone(), Decision::Allow).await.unwrap();
    xavier
        .expect("`subscribed` from Alice", |e| {
            presence_from(e, ALICE, "subscribed")
        })
        .await;
    let got = xavier
        .expect("Alice's presence", |e| presence_from(e, ALICE, "available"))
        .await;
    assert_eq!(shown(&got), (None, Some("at home"), None));
    let incoming = alice.subscriptions(true).await.unwrap();
    let entry = incoming.iter().find(|s| s.who == x.jid);
    assert_eq!(
        entry.map(|s| s.state),
        Some(SubState::Active),
        "{incoming:?}"
    );
}

/// Polite block (RFC 2779 5.1.15) of an XMPP watcher: it sees exactly what an XMPP
/// user sees for an accepted subscription to a tern contact that never came online,
/// stanza by stanza, and never anything of the blocker's later changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_politely_blocked_xmpp_watcher_sees_a_contact_that_never_comes_online() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let mark = gw.user(MARK).await;
    // Dave exists and never connects.
    gw.add_user("dave@example.com");
    let x = xmpp.add_user("xavier").await;
    let y = xmpp.add_user("yann").await;
    alice
        .set_rules(presence_rule(&x.jid, Decision::Polite))
        .await
        .unwrap();
    alice
        .publish(presence(Availability::AVAILABLE, "at work", Some("1")))
        .await
        .unwrap();
    let mut blocked = Peer::login(&xmpp, &x, "laptop").await;
    let mut silent = Peer::login(&xmpp, &y, "laptop").await;

    blocked.cmd(json!({"cmd": "subscribe", "to": ALICE})).await;
    silent
        .cmd(json!({"cmd": "subscribe", "to": "dave@example.com"}))
        .await;
    blocked
        .expect("`subscribed` from Alice", |e| {
            presence_from(e, ALICE, "subscribed")
        })
        .await;
    silent
        .expect("`subscribed` from Dave", |e| {
            presence_from(e, "dave@example.com", "subscribed")
        })
        .await;
    barrier(&mut blocked, &mark, "blocked").await;
    barrier(&mut silent, &mark, "silent").await;

    // Every presence stanza from the contact, as (type, show, status, priority,
    // resource): the two streams are the same.
    let transcript = |peer: &Peer, contact: &str| -> Vec<[Option<String>; 5]> {
        peer.history()
            .iter()
            .filter(|e| from_bare(e, "presence", contact))
            .map(|e| {
                let text = |k: &str| e[k].as_str().map(String::from);
                let from = e["from"].as_str().unwrap_or("");
                [
                    text("type"),
                    text("show"),
                    text("status"),
                    text("priority"),
                    resource(from).map(String::from),
                ]
            })
            .collect()
    };
    let seen_blocked = transcript(&blocked, ALICE);
    let seen_silent = transcript(&silent, "dave@example.com");
    assert_eq!(
        seen_blocked, seen_silent,
        "the blocked watcher's stanzas differ from an accepted watcher's of a silent contact"
    );
    assert_eq!(seen_blocked[0][0].as_deref(), Some("subscribed"));
    assert!(
        seen_blocked
            .iter()
            .all(|s| s[0].as_deref() != Some("available")),
        "{seen_blocked:?}"
    );
    assert_eq!(
        roster_entry(&mut blocked, ALICE).await,
        roster_entry(&mut silent, "dave@example.com").await,
        "the two rosters say the same"
    );

    // Alice changes and leaves; the blocked watcher never hears of it.
    let before = blocked.history().len();
    alice
        .publish(presence(Availability::BUSY, "in a meeting", Some("2")))
        .await
        .unwrap();
    alice
        .publish(presence(Availability::AWAY, "gone home", None))
        .await
        .unwrap();
    alice.close().await;
    barrier(&mut blocked, &mark, "after").await;
    let leaked: Vec<&Value> = blocked.history()[before..]
        .iter()
        .filter(|e| from_bare(e, "presence", ALICE))
        .collect();
    assert!(
        leaked.is_empty(),
        "the blocked watcher saw Alice: {leaked:#?}"
    );
}

// ---- Messages ------------------------------------------------------------------------

/// Messages both ways with their ids and receipts: tern → XMPP is answered Relayed,
/// carries the tern id as origin-id and asks for a receipt, which turns into a late
/// Delivered receipt; XMPP → tern reaches the client and, once the client has it, the
/// XMPP sender gets its XEP-0184 receipt. A bounce turns into Failed; a body XMPP
/// cannot carry is refused before it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_both_ways_with_ids_and_receipts() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    // tern → XMPP, with the receipt coming back.
    let text = "hello <xmpp> & \"friends\" é 😀";
    relay(&alice, message("tern-1", &x.jid, text)).await;
    let got = xavier
        .expect("Alice's message", |e| from_bare(e, "message", ALICE))
        .await;
    assert_eq!(got["body"], text, "{got}");
    assert_eq!(got["origin_id"], "tern-1", "{got}");
    assert_eq!(got["id"], "tern-1", "{got}");
    assert_eq!(got["request"], true, "a receipt is asked for: {got}");
    let to = got["from"].as_str().unwrap().to_string();
    xavier
        .cmd(json!({"cmd": "receipt", "to": to, "id": "tern-1"}))
        .await;
    let (late, _) = wait_event(&alice, "the late receipt", |e| match e {
        Event::Receipt { receipt, .. } => Some(receipt.clone()),
        _ => None,
    })
    .await;
    assert_eq!(late.id, b"tern-1");
    assert_eq!(late.to, x.jid);
    assert_eq!(late.status, ReceiptStatus::Delivered);

    // A random id goes out as its XMPP form.
    let sent = alice
        .send(x.jid.clone(), b"second".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(sent.status, ReceiptStatus::Relayed);
    let got = xavier
        .expect("the second message", |e| {
            kind(e) == "message" && e["body"] == "second"
        })
        .await;
    assert_eq!(got["origin_id"], xmpp_id(&sent.id).as_str(), "{got}");

    // XMPP → tern, with a receipt asked for.
    xavier
        .cmd(
            json!({"cmd": "send", "to": ALICE, "id": "x-1", "body": "hello tern", "receipt": true}),
        )
        .await;
    let (incoming, _) = wait_message(&alice, "hello tern").await;
    assert_eq!(incoming.from, x.jid, "the sender's bare JID");
    assert_eq!(incoming.to, ALICE);
    assert_eq!(incoming.id, b"x-1");
    assert_eq!(incoming.content_type, None);
    alice.acknowledge();
    let receipt = xavier
        .expect("the receipt for x-1", |e| from_bare(e, "receipt", ALICE))
        .await;
    assert_eq!(receipt["id"], "x-1", "{receipt}");

    // A message the XMPP server bounces (no such account): Failed, late.
    relay(&alice, message("tern-2", "ghost@xmpp.test", "anyone?")).await;
    let (late, _) = wait_event(&alice, "the bounce", |e| match e {
        Event::Receipt { receipt, .. } if receipt.id == b"tern-2" => Some(receipt.clone()),
        _ => None,
    })
    .await;
    assert_eq!(late.to, "ghost@xmpp.test");
    assert!(
        matches!(late.status, ReceiptStatus::Failed(_)),
        "{:?}",
        late.status
    );

    // Not text/plain: refused with a reason, nothing sent.
    let mut png = message("tern-3", &x.jid, "\u{89}PNG");
    png.content_type = Some("image/png".into());
    let sent = alice.send_message(png).await.unwrap();
    assert_eq!(
        sent.status,
        ReceiptStatus::Failed(ErrorCode::UNSUPPORTED_CONTENT)
    );
    barrier(&mut xavier, &alice, "1").await;
    let pngs: Vec<&Value> = xavier
        .history()
        .iter()
        .filter(|e| kind(e) == "message" && e["id"] == "tern-3")
        .collect();
    assert!(pngs.is_empty(), "{pngs:#?}");
}

/// A resent message is delivered once: the XMPP user sends the same id twice, the
/// tern client gets it once; a tern client resends an id, the XMPP user sees it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_is_delivered_once_both_ways() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;

    for _ in 0..2 {
        xavier
            .cmd(
                json!({"cmd": "send", "to": ALICE, "id": "dup-1", "body": "once", "receipt": true}),
            )
            .await;
    }
    xavier
        .cmd(json!({"cmd": "send", "to": ALICE, "id": "dup-2", "body": "then this"}))
        .await;
    let (_, skipped) = wait_message(&alice, "then this").await;
    let copies = skipped
        .iter()
        .filter(|e| matches!(e, Event::Message { message, .. } if message.id == b"dup-1"))
        .count();
    assert_eq!(copies, 1, "dup-1 delivered once: {skipped:#?}");
    let later = tern_tests::events_within(&alice, QUIET).await;
    assert!(
        !later.iter().any(|e| matches!(e, Event::Message { .. })),
        "{later:#?}"
    );

    for _ in 0..2 {
        relay(&alice, message("tern-dup", &x.jid, "only once")).await;
    }
    relay(&alice, message("tern-next", &x.jid, "and then this")).await;
    xavier
        .expect("the next message", |e| {
            kind(e) == "message" && e["body"] == "and then this"
        })
        .await;
    barrier(&mut xavier, &alice, "1").await;
    let copies: Vec<&Value> = xavier
        .history()
        .iter()
        .filter(|e| kind(e) == "message" && e["origin_id"] == "tern-dup")
        .collect();
    assert_eq!(copies.len(), 1, "tern-dup relayed once: {copies:#?}");
}

// ---- The XMPP server restarts ---------------------------------------------------------

/// Prosody stops and starts again while a tern user keeps sending to an XMPP user
/// (whose client Prosody disconnects, and who logs in again): every message arrives.
///
/// The bridge removes a stanza from its durable outbox only once the XMPP server has
/// answered a ping sent after it (gateway/server/src/xmpp/mod.rs); stanzas written
/// before the server went away without that answer are sent again, so one may arrive
/// twice (with the same id) but none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_server_restarts_mid_traffic_and_nothing_is_lost() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("xavier").await;
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;
    let mut ids: Vec<String> = Vec::new();
    let send = |n: usize| message(&format!("r-{n}"), &x.jid, &format!("message {n}"));

    // Before: delivered at once.
    for n in 0..3 {
        relay(&alice, send(n)).await;
        ids.push(format!("r-{n}"));
    }
    xavier
        .expect("message 2", |e| {
            kind(e) == "message" && e["origin_id"] == "r-2"
        })
        .await;

    // During the stop, and while the server is away.
    let stopping = xmpp.stop();
    let sending = async {
        for n in 3..13 {
            relay(&alice, send(n)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::join!(stopping, sending);
    ids.extend((3..13).map(|n| format!("r-{n}")));
    xavier
        .expect("the stream's end", |e| kind(e) == "closed")
        .await;
    for n in 13..20 {
        relay(&alice, send(n)).await;
        ids.push(format!("r-{n}"));
    }

    // Back: the bridge reconnects, the user logs in again.
    xmpp.start_again().await;
    xmpp.wait_component(2).await;
    let first = xavier.history().to_vec();
    drop(xavier);
    let mut xavier = Peer::login(&xmpp, &x, "laptop").await;
    for n in 20..23 {
        relay(&alice, send(n)).await;
        ids.push(format!("r-{n}"));
    }
    let is = |e: &Value, id: &str| from_bare(e, "message", ALICE) && e["origin_id"] == id;
    for id in &ids {
        if !first.iter().any(|e| is(e, id)) {
            let what = format!("message {id}");
            xavier.expect(&what, |e| is(e, id)).await;
        }
    }
    // Anything still on its way has arrived after this.
    barrier(&mut xavier, &alice, "1").await;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for e in first.iter().chain(xavier.history()) {
        let id = e["origin_id"].as_str().unwrap_or("");
        if let Some(n) = id.strip_prefix("r-")
            && from_bare(e, "message", ALICE)
        {
            *count.entry(id.to_string()).or_default() += 1;
            assert_eq!(e["body"], format!("message {n}").as_str(), "{e}");
        }
    }
    for id in &ids {
        let seen = count.get(id).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&seen),
            "{id} arrived {seen} times: {count:?}"
        );
    }
    let twice: Vec<&String> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    eprintln!("sent again after the restart and seen twice: {twice:?}");

    // And the other way.
    xavier
        .cmd(json!({"cmd": "send", "to": ALICE, "id": "x-after", "body": "after the restart"}))
        .await;
    wait_message(&alice, "after the restart").await;
}

// ---- Hostile input from the XMPP side --------------------------------------------------

/// A message the gateway cannot accept goes back to the XMPP sender as a stanza error
/// with its id, to the resource that sent it: to a tern user who does not exist
/// (`service-unavailable`, RFC 6121 8.5.1), with a body over
/// the gateway's limit (`policy-violation`); and the gateway goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_xmpp_messages_come_back_as_stanza_errors() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("mallory").await;
    let mut mallory = Peer::login(&xmpp, &x, "lab").await;
    let error_for = |id: &'static str| move |e: &Value| kind(e) == "error" && e["id"] == id;

    mallory
        .cmd(json!({"cmd": "send", "to": "nobody@example.com", "id": "h-1", "body": "hi"}))
        .await;
    let err = mallory.expect("the error for h-1", error_for("h-1")).await;
    assert_eq!(err["stanza"], "message", "{err}");
    assert_eq!(err["from"], "nobody@example.com", "{err}");
    assert_eq!(err["condition"], "service-unavailable", "{err}");
    assert_eq!(err["error_type"], "cancel", "{err}");

    // Over the default body_max, 16 KiB (Prosody passes stanzas up to 256 KiB).
    let huge = "x".repeat(20 * 1024);
    mallory
        .cmd(json!({"cmd": "send", "to": ALICE, "id": "h-2", "body": huge}))
        .await;
    let err = mallory.expect("the error for h-2", error_for("h-2")).await;
    assert_eq!(err["stanza"], "message", "{err}");
    assert_eq!(bare(err["from"].as_str().unwrap_or("")), ALICE, "{err}");
    assert_eq!(err["condition"], "policy-violation", "{err}");
    assert_eq!(err["error_type"], "modify", "{err}");

    mallory
        .cmd(json!({"cmd": "send", "to": ALICE, "id": "h-3", "body": "a small one"}))
        .await;
    let (_, before) = wait_message(&alice, "a small one").await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Message { .. })),
        "the oversize body was not delivered: {before:#?}"
    );
}

/// Malformed or hostile stanzas from an XMPP client are answered cleanly or ignored,
/// and never crash the gateway nor cost it its component stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stanzas_never_crash_the_gateway_nor_end_its_stream() {
    let (xmpp, gw) = world().await;
    let alice = gw.user(ALICE).await;
    let x = xmpp.add_user("mallory").await;
    let mut mallory = Peer::login(&xmpp, &x, "lab").await;
    let raw = |xml: String| json!({"cmd": "send_raw", "xml": xml});
    let error_for = |id: &'static str| move |e: &Value| kind(e) == "error" && e["id"] == id;

    // To nobody, and a body over the limit (their errors are the test above's).
    mallory
        .cmd(json!({"cmd": "send", "to": "nobody@example.com", "id": "h-1", "body": "hi"}))
        .await;
    let huge = "x".repeat(20 * 1024);
    mallory
        .cmd(json!({"cmd": "send", "to": ALICE, "id": "h-2", "body": huge}))
        .await;
    // An unknown payload namespace: the body is still delivered.
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' id='h-3' type='chat'><body>with a gadget</body>\
             <gadget xmlns='urn:example:unknown' size='9'><part>1</part></gadget></message>"
        )))
        .await;
    // Two bodies in different languages, an id longer than tern's, no id at all.
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' id='h-4' type='chat'><body>in english</body>\
             <body xml:lang='fr'>en français</body></message>"
        )))
        .await;
    let long_id = "L".repeat(300);
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' id='{long_id}' type='chat'><body>a long id</body></message>"
        )))
        .await;
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' type='chat'><body>no id</body></message>"
        )))
        .await;
    // A message without a body (a chat state), an error bounce and a receipt for
    // nothing Alice sent, presence with nonsense in it, an unsolicited iq result, a
    // subscription to nobody.
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' id='h-5' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )))
        .await;
    mallory
        .cmd(raw(format!(
            "<message to='{ALICE}' id='h-6' type='error'><body>bounced</body>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )))
        .await;
    mallory
        .cmd(json!({"cmd": "receipt", "to": ALICE, "id": "never-sent"}))
        .await;
    mallory
        .cmd(raw(format!(
            "<presence to='{ALICE}'><show>bogus</show><priority>abc</priority>\
             <status>{}</status></presence>",
            "s".repeat(3000)
        )))
        .await;
    mallory
        .cmd(raw(format!("<iq type='result' to='{ALICE}' id='h-7'/>")))
        .await;
    mallory
        .cmd(json!({"cmd": "subscribe", "to": "nobody@example.com"}))
        .await;
    mallory
        .expect("`unsubscribed` from nobody", |e| {
            presence_from(e, "nobody@example.com", "unsubscribed")
        })
        .await;

    // iqs: unknown ones get service-unavailable, a ping its result.
    for (id, to) in [("q-1", "example.com"), ("q-2", ALICE)] {
        mallory
            .cmd(raw(format!(
                "<iq type='get' to='{to}' id='{id}'><query xmlns='urn:example:unknown'/></iq>"
            )))
            .await;
        let err = mallory.expect("the iq error", error_for(id)).await;
        assert_eq!(err["stanza"], "iq", "{err}");
        assert_eq!(err["condition"], "service-unavailable", "{err}");
    }
    mallory
        .cmd(raw(format!(
            "<iq type='set' to='{ALICE}' id='q-3'><query xmlns='jabber:iq:roster'/></iq>"
        )))
        .await;
    let err = mallory.expect("the iq error", error_for("q-3")).await;
    assert_eq!(err["condition"], "service-unavailable", "{err}");
    mallory
        .cmd(raw(
            "<iq type='get' to='example.com' id='p-1'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        ))
        .await;
    let pong = mallory
        .expect("the ping's answer", |e| e["id"] == "p-1")
        .await;
    assert_eq!(kind(&pong), "iq", "{pong}");
    assert_eq!(pong["type"], "result", "{pong}");
    assert_eq!(pong["from"], "example.com", "{pong}");

    // What was deliverable was delivered, in order; nothing else.
    let (_, before) = wait_message(&alice, "with a gadget").await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Message { .. })),
        "nothing before it (the oversize body was not delivered): {before:#?}"
    );
    let (two, _) = wait_event(&alice, "the two-language message", |e| match e {
        Event::Message { message, .. } if message.id == b"h-4" => Some(message.clone()),
        _ => None,
    })
    .await;
    let body = String::from_utf8_lossy(&two.body).into_owned();
    assert!(body == "in english" || body == "en français", "{body:?}");
    let (long, _) = wait_message(&alice, "a long id").await;
    assert!(!long.id.is_empty() && long.id.len() <= 32, "{:?}", long.id);

    // After all that: messages still flow both ways on the same component stream.
    barrier(&mut mallory, &alice, "after").await;
    relay(&alice, message("ok-1", &x.jid, "still here")).await;
    mallory
        .expect("Alice's message", |e| {
            kind(e) == "message" && e["body"] == "still here"
        })
        .await;
    assert_eq!(
        xmpp.component_connections(),
        1,
        "the component connected once"
    );
    assert_eq!(
        xmpp.component_disconnections(),
        0,
        "the component stream never ended"
    );
    // Never an error for what was delivered, for a bodiless message, and never one
    // in answer to an error or a result (RFC 6120 8.3.1, 8.2.3).
    let answered = ["h-3", "h-4", "h-5", "h-6", "h-7", "p-1", long_id.as_str()];
    let wrong: Vec<&Value> = mallory
        .history()
        .iter()
        .filter(|e| kind(e) == "error" && answered.contains(&e["id"].as_str().unwrap_or("")))
        .collect();
    assert!(wrong.is_empty(), "errors where none is due: {wrong:#?}");
}

// ---- The XMPP side alone ---------------------------------------------------------------

/// The test's own XMPP machinery, without the gateway: two XMPP users subscribe and
/// talk through Prosody, ids and receipts intact, and a message to a user who is away
/// while the server restarts waits for her (mod_offline). A failure here is the test
/// infrastructure's, not the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_side_alone_works() {
    let xmpp = Prosody::start().await;
    let a = xmpp.add_user("ann").await;
    let b = xmpp.add_user("bea").await;
    let mut ann = Peer::login(&xmpp, &a, "one").await;
    let mut bea = Peer::login(&xmpp, &b, "two").await;

    ann.cmd(json!({"cmd": "subscribe", "to": b.jid})).await;
    let ask = bea
        .expect("ann's request", |e| presence_from(e, &a.jid, "subscribe"))
        .await;
    assert_eq!(ask["from"], a.jid.as_str());
    bea.cmd(json!({"cmd": "presence", "show": "xa", "status": "far", "priority": 2}))
        .await;
    bea.cmd(json!({"cmd": "approve", "to": a.jid})).await;
    ann.expect("subscribed", |e| presence_from(e, &b.jid, "subscribed"))
        .await;
    let p = ann
        .expect("bea's presence", |e| presence_from(e, &b.jid, "available"))
        .await;
    assert_eq!(shown(&p), (Some("xa"), Some("far"), Some("2")));
    assert_eq!(p["from"], bea.jid.as_str());
    assert_eq!(
        roster_entry(&mut ann, &b.jid).await,
        (Some("to".into()), None)
    );

    ann.cmd(json!({"cmd": "send", "to": b.jid, "id": "m-1", "body": "hi", "receipt": true}))
        .await;
    let m = bea
        .expect("ann's message", |e| from_bare(e, "message", &a.jid))
        .await;
    assert_eq!(
        (&m["id"], &m["origin_id"], &m["body"], &m["request"]),
        (&json!("m-1"), &json!("m-1"), &json!("hi"), &json!(true))
    );
    bea.cmd(json!({"cmd": "receipt", "to": m["from"], "id": "m-1"}))
        .await;
    let r = ann
        .expect("the receipt", |e| from_bare(e, "receipt", &b.jid))
        .await;
    assert_eq!(r["id"], "m-1");
    bea.cmd(json!({"cmd": "send_raw", "xml": "<iq type='get' to='xmpp.test' id='u-1'><query xmlns='urn:example:unknown'/></iq>"}))
        .await;
    let err = bea.expect("an iq error", |e| kind(e) == "error").await;
    assert_eq!(
        (&err["id"], &err["condition"]),
        (&json!("u-1"), &json!("service-unavailable"))
    );

    bea.quit().await;
    xmpp.stop().await;
    ann.expect("the stream's end", |e| kind(e) == "closed")
        .await;
    xmpp.start_again().await;
    let mut ann = Peer::login(&xmpp, &a, "one").await;
    ann.cmd(json!({"cmd": "send", "to": b.jid, "id": "m-2", "body": "later"}))
        .await;
    let mut bea = Peer::login(&xmpp, &b, "two").await;
    let m = bea
        .expect("the stored message", |e| from_bare(e, "message", &a.jid))
        .await;
    assert_eq!(
        (&m["origin_id"], &m["body"]),
        (&json!("m-2"), &json!("later"))
    );
    assert_eq!(xmpp.component_connections(), 0);
}
