//! Presence information, after RFC 2778: a presentity's document is a list of presence
//! tuples, each with a status, an optional communication address, note and timestamp,
//! and registered extensions; plus the principal's contact card.
//!
//! Open-ended vocabularies (availability values, card field kinds) are small integers,
//! not Rust enums, so that a peer that meets a value registered after it was built keeps
//! decoding and carries it unchanged (RFC 2779 3.1.4, 3.1.5). Only the RFC's fixed
//! OPEN/CLOSED is a closed enum.

use serde::{Deserialize, Serialize};

use crate::types::{Blob, List, Name, Text};

/// The presence document of one presentity, as the gateway hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceDoc {
    /// The presentity's normalised identifier (RFC 2779 3.1.2).
    pub presentity: Name,
    /// When the gateway last changed this document, Unix milliseconds; 0 when the
    /// presentity never published (the document is then empty and reads as CLOSED).
    pub updated: u64,
    /// The presence information itself.
    pub presence: Presence,
}

/// Presence information: what a presentity publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Presence {
    /// One or more presence tuples (at most [`crate::limits::TUPLES_MAX`]).
    pub tuples: List<Tuple>,
    /// Contact information for the principal (RFC 2779 3.1.3).
    pub card: List<CardField>,
}

/// One presence tuple (RFC 2778 2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuple {
    /// Names the tuple within its document (e.g. `"phone"`), unique there.
    pub id: Name,
    /// OPEN or CLOSED (RFC 2779 4.4.2).
    pub basic: Basic,
    /// Finer availability, from the registry in [`Availability`].
    pub availability: Option<Availability>,
    /// The communication address as a URI whose scheme is the means: `tern:bob@example.com`
    /// for an instant inbox, `tel:+15551234`, `mailto:bob@example.com` (RFC 2779 4.4.3).
    pub contact: Option<Text>,
    /// A free-text note.
    pub note: Option<Text>,
    /// When the publisher says this tuple was true, Unix seconds.
    pub at: Option<u64>,
    /// Registered extensions, carried unchanged by peers that do not know them.
    pub ext: List<Ext>,
}

/// The basic status of a tuple: whether its contact address accepts instant messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Basic {
    /// Wire value 0.
    Closed,
    /// Wire value 1.
    Open,
}

/// An availability value from the registry in `docs/protocol.md`. Values unknown to a
/// peer are kept and passed on; display them as `other(N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Availability(pub u8);

impl Availability {
    /// Ready to communicate.
    pub const AVAILABLE: Self = Self(0);
    /// Away from the device.
    pub const AWAY: Self = Self(1);
    /// Busy; communication may be unwelcome.
    pub const BUSY: Self = Self(2);
    /// No activity for a while.
    pub const IDLE: Self = Self(3);
    /// Do not disturb.
    pub const DND: Self = Self(4);
    /// Away for an extended period.
    pub const EXTENDED_AWAY: Self = Self(5);
    /// A sleepy device that is asleep on purpose; with the [`Ext::WAKE`] extension it
    /// says until when. Watchers tell it from a dead device: the gateway keeps it while
    /// the device is away until its wake time (plus the grace period), then the tuple
    /// goes out of contact like any other.
    pub const ASLEEP: Self = Self(6);

    /// The registered name of the value, `None` for values unknown to this build.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "available",
            1 => "away",
            2 => "busy",
            3 => "idle",
            4 => "dnd",
            5 => "xa",
            6 => "asleep",
            _ => return None,
        })
    }

    /// Parses a registered name (as printed by [`Self::name`]) or a bare number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "available" => Self::AVAILABLE,
            "away" => Self::AWAY,
            "busy" => Self::BUSY,
            "idle" => Self::IDLE,
            "dnd" | "do-not-disturb" => Self::DND,
            "xa" | "extended-away" => Self::EXTENDED_AWAY,
            "asleep" => Self::ASLEEP,
            other => Self(other.parse().ok()?),
        })
    }
}

/// One registered extension: a key from the registry and an opaque value whose format the
/// registry entry defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ext {
    /// The registered key, e.g. `"geo"`; private keys start with `x-`.
    pub key: Name,
    /// The value, at most [`crate::limits::EXT_VALUE_MAX`] bytes.
    pub value: Blob,
}

impl Ext {
    /// Registered key: when a sleepy device will next wake and reconnect. The value is
    /// the Unix time in seconds as a postcard varint.
    pub const WAKE: &'static str = "wake";

    /// The [`Self::WAKE`] extension for this Unix time in seconds.
    // The conversions are fallible in the heapless build only.
    #[allow(clippy::unnecessary_fallible_conversions, clippy::iter_cloned_collect)]
    pub fn wake(at: u64) -> Self {
        let mut buf = [0u8; 10];
        let used = postcard::to_slice(&at, &mut buf).map_or(0, |b| b.len());
        Self {
            key: Self::WAKE.try_into().unwrap_or_default(),
            value: buf[..used].iter().copied().collect(),
        }
    }
}

impl Tuple {
    /// When the device publishing this tuple said it will wake, Unix seconds: the value
    /// of its [`Ext::WAKE`] extension, if any decodes.
    pub fn wake_at(&self) -> Option<u64> {
        let ext = self.ext.iter().find(|e| e.key.as_str() == Ext::WAKE)?;
        postcard::from_bytes(&ext.value).ok()
    }

    /// Whether the tuple says its device is asleep ([`Availability::ASLEEP`]).
    pub fn asleep(&self) -> bool {
        self.availability == Some(Availability::ASLEEP)
    }
}

/// One field of the principal's contact card (RFC 2779 3.1.3, after vCard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardField {
    /// What the field is, from the registry in [`CardKind`].
    pub kind: CardKind,
    /// The value, as vCard would write it (an address, a number, a URI).
    pub value: Text,
}

/// The kind of a contact-card field; a registry of small integers like [`Availability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CardKind(pub u8);

impl CardKind {
    /// Formatted name (vCard `FN`).
    pub const NAME: Self = Self(0);
    /// E-mail address (vCard `EMAIL`).
    pub const EMAIL: Self = Self(1);
    /// Telephone number (vCard `TEL`).
    pub const TEL: Self = Self(2);
    /// Postal address (vCard `ADR`, lines separated by `\n`).
    pub const POSTAL: Self = Self(3);
    /// Web address (vCard `URL`).
    pub const URL: Self = Self(4);

    /// The registered name of the kind, `None` for kinds unknown to this build.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "name",
            1 => "email",
            2 => "tel",
            3 => "postal",
            4 => "url",
            _ => return None,
        })
    }

    /// Parses a registered name or a bare number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::NAME,
            "email" => Self::EMAIL,
            "tel" => Self::TEL,
            "postal" => Self::POSTAL,
            "url" => Self::URL,
            other => Self(other.parse().ok()?),
        })
    }
}

impl Presence {
    /// Whether any tuple is OPEN.
    pub fn is_open(&self) -> bool {
        self.tuples.iter().any(|t| t.basic == Basic::Open)
    }
}
