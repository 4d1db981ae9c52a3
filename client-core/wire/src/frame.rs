//! The frames of a tern session.
//!
//! A session is one bidirectional QUIC stream opened by the client. The client's first
//! frame is [`Up::Hello`]; the gateway answers [`Down::Welcome`] or [`Down::Close`].
//! Every request carries a client-chosen request id (`req`, small and increasing) and
//! gets exactly one response carrying the same id: [`Down::Ok`], [`Down::Fail`],
//! [`Down::Presence`] or [`Down::Receipt`]. Everything else the gateway sends is pushed:
//! [`Down::Notify`], [`Down::Deliver`], [`Down::Close`].
//!
//! Variants are append-only: their position is their wire tag. Never reorder, never
//! remove, never add a field to an existing variant; a new version adds variants or a new
//! ALPN.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::message::{InboxItem, Message, ReceiptStatus};
use crate::presence::{Presence, PresenceDoc};
use crate::rules::{Decision, Rules, SubInfo, SubState};
use crate::sync::{Batch, ClientMode, Have, Slot, Version};
use crate::types::{Key, List, Name, Text};

/// A request id, chosen by the client, echoed in the response.
pub type ReqId = u32;

/// Client to gateway.
// Without an allocator nothing can be boxed: every variant is held inline.
#[cfg_attr(not(feature = "std"), allow(clippy::large_enum_variant))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Up {
    /// 0: opens the session. Must be the first frame, exactly once.
    Hello(Hello),
    /// 1: replaces the presentity's presence information with this.
    Publish {
        /// Request id.
        req: ReqId,
        /// The new presence information.
        presence: Presence,
    },
    /// 2: fetches a presentity's presence once; answered with [`Down::Presence`].
    Fetch {
        /// Request id.
        req: ReqId,
        /// The presentity.
        target: Name,
    },
    /// 3: subscribes the session's principal to a presentity; answered with
    /// [`Down::Presence`] (the current document), then [`Down::Notify`] on every change.
    Subscribe {
        /// Request id.
        req: ReqId,
        /// The presentity.
        target: Name,
    },
    /// 4: ends a subscription; nothing more is sent about it once answered.
    Unsubscribe {
        /// Request id.
        req: ReqId,
        /// The presentity.
        target: Name,
    },
    /// 5: sends an instant message; answered with [`Down::Receipt`].
    Send {
        /// Request id.
        req: ReqId,
        /// The message.
        msg: Message,
    },
    /// 6: acknowledges every inbox item up to and including sequence number `upto`.
    Ack {
        /// The highest sequence number received, cumulative.
        upto: u64,
    },
    /// 7: says goodbye: the gateway closes the session and marks the presentity
    /// CLOSED at once (if this was its last session).
    Bye,
    /// 8: opens or resumes the session of one device; the opening frame of clients that
    /// keep state (instead of [`Up::Hello`]). Must be the first frame, exactly once.
    Open(Open),
    /// 9: the state vector of a [`Open::SYNC`] session: what presence the client holds.
    /// Answered with [`Down::Synced`]. Send it right after `Open`, in the same flight,
    /// and again whenever a batch did not apply.
    Have(Have),
    /// 10: the client's mode changed (foreground, background, sleepy). Like every frame
    /// the client sends, it also flushes presence changes waiting for this session.
    Mode {
        /// The new mode.
        mode: ClientMode,
    },
    /// 11: acknowledges every [`Down::Batch`] (and [`Down::Synced`]) up to and including
    /// number `batch`.
    Applied {
        /// The highest batch number applied, cumulative.
        batch: u32,
    },
    /// 12: fetches a presentity's presence if it changed since `version`: answered with
    /// [`Down::Ok`] when the fetcher's version is current, else [`Down::Versioned`].
    FetchIf {
        /// Request id.
        req: ReqId,
        /// The presentity.
        target: Name,
        /// The version the fetcher holds; 0 fetches unconditionally.
        version: Version,
    },
    /// 13: asks who watches the session's principal: its subscribers, and who fetched
    /// its presence recently. Answered with [`Down::Watchers`].
    Watchers {
        /// Request id.
        req: ReqId,
    },
    /// 14: asks for the principal's rules; answered with [`Down::Rules`].
    GetRules {
        /// Request id.
        req: ReqId,
    },
    /// 15: replaces the principal's rules; answered with [`Down::Ok`]. Existing
    /// subscriptions follow at once: a watcher now denied is cancelled (and told), a
    /// pending one now allowed is granted, and every watcher's view is recomputed.
    SetRules {
        /// Request id.
        req: ReqId,
        /// The new rules, whole.
        rules: Rules,
    },
    /// 16: decides about one watcher, typically one that asked ([`Down::Asked`]): puts
    /// a rule for exactly that principal first among the presence rules (replacing an
    /// earlier one for it) and applies the rules as [`Up::SetRules`] does.
    Decide {
        /// Request id.
        req: ReqId,
        /// The watcher, `local@domain`.
        watcher: Name,
        /// The decision.
        decision: Decision,
    },
    /// 17: the principal ends a watcher's subscription to it (RFC 2779 5.1.16);
    /// answered with [`Down::Ok`] whether or not there was one. The watcher is told
    /// ([`Down::Subscription`], `Cancelled`) unless it was politely blocked. It may
    /// subscribe again, under the rules.
    Cancel {
        /// Request id.
        req: ReqId,
        /// The watcher, `local@domain`.
        watcher: Name,
    },
    /// 18: lists subscriptions and their states; answered with
    /// [`Down::Subscriptions`]. `incoming` false: the principal's own subscriptions;
    /// true: the subscriptions and pending requests to its presentity.
    Subscriptions {
        /// Request id.
        req: ReqId,
        /// Which way.
        incoming: bool,
    },
    /// 19: a delegate replaces another principal's presence (RFC 2779 2.3.4); answered
    /// with [`Down::Ok`], or `refused` unless that principal's rules name the session's
    /// principal a delegate with [`crate::rules::Delegate::PUBLISH`].
    PublishFor {
        /// Request id.
        req: ReqId,
        /// The presentity.
        presentity: Name,
        /// Its new presence information.
        presence: Presence,
    },
    /// 20: a delegate reads another principal's inbox (RFC 2779 2.3.6): the items held
    /// for it after sequence number `after`, without acknowledging them; answered with
    /// [`Down::Items`], or `refused` unless the owner's rules name the session's
    /// principal a delegate with [`crate::rules::Delegate::READ`].
    Read {
        /// Request id.
        req: ReqId,
        /// The inbox, `local@domain`.
        inbox: Name,
        /// Items after this sequence number.
        after: u64,
    },
    /// 21: opens an administrator's session for one domain, authenticated by the
    /// domain's administrator token (not a user's). Must be the first frame, exactly
    /// once; answered with [`Down::Welcome`] (whose `user` is the domain).
    Operate(Operate),
    /// 22: an administrator's request about one principal of its domain. Answered as
    /// the principal's own request would be (see [`AdminOp`]); every one is logged.
    Admin {
        /// Request id.
        req: ReqId,
        /// The principal, `local@domain`.
        user: Name,
        /// What to do.
        op: AdminOp,
    },
}

