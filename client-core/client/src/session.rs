//! The client side of one tern session, as a sans-IO state machine.
//!
//! Owns the session's protocol logic: the opening `Open` and the wait for `Opened` (or
//! `Welcome` from a gateway that keeps no device sessions) or `Close`, request ids and
//! the matching of every response to its request (by kind, so a `Receipt` answering a
//! `Fetch` is a protocol violation), request and handshake deadlines, pushes turned into
//! [`SessionEvent`]s, duplicate inbox items, the cumulative `Ack`, the goodbye, and which
//! frames may travel as QUIC 0-RTT early data; and the session's side of presence
//! synchronisation (see below; the cache itself is [`crate::roster`]'s).
//!
//! It may not touch sockets, tasks, QUIC, TLS, clocks or randomness: the caller hands it
//! `now` and what happened, and takes back frames to send, events and the next deadline
//! (the shape of quinn-proto's `Connection`). It sees whole [`Up`]/[`Down`] frames; the
//! length-delimited framing on the stream belongs to the runtime.
//!
//! ## How to drive it
//! 1. [`Session::new`] queues `Open` and `Have`. Messages may be sent ([`Session::send`])
//!    at once, before `Opened`: they follow in the same flight (the gateway handles frames
//!    in order, and de-duplicates messages by id). Other requests wait for `Opened`.
//! 2. Feed inputs as they happen: [`Session::handle_frame`] for each decoded frame,
//!    [`Session::handle_timeout`] when the instant from [`Session::poll_timeout`] is
//!    reached, [`Session::handle_confirmed`] when the transport's handshake is confirmed
//!    (only for a session created with [`SessionConfig::early_data`]),
//!    [`Session::handle_closed`] when the link ends; call commands
//!    ([`Session::publish`], [`Session::send`], [`Session::ack`], [`Session::close`], ...)
//!    whenever the application asks.
//! 3. After every input or command, drain [`Session::poll_transmit`] (write each frame to
//!    the stream, in order) and [`Session::poll_event`], and re-read
//!    [`Session::poll_timeout`].
//!
//! ## 0-RTT
//! A session created with [`SessionConfig::early_data`] is written as QUIC 0-RTT data,
//! which an attacker can record and replay. Until [`Session::handle_confirmed`],
//! [`Session::poll_transmit`] hands out only frames whose replay does no harm: `Open`,
//! `Have` (it only reads), `Send` (the gateway accepts each message id once) and `Ack`
//! (cumulative). The first other frame (`Publish`, `Fetch`, `FetchIf`, `Subscribe`,
//! `Unsubscribe`, `Mode`, `Bye`, and every request about rules, subscriptions and
//! delegation) stops the queue there, so frames still leave in the
//! order they were queued; `Applied` waits for the confirmation too. If the gateway rejects the
//! early data, the stream is gone: the runtime starts a new session on a new stream.
//!
//! ## Inbox items and acknowledgement
//! `Deliver` items are surfaced once per session: a sequence number at or below the
//! highest one already surfaced is dropped. They are acknowledged only once the
//! application says it has taken them ([`Session::ack`]), so a process that dies
//! between receipt and use gets them again in its next session. The `Ack` sent is
//! cumulative and coalesced: however many items arrived and however many `ack` calls
//! were made since the last drain of [`Session::poll_transmit`], at most one `Ack`
//! goes out, carrying the highest sequence number that is both taken by the
//! application and delivered in this session (the gateway only accepts
//! acknowledgements of what it sent to the session). What the application took in
//! earlier sessions travels in `Open.inbox_seen` instead.
//!
//! ## Presence synchronisation
//! Every session opens with [`Open::SYNC`]: presence comes as batches of changes against
//! a cache ([`crate::roster`], shared with the runtime through [`SessionConfig::roster`])
//! instead of one document per change.
//! * `Have` (the cache's state vector and the client's mode) follows `Open` in the first
//!   flight; it is read-only, so it may travel as 0-RTT data. The gateway answers
//!   `Synced`.
//! * `Batch` and `Synced` are applied to the cache all or nothing;
//!   [`SessionEvent::PresenceChanged`] and [`SessionEvent::SubscriptionEnded`] report
//!   each presentity whose state really changed.
//! * A batch that does not apply (the client lost track) drops its slots from the cache
//!   and sends a new `Have` with what is left; batches that arrive before its `Synced`
//!   were made for the old state and are discarded. After [`MAX_RESYNCS`] answers in a
//!   row that do not apply either, the session stops asking (it logs an error) and the
//!   next session starts over.
//! * `Applied` acknowledges every batch received (applied or discarded), cumulative and
//!   lazy, because each one the gateway receives costs an acknowledgement datagram back
//!   down: it goes when [`ACK_EVERY`] batches are owed, right after any other frame
//!   (the radio is up anyway), or as the keep-alive. It waits for the handshake's
//!   confirmation.
//! * With [`Session::keep_alive`], a link that sent nothing for half the interval sends
//!   `Applied` (4 bytes) instead of leaving it to a QUIC PING: the gateway sees a frame,
//!   so presence it holds back for a background client rides on the keep-alive instead
//!   of waking the radio separately.
//! * `Subscribed` puts the slot in the cache; the `Ok` to an `Unsubscribe` drops it.
//!   [`Session::set_mode`] sends `Mode` (and is remembered for later `Have`s).
//! * `Notify` and `Presence` from a gateway or session without synchronisation are still
//!   surfaced ([`SessionEvent::Notify`], [`Reply::Presence`]).
//!
//! ## Access rules, pending subscriptions, delegation
//! The principal's rules are read and replaced whole (`GetRules`, `SetRules`,
//! [`Reply::Rules`]); [`Session::decide`] and [`Session::cancel`] act on one watcher;
//! [`Session::subscriptions`] lists subscriptions either way; [`Session::publish_for`] and
//! [`Session::read`] act for another principal that named this one its delegate.
//! * A `Subscribe` whose presentity's rules say *ask* is answered `Pending`
//!   ([`Reply::Pending`]): nothing enters the cache. Its outcome is pushed later as
//!   `Subscription` ([`SessionEvent::Subscription`]): `Active` is followed by the
//!   presence as for a new subscription (a batch whose `Full` change names the new
//!   slot, which the cache takes as a slot it did not know), `Denied` ends the request.
//! * `Subscription` `Cancelled` (the presentity's principal ended an active
//!   subscription) drops the presentity from the cache at once; the gateway's `Gone`
//!   change for its slot, before or after, is then a no-op. Whichever comes first
//!   reports [`SessionEvent::SubscriptionEnded`], so it is reported once.
//! * `Asked` (someone asks to watch this principal) is surfaced as
//!   [`SessionEvent::Asked`].
//! * A request the rules refuse is answered `Fail` with `refused`
//!   ([`Reply::Failed`]); the runtime gives it its own error.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use tern_wire::codec;
use tern_wire::frame::{Item, Opened, ReqId, Welcome};
use tern_wire::limits::MSG_ID_MAX;
use tern_wire::{
    Batch, ClientMode, Decision, Down, ErrorCode, Have, InboxItem, Incoming, LateReceipt, Message,
    Open, Presence, PresenceDoc, ReceiptStatus, Rules, SubInfo, SubState, Up, VERSION, Version,
};

use crate::roster::{self, CachedPresence, RosterChange, SharedRoster};

/// How long a goodbye waits for the gateway to end the session before giving up.
pub const BYE_LINGER: Duration = Duration::from_secs(2);

/// Answers to `Have` in a row that may fail to apply before the session stops asking.
pub const MAX_RESYNCS: u32 = 3;

/// Encoded size of a `Have` without its entries, at most (tag, request id, mode, count).
const HAVE_OVERHEAD: usize = 16;
/// Encoded size of one `Held`, at most (two varints).
const HELD_MAX_SIZE: usize = 15;

/// What a session needs to open.
#[derive(Clone)]
pub struct SessionConfig {
    /// The principal, `local@domain` (preferably normalised already).
    pub user: String,
    /// The principal's access token. Never logged.
    pub token: String,
    /// The device: 1 to [`MSG_ID_MAX`] bytes, the same in every session of one
    /// installation, so that the gateway can resume its session.
    pub device: Vec<u8>,
    /// How long `Opened` and each response may take before they are given up on.
    pub request_timeout: Duration,
    /// The highest inbox sequence number the application has already taken, from an
    /// earlier session of the same device; sent as `Open.inbox_seen`, and items up to it
    /// are acknowledged as soon as they are redelivered.
    pub consumed: Option<u64>,
    /// Whether the application takes inbox items. When it does not (a presence-only
    /// watcher, a one-shot sender), `Deliver` items are neither surfaced nor acknowledged:
    /// they stay in the inbox for a session that takes them.
    pub inbox: bool,
    /// The frames are written as QUIC 0-RTT data until [`Session::handle_confirmed`]:
    /// only replay-safe frames go out until then (see the module documentation).
    pub early_data: bool,
    /// The largest frame the gateway accepted last time (its `Opened.frame_max`), or
    /// [`tern_wire::limits::DEFAULT_FRAME_MAX`]: the limit of messages sent before
    /// `Opened` announces this session's.
    pub frame_max: u32,
    /// The client's mode, sent in `Have` (foreground, background, sleepy).
    pub mode: ClientMode,
    /// The presence cache: what `Have` lists, and what batches change. It outlives the
    /// session (the next one states it in its `Have`).
    pub roster: SharedRoster,
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("device", &format_args!("{} bytes", self.device.len()))
            .field("request_timeout", &self.request_timeout)
            .field("consumed", &self.consumed)
            .field("inbox", &self.inbox)
            .field("early_data", &self.early_data)
            .field("frame_max", &self.frame_max)
            .field("mode", &self.mode)
            .field("presentities", &roster::lock(&self.roster).len())
            .finish()
    }
}

/// The gateway's answer to `Open`: `Opened` from a gateway that keeps device sessions,
/// `Welcome` from one that does not (nothing is ever resumed there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A device session, new or resumed.
    Opened(Opened),
    /// A session without device state.
    Welcome(Welcome),
}

impl Admitted {
    /// The protocol version the gateway speaks on this session.
    pub fn version(&self) -> u16 {
        match self {
            Self::Opened(o) => o.version,
            Self::Welcome(w) => w.version,
        }
    }

    /// The principal's normalised identifier, as the gateway stamps it.
    pub fn user(&self) -> &str {
        match self {
            Self::Opened(o) => &o.user,
            Self::Welcome(w) => &w.user,
        }
    }

    /// Largest frame the gateway accepts, bytes.
    pub fn frame_max(&self) -> u32 {
        match self {
            Self::Opened(o) => o.frame_max,
            Self::Welcome(w) => w.frame_max,
        }
    }

    /// Largest message body the gateway accepts, bytes.
    pub fn body_max(&self) -> u32 {
        match self {
            Self::Opened(o) => o.body_max,
            Self::Welcome(w) => w.body_max,
        }
    }

    /// Whether the device's earlier session was resumed (its presence, subscriptions and
    /// waiting receipts kept, only changes restated).
    pub fn resumed(&self) -> bool {
        matches!(self, Self::Opened(o) if o.resumed)
    }

    /// The keep-alive interval the gateway suggests, ms; `None` from a `Welcome` or a
    /// gateway that suggests none (0).
    pub fn suggested_keepalive_ms(&self) -> Option<u32> {
        match self {
            Self::Opened(o) if o.keepalive > 0 => Some(o.keepalive),
            _ => None,
        }
    }
}

