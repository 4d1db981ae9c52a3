//! Golden-byte vectors: the wire contract of tern/1.
//!
//! postcard is not self-describing, so a changed field order, type or variant position
//! would silently change the bytes. Each test below pins one frame variant (or one
//! variant of a type nested in a frame): the value is encoded through the allocation-free
//! [`encode_into`](tern_wire::codec::encode_into) and must give exactly the hex, and the
//! hex must decode to exactly the value. The hex is the single source of truth; the worked
//! examples in `docs/protocol.md` are copied from here.
//!
//! Hex is written one field per group; whitespace and `#` comments to the end of a line
//! are ignored. The same source runs in the
//! `std` build and in the `no_std` (heapless) build: the bytes must not depend on it.
//! A change that makes one of these fail is a protocol change, not a test update.

mod common;

use core::fmt::Debug;

use common::{blob, key, list, name, text, unwire, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::delta::{Check, Field, Op};
use tern_wire::frame::{Open, Opened, Welcome};
use tern_wire::{
    AdminOp, Availability, Basic, Batch, CardField, CardKind, Change, ClientMode, Decision,
    Delegate, Delivery, Down, ErrorCode, Ext, Fetcher, Have, Held, Hello, InboxItem, InboxRule,
    Incoming, Item, LateReceipt, Message, Operate, Presence, PresenceDoc, PresenceRule,
    ReceiptStatus, Rules, SubInfo, SubState, Tuple, Up, View, When, Who,
};

/// Asserts that `value` encodes to `hex` (length prefix included) and back.
fn golden<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, hex: &str) {
    let hex = strip(hex);
    let want = hex::decode(&hex).expect("golden hex is valid");
    assert_eq!(hex::encode(wire(value)), hex, "encoding of {value:?}");
    assert_eq!(&unwire::<T>(&want), value, "decoding of {hex}");
}

/// The hex digits of an annotated dump: whitespace and `#` comments dropped.
fn strip(hex: &str) -> String {
    hex.lines()
        .flat_map(|line| {
            line.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
        })
        .collect()
}

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// 2023-11-14T22:13:20Z.
const T_SECS: u64 = 1_700_000_000;
const T_MILLIS: u64 = T_SECS * 1000;
const MSG_ID: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

/// One tuple with every optional field present and one extension, plus a card field.
fn full_presence() -> Presence {
    Presence {
        tuples: list([Tuple {
            id: name("phone"),
            basic: Basic::Open,
            availability: Some(Availability::AWAY),
            contact: Some(text("tern:alice@example.com")),
            note: Some(text("on a train")),
            at: Some(T_SECS),
            ext: list([Ext {
                key: name("x-mood"),
                value: blob(b"ok"),
            }]),
        }]),
        card: list([CardField {
            kind: CardKind::NAME,
            value: text("Alice"),
        }]),
    }
}

/// One tuple with only the required fields: what most publishes look like.
fn available(id: &str) -> Presence {
    Presence {
        tuples: list([Tuple {
            id: name(id),
            basic: Basic::Open,
            availability: Some(Availability::AVAILABLE),
            contact: None,
            note: None,
            at: None,
            ext: list([]),
        }]),
        card: list([]),
    }
}

// ---- Up: client to gateway -------------------------------------------------------

#[test]
fn up_0_hello() {
    let frame = Up::Hello(Hello {
        version: 1,
        user: name(ALICE),
        token: text("s3cret"),
    });
    golden(
        &frame,
        "1b 00 01 11 616c696365406578616d706c652e636f6d 06 733363726574",
    );
}

#[test]
fn up_1_publish() {
    let frame = Up::Publish {
        req: 1,
        presence: full_presence(),
    };
    golden(
        &frame,
        r#"
        49                          # length: 73
        01                          # Up::Publish
        01                          # req: 1
        01                          # tuples: 1
        05 70686f6e65               # id: "phone"
        01                          # basic: Open (1)
        01 01                       # availability: Some(1 away)
        01 16 7465726e3a616c696365  # contact: Some(22 bytes "tern:alice@example.com")
        406578616d706c652e636f6d    #   (continued)
        01 0a 6f6e206120747261696e  # note: Some("on a train")
        01 80e2cfaa06               # at: Some(1700000000)
        01                          # ext: 1
        06 782d6d6f6f64             # key: "x-mood"
        02 6f6b                     # value: b"ok"
        01                          # card: 1
        00                          # kind: 0 name
        05 416c696365               # value: "Alice"
        "#,
    );
}

#[test]
fn up_2_fetch() {
    let frame = Up::Fetch {
        req: 2,
        target: name(BOB),
    };
    golden(&frame, "12 02 02 0f 626f62406578616d706c652e636f6d");
}

#[test]
fn up_3_subscribe() {
    let frame = Up::Subscribe {
        req: 3,
        target: name(BOB),
    };
    golden(&frame, "12 03 03 0f 626f62406578616d706c652e636f6d");
}

#[test]
fn up_4_unsubscribe() {
    let frame = Up::Unsubscribe {
        req: 4,
        target: name(BOB),
    };
    golden(&frame, "12 04 04 0f 626f62406578616d706c652e636f6d");
}

#[test]
fn up_5_send() {
    let frame = Up::Send {
        req: 5,
        msg: Message {
            id: key(&MSG_ID),
            to: name(BOB),
            reply_to: None,
            content_type: None,
            body: blob(b"hi"),
        },
    };
    golden(
        &frame,
        r#"
        28                                 # length: 40
        05                                 # Up::Send
        05                                 # req: 5
        10 0011223344556677                # id: 16 bytes
        8899aabbccddeeff                   #   (continued)
        0f 626f62406578616d706c652e636f6d  # to: "bob@example.com"
        00                                 # reply_to: None
        00                                 # content_type: None (text/plain;charset=utf-8)
        02 6869                            # body: b"hi"
        "#,
    );
}

#[test]
fn up_5_send_with_options() {
    let frame = Up::Send {
        req: 300,
        msg: Message {
            id: key(&[7]),
            to: name(BOB),
            reply_to: Some(name("team@example.com")),
            content_type: Some(text("text/markdown")),
            body: blob(b"*hi*"),
        },
    };
    golden(
        &frame,
        r#"
        3b                                      # length: 59
        05                                      # Up::Send
        ac02                                    # req: 300
        01 07                                   # id: 1 byte
        0f 626f62406578616d706c652e636f6d       # to: "bob@example.com"
        01 10 7465616d406578616d706c652e636f6d  # reply_to: Some("team@example.com")
        01 0d 746578742f6d61726b646f776e        # content_type: Some("text/markdown")
        04 2a68692a                             # body: b"*hi*"
        "#,
    );
}

