//! The hub driven without sockets: frames in, actions out, time passed by hand.

use tern_wire::frame::Welcome;
use tern_wire::{
    Availability, Basic, Down, ErrorCode, Hello, InboxItem, Message, Presence, ReceiptStatus,
    Tuple, Up, VERSION,
};

use super::*;
use crate::auth::hash_token;
use crate::config::DomainConfig;
use crate::store::{MemStore, UserRecord};

struct World {
    hub: Hub,
    store: MemStore,
    now: Millis,
}

fn user(address: &str) -> UserRecord {
    UserRecord {
        address: address.into(),
        token_hash: hash_token(&format!("token-{address}")),
        presentity: true,
        inbox: true,
        aliases: Vec::new(),
        created: 0,
    }
}

fn open(note: &str) -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: Some(Availability::AVAILABLE),
            contact: Some("tern:x@example.com".into()),
            note: Some(note.into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    }
}

fn msg(id: u8, to: &str, body: &str) -> Message {
    Message {
        id: vec![id; 16],
        to: to.into(),
        reply_to: None,
        content_type: None,
        body: body.as_bytes().to_vec(),
    }
}

impl World {
    fn new() -> Self {
        let config = HubConfig {
            domains: vec![
                DomainConfig::new("example.com"),
                DomainConfig::new("other.org"),
            ],
            ..HubConfig::default()
        };
        let mut store = MemStore::default();
        for u in ["alice@example.com", "bob@example.com", "carol@other.org"] {
            store.put_user(&user(u)).unwrap();
        }
        let mut hub = Hub::new(config);
        hub.load(0, &mut store).unwrap();
        Self {
            hub,
            store,
            now: 1_000,
        }
    }

    fn restart(&mut self) {
        let mut hub = Hub::new(self.hub.config().clone());
        hub.load(self.now, &mut self.store).unwrap();
        self.hub = hub;
    }

    fn frame(&mut self, conn: ConnId, frame: Up) -> Vec<Action> {
        self.hub
            .handle_frame(self.now, conn, frame, &mut self.store)
            .unwrap();
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.hub.poll_action()).collect()
    }

    fn login(&mut self, conn: ConnId, who: &str) -> Vec<Action> {
        self.hub.handle_connect(self.now, conn);
        let hello = Hello {
            version: VERSION,
            user: who.into(),
            token: format!("token-{}", who.to_lowercase()),
        };
        self.frame(conn, Up::Hello(hello))
    }

    fn disconnect(&mut self, conn: ConnId) -> Vec<Action> {
        self.hub
            .handle_disconnect(self.now, conn, &mut self.store)
            .unwrap();
        self.drain()
    }
}

fn frames_to(actions: &[Action], to: ConnId) -> Vec<Down> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, frame } if *conn == to => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

fn closed_with(actions: &[Action], to: ConnId) -> Option<ErrorCode> {
    actions.iter().find_map(|a| match a {
        Action::Close { conn, code, .. } if *conn == to => Some(*code),
        _ => None,
    })
}

#[test]
fn hello_with_right_token_is_welcomed_with_normalised_user() {
    let mut w = World::new();
    let actions = w.login(1, "Alice@EXAMPLE.com");
    let frames = frames_to(&actions, 1);
    assert!(matches!(
        &frames[0],
        Down::Welcome(Welcome { user, version: VERSION, .. }) if user == "alice@example.com"
    ));
    assert_eq!(w.hub.sessions_of("alice@example.com"), 1);
}

#[test]
fn wrong_token_unknown_user_and_foreign_domain_are_unauthorized() {
    let mut w = World::new();
    for (conn, who, token) in [
        (1, "alice@example.com", "nope"),
        (2, "zed@example.com", "token-zed@example.com"),
        (3, "alice@elsewhere.net", "token-alice@example.com"),
    ] {
        w.hub.handle_connect(w.now, conn);
        let hello = Hello {
            version: VERSION,
            user: who.into(),
            token: token.into(),
        };
        let actions = w.frame(conn, Up::Hello(hello));
        assert_eq!(closed_with(&actions, conn), Some(ErrorCode::UNAUTHORIZED));
    }
    assert_eq!(w.hub.sessions_of("alice@example.com"), 0);
}

#[test]
fn requests_before_hello_and_second_hello_are_protocol_errors() {
    let mut w = World::new();
    w.hub.handle_connect(w.now, 1);
    let actions = w.frame(1, Up::Ack { upto: 1 });
    assert_eq!(closed_with(&actions, 1), Some(ErrorCode::PROTOCOL));
    w.login(2, "bob@example.com");
    let hello = Hello {
        version: VERSION,
        user: "bob@example.com".into(),
        token: "token-bob@example.com".into(),
    };
    let actions = w.frame(2, Up::Hello(hello));
    assert_eq!(closed_with(&actions, 2), Some(ErrorCode::PROTOCOL));
}

#[test]
fn unsupported_version_is_refused() {
    let mut w = World::new();
    w.hub.handle_connect(w.now, 1);
    let hello = Hello {
        version: 99,
        user: "alice@example.com".into(),
        token: "token-alice@example.com".into(),
    };
    let actions = w.frame(1, Up::Hello(hello));
    assert_eq!(
        closed_with(&actions, 1),
        Some(ErrorCode::UNSUPPORTED_VERSION)
    );
}