/// The opening frame of an administrator's session. Its first field is the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operate {
    /// Protocol version; [`crate::VERSION`].
    pub version: u16,
    /// The domain administered.
    pub domain: Name,
    /// The domain's administrator token.
    pub token: Text,
}

/// What an administrator does about one principal ([`Up::Admin`]).
// Without an allocator nothing can be boxed: every variant is held inline.
#[cfg_attr(not(feature = "std"), allow(clippy::large_enum_variant))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// 0: who watches the principal; answered with [`Down::Watchers`] (RFC 2779 5.1.16).
    Watchers,
    /// 1: its subscriptions and pending requests, as its own [`Up::Subscriptions`]
    /// with the same `incoming`; answered with [`Down::Subscriptions`].
    Subscriptions {
        /// Which way: true for the subscriptions to the principal's presentity.
        incoming: bool,
    },
    /// 2: its rules; answered with [`Down::Rules`].
    GetRules,
    /// 3: replaces its rules, as [`Up::SetRules`]; answered with [`Down::Ok`].
    SetRules(Rules),
    /// 4: its presence; answered with [`Down::Versioned`].
    GetPresence,
    /// 5: replaces its presence, as its own `Publish`; answered with [`Down::Ok`].
    SetPresence(Presence),
    /// 6: ends one watcher's subscription to it, as [`Up::Cancel`].
    Cancel(Name),
}

/// The opening frame of a device that keeps state: it names the device, so that the
/// gateway can resume the device's session after a lost link, and says which inbox
/// items the device has already processed. Its first field is the version, like
/// [`Hello`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// Protocol version; [`crate::VERSION`].
    pub version: u16,
    /// The principal's identifier, `local@domain`.
    pub user: Name,
    /// The access token provisioned for the principal.
    pub token: Text,
    /// The device: 1 to [`crate::limits::MSG_ID_MAX`] bytes chosen once per
    /// installation and kept (`tern-client` keeps 16 random bytes in its state directory).
    pub device: Key,
    /// The highest inbox sequence number this device has processed and kept durably;
    /// 0 if none. Nothing at or below it is delivered to this device again.
    pub inbox_seen: u64,
    /// Bit set of [`Open::INBOX`].
    pub flags: u8,
}