#[test]
fn up_6_ack() {
    golden(&Up::Ack { upto: 300 }, "03 06 ac02");
}

#[test]
fn up_7_bye() {
    golden(&Up::Bye, "01 07");
}

#[test]
fn up_8_open() {
    let frame = Up::Open(open_frame());
    golden(
        &frame,
        "23 08 01
         11 616c696365406578616d706c652e636f6d  # user
         06 733363726574                        # token \"s3cret\"
         04 deadbeef                            # device
         e807                                   # inbox_seen 1000
         01                                     # flags: INBOX",
    );
}

#[test]
fn up_9_have() {
    let frame = Up::Have(Have {
        req: 1,
        mode: ClientMode::INACTIVE,
        held: list([
            Held {
                slot: 1,
                version: 7,
            },
            Held {
                slot: 2,
                version: 300,
            },
        ]),
    });
    golden(
        &frame,
        r#"
        09        # length: 9
        09        # Up::Have
        01        # req: 1
        01        # mode: 1 inactive
        02        # held: 2
        01 07     # slot 1 at version 7
        02 ac02   # slot 2 at version 300
        "#,
    );
}

#[test]
fn up_10_mode() {
    golden(
        &Up::Mode {
            mode: ClientMode::SLEEPY,
        },
        "02 0a 02",
    );
}

#[test]
fn up_11_applied() {
    golden(&Up::Applied { batch: 5 }, "02 0b 05");
}

#[test]
fn up_12_fetch_if() {
    let frame = Up::FetchIf {
        req: 3,
        target: name(BOB),
        version: 9,
    };
    golden(&frame, "13 0c 03 0f 626f62406578616d706c652e636f6d 09");
}

fn open_frame() -> Open {
    Open {
        version: 1,
        user: name(ALICE),
        token: text("s3cret"),
        device: key(&[0xde, 0xad, 0xbe, 0xef]),
        inbox_seen: 1000,
        flags: Open::INBOX,
    }
}

// ---- Down: gateway to client -----------------------------------------------------

#[test]
fn down_0_welcome() {
    let frame = Down::Welcome(Welcome {
        version: 1,
        user: name(ALICE),
        frame_max: 65_536,
        body_max: 16_384,
        time: T_MILLIS,
    });
    golden(
        &frame,
        "20 00 01 11 616c696365406578616d706c652e636f6d 808004 808001 80d095ffbc31",
    );
}

#[test]
fn down_1_ok() {
    golden(&Down::Ok { req: 1 }, "02 01 01");
}

#[test]
fn down_2_fail() {
    let frame = Down::Fail {
        req: 2,
        code: ErrorCode::UNKNOWN_USER,
        text: text("no such user"),
    };
    golden(&frame, "10 02 02 06 0c 6e6f20737563682075736572");
}

#[test]
fn down_3_presence_never_published() {
    let frame = Down::Presence {
        req: 3,
        doc: PresenceDoc {
            presentity: name(BOB),
            updated: 0,
            presence: Presence::default(),
        },
    };
    golden(
        &frame,
        "15 03 03 0f 626f62406578616d706c652e636f6d 00 00 00",
    );
}

#[test]
fn down_3_presence_full() {
    let frame = Down::Presence {
        req: 3,
        doc: PresenceDoc {
            presentity: name(ALICE),
            updated: T_MILLIS,
            presence: full_presence(),
        },
    };
    golden(
        &frame,
        r#"
        61                                     # length: 97
        03                                     # Down::Presence
        03                                     # req: 3
        11 616c696365406578616d706c652e636f6d  # presentity: "alice@example.com"
        80d095ffbc31                           # updated: 1700000000000
        01                                     # tuples: 1
        05 70686f6e65                          # id: "phone"
        01                                     # basic: Open (1)
        01 01                                  # availability: Some(1 away)
        01 16 7465726e3a616c696365             # contact: Some(22 bytes "tern:alice@example.com")
        406578616d706c652e636f6d               #   (continued)
        01 0a 6f6e206120747261696e             # note: Some("on a train")
        01 80e2cfaa06                          # at: Some(1700000000)
        01                                     # ext: 1
        06 782d6d6f6f64                        # key: "x-mood"
        02 6f6b                                # value: b"ok"
        01                                     # card: 1
        00                                     # kind: 0 name
        05 416c696365                          # value: "Alice"
        "#,
    );
}

#[test]
fn down_4_receipt_delivered() {
    let frame = Down::Receipt {
        req: 5,
        status: ReceiptStatus::Delivered,
    };
    golden(&frame, "03 04 05 00");
}

#[test]
fn down_4_receipt_stored() {
    let frame = Down::Receipt {
        req: 5,
        status: ReceiptStatus::Stored,
    };
    golden(&frame, "03 04 05 01");
}

#[test]
fn down_4_receipt_failed() {
    let frame = Down::Receipt {
        req: 5,
        status: ReceiptStatus::Failed(ErrorCode::REFUSED),
    };
    golden(&frame, "04 04 05 02 08");
}

#[test]
fn down_4_receipt_relayed() {
    let frame = Down::Receipt {
        req: 5,
        status: ReceiptStatus::Relayed,
    };
    golden(&frame, "03 04 05 03");
}

#[test]
fn down_5_notify() {
    let frame = Down::Notify {
        doc: PresenceDoc {
            presentity: name(BOB),
            updated: T_MILLIS,
            presence: available("phone"),
        },
    };
    golden(
        &frame,
        r#"
        26                                 # length: 38
        05                                 # Down::Notify
        0f 626f62406578616d706c652e636f6d  # presentity: "bob@example.com"
        80d095ffbc31                       # updated: 1700000000000
        01                                 # tuples: 1
        05 70686f6e65                      # id: "phone"
        01                                 # basic: Open (1)
        01 00                              # availability: Some(0 available)
        00                                 # contact: None
        00                                 # note: None
        00                                 # at: None
        00                                 # ext: 0
        00                                 # card: 0
        "#,
    );
}

#[test]
fn down_6_deliver_message() {
    let frame = Down::Deliver {
        seq: 1,
        item: InboxItem::Message(Incoming {
            id: key(&MSG_ID),
            from: name(ALICE),
            to: name(BOB),
            reply_to: None,
            content_type: None,
            body: blob(b"hi"),
            sent: T_MILLIS,
        }),
    };
    golden(
        &frame,
        r#"
        41                                     # length: 65
        06                                     # Down::Deliver
        01                                     # seq: 1
        00                                     # InboxItem::Message
        10 0011223344556677                    # id: 16 bytes
        8899aabbccddeeff                       #   (continued)
        11 616c696365406578616d706c652e636f6d  # from: "alice@example.com"
        0f 626f62406578616d706c652e636f6d      # to: "bob@example.com"
        00                                     # reply_to: None
        00                                     # content_type: None
        02 6869                                # body: b"hi"
        80d095ffbc31                           # sent: 1700000000000
        "#,
    );
}