#[test]
fn subscriber_gets_current_presence_then_every_change_until_unsubscribed() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    let sub = w.frame(
        2,
        Up::Subscribe {
            req: 7,
            target: "ALICE@example.com".into(),
        },
    );
    let Down::Presence { req: 7, doc } = &frames_to(&sub, 2)[0] else {
        panic!("subscribe must answer with the document: {sub:?}");
    };
    assert_eq!(doc.presentity, "alice@example.com");
    assert_eq!(doc.presence, open("hi"));

    let change = w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("lunch"),
        },
    );
    assert!(matches!(&frames_to(&change, 1)[0], Down::Ok { req: 2 }));
    let Down::Notify { doc } = &frames_to(&change, 2)[0] else {
        panic!("watcher must be notified: {change:?}");
    };
    assert_eq!(doc.presence.tuples[0].note.as_deref(), Some("lunch"));

    let unsub = w.frame(
        2,
        Up::Unsubscribe {
            req: 8,
            target: "alice@example.com".into(),
        },
    );
    assert!(matches!(&frames_to(&unsub, 2)[0], Down::Ok { req: 8 }));
    let after = w.frame(
        1,
        Up::Publish {
            req: 3,
            presence: open("back"),
        },
    );
    assert!(
        frames_to(&after, 2).is_empty(),
        "nothing after unsubscribe: {after:?}"
    );
}

#[test]
fn fetch_and_subscribe_work_while_presentity_is_out_of_contact() {
    let mut w = World::new();
    w.login(2, "bob@example.com");
    let fetched = w.frame(
        2,
        Up::Fetch {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    let Down::Presence { doc, .. } = &frames_to(&fetched, 2)[0] else {
        panic!("{fetched:?}");
    };
    assert_eq!(doc.updated, 0);
    assert!(!doc.presence.is_open());
    let sub = w.frame(
        2,
        Up::Subscribe {
            req: 2,
            target: "alice@example.com".into(),
        },
    );
    assert!(matches!(
        &frames_to(&sub, 2)[0],
        Down::Presence { req: 2, .. }
    ));
    w.login(1, "alice@example.com");
    let publish = w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("here"),
        },
    );
    assert!(matches!(&frames_to(&publish, 2)[0], Down::Notify { .. }));
}

#[test]
fn out_of_contact_without_goodbye_closes_presence_for_watchers() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    w.now += 60_000;
    let gone = w.disconnect(1);
    let Down::Notify { doc } = &frames_to(&gone, 2)[0] else {
        panic!("{gone:?}");
    };
    assert!(!doc.presence.is_open());
    assert_eq!(doc.updated, w.now);
    assert_eq!(
        doc.presence.tuples[0].note.as_deref(),
        Some("hi"),
        "note survives"
    );
}

#[test]
fn a_second_session_keeps_the_presentity_open() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(3, "alice@example.com");
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    assert!(frames_to(&w.disconnect(1), 2).is_empty());
    assert_eq!(frames_to(&w.disconnect(3), 2).len(), 1);
}

#[test]
fn subscribing_to_unknown_or_unroutable_presentities_fails() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    for (target, code) in [
        ("nobody@example.com", ErrorCode::UNKNOWN_USER),
        ("x@far.away", ErrorCode::UNROUTABLE),
        ("no-at-sign", ErrorCode::BAD_ADDRESS),
    ] {
        let a = w.frame(
            1,
            Up::Subscribe {
                req: 3,
                target: target.into(),
            },
        );
        assert!(
            matches!(&frames_to(&a, 1)[0], Down::Fail { req: 3, code: c, .. } if *c == code),
            "{target}: {a:?}"
        );
    }
}

#[test]
fn message_to_online_recipient_is_delivered_and_receipted_after_ack() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    let sent = w.frame(
        1,
        Up::Send {
            req: 5,
            msg: msg(1, "bob@example.com", "hello"),
        },
    );
    assert!(frames_to(&sent, 1).is_empty(), "receipt waits for the ack");
    let Down::Deliver {
        seq,
        item: InboxItem::Message(m),
    } = &frames_to(&sent, 2)[0]
    else {
        panic!("{sent:?}");
    };
    assert_eq!(m.from, "alice@example.com");
    assert_eq!(m.body, b"hello");
    let acked = w.frame(2, Up::Ack { upto: *seq });
    assert_eq!(
        frames_to(&acked, 1),
        vec![Down::Receipt {
            req: 5,
            status: ReceiptStatus::Delivered
        }]
    );
}

#[test]
fn unacknowledged_delivery_is_answered_stored_at_the_deadline_then_receipted_late() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    let sent = w.frame(
        1,
        Up::Send {
            req: 5,
            msg: msg(1, "bob@example.com", "hello"),
        },
    );
    let Down::Deliver { seq, .. } = frames_to(&sent, 2)[0].clone() else {
        panic!();
    };
    let deadline = w.hub.poll_timeout().unwrap();
    w.now = deadline;
    w.hub.handle_timeout(w.now, &mut w.store).unwrap();
    assert_eq!(
        frames_to(&w.drain(), 1),
        vec![Down::Receipt {
            req: 5,
            status: ReceiptStatus::Stored
        }]
    );
    let acked = w.frame(2, Up::Ack { upto: seq });
    let Down::Deliver {
        item: InboxItem::Receipt(r),
        ..
    } = &frames_to(&acked, 1)[0]
    else {
        panic!("late receipt expected: {acked:?}");
    };
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.id, vec![1; 16]);
}

