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

use std::time::Duration;

use serde_json::{Value, json};
use tern_client::{Availability, Decision, Event, SubState, SubscribeOutcome};
use tern_tests::Harness;
use tern_tests::federation::{self as scenario, *};
use tern_tests::xmpp::{Peer, Prosody, bare, from_bare, kind, presence_from, resource};

const MARK: &str = "mark@example.com";
const QUIET: Duration = Duration::from_millis(700);

/// A Prosody and a gateway joined to it as `example.com`, its component connected.
async fn world() -> (Prosody, Harness) {
    scenario::world(Prosody::start().await).await
}

// ---- An XMPP user watches a tern user ------------------------------------------------

/// An XMPP user subscribes to a tern user and follows its presence (scenario in
/// `tern_tests::federation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change() {
    let (xmpp, gw) = world().await;
    scenario::an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change(xmpp, gw).await;
}

// ---- A tern user watches an XMPP user -------------------------------------------------

/// A tern user subscribes to an XMPP user who approves; one tuple per resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tern_user_subscribes_to_an_xmpp_user_who_approves() {
    let (xmpp, gw) = world().await;
    scenario::a_tern_user_subscribes_to_an_xmpp_user_who_approves(xmpp, gw).await;
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

/// Messages both ways with ids and receipts, a bounce, a refused content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_both_ways_with_ids_and_receipts() {
    let (xmpp, gw) = world().await;
    scenario::messages_cross_both_ways_with_ids_and_receipts(xmpp, gw).await;
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

/// Prosody restarted mid-traffic: every message arrives (scenario in
/// `tern_tests::federation`), and the outbox holds what was unconfirmed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_server_restarts_mid_traffic_and_nothing_is_lost() {
    let (xmpp, gw) = world().await;
    scenario::the_xmpp_server_restarts_mid_traffic_and_nothing_is_lost(xmpp, gw).await;
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

/// The XMPP machinery alone, without the gateway: a failure here is the
/// infrastructure's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_side_alone_works() {
    let xmpp = Prosody::start().await;
    scenario::the_xmpp_side_alone_works(xmpp).await;
}