#[test]
fn down_6_deliver_receipt() {
    let frame = Down::Deliver {
        seq: 2,
        item: InboxItem::Receipt(LateReceipt {
            id: key(&MSG_ID),
            to: name(BOB),
            status: ReceiptStatus::Delivered,
        }),
    };
    golden(
        &frame,
        "25 06 02 01 10 00112233445566778899aabbccddeeff 0f 626f62406578616d706c652e636f6d 00",
    );
}

#[test]
fn down_7_close() {
    let frame = Down::Close {
        code: ErrorCode::SHUTDOWN,
        text: text("restarting"),
    };
    golden(&frame, "0d 07 0e 0a 72657374617274696e67");
}

#[test]
fn down_8_opened() {
    let frame = Down::Opened(opened_frame());
    golden(
        &frame,
        "27 08 01
         11 616c696365406578616d706c652e636f6d  # user
         808004 808001                          # frame_max, body_max
         80d095ffbc31                           # time
         01                                     # resumed
         b0ea01                                 # resume_window 30000
         a09c01                                 # keepalive 20000",
    );
}

/// A batch with one change, as every build decodes it.
fn small_batch() -> Batch {
    let mut check = Check::new();
    check.gone(3);
    Batch {
        seq: 1,
        time: T_SECS,
        check: check.finish(),
        changes: [Change::Gone { slot: 3 }].into_iter().collect(),
    }
}

#[test]
fn down_9_batch_of_one() {
    golden(
        &Down::Batch(small_batch()),
        "0e 09 01 80e2cfaa06 37be0b4b 01 02 03 # seq 1, time, check, one change: Gone slot 3",
    );
}

/// A batch with one change of each kind, and its checksum computed the documented way.
#[cfg(feature = "std")]
fn batch_frame() -> Batch {
    let mut busy = available("phone");
    busy.tuples[0].availability = Some(Availability::BUSY);
    let mut check = Check::new();
    check.state(1, BOB, 8, &busy);
    check.state(2, "carol@example.com", 1, &available("phone"));
    check.gone(3);
    Batch {
        seq: 4,
        time: T_SECS,
        check: check.finish(),
        changes: list([
            Change::Delta {
                slot: 1,
                version: 8,
                back: 1,
                age: 0,
                ops: list([Op::Set {
                    i: 0,
                    field: Field::Availability(Some(Availability::BUSY)),
                }]),
            },
            Change::Full {
                slot: 2,
                version: 1,
                age: 5,
                name: Some(name("carol@example.com")),
                presence: available("phone"),
            },
            Change::Gone { slot: 3 },
        ]),
    }
}

#[cfg(feature = "std")]
#[test]
fn down_9_batch() {
    golden(
        &Down::Batch(batch_frame()),
        r#"
        3f                       # length: 63
        09                       # Down::Batch
        04                       # seq: 4
        80e2cfaa06               # time: 1700000000 (seconds)
        4b941bf0                 # check: CRC-32 0xf01b944b, little-endian
        03                       # changes: 3
        01                       # Change::Delta
        01 08 01 00              # slot 1, version 8, back 1, age 0
        01                       # ops: 1
        00 00                    # Op::Set, tuple 0
        01 01 02                 # Field::Availability, Some(2 busy)
        00                       # Change::Full
        02 01 05                 # slot 2, version 1, age 5
        01 11 6361726f6c40       # name: Some("carol@example.com")
        6578616d706c652e636f6d   #   (continued)
        01 05 70686f6e65 01      # presence: one tuple "phone", Open,
        01 00 00 00 00 00 00     #   available, no contact/note/at/ext; no card
        02 03                    # Change::Gone, slot 3
        "#,
    );
}

#[test]
fn down_10_synced_unchanged() {
    let frame = Down::Synced {
        req: 1,
        batch: Batch {
            seq: 1,
            time: T_SECS,
            check: Check::new().finish(),
            changes: Default::default(),
        },
    };
    golden(
        &frame,
        "0d 0a 01 01 80e2cfaa06 00000000 00 # req 1, seq 1, time, check of nothing, no changes",
    );
}

#[test]
fn down_11_subscribed() {
    let frame = Down::Subscribed {
        req: 2,
        slot: 1,
        version: 7,
        doc: PresenceDoc {
            presentity: name(BOB),
            updated: T_MILLIS,
            presence: available("phone"),
        },
    };
    golden(
        &frame,
        r#"
        29 0b 02 01 07                      # length 41, Down::Subscribed, req 2, slot 1, version 7
        0f 626f62406578616d706c652e636f6d   # presentity: "bob@example.com"
        80d095ffbc31                        # updated: 1700000000000
        01 05 70686f6e65 01 01 00 00 00 00 00 00
        "#,
    );
}

#[test]
fn down_12_versioned() {
    let frame = Down::Versioned {
        req: 3,
        version: 9,
        doc: PresenceDoc {
            presentity: name(BOB),
            updated: T_MILLIS,
            presence: available("phone"),
        },
    };
    golden(
        &frame,
        r#"
        28 0c 03 09                         # length 40, Down::Versioned, req 3, version 9
        0f 626f62406578616d706c652e636f6d   # presentity: "bob@example.com"
        80d095ffbc31                        # updated: 1700000000000
        01 05 70686f6e65 01 01 00 00 00 00 00 00
        "#,
    );
}

#[test]
fn up_13_watchers() {
    golden(
        &Up::Watchers { req: 4 },
        "02 0d 04 # length 2, Up::Watchers, req 4",
    );
}

#[test]
fn down_14_watchers() {
    let frame = Down::Watchers {
        req: 4,
        subscribers: list([name(BOB)]),
        fetchers: list([Fetcher {
            who: name("carol@example.com"),
            age: 30,
            count: 2,
        }]),
    };
    golden(
        &frame,
        r#"
        28                                   # length: 40
        0e 04                                # Down::Watchers, req 4
        01 0f 626f62406578616d706c652e636f6d # subscribers: "bob@example.com"
        01 11 6361726f6c406578616d706c652e   # fetchers: "carol@example.com",
        636f6d 1e 02                         #   30 s ago, twice
        "#,
    );
}

