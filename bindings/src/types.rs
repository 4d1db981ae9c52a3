//! The records and enums of the FFI surface, and their conversions to and from the core
//! types of `tern-client` (re-exported from `tern-wire`).
//!
//! Owns: the shape of every value that crosses the FFI, and nothing else. Conversions
//! from the core are infallible (`From`); those into the core that parse a name (an
//! availability, a card field kind) are `TryFrom` and fail with
//! [`TernError::InvalidArgument`]. Core enums marked `#[non_exhaustive]` (events,
//! connection states) convert with `TryFrom`, giving back what this build does not know.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::TernError;

/// How to reach the gateway and as whom: `tern_client::ClientConfig` with durations in
/// milliseconds. Build one with [`default_config`] and change what differs.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct TernConfig {
    /// The gateway's UDP address, `host:port` (`[v6]:port` for IPv6 literals).
    pub gateway: String,
    /// The principal, `local@domain`, in any equivalent spelling.
    pub user: String,
    /// The principal's access token. Never logged.
    pub token: String,
    /// PEM certificates to trust: the gateway's own certificate or its CA. The client
    /// trusts nothing else.
    pub ca_pem: Vec<u8>,
    /// The TLS server name the gateway's certificate must match; `None`: the domain of
    /// `user`.
    pub server_name: Option<String>,
    /// A directory where the device id, the inbox position, unanswered messages and the
    /// presence cache survive the process; `None`: nothing survives it.
    pub state_dir: Option<String>,
    /// Take instant messages and late receipts (as `Event.Message`, `Event.Receipt`).
    pub inbox: bool,
    /// Open the session as `anonymous@<domain of user>` with no token, no inbox and no
    /// state, where the gateway allows it.
    pub anonymous: bool,
    /// The mode the client connects in; change it later with `TernClient.set_mode`.
    pub mode: ClientMode,
    /// Interval of QUIC keep-alive pings, ms; 0 turns them off.
    pub keepalive_ms: u64,
    /// The link counts as lost after this long without a packet from the gateway, ms.
    pub idle_timeout_ms: u64,
    /// How long the handshake, the session's opening and each request may take, ms.
    pub request_timeout_ms: u64,
    /// Reconnect (with backoff) when the link drops.
    pub reconnect: bool,
}