#[test]
fn offline_recipient_gets_stored_messages_in_order_on_connect() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    for i in 0..3u8 {
        let a = w.frame(
            1,
            Up::Send {
                req: u32::from(i),
                msg: msg(i, "bob@example.com", "m"),
            },
        );
        assert_eq!(
            frames_to(&a, 1),
            vec![Down::Receipt {
                req: u32::from(i),
                status: ReceiptStatus::Stored
            }]
        );
    }
    w.restart();
    w.login(1, "alice@example.com");
    let on = w.login(2, "bob@example.com");
    let seqs: Vec<u64> = frames_to(&on, 2)
        .iter()
        .filter_map(|f| match f {
            Down::Deliver {
                seq,
                item: InboxItem::Message(m),
            } => {
                assert_eq!(m.id[0] as u64 + 1, *seq);
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let acked = w.frame(2, Up::Ack { upto: 3 });
    let late = frames_to(&acked, 1);
    assert_eq!(
        late.len(),
        3,
        "one late receipt per stored message: {late:?}"
    );
}

#[test]
fn resent_id_is_delivered_once_and_answered_with_its_status() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.frame(
        1,
        Up::Send {
            req: 1,
            msg: msg(9, "bob@example.com", "once"),
        },
    );
    let again = w.frame(
        1,
        Up::Send {
            req: 2,
            msg: msg(9, "bob@example.com", "once"),
        },
    );
    assert_eq!(
        frames_to(&again, 1),
        vec![Down::Receipt {
            req: 2,
            status: ReceiptStatus::Stored
        }]
    );
    let on = w.login(2, "bob@example.com");
    assert_eq!(
        frames_to(&on, 2)
            .iter()
            .filter(|f| matches!(f, Down::Deliver { .. }))
            .count(),
        1
    );
    w.frame(2, Up::Ack { upto: 1 });
    let third = w.frame(
        1,
        Up::Send {
            req: 3,
            msg: msg(9, "bob@example.com", "once"),
        },
    );
    assert_eq!(
        frames_to(&third, 1)[0],
        Down::Receipt {
            req: 3,
            status: ReceiptStatus::Delivered
        }
    );
}

#[test]
fn failed_receipts_name_the_reason() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    let big = "x".repeat(w.hub.config().body_max as usize + 1);
    for (i, (to, body, code)) in [
        ("nobody@example.com", "hi", ErrorCode::UNKNOWN_USER),
        ("bob@example.com", big.as_str(), ErrorCode::TOO_LARGE),
        ("bob@far.away", "hi", ErrorCode::UNROUTABLE),
        ("not an address", "hi", ErrorCode::BAD_ADDRESS),
    ]
    .into_iter()
    .enumerate()
    {
        let a = w.frame(
            1,
            Up::Send {
                req: i as u32,
                msg: msg(i as u8, to, body),
            },
        );
        assert_eq!(
            frames_to(&a, 1),
            vec![Down::Receipt {
                req: i as u32,
                status: ReceiptStatus::Failed(code)
            }],
            "{to}"
        );
    }
}

#[test]
fn sender_cannot_pose_as_someone_else() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    let mut m = msg(4, "bob@example.com", "hi");
    m.reply_to = Some("Carol@other.org".into());
    let a = w.frame(1, Up::Send { req: 1, msg: m });
    let Down::Deliver {
        item: InboxItem::Message(got),
        ..
    } = &frames_to(&a, 2)[0]
    else {
        panic!();
    };
    assert_eq!(got.from, "alice@example.com");
    assert_eq!(got.reply_to.as_deref(), Some("carol@other.org"));
}

#[test]
fn alias_inbox_and_inbox_less_principal() {
    let mut w = World::new();
    let mut dave = user("dave@example.com");
    dave.inbox = false;
    dave.aliases = vec!["desk@example.com".into()];
    w.store.put_user(&dave).unwrap();
    let mut sensor = user("sensor@example.com");
    sensor.presentity = false;
    w.store.put_user(&sensor).unwrap();
    w.login(1, "alice@example.com");
    let to_alias = w.frame(
        1,
        Up::Send {
            req: 1,
            msg: msg(1, "desk@example.com", "hi"),
        },
    );
    assert_eq!(
        frames_to(&to_alias, 1)[0],
        Down::Receipt {
            req: 1,
            status: ReceiptStatus::Stored
        }
    );
    let to_own = w.frame(
        1,
        Up::Send {
            req: 2,
            msg: msg(2, "dave@example.com", "hi"),
        },
    );
    assert_eq!(
        frames_to(&to_own, 1)[0],
        Down::Receipt {
            req: 2,
            status: ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER)
        }
    );
    let sub = w.frame(
        1,
        Up::Subscribe {
            req: 3,
            target: "sensor@example.com".into(),
        },
    );
    assert!(matches!(
        &frames_to(&sub, 1)[0],
        Down::Fail {
            code: ErrorCode::UNKNOWN_USER,
            ..
        }
    ));
    w.login(4, "sensor@example.com");
    let publish = w.frame(
        4,
        Up::Publish {
            req: 1,
            presence: open("x"),
        },
    );
    assert!(matches!(&frames_to(&publish, 4)[0], Down::Fail { .. }));
}