/// What the session tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The gateway accepted the `Open`; requests may be made now.
    Opened(Admitted),
    /// The answer to request `req`; exactly one per request.
    Reply {
        /// The request it answers.
        req: ReqId,
        /// The answer.
        reply: Reply,
    },
    /// A subscribed presentity's presence changed, or the gateway restates it (from a
    /// gateway that does not synchronise presence).
    Notify(PresenceDoc),
    /// A batch changed a cached presentity's state (or brought a new one): this is the
    /// new state, already in the cache.
    PresenceChanged(CachedPresence),
    /// A subscription ended (on another device of the principal, or by the gateway); this
    /// was its last state, now gone from the cache.
    SubscriptionEnded(CachedPresence),
    /// A principal subscribed to this principal's presentity just now.
    Watched(String),
    /// A principal asks to subscribe to this principal's presentity (its rules say
    /// *ask*); answer with [`Session::decide`].
    Asked(String),
    /// The state of one of this principal's subscriptions changed: a pending request was
    /// granted (`Active`: its presence follows, as a batch naming the new slot) or
    /// refused (`Denied`), or the presentity's principal ended it (`Cancelled`). On
    /// `Denied` and `Cancelled` the presentity has already left the cache; when it was
    /// cached, [`SessionEvent::SubscriptionEnded`] came just before this event (or comes
    /// with the gateway's `Gone` change, if that came first).
    Subscription {
        /// The presentity.
        target: String,
        /// Its new state.
        state: SubState,
    },
    /// An instant message from the inbox. Take it, then [`Session::ack`] its `seq`.
    Message {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The message.
        message: Incoming,
    },
    /// A late receipt from the inbox. Take it, then [`Session::ack`] its `seq`.
    Receipt {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The receipt.
        receipt: LateReceipt,
    },
    /// The session is over; nothing follows. Replies for every request still waiting
    /// come just before it.
    Closed(CloseReason),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `Ok`: a `Publish`, `Unsubscribe`, `SetRules`, `Decide`, `Cancel` or `PublishFor`
    /// succeeded.
    Done,
    /// The document answering a `Fetch` or `Subscribe` (`Subscribed` is cached first).
    Presence(PresenceDoc),
    /// `Ok` to a `FetchIf`: the version given is current.
    Unchanged,
    /// `Versioned` to a `FetchIf`: the current document and its version.
    Versioned {
        /// The document's version.
        version: Version,
        /// The document.
        doc: PresenceDoc,
    },
    /// The receipt answering a `Send`.
    Receipt(ReceiptStatus),
    /// `Fail`: the gateway refused the request; nothing was changed.
    Failed {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// `Watchers`: the principal's subscribers, and who fetched its presence recently.
    Watchers {
        /// Subscribed principals, in address order.
        subscribers: Vec<String>,
        /// Recent fetchers, most recent first.
        fetchers: Vec<tern_wire::Fetcher>,
    },
    /// `Pending` to a `Subscribe`: the presentity's rules say *ask*; the request is
    /// recorded and its outcome comes as [`SessionEvent::Subscription`].
    Pending,
    /// `Rules`: the principal's rules, answering a `GetRules`.
    Rules(Rules),
    /// `Subscriptions`: subscriptions and their states, in address order.
    Subscriptions(Vec<SubInfo>),
    /// `Items`: inbox items read as a delegate, oldest first; `more` says that more
    /// follow the last one.
    Items {
        /// The items.
        items: Vec<Item>,
        /// Whether more items are held after these.
        more: bool,
    },
    /// `Limited`: the principal is over a rate limit; nothing was changed; the same
    /// request is accepted after `retry_after`.
    Limited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// No answer came within the request timeout; a late answer is ignored. What became
    /// of the request is unknown. (Never for a `Send`, which waits for its receipt.)
    TimedOut,
    /// The session closed before the answer came; what became of the request is unknown.
    Lost,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The gateway refused the `Open` (or closed the connection before `Opened`).
    Rejected {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// The gateway closed an open session.
    Gateway {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// The application said goodbye and the session ended.
    Goodbye,
    /// The link broke: connection lost, idle timeout, stream ended or reset.
    Link(String),
    /// The gateway broke the protocol (a frame that cannot be decoded, or came at the
    /// wrong time, or answers a request with the wrong kind of response).
    Protocol {
        /// The code to close the connection with.
        code: ErrorCode,
        /// What happened.
        text: String,
    },
    /// The gateway did not answer the `Open` in time.
    Timeout,
}

impl CloseReason {
    /// Whether opening a new session later may succeed where this one ended: not after a
    /// goodbye, a protocol violation or a refusal that will not change by itself (among
    /// them `superseded`: another connection of this device took over).
    pub fn may_retry(&self) -> bool {
        match self {
            Self::Rejected { code, .. } | Self::Gateway { code, .. } => is_transient(*code),
            Self::Link(_) | Self::Timeout => true,
            Self::Goodbye | Self::Protocol { .. } => false,
        }
    }

    /// The application error code to close the QUIC connection with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { code, .. } | Self::Gateway { code, .. } => *code,
            Self::Protocol { code, .. } => *code,
            Self::Goodbye | Self::Link(_) => ErrorCode::GOODBYE,
            Self::Timeout => ErrorCode::TOO_SLOW,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected { code, text } => write!(f, "rejected: {code}: {text}"),
            Self::Gateway { code, text } => write!(f, "closed by the gateway: {code}: {text}"),
            Self::Goodbye => f.write_str("closed"),
            Self::Link(why) => write!(f, "connection lost: {why}"),
            Self::Protocol { code, text } => write!(f, "protocol error: {code}: {text}"),
            Self::Timeout => f.write_str("the gateway did not answer in time"),
        }
    }
}

/// Whether a refusal or close with this code may go away by itself (the gateway
/// restarting, a rate limit, a slow link). Codes unknown to this build count as
/// transient: they are more likely operational than a verdict on the principal.
pub fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SHUTDOWN
            | ErrorCode::INTERNAL
            | ErrorCode::RATE_LIMITED
            | ErrorCode::TOO_SLOW
            | ErrorCode::STREAM_LIMIT
    ) || code.name().is_none()
}

/// Whether a frame may travel as 0-RTT data: replaying it does no harm (`Have` only
/// reads).
pub fn is_replay_safe(frame: &Up) -> bool {
    matches!(
        frame,
        Up::Open(_) | Up::Send { .. } | Up::Ack { .. } | Up::Have(_)
    )
}

/// Why a command was refused; nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Before `Opened`: requests other than `Send` wait for the session to open.
    #[error("the session is not open yet")]
    NotOpen,
    /// After [`Session::close`] or the end of the session.
    #[error("the session is closing or closed")]
    Closed,
    /// The encoded frame is over the gateway's announced `frame_max`.
    #[error("the request is {size} bytes, over the gateway's limit of {max}")]
    FrameTooLarge {
        /// Encoded body size of the frame.
        size: usize,
        /// The gateway's limit.
        max: usize,
    },
    /// The message body is over the gateway's announced `body_max`.
    #[error("the message body is {len} bytes, over the gateway's limit of {max}")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// The gateway's limit.
        max: usize,
    },
    /// A message id must have 1 to [`MSG_ID_MAX`] bytes.
    #[error("a message id has 1 to {MSG_ID_MAX} bytes, not {len}")]
    BadMessageId {
        /// The id's length.
        len: usize,
    },
}

/// Checks a message against the protocol and the gateway's limits (`frame_max` and
/// `body_max` as last announced, when known) without queueing it: what [`Session::send`]
/// would refuse.
pub fn check_message(
    msg: &Message,
    frame_max: Option<u32>,
    body_max: Option<u32>,
) -> Result<(), CommandError> {
    let len = msg.id.len();
    if len == 0 || len > MSG_ID_MAX {
        return Err(CommandError::BadMessageId { len });
    }
    if let Some(max) = body_max.map(|m| m as usize)
        && msg.body.len() > max
    {
        let len = msg.body.len();
        return Err(CommandError::BodyTooLarge { len, max });
    }
    if let Some(max) = frame_max.map(|m| m as usize) {
        // The request id's varint is at most 5 bytes; count the worst case.
        let size = codec::body_size(&Up::Send {
            req: ReqId::MAX,
            msg: msg.clone(),
        });
        if size > max {
            return Err(CommandError::FrameTooLarge { size, max });
        }
    }
    Ok(())
}

/// The kind of a request, which decides the response it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    Fetch,
    Subscribe,
    Unsubscribe,
    Send,
    FetchIf,
    Watchers,
    GetRules,
    SetRules,
    Decide,
    Cancel,
    Subscriptions,
    PublishFor,
    Read,
}

struct Pending {
    kind: Kind,
    /// `None` for a `Send`: it waits as long as the session lives (see [`Session::send`]).
    deadline: Option<Instant>,
    /// The presentity of an `Unsubscribe`, dropped from the cache on success.
    target: Option<String>,
}

/// The session's side of presence synchronisation.
struct Sync {
    roster: SharedRoster,
    mode: ClientMode,
    /// The `Have` whose `Synced` is awaited: batches until then are discarded.
    awaiting: Option<ReqId>,
    /// Answers to `Have` in a row that did not apply.
    failures: u32,
    /// The gateway refused `Have`, or too many answers did not apply: no more `Have`.
    stopped: bool,
    /// Number of the last batch received on this session.
    received: Option<u32>,
    /// Number of the last `Applied` handed out.
    applied: Option<u32>,
    /// Batches received since the last `Applied`.
    owed: u32,
    /// Another frame went out in this drain: an owed `Applied` rides with it.
    piggyback: bool,
}

/// An `Applied` goes at the latest when this many batches are owed. The gateway keeps
/// up to its window (4 by default) unacknowledged, so this never stalls it.
pub const ACK_EVERY: u32 = 2;

/// The application-level keep-alive: see [`Session::keep_alive`].
#[derive(Debug, Clone, Copy)]
struct KeepAlive {
    /// Half the keep-alive interval: a link that sent nothing for a whole tick sends one.
    tick: Duration,
    /// When the current tick ends.
    next: Instant,
    /// Whether a frame went out during the current tick.
    sent: bool,
    /// A keep-alive is owed.
    due: bool,
}

enum State {
    /// `Open` is queued (`Some`) or sent (`None`); waiting for `Opened` or `Close`.
    /// Messages may already be queued behind `Open`.
    Greeting {
        open: Option<Open>,
        deadline: Instant,
        frame_max: u32,
    },
    Open {
        admitted: Admitted,
    },
    /// [`Session::close`] was called: queued frames, then `Bye`, then nothing; waiting
    /// for the gateway to end the session, at most until `deadline`.
    Leaving {
        admitted: Admitted,
        bye_sent: bool,
        deadline: Instant,
    },
    Closed {
        reason: CloseReason,
    },
}

/// The client side of one session. See the module documentation for the calling order.
pub struct Session {
    state: State,
    request_timeout: Duration,
    /// Whether inbox items are surfaced (see [`SessionConfig::inbox`]).
    inbox: bool,
    /// The transport's handshake is confirmed: every frame may go out.
    confirmed: bool,
    next_req: ReqId,
    pending: BTreeMap<ReqId, Pending>,
    outgoing: VecDeque<Up>,
    events: VecDeque<SessionEvent>,
    /// Highest inbox sequence number surfaced in this session.
    delivered: Option<u64>,
    /// Highest inbox sequence number the application has taken.
    consumed: Option<u64>,
    /// Highest sequence number acknowledged in this session.
    acked: Option<u64>,
    sync: Sync,
    keepalive: Option<KeepAlive>,
}