#[test]
fn down_15_watched() {
    let frame = Down::Watched { watcher: name(BOB) };
    golden(
        &frame,
        "11 0f 0f 626f62406578616d706c652e636f6d # length 17, Down::Watched, bob@example.com",
    );
}

#[test]
fn down_13_limited() {
    let frame = Down::Limited {
        req: 5,
        retry_after: 1500,
    };
    golden(
        &frame,
        "04 0d 05 dc0b # length 4, Down::Limited, req 5, retry after 1500 ms",
    );
}

/// Every [`Op`] and [`Field`] variant, without the frame's length prefix.
#[test]
fn delta_ops() {
    let body = |op: &Op| hex::encode(&wire(op)[1..]);
    let cases = [
        (
            Op::Set {
                i: 0,
                field: Field::Basic(Basic::Closed),
            },
            "00 00 00 00", // Set, tuple 0, Basic, Closed
        ),
        (
            Op::Set {
                i: 0,
                field: Field::Contact(None),
            },
            "00 00 02 00",
        ),
        (
            Op::Set {
                i: 1,
                field: Field::Note(Some(text("lunch"))),
            },
            "00 01 03 01 05 6c756e6368",
        ),
        (
            Op::Set {
                i: 0,
                field: Field::At(Some(T_SECS)),
            },
            "00 00 04 01 80e2cfaa06",
        ),
        (
            Op::Set {
                i: 0,
                field: Field::Ext(list([Ext::wake(T_SECS + 3600)])),
            },
            "00 00 05 01 04 77616b65 05 90fecfaa06", // one ext "wake" = varint seconds
        ),
        (
            Op::Insert {
                i: 1,
                tuple: available("phone").tuples[0].clone(),
            },
            "01 01 05 70686f6e65 01 01 00 00 00 00 00",
        ),
        (Op::Remove { i: 1 }, "02 01"),
        (
            Op::Card(list([CardField {
                kind: CardKind::NAME,
                value: text("Bob"),
            }])),
            "03 01 00 03 426f62",
        ),
    ];
    for (op, hex) in cases {
        let hex: String = hex.split_whitespace().collect();
        assert_eq!(body(&op), hex, "{op:?}");
        assert_eq!(unwire::<Op>(&wire(&op)), op);
    }
}

fn opened_frame() -> Opened {
    Opened {
        version: 1,
        user: name(ALICE),
        frame_max: 65_536,
        body_max: 16_384,
        time: T_MILLIS,
        resumed: true,
        resume_window: 30_000,
        keepalive: 20_000,
    }
}

// ---- Access rules (issue 5): rules, decisions, subscriptions, delegates, administrators --

const CAROL: &str = "carol@example.com";

/// Asserts that `value` encodes to `hex` without the frame's length prefix (the value
/// alone, as it sits inside a frame) and back. For parts under 128 bytes.
fn part<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, hex: &str) {
    let hex = strip(hex);
    let bytes = wire(value);
    assert_eq!(usize::from(bytes[0]), bytes.len() - 1, "a one-byte prefix");
    assert_eq!(hex::encode(&bytes[1..]), hex, "encoding of {value:?}");
    assert_eq!(&unwire::<T>(&bytes), value, "decoding of {hex}");
}

/// Rules that use every kind of `Who`, every `Decision`, a view with tuples, hidden
/// fields and a status, a time window on each side of midnight, every `Delivery` and a
/// delegate: all within the no_std capacities (lists of 4).
fn every_rule() -> Rules {
    Rules {
        presence: list([
            PresenceRule {
                who: Who::User(name(BOB)),
                decision: Decision::Polite,
                view: None,
                when: None,
            },
            PresenceRule {
                who: Who::Domain(name("example.com")),
                decision: Decision::Allow,
                view: Some(View {
                    tuples: list([name("phone")]),
                    hide: View::NOTE | View::CARD,
                    status: Some(Availability::BUSY),
                }),
                when: Some(When {
                    days: 0x1f,
                    from: 9 * 60,
                    to: 18 * 60,
                    offset: 60,
                }),
            },
            PresenceRule {
                who: Who::Anonymous,
                decision: Decision::Deny,
                view: None,
                when: None,
            },
            PresenceRule {
                who: Who::Anyone,
                decision: Decision::Ask,
                view: None,
                when: Some(When {
                    days: 0x60,
                    from: 22 * 60,
                    to: 7 * 60,
                    offset: -300,
                }),
            },
        ]),
        inbox: list([
            InboxRule {
                who: Who::User(name(BOB)),
                delivery: Delivery::Refuse,
            },
            InboxRule {
                who: Who::Domain(name("example.com")),
                delivery: Delivery::Accept,
            },
            InboxRule {
                who: Who::Anyone,
                delivery: Delivery::Discard,
            },
        ]),
        delegates: list([Delegate {
            who: name(CAROL),
            rights: Delegate::PUBLISH | Delegate::READ,
        }]),
    }
}

/// Three rules as a person sets them: colleagues see "busy" and no notes on working
/// days, 09:00 to 18:00 in UTC+1; the family sees everything; anonymous peers nothing.
fn three_rules() -> Rules {
    Rules {
        presence: list([
            PresenceRule {
                who: Who::Domain(name("example.com")),
                decision: Decision::Allow,
                view: Some(View {
                    tuples: list([]),
                    hide: View::NOTE,
                    status: Some(Availability::BUSY),
                }),
                when: Some(When {
                    days: 0x1f,
                    from: 9 * 60,
                    to: 18 * 60,
                    offset: 60,
                }),
            },
            PresenceRule {
                who: Who::User(name("mum@example.com")),
                decision: Decision::Allow,
                view: None,
                when: None,
            },
            PresenceRule {
                who: Who::Anonymous,
                decision: Decision::Deny,
                view: None,
                when: None,
            },
        ]),
        inbox: list([]),
        delegates: list([]),
    }
}

#[test]
fn up_14_get_rules() {
    golden(
        &Up::GetRules { req: 6 },
        "02 0e 06 # length 2, Up::GetRules, req 6",
    );
}

