//! The JSON lines `tern` prints: one object per line, its `type` first.
//!
//! Owns the output schema (presence documents, messages, receipts) as serde structs, so
//! the field order and names are fixed here and nowhere else. It may not do I/O or talk
//! to the client.
//!
//! * presence: `{"type":"presence","presentity","version","updated","open","tuples":[{"id",
//!   "status","availability","note","contact","at","wake"?,"ext":[{"key","value_hex"}]}],
//!   "card":[{"kind","value"}]}`; registered availabilities and card kinds by name, others
//!   as numbers; `version` is the document's version (`null` when the gateway did not
//!   tell it); `wake` (Unix seconds) only for a tuple with the `wake` extension (a sleepy
//!   device says when it wakes).
//! * unchanged: `{"type":"unchanged","presentity","version"}`: `fetch --if-version` found
//!   that version current.
//! * gone: `{"type":"gone","presentity"}`: a watched subscription ended elsewhere.
//! * message: `{"type":"message","seq","id","from","to","reply_to","content_type",
//!   "body"|"body_hex","sent"}`; `body` when the content type is `text/*` and the bytes are
//!   UTF-8, `body_hex` otherwise; ids are hex.
//! * receipt: `{"type":"receipt","seq"?,"id","to","status","reason"}`; `seq` only for
//!   late receipts; `reason` is the error code name when `status` is `failed`.
//! * rules: `{"type":"rules","presence":[..],"inbox":[..],"delegates":[..]}`: the serde
//!   form of `tern_wire::Rules` (which ignores `type`), so that `tern rules show` prints
//!   what `tern rules set` reads.
//! * subscriptions: `{"type":"subscriptions","incoming","list":[{"who","state"}]}`;
//!   `state` is `active` or `pending`.
//! * asked: `{"type":"asked","watcher"}`: someone asks to watch you (`tern decide`).
//! * subscription: `{"type":"subscription","presentity","state"}`: one of your
//!   subscriptions is now `active` (granted), `denied` or `cancelled`.
//! * pending: `{"type":"pending","presentity"}`: a subscription waits for its
//!   principal's decision.
//! * read: `{"type":"read","inbox","items","more","next_after"}`: after the items of a
//!   delegate's read (message and receipt lines with their `seq`), how many there were
//!   and where the next page starts.

use serde::Serialize;
use tern_client::{
    Availability, Basic, CardField, CardKind, Incoming, LateReceipt, PresenceDoc, ReceiptStatus,
    Rules, SubInfo, SubState, Tuple, Version,
};
use tern_wire::message::DEFAULT_CONTENT_TYPE;

/// A registry value: its name when this build knows it, else its number.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum Registered {
    Name(&'static str),
    Number(u8),
}

impl From<Availability> for Registered {
    fn from(a: Availability) -> Self {
        a.name().map_or(Self::Number(a.0), Self::Name)
    }
}

impl From<CardKind> for Registered {
    fn from(k: CardKind) -> Self {
        k.name().map_or(Self::Number(k.0), Self::Name)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct PresenceOut<'a> {
    r#type: &'static str,
    presentity: &'a str,
    version: Option<Version>,
    updated: u64,
    open: bool,
    tuples: Vec<TupleOut<'a>>,
    card: Vec<CardOut<'a>>,
}

#[derive(Debug, Serialize)]
struct TupleOut<'a> {
    id: &'a str,
    status: &'static str,
    availability: Option<Registered>,
    note: Option<&'a str>,
    contact: Option<&'a str>,
    at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake: Option<u64>,
    ext: Vec<ExtOut<'a>>,
}

#[derive(Debug, Serialize)]
struct ExtOut<'a> {
    key: &'a str,
    value_hex: String,
}

#[derive(Debug, Serialize)]
struct CardOut<'a> {
    kind: Registered,
    value: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct UnchangedOut<'a> {
    r#type: &'static str,
    presentity: &'a str,
    version: Version,
}