impl std::fmt::Debug for TernConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernConfig")
            .field("gateway", &self.gateway)
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("ca_pem", &format!("{} bytes", self.ca_pem.len()))
            .field("server_name", &self.server_name)
            .field("state_dir", &self.state_dir)
            .field("inbox", &self.inbox)
            .field("anonymous", &self.anonymous)
            .field("mode", &self.mode)
            .field("keepalive_ms", &self.keepalive_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// A configuration with `tern_client`'s defaults: inbox on, reconnection on, mode
/// `Active`, the default keep-alive, idle and request timeouts, no state directory.
#[uniffi::export]
pub fn default_config(gateway: String, user: String, token: String, ca_pem: Vec<u8>) -> TernConfig {
    tern_client::ClientConfig::new(gateway, user, token, ca_pem).into()
}

impl From<TernConfig> for tern_client::ClientConfig {
    fn from(c: TernConfig) -> Self {
        Self {
            gateway: c.gateway,
            server_name: c.server_name,
            ca_pem: Some(c.ca_pem),
            user: c.user,
            token: c.token,
            keepalive: Duration::from_millis(c.keepalive_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            reconnect: c.reconnect,
            inbox: c.inbox,
            state_dir: c.state_dir.map(PathBuf::from),
            mode: c.mode.into(),
            anonymous: c.anonymous,
        }
    }
}

impl From<tern_client::ClientConfig> for TernConfig {
    fn from(c: tern_client::ClientConfig) -> Self {
        Self {
            gateway: c.gateway,
            user: c.user,
            token: c.token,
            ca_pem: c.ca_pem.unwrap_or_default(),
            server_name: c.server_name,
            state_dir: c.state_dir.map(|dir| dir.to_string_lossy().into_owned()),
            inbox: c.inbox,
            anonymous: c.anonymous,
            mode: c.mode.into(),
            keepalive_ms: millis(c.keepalive),
            idle_timeout_ms: millis(c.idle_timeout),
            request_timeout_ms: millis(c.request_timeout),
            reconnect: c.reconnect,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How eagerly the gateway pushes presence changes to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ClientMode {
    /// Foreground: changes come within tens of milliseconds.
    Active,
    /// Background: changes wait minutes, or for something else to send.
    Inactive,
    /// A sleepy (IoT) device: changes wait until it sends something.
    Sleepy,
}

impl From<ClientMode> for tern_client::ClientMode {
    fn from(mode: ClientMode) -> Self {
        match mode {
            ClientMode::Active => Self::ACTIVE,
            ClientMode::Inactive => Self::INACTIVE,
            ClientMode::Sleepy => Self::SLEEPY,
        }
    }
}

/// A mode this build does not know reads as `Active`.
impl From<tern_client::ClientMode> for ClientMode {
    fn from(mode: tern_client::ClientMode) -> Self {
        match mode {
            tern_client::ClientMode::INACTIVE => Self::Inactive,
            tern_client::ClientMode::SLEEPY => Self::Sleepy,
            _ => Self::Active,
        }
    }
}

/// One tuple of a presence document (RFC 2778): a status and a means of contact.
/// Extensions are not exposed (they are dropped when publishing).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Tuple {
    /// Names the tuple within its document (e.g. `"phone"`), unique there.
    pub id: String,
    /// OPEN (true) or CLOSED (false).
    pub open: bool,
    /// `"available"`, `"away"`, `"busy"`, `"idle"`, `"dnd"`, `"xa"`, `"asleep"`, or the
    /// registry number of another one, in decimal.
    #[uniffi(default)]
    pub availability: Option<String>,
    /// The communication address as a URI (`tern:bob@example.com`, `tel:+15551234`).
    #[uniffi(default)]
    pub contact: Option<String>,
    /// A free-text note.
    #[uniffi(default)]
    pub note: Option<String>,
    /// When the publisher says this tuple was true, Unix seconds.
    #[uniffi(default)]
    pub at: Option<u64>,
}

impl From<tern_client::Tuple> for Tuple {
    fn from(t: tern_client::Tuple) -> Self {
        Self {
            id: t.id,
            open: t.basic == tern_client::Basic::Open,
            availability: t.availability.map(availability_name),
            contact: t.contact,
            note: t.note,
            at: t.at,
        }
    }
}

impl TryFrom<Tuple> for tern_client::Tuple {
    type Error = TernError;

    fn try_from(t: Tuple) -> Result<Self, TernError> {
        Ok(Self {
            id: t.id,
            basic: if t.open {
                tern_client::Basic::Open
            } else {
                tern_client::Basic::Closed
            },
            availability: t
                .availability
                .as_deref()
                .map(parse_availability)
                .transpose()?,
            contact: t.contact,
            note: t.note,
            at: t.at,
            ext: Vec::new(),
        })
    }
}

fn availability_name(a: tern_client::Availability) -> String {
    a.name().map_or_else(|| a.0.to_string(), str::to_string)
}

fn parse_availability(name: &str) -> Result<tern_client::Availability, TernError> {
    tern_client::Availability::parse(name)
        .ok_or_else(|| TernError::invalid(format!("unknown availability {name:?}")))
}

/// One field of a presentity's contact card.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CardField {
    /// `"name"`, `"email"`, `"tel"`, `"postal"`, `"url"`, or the registry number of
    /// another kind, in decimal.
    pub kind: String,
    /// The value.
    pub value: String,
}

impl From<tern_client::CardField> for CardField {
    fn from(f: tern_client::CardField) -> Self {
        Self {
            kind: f
                .kind
                .name()
                .map_or_else(|| f.kind.0.to_string(), str::to_string),
            value: f.value,
        }
    }
}

impl TryFrom<CardField> for tern_client::CardField {
    type Error = TernError;

    fn try_from(f: CardField) -> Result<Self, TernError> {
        let kind = tern_client::CardKind::parse(&f.kind)
            .ok_or_else(|| TernError::invalid(format!("unknown card field kind {:?}", f.kind)))?;
        Ok(Self {
            kind,
            value: f.value,
        })
    }
}

/// A principal's presence information: its tuples and its contact card.
#[derive(Debug, Clone, PartialEq, Eq, Default, uniffi::Record)]
pub struct Presence {
    /// The tuples.
    pub tuples: Vec<Tuple>,
    /// The contact card.
    #[uniffi(default)]
    pub card: Vec<CardField>,
}

impl From<tern_client::Presence> for Presence {
    fn from(p: tern_client::Presence) -> Self {
        Self {
            tuples: p.tuples.into_iter().map(Into::into).collect(),
            card: p.card.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<Presence> for tern_client::Presence {
    type Error = TernError;

    fn try_from(p: Presence) -> Result<Self, TernError> {
        Ok(Self {
            tuples: p
                .tuples
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            card: p
                .card
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A presentity's presence document as this principal may see it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PresenceDoc {
    /// The presentity, normalised.
    pub presentity: String,
    /// When the gateway last changed the document, Unix milliseconds; 0 when the
    /// presentity never published.
    pub updated: u64,
    /// The presence information.
    pub presence: Presence,
    /// The document's version in the presence cache; 0 when unknown (a document that is
    /// not cached, or not the cached one).
    pub version: u64,
}

/// Version 0: unknown.
impl From<tern_client::PresenceDoc> for PresenceDoc {
    fn from(doc: tern_client::PresenceDoc) -> Self {
        Self {
            presentity: doc.presentity,
            updated: doc.updated,
            presence: doc.presence.into(),
            version: 0,
        }
    }
}

impl From<tern_client::CachedPresence> for PresenceDoc {
    fn from(entry: tern_client::CachedPresence) -> Self {
        Self {
            version: entry.version,
            ..entry.doc.into()
        }
    }
}

/// An instant message received.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The sender's message id.
    pub id: Vec<u8>,
    /// The sender, as the gateway authenticated it.
    pub from: String,
    /// The address it was sent to (this principal's, or one of its aliases).
    pub to: String,
    /// Where replies should go, if not to `from`.
    pub reply_to: Option<String>,
    /// The body's media type; `None` means `text/plain;charset=utf-8`.
    pub content_type: Option<String>,
    /// The payload.
    pub body: Vec<u8>,
    /// When the gateway accepted it, Unix milliseconds.
    pub sent: u64,
}

impl From<tern_client::Incoming> for Message {
    fn from(m: tern_client::Incoming) -> Self {
        Self {
            id: m.id,
            from: m.from,
            to: m.to,
            reply_to: m.reply_to,
            content_type: m.content_type,
            body: m.body,
            sent: m.sent,
        }
    }
}

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReceiptStatus {
    /// Handed to a session of the recipient.
    Delivered,
    /// Kept in the recipient's inbox; a late receipt follows when it is delivered.
    Stored,
    /// Not delivered: `code` is a tern error code (6: unknown_user, …), `reason` its
    /// name.
    Failed {
        /// The error code.
        code: u16,
        /// The code's name (`"unknown_user"`), or `"error_<code>"`.
        reason: String,
    },
    /// Handed on to another network (XMPP); final delivery unknown until a late receipt
    /// says `Delivered` (the recipient's client sent a receipt) or `Failed`.
    Relayed,
}

impl From<tern_client::ReceiptStatus> for ReceiptStatus {
    fn from(s: tern_client::ReceiptStatus) -> Self {
        match s {
            tern_client::ReceiptStatus::Delivered => Self::Delivered,
            tern_client::ReceiptStatus::Stored => Self::Stored,
            tern_client::ReceiptStatus::Failed(code) => Self::Failed {
                code: code.0,
                reason: code.to_string(),
            },
            tern_client::ReceiptStatus::Relayed => Self::Relayed,
        }
    }
}

impl From<ReceiptStatus> for tern_client::ReceiptStatus {
    fn from(s: ReceiptStatus) -> Self {
        match s {
            ReceiptStatus::Delivered => Self::Delivered,
            ReceiptStatus::Stored => Self::Stored,
            ReceiptStatus::Failed { code, .. } => Self::Failed(tern_client::ErrorCode(code)),
            ReceiptStatus::Relayed => Self::Relayed,
        }
    }
}

/// The gateway's answer about a message: to `send`, as a late receipt, or after `send`
/// stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Receipt {
    /// The message id.
    pub id: Vec<u8>,
    /// The recipient, normalised.
    pub to: String,
    /// What became of it.
    pub status: ReceiptStatus,
}

impl From<tern_client::SendOutcome> for Receipt {
    fn from(o: tern_client::SendOutcome) -> Self {
        Self {
            id: o.id,
            to: o.to,
            status: o.status.into(),
        }
    }
}

impl From<tern_client::LateReceipt> for Receipt {
    fn from(r: tern_client::LateReceipt) -> Self {
        Self {
            id: r.id,
            to: r.to,
            status: r.status.into(),
        }
    }
}

/// A principal that fetched this principal's presence recently.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Fetcher {
    /// The fetching principal.
    pub who: String,
    /// Seconds since its last fetch.
    pub age_secs: u32,
    /// Its fetches within the gateway's window.
    pub count: u32,
}

impl From<tern_client::Fetcher> for Fetcher {
    fn from(f: tern_client::Fetcher) -> Self {
        Self {
            who: f.who,
            age_secs: f.age,
            count: f.count,
        }
    }
}

/// Watcher information (RFC 2778): who subscribes, who fetched recently.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct WatcherInfo {
    /// The subscribers, in address order.
    pub subscribers: Vec<String>,
    /// The recent fetchers, most recent first.
    pub fetchers: Vec<Fetcher>,
}

impl From<tern_client::WatcherInfo> for WatcherInfo {
    fn from(w: tern_client::WatcherInfo) -> Self {
        Self {
            subscribers: w.subscribers,
            fetchers: w.fetchers.into_iter().map(Into::into).collect(),
        }
    }
}

/// The state of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SubscriptionState {
    /// In force.
    Active,
    /// Waits for the presentity's principal to decide.
    Pending,
    /// The principal refused it.
    Denied,
    /// The principal ended it.
    Cancelled,
}

impl From<tern_client::SubState> for SubscriptionState {
    fn from(s: tern_client::SubState) -> Self {
        match s {
            tern_client::SubState::Active => Self::Active,
            tern_client::SubState::Pending => Self::Pending,
            tern_client::SubState::Denied => Self::Denied,
            tern_client::SubState::Cancelled => Self::Cancelled,
        }
    }
}

impl From<SubscriptionState> for tern_client::SubState {
    fn from(s: SubscriptionState) -> Self {
        match s {
            SubscriptionState::Active => Self::Active,
            SubscriptionState::Pending => Self::Pending,
            SubscriptionState::Denied => Self::Denied,
            SubscriptionState::Cancelled => Self::Cancelled,
        }
    }
}

/// One subscription, either way.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SubscriptionInfo {
    /// The presentity (own subscriptions) or the watcher (incoming ones).
    pub who: String,
    /// Its state.
    pub state: SubscriptionState,
}

impl From<tern_client::SubInfo> for SubscriptionInfo {
    fn from(s: tern_client::SubInfo) -> Self {
        Self {
            who: s.who,
            state: s.state.into(),
        }
    }
}

/// The answer to `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SubscribeOutcome {
    /// Subscribed: the presentity's current presence; changes follow as
    /// `Event.Presence`.
    Granted {
        /// The presence, also in the presence cache.
        presence: PresenceDoc,
    },
    /// The presentity's rules say *ask*: the decision comes later as
    /// `Event.SubscriptionChanged`.
    Pending,
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Who {
    /// Everyone, anonymous peers included.
    Anyone,
    /// One principal.
    User {
        /// Its address, `local@domain`.
        address: String,
    },
    /// Every principal of a domain.
    Domain {
        /// The domain.
        name: String,
    },
    /// Anonymous peers.
    Anonymous,
}

impl From<tern_client::Who> for Who {
    fn from(w: tern_client::Who) -> Self {
        match w {
            tern_client::Who::Anyone => Self::Anyone,
            tern_client::Who::User(address) => Self::User { address },
            tern_client::Who::Domain(name) => Self::Domain { name },
            tern_client::Who::Anonymous => Self::Anonymous,
        }
    }
}

impl From<Who> for tern_client::Who {
    fn from(w: Who) -> Self {
        match w {
            Who::Anyone => Self::Anyone,
            Who::User { address } => Self::User(address),
            Who::Domain { name } => Self::Domain(name),
            Who::Anonymous => Self::Anonymous,
        }
    }
}

/// What a presence rule decides about a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Decision {
    /// May watch (with the rule's view).
    Allow,
    /// May not; told so.
    Deny,
    /// The principal is asked each time.
    Ask,
    /// Polite blocking: told it was granted, sees a presentity that never published.
    Polite,
    /// May fetch (with the rule's view) but not subscribe; a subscription is refused.
    FetchOnly,
}

impl From<tern_client::Decision> for Decision {
    fn from(d: tern_client::Decision) -> Self {
        match d {
            tern_client::Decision::Allow => Self::Allow,
            tern_client::Decision::Deny => Self::Deny,
            tern_client::Decision::Ask => Self::Ask,
            tern_client::Decision::Polite => Self::Polite,
            tern_client::Decision::FetchOnly => Self::FetchOnly,
        }
    }
}

impl From<Decision> for tern_client::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow => Self::Allow,
            Decision::Deny => Self::Deny,
            Decision::Ask => Self::Ask,
            Decision::Polite => Self::Polite,
            Decision::FetchOnly => Self::FetchOnly,
        }
    }
}