#[test]
fn services_can_be_turned_off_independently() {
    let mut w = World::new();
    let config = HubConfig {
        domains: vec![
            DomainConfig {
                presence: false,
                ..DomainConfig::new("example.com")
            },
            DomainConfig {
                im: false,
                ..DomainConfig::new("other.org")
            },
        ],
        ..HubConfig::default()
    };
    w.hub = Hub::new(config);
    w.login(1, "alice@example.com");
    w.login(2, "carol@other.org");
    let p = w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("x"),
        },
    );
    assert!(matches!(
        &frames_to(&p, 1)[0],
        Down::Fail {
            code: ErrorCode::SERVICE_DISABLED,
            ..
        }
    ));
    let m = w.frame(
        1,
        Up::Send {
            req: 2,
            msg: msg(1, "bob@example.com", "hi"),
        },
    );
    assert_eq!(
        frames_to(&m, 1)[0],
        Down::Receipt {
            req: 2,
            status: ReceiptStatus::Stored
        }
    );
    let p = w.frame(
        2,
        Up::Publish {
            req: 1,
            presence: open("x"),
        },
    );
    assert!(matches!(&frames_to(&p, 2)[0], Down::Ok { .. }));
    let m = w.frame(
        2,
        Up::Send {
            req: 2,
            msg: msg(1, "bob@example.com", "hi"),
        },
    );
    assert!(matches!(
        &frames_to(&m, 2)[0],
        Down::Fail {
            code: ErrorCode::SERVICE_DISABLED,
            ..
        }
    ));
}

#[test]
fn subscriptions_survive_a_restart_and_resync_on_login() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.restart();
    assert_eq!(
        w.hub.watchers_of("alice@example.com"),
        vec!["bob@example.com"]
    );
    let on = w.login(2, "bob@example.com");
    let Down::Notify { doc } = &frames_to(&on, 2)[1] else {
        panic!("resync expected: {on:?}");
    };
    assert!(
        !doc.presence.is_open(),
        "alice has no session since the restart"
    );
    assert_eq!(doc.presence.tuples[0].note.as_deref(), Some("hi"));
}

#[test]
fn delivery_window_bounds_in_flight_items() {
    let mut w = World::new();
    w.hub = Hub::new(HubConfig {
        inbox_window: 2,
        ..w.hub.config().clone()
    });
    w.login(1, "alice@example.com");
    for i in 0..5u8 {
        w.frame(
            1,
            Up::Send {
                req: u32::from(i),
                msg: msg(i, "carol@other.org", "m"),
            },
        );
    }
    let on = w.login(2, "carol@other.org");
    assert_eq!(
        frames_to(&on, 2)
            .iter()
            .filter(|f| matches!(f, Down::Deliver { .. }))
            .count(),
        2
    );
    let more = w.frame(2, Up::Ack { upto: 1 });
    let seqs: Vec<u64> = frames_to(&more, 2)
        .iter()
        .filter_map(|f| match f {
            Down::Deliver { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![3]);
}

#[test]
fn ack_beyond_what_was_pushed_is_clamped() {
    let mut w = World::new();
    w.hub = Hub::new(HubConfig {
        inbox_window: 1,
        ..w.hub.config().clone()
    });
    w.login(1, "alice@example.com");
    for i in 0..3u8 {
        w.frame(
            1,
            Up::Send {
                req: u32::from(i),
                msg: msg(i, "bob@example.com", "m"),
            },
        );
    }
    w.login(2, "bob@example.com");
    w.frame(2, Up::Ack { upto: 1_000 });
    assert!(
        w.store.inbox_after("bob@example.com", 1, 1).unwrap().len() == 1,
        "unseen items stay"
    );
}

#[test]
fn goodbye_closes_and_marks_closed_at_once() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    let bye = w.frame(1, Up::Bye);
    assert_eq!(closed_with(&bye, 1), Some(ErrorCode::GOODBYE));
    assert!(matches!(&frames_to(&bye, 2)[0], Down::Notify { doc } if !doc.presence.is_open()));
    assert!(w.disconnect(1).is_empty());
}

#[test]
fn bad_frames_close_only_that_connection() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.hub.handle_bad_frame(
        w.now,
        1,
        tern_wire::CodecError::Oversize {
            len: 1 << 20,
            max: 10,
        },
    );
    let actions = w.drain();
    assert_eq!(closed_with(&actions, 1), Some(ErrorCode::TOO_LARGE));
    w.disconnect(1);
    let ok = w.frame(
        2,
        Up::Fetch {
            req: 1,
            target: "bob@example.com".into(),
        },
    );
    assert!(matches!(&frames_to(&ok, 2)[0], Down::Presence { .. }));
}

#[test]
fn presence_left_open_by_a_crash_is_closed_at_start() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("hi"),
        },
    );
    // The gateway dies: no departure runs.
    w.now += 5_000;
    w.restart();
    let doc = w.store.presence("alice@example.com").unwrap().unwrap().doc;
    assert!(!doc.presence.is_open());
    assert_eq!(doc.updated, w.now);
    assert_eq!(doc.presence.tuples[0].note.as_deref(), Some("hi"));
}

#[test]
fn a_principal_removed_and_provisioned_again_inherits_no_subscriptions() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.disconnect(2);
    // The operator removes bob and provisions the address again while the hub runs.
    w.store.remove_user("bob@example.com").unwrap();
    w.store.put_user(&user("bob@example.com")).unwrap();
    w.login(3, "bob@example.com");
    let publish = w.frame(
        1,
        Up::Publish {
            req: 2,
            presence: open("hi"),
        },
    );
    assert!(
        frames_to(&publish, 3).is_empty(),
        "the new bob never subscribed: {publish:?}"
    );
    assert!(w.hub.watchers_of("alice@example.com").is_empty());
}

