//! Size budgets: how many bytes a typical frame costs on the wire, length prefix
//! included. On a weak mobile link every byte of a presence update or an ack is paid for
//! in radio time, so a change that makes a frame larger than its budget must be a
//! deliberate decision, with the table in `docs/protocol.md` ("Size budgets") updated in
//! the same change.
//!
//! "Typical" means: request ids and inbox sequence numbers in the thousands (two-byte
//! varints), addresses of 15 to 17 bytes, 16-byte message ids as `tern-client` makes
//! them, timestamps of today (six-byte varints for milliseconds).
//!
//! For presence synchronisation: slots below 128 (one byte), document versions and batch
//! numbers in the thousands (two bytes), ages below 128 s, the batch time of today in
//! seconds (a five-byte varint).

mod common;

use core::fmt::Debug;

use common::{blob, key, list, name, text, unwire, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::codec::{body_size, frame_size};
use tern_wire::delta::{Check, Field, Op};
use tern_wire::frame::Welcome;
use tern_wire::{
    Availability, Basic, Batch, Change, ClientMode, Decision, Down, ErrorCode, Hello, InboxItem,
    Incoming, LateReceipt, Message, Presence, PresenceDoc, PresenceRule, ReceiptStatus, Rules,
    SubState, Tuple, Up, View, When, Who,
};

const REQ: u32 = 1000;
const SEQ: u64 = 1000;
const NOW_MS: u64 = 1_700_000_000_000;
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const MSG_ID: [u8; 16] = [0x5a; 16];
/// A 256-bit access token written as 64 hex digits.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A batch number a while into a connection.
const BATCH: u32 = 1000;
/// Today, Unix seconds: a batch's time.
const NOW_SECS: u64 = NOW_MS / 1000;
/// A subscription's slot.
const SLOT: u32 = 5;
/// A document's version after a while of publishing.
const VERSION: u64 = 1234;
/// Seconds between a change and the batch that carries it.
const AGE: u32 = 3;

/// Asserts that `frame` takes at most `budget` bytes on the wire, that [`body_size`]
/// agrees with the encoder, and that the bytes decode back to the frame.
fn within<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame: &T, budget: usize) -> usize {
    let bytes = wire(frame);
    eprintln!("{} bytes: {frame:?}", bytes.len());
    assert_eq!(bytes.len(), frame_size(frame), "prefix + body");
    let prefix = if body_size(frame) < 128 { 1 } else { 2 };
    assert_eq!(bytes.len(), prefix + body_size(frame));
    assert_eq!(&unwire::<T>(&bytes), frame);
    assert!(
        bytes.len() <= budget,
        "{} bytes, over the budget of {budget}",
        bytes.len()
    );
    bytes.len()
}