#[test]
fn up_15_set_rules() {
    let frame = Up::SetRules {
        req: 5,
        rules: every_rule(),
    };
    golden(
        &frame,
        r#"
        7d                                  # length: 125
        0f                                  # Up::SetRules
        05                                  # req: 5
        04                                  # presence: 4 rules
        01 0f 626f62406578616d706c652e636f6d  # who: User("bob@example.com")
        03                                  #   decision: Polite
        00 00                               #   view: None, when: None
        02 0b 6578616d706c652e636f6d        # who: Domain("example.com")
        00                                  #   decision: Allow
        01                                  #   view: Some
        01 05 70686f6e65                    #     tuples: ["phone"]
        12                                  #     hide: NOTE | CARD
        01 02                               #     status: Some(2 busy)
        01                                  #   when: Some
        1f                                  #     days: Monday to Friday
        9c04 b808                           #     from 540 (09:00) to 1080 (18:00)
        78                                  #     offset: +60, zigzag 120
        03 01 00 00                         # who: Anonymous, Deny, no view, always
        00 02 00                            # who: Anyone, Ask, no view
        01 60                               #   when: Some, Saturday and Sunday
        a80a a403                           #     from 1320 (22:00) to 420 (07:00)
        d704                                #     offset: -300, zigzag 599
        03                                  # inbox: 3 rules
        01 0f 626f62406578616d706c652e636f6d 01  # User("bob@example.com"): Refuse
        02 0b 6578616d706c652e636f6d 00     # Domain("example.com"): Accept
        00 02                               # Anyone: Discard
        01                                  # delegates: 1
        11 6361726f6c406578616d706c652e636f6d  # who: "carol@example.com"
        03                                  #   rights: PUBLISH | READ
        "#,
    );
}

#[test]
fn up_16_decide() {
    let frame = Up::Decide {
        req: 7,
        watcher: name(BOB),
        decision: Decision::Allow,
    };
    golden(
        &frame,
        "13 10 07 0f 626f62406578616d706c652e636f6d 00 # length 19, Decide, req 7, bob, Allow",
    );
}

#[test]
fn up_17_cancel() {
    let frame = Up::Cancel {
        req: 8,
        watcher: name(BOB),
    };
    golden(
        &frame,
        "12 11 08 0f 626f62406578616d706c652e636f6d # length 18, Cancel, req 8, bob",
    );
}

#[test]
fn up_18_subscriptions() {
    let incoming = Up::Subscriptions {
        req: 9,
        incoming: true,
    };
    golden(
        &incoming,
        "03 12 09 01 # length 3, Subscriptions, req 9, incoming: true",
    );
    let own = Up::Subscriptions {
        req: 9,
        incoming: false,
    };
    golden(&own, "03 12 09 00 # incoming: false");
}

#[test]
fn up_19_publish_for() {
    let frame = Up::PublishFor {
        req: 10,
        presentity: name(ALICE),
        presence: available("phone"),
    };
    golden(
        &frame,
        r#"
        23                                     # length: 35
        13                                     # Up::PublishFor
        0a                                     # req: 10
        11 616c696365406578616d706c652e636f6d  # presentity: "alice@example.com"
        01 05 70686f6e65 01 01 00 00 00 00 00  # presence: tuple "phone", Open, available
        00                                     #   no card
        "#,
    );
}

#[test]
fn up_20_read() {
    let frame = Up::Read {
        req: 11,
        inbox: name(ALICE),
        after: 300,
    };
    golden(
        &frame,
        "16 14 0b 11 616c696365406578616d706c652e636f6d ac02 # length 22, Read, req 11, alice, after 300",
    );
}

#[test]
fn up_21_operate() {
    let frame = Up::Operate(Operate {
        version: 1,
        domain: name("example.com"),
        token: text("s3cret"),
    });
    golden(
        &frame,
        r#"
        15                          # length: 21
        15                          # Up::Operate
        01                          # version: 1
        0b 6578616d706c652e636f6d   # domain: "example.com"
        06 733363726574             # token: "s3cret"
        "#,
    );
}

#[test]
fn up_22_admin() {
    let frame = Up::Admin {
        req: 12,
        user: name(BOB),
        op: AdminOp::GetRules,
    };
    golden(
        &frame,
        "13 16 0c 0f 626f62406578616d706c652e636f6d 02 # length 19, Admin, req 12, bob, GetRules",
    );
}

/// Every [`AdminOp`] variant, without the frame's length prefix.
#[test]
fn admin_ops() {
    part(&AdminOp::Watchers, "00");
    part(&AdminOp::Subscriptions { incoming: true }, "01 01");
    part(&AdminOp::GetRules, "02");
    part(&AdminOp::SetRules(Rules::default()), "03 00 00 00");
    part(&AdminOp::GetPresence, "04");
    part(
        &AdminOp::SetPresence(available("phone")),
        "05 01 05 70686f6e65 01 01 00 00 00 00 00 00",
    );
    part(
        &AdminOp::Cancel(name(BOB)),
        "06 0f 626f62406578616d706c652e636f6d",
    );
}

/// The parts of [`Rules`] one by one, without the frame's length prefix.
#[test]
fn rules_parts() {
    part(&Who::Anyone, "00");
    part(
        &Who::User(name(BOB)),
        "01 0f 626f62406578616d706c652e636f6d",
    );
    part(
        &Who::Domain(name("example.com")),
        "02 0b 6578616d706c652e636f6d",
    );
    part(&Who::Anonymous, "03");

    part(&Decision::Allow, "00");
    part(&Decision::Deny, "01");
    part(&Decision::Ask, "02");
    part(&Decision::Polite, "03");
    part(&Decision::FetchOnly, "04");

    part(&Delivery::Accept, "00");
    part(&Delivery::Refuse, "01");
    part(&Delivery::Discard, "02");

    part(&SubState::Active, "00");
    part(&SubState::Pending, "01");
    part(&SubState::Denied, "02");
    part(&SubState::Cancelled, "03");

    // A view: tuples (list of strings), hide (one raw byte), status (option of one raw
    // byte; a value unknown to this build travels unchanged).
    part(&View::default(), "00 00 00");
    part(
        &View {
            tuples: list([name("phone"), name("laptop")]),
            hide: View::CONTACT | View::NOTE | View::TIME | View::EXT | View::CARD,
            status: Some(Availability(200)),
        },
        "02 05 70686f6e65 06 6c6170746f70 1f 01 c8",
    );
    assert_eq!(
        [View::CONTACT, View::NOTE, View::TIME, View::EXT, View::CARD],
        [1, 2, 4, 8, 16]
    );

    // A window: days (one raw byte), from and to (u16 varints), offset (i16, zigzag
    // varint: 0 → 0, -1 → 1, 1 → 2, …).
    let when = |days, from, to, offset| When {
        days,
        from,
        to,
        offset,
    };
    part(&when(0x7f, 0, 1440, 0), "7f 00 a00b 00");
    part(&when(0x01, 1439, 1, -1), "01 9f0b 01 01");
    part(&when(0x40, 0, 60, 1), "40 00 3c 02");
    part(&when(0x1f, 540, 1080, 840), "1f 9c04 b808 900d");
    part(&when(0x1f, 540, 1080, -840), "1f 9c04 b808 8f0d");
    part(&when(0x1f, 0, 1, i16::MIN), "1f 00 01 ffff03");
    part(&when(0x1f, 0, 1, i16::MAX), "1f 00 01 feff03");

    part(
        &PresenceRule {
            who: Who::Anyone,
            decision: Decision::Allow,
            view: None,
            when: None,
        },
        "00 00 00 00",
    );
    part(
        &InboxRule {
            who: Who::Anonymous,
            delivery: Delivery::Accept,
        },
        "03 00",
    );
    part(
        &Delegate {
            who: name(ALICE),
            rights: Delegate::PUBLISH,
        },
        "11 616c696365406578616d706c652e636f6d 01",
    );
    assert_eq!([Delegate::PUBLISH, Delegate::READ], [1, 2]);
    part(
        &Rules::default(),
        "00 00 00 # no presence rules, no inbox rules, no delegates",
    );
    part(
        &SubInfo {
            who: name(BOB),
            state: SubState::Pending,
        },
        "0f 626f62406578616d706c652e636f6d 01",
    );
    part(
        &Item {
            seq: 300,
            item: InboxItem::Receipt(LateReceipt {
                id: key(&[7]),
                to: name(BOB),
                status: ReceiptStatus::Stored,
            }),
        },
        "ac02 01 01 07 0f 626f62406578616d706c652e636f6d 01",
    );
}

