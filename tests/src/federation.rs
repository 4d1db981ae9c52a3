//! Federation scenarios shared by the real-peer tests against each XMPP server
//! (`tests/federation.rs`: Prosody, `tests/federation_ejabberd.rs`: ejabberd), and the
//! helpers they use: waiting for tern events, barriers, presence and message builders.
//! A scenario takes a started server with the gateway joined to it as its component;
//! the test files start them and add what is particular to one server.
#![allow(
    clippy::unwrap_used,
    reason = "test scenarios: a step that fails is the test failing, with its line"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tern_client::{
    Availability, Basic, Client, Decision, ErrorCode, Event, Ext, Message, Presence, PresenceDoc,
    PresenceRule, ReceiptStatus, Rules, SubState, SubscribeOutcome, Tuple, Who,
};
use tern_gateway::sqlite::SqliteStore;
use tern_gateway_core::federation::xmpp_id;

use crate::Harness;
use crate::xmpp::{Flavour, PATIENTLY, Peer, XmppServer, from_bare, kind, presence_from};

/// The tern user of the scenarios.
pub const ALICE: &str = "alice@example.com";

/// A server of this flavour and a gateway joined to it as `example.com`, its component
/// connected.
pub async fn world<F: Flavour>(xmpp: XmppServer<F>) -> (XmppServer<F>, Harness) {
    let config = xmpp.xmpp_config();
    let gw = Harness::start_with(|c| c.xmpp = Some(config)).await;
    xmpp.wait_component(1).await;
    (xmpp, gw)
}