/// The presence of a phone that is simply available: the most common publish.
fn available() -> Presence {
    Presence {
        tuples: list([Tuple {
            id: name("phone"),
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

fn bob_available() -> PresenceDoc {
    PresenceDoc {
        presentity: name(BOB),
        updated: NOW_MS,
        presence: available(),
    }
}

fn message(body: &[u8]) -> Message {
    Message {
        id: key(&MSG_ID),
        to: name(BOB),
        reply_to: None,
        content_type: None,
        body: blob(body),
    }
}

// ---- Up ------------------------------------------------------------------------------

#[test]
fn hello() {
    let frame = Up::Hello(Hello {
        version: 1,
        user: name(ALICE),
        token: text(TOKEN),
    });
    within(&frame, 86);
}

#[test]
fn publish_one_tuple_availability() {
    let frame = Up::Publish {
        req: REQ,
        presence: available(),
    };
    within(&frame, 19);
}

#[test]
fn fetch_subscribe_unsubscribe() {
    let target = name(BOB);
    for frame in [
        Up::Fetch {
            req: REQ,
            target: target.clone(),
        },
        Up::Subscribe {
            req: REQ,
            target: target.clone(),
        },
        Up::Unsubscribe { req: REQ, target },
    ] {
        within(&frame, 20);
    }
}

#[test]
fn send_costs_40_bytes_besides_the_body() {
    let body = b"hello";
    let size = within(
        &Up::Send {
            req: REQ,
            msg: message(body),
        },
        45,
    );
    assert!(size - body.len() <= 40);
}

#[test]
fn ack() {
    within(&Up::Ack { upto: SEQ }, 4);
}

#[test]
fn bye() {
    within(&Up::Bye, 2);
}

// ---- Down ----------------------------------------------------------------------------

#[test]
fn welcome() {
    let frame = Down::Welcome(Welcome {
        version: 1,
        user: name(ALICE),
        frame_max: tern_wire::limits::DEFAULT_FRAME_MAX,
        body_max: tern_wire::limits::DEFAULT_BODY_MAX,
        time: NOW_MS,
    });
    within(&frame, 33);
}

#[test]
fn ok() {
    within(&Down::Ok { req: REQ }, 4);
}

#[test]
fn fail() {
    let frame = Down::Fail {
        req: REQ,
        code: ErrorCode::UNKNOWN_USER,
        text: text("no such user"),
    };
    within(&frame, 18);
}

#[test]
fn presence_one_tuple_availability() {
    let frame = Down::Presence {
        req: REQ,
        doc: bob_available(),
    };
    within(&frame, 41);
}

#[test]
fn receipt() {
    for status in [
        ReceiptStatus::Delivered,
        ReceiptStatus::Stored,
        ReceiptStatus::Failed(ErrorCode::REFUSED),
        ReceiptStatus::Relayed,
    ] {
        within(&Down::Receipt { req: REQ, status }, 6);
    }
}

#[test]
fn notify_one_tuple_availability() {
    within(
        &Down::Notify {
            doc: bob_available(),
        },
        39,
    );
}

#[test]
fn deliver_message_costs_65_bytes_besides_the_body() {
    let body = b"hello";
    let frame = Down::Deliver {
        seq: SEQ,
        item: InboxItem::Message(Incoming {
            id: key(&MSG_ID),
            from: name(ALICE),
            to: name(BOB),
            reply_to: None,
            content_type: None,
            body: blob(body),
            sent: NOW_MS,
        }),
    };
    let size = within(&frame, 70);
    assert!(size - body.len() <= 65);
}

#[test]
fn deliver_late_receipt() {
    let frame = Down::Deliver {
        seq: SEQ,
        item: InboxItem::Receipt(LateReceipt {
            id: key(&MSG_ID),
            to: name(BOB),
            status: ReceiptStatus::Delivered,
        }),
    };
    within(&frame, 39);
}

#[test]
fn close() {
    let frame = Down::Close {
        code: ErrorCode::SHUTDOWN,
        text: text("restarting"),
    };
    within(&frame, 14);
}

// ---- Presence synchronisation --------------------------------------------------------

/// A batch of the changes of one flush; its checksum is not computed (any four bytes
/// cost the same).
fn batch(changes: impl IntoIterator<Item = Change>) -> Down {
    Down::Batch(Batch {
        seq: BATCH,
        time: NOW_SECS,
        check: Check::new().finish(),
        changes: changes.into_iter().collect(),
    })
}

/// The change one publish makes to a presentity whose client holds the version before.
fn delta(slot: u32, op: Op) -> Change {
    Change::Delta {
        slot,
        version: VERSION,
        back: 1,
        age: AGE,
        ops: list([op]),
    }
}

/// Bob's phone goes from available to busy.
fn busy() -> Op {
    Op::Set {
        i: 0,
        field: Field::Availability(Some(Availability::BUSY)),
    }
}

#[test]
fn batch_availability_change() {
    let size = within(&batch([delta(SLOT, busy())]), 26);
    // The whole document of the same change, as a session without SYNC gets it.
    let mut doc = bob_available();
    doc.presence.tuples[0].availability = Some(Availability::BUSY);
    let notify = within(&Down::Notify { doc }, 39);
    eprintln!("availability change: batch {size} bytes, notify {notify} bytes");
    assert!(size < notify);
}

#[test]
fn batch_note_change() {
    let note = "back at 3, call then";
    assert_eq!(note.len(), 20);
    let op = Op::Set {
        i: 0,
        field: Field::Note(Some(text(note))),
    };
    let size = within(&batch([delta(SLOT, op)]), 46);
    let mut doc = bob_available();
    doc.presence.tuples[0].note = Some(text(note));
    let notify = within(&Down::Notify { doc }, 60);
    eprintln!("note change: batch {size} bytes, notify {notify} bytes");
    assert!(size < notify);
}

#[test]
fn batch_tuple_added() {
    let mut laptop = available().tuples[0].clone();
    laptop.id = name("laptop");
    let op = Op::Insert {
        i: 1,
        tuple: laptop,
    };
    within(&batch([delta(SLOT, op)]), 37);
}

#[test]
fn batch_tuple_removed() {
    within(&batch([delta(SLOT, Op::Remove { i: 1 })]), 23);
}

/// Ten presentities change availability in one flush: 12 bytes each, besides the
/// batch's 14 and the prefix (two bytes from 128 bytes of body on).
#[cfg(feature = "std")]
#[test]
fn batch_of_ten_availability_changes() {
    let one = frame_size(&batch([delta(SLOT, busy())]));
    let ten = within(&batch((1..=10).map(|slot| delta(slot, busy()))), 135);
    let per_change = (ten - 1 - one) / 9;
    eprintln!("{per_change} bytes per change");
    assert_eq!(ten - 1, one + 9 * per_change, "one more prefix byte");
    assert!(per_change <= 12);
}

/// The state vector of a client that holds 200 presentities.
#[cfg(feature = "std")]
#[test]
fn have_200_slots() {
    let held = (1..=200)
        .map(|slot| tern_wire::Held {
            slot,
            version: VERSION + u64::from(slot),
        })
        .collect();
    let frame = Up::Have(tern_wire::Have {
        req: REQ,
        mode: ClientMode::INACTIVE,
        held,
    });
    within(&frame, 681);
}

/// The answer to a `Have` when nothing changed.
#[test]
fn synced_unchanged() {
    let frame = Down::Synced {
        req: REQ,
        batch: Batch {
            seq: BATCH,
            time: NOW_SECS,
            check: Check::new().finish(),
            changes: Default::default(),
        },
    };
    within(&frame, 16);
}

#[test]
fn applied() {
    within(&Up::Applied { batch: BATCH }, 4);
}

#[test]
fn watchers_and_watched() {
    within(&Up::Watchers { req: REQ }, 4);
    let frame = Down::Watched { watcher: name(BOB) };
    within(&frame, 18);
}

#[test]
fn limited() {
    let frame = Down::Limited {
        req: REQ,
        retry_after: 1_500,
    };
    within(&frame, 6);
}

#[test]
fn mode() {
    within(
        &Up::Mode {
            mode: ClientMode::INACTIVE,
        },
        3,
    );
}

#[test]
fn fetch_if_and_not_modified() {
    let frame = Up::FetchIf {
        req: REQ,
        target: name(BOB),
        version: VERSION,
    };
    within(&frame, 22);
    // Not modified.
    within(&Down::Ok { req: REQ }, 4);
}

// ---- Access rules ----------------------------------------------------------------------

/// The principal lets a watcher that asked see it.
#[test]
fn decide() {
    let frame = Up::Decide {
        req: REQ,
        watcher: name(BOB),
        decision: Decision::Allow,
    };
    within(&frame, 21);
}

/// The principal ends a watcher's subscription.
#[test]
fn cancel() {
    let frame = Up::Cancel {
        req: REQ,
        watcher: name(BOB),
    };
    within(&frame, 20);
}

/// A subscription waits for the principal's decision, who is told at once.
#[test]
fn pending_and_asked() {
    within(&Down::Pending { req: REQ }, 4);
    within(&Down::Asked { watcher: name(BOB) }, 18);
}

/// A pending subscription is granted or refused, or a subscription is cancelled.
#[test]
fn subscription_state_change() {
    for state in [SubState::Active, SubState::Denied, SubState::Cancelled] {
        let frame = Down::Subscription {
            target: name(BOB),
            state,
        };
        within(&frame, 19);
    }
}

/// Rules as a person sets them: colleagues (a domain) see "busy" and no notes on working
/// days from 09:00 to 18:00 in UTC+1; one family member sees everything; anonymous peers
/// are denied.
#[test]
fn set_rules_three_rules() {
    let rules = Rules {
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
    };
    within(&Up::SetRules { req: REQ, rules }, 57);
}
