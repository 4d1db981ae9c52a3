//! A principal's rules (RFC 2778 section 5, RFC 2779 2.3 and 5): who may watch its
//! presentity and what each watcher sees, who may send to its inbox, and which other
//! principals act for it.
//!
//! The gateway keeps the rules and applies them whether or not the principal is
//! connected (RFC 2779 2.3.7). This module is only their shape on the wire; the gateway
//! evaluates them (`tern-gateway-core`, module `access`), and the byte layout and the
//! order of evaluation are in `docs/protocol.md`, section "Access rules".
//!
//! Enums here are append-only, like the frames: a variant's position is its wire tag.

use serde::{Deserialize, Serialize};

use crate::presence::Availability;
use crate::types::{List, Name};

/// Whom a rule is about. A watcher or sender matches the most specific kind of rule
/// that names it: `User`, then `Domain`, then `Anonymous`, then `Anyone`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Who {
    /// 0: every authenticated principal (never an anonymous one).
    Anyone,
    /// 1: one authenticated principal, `local@domain`.
    User(Name),
    /// 2: every authenticated principal of a domain.
    Domain(Name),
    /// 3: unauthenticated (anonymous) peers.
    Anonymous,
}

/// What the gateway does with a watcher's fetch or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// 0: granted, with the rule's view if it has one.
    Allow,
    /// 1: refused, and the watcher is told (`refused`, RFC 2779 5.1.5).
    Deny,
    /// 2: a subscription waits for the principal's decision, who is told of it at once;
    /// a fetch is refused meanwhile.
    Ask,
    /// 3: polite blocking (5.1.15): the watcher is told it was granted and sees a
    /// presentity that never published and never changes; the gateway spends nothing
    /// on it.
    Polite,
    /// 4: the watcher may fetch (and poll), with the rule's view, but not subscribe: a
    /// `Subscribe` is refused (the watcher is told), and an existing subscription is
    /// cancelled. RFC 2779 keeps who may observe (2.3.1) apart from who may subscribe
    /// (2.3.2).
    FetchOnly,
}

/// What part of the document a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct View {
    /// The tuples shown, by id; empty shows every tuple.
    pub tuples: List<Name>,
    /// Fields hidden from every shown tuple and the card: a bit set of
    /// [`View::CONTACT`], [`View::NOTE`], [`View::TIME`], [`View::EXT`], [`View::CARD`].
    pub hide: u8,
    /// Shown instead of the availability of every OPEN tuple (e.g. `busy` for
    /// colleagues); the OPEN/CLOSED status itself is never changed.
    pub status: Option<Availability>,
}

impl View {
    /// Hides tuples' communication addresses.
    pub const CONTACT: u8 = 1;
    /// Hides tuples' notes.
    pub const NOTE: u8 = 2;
    /// Hides tuples' timestamps.
    pub const TIME: u8 = 4;
    /// Hides tuples' extensions.
    pub const EXT: u8 = 8;
    /// Hides the contact card.
    pub const CARD: u8 = 16;
}

/// When a rule applies: on some days of the week, between two times of day, in the
/// principal's time zone. Outside it the rule is skipped as if it were not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct When {
    /// Days of the week, a bit set: bit 0 Monday … bit 6 Sunday (`0x1f`: Monday to
    /// Friday). A window that crosses midnight belongs to the day it starts on.
    pub days: u8,
    /// Start, minutes after local midnight, 0 to 1439.
    pub from: u16,
    /// End (excluded), minutes after local midnight, 1 to 1440; smaller than `from`
    /// for a window that crosses midnight.
    pub to: u16,
    /// The principal's offset from UTC, minutes (e.g. 60 for UTC+1).
    pub offset: i16,
}

/// One presence rule: for whom, what decision, what they see, and when.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceRule {
    /// Whom it is about.
    pub who: Who,
    /// What happens to their fetches and subscriptions.
    pub decision: Decision,
    /// What they see when allowed; `None` shows the whole document.
    pub view: Option<View>,
    /// When the rule applies; `None`: always.
    pub when: Option<When>,
}

/// What the gateway does with a message to the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Delivery {
    /// 0: delivered.
    Accept,
    /// 1: not delivered; the sender's receipt says `refused` (RFC 2779 appendix AD6).
    Refuse,
    /// 2: not delivered, in silence: the sender's receipt says `Stored`, as for a
    /// message that waits for an offline recipient (AD5, AD6).
    Discard,
}

/// One delivery rule of the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InboxRule {
    /// Whose messages.
    pub who: Who,
    /// What becomes of them.
    pub delivery: Delivery,
}

/// Another principal that acts for this one (RFC 2779 2.3.4, 2.3.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delegate {
    /// The delegate, `local@domain`, authenticated by its own token.
    pub who: Name,
    /// What it may do: a bit set of [`Delegate::PUBLISH`] and [`Delegate::READ`].
    pub rights: u8,
}

impl Delegate {
    /// May replace the principal's presence ([`crate::Up::PublishFor`]).
    pub const PUBLISH: u8 = 1;
    /// May read the principal's inbox ([`crate::Up::Read`]).
    pub const READ: u8 = 2;
}

/// A principal's rules, replaced as a whole by [`crate::Up::SetRules`].
///
/// Without a matching rule, an authenticated watcher is allowed the whole document, an
/// anonymous one is denied, an authenticated sender is accepted and an anonymous one
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rules {
    /// Presence rules, in order: among the rules of the most specific kind that match,
    /// the first whose time applies decides.
    pub presence: List<PresenceRule>,
    /// Inbox delivery rules, chosen like presence rules (they have no time).
    pub inbox: List<InboxRule>,
    /// Principals acting for this one.
    pub delegates: List<Delegate>,
}

/// The state of a subscription, as its watcher or the presentity's principal learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubState {
    /// 0: granted: changes are sent.
    Active,
    /// 1: waiting for the principal's decision.
    Pending,
    /// 2: a pending subscription was refused by the principal.
    Denied,
    /// 3: the principal (or an administrator of its domain) ended the subscription.
    Cancelled,
}

/// One subscription in [`crate::Down::Subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubInfo {
    /// The other end: the presentity for one's own subscriptions, the watcher for those
    /// to one's presentity (`anonymous@domain` for an anonymous watcher).
    pub who: Name,
    /// Its state: `Active` or `Pending`.
    pub state: SubState,
}