/// What the inbox does with a sender's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Delivery {
    /// Takes them.
    Accept,
    /// Refuses them; the sender is told.
    Refuse,
    /// Drops them in silence.
    Discard,
}

impl From<tern_client::Delivery> for Delivery {
    fn from(d: tern_client::Delivery) -> Self {
        match d {
            tern_client::Delivery::Accept => Self::Accept,
            tern_client::Delivery::Refuse => Self::Refuse,
            tern_client::Delivery::Discard => Self::Discard,
        }
    }
}

impl From<Delivery> for tern_client::Delivery {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Accept => Self::Accept,
            Delivery::Refuse => Self::Refuse,
            Delivery::Discard => Self::Discard,
        }
    }
}

/// What part of the document a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, uniffi::Record)]
pub struct View {
    /// The tuples shown, by id; empty shows every tuple.
    pub tuples: Vec<String>,
    /// Fields hidden, a bit set: 1 contact, 2 note, 4 time, 8 extensions, 16 the card.
    pub hide: u8,
    /// Shown instead of the availability of every OPEN tuple (a name as in
    /// `Tuple.availability`).
    pub status: Option<String>,
}

impl From<tern_client::View> for View {
    fn from(v: tern_client::View) -> Self {
        Self {
            tuples: v.tuples,
            hide: v.hide,
            status: v.status.map(availability_name),
        }
    }
}

