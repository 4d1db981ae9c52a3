//! One representative value of every frame type, as a client or gateway would send it
//! in ordinary use (a phone with one tuple, a short chat message).

use tern_wire::frame::Welcome;
use tern_wire::{
    Availability, Basic, Decision, Down, ErrorCode, Hello, InboxItem, Incoming, LateReceipt,
    Message, Open, Opened, Presence, PresenceDoc, PresenceRule, ReceiptStatus, Rules, SubState,
    Tuple, Up, VERSION, View, When, Who,
};

/// A one-tuple presence: open, away, with a short note.
pub fn presence() -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: Some(Availability::AWAY),
            contact: Some("tern:bob@example.com".into()),
            note: Some("on the train".into()),
            at: Some(1_795_000_000),
            ext: Vec::new(),
        }],
        card: Vec::new(),
    }
}

/// [`presence`] with another note: successive publishes that really change something.
pub fn presence_with_note(note: &str) -> Presence {
    let mut p = presence();
    p.tuples[0].note = Some(note.into());
    p
}

/// The document of [`presence`] as the gateway hands it out.
pub fn doc() -> PresenceDoc {
    PresenceDoc {
        presentity: "bob@example.com".into(),
        updated: 1_795_000_000_123,
        presence: presence(),
    }
}

/// Typical rules: colleagues see a busy status without notes in office hours, one
/// person is politely blocked, anonymous peers are denied.
pub fn rules() -> Rules {
    let rule = |who, decision, view, when| PresenceRule {
        who,
        decision,
        view,
        when,
    };
    let busy = View {
        tuples: Vec::new(),
        hide: View::NOTE,
        status: Some(Availability::BUSY),
    };
    let office = When {
        days: 0x1f,
        from: 9 * 60,
        to: 18 * 60,
        offset: 60,
    };
    Rules {
        presence: vec![
            rule(
                Who::Domain("work.example".into()),
                Decision::Allow,
                Some(busy),
                Some(office),
            ),
            rule(
                Who::User("ex@example.com".into()),
                Decision::Polite,
                None,
                None,
            ),
            rule(Who::Anonymous, Decision::Deny, None, None),
        ],
        ..Rules::default()
    }
}

/// A 40-byte chat message.
pub fn message() -> Message {
    Message {
        id: vec![0x5a; 16],
        to: "alice@example.com".into(),
        reply_to: None,
        content_type: None,
        body: b"see you at the station in ten minutes".to_vec(),
    }
}

/// Every client-to-gateway frame type, named.
pub fn ups() -> Vec<(&'static str, Up)> {
    vec![
        (
            "Hello",
            Up::Hello(Hello {
                version: VERSION,
                user: "bob@example.com".into(),
                token: "q7kTj3cNwZ0uXg8fV2bLs5dR1yH6mA9eP4oKiU3tWxE".into(),
            }),
        ),
        (
            "Publish",
            Up::Publish {
                req: 3,
                presence: presence(),
            },
        ),
        (
            "Fetch",
            Up::Fetch {
                req: 4,
                target: "alice@example.com".into(),
            },
        ),
        (
            "Subscribe",
            Up::Subscribe {
                req: 5,
                target: "alice@example.com".into(),
            },
        ),
        (
            "Unsubscribe",
            Up::Unsubscribe {
                req: 6,
                target: "alice@example.com".into(),
            },
        ),
        (
            "Send",
            Up::Send {
                req: 7,
                msg: message(),
            },
        ),
        ("Ack", Up::Ack { upto: 1_234 }),
        ("Bye", Up::Bye),
        (
            "Open",
            Up::Open(Open {
                version: VERSION,
                user: "bob@example.com".into(),
                token: "q7kTj3cNwZ0uXg8fV2bLs5dR1yH6mA9eP4oKiU3tWxE".into(),
                device: vec![0xd7; 16],
                inbox_seen: 1_233,
                flags: Open::INBOX,
            }),
        ),
        (
            "Decide",
            Up::Decide {
                req: 12,
                watcher: "carol@example.com".into(),
                decision: Decision::Allow,
            },
        ),
        (
            "Cancel",
            Up::Cancel {
                req: 13,
                watcher: "carol@example.com".into(),
            },
        ),
        (
            "SetRules",
            Up::SetRules {
                req: 14,
                rules: rules(),
            },
        ),
    ]
}

/// Every gateway-to-client frame type, named.
pub fn downs() -> Vec<(&'static str, Down)> {
    let m = message();
    vec![
        (
            "Welcome",
            Down::Welcome(Welcome {
                version: VERSION,
                user: "bob@example.com".into(),
                frame_max: 65_536,
                body_max: 16_384,
                time: 1_795_000_000_123,
            }),
        ),
        ("Ok", Down::Ok { req: 3 }),
        (
            "Fail",
            Down::Fail {
                req: 4,
                code: ErrorCode::UNKNOWN_USER,
                text: "no such presentity".into(),
            },
        ),
        ("Presence", Down::Presence { req: 5, doc: doc() }),
        (
            "Receipt",
            Down::Receipt {
                req: 7,
                status: ReceiptStatus::Delivered,
            },
        ),
        ("Notify", Down::Notify { doc: doc() }),
        (
            "Deliver(Message)",
            Down::Deliver {
                seq: 1_234,
                item: InboxItem::Message(Incoming {
                    id: m.id.clone(),
                    from: "bob@example.com".into(),
                    to: m.to.clone(),
                    reply_to: None,
                    content_type: None,
                    body: m.body.clone(),
                    sent: 1_795_000_000_123,
                }),
            },
        ),
        (
            "Deliver(Receipt)",
            Down::Deliver {
                seq: 1_235,
                item: InboxItem::Receipt(LateReceipt {
                    id: m.id,
                    to: m.to,
                    status: ReceiptStatus::Delivered,
                }),
            },
        ),
        (
            "Opened",
            Down::Opened(Opened {
                version: VERSION,
                user: "bob@example.com".into(),
                frame_max: 65_536,
                body_max: 16_384,
                time: 1_795_000_000_123,
                resumed: true,
                resume_window: 120_000,
                keepalive: 25_000,
            }),
        ),
        (
            "Close",
            Down::Close {
                code: ErrorCode::TOO_SLOW,
                text: "reader too slow".into(),
            },
        ),
        ("Pending", Down::Pending { req: 10 }),
        (
            "Asked",
            Down::Asked {
                watcher: "carol@example.com".into(),
            },
        ),
        (
            "Subscription",
            Down::Subscription {
                target: "alice@example.com".into(),
                state: SubState::Active,
            },
        ),
        (
            "Rules",
            Down::Rules {
                req: 15,
                rules: rules(),
            },
        ),
    ]
}