/// Booleans are one byte, `00` or `01`; any other byte is malformed.
#[test]
fn booleans_are_one_byte_zero_or_one() {
    use tern_wire::codec::{CodecError, decode};
    use tern_wire::limits::FRAME_MAX;

    for bad in [0x02, 0x80, 0xff] {
        assert_eq!(
            decode::<Up>(&[0x03, 0x12, 0x09, bad], FRAME_MAX),
            Err(CodecError::Malformed),
            "Subscriptions with incoming {bad:#04x}"
        );
    }
}

#[test]
fn down_16_pending() {
    golden(
        &Down::Pending { req: 2 },
        "02 10 02 # length 2, Down::Pending, req 2",
    );
}

#[test]
fn down_17_asked() {
    let frame = Down::Asked { watcher: name(BOB) };
    golden(
        &frame,
        "11 11 0f 626f62406578616d706c652e636f6d # length 17, Down::Asked, bob@example.com",
    );
}

#[test]
fn down_18_rules() {
    let frame = Down::Rules {
        req: 6,
        rules: three_rules(),
    };
    golden(
        &frame,
        r#"
        37                                  # length: 55
        12                                  # Down::Rules
        06                                  # req: 6
        03                                  # presence: 3 rules
        02 0b 6578616d706c652e636f6d        # who: Domain("example.com")
        00                                  #   decision: Allow
        01 00 02 01 02                      #   view: Some: all tuples, hide NOTE, status busy
        01 1f 9c04 b808 78                  #   when: Some: Mon-Fri, 09:00-18:00, UTC+1
        01 0f 6d756d406578616d706c652e636f6d  # who: User("mum@example.com")
        00 00 00                            #   Allow, whole document, always
        03 01 00 00                         # who: Anonymous, Deny, no view, always
        00                                  # inbox: no rules
        00                                  # delegates: none
        "#,
    );
}

#[test]
fn down_18_rules_none() {
    let frame = Down::Rules {
        req: 6,
        rules: Rules::default(),
    };
    golden(&frame, "05 12 06 00 00 00 # req 6, no rules of any kind");
}

#[test]
fn down_19_subscriptions() {
    let frame = Down::Subscriptions {
        req: 9,
        list: list([
            SubInfo {
                who: name(BOB),
                state: SubState::Active,
            },
            SubInfo {
                who: name(CAROL),
                state: SubState::Pending,
            },
        ]),
    };
    golden(
        &frame,
        r#"
        27                                     # length: 39
        13                                     # Down::Subscriptions
        09                                     # req: 9
        02                                     # list: 2
        0f 626f62406578616d706c652e636f6d 00   # "bob@example.com": Active
        11 6361726f6c406578616d706c652e636f6d  # "carol@example.com":
        01                                     #   Pending
        "#,
    );
}

#[test]
fn down_20_subscription() {
    let frame = |state| Down::Subscription {
        target: name(BOB),
        state,
    };
    golden(
        &frame(SubState::Active),
        "12 14 0f 626f62406578616d706c652e636f6d 00 # length 18, Subscription, bob, Active",
    );
    golden(
        &frame(SubState::Denied),
        "12 14 0f 626f62406578616d706c652e636f6d 02 # Denied",
    );
    golden(
        &frame(SubState::Cancelled),
        "12 14 0f 626f62406578616d706c652e636f6d 03 # Cancelled",
    );
}

#[test]
fn down_21_items() {
    let frame = Down::Items {
        req: 11,
        items: list([Item {
            seq: 1,
            item: InboxItem::Message(Incoming {
                id: key(&MSG_ID),
                from: name(BOB),
                to: name(ALICE),
                reply_to: None,
                content_type: None,
                body: blob(b"hi"),
                sent: T_MILLIS,
            }),
        }]),
        more: true,
    };
    golden(
        &frame,
        r#"
        44                                     # length: 68
        15                                     # Down::Items
        0b                                     # req: 11
        01                                     # items: 1
        01                                     #   seq: 1
        00                                     #   InboxItem::Message
        10 0011223344556677                    #   id: 16 bytes
        8899aabbccddeeff                       #     (continued)
        0f 626f62406578616d706c652e636f6d      #   from: "bob@example.com"
        11 616c696365406578616d706c652e636f6d  #   to: "alice@example.com"
        00 00                                  #   reply_to, content_type: None
        02 6869                                #   body: b"hi"
        80d095ffbc31                           #   sent: 1700000000000
        01                                     # more: true
        "#,
    );
}

// ---- Open registries: values unknown to this build travel unchanged ----------------

#[test]
fn unregistered_error_code_is_kept() {
    let frame = Down::Fail {
        req: 1,
        code: ErrorCode(1000),
        text: text(""),
    };
    golden(&frame, "05 02 01 e807 00");
    assert_eq!(ErrorCode(1000).name(), None);
}

#[test]
fn unregistered_availability_and_card_kind_are_kept() {
    let mut presence = available("p");
    presence.tuples[0].availability = Some(Availability(200));
    presence.card = list([CardField {
        kind: CardKind(99),
        value: text("?"),
    }]);
    golden(
        &Up::Publish { req: 1, presence },
        "10 01 01 01 01 70 01 01 c8 00 00 00 00 01 63 01 3f",
    );
}