impl TryFrom<View> for tern_client::View {
    type Error = TernError;

    fn try_from(v: View) -> Result<Self, TernError> {
        Ok(Self {
            tuples: v.tuples,
            hide: v.hide,
            status: v.status.as_deref().map(parse_availability).transpose()?,
        })
    }
}

/// When a rule applies: some days of the week, between two times of day, in the
/// principal's time zone (`tern_wire::When`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Record)]
pub struct TimeWindow {
    /// Days, a bit set: bit 0 Monday … bit 6 Sunday (0x1f: Monday to Friday).
    pub days: u8,
    /// Start, minutes after local midnight, 0 to 1439.
    pub from: u16,
    /// End (excluded), minutes after local midnight, 1 to 1440; smaller than `from`
    /// for a window that crosses midnight.
    pub to: u16,
    /// The principal's offset from UTC, minutes.
    pub offset: i16,
}

impl From<tern_client::When> for TimeWindow {
    fn from(w: tern_client::When) -> Self {
        Self {
            days: w.days,
            from: w.from,
            to: w.to,
            offset: w.offset,
        }
    }
}

impl From<TimeWindow> for tern_client::When {
    fn from(w: TimeWindow) -> Self {
        Self {
            days: w.days,
            from: w.from,
            to: w.to,
            offset: w.offset,
        }
    }
}