#[derive(Debug, Serialize)]
pub(crate) struct PresentityOut<'a> {
    r#type: &'static str,
    presentity: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct WatchersOut<'a> {
    r#type: &'static str,
    subscribers: &'a [String],
    fetchers: Vec<FetcherOut<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FetcherOut<'a> {
    who: &'a str,
    /// Seconds since the last fetch.
    age: u32,
    count: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct WatchedOut<'a> {
    r#type: &'static str,
    watcher: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct MessageOut<'a> {
    r#type: &'static str,
    seq: u64,
    id: String,
    from: &'a str,
    to: &'a str,
    reply_to: Option<&'a str>,
    content_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_hex: Option<String>,
    sent: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReceiptOut<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    id: String,
    to: &'a str,
    status: &'static str,
    reason: Option<String>,
}

pub(crate) fn presence(doc: &PresenceDoc, version: Option<Version>) -> PresenceOut<'_> {
    PresenceOut {
        r#type: "presence",
        presentity: &doc.presentity,
        version,
        updated: doc.updated,
        open: doc.presence.is_open(),
        tuples: doc.presence.tuples.iter().map(tuple).collect(),
        card: doc.presence.card.iter().map(card).collect(),
    }
}

fn tuple(t: &Tuple) -> TupleOut<'_> {
    TupleOut {
        id: &t.id,
        status: match t.basic {
            Basic::Open => "open",
            Basic::Closed => "closed",
        },
        availability: t.availability.map(Registered::from),
        note: t.note.as_deref(),
        contact: t.contact.as_deref(),
        at: t.at,
        wake: t.wake_at(),
        ext: t
            .ext
            .iter()
            .map(|e| ExtOut {
                key: &e.key,
                value_hex: hex::encode(&e.value),
            })
            .collect(),
    }
}

pub(crate) fn unchanged(presentity: &str, version: Version) -> UnchangedOut<'_> {
    UnchangedOut {
        r#type: "unchanged",
        presentity,
        version,
    }
}

pub(crate) fn watchers(info: &tern_client::WatcherInfo) -> WatchersOut<'_> {
    WatchersOut {
        r#type: "watchers",
        subscribers: &info.subscribers,
        fetchers: info
            .fetchers
            .iter()
            .map(|f| FetcherOut {
                who: &f.who,
                age: f.age,
                count: f.count,
            })
            .collect(),
    }
}

pub(crate) fn watched(watcher: &str) -> WatchedOut<'_> {
    WatchedOut {
        r#type: "watched",
        watcher,
    }
}

pub(crate) fn gone(presentity: &str) -> PresentityOut<'_> {
    PresentityOut {
        r#type: "gone",
        presentity,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct RulesOut<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    rules: &'a Rules,
}

pub(crate) fn rules(rules: &Rules) -> RulesOut<'_> {
    RulesOut {
        r#type: "rules",
        rules,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionsOut<'a> {
    r#type: &'static str,
    incoming: bool,
    list: Vec<SubOut<'a>>,
}

#[derive(Debug, Serialize)]
struct SubOut<'a> {
    who: &'a str,
    state: &'static str,
}

pub(crate) fn subscriptions(incoming: bool, list: &[SubInfo]) -> SubscriptionsOut<'_> {
    SubscriptionsOut {
        r#type: "subscriptions",
        incoming,
        list: list
            .iter()
            .map(|s| SubOut {
                who: &s.who,
                state: state_name(s.state),
            })
            .collect(),
    }
}

fn state_name(state: SubState) -> &'static str {
    match state {
        SubState::Active => "active",
        SubState::Pending => "pending",
        SubState::Denied => "denied",
        SubState::Cancelled => "cancelled",
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct AskedOut<'a> {
    r#type: &'static str,
    watcher: &'a str,
}

pub(crate) fn asked(watcher: &str) -> AskedOut<'_> {
    AskedOut {
        r#type: "asked",
        watcher,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionOut<'a> {
    r#type: &'static str,
    presentity: &'a str,
    state: &'static str,
}

pub(crate) fn subscription(presentity: &str, state: SubState) -> SubscriptionOut<'_> {
    SubscriptionOut {
        r#type: "subscription",
        presentity,
        state: state_name(state),
    }
}

pub(crate) fn pending(presentity: &str) -> PresentityOut<'_> {
    PresentityOut {
        r#type: "pending",
        presentity,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ReadOut<'a> {
    r#type: &'static str,
    inbox: &'a str,
    items: usize,
    more: bool,
    next_after: u64,
}