impl fmt::Debug for Session {
    /// Shows the phase and counters only: the queued `Open` holds the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.state {
            State::Greeting { .. } => "greeting",
            State::Open { .. } => "open",
            State::Leaving { .. } => "leaving",
            State::Closed { .. } => "closed",
        };
        f.debug_struct("Session")
            .field("phase", &phase)
            .field("confirmed", &self.confirmed)
            .field("pending", &self.pending.len())
            .field("delivered", &self.delivered)
            .field("consumed", &self.consumed)
            .field("acked", &self.acked)
            .field("mode", &self.sync.mode)
            .field("awaiting_synced", &self.sync.awaiting)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session; its first frames, `Open` and `Have`, are ready in
    /// [`Self::poll_transmit`].
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        let inbox = if config.inbox { Open::INBOX } else { 0 };
        let open = Open {
            version: VERSION,
            user: config.user,
            token: config.token,
            device: config.device,
            inbox_seen: config.consumed.unwrap_or(0),
            flags: inbox | Open::SYNC,
        };
        let mut session = Self {
            state: State::Greeting {
                open: Some(open),
                deadline: now + config.request_timeout,
                frame_max: config.frame_max,
            },
            request_timeout: config.request_timeout,
            inbox: config.inbox,
            confirmed: !config.early_data,
            next_req: 1,
            pending: BTreeMap::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            delivered: None,
            consumed: config.consumed,
            acked: None,
            sync: Sync {
                roster: config.roster,
                mode: config.mode,
                awaiting: None,
                failures: 0,
                stopped: false,
                received: None,
                applied: None,
                owed: 0,
                piggyback: false,
            },
            keepalive: None,
        };
        session.queue_have();
        session
    }

    /// The gateway's answer to `Open`, once the session is open (also while leaving).
    pub fn admitted(&self) -> Option<&Admitted> {
        match &self.state {
            State::Open { admitted } | State::Leaving { admitted, .. } => Some(admitted),
            State::Greeting { .. } | State::Closed { .. } => None,
        }
    }

    /// Whether requests are accepted now.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether every frame may go out (the handshake is confirmed, or the session was
    /// never written as 0-RTT data).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Closed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether `Bye` has been handed out by [`Self::poll_transmit`]: nothing more will be,
    /// and the runtime may finish its side of the stream.
    pub fn said_bye(&self) -> bool {
        matches!(self.state, State::Leaving { bye_sent: true, .. })
    }

    /// Number of requests waiting for their answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// The client's mode, as last set.
    pub fn mode(&self) -> ClientMode {
        self.sync.mode
    }

    /// The presence cache this session keeps.
    pub fn roster(&self) -> &SharedRoster {
        &self.sync.roster
    }

    /// Whether a `Have` waits for its `Synced` (batches are discarded meanwhile).
    pub fn awaiting_sync(&self) -> bool {
        self.sync.awaiting.is_some()
    }

    // ----- inputs -----

    /// A frame arrived from the gateway.
    pub fn handle_frame(&mut self, now: Instant, frame: Down) {
        let _ = now; // Inputs take `now` uniformly; no frame starts a timer today.
        match (&self.state, frame) {
            (State::Closed { .. }, _) => {}
            (State::Greeting { .. }, Down::Opened(opened)) => self.open(Admitted::Opened(opened)),
            (State::Greeting { .. }, Down::Welcome(welcome)) => {
                self.open(Admitted::Welcome(welcome));
            }
            (State::Greeting { .. }, Down::Close { code, text }) => {
                self.finish(CloseReason::Rejected { code, text });
            }
            (State::Greeting { .. }, other) => {
                let text = format!("{} before Opened", down_name(&other));
                self.violation(text);
            }
            (_, Down::Welcome(_) | Down::Opened(_)) => {
                self.violation("a second Opened".into());
            }
            (State::Leaving { .. }, Down::Close { .. }) => self.finish(CloseReason::Goodbye),
            (_, Down::Close { code, text }) => self.finish(CloseReason::Gateway { code, text }),
            (_, Down::Notify { doc }) => self.events.push_back(SessionEvent::Notify(doc)),
            (_, Down::Watched { watcher }) => {
                self.events.push_back(SessionEvent::Watched(watcher));
            }
            (_, Down::Asked { watcher }) => self.events.push_back(SessionEvent::Asked(watcher)),
            (_, Down::Subscription { target, state }) => self.subscription(target, state),
            (_, Down::Batch(batch)) => self.batch(batch, false),
            (_, Down::Deliver { seq, item }) => self.deliver(seq, item),
            (_, answer) => self.answer(answer),
        }
    }

    /// The transport's handshake is confirmed: frames held back from 0-RTT data may go.
    pub fn handle_confirmed(&mut self, now: Instant) {
        let _ = now;
        self.confirmed = true;
    }

    /// The link ended without a `Close` frame (or one could not be read). Ignored once
    /// the session is closed. Before `Opened` a close by the gateway counts as a
    /// rejection; while leaving, any end is the goodbye.
    pub fn handle_closed(&mut self, reason: CloseReason) {
        let reason = match (&self.state, reason) {
            (State::Closed { .. }, _) => return,
            (State::Leaving { .. }, _) => CloseReason::Goodbye,
            (State::Greeting { .. }, CloseReason::Gateway { code, text }) => {
                CloseReason::Rejected { code, text }
            }
            (_, reason) => reason,
        };
        self.finish(reason);
    }

    /// Time has passed: expires the handshake, the goodbye and requests whose deadline is
    /// at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(k) = &mut self.keepalive
            && k.next <= now
        {
            k.due |= !k.sent && matches!(self.state, State::Open { .. });
            k.sent = false;
            k.next = now + k.tick;
        }
        match &self.state {
            State::Greeting { deadline, .. } if *deadline <= now => {
                return self.finish(CloseReason::Timeout);
            }
            State::Leaving { deadline, .. } if *deadline <= now => {
                return self.finish(CloseReason::Goodbye);
            }
            _ => {}
        }
        let expired: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(req, _)| *req)
            .collect();
        for req in expired {
            self.pending.remove(&req);
            let reply = Reply::TimedOut;
            self.events.push_back(SessionEvent::Reply { req, reply });
        }
    }

    // ----- outputs -----

    /// The next frame to write to the stream, in order.
    pub fn poll_transmit(&mut self) -> Option<Up> {
        match &mut self.state {
            State::Greeting { open, .. } => match open.take() {
                Some(open) => Some(Up::Open(open)),
                None => self.next_request(),
            },
            State::Open { .. } => {
                let frame = self.next_ack().or_else(|| self.next_request());
                self.sync.piggyback |= frame.is_some();
                let frame = frame.or_else(|| self.next_applied());
                match frame {
                    Some(frame) => {
                        if let Some(k) = &mut self.keepalive {
                            k.sent = true;
                        }
                        Some(frame)
                    }
                    None => {
                        self.sync.piggyback = false;
                        None
                    }
                }
            }
            State::Leaving { bye_sent: true, .. } | State::Closed { .. } => None,
            State::Leaving { .. } => {
                let next = self
                    .next_ack()
                    .or_else(|| self.next_applied())
                    .or_else(|| self.next_request());
                if let Some(frame) = next {
                    return Some(frame);
                }
                if !self.outgoing.is_empty() || !self.confirmed {
                    return None; // `Bye` is not replay-safe: it waits like the rest.
                }
                if let State::Leaving { bye_sent, .. } = &mut self.state {
                    *bye_sent = true;
                }
                Some(Up::Bye)
            }
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::Greeting { deadline, .. } | State::Leaving { deadline, .. } => Some(*deadline),
            State::Open { .. } | State::Closed { .. } => None,
        };
        let keepalive = self.keepalive.map(|k| k.next);
        self.pending
            .values()
            .filter_map(|p| p.deadline)
            .chain(state)
            .chain(keepalive)
            .min()
    }

    // ----- commands -----

    /// Replaces the principal's presence information.
    pub fn publish(&mut self, now: Instant, presence: Presence) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Publish, |req| Up::Publish { req, presence })
    }

    /// Fetches a presentity's presence once.
    pub fn fetch(&mut self, now: Instant, target: String) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Fetch, |req| Up::Fetch { req, target })
    }

    /// Fetches a presentity's presence if its version is not `version` (0: whatever it
    /// is): [`Reply::Unchanged`] or [`Reply::Versioned`].
    pub fn fetch_if(
        &mut self,
        now: Instant,
        target: String,
        version: Version,
    ) -> Result<ReqId, CommandError> {
        self.request(now, Kind::FetchIf, |req| Up::FetchIf {
            req,
            target,
            version,
        })
    }

    /// Asks who watches the principal: subscribers and recent fetchers.
    pub fn watchers(&mut self, now: Instant) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Watchers, |req| Up::Watchers { req })
    }

    /// Subscribes to a presentity: its document now (cached with its slot), then its
    /// changes in batches.
    pub fn subscribe(&mut self, now: Instant, target: String) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Subscribe, |req| Up::Subscribe { req, target })
    }

    /// Asks for the principal's rules: [`Reply::Rules`].
    pub fn get_rules(&mut self, now: Instant) -> Result<ReqId, CommandError> {
        self.request(now, Kind::GetRules, |req| Up::GetRules { req })
    }

    /// Replaces the principal's rules as a whole: [`Reply::Done`].
    pub fn set_rules(&mut self, now: Instant, rules: Rules) -> Result<ReqId, CommandError> {
        self.request(now, Kind::SetRules, |req| Up::SetRules { req, rules })
    }

    /// Decides about one watcher (typically one that asked): the gateway puts a rule for
    /// exactly that principal first and applies the rules. [`Reply::Done`].
    pub fn decide(
        &mut self,
        now: Instant,
        watcher: String,
        decision: Decision,
    ) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Decide, |req| Up::Decide {
            req,
            watcher,
            decision,
        })
    }

    /// Ends a watcher's subscription (or pending request) to the principal's
    /// presentity: [`Reply::Done`], whether or not there was one.
    pub fn cancel(&mut self, now: Instant, watcher: String) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Cancel, |req| Up::Cancel { req, watcher })
    }

    /// Lists subscriptions and their states: the principal's own (`incoming` false) or
    /// those to its presentity (`incoming` true). [`Reply::Subscriptions`].
    pub fn subscriptions(&mut self, now: Instant, incoming: bool) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Subscriptions, |req| Up::Subscriptions {
            req,
            incoming,
        })
    }

    /// Replaces another principal's presence, as its delegate: [`Reply::Done`].
    pub fn publish_for(
        &mut self,
        now: Instant,
        presentity: String,
        presence: Presence,
    ) -> Result<ReqId, CommandError> {
        self.request(now, Kind::PublishFor, |req| Up::PublishFor {
            req,
            presentity,
            presence,
        })
    }

    /// Reads another principal's inbox, as its delegate: the items after sequence
    /// number `after`, not acknowledged. [`Reply::Items`].
    pub fn read(&mut self, now: Instant, inbox: String, after: u64) -> Result<ReqId, CommandError> {
        self.request(now, Kind::Read, |req| Up::Read { req, inbox, after })
    }

    /// Ends a subscription; once the gateway agrees, the presentity leaves the cache.
    pub fn unsubscribe(&mut self, now: Instant, target: String) -> Result<ReqId, CommandError> {
        let req = self.request(now, Kind::Unsubscribe, |req| Up::Unsubscribe {
            req,
            target: target.clone(),
        })?;
        if let Some(pending) = self.pending.get_mut(&req) {
            pending.target = Some(target);
        }
        Ok(req)
    }

    /// The client's mode changed (foreground, background, sleepy): `Mode` goes to the
    /// gateway (unless the session is ending), and later `Have`s carry it. Setting the
    /// mode it already has is not a no-op: like any frame, `Mode` makes the gateway send
    /// the presence changes it holds back, which is how a sleepy device asks for them.
    pub fn set_mode(&mut self, mode: ClientMode) {
        self.sync.mode = mode;
        if !matches!(self.state, State::Greeting { .. } | State::Open { .. }) {
            return;
        }
        // A `Have` still queued carries the mode itself; a `Mode` still queued is replaced.
        for frame in self.outgoing.iter_mut().rev() {
            match frame {
                Up::Have(have) => {
                    have.mode = mode;
                    return;
                }
                Up::Mode { mode: queued } => {
                    *queued = mode;
                    return;
                }
                _ => {}
            }
        }
        self.outgoing.push_back(Up::Mode { mode });
    }

    /// Sends an instant message; the reply is its receipt. Allowed before `Opened`: the
    /// message follows `Open` (within the last known `frame_max`; the body limit is the
    /// gateway's to check then).
    ///
    /// Unlike other requests, a `Send` does not time out: the gateway may hold its
    /// receipt while the recipient is online (its delivery wait), and always answers in
    /// the end, so it waits as long as the session lives ([`Reply::Lost`] when it ends).
    /// How long a caller waits is the runtime's business.
    pub fn send(&mut self, now: Instant, msg: Message) -> Result<ReqId, CommandError> {
        let body_max = self.admitted().map(Admitted::body_max);
        check_message(&msg, None, body_max)?;
        self.request(now, Kind::Send, |req| Up::Send { req, msg })
    }

    /// The application has taken every inbox item up to and including `upto`: they may
    /// be acknowledged. Cheap; the `Ack` itself is coalesced in [`Self::poll_transmit`].
    pub fn ack(&mut self, upto: u64) {
        self.consumed = self.consumed.max(Some(upto));
    }

    /// Says goodbye: frames already queued go out, then any due `Ack`, then `Bye`; the
    /// session then waits up to [`BYE_LINGER`] for the gateway to end it. Requests made
    /// from now on are refused. Before `Opened` the session simply ends.
    pub fn close(&mut self, now: Instant) {
        let state = std::mem::replace(
            &mut self.state,
            State::Closed {
                reason: CloseReason::Goodbye,
            },
        );
        match state {
            State::Open { admitted } => {
                self.state = State::Leaving {
                    admitted,
                    bye_sent: false,
                    deadline: now + BYE_LINGER,
                };
            }
            State::Greeting { .. } => {
                self.state = state;
                self.finish(CloseReason::Goodbye);
            }
            State::Leaving { .. } | State::Closed { .. } => self.state = state,
        }
    }

    // ----- internals -----

    fn open(&mut self, admitted: Admitted) {
        if admitted.version() != VERSION {
            let text = format!("the gateway speaks version {}", admitted.version());
            return self.finish(CloseReason::Protocol {
                code: ErrorCode::UNSUPPORTED_VERSION,
                text,
            });
        }
        self.events
            .push_back(SessionEvent::Opened(admitted.clone()));
        self.state = State::Open { admitted };
    }

    fn request(
        &mut self,
        now: Instant,
        kind: Kind,
        frame: impl FnOnce(ReqId) -> Up,
    ) -> Result<ReqId, CommandError> {
        let max = match &self.state {
            State::Open { admitted } => admitted.frame_max() as usize,
            State::Greeting { frame_max, .. } if kind == Kind::Send => *frame_max as usize,
            State::Greeting { .. } => return Err(CommandError::NotOpen),
            State::Leaving { .. } | State::Closed { .. } => return Err(CommandError::Closed),
        };
        let req = self.free_req();
        let frame = frame(req);
        let size = codec::body_size(&frame);
        if size > max {
            return Err(CommandError::FrameTooLarge { size, max });
        }
        self.next_req = req.wrapping_add(1).max(1);
        let deadline = (kind != Kind::Send).then(|| now + self.request_timeout);
        let target = None;
        let pending = Pending {
            kind,
            deadline,
            target,
        };
        self.pending.insert(req, pending);
        self.outgoing.push_back(frame);
        Ok(req)
    }

    /// The next queued request, unless it must wait for the handshake's confirmation.
    fn next_request(&mut self) -> Option<Up> {
        let front = self.outgoing.front()?;
        if !self.confirmed && !is_replay_safe(front) {
            return None;
        }
        self.outgoing.pop_front()
    }

    /// The next request id not in use: small, increasing, never 0, wrapping past `u32::MAX`.
    fn free_req(&self) -> ReqId {
        let mut req = self.next_req;
        while self.pending.contains_key(&req) || self.sync.awaiting == Some(req) {
            req = req.wrapping_add(1).max(1);
        }
        req
    }

    fn answer(&mut self, frame: Down) {
        let Some(req) = frame.req() else {
            return self.violation(format!("unexpected {}", down_name(&frame)));
        };
        if self.sync.awaiting == Some(req) {
            return self.have_answered(frame);
        }
        if let Down::Synced { batch, .. } = frame {
            // The answer to a `Have` superseded since: acknowledged, not applied.
            tracing::debug!(req, seq = batch.seq, "stale Synced discarded");
            self.received_batch(batch.seq);
            return;
        }
        let Some(pending) = self.pending.remove(&req) else {
            // Most likely the answer to a request that timed out here.
            tracing::debug!(
                req,
                frame = down_name(&frame),
                "answer to no waiting request"
            );
            return;
        };
        let reply = match (pending.kind, frame) {
            (_, Down::Fail { code, text, .. }) => Reply::Failed { code, text },
            (_, Down::Limited { retry_after, .. }) => Reply::Limited {
                retry_after: Duration::from_millis(u64::from(retry_after)),
            },
            (
                Kind::Publish | Kind::SetRules | Kind::Decide | Kind::Cancel | Kind::PublishFor,
                Down::Ok { .. },
            ) => Reply::Done,
            (Kind::Unsubscribe, Down::Ok { .. }) => {
                if let Some(target) = &pending.target {
                    roster::lock(&self.sync.roster).unsubscribed(target);
                }
                Reply::Done
            }
            (Kind::Fetch | Kind::Subscribe, Down::Presence { doc, .. }) => Reply::Presence(doc),
            (
                Kind::Subscribe,
                Down::Subscribed {
                    slot, version, doc, ..
                },
            ) => {
                roster::lock(&self.sync.roster).subscribed(slot, version, doc.clone());
                Reply::Presence(doc)
            }
            (Kind::Subscribe, Down::Pending { .. }) => Reply::Pending,
            (Kind::FetchIf, Down::Ok { .. }) => Reply::Unchanged,
            (Kind::FetchIf, Down::Versioned { version, doc, .. }) => {
                Reply::Versioned { version, doc }
            }
            (Kind::Send, Down::Receipt { status, .. }) => Reply::Receipt(status),
            (
                Kind::Watchers,
                Down::Watchers {
                    subscribers,
                    fetchers,
                    ..
                },
            ) => Reply::Watchers {
                subscribers,
                fetchers,
            },
            (Kind::GetRules, Down::Rules { rules, .. }) => Reply::Rules(rules),
            (Kind::Subscriptions, Down::Subscriptions { list, .. }) => Reply::Subscriptions(list),
            (Kind::Read, Down::Items { items, more, .. }) => Reply::Items { items, more },
            (kind, other) => {
                // The request is answered, wrongly: it is failed with the rest below.
                self.pending.insert(req, pending);
                let text = format!("{} answers {kind:?} request {req}", down_name(&other));
                return self.violation(text);
            }
        };
        self.events.push_back(SessionEvent::Reply { req, reply });
    }

    /// One of the principal's subscriptions changed state. A refused or cancelled one
    /// leaves the cache at once (the gateway's `Gone` change for its slot, if it follows,
    /// then finds nothing); a granted one enters it with the batch that follows.
    fn subscription(&mut self, target: String, state: SubState) {
        tracing::debug!(%target, ?state, "subscription changed");
        if matches!(state, SubState::Denied | SubState::Cancelled) {
            let ended = roster::lock(&self.sync.roster).unsubscribed(&target);
            if let Some(entry) = ended {
                self.events
                    .push_back(SessionEvent::SubscriptionEnded(entry));
            }
        }
        self.events
            .push_back(SessionEvent::Subscription { target, state });
    }

    fn deliver(&mut self, seq: u64, item: InboxItem) {
        if !self.inbox {
            tracing::trace!(seq, "inbox item left for a session that takes the inbox");
            return;
        }
        if self.delivered.is_some_and(|d| seq <= d) {
            tracing::debug!(seq, "inbox item already surfaced in this session");
            return;
        }
        if matches!(self.state, State::Leaving { .. }) {
            // It could not be acknowledged any more: the next session gets it again.
            return;
        }
        self.delivered = Some(seq);
        self.events.push_back(match item {
            InboxItem::Message(message) => SessionEvent::Message { seq, message },
            InboxItem::Receipt(receipt) => SessionEvent::Receipt { seq, receipt },
        });
    }

    /// Queues a `Have` stating what the cache holds (within the frame limit), unless the
    /// session stopped synchronising or is ending.
    fn queue_have(&mut self) {
        let frame_max = match &self.state {
            State::Greeting { frame_max, .. } => *frame_max,
            State::Open { admitted } => admitted.frame_max(),
            State::Leaving { .. } | State::Closed { .. } => return,
        };
        if self.sync.stopped {
            return;
        }
        let room = (frame_max as usize).saturating_sub(HAVE_OVERHEAD) / HELD_MAX_SIZE;
        let held = roster::lock(&self.sync.roster).have(room);
        let req = self.free_req();
        self.next_req = req.wrapping_add(1).max(1);
        self.sync.awaiting = Some(req);
        let mode = self.sync.mode;
        tracing::debug!(req, held = held.len(), "Have");
        self.outgoing.push_back(Up::Have(Have { req, mode, held }));
    }

    /// The answer to the awaited `Have`.
    fn have_answered(&mut self, frame: Down) {
        self.sync.awaiting = None;
        match frame {
            Down::Synced { batch, .. } => self.batch(batch, true),
            Down::Fail { code, text, .. } => {
                tracing::warn!(%code, %text, "the gateway does not synchronise presence");
                self.sync.stopped = true;
            }
            other => {
                let text = format!("{} answers Have", down_name(&other));
                self.violation(text);
            }
        }
    }

    /// A batch arrived (`synced`: the answer to the awaited `Have`).
    fn batch(&mut self, batch: Batch, synced: bool) {
        self.received_batch(batch.seq);
        if synced {
            // The answer to the session's own `Have` is acknowledged at once (once per
            // session): the gateway's window then starts empty.
            self.sync.owed = self.sync.owed.max(ACK_EVERY);
        }
        if !synced && self.sync.awaiting.is_some() {
            tracing::trace!(seq = batch.seq, "batch made for the old state discarded");
            return;
        }
        let result = roster::lock(&self.sync.roster).apply(&batch, synced);
        match result {
            Ok(changes) => {
                if synced {
                    self.sync.failures = 0;
                }
                for change in changes {
                    self.events.push_back(match change {
                        RosterChange::Changed(entry) => SessionEvent::PresenceChanged(entry),
                        RosterChange::Ended(entry) => SessionEvent::SubscriptionEnded(entry),
                    });
                }
            }
            Err(lost) => {
                if synced {
                    self.sync.failures += 1;
                }
                if self.sync.failures >= MAX_RESYNCS {
                    tracing::error!(%lost, seq = batch.seq, "presence batches keep failing to apply; no more resynchronisation in this session");
                    self.sync.stopped = true;
                    return;
                }
                tracing::warn!(%lost, seq = batch.seq, "lost track of presence; resynchronising");
                self.queue_have();
            }
        }
    }

    /// The `Applied` due now, if any (once the handshake is confirmed): the last batch
    /// received, when enough are owed, another frame went out, or a keep-alive is due.
    fn next_applied(&mut self) -> Option<Up> {
        if !self.confirmed {
            return None;
        }
        let keepalive = self.keepalive.is_some_and(|k| k.due);
        let owed = self.sync.received.is_some() && self.sync.applied != self.sync.received;
        let due = owed && (self.sync.piggyback || self.sync.owed >= ACK_EVERY);
        if !due && !keepalive {
            return None;
        }
        if let Some(k) = &mut self.keepalive {
            k.due = false;
        }
        self.sync.applied = self.sync.received;
        self.sync.owed = 0;
        Some(Up::Applied {
            batch: self.sync.received.unwrap_or(0),
        })
    }

    /// Sends a frame at least every `every` while the link is otherwise quiet (see the
    /// module documentation); `every` is the keep-alive interval.
    pub fn keep_alive(&mut self, now: Instant, every: Duration) {
        let tick = every / 2;
        self.keepalive = (!tick.is_zero()).then_some(KeepAlive {
            tick,
            next: now + tick,
            sent: false,
            due: false,
        });
    }

    /// A batch (or a `Synced`) numbered `seq` arrived: one more `Applied` is owed.
    fn received_batch(&mut self, seq: u32) {
        self.sync.received = Some(seq);
        self.sync.owed += 1;
    }

    /// The `Ack` due now, if any: the highest item both taken and delivered here.
    fn next_ack(&mut self) -> Option<Up> {
        let upto = self.consumed?.min(self.delivered?);
        if self.acked.is_some_and(|a| a >= upto) {
            return None;
        }
        self.acked = Some(upto);
        Some(Up::Ack { upto })
    }

    fn violation(&mut self, text: String) {
        tracing::warn!(%text, "the gateway broke the protocol");
        let code = ErrorCode::PROTOCOL;
        self.finish(CloseReason::Protocol { code, text });
    }

    /// Ends the session: every waiting request is answered [`Reply::Lost`], then
    /// [`SessionEvent::Closed`].
    fn finish(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed { .. }) {
            return;
        }
        for req in std::mem::take(&mut self.pending).into_keys() {
            let reply = Reply::Lost;
            self.events.push_back(SessionEvent::Reply { req, reply });
        }
        self.outgoing.clear();
        self.events.push_back(SessionEvent::Closed(reason.clone()));
        self.state = State::Closed { reason };
    }
}