impl Open {
    /// This session takes inbox items (messages and late receipts). Without it the
    /// gateway pushes none to it, and does not wait for it to acknowledge anything.
    pub const INBOX: u8 = 1;
    /// This session takes presence synchronised ([`crate::sync`]): `Subscribe` is answered
    /// with [`Down::Subscribed`] and changes come as [`Down::Batch`] deltas, flushed by
    /// the client's mode, instead of one [`Down::Notify`] per change. The session starts
    /// in [`ClientMode::ACTIVE`] until its [`Up::Have`] says otherwise.
    pub const SYNC: u8 = 2;

    /// Whether the session takes presence synchronised.
    pub const fn syncs(&self) -> bool {
        self.flags & Self::SYNC != 0
    }

    /// Whether the session takes inbox items.
    pub const fn takes_inbox(&self) -> bool {
        self.flags & Self::INBOX != 0
    }
}

/// The opening frame. Its first field is the version, in every version, so that a
/// gateway can tell which layout follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version; [`crate::VERSION`].
    pub version: u16,
    /// The principal's identifier, `local@domain`.
    pub user: Name,
    /// The access token provisioned for the principal.
    pub token: Text,
}

/// Gateway to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// 0: the session is open.
    Welcome(Welcome),
    /// 1: the request succeeded and has nothing to return.
    Ok {
        /// Request id.
        req: ReqId,
    },
    /// 2: the request failed; nothing was changed.
    Fail {
        /// Request id.
        req: ReqId,
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: Text,
    },
    /// 3: a presence document, answering `Fetch` or `Subscribe`.
    Presence {
        /// Request id.
        req: ReqId,
        /// The document as this watcher may see it.
        doc: PresenceDoc,
    },
    /// 4: the receipt for a `Send`.
    Receipt {
        /// Request id.
        req: ReqId,
        /// What became of the message.
        status: ReceiptStatus,
    },
    /// 5: a subscribed presentity's presence changed; this is its new document.
    Notify {
        /// The document as this watcher may see it.
        doc: PresenceDoc,
    },
    /// 6: an inbox item; acknowledge it with [`Up::Ack`].
    Deliver {
        /// Position in the principal's inbox log, increasing by one per item.
        seq: u64,
        /// The item.
        item: InboxItem,
    },
    /// 7: the gateway closes the session for this reason; nothing follows.
    Close {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: Text,
    },
    /// 8: the device's session is open; the answer to a good [`Up::Open`].
    Opened(Opened),
    /// 9: presence changes of a [`Open::SYNC`] session's subscriptions.
    Batch(Batch),
    /// 10: the answer to [`Up::Have`]: what changed since the state it described (an
    /// empty batch when nothing did). Batches that arrive between sending `Have` and
    /// this answer were made for the state before it: discard them.
    Synced {
        /// Request id.
        req: ReqId,
        /// The changes.
        batch: Batch,
    },
    /// 11: the answer to `Subscribe` on a [`Open::SYNC`] session: the subscription's slot
    /// and the current document.
    Subscribed {
        /// Request id.
        req: ReqId,
        /// The slot that names this subscription in batches, for good.
        slot: Slot,
        /// The document's version.
        version: Version,
        /// The document as this watcher may see it.
        doc: PresenceDoc,
    },
    /// 12: the answer to a [`Up::FetchIf`] whose version is not current.
    Versioned {
        /// Request id.
        req: ReqId,
        /// The document's version.
        version: Version,
        /// The document as this fetcher may see it.
        doc: PresenceDoc,
    },
    /// 13: the request was refused, and nothing changed, because its principal is over
    /// a rate limit ([`ErrorCode::RATE_LIMITED`]); the same request will be accepted
    /// after `retry_after`.
    Limited {
        /// Request id.
        req: ReqId,
        /// How long to wait before trying again, ms.
        retry_after: u32,
    },
    /// 14: the answer to [`Up::Watchers`]: watcher information (RFC 2778).
    Watchers {
        /// Request id.
        req: ReqId,
        /// The principals subscribed to the session's presentity, authenticated, in
        /// address order.
        subscribers: List<Name>,
        /// The principals that fetched its presence within the gateway's window, most
        /// recent first.
        fetchers: List<Fetcher>,
    },
    /// 15: a principal subscribed to the session's presentity just now (RFC 2779
    /// 5.1.11); pushed to every session of the presentity's principal.
    Watched {
        /// The new subscriber, authenticated.
        watcher: Name,
    },
    /// 16: the answer to `Subscribe` when the principal's rules say *ask*: the
    /// subscription is recorded and waits for the principal's decision, which comes as
    /// [`Down::Subscription`].
    Pending {
        /// Request id.
        req: ReqId,
    },
    /// 17: a principal asks to subscribe to the session's presentity; answer it with
    /// [`Up::Decide`]. Pushed to every session of the presentity's principal, and
    /// listed by [`Up::Subscriptions`] (`incoming`) until decided.
    Asked {
        /// The watcher's authenticated address, or `anonymous@domain` for an anonymous
        /// peer.
        watcher: Name,
    },
    /// 18: the principal's rules, answering [`Up::GetRules`].
    Rules {
        /// Request id.
        req: ReqId,
        /// The rules.
        rules: Rules,
    },
    /// 19: subscriptions and their states, answering [`Up::Subscriptions`].
    Subscriptions {
        /// Request id.
        req: ReqId,
        /// The subscriptions, in address order.
        list: List<SubInfo>,
    },
    /// 20: the state of one of the session's subscriptions changed: a pending one was
    /// granted (`Active`; its presence follows as for a new subscription) or refused
    /// (`Denied`), or the presentity's principal ended it (`Cancelled`).
    Subscription {
        /// The presentity.
        target: Name,
        /// The new state.
        state: SubState,
    },
    /// 21: inbox items read by a delegate, answering [`Up::Read`]. `more` says that
    /// more items follow the last one: read again after its sequence number.
    Items {
        /// Request id.
        req: ReqId,
        /// The items, oldest first.
        items: List<Item>,
        /// Whether more items are held after these.
        more: bool,
    },
}