pub(crate) fn read(inbox: &str, items: usize, more: bool, next_after: u64) -> ReadOut<'_> {
    ReadOut {
        r#type: "read",
        inbox,
        items,
        more,
        next_after,
    }
}

fn card(c: &CardField) -> CardOut<'_> {
    CardOut {
        kind: c.kind.into(),
        value: &c.value,
    }
}

pub(crate) fn message(seq: u64, m: &Incoming) -> MessageOut<'_> {
    let content_type = m.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
    let text = text_body(content_type, &m.body);
    MessageOut {
        r#type: "message",
        seq,
        id: hex::encode(&m.id),
        from: &m.from,
        to: &m.to,
        reply_to: m.reply_to.as_deref(),
        content_type,
        body: text,
        body_hex: text.is_none().then(|| hex::encode(&m.body)),
        sent: m.sent,
    }
}

pub(crate) fn receipt<'a>(
    seq: Option<u64>,
    id: &[u8],
    to: &'a str,
    status: ReceiptStatus,
) -> ReceiptOut<'a> {
    let (status, reason) = match status {
        ReceiptStatus::Delivered => ("delivered", None),
        ReceiptStatus::Stored => ("stored", None),
        ReceiptStatus::Failed(code) => ("failed", Some(code.to_string())),
        ReceiptStatus::Relayed => ("relayed", None),
    };
    ReceiptOut {
        r#type: "receipt",
        seq,
        id: hex::encode(id),
        to,
        status,
        reason,
    }
}

pub(crate) fn late_receipt(seq: u64, r: &LateReceipt) -> ReceiptOut<'_> {
    receipt(Some(seq), &r.id, &r.to, r.status)
}

