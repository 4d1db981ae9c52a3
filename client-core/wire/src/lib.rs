//! # tern-wire: the tern protocol on the wire
//!
//! Owns the frames that client and gateway exchange ([`Up`] client to gateway, [`Down`]
//! gateway to client), the presence and message types inside them, the error codes, the
//! length-delimited postcard codec ([`codec`]) and the protocol limits ([`limits`]).
//! With the default `std` feature it also owns identifier normalisation ([`addr`]).
//!
//! It does no I/O and keeps no state: it may not know about QUIC, sockets, clocks or
//! storage. The byte layout of every frame is specified in `docs/protocol.md` and guarded
//! by golden-byte tests in `tests/golden.rs`, which run in both builds.
//!
//! ## Two builds, one wire format
//! * `std` (default): string and byte fields are `String`/`Vec<u8>`.
//! * `--no-default-features`: `#![no_std]`, no allocator; fields are `heapless` buffers
//!   with the capacities in [`limits::tiny`]. A frame whose field exceeds a capacity
//!   fails to decode with [`codec::CodecError::Malformed`] instead of allocating.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod addr;
pub mod codec;
pub mod delta;
pub mod error;
pub mod frame;
pub mod limits;
pub mod message;
pub mod presence;
pub mod rules;
pub mod sync;
pub mod types;

pub use codec::CodecError;
pub use error::ErrorCode;
pub use frame::{AdminOp, Down, Fetcher, Hello, Item, Open, Opened, Operate, Up};
pub use message::{InboxItem, Incoming, LateReceipt, Message, MsgId, ReceiptStatus};
pub use presence::{Availability, Basic, CardField, CardKind, Ext, Presence, PresenceDoc, Tuple};
pub use rules::{
    Decision, Delegate, Delivery, InboxRule, PresenceRule, Rules, SubInfo, SubState, View, When,
    Who,
};
pub use sync::{Batch, Change, ClientMode, Have, Held, Slot, Version};

/// The protocol version spoken by this crate, sent first in [`Hello`] and [`frame::Welcome`].
pub const VERSION: u16 = 1;

/// The ALPN identifier of tern over QUIC. A later major version gets a new ALPN so that
/// both can be offered in one handshake.
pub const ALPN: &[u8] = b"tern/1";