#[test]
fn subscriptions_are_limited_per_principal() {
    let mut w = World::new();
    w.hub = Hub::new(HubConfig {
        max_subscriptions: 1,
        ..w.hub.config().clone()
    });
    w.login(1, "alice@example.com");
    let first = w.frame(
        1,
        Up::Subscribe {
            req: 1,
            target: "bob@example.com".into(),
        },
    );
    assert!(matches!(
        &frames_to(&first, 1)[0],
        Down::Presence { req: 1, .. }
    ));
    let again = w.frame(
        1,
        Up::Subscribe {
            req: 2,
            target: "bob@example.com".into(),
        },
    );
    assert!(
        matches!(&frames_to(&again, 1)[0], Down::Presence { req: 2, .. }),
        "idempotent"
    );
    let second = w.frame(
        1,
        Up::Subscribe {
            req: 3,
            target: "carol@other.org".into(),
        },
    );
    assert!(matches!(
        &frames_to(&second, 1)[0],
        Down::Fail {
            code: ErrorCode::REFUSED,
            ..
        }
    ));
}

// ---- Device sessions: parking, resumption, per-device delivery ----------------------

fn open_frame(who: &str, device: u8, inbox_seen: u64, inbox: bool) -> Up {
    Up::Open(tern_wire::Open {
        version: VERSION,
        user: who.into(),
        token: format!("token-{who}"),
        device: vec![device; 16],
        inbox_seen,
        flags: if inbox { tern_wire::Open::INBOX } else { 0 },
    })
}

impl World {
    fn open(&mut self, conn: ConnId, who: &str, device: u8, inbox_seen: u64) -> Vec<Action> {
        self.hub.handle_connect(self.now, conn);
        self.frame(conn, open_frame(who, device, inbox_seen, true))
    }

    fn tick(&mut self, ms: u64) -> Vec<Action> {
        self.now += ms;
        self.hub.handle_timeout(self.now, &mut self.store).unwrap();
        self.drain()
    }
}

fn opened(actions: &[Action], conn: ConnId) -> tern_wire::Opened {
    match frames_to(actions, conn).first() {
        Some(Down::Opened(o)) => o.clone(),
        other => panic!("expected Opened, got {other:?} in {actions:?}"),
    }
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

fn delivered_seqs(actions: &[Action], conn: ConnId) -> Vec<u64> {
    frames_to(actions, conn)
        .into_iter()
        .filter_map(|f| match f {
            Down::Deliver { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

use tern_wire::PresenceDoc;

#[test]
fn a_blip_shorter_than_the_window_shows_watchers_nothing() {
    let mut w = World::new();
    let first = w.open(1, "alice@example.com", 0xa1, 0);
    assert!(!opened(&first, 1).resumed, "a new device starts fresh");
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("here"),
        },
    );
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );

    let lost = w.disconnect(1); // the link is gone, no goodbye
    assert!(
        notified(&lost, 2).is_empty(),
        "no CLOSED while parked: {lost:?}"
    );
    assert_eq!(w.hub.parked_sessions_of("alice@example.com"), 1);
    let quiet = w.tick(w.hub.config().resume_window_ms - 1);
    assert!(notified(&quiet, 2).is_empty());

    let back = w.open(3, "alice@example.com", 0xa1, 0);
    assert!(opened(&back, 3).resumed);
    assert!(
        notified(&back, 2).is_empty(),
        "no OPEN either: nothing flapped"
    );
    assert_eq!(w.hub.parked_sessions_of("alice@example.com"), 0);
    assert!(w.tick(60_000).is_empty(), "no stale expiry fires later");
}

#[test]
fn a_parked_session_past_its_window_goes_closed_for_watchers() {
    let mut w = World::new();
    w.open(1, "alice@example.com", 0xa1, 0);
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("here"),
        },
    );
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.disconnect(1);
    assert_eq!(
        w.hub.poll_timeout(),
        Some(w.now + w.hub.config().resume_window_ms)
    );
    let expired = w.tick(w.hub.config().resume_window_ms);
    let docs = notified(&expired, 2);
    assert_eq!(docs.len(), 1);
    assert!(!docs[0].presence.is_open());
    // Coming back after the window is a fresh session.
    let late = w.open(3, "alice@example.com", 0xa1, 0);
    assert!(!opened(&late, 3).resumed);
}

#[test]
fn a_resumed_watcher_gets_the_latest_state_of_each_subscription_once() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(3, "carol@other.org");
    w.frame(
        3,
        Up::Publish {
            req: 1,
            presence: open("carol"),
        },
    );
    w.open(2, "bob@example.com", 0xb1, 0);
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.frame(
        2,
        Up::Subscribe {
            req: 2,
            target: "carol@other.org".into(),
        },
    );
    w.disconnect(2);
    for note in ["one", "two", "three"] {
        w.frame(
            1,
            Up::Publish {
                req: 9,
                presence: open(note),
            },
        );
    }
    let back = w.open(4, "bob@example.com", 0xb1, 0);
    assert!(opened(&back, 4).resumed);
    let docs = notified(&back, 4);
    assert_eq!(
        docs.len(),
        2,
        "one current document per subscription: {docs:?}"
    );
    let alice = docs
        .iter()
        .find(|d| d.presentity == "alice@example.com")
        .unwrap();
    assert_eq!(
        alice.presence.tuples[0].note.as_deref(),
        Some("three"),
        "never history"
    );
}