/// One presence rule: for whom, what decision, what they see, and when.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct PresenceRule {
    /// Whom it is about.
    pub who: Who,
    /// The decision.
    pub decision: Decision,
    /// What an allowed watcher sees; `None`: everything.
    #[uniffi(default)]
    pub view: Option<View>,
    /// When the rule applies; `None`: always.
    #[uniffi(default)]
    pub when: Option<TimeWindow>,
}

impl From<tern_client::PresenceRule> for PresenceRule {
    fn from(r: tern_client::PresenceRule) -> Self {
        Self {
            who: r.who.into(),
            decision: r.decision.into(),
            view: r.view.map(Into::into),
            when: r.when.map(Into::into),
        }
    }
}

impl TryFrom<PresenceRule> for tern_client::PresenceRule {
    type Error = TernError;

    fn try_from(r: PresenceRule) -> Result<Self, TernError> {
        Ok(Self {
            who: r.who.into(),
            decision: r.decision.into(),
            view: r.view.map(TryInto::try_into).transpose()?,
            when: r.when.map(Into::into),
        })
    }
}

/// One delivery rule of the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct InboxRule {
    /// Whose messages.
    pub who: Who,
    /// What happens to them.
    pub delivery: Delivery,
}

impl From<tern_client::InboxRule> for InboxRule {
    fn from(r: tern_client::InboxRule) -> Self {
        Self {
            who: r.who.into(),
            delivery: r.delivery.into(),
        }
    }
}