// ---- Tags and registries: numbers that are part of the contract --------------------

/// The wire tag of every `Up` variant. The match is exhaustive on purpose: a new variant
/// does not compile until it has a tag here and a golden vector above.
fn up_tag(frame: &Up) -> u8 {
    match frame {
        Up::Hello(_) => 0,
        Up::Publish { .. } => 1,
        Up::Fetch { .. } => 2,
        Up::Subscribe { .. } => 3,
        Up::Unsubscribe { .. } => 4,
        Up::Send { .. } => 5,
        Up::Ack { .. } => 6,
        Up::Bye => 7,
        Up::Open(_) => 8,
        Up::Have(_) => 9,
        Up::Mode { .. } => 10,
        Up::Applied { .. } => 11,
        Up::FetchIf { .. } => 12,
        Up::Watchers { .. } => 13,
        Up::GetRules { .. } => 14,
        Up::SetRules { .. } => 15,
        Up::Decide { .. } => 16,
        Up::Cancel { .. } => 17,
        Up::Subscriptions { .. } => 18,
        Up::PublishFor { .. } => 19,
        Up::Read { .. } => 20,
        Up::Operate(_) => 21,
        Up::Admin { .. } => 22,
    }
}

/// The wire tag of every `Down` variant; see [`up_tag`].
fn down_tag(frame: &Down) -> u8 {
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

#[test]
fn variant_tags_are_positions() {
    let target = name(BOB);
    let ups = [
        Up::Hello(Hello {
            version: 1,
            user: name(ALICE),
            token: text("t"),
        }),
        Up::Publish {
            req: 1,
            presence: available("p"),
        },
        Up::Fetch {
            req: 1,
            target: target.clone(),
        },
        Up::Subscribe {
            req: 1,
            target: target.clone(),
        },
        Up::Unsubscribe { req: 1, target },
        Up::Send {
            req: 1,
            msg: Message {
                id: key(&[1]),
                to: name(BOB),
                reply_to: None,
                content_type: None,
                body: blob(b""),
            },
        },
        Up::Ack { upto: 1 },
        Up::Bye,
        Up::Open(open_frame()),
        Up::Have(Have {
            req: 1,
            mode: ClientMode::ACTIVE,
            held: list([]),
        }),
        Up::Mode {
            mode: ClientMode::ACTIVE,
        },
        Up::Applied { batch: 1 },
        Up::FetchIf {
            req: 1,
            target: name(BOB),
            version: 1,
        },
        Up::Watchers { req: 1 },
        Up::GetRules { req: 1 },
        Up::SetRules {
            req: 1,
            rules: Rules::default(),
        },
        Up::Decide {
            req: 1,
            watcher: name(BOB),
            decision: Decision::Allow,
        },
        Up::Cancel {
            req: 1,
            watcher: name(BOB),
        },
        Up::Subscriptions {
            req: 1,
            incoming: false,
        },
        Up::PublishFor {
            req: 1,
            presentity: name(ALICE),
            presence: available("p"),
        },
        Up::Read {
            req: 1,
            inbox: name(ALICE),
            after: 0,
        },
        Up::Operate(Operate {
            version: 1,
            domain: name("example.com"),
            token: text("t"),
        }),
        Up::Admin {
            req: 1,
            user: name(BOB),
            op: AdminOp::Watchers,
        },
    ];
    for (i, frame) in ups.iter().enumerate() {
        assert_eq!(usize::from(up_tag(frame)), i);
        assert_eq!(wire(frame)[1], up_tag(frame), "{frame:?}");
    }
    let doc = PresenceDoc {
        presentity: name(BOB),
        updated: 0,
        presence: Presence::default(),
    };
    let downs = [
        Down::Welcome(Welcome {
            version: 1,
            user: name(ALICE),
            frame_max: 1,
            body_max: 1,
            time: 0,
        }),
        Down::Ok { req: 1 },
        Down::Fail {
            req: 1,
            code: ErrorCode::INTERNAL,
            text: text(""),
        },
        Down::Presence {
            req: 1,
            doc: doc.clone(),
        },
        Down::Receipt {
            req: 1,
            status: ReceiptStatus::Stored,
        },
        Down::Notify { doc: doc.clone() },
        Down::Deliver {
            seq: 1,
            item: InboxItem::Receipt(LateReceipt {
                id: key(&[1]),
                to: name(BOB),
                status: ReceiptStatus::Delivered,
            }),
        },
        Down::Close {
            code: ErrorCode::GOODBYE,
            text: text(""),
        },
        Down::Opened(opened_frame()),
        Down::Batch(small_batch()),
        Down::Synced {
            req: 1,
            batch: small_batch(),
        },
        Down::Subscribed {
            req: 1,
            slot: 1,
            version: 1,
            doc: doc.clone(),
        },
        Down::Versioned {
            req: 1,
            version: 1,
            doc,
        },
        Down::Limited {
            req: 1,
            retry_after: 1,
        },
        Down::Watchers {
            req: 1,
            subscribers: list([]),
            fetchers: list([]),
        },
        Down::Watched { watcher: name(BOB) },
        Down::Pending { req: 1 },
        Down::Asked { watcher: name(BOB) },
        Down::Rules {
            req: 1,
            rules: Rules::default(),
        },
        Down::Subscriptions {
            req: 1,
            list: list([]),
        },
        Down::Subscription {
            target: name(BOB),
            state: SubState::Active,
        },
        Down::Items {
            req: 1,
            items: list([]),
            more: false,
        },
    ];
    for (i, frame) in downs.iter().enumerate() {
        assert_eq!(usize::from(down_tag(frame)), i);
        assert_eq!(wire(frame)[1], down_tag(frame), "{frame:?}");
    }
}

#[test]
fn error_code_registry_is_stable() {
    let registry: Vec<(u16, &str)> = tern_wire::error::ALL
        .iter()
        .map(|code| (code.0, code.name().expect("registered codes have names")))
        .collect();
    assert_eq!(
        registry,
        [
            (1, "malformed"),
            (2, "too_large"),
            (3, "unsupported_version"),
            (4, "unauthorized"),
            (5, "protocol"),
            (6, "unknown_user"),
            (7, "service_disabled"),
            (8, "refused"),
            (9, "rate_limited"),
            (10, "unroutable"),
            (11, "too_slow"),
            (12, "stream_limit"),
            (13, "bad_address"),
            (14, "shutdown"),
            (15, "internal"),
            (16, "goodbye"),
            (17, "superseded"),
            (18, "unsupported_content"),
        ]
    );
    assert_eq!(ErrorCode(0).name(), None, "0 is never a code");
}

#[test]
fn availability_and_card_kind_registries_are_stable() {
    let availability: Vec<(u8, &str)> = (0..=u8::MAX)
        .filter_map(|v| Availability(v).name().map(|n| (v, n)))
        .collect();
    assert_eq!(
        availability,
        [
            (0, "available"),
            (1, "away"),
            (2, "busy"),
            (3, "idle"),
            (4, "dnd"),
            (5, "xa"),
            (6, "asleep"),
        ]
    );
    let modes: Vec<(u8, &str)> = (0..=u8::MAX)
        .filter_map(|v| ClientMode(v).name().map(|n| (v, n)))
        .collect();
    assert_eq!(modes, [(0, "active"), (1, "inactive"), (2, "sleepy")]);
    let kinds: Vec<(u8, &str)> = (0..=u8::MAX)
        .filter_map(|v| CardKind(v).name().map(|n| (v, n)))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, "name"),
            (1, "email"),
            (2, "tel"),
            (3, "postal"),
            (4, "url")
        ]
    );
}