#[test]
fn past_the_window_a_watcher_gets_a_full_sync() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.open(2, "bob@example.com", 0xb1, 0);
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.frame(
        2,
        Up::Subscribe {
            req: 2,
            target: "carol@other.org".into(),
        },
    );
    w.disconnect(2);
    w.tick(w.hub.config().resume_window_ms + 1);
    let fresh = w.open(3, "bob@example.com", 0xb1, 0);
    assert!(!opened(&fresh, 3).resumed);
    assert_eq!(notified(&fresh, 3).len(), 2, "every subscription restated");
}

#[test]
fn messages_are_received_once_across_a_resumption() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    let first = w.open(2, "bob@example.com", 0xb1, 0);
    assert!(delivered_seqs(&first, 2).is_empty());
    for i in 0..4u8 {
        w.frame(
            1,
            Up::Send {
                req: u32::from(i),
                msg: msg(i, "bob@example.com", "m"),
            },
        );
    }
    w.frame(2, Up::Ack { upto: 2 }); // bob processed 1 and 2, acknowledged them
    w.disconnect(2);
    // bob processed 3 too, but that ack died with the link: it says so when it resumes.
    let back = w.open(3, "bob@example.com", 0xb1, 3);
    assert_eq!(
        delivered_seqs(&back, 3),
        vec![4],
        "only what bob has not seen"
    );
}

#[test]
fn inbox_seen_in_open_counts_as_the_lost_acknowledgement() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.open(2, "bob@example.com", 0xb1, 0);
    let sent = w.frame(
        1,
        Up::Send {
            req: 7,
            msg: msg(1, "bob@example.com", "m"),
        },
    );
    assert_eq!(delivered_seqs(&sent, 2), vec![1]);
    w.disconnect(2);
    let back = w.open(3, "bob@example.com", 0xb1, 1);
    assert!(delivered_seqs(&back, 3).is_empty());
    assert_eq!(
        frames_to(&back, 1),
        vec![Down::Receipt {
            req: 7,
            status: ReceiptStatus::Delivered
        }],
        "the waiting sender hears it was delivered"
    );
    // A device cannot claim to have seen what was never sent.
    w.disconnect(3);
    let liar = w.open(4, "bob@example.com", 0xb1, 1_000);
    assert!(opened(&liar, 4).resumed);
    assert_eq!(
        w.store
            .device("bob@example.com", &[0xb1; 16])
            .unwrap()
            .unwrap()
            .acked,
        1
    );
}

#[test]
fn each_device_gets_every_message_once_and_the_first_ack_is_the_delivery() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.open(2, "bob@example.com", 0xb1, 0); // phone
    w.open(3, "bob@example.com", 0xb2, 0); // laptop
    let sent = w.frame(
        1,
        Up::Send {
            req: 5,
            msg: msg(1, "bob@example.com", "both"),
        },
    );
    assert_eq!(delivered_seqs(&sent, 2), vec![1]);
    assert_eq!(delivered_seqs(&sent, 3), vec![1]);
    let phone_ack = w.frame(2, Up::Ack { upto: 1 });
    assert_eq!(
        frames_to(&phone_ack, 1),
        vec![Down::Receipt {
            req: 5,
            status: ReceiptStatus::Delivered
        }]
    );
    assert_eq!(
        w.store.inbox_after("bob@example.com", 0, 10).unwrap().len(),
        1,
        "laptop lacks it"
    );
    let laptop_ack = w.frame(3, Up::Ack { upto: 1 });
    assert!(frames_to(&laptop_ack, 1).is_empty(), "one receipt only");
    assert!(
        w.store
            .inbox_after("bob@example.com", 0, 10)
            .unwrap()
            .is_empty()
    );
    // The laptop restarts as a fresh session: nothing comes twice.
    w.disconnect(3);
    w.tick(w.hub.config().resume_window_ms + 1);
    assert!(delivered_seqs(&w.open(4, "bob@example.com", 0xb2, 0), 4).is_empty());
}

#[test]
fn a_new_connection_of_a_live_device_supersedes_the_old_one() {
    let mut w = World::new();
    w.open(1, "alice@example.com", 0xa1, 0);
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("here"),
        },
    );
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    let again = w.open(3, "alice@example.com", 0xa1, 0);
    assert_eq!(closed_with(&again, 1), Some(ErrorCode::SUPERSEDED));
    assert!(opened(&again, 3).resumed);
    assert!(notified(&again, 2).is_empty(), "no flap");
    let gone = w.disconnect(1);
    assert!(
        notified(&gone, 2).is_empty(),
        "the old connection's end changes nothing"
    );
    assert_eq!(w.hub.sessions_of("alice@example.com"), 1);
}

#[test]
fn a_watch_only_session_is_sent_no_inbox_and_not_waited_for() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.hub.handle_connect(w.now, 2);
    w.frame(2, open_frame("bob@example.com", 0xb1, 0, false));
    let sent = w.frame(
        1,
        Up::Send {
            req: 3,
            msg: msg(1, "bob@example.com", "m"),
        },
    );
    assert!(delivered_seqs(&sent, 2).is_empty());
    assert_eq!(
        frames_to(&sent, 1),
        vec![Down::Receipt {
            req: 3,
            status: ReceiptStatus::Stored
        }],
        "answered at once, not after the delivery wait"
    );
}