/// The body as text when the content type is `text/*` and the bytes are UTF-8.
fn text_body<'a>(content_type: &str, body: &'a [u8]) -> Option<&'a str> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let is_text = essence
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("text/"));
    if is_text {
        std::str::from_utf8(body).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tern_client::{ErrorCode, Ext, Presence};

    fn to_value(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn incoming(content_type: Option<&str>, body: &[u8]) -> Incoming {
        Incoming {
            id: vec![0xab, 0x01],
            from: "bob@example.com".into(),
            to: "alice@example.com".into(),
            reply_to: None,
            content_type: content_type.map(Into::into),
            body: body.to_vec(),
            sent: 99,
        }
    }

    #[test]
    fn presence_documents() {
        let doc = PresenceDoc {
            presentity: "bob@example.com".into(),
            updated: 5,
            presence: Presence {
                tuples: vec![Tuple {
                    id: "phone".into(),
                    basic: Basic::Open,
                    availability: Some(Availability(200)),
                    contact: Some("tel:+15551234".into()),
                    note: None,
                    at: Some(17),
                    ext: vec![Ext {
                        key: "geo".into(),
                        value: vec![1, 2],
                    }],
                }],
                card: vec![CardField {
                    kind: CardKind::EMAIL,
                    value: "bob@example.com".into(),
                }],
            },
        };
        let shown = serde_json::to_string(&presence(&doc, Some(3))).unwrap();
        assert!(shown.starts_with(r#"{"type":"presence","#), "{shown}");
        assert_eq!(
            to_value(presence(&doc, Some(3))),
            json!({
                "type": "presence", "presentity": "bob@example.com", "version": 3,
                "updated": 5, "open": true,
                "tuples": [{"id": "phone", "status": "open", "availability": 200, "note": null,
                            "contact": "tel:+15551234", "at": 17,
                            "ext": [{"key": "geo", "value_hex": "0102"}]}],
                "card": [{"kind": "email", "value": "bob@example.com"}],
            })
        );
        assert_eq!(
            Registered::from(Availability::AWAY),
            Registered::Name("away")
        );
        assert_eq!(to_value(presence(&doc, None))["version"], Value::Null);
    }

    #[test]
    fn a_sleepy_device_shows_when_it_wakes() {
        let doc = PresenceDoc {
            presentity: "sensor@example.com".into(),
            updated: 5,
            presence: Presence {
                tuples: vec![Tuple {
                    id: "default".into(),
                    basic: Basic::Open,
                    availability: Some(Availability::ASLEEP),
                    contact: None,
                    note: None,
                    at: None,
                    ext: vec![Ext::wake(1_700_000_600)],
                }],
                card: vec![],
            },
        };
        let tuple = &to_value(presence(&doc, Some(1)))["tuples"][0];
        assert_eq!(tuple["availability"], "asleep");
        assert_eq!(tuple["wake"], 1_700_000_600);
        assert_eq!(tuple["ext"][0]["key"], "wake");
    }

    #[test]
    fn unchanged_and_gone() {
        assert_eq!(
            to_value(unchanged("bob@example.com", 4)),
            json!({"type": "unchanged", "presentity": "bob@example.com", "version": 4})
        );
        assert_eq!(
            to_value(gone("bob@example.com")),
            json!({"type": "gone", "presentity": "bob@example.com"})
        );
    }

    #[test]
    fn text_messages_show_their_body() {
        let m = incoming(None, "héllo".as_bytes());
        assert_eq!(
            to_value(message(3, &m)),
            json!({
                "type": "message", "seq": 3, "id": "ab01", "from": "bob@example.com",
                "to": "alice@example.com", "reply_to": null,
                "content_type": "text/plain;charset=utf-8", "body": "héllo", "sent": 99,
            })
        );
        let m = incoming(Some("TEXT/markdown"), b"*hi*");
        assert_eq!(to_value(message(1, &m))["body"], "*hi*");
    }

    #[test]
    fn other_messages_show_hex() {
        let m = incoming(Some("application/octet-stream"), b"\x00\xff");
        let v = to_value(message(1, &m));
        assert_eq!(v["body_hex"], "00ff");
        assert!(v.get("body").is_none());
        let m = incoming(Some("text/plain"), b"\xff\xfe");
        assert_eq!(to_value(message(1, &m))["body_hex"], "fffe", "not UTF-8");
        let m = incoming(Some("té"), b"x");
        assert_eq!(
            to_value(message(1, &m))["body_hex"],
            "78",
            "short non-ASCII type"
        );
    }

    #[test]
    fn rules_print_as_they_are_read_back() {
        use tern_client::{Decision, PresenceRule, Who};
        let r = Rules {
            presence: vec![PresenceRule {
                who: Who::Domain("example.com".into()),
                decision: Decision::Ask,
                view: None,
                when: None,
            }],
            ..Rules::default()
        };
        let shown = serde_json::to_string(&rules(&r)).unwrap();
        assert!(shown.starts_with(r#"{"type":"rules","#), "{shown}");
        let back: Rules = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn subscriptions_and_their_changes() {
        let list = [SubInfo {
            who: "bob@example.com".into(),
            state: SubState::Pending,
        }];
        assert_eq!(
            to_value(subscriptions(true, &list)),
            json!({"type": "subscriptions", "incoming": true,
                   "list": [{"who": "bob@example.com", "state": "pending"}]})
        );
        assert_eq!(
            to_value(asked("bob@example.com")),
            json!({"type": "asked", "watcher": "bob@example.com"})
        );
        assert_eq!(
            to_value(subscription("bob@example.com", SubState::Cancelled)),
            json!({"type": "subscription", "presentity": "bob@example.com",
                   "state": "cancelled"})
        );
        assert_eq!(
            to_value(pending("bob@example.com")),
            json!({"type": "pending", "presentity": "bob@example.com"})
        );
        assert_eq!(
            to_value(read("bob@example.com", 2, true, 17)),
            json!({"type": "read", "inbox": "bob@example.com", "items": 2, "more": true,
                   "next_after": 17})
        );
    }

    #[test]
    fn receipts() {
        assert_eq!(
            to_value(receipt(
                None,
                &[1],
                "bob@example.com",
                ReceiptStatus::Delivered
            )),
            json!({"type": "receipt", "id": "01", "to": "bob@example.com",
                   "status": "delivered", "reason": null})
        );
        let failed = ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER);
        let late = LateReceipt {
            id: vec![2],
            to: "x@example.com".into(),
            status: failed,
        };
        assert_eq!(
            to_value(late_receipt(8, &late)),
            json!({"type": "receipt", "seq": 8, "id": "02", "to": "x@example.com",
                   "status": "failed", "reason": "unknown_user"})
        );
    }
}