/// One inbox item in [`Down::Items`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its position in the owner's inbox log.
    pub seq: u64,
    /// The item.
    pub item: InboxItem,
}

/// One recent fetcher in [`Down::Watchers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetcher {
    /// The fetching principal, authenticated.
    pub who: Name,
    /// Seconds since its last fetch.
    pub age: u32,
    /// Its fetches within the window.
    pub count: u32,
}

/// The gateway's answer to a good [`Open`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// The protocol version the gateway speaks on this session.
    pub version: u16,
    /// The principal's normalised identifier, as the gateway will stamp it.
    pub user: Name,
    /// Largest frame the gateway accepts, bytes.
    pub frame_max: u32,
    /// Largest message body the gateway accepts, bytes.
    pub body_max: u32,
    /// The gateway's clock, Unix milliseconds.
    pub time: u64,
    /// True when the device's earlier session was resumed: subscriptions, waiting
    /// receipts and the presentity's contact were kept, and only presence that changed
    /// meanwhile is restated. False for a fresh session: every subscription is restated.
    pub resumed: bool,
    /// How long the gateway keeps a device's session after its link is lost, ms. The
    /// presentity stays in contact for that long (no CLOSED flap on a short outage).
    pub resume_window: u32,
    /// The keep-alive interval the gateway suggests for this link, ms.
    pub keepalive: u32,
}

/// The gateway's answer to a good [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the gateway speaks on this session.
    pub version: u16,
    /// The principal's normalised identifier, as the gateway will stamp it.
    pub user: Name,
    /// Largest frame the gateway accepts, bytes.
    pub frame_max: u32,
    /// Largest message body the gateway accepts, bytes.
    pub body_max: u32,
    /// The gateway's clock, Unix milliseconds.
    pub time: u64,
}

impl Up {
    /// The request id, for frames that are requests.
    pub fn req(&self) -> Option<ReqId> {
        match self {
            Self::Publish { req, .. }
            | Self::Fetch { req, .. }
            | Self::Subscribe { req, .. }
            | Self::Unsubscribe { req, .. }
            | Self::Send { req, .. }
            | Self::FetchIf { req, .. }
            | Self::Watchers { req }
            | Self::GetRules { req }
            | Self::SetRules { req, .. }
            | Self::Decide { req, .. }
            | Self::Cancel { req, .. }
            | Self::Subscriptions { req, .. }
            | Self::PublishFor { req, .. }
            | Self::Read { req, .. }
            | Self::Admin { req, .. }
            | Self::Have(Have { req, .. }) => Some(*req),
            Self::Hello(_)
            | Self::Open(_)
            | Self::Operate(_)
            | Self::Ack { .. }
            | Self::Bye
            | Self::Mode { .. }
            | Self::Applied { .. } => None,
        }
    }
}

impl Down {
    /// The request id, for frames that answer a request.
    pub fn req(&self) -> Option<ReqId> {
        match self {
            Self::Ok { req }
            | Self::Fail { req, .. }
            | Self::Presence { req, .. }
            | Self::Receipt { req, .. }
            | Self::Synced { req, .. }
            | Self::Subscribed { req, .. }
            | Self::Versioned { req, .. }
            | Self::Limited { req, .. }
            | Self::Watchers { req, .. }
            | Self::Pending { req }
            | Self::Rules { req, .. }
            | Self::Subscriptions { req, .. }
            | Self::Items { req, .. } => Some(*req),
            Self::Welcome(_)
            | Self::Opened(_)
            | Self::Notify { .. }
            | Self::Deliver { .. }
            | Self::Close { .. }
            | Self::Batch(_)
            | Self::Watched { .. }
            | Self::Asked { .. }
            | Self::Subscription { .. } => None,
        }
    }
}