// ---- Capacities of the no_std build --------------------------------------------------

/// A `Fetch` whose target is `len` bytes long.
fn fetch_of_len(len: u8) -> Vec<u8> {
    let mut bytes = vec![len + 3, 0x02, 0x01, len];
    bytes.resize(bytes.len() + usize::from(len), b'a');
    bytes
}

#[test]
fn fields_over_a_heapless_capacity_are_malformed_not_truncated() {
    use tern_wire::codec::{CodecError, decode};
    use tern_wire::limits::{FRAME_MAX, tiny};

    let at_capacity = fetch_of_len(tiny::NAME as u8);
    assert!(matches!(decode::<Up>(&at_capacity, FRAME_MAX), Ok(Some(_))));

    let over = fetch_of_len(tiny::NAME as u8 + 1);
    let result = decode::<Up>(&over, FRAME_MAX);
    if cfg!(feature = "std") {
        assert!(
            matches!(result, Ok(Some((Up::Fetch { .. }, _)))),
            "{result:?}"
        );
    } else {
        assert_eq!(result, Err(CodecError::Malformed));
    }
}

/// A decoded frame of the no_std build is held inline, without an allocator: it stays
/// the size of one presence document, about 12 KiB (`limits::tiny`), whatever the
/// variant. Measured for tern/1 with the access-rule frames: `Up` 11 720 bytes (its
/// largest variants carry a `Presence`: `Publish`, `PublishFor`, `Admin`), `Down`
/// 11 760 (`Presence`, `Notify`, `Subscribed`, `Versioned`, a batch's one `Full`).
#[cfg(not(feature = "std"))]
#[test]
fn a_decoded_frame_is_the_size_of_one_document() {
    use core::mem::size_of;

    let (up, down) = (size_of::<Up>(), size_of::<Down>());
    eprintln!("no_std: Up {up} bytes, Down {down} bytes");
    assert!(up <= 12 * 1024, "Up is {up} bytes");
    assert!(down <= 12 * 1024, "Down is {down} bytes");
}

// ---- The allocation-free encoder -------------------------------------------------------

#[test]
fn encode_into_needs_room_for_the_frame_only() {
    use tern_wire::codec::{CodecError, encode_into};

    let mut two = [0u8; 2];
    assert_eq!(encode_into(&Up::Bye, &mut two), Ok(2));
    assert_eq!(two, [0x01, 0x07]);
    assert_eq!(
        encode_into(&Up::Bye, &mut two[..1]),
        Err(CodecError::BufferTooSmall)
    );

    // A body of 200 bytes needs a two-byte prefix: the body moves one byte right.
    let frame = Up::Send {
        req: 1,
        msg: Message {
            id: key(&[1]),
            to: name(BOB),
            reply_to: None,
            content_type: None,
            body: blob(&[0xab; 176]),
        },
    };
    let mut exact = [0u8; 202];
    assert_eq!(encode_into(&frame, &mut exact), Ok(202));
    assert_eq!(
        exact[..4],
        [0xc8, 0x01, 0x05, 0x01],
        "prefix 200, Send, req 1"
    );
    assert_eq!(unwire::<Up>(&exact), frame);
    assert_eq!(
        encode_into(&frame, &mut exact[..201]),
        Err(CodecError::BufferTooSmall)
    );
}

// ---- The worked examples in docs/protocol.md -------------------------------------------
//
// Every fenced block of the spec whose lines all start with hex (an annotated byte dump)
// must decode as one `Up` or one `Down`, or line by line as one frame per line, and
// re-encode to the same bytes. The examples are copied from this file; this keeps a typo
// or a stale copy in the spec from misleading a client implementer.

/// The hex at the start of a dump line (up to the first run of two spaces), if any.
#[cfg(feature = "std")]
fn hex_column(line: &str) -> Option<Vec<u8>> {
    let column = line.trim().split("  ").next()?;
    let digits: String = column.split(' ').collect();
    if digits.is_empty() {
        return None;
    }
    hex::decode(digits).ok()
}

/// Whether `bytes` is exactly one frame that re-encodes to itself.
#[cfg(feature = "std")]
fn is_frame(bytes: &[u8]) -> bool {
    use tern_wire::codec::decode;
    use tern_wire::limits::FRAME_MAX;

    fn exact<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> bool {
        matches!(decode::<T>(bytes, FRAME_MAX), Ok(Some((frame, used)))
            if used == bytes.len() && wire(&frame) == bytes)
    }
    exact::<Up>(bytes) || exact::<Down>(bytes)
}

/// Run in the std build: some examples (a batch of several changes) are over the no_std
/// capacities on purpose.
#[cfg(feature = "std")]
#[test]
fn every_hex_example_in_the_spec_is_a_frame() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let spec = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let blocks = spec.split("```").skip(1).step_by(2);
    let mut checked = 0;
    for block in blocks {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        let Some(dump) = lines
            .iter()
            .map(|l| hex_column(l))
            .collect::<Option<Vec<_>>>()
        else {
            continue; // not a byte dump
        };
        let whole = dump.concat();
        assert!(
            is_frame(&whole) || dump.iter().all(|line| is_frame(line)),
            "not a frame in docs/protocol.md:\n{block}"
        );
        checked += 1;
    }
    assert!(
        checked >= 15,
        "only {checked} hex examples found in the spec"
    );
}