/// The name of a frame's variant, for logs and errors (never its contents).
pub fn down_name(frame: &Down) -> &'static str {
    match frame {
        Down::Welcome(_) => "Welcome",
        Down::Ok { .. } => "Ok",
        Down::Fail { .. } => "Fail",
        Down::Presence { .. } => "Presence",
        Down::Receipt { .. } => "Receipt",
        Down::Notify { .. } => "Notify",
        Down::Deliver { .. } => "Deliver",
        Down::Close { .. } => "Close",
        Down::Opened(_) => "Opened",
        Down::Batch(_) => "Batch",
        Down::Synced { .. } => "Synced",
        Down::Subscribed { .. } => "Subscribed",
        Down::Versioned { .. } => "Versioned",
        Down::Limited { .. } => "Limited",
        Down::Watchers { .. } => "Watchers",
        Down::Watched { .. } => "Watched",
        Down::Pending { .. } => "Pending",
        Down::Asked { .. } => "Asked",
        Down::Rules { .. } => "Rules",
        Down::Subscriptions { .. } => "Subscriptions",
        Down::Subscription { .. } => "Subscription",
        Down::Items { .. } => "Items",
    }
}

/// The name of a frame's variant, for logs and errors (never its contents).
pub fn up_name(frame: &Up) -> &'static str {
    match frame {
        Up::Hello(_) => "Hello",
        Up::Publish { .. } => "Publish",
        Up::Fetch { .. } => "Fetch",
        Up::Subscribe { .. } => "Subscribe",
        Up::Unsubscribe { .. } => "Unsubscribe",
        Up::Send { .. } => "Send",
        Up::Ack { .. } => "Ack",
        Up::Bye => "Bye",
        Up::Open(_) => "Open",
        Up::Have(_) => "Have",
        Up::Mode { .. } => "Mode",
        Up::Applied { .. } => "Applied",
        Up::FetchIf { .. } => "FetchIf",
        Up::Watchers { .. } => "Watchers",
        Up::GetRules { .. } => "GetRules",
        Up::SetRules { .. } => "SetRules",
        Up::Decide { .. } => "Decide",
        Up::Cancel { .. } => "Cancel",
        Up::Subscriptions { .. } => "Subscriptions",
        Up::PublishFor { .. } => "PublishFor",
        Up::Read { .. } => "Read",
        Up::Operate(_) => "Operate",
        Up::Admin { .. } => "Admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;
    use crate::testing::{TIME, delta, full, noted, sealed};
    use std::sync::{Arc, Mutex};
    use tern_wire::delta::Check;
    use tern_wire::{Basic, Change, Held, Tuple};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn config() -> SessionConfig {
        SessionConfig {
            mode: ClientMode::ACTIVE,
            roster: Arc::new(Mutex::new(Roster::new())),
            user: "alice@example.com".into(),
            token: "secret".into(),
            device: vec![0xde; 16],
            request_timeout: TIMEOUT,
            consumed: None,
            inbox: true,
            early_data: false,
            frame_max: 4096,
        }
    }

    fn opened(resumed: bool) -> Opened {
        Opened {
            version: VERSION,
            user: "alice@example.com".into(),
            frame_max: 4096,
            body_max: 1024,
            time: 1_700_000_000_000,
            resumed,
            resume_window: 30_000,
            keepalive: 20_000,
        }
    }

    fn welcome() -> Welcome {
        Welcome {
            version: VERSION,
            user: "alice@example.com".into(),
            frame_max: 4096,
            body_max: 1024,
            time: 1_700_000_000_000,
        }
    }

    fn doc(who: &str) -> PresenceDoc {
        PresenceDoc {
            presentity: who.into(),
            updated: 1,
            presence: Presence {
                tuples: vec![Tuple {
                    id: "default".into(),
                    basic: Basic::Open,
                    availability: None,
                    contact: None,
                    note: None,
                    at: None,
                    ext: vec![],
                }],
                card: vec![],
            },
        }
    }

    fn message(id: u8) -> Message {
        Message {
            id: vec![id; 16],
            to: "bob@example.com".into(),
            reply_to: None,
            content_type: None,
            body: b"hi".to_vec(),
        }
    }

    fn incoming(id: u8) -> InboxItem {
        InboxItem::Message(Incoming {
            id: vec![id; 16],
            from: "bob@example.com".into(),
            to: "alice@example.com".into(),
            reply_to: None,
            content_type: None,
            body: b"hello".to_vec(),
            sent: 5,
        })
    }

    /// A session past `Opened` and the `Synced` to its `Have` (an empty batch, number
    /// 1), with `Open`, `Have`, `Applied` and the `Opened` event drained.
    fn open(now: Instant) -> Session {
        open_with(now, config())
    }

    fn open_with(now: Instant, config: SessionConfig) -> Session {
        let mut s = Session::new(now, config);
        assert!(matches!(s.poll_transmit(), Some(Up::Open(_))));
        let Some(Up::Have(have)) = s.poll_transmit() else {
            panic!("Have follows Open");
        };
        s.handle_frame(now, Down::Opened(opened(false)));
        assert!(matches!(s.poll_event(), Some(SessionEvent::Opened(_))));
        let batch = Batch {
            seq: 1,
            time: TIME,
            check: Check::new().finish(),
            changes: vec![],
        };
        let req = have.req;
        s.handle_frame(now, Down::Synced { req, batch });
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 1 }]);
        s
    }

    fn transmit(s: &mut Session) -> Vec<Up> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn events(s: &mut Session) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn have(req: ReqId, held: &[(u32, u64)]) -> Up {
        Up::Have(Have {
            req,
            mode: ClientMode::ACTIVE,
            held: held
                .iter()
                .map(|&(slot, version)| Held { slot, version })
                .collect(),
        })
    }

    fn the_open(inbox_seen: u64, flags: u8) -> Up {
        Up::Open(Open {
            version: VERSION,
            user: "alice@example.com".into(),
            token: "secret".into(),
            device: vec![0xde; 16],
            inbox_seen,
            flags,
        })
    }

    #[test]
    fn open_goes_first_and_requests_other_than_send_wait_for_opened() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        assert_eq!(
            transmit(&mut s),
            vec![the_open(0, Open::INBOX | Open::SYNC), have(1, &[])]
        );
        assert_eq!(
            s.fetch(now, "bob@example.com".into()),
            Err(CommandError::NotOpen)
        );
        assert_eq!(s.poll_timeout(), Some(now + TIMEOUT));
        assert!(!s.is_open());

        s.handle_frame(now, Down::Opened(opened(true)));
        let admitted = Admitted::Opened(opened(true));
        assert_eq!(events(&mut s), vec![SessionEvent::Opened(admitted.clone())]);
        assert!(s.is_open());
        assert_eq!(s.admitted(), Some(&admitted));
        assert!(admitted.resumed());
        assert_eq!(admitted.suggested_keepalive_ms(), Some(20_000));
        assert_eq!(s.poll_timeout(), None);
        assert!(transmit(&mut s).is_empty());
    }

    #[test]
    fn open_carries_what_the_device_has_seen_and_whether_it_takes_the_inbox() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                consumed: Some(41),
                inbox: false,
                ..config()
            },
        );
        assert_eq!(
            transmit(&mut s),
            vec![the_open(41, Open::SYNC), have(1, &[])]
        );
    }

    #[test]
    fn a_welcome_from_a_gateway_without_device_sessions_opens_unresumed() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        transmit(&mut s);
        s.handle_frame(now, Down::Welcome(welcome()));
        let admitted = Admitted::Welcome(welcome());
        assert_eq!(events(&mut s), vec![SessionEvent::Opened(admitted.clone())]);
        assert!(!admitted.resumed());
        assert_eq!(admitted.suggested_keepalive_ms(), None);
        assert_eq!(admitted.user(), "alice@example.com");
        assert!(s.is_open());
        s.handle_frame(now, Down::Opened(opened(false)));
        assert!(
            matches!(s.close_reason(), Some(CloseReason::Protocol { .. })),
            "a second answer to Open breaks the protocol"
        );
    }

    #[test]
    fn messages_queued_before_opened_follow_open_in_order() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        let reqs: Vec<ReqId> = (1..=3).map(|i| s.send(now, message(i)).unwrap()).collect();
        assert_eq!(reqs, vec![2, 3, 4], "1 is the Have's");
        let frames = transmit(&mut s);
        assert_eq!(frames[0], the_open(0, Open::INBOX | Open::SYNC));
        assert_eq!(frames[1], have(1, &[]));
        let resent: Vec<(ReqId, Vec<u8>)> = frames[2..]
            .iter()
            .map(|f| match f {
                Up::Send { req, msg } => (*req, msg.id.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            resent,
            vec![(2, vec![1; 16]), (3, vec![2; 16]), (4, vec![3; 16])]
        );
        s.handle_frame(now, Down::Opened(opened(true)));
        s.handle_frame(
            now,
            Down::Receipt {
                req: 3,
                status: ReceiptStatus::Stored,
            },
        );
        let evs = events(&mut s);
        assert_eq!(
            evs[1],
            SessionEvent::Reply {
                req: 3,
                reply: Reply::Receipt(ReceiptStatus::Stored)
            }
        );
        assert_eq!(s.pending_requests(), 2);
    }

    #[test]
    fn messages_before_opened_respect_the_last_known_frame_limit() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                frame_max: 64,
                ..config()
            },
        );
        let mut big = message(1);
        big.body = vec![0; 100];
        assert!(matches!(
            s.send(now, big),
            Err(CommandError::FrameTooLarge { max: 64, .. })
        ));
        assert_eq!(s.send(now, message(2)), Ok(2));
    }

    #[test]
    fn only_replay_safe_frames_go_out_as_early_data() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                early_data: true,
                consumed: Some(3),
                ..config()
            },
        );
        assert!(!s.is_confirmed());
        s.send(now, message(1)).unwrap();
        assert_eq!(transmit(&mut s).len(), 3, "Open, Have and Send");
        // The gateway answers before the client has confirmed the handshake.
        s.handle_frame(now, Down::Opened(opened(false)));
        events(&mut s);
        let publish = s.publish(now, doc("alice@example.com").presence).unwrap();
        s.send(now, message(2)).unwrap();
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 3,
                item: incoming(3),
            },
        );
        // The Ack of a redelivered item goes; the Publish waits, and so does the Send
        // queued behind it (frames leave in order).
        assert_eq!(transmit(&mut s), vec![Up::Ack { upto: 3 }]);
        s.close(now);
        assert!(transmit(&mut s).is_empty(), "Bye waits too");
        assert!(!s.said_bye());

        s.handle_confirmed(now);
        let frames = transmit(&mut s);
        let names: Vec<&str> = frames.iter().map(up_name).collect();
        assert_eq!(names, vec!["Publish", "Send", "Bye"]);
        assert_eq!(frames[0].req(), Some(publish));
        for frame in [
            the_open(0, 0),
            Up::Send {
                req: 1,
                msg: message(1),
            },
            Up::Ack { upto: 1 },
        ] {
            assert!(is_replay_safe(&frame), "{frame:?}");
        }
        for frame in [
            Up::Bye,
            Up::Fetch {
                req: 1,
                target: "bob@example.com".into(),
            },
            Up::Subscribe {
                req: 1,
                target: "bob@example.com".into(),
            },
            Up::Unsubscribe {
                req: 1,
                target: "bob@example.com".into(),
            },
            Up::Publish {
                req: 1,
                presence: Presence::default(),
            },
        ] {
            assert!(!is_replay_safe(&frame), "{frame:?}");
        }
    }

    #[test]
    fn check_message_applies_the_known_limits() {
        assert_eq!(check_message(&message(1), None, None), Ok(()));
        let mut no_id = message(1);
        no_id.id.clear();
        assert_eq!(
            check_message(&no_id, None, None),
            Err(CommandError::BadMessageId { len: 0 })
        );
        assert!(matches!(
            check_message(&message(1), None, Some(1)),
            Err(CommandError::BodyTooLarge { len: 2, max: 1 })
        ));
        assert!(matches!(
            check_message(&message(1), Some(10), None),
            Err(CommandError::FrameTooLarge { max: 10, .. })
        ));
    }

    #[test]
    fn close_before_opened_is_a_rejection() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        transmit(&mut s);
        let text = String::from("wrong token");
        s.handle_frame(
            now,
            Down::Close {
                code: ErrorCode::UNAUTHORIZED,
                text: text.clone(),
            },
        );
        let reason = CloseReason::Rejected {
            code: ErrorCode::UNAUTHORIZED,
            text,
        };
        assert_eq!(events(&mut s), vec![SessionEvent::Closed(reason.clone())]);
        assert_eq!(s.close_reason(), Some(&reason));
        assert!(!reason.may_retry());
        assert_eq!(reason.to_string(), "rejected: unauthorized: wrong token");
    }

    #[test]
    fn other_frames_before_opened_break_the_protocol() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        s.handle_frame(
            now,
            Down::Notify {
                doc: doc("bob@example.com"),
            },
        );
        let Some(CloseReason::Protocol { code, .. }) = s.close_reason() else {
            panic!("expected a protocol close, got {:?}", s.close_reason());
        };
        assert_eq!(*code, ErrorCode::PROTOCOL);
        assert!(
            transmit(&mut s).is_empty(),
            "Open is not sent on a closed session"
        );
    }

    #[test]
    fn an_answer_of_another_version_is_refused() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        s.handle_frame(
            now,
            Down::Welcome(Welcome {
                version: VERSION + 1,
                ..welcome()
            }),
        );
        assert!(matches!(
            s.close_reason(),
            Some(CloseReason::Protocol {
                code: ErrorCode::UNSUPPORTED_VERSION,
                ..
            })
        ));
    }

    #[test]
    fn no_opened_in_time_ends_the_session() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        s.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
        assert_eq!(s.close_reason(), None);
        s.handle_timeout(now + TIMEOUT);
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Closed(CloseReason::Timeout)]
        );
        assert!(CloseReason::Timeout.may_retry());
    }

    #[test]
    fn requests_get_small_increasing_ids_and_their_own_answers() {
        let now = Instant::now();
        let mut s = open(now);
        let publish = s.publish(now, doc("alice@example.com").presence).unwrap();
        let fetch = s.fetch(now, "bob@example.com".into()).unwrap();
        let send = s.send(now, message(7)).unwrap();
        let unsub = s.unsubscribe(now, "bob@example.com".into()).unwrap();
        assert_eq!((publish, fetch, send, unsub), (2, 3, 4, 5));
        assert_eq!(s.pending_requests(), 4);
        let sent: Vec<_> = transmit(&mut s).iter().map(Up::req).collect();
        assert_eq!(sent, vec![Some(2), Some(3), Some(4), Some(5)]);

        // Answers may come in any order.
        let status = ReceiptStatus::Stored;
        s.handle_frame(now, Down::Receipt { req: send, status });
        s.handle_frame(now, Down::Ok { req: publish });
        let fail = Down::Fail {
            req: unsub,
            code: ErrorCode::REFUSED,
            text: "no".into(),
        };
        s.handle_frame(now, fail);
        s.handle_frame(
            now,
            Down::Presence {
                req: fetch,
                doc: doc("bob@example.com"),
            },
        );
        let reply = |req, reply| SessionEvent::Reply { req, reply };
        assert_eq!(
            events(&mut s),
            vec![
                reply(send, Reply::Receipt(ReceiptStatus::Stored)),
                reply(publish, Reply::Done),
                reply(
                    unsub,
                    Reply::Failed {
                        code: ErrorCode::REFUSED,
                        text: "no".into()
                    }
                ),
                reply(fetch, Reply::Presence(doc("bob@example.com"))),
            ]
        );
        assert_eq!(s.pending_requests(), 0);
        assert_eq!(s.subscribe(now, "carol@example.com".into()), Ok(6));
    }

    #[test]
    fn an_answer_of_the_wrong_kind_closes_the_session() {
        let now = Instant::now();
        let mut s = open(now);
        let fetch = s.fetch(now, "bob@example.com".into()).unwrap();
        let other = s.publish(now, Presence::default()).unwrap();
        s.handle_frame(
            now,
            Down::Receipt {
                req: fetch,
                status: ReceiptStatus::Delivered,
            },
        );
        let evs = events(&mut s);
        assert_eq!(evs.len(), 3, "{evs:?}");
        assert_eq!(
            evs[0],
            SessionEvent::Reply {
                req: fetch,
                reply: Reply::Lost
            }
        );
        assert_eq!(
            evs[1],
            SessionEvent::Reply {
                req: other,
                reply: Reply::Lost
            }
        );
        assert!(matches!(
            &evs[2],
            SessionEvent::Closed(CloseReason::Protocol { .. })
        ));
        assert_eq!(
            s.fetch(now, "bob@example.com".into()),
            Err(CommandError::Closed)
        );
    }

    #[test]
    fn an_answer_to_no_waiting_request_is_ignored() {
        let now = Instant::now();
        let mut s = open(now);
        s.handle_frame(now, Down::Ok { req: 42 });
        assert!(events(&mut s).is_empty());
        assert!(s.is_open());
    }

    #[test]
    fn a_send_waits_for_its_receipt_as_long_as_the_session_lives() {
        let now = Instant::now();
        let mut s = open(now);
        let req = s.send(now, message(1)).unwrap();
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(now + TIMEOUT * 10);
        assert!(events(&mut s).is_empty());
        let status = ReceiptStatus::Stored;
        s.handle_frame(now + TIMEOUT * 10, Down::Receipt { req, status });
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Reply {
                req,
                reply: Reply::Receipt(status)
            }]
        );
    }

    #[test]
    fn requests_time_out_and_late_answers_are_ignored() {
        let now = Instant::now();
        let mut s = open(now);
        let first = s.fetch(now, "bob@example.com".into()).unwrap();
        let later = now + Duration::from_secs(3);
        let second = s.fetch(later, "carol@example.com".into()).unwrap();
        assert_eq!(s.poll_timeout(), Some(now + TIMEOUT));

        s.handle_timeout(now + TIMEOUT);
        let timed_out = SessionEvent::Reply {
            req: first,
            reply: Reply::TimedOut,
        };
        assert_eq!(events(&mut s), vec![timed_out]);
        assert_eq!(s.poll_timeout(), Some(later + TIMEOUT));

        s.handle_frame(
            now,
            Down::Presence {
                req: first,
                doc: doc("bob@example.com"),
            },
        );
        assert!(events(&mut s).is_empty());
        s.handle_frame(
            now,
            Down::Presence {
                req: second,
                doc: doc("carol@example.com"),
            },
        );
        assert_eq!(events(&mut s).len(), 1);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn inbox_items_surface_once_and_acks_are_coalesced() {
        let now = Instant::now();
        let mut s = open(now);
        for seq in [1, 2, 3, 2, 3] {
            s.handle_frame(
                now,
                Down::Deliver {
                    seq,
                    item: incoming(seq as u8),
                },
            );
        }
        let seqs: Vec<u64> = events(&mut s)
            .into_iter()
            .map(|e| match e {
                SessionEvent::Message { seq, .. } => seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(
            transmit(&mut s).is_empty(),
            "nothing is acknowledged before it is taken"
        );

        s.ack(1);
        s.ack(3);
        s.ack(2);
        assert_eq!(transmit(&mut s), vec![Up::Ack { upto: 3 }]);
        s.ack(3);
        assert!(transmit(&mut s).is_empty(), "an ack is never repeated");

        let receipt = LateReceipt {
            id: vec![1; 16],
            to: "bob@example.com".into(),
            status: ReceiptStatus::Delivered,
        };
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 4,
                item: InboxItem::Receipt(receipt.clone()),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Receipt { seq: 4, receipt }]
        );
        s.ack(4);
        assert_eq!(transmit(&mut s), vec![Up::Ack { upto: 4 }]);
    }

    #[test]
    fn acks_go_before_queued_requests_and_never_past_what_was_delivered() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                consumed: Some(10),
                ..config()
            },
        );
        transmit(&mut s);
        s.handle_frame(now, Down::Opened(opened(false)));
        let fetch = s.fetch(now, "bob@example.com".into()).unwrap();
        // Redelivery of items an earlier session's application already took.
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 6,
                item: incoming(6),
            },
        );
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 7,
                item: incoming(7),
            },
        );
        let target = String::from("bob@example.com");
        assert_eq!(
            transmit(&mut s),
            vec![Up::Ack { upto: 7 }, Up::Fetch { req: fetch, target }]
        );
        // After a gap, what was taken is acknowledged, but not the new item.
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 12,
                item: incoming(12),
            },
        );
        assert_eq!(transmit(&mut s), vec![Up::Ack { upto: 10 }]);
        s.ack(12);
        assert_eq!(transmit(&mut s), vec![Up::Ack { upto: 12 }]);
    }

    #[test]
    fn a_session_without_inbox_neither_surfaces_nor_acknowledges_items() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                inbox: false,
                consumed: Some(9),
                ..config()
            },
        );
        transmit(&mut s);
        s.handle_frame(now, Down::Opened(opened(false)));
        events(&mut s);
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 1,
                item: incoming(1),
            },
        );
        s.ack(1);
        assert!(events(&mut s).is_empty());
        assert!(transmit(&mut s).is_empty());
    }

    #[test]
    fn a_close_from_the_gateway_fails_waiting_requests() {
        let now = Instant::now();
        let mut s = open(now);
        let req = s.send(now, message(1)).unwrap();
        let text = String::from("restarting");
        s.handle_frame(
            now,
            Down::Close {
                code: ErrorCode::SHUTDOWN,
                text: text.clone(),
            },
        );
        let reason = CloseReason::Gateway {
            code: ErrorCode::SHUTDOWN,
            text,
        };
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::Reply {
                    req,
                    reply: Reply::Lost
                },
                SessionEvent::Closed(reason.clone()),
            ]
        );
        assert!(reason.may_retry());
        assert!(transmit(&mut s).is_empty(), "queued requests are dropped");
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 1,
                item: incoming(1),
            },
        );
        s.handle_closed(CloseReason::Link("gone".into()));
        assert!(events(&mut s).is_empty(), "nothing follows Closed");
        assert_eq!(s.close_reason(), Some(&reason));
    }

    #[test]
    fn a_lost_link_fails_waiting_requests() {
        let now = Instant::now();
        let mut s = open(now);
        let req = s.fetch(now, "bob@example.com".into()).unwrap();
        s.handle_closed(CloseReason::Link("idle timeout".into()));
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::Reply {
                    req,
                    reply: Reply::Lost
                },
                SessionEvent::Closed(CloseReason::Link("idle timeout".into())),
            ]
        );
    }

    #[test]
    fn a_connection_close_before_opened_is_a_rejection() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        let text = String::from("bye");
        s.handle_closed(CloseReason::Gateway {
            code: ErrorCode::UNAUTHORIZED,
            text: text.clone(),
        });
        let reason = CloseReason::Rejected {
            code: ErrorCode::UNAUTHORIZED,
            text,
        };
        assert_eq!(s.close_reason(), Some(&reason));
    }

    #[test]
    fn goodbye_flushes_then_says_bye_and_waits_for_the_gateway() {
        let now = Instant::now();
        let mut s = open(now);
        let req = s.fetch(now, "bob@example.com".into()).unwrap();
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 1,
                item: incoming(1),
            },
        );
        events(&mut s);
        s.ack(1);
        s.close(now);
        assert_eq!(
            s.fetch(now, "x@example.com".into()),
            Err(CommandError::Closed)
        );
        let frames = transmit(&mut s);
        let target = String::from("bob@example.com");
        let expected = vec![Up::Ack { upto: 1 }, Up::Fetch { req, target }, Up::Bye];
        assert_eq!(frames, expected);
        assert!(s.said_bye());
        assert!(transmit(&mut s).is_empty());

        // Items arriving now are left for the next session.
        s.handle_frame(
            now,
            Down::Deliver {
                seq: 2,
                item: incoming(2),
            },
        );
        s.handle_frame(
            now,
            Down::Presence {
                req,
                doc: doc("bob@example.com"),
            },
        );
        assert_eq!(events(&mut s).len(), 1, "only the answer");
        let text = String::from("goodbye");
        s.handle_frame(
            now,
            Down::Close {
                code: ErrorCode::GOODBYE,
                text,
            },
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Closed(CloseReason::Goodbye)]
        );
        assert!(!CloseReason::Goodbye.may_retry());
    }

    #[test]
    fn goodbye_gives_up_waiting_after_the_linger() {
        let now = Instant::now();
        let mut s = open(now);
        s.close(now);
        transmit(&mut s);
        assert_eq!(s.poll_timeout(), Some(now + BYE_LINGER));
        s.handle_timeout(now + BYE_LINGER);
        assert_eq!(s.close_reason(), Some(&CloseReason::Goodbye));
    }

    #[test]
    fn closing_before_opened_ends_at_once() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        s.close(now);
        assert_eq!(s.close_reason(), Some(&CloseReason::Goodbye));
        assert!(transmit(&mut s).is_empty());
    }

    #[test]
    fn oversize_requests_are_refused_locally() {
        let now = Instant::now();
        let mut s = open(now);
        let mut big = message(1);
        big.body = vec![0; 1025];
        assert_eq!(
            s.send(now, big),
            Err(CommandError::BodyTooLarge {
                len: 1025,
                max: 1024
            })
        );
        let mut no_id = message(1);
        no_id.id.clear();
        assert_eq!(
            s.send(now, no_id),
            Err(CommandError::BadMessageId { len: 0 })
        );
        let long_name = "a".repeat(5000);
        assert!(matches!(
            s.fetch(now, long_name),
            Err(CommandError::FrameTooLarge { max: 4096, .. })
        ));
        assert_eq!(s.pending_requests(), 0);
        assert_eq!(
            s.fetch(now, "bob@example.com".into()),
            Ok(2),
            "no id was used up"
        );
    }

    #[test]
    fn request_ids_wrap_without_zero_or_reuse() {
        let now = Instant::now();
        let mut s = open(now);
        s.next_req = ReqId::MAX;
        assert_eq!(s.fetch(now, "a@example.com".into()), Ok(ReqId::MAX));
        assert_eq!(s.fetch(now, "b@example.com".into()), Ok(1));
        s.next_req = ReqId::MAX;
        assert_eq!(
            s.fetch(now, "c@example.com".into()),
            Ok(2),
            "skips ids still waiting"
        );
    }

    #[test]
    fn notifications_are_surfaced() {
        let now = Instant::now();
        let mut s = open(now);
        s.handle_frame(
            now,
            Down::Notify {
                doc: doc("bob@example.com"),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Notify(doc("bob@example.com"))]
        );
        s.handle_frame(now, Down::Opened(opened(true)));
        assert!(matches!(
            s.close_reason(),
            Some(CloseReason::Protocol { .. })
        ));
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient(ErrorCode::SHUTDOWN));
        assert!(is_transient(ErrorCode(999)));
        assert!(!is_transient(ErrorCode::UNAUTHORIZED));
        assert!(!is_transient(ErrorCode::UNSUPPORTED_VERSION));
        assert!(
            !CloseReason::Protocol {
                code: ErrorCode::MALFORMED,
                text: String::new()
            }
            .may_retry()
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("secret"), "{shown}");
        let s = Session::new(Instant::now(), config());
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    // ----- presence synchronisation -----

    const BOB: &str = "bob@example.com";
    const CAROL: &str = "carol@example.com";

    fn entry(slot: u32, version: u64, name: &str, note: &str) -> CachedPresence {
        CachedPresence {
            slot,
            version,
            doc: PresenceDoc {
                presentity: name.into(),
                updated: TIME * 1000,
                presence: noted(note),
            },
        }
    }

    fn held_of(s: &Session) -> Vec<(u32, u64)> {
        roster::lock(s.roster())
            .entries()
            .map(|e| (e.slot, e.version))
            .collect()
    }

    /// A session that opened and synced bob (slot 1, version 3, "a") and carol (slot 2,
    /// version 1, "x"); the events and frames so far drained.
    fn synced_with_bob_and_carol(now: Instant) -> Session {
        let mut s = open(now);
        let b = sealed(
            2,
            vec![full(1, 3, Some(BOB), "a"), full(2, 1, Some(CAROL), "x")],
            &[(1, BOB, 3, "a"), (2, CAROL, 1, "x")],
        );
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(events(&mut s).len(), 2);
        // One batch owed: its `Applied` waits for a second, another frame or a
        // keep-alive.
        assert!(transmit(&mut s).is_empty());
        s
    }

    fn changed(s: &mut Session) -> Vec<String> {
        events(s)
            .into_iter()
            .map(|e| match e {
                SessionEvent::PresenceChanged(e) => format!("{}@{}", e.doc.presentity, e.version),
                SessionEvent::SubscriptionEnded(e) => format!("-{}", e.doc.presentity),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_first_flight_states_the_cache_and_may_be_early_data() {
        let now = Instant::now();
        let roster = Arc::new(Mutex::new(Roster::from_entries([
            entry(2, 1, CAROL, "x"),
            entry(1, 3, BOB, "a"),
        ])));
        let mut s = Session::new(
            now,
            SessionConfig {
                early_data: true,
                mode: ClientMode::SLEEPY,
                roster,
                ..config()
            },
        );
        s.send(now, message(1)).unwrap();
        let frames = transmit(&mut s);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0], the_open(0, Open::INBOX | Open::SYNC));
        assert_eq!(
            frames[1],
            Up::Have(Have {
                req: 1,
                mode: ClientMode::SLEEPY,
                held: vec![
                    Held {
                        slot: 1,
                        version: 3
                    },
                    Held {
                        slot: 2,
                        version: 1
                    }
                ],
            })
        );
        assert!(is_replay_safe(&frames[1]));
        assert!(matches!(frames[2], Up::Send { req: 2, .. }));
        assert!(s.awaiting_sync());
    }

    #[test]
    fn full_documents_deltas_and_ends_change_the_cache_and_are_reported() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let b = sealed(
            3,
            vec![delta(1, 4, 1, "a", "b"), Change::Gone { slot: 2 }],
            &[(1, BOB, 4, "b")],
        );
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(
            changed(&mut s),
            vec!["bob@example.com@4", "-carol@example.com"]
        );
        assert_eq!(held_of(&s), vec![(1, 4)]);
        let bob = roster::lock(s.roster()).get(BOB).cloned().unwrap();
        assert_eq!(bob.doc.presence, noted("b"));
        assert_eq!(bob.doc.updated, TIME * 1000);

        // An unnamed whole document for a held slot, at version 0 (never published).
        let b = sealed(4, vec![full(1, 0, None, "c")], &[(1, BOB, 0, "c")]);
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(changed(&mut s), vec!["bob@example.com@0"]);
        assert_eq!(roster::lock(s.roster()).get(BOB).unwrap().doc.updated, 0);
    }

    #[test]
    fn applied_is_coalesced_per_burst_and_covers_every_batch() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        for (seq, version, from, to) in [(3, 4, "a", "b"), (4, 5, "b", "c"), (5, 6, "c", "d")] {
            let b = sealed(
                seq,
                vec![delta(1, version, 1, from, to)],
                &[(1, BOB, version, to)],
            );
            s.handle_frame(now, Down::Batch(b));
        }
        assert_eq!(changed(&mut s).len(), 3);
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 5 }]);
        assert!(transmit(&mut s).is_empty(), "never repeated");
        // Lazy: one owed batch waits; a second makes it due (empty batches count).
        s.handle_frame(now, Down::Batch(sealed(6, vec![], &[])));
        assert!(events(&mut s).is_empty());
        assert!(transmit(&mut s).is_empty());
        s.handle_frame(now, Down::Batch(sealed(7, vec![], &[])));
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 7 }]);
    }

    #[test]
    fn an_owed_applied_rides_with_other_frames_and_the_keep_alive_is_a_frame() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        s.keep_alive(now, Duration::from_secs(20));
        // Batch 2 is owed; a request carries it.
        let req = s.fetch(now, BOB.into()).expect("fetch");
        let frames = transmit(&mut s);
        assert!(matches!(frames[0], Up::Fetch { req: r, .. } if r == req));
        assert_eq!(frames[1], Up::Applied { batch: 2 });
        // Something went out in this tick: no keep-alive at its end.
        let tick = s.poll_timeout().expect("a keep-alive tick");
        assert_eq!(tick, now + Duration::from_secs(10));
        s.handle_timeout(tick);
        assert!(transmit(&mut s).is_empty());
        // A quiet tick: the keep-alive is an `Applied` the gateway sees as a frame.
        let quiet = s.poll_timeout().expect("the next tick");
        s.handle_timeout(quiet);
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 2 }]);
        assert!(transmit(&mut s).is_empty());
    }

    #[test]
    fn applied_waits_for_the_handshake() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                early_data: true,
                ..config()
            },
        );
        let frames = transmit(&mut s);
        let Up::Have(Have { req, .. }) = frames[1] else {
            panic!("{frames:?}");
        };
        s.handle_frame(now, Down::Opened(opened(false)));
        let b = sealed(1, vec![full(1, 3, Some(BOB), "a")], &[(1, BOB, 3, "a")]);
        s.handle_frame(now, Down::Synced { req, batch: b });
        assert!(transmit(&mut s).is_empty());
        s.handle_confirmed(now);
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 1 }]);
        assert_eq!(held_of(&s), vec![(1, 3)]);
    }

    #[test]
    fn a_checksum_mismatch_resyncs_with_what_is_left_and_discards_until_synced() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let mut b = sealed(3, vec![full(1, 4, None, "b")], &[(1, BOB, 4, "b")]);
        b.check[0] ^= 0xff;
        s.handle_frame(now, Down::Batch(b));
        assert!(events(&mut s).is_empty());
        assert_eq!(held_of(&s), vec![(2, 1)], "bob's slot is dropped");
        assert!(s.awaiting_sync());
        let frames = transmit(&mut s);
        // The owed `Applied` rides behind the `Have`.
        assert_eq!(frames, vec![have(2, &[(2, 1)]), Up::Applied { batch: 3 }]);

        // Made for the old state: discarded, but acknowledged (lazily, with the answer).
        let stale = sealed(4, vec![delta(2, 2, 1, "x", "y")], &[(2, CAROL, 2, "y")]);
        s.handle_frame(now, Down::Batch(stale));
        assert!(events(&mut s).is_empty());
        assert_eq!(held_of(&s), vec![(2, 1)]);
        assert!(transmit(&mut s).is_empty());

        // The answer: bob whole (with his name), carol's change as a delta.
        let synced = sealed(
            5,
            vec![full(1, 4, Some(BOB), "b"), delta(2, 2, 1, "x", "y")],
            &[(1, BOB, 4, "b"), (2, CAROL, 2, "y")],
        );
        s.handle_frame(
            now,
            Down::Synced {
                req: 2,
                batch: synced,
            },
        );
        assert_eq!(
            changed(&mut s),
            vec!["bob@example.com@4", "carol@example.com@2"]
        );
        assert!(!s.awaiting_sync());
        assert_eq!(held_of(&s), vec![(1, 4), (2, 2)]);
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 5 }]);
    }

    #[test]
    fn a_delta_from_another_base_resyncs_and_an_unmentioned_slot_has_ended() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let b = sealed(
            3,
            vec![delta(1, 5, 1, "a", "b"), delta(2, 2, 1, "x", "y")],
            &[(1, BOB, 5, "b"), (2, CAROL, 2, "y")],
        );
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(held_of(&s), vec![], "every slot of the batch is dropped");
        let frames = transmit(&mut s);
        assert_eq!(frames[0], have(2, &[]));
        // Bob is restated as he was: nothing to report; carol is not mentioned: her
        // subscription ended meanwhile.
        let synced = sealed(4, vec![full(1, 3, Some(BOB), "a")], &[(1, BOB, 3, "a")]);
        s.handle_frame(
            now,
            Down::Synced {
                req: 2,
                batch: synced,
            },
        );
        assert_eq!(changed(&mut s), vec!["-carol@example.com"]);
        assert_eq!(held_of(&s), vec![(1, 3)]);
    }

    #[test]
    fn unknown_slots_and_bad_deltas_resync() {
        let now = Instant::now();
        for bad in [
            full(9, 1, None, "a"),
            delta(9, 2, 1, "a", "b"),
            Change::Delta {
                slot: 1,
                version: 4,
                back: 1,
                age: 0,
                ops: vec![tern_wire::delta::Op::Remove { i: 3 }],
            },
        ] {
            let mut s = synced_with_bob_and_carol(now);
            let b = Batch {
                seq: 3,
                time: TIME,
                check: [0; 4],
                changes: vec![bad.clone()],
            };
            s.handle_frame(now, Down::Batch(b));
            assert!(s.awaiting_sync(), "{bad:?}");
            assert!(s.is_open());
            assert!(events(&mut s).is_empty());
        }
    }

    #[test]
    fn answers_that_keep_failing_stop_the_resyncs() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let mut seq = 3;
        let bad = |seq| {
            let mut b = sealed(
                seq,
                vec![full(2, 5, Some(CAROL), "z")],
                &[(2, CAROL, 5, "z")],
            );
            b.check = [1, 2, 3, 4];
            b
        };
        s.handle_frame(now, Down::Batch(bad(seq)));
        for _ in 0..MAX_RESYNCS {
            let have = transmit(&mut s)
                .into_iter()
                .find_map(|f| match f {
                    Up::Have(have) => Some(have),
                    _ => None,
                })
                .expect("a Have");
            seq += 1;
            s.handle_frame(
                now,
                Down::Synced {
                    req: have.req,
                    batch: bad(seq),
                },
            );
        }
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: seq }]);
        assert!(!s.awaiting_sync());
        assert!(s.is_open());
        // Batches still apply when they do.
        let b = sealed(seq + 1, vec![delta(1, 4, 1, "a", "b")], &[(1, BOB, 4, "b")]);
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(changed(&mut s), vec!["bob@example.com@4"]);
    }

    #[test]
    fn a_refused_have_stops_synchronising_but_not_the_session() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        transmit(&mut s);
        s.handle_frame(now, Down::Opened(opened(false)));
        let text = String::from("no SYNC here");
        s.handle_frame(
            now,
            Down::Fail {
                req: 1,
                code: ErrorCode::PROTOCOL,
                text,
            },
        );
        assert!(!s.awaiting_sync());
        assert!(s.is_open());
        assert_eq!(events(&mut s).len(), 1, "only Opened");
        s.handle_frame(now, Down::Notify { doc: doc(BOB) });
        assert_eq!(events(&mut s), vec![SessionEvent::Notify(doc(BOB))]);
    }

    #[test]
    fn subscribed_and_unsubscribed_presentities_enter_and_leave_the_cache() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let req = s.subscribe(now, "dave@example.com".into()).unwrap();
        let dave = PresenceDoc {
            presentity: "dave@example.com".into(),
            updated: 77,
            presence: noted("d"),
        };
        s.handle_frame(
            now,
            Down::Subscribed {
                req,
                slot: 7,
                version: 2,
                doc: dave.clone(),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Reply {
                req,
                reply: Reply::Presence(dave.clone())
            }]
        );
        assert_eq!(held_of(&s), vec![(1, 3), (2, 1), (7, 2)]);
        let b = sealed(
            3,
            vec![delta(7, 3, 1, "d", "e")],
            &[(7, "dave@example.com", 3, "e")],
        );
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(changed(&mut s), vec!["dave@example.com@3"]);

        let req = s.unsubscribe(now, CAROL.into()).unwrap();
        s.handle_frame(now, Down::Ok { req });
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Reply {
                req,
                reply: Reply::Done
            }]
        );
        assert_eq!(held_of(&s), vec![(1, 3), (7, 3)]);
        // A refused unsubscribe keeps the cache as it is.
        let req = s.unsubscribe(now, BOB.into()).unwrap();
        let text = String::from("no");
        s.handle_frame(
            now,
            Down::Fail {
                req,
                code: ErrorCode::REFUSED,
                text,
            },
        );
        assert_eq!(held_of(&s), vec![(1, 3), (7, 3)]);
        // A legacy answer to Subscribe is passed on, not cached.
        let req = s.subscribe(now, "erin@example.com".into()).unwrap();
        let doc = doc("erin@example.com");
        s.handle_frame(now, Down::Presence { req, doc });
        assert_eq!(held_of(&s), vec![(1, 3), (7, 3)]);
    }

    #[test]
    fn fetch_if_answers_unchanged_or_the_new_version() {
        let now = Instant::now();
        let mut s = open(now);
        let first = s.fetch_if(now, BOB.into(), 3).unwrap();
        let second = s.fetch_if(now, BOB.into(), 0).unwrap();
        assert_eq!(
            transmit(&mut s),
            vec![
                Up::FetchIf {
                    req: first,
                    target: BOB.into(),
                    version: 3
                },
                Up::FetchIf {
                    req: second,
                    target: BOB.into(),
                    version: 0
                },
            ]
        );
        s.handle_frame(now, Down::Ok { req: first });
        let version = 4;
        s.handle_frame(
            now,
            Down::Versioned {
                req: second,
                version,
                doc: doc(BOB),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::Reply {
                    req: first,
                    reply: Reply::Unchanged
                },
                SessionEvent::Reply {
                    req: second,
                    reply: Reply::Versioned {
                        version,
                        doc: doc(BOB)
                    }
                },
            ]
        );
        // A `Presence` does not answer a `FetchIf`.
        let req = s.fetch_if(now, BOB.into(), 3).unwrap();
        s.handle_frame(now, Down::Presence { req, doc: doc(BOB) });
        assert!(matches!(
            s.close_reason(),
            Some(CloseReason::Protocol { .. })
        ));
    }

    #[test]
    fn the_mode_goes_in_the_queued_have_then_in_mode_frames_and_later_haves() {
        let now = Instant::now();
        let mut s = Session::new(now, config());
        s.set_mode(ClientMode::INACTIVE);
        let frames = transmit(&mut s);
        assert!(
            matches!(&frames[1], Up::Have(h) if h.mode == ClientMode::INACTIVE),
            "{frames:?}"
        );
        s.handle_frame(now, Down::Opened(opened(false)));
        s.set_mode(ClientMode::SLEEPY);
        s.set_mode(ClientMode::ACTIVE);
        assert_eq!(
            transmit(&mut s),
            vec![Up::Mode {
                mode: ClientMode::ACTIVE
            }],
            "coalesced"
        );
        s.set_mode(ClientMode::ACTIVE);
        assert_eq!(
            transmit(&mut s),
            vec![Up::Mode {
                mode: ClientMode::ACTIVE
            }],
            "the same mode again asks for held-back changes"
        );
        s.set_mode(ClientMode::SLEEPY);
        assert_eq!(s.mode(), ClientMode::SLEEPY);
        transmit(&mut s);
        // A resync's Have carries the current mode.
        s.handle_frame(
            now,
            Down::Synced {
                req: 1,
                batch: sealed(1, vec![], &[]),
            },
        );
        let mut bad = sealed(2, vec![], &[]);
        bad.check = [9; 4];
        s.handle_frame(now, Down::Batch(bad));
        let frames = transmit(&mut s);
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Up::Have(h) if h.mode == ClientMode::SLEEPY)),
            "{frames:?}"
        );
        s.close(now);
        s.set_mode(ClientMode::ACTIVE);
        assert!(
            !transmit(&mut s)
                .iter()
                .any(|f| matches!(f, Up::Mode { .. })),
            "no Mode while leaving"
        );
    }

    #[test]
    fn a_have_over_the_frame_limit_lists_what_fits() {
        let now = Instant::now();
        let roster =
            Arc::new(Mutex::new(Roster::from_entries((1..=100).map(|slot| {
                entry(slot, u64::MAX, &format!("u{slot}@example.com"), "a")
            }))));
        let mut s = Session::new(
            now,
            SessionConfig {
                frame_max: 256,
                roster,
                ..config()
            },
        );
        let frames = transmit(&mut s);
        let Up::Have(have) = &frames[1] else {
            panic!("{frames:?}");
        };
        assert!(codec::body_size(&frames[1]) <= 256);
        assert!(!have.held.is_empty() && have.held.len() < 100);
        assert_eq!(held_of(&s).len(), have.held.len());
    }

    #[test]
    fn batches_are_discarded_until_the_first_synced() {
        let now = Instant::now();
        let roster = Arc::new(Mutex::new(Roster::from_entries([entry(1, 3, BOB, "a")])));
        let mut s = Session::new(now, SessionConfig { roster, ..config() });
        transmit(&mut s);
        s.handle_frame(now, Down::Opened(opened(true)));
        events(&mut s);
        let early = sealed(1, vec![delta(1, 4, 1, "a", "b")], &[(1, BOB, 4, "b")]);
        s.handle_frame(now, Down::Batch(early));
        assert!(events(&mut s).is_empty());
        assert_eq!(held_of(&s), vec![(1, 3)]);
        let synced = sealed(2, vec![delta(1, 5, 2, "a", "c")], &[(1, BOB, 5, "c")]);
        s.handle_frame(
            now,
            Down::Synced {
                req: 1,
                batch: synced,
            },
        );
        assert_eq!(changed(&mut s), vec!["bob@example.com@5"]);
        assert_eq!(transmit(&mut s), vec![Up::Applied { batch: 2 }]);
        // A Synced answering no Have awaited is ignored (but acknowledged).
        let stray = sealed(3, vec![full(1, 9, None, "z")], &[(1, BOB, 9, "z")]);
        s.handle_frame(
            now,
            Down::Synced {
                req: 99,
                batch: stray,
            },
        );
        assert!(events(&mut s).is_empty());
        assert_eq!(held_of(&s), vec![(1, 5)]);
        // One owed: it waits (lazy), and goes with the next frame.
        assert!(transmit(&mut s).is_empty());
        s.set_mode(ClientMode::INACTIVE);
        let frames = transmit(&mut s);
        assert_eq!(frames[1], Up::Applied { batch: 3 });
    }

    #[test]
    fn arbitrary_batches_never_panic_and_keep_the_cache_consistent() {
        use tern_wire::delta::{Field, Op};
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        // A small deterministic generator (xorshift): no dependency, reproducible.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n.max(1)
        };
        for seq in 3..2000u32 {
            let mut changes = Vec::new();
            for _ in 0..next(4) {
                let slot = next(5) as u32;
                let version = next(8);
                changes.push(match next(4) {
                    0 => full(slot, version, None, "n"),
                    1 => full(slot, version, Some(BOB), "m"),
                    2 => Change::Gone { slot },
                    _ => Change::Delta {
                        slot,
                        version,
                        back: next(3) as u32,
                        age: next(u64::from(u32::MAX)) as u32,
                        ops: (0..next(4))
                            .map(|_| match next(4) {
                                0 => Op::Remove { i: next(3) as u8 },
                                1 => Op::Insert {
                                    i: next(3) as u8,
                                    tuple: noted("i").tuples[0].clone(),
                                },
                                2 => Op::Set {
                                    i: next(3) as u8,
                                    field: Field::Note(None),
                                },
                                _ => Op::Card(vec![]),
                            })
                            .collect(),
                    },
                });
            }
            let batch = Batch {
                seq,
                time: next(u64::MAX),
                check: [next(256) as u8, 0, 0, 0],
                changes,
            };
            if s.awaiting_sync() && next(2) == 0 {
                let req = transmit(&mut s)
                    .into_iter()
                    .find_map(|f| match f {
                        Up::Have(have) => Some(have.req),
                        _ => None,
                    })
                    .unwrap_or(1);
                s.handle_frame(now, Down::Synced { req, batch });
            } else {
                s.handle_frame(now, Down::Batch(batch));
            }
            events(&mut s);
            assert!(s.is_open());
            let roster = roster::lock(s.roster());
            for e in roster.entries() {
                assert!(roster.get(&e.doc.presentity).is_some(), "{e:?}");
            }
        }
    }

    // ----- access rules, pending subscriptions, delegation -----

    const DAVE: &str = "dave@example.com";

    fn some_rules() -> Rules {
        use tern_wire::{Delegate, Delivery, InboxRule, PresenceRule, Who};
        Rules {
            presence: vec![PresenceRule {
                who: Who::Domain("example.net".into()),
                decision: Decision::Ask,
                view: None,
                when: None,
            }],
            inbox: vec![InboxRule {
                who: Who::Anonymous,
                delivery: Delivery::Discard,
            }],
            delegates: vec![Delegate {
                who: CAROL.into(),
                rights: Delegate::READ,
            }],
        }
    }

    /// The cached state a `full(..)` change leaves (changed 10 s before the batch).
    fn from_full(slot: u32, version: u64, name: &str, note: &str) -> CachedPresence {
        let mut e = entry(slot, version, name, note);
        e.doc.updated = (TIME - 10) * 1000;
        e
    }

    fn reply_to(s: &mut Session, req: ReqId) -> Reply {
        let evs = events(s);
        match evs.as_slice() {
            [SessionEvent::Reply { req: r, reply }] if *r == req => reply.clone(),
            other => panic!("expected one reply to {req}: {other:?}"),
        }
    }

    fn refused(req: ReqId) -> Down {
        Down::Fail {
            req,
            code: ErrorCode::REFUSED,
            text: "the rules refuse it".into(),
        }
    }

    #[test]
    fn access_requests_encode_their_frames_and_take_their_answers() {
        let now = Instant::now();
        let mut s = open(now);
        let item = Item {
            seq: 9,
            item: incoming(9),
        };
        let presence = noted("out");
        let subs = vec![SubInfo {
            who: BOB.into(),
            state: SubState::Pending,
        }];

        let get = s.get_rules(now).unwrap();
        let set = s.set_rules(now, some_rules()).unwrap();
        let decide = s.decide(now, BOB.into(), Decision::Polite).unwrap();
        let cancel = s.cancel(now, CAROL.into()).unwrap();
        let list = s.subscriptions(now, true).unwrap();
        let publish = s.publish_for(now, DAVE.into(), presence.clone()).unwrap();
        let read = s.read(now, DAVE.into(), 8).unwrap();
        assert_eq!(
            transmit(&mut s),
            vec![
                Up::GetRules { req: get },
                Up::SetRules {
                    req: set,
                    rules: some_rules()
                },
                Up::Decide {
                    req: decide,
                    watcher: BOB.into(),
                    decision: Decision::Polite
                },
                Up::Cancel {
                    req: cancel,
                    watcher: CAROL.into()
                },
                Up::Subscriptions {
                    req: list,
                    incoming: true
                },
                Up::PublishFor {
                    req: publish,
                    presentity: DAVE.into(),
                    presence
                },
                Up::Read {
                    req: read,
                    inbox: DAVE.into(),
                    after: 8
                },
            ]
        );

        s.handle_frame(
            now,
            Down::Rules {
                req: get,
                rules: some_rules(),
            },
        );
        assert_eq!(reply_to(&mut s, get), Reply::Rules(some_rules()));
        for req in [set, decide, cancel, publish] {
            s.handle_frame(now, Down::Ok { req });
            assert_eq!(reply_to(&mut s, req), Reply::Done);
        }
        let answer = Down::Subscriptions {
            req: list,
            list: subs.clone(),
        };
        s.handle_frame(now, answer);
        assert_eq!(reply_to(&mut s, list), Reply::Subscriptions(subs));
        let items = vec![item];
        let answer = Down::Items {
            req: read,
            items: items.clone(),
            more: true,
        };
        s.handle_frame(now, answer);
        assert_eq!(reply_to(&mut s, read), Reply::Items { items, more: true });
        assert_eq!(s.pending_requests(), 0);
        assert!(s.is_open());
        assert_eq!(held_of(&s), vec![], "nothing of this touches the cache");
    }

    #[test]
    fn access_requests_may_be_refused_or_limited() {
        let now = Instant::now();
        let mut s = open(now);
        let refusal = Reply::Failed {
            code: ErrorCode::REFUSED,
            text: "the rules refuse it".into(),
        };
        let requests: Vec<ReqId> = vec![
            s.get_rules(now).unwrap(),
            s.set_rules(now, Rules::default()).unwrap(),
            s.decide(now, BOB.into(), Decision::Allow).unwrap(),
            s.cancel(now, BOB.into()).unwrap(),
            s.subscriptions(now, false).unwrap(),
            s.publish_for(now, DAVE.into(), Presence::default())
                .unwrap(),
            s.read(now, DAVE.into(), 0).unwrap(),
            s.subscribe(now, DAVE.into()).unwrap(),
            s.fetch(now, DAVE.into()).unwrap(),
        ];
        transmit(&mut s);
        for &req in &requests {
            s.handle_frame(now, refused(req));
            assert_eq!(reply_to(&mut s, req), refusal);
        }
        let req = s.subscribe(now, DAVE.into()).unwrap();
        s.handle_frame(
            now,
            Down::Limited {
                req,
                retry_after: 1500,
            },
        );
        let retry_after = Duration::from_millis(1500);
        assert_eq!(reply_to(&mut s, req), Reply::Limited { retry_after });
        assert_eq!(held_of(&s), vec![], "a refused subscription is not cached");
        assert!(s.is_open());
    }

    #[test]
    fn an_answer_of_the_wrong_kind_to_an_access_request_breaks_the_protocol() {
        let now = Instant::now();
        for (ask, answer) in [
            (
                Session::decide as fn(&mut Session, Instant, String, Decision) -> _,
                Down::Rules {
                    req: 2,
                    rules: Rules::default(),
                },
            ),
            (
                |s: &mut Session, now, _: String, _| s.get_rules(now),
                Down::Ok { req: 2 },
            ),
            (
                |s: &mut Session, now, who: String, _| s.fetch(now, who),
                Down::Pending { req: 2 },
            ),
            (
                |s: &mut Session, now, who: String, _| s.read(now, who, 0),
                Down::Subscriptions {
                    req: 2,
                    list: vec![],
                },
            ),
        ] {
            let mut s = open(now);
            assert_eq!(ask(&mut s, now, BOB.into(), Decision::Deny), Ok(2));
            s.handle_frame(now, answer);
            assert!(
                matches!(s.close_reason(), Some(CloseReason::Protocol { .. })),
                "{:?}",
                s.close_reason()
            );
        }
    }

    #[test]
    fn access_requests_wait_for_the_handshake() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                early_data: true,
                ..config()
            },
        );
        transmit(&mut s);
        s.handle_frame(now, Down::Opened(opened(false)));
        events(&mut s);
        s.decide(now, BOB.into(), Decision::Allow).unwrap();
        s.send(now, message(1)).unwrap();
        assert!(transmit(&mut s).is_empty(), "Decide holds the queue");
        s.handle_confirmed(now);
        let names: Vec<&str> = transmit(&mut s).iter().map(up_name).collect();
        assert_eq!(names, vec!["Decide", "Send"]);
        for frame in [
            Up::GetRules { req: 1 },
            Up::SetRules {
                req: 1,
                rules: Rules::default(),
            },
            Up::Cancel {
                req: 1,
                watcher: BOB.into(),
            },
            Up::Subscriptions {
                req: 1,
                incoming: false,
            },
            Up::Read {
                req: 1,
                inbox: BOB.into(),
                after: 0,
            },
            Up::PublishFor {
                req: 1,
                presentity: BOB.into(),
                presence: Presence::default(),
            },
        ] {
            assert!(!is_replay_safe(&frame), "{frame:?}");
        }
    }

    #[test]
    fn a_pending_subscription_is_answered_pending_and_granted_later() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let req = s.subscribe(now, DAVE.into()).unwrap();
        transmit(&mut s);
        s.handle_frame(now, Down::Pending { req });
        assert_eq!(reply_to(&mut s, req), Reply::Pending);
        assert_eq!(held_of(&s), vec![(1, 3), (2, 1)], "nothing cached yet");

        // Dave allows it: the state change, then his presence as a new slot the client
        // did not know, named in its `Full` change.
        let active = Down::Subscription {
            target: DAVE.into(),
            state: SubState::Active,
        };
        s.handle_frame(now, active);
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Subscription {
                target: DAVE.into(),
                state: SubState::Active
            }]
        );
        let b = sealed(3, vec![full(9, 4, Some(DAVE), "d")], &[(9, DAVE, 4, "d")]);
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(changed(&mut s), vec!["dave@example.com@4"]);
        assert_eq!(held_of(&s), vec![(1, 3), (2, 1), (9, 4)]);
        let cached = roster::lock(s.roster()).get(DAVE).cloned();
        assert_eq!(cached, Some(from_full(9, 4, DAVE, "d")));
        // Later deltas apply to it.
        let b = sealed(4, vec![delta(9, 5, 1, "d", "e")], &[(9, DAVE, 5, "e")]);
        s.handle_frame(now, Down::Batch(b));
        assert_eq!(changed(&mut s), vec!["dave@example.com@5"]);
        assert!(!s.awaiting_sync());
    }

    #[test]
    fn a_denied_request_is_reported_and_caches_nothing() {
        let now = Instant::now();
        let mut s = synced_with_bob_and_carol(now);
        let req = s.subscribe(now, DAVE.into()).unwrap();
        transmit(&mut s);
        s.handle_frame(now, Down::Pending { req });
        events(&mut s);
        let denied = Down::Subscription {
            target: DAVE.into(),
            state: SubState::Denied,
        };
        s.handle_frame(now, denied);
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Subscription {
                target: DAVE.into(),
                state: SubState::Denied
            }]
        );
        assert_eq!(held_of(&s), vec![(1, 3), (2, 1)]);
    }

    #[test]
    fn a_cancelled_subscription_leaves_the_cache_once_whatever_comes_first() {
        let cancelled = || Down::Subscription {
            target: BOB.into(),
            state: SubState::Cancelled,
        };
        let gone = |seq| sealed(seq, vec![Change::Gone { slot: 1 }], &[]);
        let now = Instant::now();

        // The state change first: the cache forgets Bob at once; the `Gone` that follows
        // finds nothing and is no loss of track.
        let mut s = synced_with_bob_and_carol(now);
        s.handle_frame(now, cancelled());
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::SubscriptionEnded(from_full(1, 3, BOB, "a")),
                SessionEvent::Subscription {
                    target: BOB.into(),
                    state: SubState::Cancelled
                },
            ]
        );
        assert_eq!(held_of(&s), vec![(2, 1)]);
        assert!(roster::lock(s.roster()).get(BOB).is_none());
        s.handle_frame(now, Down::Batch(gone(3)));
        assert!(events(&mut s).is_empty());
        assert!(!s.awaiting_sync(), "no resynchronisation");
        assert_eq!(held_of(&s), vec![(2, 1)]);

        // The `Gone` first: it ends the subscription; the state change only says why.
        let mut s = synced_with_bob_and_carol(now);
        s.handle_frame(now, Down::Batch(gone(3)));
        assert_eq!(changed(&mut s), vec!["-bob@example.com"]);
        s.handle_frame(now, cancelled());
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Subscription {
                target: BOB.into(),
                state: SubState::Cancelled
            }]
        );
        assert_eq!(held_of(&s), vec![(2, 1)]);
    }

    #[test]
    fn someone_asking_to_watch_is_surfaced() {
        let now = Instant::now();
        let mut s = open(now);
        s.handle_frame(
            now,
            Down::Asked {
                watcher: "anonymous@example.net".into(),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Asked("anonymous@example.net".into())]
        );
        assert!(s.is_open());
    }

    #[test]
    fn an_anonymous_open_has_no_token_and_takes_no_inbox() {
        let now = Instant::now();
        let mut s = Session::new(
            now,
            SessionConfig {
                user: "anonymous@example.com".into(),
                token: String::new(),
                inbox: false,
                ..config()
            },
        );
        let Some(Up::Open(open)) = s.poll_transmit() else {
            panic!("Open first");
        };
        assert_eq!(open.user, "anonymous@example.com");
        assert!(open.token.is_empty());
        assert_eq!(open.flags, Open::SYNC);
        assert_eq!(open.inbox_seen, 0);
    }
}