#[test]
fn goodbye_from_a_device_session_ends_it_without_parking() {
    let mut w = World::new();
    w.open(1, "alice@example.com", 0xa1, 0);
    w.frame(
        1,
        Up::Publish {
            req: 1,
            presence: open("here"),
        },
    );
    w.login(2, "bob@example.com");
    w.frame(
        2,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    let bye = w.frame(1, Up::Bye);
    assert_eq!(notified(&bye, 2).len(), 1, "CLOSED at once");
    w.disconnect(1);
    assert_eq!(w.hub.parked_sessions_of("alice@example.com"), 0);
}

#[test]
fn a_device_id_must_have_one_to_32_bytes() {
    let mut w = World::new();
    w.hub.handle_connect(w.now, 1);
    let mut frame = open_frame("alice@example.com", 1, 0, true);
    if let Up::Open(open) = &mut frame {
        open.device.clear();
    }
    let actions = w.frame(1, frame);
    assert_eq!(closed_with(&actions, 1), Some(ErrorCode::MALFORMED));
}

// ---- 0-RTT: connections whose handshake is not confirmed -----------------------------

impl World {
    /// A connection whose first flight (0-RTT data) carries `frames`.
    fn early(&mut self, conn: ConnId, frames: Vec<Up>) -> Vec<Action> {
        self.hub.handle_early_connect(self.now, conn);
        let mut actions = Vec::new();
        for frame in frames {
            actions.extend(self.frame(conn, frame));
        }
        actions
    }

    fn confirm(&mut self, conn: ConnId) -> Vec<Action> {
        self.hub
            .handle_confirmed(self.now, conn, &mut self.store)
            .unwrap();
        self.drain()
    }
}

fn first_flight() -> Vec<Up> {
    vec![
        open_frame("alice@example.com", 0xa1, 0, true),
        Up::Send {
            req: 1,
            msg: msg(1, "bob@example.com", "sent in 0-RTT"),
        },
        Up::Publish {
            req: 2,
            presence: open("on the train"),
        },
    ]
}

#[test]
fn early_messages_are_stored_and_answered_at_once_but_state_waits_for_confirmation() {
    let mut w = World::new();
    w.open(9, "bob@example.com", 0xb1, 0);
    let early = w.early(1, first_flight());
    let to_alice = frames_to(&early, 1);
    assert!(
        matches!(to_alice.first(), Some(Down::Opened(_))),
        "answered at once: {to_alice:?}"
    );
    assert_eq!(
        delivered_seqs(&early, 9),
        vec![1],
        "the message reached bob at once"
    );
    assert!(
        !to_alice.contains(&Down::Ok { req: 2 }),
        "the publish waits"
    );
    assert!(w.store.presence("alice@example.com").unwrap().is_none());
    // Bob takes it: alice's receipt goes out before her handshake is even confirmed.
    let acked = w.frame(9, Up::Ack { upto: 1 });
    assert_eq!(
        frames_to(&acked, 1),
        vec![Down::Receipt {
            req: 1,
            status: ReceiptStatus::Delivered
        }]
    );

    let confirmed = w.confirm(1);
    let frames = frames_to(&confirmed, 1);
    assert!(
        !frames.iter().any(|f| matches!(f, Down::Opened(_))),
        "answered once: {frames:?}"
    );
    assert!(
        frames.contains(&Down::Ok { req: 2 }),
        "the waiting publish ran"
    );
    assert!(
        w.store
            .presence("alice@example.com")
            .unwrap()
            .unwrap()
            .doc
            .presence
            .is_open()
    );
    assert_eq!(w.hub.sessions_of("alice@example.com"), 1);
}

#[test]
fn presence_that_changes_between_the_early_answer_and_confirmation_is_restated() {
    let mut w = World::new();
    w.login(2, "bob@example.com");
    w.open(1, "alice@example.com", 0xa1, 0);
    w.frame(
        1,
        Up::Subscribe {
            req: 1,
            target: "bob@example.com".into(),
        },
    );
    w.disconnect(1); // parked
    let early = w.early(3, vec![open_frame("alice@example.com", 0xa1, 0, true)]);
    assert_eq!(notified(&early, 3).len(), 1, "the current state, at once");
    w.now += 1;
    w.frame(
        2,
        Up::Publish {
            req: 1,
            presence: open("changed meanwhile"),
        },
    );
    let confirmed = w.confirm(3);
    let docs = notified(&confirmed, 3);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(
        docs[0].presence.tuples[0].note.as_deref(),
        Some("changed meanwhile")
    );
}

#[test]
fn a_replayed_first_flight_delivers_nothing_twice_and_changes_nothing() {
    let mut w = World::new();
    w.open(9, "bob@example.com", 0xb1, 0);
    w.frame(
        9,
        Up::Subscribe {
            req: 1,
            target: "alice@example.com".into(),
        },
    );
    w.early(1, first_flight());
    w.confirm(1);
    w.frame(9, Up::Ack { upto: 1 });
    w.frame(
        1,
        Up::Publish {
            req: 3,
            presence: open("later state"),
        },
    );
    let inbox_before = w.store.inbox_last("bob@example.com").unwrap();
    let presence_before = w.store.presence("alice@example.com").unwrap();

    // An attacker replays the recorded flight on a new connection; it never confirms.
    // It is answered with what reading takes (encrypted under keys the attacker does not
    // have), and nothing that it asks to change happens.
    let replay = w.early(2, first_flight());
    let gone = w.disconnect(2);
    assert!(
        !frames_to(&replay, 2).contains(&Down::Ok { req: 2 }),
        "the publish never ran"
    );
    for actions in [&replay, &gone] {
        assert!(
            frames_to(actions, 9).is_empty(),
            "bob sees nothing: {actions:?}"
        );
        assert!(
            closed_with(actions, 1).is_none(),
            "alice's session is not taken over"
        );
    }
    assert_eq!(w.store.inbox_last("bob@example.com").unwrap(), inbox_before);
    assert_eq!(
        w.store.presence("alice@example.com").unwrap(),
        presence_before
    );
    assert_eq!(w.hub.sessions_of("alice@example.com"), 1);
    assert_eq!(w.hub.parked_sessions_of("alice@example.com"), 0);
}

#[test]
fn early_frames_need_an_opening_and_are_bounded() {
    let mut w = World::new();
    let no_open = w.early(
        1,
        vec![Up::Send {
            req: 1,
            msg: msg(1, "bob@example.com", "x"),
        }],
    );
    assert_eq!(closed_with(&no_open, 1), Some(ErrorCode::PROTOCOL));
    let mut flood = vec![open_frame("alice@example.com", 0xa1, 0, true)];
    flood.extend((0..100).map(|i| Up::Fetch {
        req: i,
        target: "bob@example.com".into(),
    }));
    let flooded = w.early(2, flood);
    assert_eq!(closed_with(&flooded, 2), Some(ErrorCode::TOO_LARGE));
    let bad_token = w.early(
        3,
        vec![Up::Open(tern_wire::Open {
            version: VERSION,
            user: "alice@example.com".into(),
            token: "wrong".into(),
            device: vec![1; 16],
            inbox_seen: 0,
            flags: 0,
        })],
    );
    assert_eq!(closed_with(&bad_token, 3), Some(ErrorCode::UNAUTHORIZED));
}

#[test]
fn a_plain_hello_connection_confirmed_before_its_first_frame_works_as_before() {
    let mut w = World::new();
    w.hub.handle_early_connect(w.now, 1);
    assert!(w.confirm(1).is_empty());
    let hello = Hello {
        version: VERSION,
        user: "alice@example.com".into(),
        token: "token-alice@example.com".into(),
    };
    let actions = w.frame(1, Up::Hello(hello));
    assert!(matches!(frames_to(&actions, 1)[0], Down::Welcome(_)));
}

mod access;
mod federation;
mod sync;

#[test]
fn a_principal_over_its_rate_limit_is_told_when_to_retry_and_others_are_unaffected() {
    let mut w = World::new();
    let mut config = w.hub.config().clone();
    for domain in &mut config.domains {
        domain.rates.messages_per_minute = 60;
        domain.rates.burst = 2;
    }
    w.hub = Hub::new(config);
    w.hub.load(w.now, &mut w.store).unwrap();
    w.login(1, "alice@example.com");
    let send = |id| Up::Send {
        req: u32::from(id),
        msg: msg(id, "bob@example.com", "hi"),
    };
    for id in 1..=2 {
        let frames = frames_to(&w.frame(1, send(id)), 1);
        assert!(matches!(frames[..], [Down::Receipt { .. }]), "{frames:?}");
    }
    let frames = frames_to(&w.frame(1, send(3)), 1);
    assert_eq!(
        frames,
        [Down::Limited {
            req: 3,
            retry_after: 1_000
        }]
    );
    assert_eq!(
        w.store.inbox_last("bob@example.com").unwrap(),
        2,
        "nothing stored"
    );
    // Bob is not limited by alice's flood.
    w.login(2, "bob@example.com");
    let frames = frames_to(
        &w.frame(
            2,
            Up::Send {
                req: 9,
                msg: msg(9, "carol@other.org", "yo"),
            },
        ),
        2,
    );
    assert!(matches!(frames[..], [Down::Receipt { .. }]), "{frames:?}");
    // After the wait, the same request goes through (and waits for bob, now online).
    w.now += 1_000;
    let frames = frames_to(&w.frame(1, send(3)), 1);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(w.store.inbox_last("bob@example.com").unwrap(), 3);
}

#[test]
fn a_presentity_learns_of_each_subscription_and_lists_subscribers_and_fetchers() {
    let mut w = World::new();
    w.login(1, "alice@example.com");
    w.login(2, "bob@example.com");
    w.login(3, "carol@other.org");
    let target = "alice@example.com".to_string();
    let actions = w.frame(2, Up::Subscribe { req: 1, target });
    assert_eq!(
        frames_to(&actions, 1),
        [Down::Watched {
            watcher: "bob@example.com".into()
        }]
    );
    // Subscribing again is not news.
    let target = "alice@example.com".to_string();
    assert!(frames_to(&w.frame(2, Up::Subscribe { req: 2, target }), 1).is_empty());
    let target = "alice@example.com".to_string();
    w.frame(3, Up::Fetch { req: 1, target });
    w.now += 5_000;
    let frames = frames_to(&w.frame(1, Up::Watchers { req: 7 }), 1);
    assert_eq!(
        frames,
        [Down::Watchers {
            req: 7,
            subscribers: vec!["bob@example.com".into()],
            fetchers: vec![tern_wire::Fetcher {
                who: "carol@other.org".into(),
                age: 5,
                count: 1
            }],
        }]
    );
}
