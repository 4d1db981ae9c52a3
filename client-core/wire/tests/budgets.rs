//! Size budgets: how many bytes a typical frame costs on the wire, length prefix
//! included. On a weak mobile link every byte of a presence update or an ack is paid for
//! in radio time, so a change that makes a frame larger than its budget must be a
//! deliberate decision, with the table in `docs/protocol.md` ("Size budgets") updated in
//! the same change.
//!
//! "Typical" means: request ids and inbox sequence numbers in the thousands (two-byte
//! varints), addresses of 15 to 17 bytes, 16-byte message ids as `tern-client` makes
//! them, timestamps of today (six-byte varints for milliseconds).

mod common;

use core::fmt::Debug;

use common::{blob, key, list, name, text, unwire, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_wire::codec::body_size;
use tern_wire::frame::Welcome;
use tern_wire::{
    Availability, Basic, Down, ErrorCode, Hello, InboxItem, Incoming, LateReceipt, Message,
    Presence, PresenceDoc, ReceiptStatus, Tuple, Up,
};

const REQ: u32 = 1000;
const SEQ: u64 = 1000;
const NOW_MS: u64 = 1_700_000_000_000;
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const MSG_ID: [u8; 16] = [0x5a; 16];
/// A 256-bit access token written as 64 hex digits.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Asserts that `frame` takes at most `budget` bytes on the wire, that [`body_size`]
/// agrees with the encoder, and that the bytes decode back to the frame.
fn within<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame: &T, budget: usize) -> usize {
    let bytes = wire(frame);
    eprintln!("{} bytes: {frame:?}", bytes.len());
    assert_eq!(bytes.len(), 1 + body_size(frame), "one-byte prefix + body");
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
