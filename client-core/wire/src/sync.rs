//! Presence synchronisation: what a session that opened with [`crate::Open::SYNC`] gets
//! instead of whole documents.
//!
//! Presence is state. The gateway knows, per session and per subscription, which version
//! of the presentity's document the client holds, and sends only what changed since
//! then, for many presentities at once, in a [`Batch`]. Each subscription of a principal
//! has a **slot**: a small integer the gateway assigns once and never reuses for another
//! presentity of that principal, so that a batch names presentities in one or two bytes
//! and a client's cache stays valid across sessions, resumptions and restarts.
//!
//! A client states what it holds with [`Have`] (a *state vector*: slot and version per
//! presentity) in its first flight and whenever it lost track; the gateway answers with
//! one [`Batch`] computed from exactly that (empty when nothing changed). The byte
//! layouts are in `docs/protocol.md`, section "Presence synchronisation".

use serde::{Deserialize, Serialize};

use crate::delta::Op;
use crate::frame::ReqId;
use crate::presence::Presence;
use crate::types::{List, Name};

/// A slot: the small integer that names one subscription of a principal.
pub type Slot = u32;
/// A version of a presentity's document: 0 before it ever published, then one more per
/// change the gateway makes to it (a publish, going out of contact).
pub type Version = u64;

/// What the client says about itself, so that the gateway can choose when to wake its
/// radio. A registry like [`crate::Availability`]: values unknown to a gateway count as
/// [`ClientMode::ACTIVE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMode(pub u8);

impl ClientMode {
    /// The app is in the foreground: presence changes are flushed within tens of
    /// milliseconds.
    pub const ACTIVE: Self = Self(0);
    /// The app is in the background: presence changes wait for the inactive interval (a
    /// few minutes), a full batch, or anything else going to the device.
    pub const INACTIVE: Self = Self(1);
    /// A sleepy device (IoT): presence changes wait for the device to ask (any frame it
    /// sends) or the long sleepy interval.
    pub const SLEEPY: Self = Self(2);

    /// The registered name, `None` for values unknown to this build.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "active",
            1 => "inactive",
            2 => "sleepy",
            _ => return None,
        })
    }

    /// Parses a registered name or a bare number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::ACTIVE,
            "inactive" => Self::INACTIVE,
            "sleepy" => Self::SLEEPY,
            other => Self(other.parse().ok()?),
        })
    }
}

/// The state vector: what presence the client holds. Answered with
/// [`crate::Down::Synced`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// Request id.
    pub req: ReqId,
    /// The client's mode from now on.
    pub mode: ClientMode,
    /// Every slot the client holds a document for, with its version, in increasing slot
    /// order. Slots it does not list are sent whole, with their presentity's name.
    pub held: List<Held>,
}

/// One entry of a state vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The subscription.
    pub slot: Slot,
    /// The version of the document the client holds for it.
    pub version: Version,
}

/// Presence changes for one session, sent together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// 1 for the first batch of a connection, then one more per batch; acknowledge with
    /// [`crate::Up::Applied`].
    pub seq: u32,
    /// The gateway's clock, Unix seconds; each change's `age` counts back from it.
    pub time: u64,
    /// CRC-32 of the states the changes lead to, little-endian; see [`crate::delta::Check`].
    /// A client whose own result gives another value lost track and sends [`Have`].
    pub check: [u8; 4],
    /// The changes, at most one per slot.
    pub changes: Changes,
}

/// The changes of a batch. In the `no_std` build a batch holds at most
/// [`crate::limits::tiny::CHANGES`] change, to keep a decoded [`crate::Down`] as small as
/// a presence document: small devices poll with [`crate::Up::FetchIf`] or take
/// [`crate::Down::Notify`] instead of opening with [`crate::Open::SYNC`].
#[cfg(feature = "std")]
pub type Changes = std::vec::Vec<Change>;
/// The changes of a batch (see the `std` build's documentation).
#[cfg(not(feature = "std"))]
pub type Changes = heapless::Vec<Change, { crate::limits::tiny::CHANGES }>;

/// What changed about one subscription.
// Without an allocator nothing can be boxed: every variant is held inline.
#[cfg_attr(not(feature = "std"), allow(clippy::large_enum_variant))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// 0: the whole document, for a client with no usable base.
    Full {
        /// The subscription.
        slot: Slot,
        /// The version this document is.
        version: Version,
        /// Seconds between the document's last change and the batch's `time`.
        age: u32,
        /// The presentity, when the client may not know this slot yet.
        name: Option<Name>,
        /// The document as this watcher may see it.
        presence: Presence,
    },
    /// 1: the changes from version `version - back` (which the client holds) to `version`.
    Delta {
        /// The subscription.
        slot: Slot,
        /// The version the changes lead to.
        version: Version,
        /// How many versions back the base is.
        back: u32,
        /// Seconds between the document's last change and the batch's `time`.
        age: u32,
        /// The changes, applied in order (see [`crate::delta::apply`]).
        ops: List<Op>,
    },
    /// 2: the subscription ended (on another device of the principal, or by the gateway):
    /// forget the slot.
    Gone {
        /// The subscription.
        slot: Slot,
    },
}

impl Change {
    /// The slot the change is about.
    pub const fn slot(&self) -> Slot {
        match self {
            Self::Full { slot, .. } | Self::Delta { slot, .. } | Self::Gone { slot } => *slot,
        }
    }
}