/// Waits up to [`PATIENTLY`] for the first tern event `pick` accepts; returns it and
/// the events skipped on the way.
pub async fn wait_event<T>(
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
pub async fn wait_presence(
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
pub async fn wait_message(client: &Client, body: &str) -> (tern_client::Incoming, Vec<Event>) {
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
pub async fn barrier(peer: &mut Peer, via: &Client, tag: &str) -> Vec<Event> {
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
pub fn presence(availability: Availability, note: &str, priority: Option<&str>) -> Presence {
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

pub fn presence_rule(who: &str, decision: Decision) -> Rules {
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
pub fn shown(e: &Value) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        e["show"].as_str(),
        e["status"].as_str(),
        e["priority"].as_str(),
    )
}

/// The tuple of a remote resource in a document.
pub fn tuple<'d>(doc: &'d PresenceDoc, resource: &str) -> Option<&'d Tuple> {
    doc.presence.tuples.iter().find(|t| t.id == resource)
}

pub fn priority_of(t: &Tuple) -> Option<String> {
    t.ext
        .iter()
        .find(|e| e.key == "priority")
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
}

/// The XMPP user's roster entry for `jid`: (subscription, ask).
pub async fn roster_entry(peer: &mut Peer, jid: &str) -> (Option<String>, Option<String>) {
    peer.cmd(json!({"cmd": "roster"})).await;
    let roster = peer.expect("the roster", |e| kind(e) == "roster").await;
    let item = &roster["items"][jid];
    let text = |v: &Value| v.as_str().map(String::from);
    (text(&item["subscription"]), text(&item["ask"]))
}

pub fn message(id: &str, to: &str, body: &str) -> Message {
    Message {
        id: id.as_bytes().to_vec(),
        to: to.into(),
        reply_to: None,
        content_type: None,
        body: body.as_bytes().to_vec(),
    }
}

pub async fn relay(client: &Client, msg: Message) {
    let what = format!("{msg:?}");
    let sent = client
        .send_message(msg)
        .await
        .expect("the send is answered");
    assert_eq!(sent.status, ReceiptStatus::Relayed, "{what}");
}

// ---- The federation outbox ----------------------------------------------------------

/// How many stanzas wait in the gateway's federation outbox, not yet confirmed by the
/// XMPP server (read from its database, beside the running gateway).
pub fn unconfirmed(data_dir: &Path) -> usize {
    let store = SqliteStore::open(data_dir).expect("the gateway's store opens");
    store
        .read(|s| s.fed_after(0, 100_000))
        .expect("the outbox is read")
        .len()
}

/// The server's log lines about the bridge's pings, for a failure message.
pub fn ping_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("tern-ping-")).collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Waits until the gateway's outbox is empty: every stanza it wrote has been confirmed
/// by a ping the XMPP server routed back. Panics, with the server's log lines about
/// the pings, if not.
pub async fn wait_outbox_empty<F: Flavour>(xmpp: &XmppServer<F>, gw: &Harness) {
    let deadline = tokio::time::Instant::now() + PATIENTLY;
    loop {
        let waiting = unconfirmed(&gw.data_dir());
        if waiting == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} stanza(s) still unconfirmed in the outbox after {PATIENTLY:?}: the \
             bridge's pings did not come back; the server's log about them:\n{}",
            ping_lines(&xmpp.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- Scenarios -----------------------------------------------------------------------

/// An XMPP user subscribes to a tern user (rules: the default, allow) and sees every
/// change of its presence (show, status, priority), its current presence again when it
/// logs in anew (the XMPP server's probe), then unavailable when the tern client leaves.
pub async fn an_xmpp_user_subscribes_to_a_tern_user_and_sees_its_presence_change<F: Flavour>(
    xmpp: XmppServer<F>,
    gw: Harness,
) {
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
        "{} records the subscription",
        F::NAME
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

    // Away and back: the XMPP server probes Alice for Xavier's new session (RFC 6121 4.3), and
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

/// A tern user asks for an XMPP user's presence; the XMPP user approves: the
/// subscription turns Active, and the XMPP user's presence arrives as a document with
/// one tuple per resource (availability from show, note from status, the priority).
pub async fn a_tern_user_subscribes_to_an_xmpp_user_who_approves<F: Flavour>(
    xmpp: XmppServer<F>,
    gw: Harness,
) {
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
    assert_eq!(
        roster_entry(&mut laptop, ALICE).await,
        (Some("from".into()), None),
        "{} records the subscription",
        F::NAME
    );

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

/// Messages both ways with their ids and receipts: tern → XMPP is answered Relayed,
/// carries the tern id as origin-id and asks for a receipt, which turns into a late
/// Delivered receipt; XMPP → tern reaches the client and, once the client has it, the
/// XMPP sender gets its XEP-0184 receipt. A bounce turns into Failed; a body XMPP
/// cannot carry is refused before it leaves.
pub async fn messages_cross_both_ways_with_ids_and_receipts<F: Flavour>(
    xmpp: XmppServer<F>,
    gw: Harness,
) {
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
    assert_eq!(got["type"], "chat", "{got}");
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
    assert_eq!(
        receipt["to"],
        xavier.jid.as_str(),
        "to the resource that asked: {receipt}"
    );

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

/// The test's own XMPP machinery, without the gateway: two XMPP users subscribe and
/// talk through the XMPP server, ids and receipts intact, and a message to a user who is away
/// while the server restarts waits for her (mod_offline). A failure here is the test
/// infrastructure's, not the gateway's.
pub async fn the_xmpp_side_alone_works<F: Flavour>(xmpp: XmppServer<F>) {
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

/// Prosody stops and starts again while a tern user keeps sending to an XMPP user
/// (whose client Prosody disconnects, and who logs in again): every message arrives.
///
/// The bridge removes a stanza from its durable outbox only once the XMPP server has
/// answered a ping sent after it (gateway/server/src/xmpp/mod.rs); stanzas written
/// before the server went away without that answer are sent again, so one may arrive
/// twice (with the same id) but none is lost.
pub async fn the_xmpp_server_restarts_mid_traffic_and_nothing_is_lost<F: Flavour>(
    xmpp: XmppServer<F>,
    gw: Harness,
) {
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
    let stopping = async {
        let at = std::time::Instant::now();
        xmpp.stop().await;
        eprintln!("{} stopped in {:?}", F::NAME, at.elapsed());
    };
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
    // Nothing written while the server is away is confirmed (and this shows that the
    // outbox is read where the gateway keeps it: it empties at the end).
    let waiting = unconfirmed(&gw.data_dir());
    assert!(waiting >= 7, "{waiting} stanza(s) in the outbox");

    // Back: the bridge reconnects, the user logs in again.
    let at = std::time::Instant::now();
    xmpp.start_again().await;
    eprintln!("{} started again in {:?}", F::NAME, at.elapsed());
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

    // Everything was confirmed on the new stream: its pings come back too.
    wait_outbox_empty(&xmpp, &gw).await;
    assert_eq!(
        xmpp.component_connections(),
        2,
        "one stream before the restart, one after"
    );
}