impl From<InboxRule> for tern_client::InboxRule {
    fn from(r: InboxRule) -> Self {
        Self {
            who: r.who.into(),
            delivery: r.delivery.into(),
        }
    }
}

/// Another principal that acts for this one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct Delegate {
    /// The delegate, `local@domain`.
    pub who: String,
    /// What it may do, a bit set: 1 publish this principal's presence, 2 read its
    /// inbox.
    pub rights: u8,
}

impl From<tern_client::Delegate> for Delegate {
    fn from(d: tern_client::Delegate) -> Self {
        Self {
            who: d.who,
            rights: d.rights,
        }
    }
}

impl From<Delegate> for tern_client::Delegate {
    fn from(d: Delegate) -> Self {
        Self {
            who: d.who,
            rights: d.rights,
        }
    }
}

/// A principal's rules: who may watch and what they see (first match wins), who may
/// send to its inbox, and who acts for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, uniffi::Record)]
pub struct Rules {
    /// Presence rules, in order.
    pub presence: Vec<PresenceRule>,
    /// Inbox rules, in order.
    pub inbox: Vec<InboxRule>,
    /// Delegates.
    pub delegates: Vec<Delegate>,
}

impl From<tern_client::Rules> for Rules {
    fn from(r: tern_client::Rules) -> Self {
        Self {
            presence: r.presence.into_iter().map(Into::into).collect(),
            inbox: r.inbox.into_iter().map(Into::into).collect(),
            delegates: r.delegates.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<Rules> for tern_client::Rules {
    type Error = TernError;

    fn try_from(r: Rules) -> Result<Self, TernError> {
        Ok(Self {
            presence: r
                .presence
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            inbox: r.inbox.into_iter().map(Into::into).collect(),
            delegates: r.delegates.into_iter().map(Into::into).collect(),
        })
    }
}

/// The state of the connection, reported when it changes after `connect`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// A new session is open after a reconnect.
    Connected,
    /// The link dropped; the client is trying again. Messages wait in the outbox.
    Reconnecting {
        /// Why the link dropped.
        reason: String,
    },
    /// The connection is gone for good; no more events follow.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// Fails, giving the state back, for a state this build does not know.
impl TryFrom<tern_client::ConnectionState> for ConnectionState {
    type Error = tern_client::ConnectionState;

    fn try_from(s: tern_client::ConnectionState) -> Result<Self, Self::Error> {
        Ok(match s {
            tern_client::ConnectionState::Connected => Self::Connected,
            tern_client::ConnectionState::Reconnecting { reason } => Self::Reconnecting { reason },
            tern_client::ConnectionState::Disconnected { reason } => Self::Disconnected { reason },
            other => return Err(other),
        })
    }
}

/// Something the gateway or the connection tells the application.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    /// A subscribed presentity's presence changed, or is new to the presence cache.
    Presence {
        /// The new document.
        presence: PresenceDoc,
    },
    /// A subscription ended without this client asking; the presentity left the cache.
    SubscriptionEnded {
        /// The presentity.
        presentity: String,
    },
    /// A principal subscribed to this principal's presence just now.
    Watched {
        /// The subscriber.
        watcher: String,
    },
    /// A principal asks to watch this principal's presence: answer with `decide`.
    Asked {
        /// Who asks.
        watcher: String,
    },
    /// One of this principal's subscriptions changed state (granted, denied, cancelled).
    SubscriptionChanged {
        /// The presentity.
        target: String,
        /// The new state.
        state: SubscriptionState,
    },
    /// An instant message (only with `TernConfig.inbox`). Acknowledged to the gateway
    /// when the listener returns.
    Message {
        /// The message.
        message: Message,
    },
    /// A late receipt for a message that was `Stored`. Acknowledged like a message.
    Receipt {
        /// The receipt.
        receipt: Receipt,
    },
    /// The gateway answered a message whose `send` no longer waits for it.
    Sent {
        /// The receipt.
        receipt: Receipt,
    },
    /// The connection changed state.
    Connection {
        /// The new state.
        state: ConnectionState,
    },
}

/// Fails, giving the event back, for an event this build does not know. Presence
/// documents get version 0 (the listener fills in the cache's).
impl TryFrom<tern_client::Event> for Event {
    type Error = tern_client::Event;

    fn try_from(e: tern_client::Event) -> Result<Self, Self::Error> {
        use tern_client::Event as E;
        Ok(match e {
            E::Presence(doc) => Self::Presence {
                presence: doc.into(),
            },
            E::SubscriptionEnded { presentity } => Self::SubscriptionEnded { presentity },
            E::Watched { watcher } => Self::Watched { watcher },
            E::Asked { watcher } => Self::Asked { watcher },
            E::SubscriptionChanged { target, state } => Self::SubscriptionChanged {
                target,
                state: state.into(),
            },
            E::Message { message, .. } => Self::Message {
                message: message.into(),
            },
            E::Receipt { receipt, .. } => Self::Receipt {
                receipt: receipt.into(),
            },
            E::Sent(outcome) => Self::Sent {
                receipt: outcome.into(),
            },
            E::Connection(state) => match ConnectionState::try_from(state) {
                Ok(state) => Self::Connection { state },
                Err(unknown) => return Err(E::Connection(unknown)),
            },
            other => return Err(other),
        })
    }
}
