//! The async API: [`Client`] and the values it hands out ([`Event`], [`ConnectionState`],
//! [`SendOutcome`], [`SessionInfo`], [`FetchIf`], [`SubscribeOutcome`], [`InboxPage`]).
//!
//! Owns: argument checks and address normalisation before anything is sent, message ids,
//! opening the state directory and the first connection, the application's side of the
//! event queue (including which inbox items the application has taken, recorded in the
//! state directory before they may be acknowledged), how long `send` waits, reads of the
//! presence cache, and the commands to the driver task. It may not touch the connection or the session (the
//! driver task owns them).
//!
//! The public surface is shaped for uniffi export as it is: `Client` is `Send + Sync` with
//! `&self` methods, arguments and results are owned values, errors are one enum.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tern_wire::addr::Address;
use tern_wire::limits::DEFAULT_FRAME_MAX;
use tern_wire::{
    ClientMode, Decision, Incoming, Item, LateReceipt, Message, Presence, PresenceDoc,
    ReceiptStatus, Rules, SubInfo, SubState, Version,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::driver::{Answer, Command, Driver, Setup};
use crate::error::ClientError;
use crate::link::{Link, Op, Opening};
use crate::outbox::{OUTBOX_MAX, Outbox};
use crate::roster::{self, CachedPresence, Roster, SharedRoster};
use crate::session::check_message;
use crate::state::{self, DEVICE_LEN, Saved, SharedState, StateDir, StateTokens};

/// Requests other than messages that may wait for their answers at once; further
/// callers wait their turn. (Messages are bounded by the outbox.)
const REQUESTS_MAX: usize = 64;
/// Length of the message ids [`Client::send`] generates.
pub const MESSAGE_ID_LEN: usize = 16;

/// Something the gateway or the connection tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A subscribed presentity's presence changed, or is new to the presence cache. The
    /// cache already holds it ([`Client::cached`] tells its version). Presence that did
    /// not change while the client was away (or, with a state directory, stopped) is not
    /// restated: read it from the cache ([`Client::roster`]).
    Presence(PresenceDoc),
    /// A subscription ended without this client asking (on another device of the
    /// principal, or by the gateway): the presentity left the presence cache.
    SubscriptionEnded {
        /// The presentity.
        presentity: String,
    },
    /// A principal subscribed to this principal's presence just now (RFC 2779 5.1.11).
    Watched {
        /// The subscriber, as the gateway authenticated it.
        watcher: String,
    },
    /// A principal asks to watch this principal's presence: the rules say *ask* for it.
    /// Answer with [`Client::decide`] (or change the rules); until then its request is
    /// listed by `Client::subscriptions(true)` as `Pending`. Every session of the
    /// principal is told.
    Asked {
        /// Who asks, as the gateway authenticated it (`anonymous@domain` for an
        /// anonymous peer).
        watcher: String,
    },
    /// One of this principal's subscriptions changed state:
    /// * `Active`: a pending request ([`SubscribeOutcome::Pending`]) was granted; the
    ///   presentity's presence follows as [`Event::Presence`] and enters the cache.
    /// * `Denied`: a pending request was refused; it is gone.
    /// * `Cancelled`: the presentity's principal ended the subscription; it left the
    ///   presence cache (and, if it was cached, [`Event::SubscriptionEnded`] was
    ///   reported for it too). Subscribing again is allowed, under its rules.
    SubscriptionChanged {
        /// The presentity.
        target: String,
        /// The new state.
        state: SubState,
    },
    /// An instant message (only with `ClientConfig::inbox`). It is acknowledged to the
    /// gateway when `next_event` is called again (or [`Client::acknowledge`]): handle it
    /// before asking for the next event.
    Message {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The message.
        message: Incoming,
    },
    /// A receipt for a message sent earlier and answered `Stored`. Acknowledged like a
    /// message.
    Receipt {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The receipt.
        receipt: LateReceipt,
    },
    /// The gateway answered a message whose `send` no longer waits for it: the call
    /// returned `Timeout` (the message stayed in the outbox and was sent again), or the
    /// message was queued by an earlier process with the same state directory.
    Sent(SendOutcome),
    /// The connection changed state.
    Connection(ConnectionState),
}

impl Event {
    /// The inbox sequence number of a message or receipt.
    fn inbox_seq(&self) -> Option<u64> {
        match self {
            Self::Message { seq, .. } | Self::Receipt { seq, .. } => Some(*seq),
            Self::Presence(_)
            | Self::SubscriptionEnded { .. }
            | Self::Watched { .. }
            | Self::Asked { .. }
            | Self::SubscriptionChanged { .. }
            | Self::Sent(_)
            | Self::Connection(_) => None,
        }
    }
}

/// The state of the connection, reported when it changes after [`Client::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A new session is open after a reconnect.
    Connected,
    /// The link dropped; the client is trying again. Messages sent meanwhile wait in the
    /// outbox.
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

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// The message id (keep it to resend with [`Client::send_message`]).
    pub id: Vec<u8>,
    /// The recipient, normalised.
    pub to: String,
    /// Delivered, stored for later delivery, or failed with a reason.
    pub status: ReceiptStatus,
}

/// The answer to [`Client::watchers`]: watcher information (RFC 2778).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherInfo {
    /// The principals subscribed to this principal's presence, in address order.
    pub subscribers: Vec<String>,
    /// The principals that fetched it within the gateway's window, most recent first.
    pub fetchers: Vec<tern_wire::Fetcher>,
}

/// The answer to [`Client::subscribe_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Subscribed: the presentity's current presence (as its rules let this principal
    /// see it), also in the presence cache; changes follow as [`Event::Presence`].
    Granted(PresenceDoc),
    /// The presentity's rules say *ask*: the request is recorded on the gateway and its
    /// principal is asked. The decision comes as [`Event::SubscriptionChanged`]
    /// (`Active`, followed by the presence; or `Denied`), in this session or a later one.
    /// `Client::unsubscribe` withdraws the request.
    Pending,
}

/// The answer to [`Client::read_inbox`]: a page of another principal's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPage {
    /// The items, oldest first, each with its sequence number in the owner's inbox.
    pub items: Vec<Item>,
    /// More items are held after the last one: read again with its `seq` as `after`.
    pub more: bool,
}

impl InboxPage {
    /// The sequence number to read the next page after: the last item's, or `after`
    /// when the page is empty.
    pub fn next_after(&self, after: u64) -> u64 {
        self.items.last().map_or(after, |item| item.seq)
    }
}

/// The answer to [`Client::fetch_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchIf {
    /// The version given is the current one.
    Unchanged,
    /// The presentity's document changed since the version given (or that version was 0).
    Changed {
        /// The current version.
        version: Version,
        /// The current document.
        doc: PresenceDoc,
    },
}

/// Whether the current connection's first flight (`Open` and the outbox) went as QUIC
/// 0-RTT data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZeroRtt {
    /// An ordinary handshake: no session ticket from an earlier connection of this
    /// client (the first connection, or the gateway offers no 0-RTT).
    #[default]
    NotTried,
    /// The flight was sent as early data; `accepted` is the gateway's verdict (when it
    /// refused, the flight was sent again after the handshake).
    Sent {
        /// Whether the gateway took the early data.
        accepted: bool,
    },
}

/// What happened when the current session opened; see [`Client::session_info`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The gateway resumed the device's earlier session (it was parked after a lost
    /// link, or still connected): subscriptions and presence were kept, only changes are
    /// restated, and the presence was not published again.
    pub resumed: bool,
    /// Whether the session's first flight went as 0-RTT data.
    pub zero_rtt: ZeroRtt,
    /// QUIC handshakes this client has completed, the first connection included. A
    /// network change handled by [`Client::network_changed`] does not add one.
    pub connections: u64,
    /// The keep-alive interval the gateway suggests, ms (`None`: no suggestion). The
    /// client keeps its configured `keepalive`; an application may use this for the next
    /// connection.
    pub suggested_keepalive_ms: Option<u32>,
    /// The device id sent in `Open` (from the state directory, or random per client).
    pub device: Vec<u8>,
    /// How many presentities the presence cache holds now.
    pub presentities: usize,
}

/// A connection to a tern gateway as one principal.
///
/// Created by [`Client::connect`], which spawns a background task on the current tokio
/// runtime; [`Client::close`], or dropping the client, says goodbye and ends it;
/// [`Client::abandon`] ends it without a goodbye, as a crash would.
pub struct Client {
    /// Unbounded so that handing over a command never waits: messages keep the order of
    /// the calls (the order their futures are first polled). What bounds them is the
    /// outbox (messages) and `requests` (everything else).
    commands: mpsc::UnboundedSender<Command>,
    requests: tokio::sync::Semaphore,
    events: tokio::sync::Mutex<EventQueue>,
    taken: Mutex<Taken>,
    user: String,
    request_timeout: Duration,
    info: Arc<Mutex<SessionInfo>>,
    roster: SharedRoster,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The application's end of the event channel.
struct EventQueue {
    rx: mpsc::UnboundedReceiver<Event>,
    /// Highest inbox sequence number handed out (or, at start, recorded in the state
    /// directory); items at or below it that come again are skipped.
    floor: Option<u64>,
}

/// Which inbox item the application holds, and what it has finished with.
struct Taken {
    /// The sequence number of the item last handed out, not yet released.
    held: Option<u64>,
    /// The highest item released (and recorded), for the driver to acknowledge.
    consumed: watch::Sender<Option<u64>>,
    /// Where released items are recorded first; `None` without a state directory and
    /// after [`Client::abandon`].
    state: Option<SharedState>,
}

impl Client {
    /// Opens the state directory (if configured), connects to the gateway, opens (or
    /// resumes) the device's session, sends the messages an earlier process left in the
    /// outbox, and returns once the gateway answered `Open`.
    ///
    /// Fails with `InvalidArgument` for a bad configuration (or a state directory of
    /// another principal), `Storage` when the state directory cannot be used, `Connect`,
    /// `Tls` or `Timeout` when the gateway cannot be reached, and `Rejected` when it
    /// refuses the principal (e.g. a wrong token). The first connection is not retried.
    /// Must be called within a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let mut target = config.prepare()?;
        let span = tracing::info_span!("tern_client", user = %target.user);
        let (state, saved) = match target.state_dir.clone() {
            Some(dir) => {
                let (state, saved) = StateDir::open(&dir, &target.user)?;
                let state: SharedState = Arc::new(Mutex::new(state));
                target.quic.token_store(Arc::new(StateTokens::new(&state)));
                (Some(state), saved)
            }
            None => (None, fresh_device()),
        };
        let target = Arc::new(target);
        let outbox = Outbox::new(saved.outbox, OUTBOX_MAX);
        if !saved.roster.is_empty() {
            tracing::debug!(presentities = saved.roster.len(), "presence cache loaded");
        }
        let roster: SharedRoster = Arc::new(Mutex::new(Roster::from_entries(saved.roster)));
        let opening = Opening {
            device: saved.device.clone(),
            consumed: saved.inbox_seen,
            frame_max: DEFAULT_FRAME_MAX,
            outbox: outbox.messages(),
            mode: target.mode,
            roster: Arc::clone(&roster),
        };
        if !opening.outbox.is_empty() {
            tracing::info!(messages = opening.outbox.len(), "sending the outbox again");
        }
        let link = Link::establish(&target, &opening)
            .instrument(span.clone())
            .await?;
        let user = link.user().unwrap_or_else(|| target.user.clone());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, rx) = mpsc::unbounded_channel();
        let (consumed, consumed_rx) = watch::channel(saved.inbox_seen);
        let info = Arc::new(Mutex::new(SessionInfo {
            device: saved.device.clone(),
            ..SessionInfo::default()
        }));
        let request_timeout = target.request_timeout;
        let mut link = link;
        let mut driver = Driver::new(Setup {
            target,
            commands: command_rx,
            events: event_tx,
            consumed: consumed_rx,
            state: state.clone(),
            device: saved.device,
            presence: saved.presence,
            outbox,
            info: Arc::clone(&info),
            roster: Arc::clone(&roster),
        });
        span.in_scope(|| driver.adopt(&mut link, false));
        let task = tokio::spawn(driver.run(link).instrument(span));
        Ok(Self {
            commands,
            requests: tokio::sync::Semaphore::new(REQUESTS_MAX),
            events: tokio::sync::Mutex::new(EventQueue {
                rx,
                floor: saved.inbox_seen,
            }),
            taken: Mutex::new(Taken {
                held: None,
                consumed,
                state,
            }),
            user,
            request_timeout,
            info,
            roster,
            task: Mutex::new(Some(task)),
        })
    }

    /// The principal's normalised address, as the gateway stamps it.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// What happened when the current session opened: resumed or fresh, 0-RTT, how many
    /// handshakes so far, the gateway's suggested keep-alive; and how many presentities
    /// the presence cache holds now.
    pub fn session_info(&self) -> SessionInfo {
        let mut info = self
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        info.presentities = roster::lock(&self.roster).len();
        info
    }

    /// Tells the gateway the application's mode changed: [`ClientMode::ACTIVE`] when it
    /// comes to the foreground, [`ClientMode::INACTIVE`] when it goes to the background,
    /// [`ClientMode::SLEEPY`] for a device that wakes now and then. The gateway holds
    /// presence changes back accordingly. Sent at once when connected, and in every later
    /// session's first flight. Setting the mode the client already has asks the gateway
    /// for the presence changes it holds back: a sleepy device's way to poll.
    pub fn set_mode(&self, mode: ClientMode) {
        // A closed client has no mode to change.
        let _ = self.commands.send(Command::SetMode(mode));
    }

    /// The cached presence of a subscribed presentity, without asking the gateway: the
    /// state the last batch left it in. `None` when it is not cached (not subscribed, not
    /// synchronised yet, or not a valid address).
    pub fn presence(&self, presentity: String) -> Option<PresenceDoc> {
        self.cached(presentity).map(|entry| entry.doc)
    }

    /// Like [`Self::presence`], with the subscription's slot and the document's version.
    pub fn cached(&self, presentity: String) -> Option<CachedPresence> {
        let name = normalise(&presentity).ok()?;
        roster::lock(&self.roster).get(&name).cloned()
    }

    /// Everything the presence cache holds, by presentity.
    pub fn roster(&self) -> Vec<CachedPresence> {
        let mut entries: Vec<CachedPresence> =
            roster::lock(&self.roster).entries().cloned().collect();
        entries.sort_by(|a, b| a.doc.presentity.cmp(&b.doc.presentity));
        entries
    }

    /// Replaces the principal's presence information. With a state directory it is also
    /// kept there, and published again when a later process starts a fresh session.
    pub async fn publish(&self, presence: Presence) -> Result<(), ClientError> {
        match self.request(Op::Publish(presence)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches a presentity's presence once. Fails with [`ClientError::Refused`] when
    /// the presentity's rules deny it, or say *ask* (a fetch is never pending).
    pub async fn fetch(&self, presentity: String) -> Result<PresenceDoc, ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Fetch(target)).await? {
            Answer::Presence(doc) => Ok(doc),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches a presentity's presence if its version is not `version` (which the caller
    /// got earlier from [`Self::fetch_if`] or [`Self::cached`]); 0 fetches it whatever it
    /// is. Cheap to poll: an unchanged document costs a few bytes. Refused like
    /// [`Self::fetch`].
    pub async fn fetch_if(
        &self,
        presentity: String,
        version: Version,
    ) -> Result<FetchIf, ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::FetchIf(target, version)).await? {
            Answer::Unchanged => Ok(FetchIf::Unchanged),
            Answer::Versioned(version, doc) => Ok(FetchIf::Changed { version, doc }),
            other => Err(unexpected(&other)),
        }
    }

    /// Watcher information: who subscribes to this principal's presence, and who
    /// fetched it recently (within the gateway's window).
    pub async fn watchers(&self) -> Result<WatcherInfo, ClientError> {
        match self.request(Op::Watchers).await? {
            Answer::Watchers(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Subscribes to a presentity and returns its current presence, which also goes into
    /// the presence cache; changes then arrive as [`Event::Presence`]. Subscriptions are
    /// kept by the gateway across sessions.
    ///
    /// The presentity's rules decide: when they deny it, this fails with
    /// [`ClientError::Refused`]; when they say *ask*, the request is recorded and this
    /// fails with [`ClientError::SubscriptionPending`] (not a failure of the request:
    /// its outcome comes later as [`Event::SubscriptionChanged`]). An application that
    /// expects pending subscriptions may prefer [`Self::subscribe_request`], which
    /// returns them as a value. A politely blocked watcher cannot tell: it gets a
    /// presentity that never published (version 0, empty document) and never changes.
    pub async fn subscribe(&self, presentity: String) -> Result<PresenceDoc, ClientError> {
        let target = normalise(&presentity)?;
        match self.subscribe_request(target.clone()).await? {
            SubscribeOutcome::Granted(doc) => Ok(doc),
            SubscribeOutcome::Pending => {
                Err(ClientError::SubscriptionPending { presentity: target })
            }
        }
    }

    /// Subscribes to a presentity, like [`Self::subscribe`], but returns a subscription
    /// that waits for its principal's decision as [`SubscribeOutcome::Pending`] instead
    /// of an error. Fails with [`ClientError::Refused`] when the presentity's rules deny
    /// it, and [`ClientError::RateLimited`] over the gateway's subscription rate.
    pub async fn subscribe_request(
        &self,
        presentity: String,
    ) -> Result<SubscribeOutcome, ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Subscribe(target)).await? {
            Answer::Presence(doc) => Ok(SubscribeOutcome::Granted(doc)),
            Answer::Pending => Ok(SubscribeOutcome::Pending),
            other => Err(unexpected(&other)),
        }
    }

    /// The principal's rules: who may watch its presence and what each watcher sees, who
    /// may send to its inbox, and who acts for it. Edit them (see [`crate::rules_edit`])
    /// and write them back whole with [`Self::set_rules`].
    pub async fn rules(&self) -> Result<Rules, ClientError> {
        match self.request(Op::GetRules).await? {
            Answer::Rules(rules) => Ok(rules),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces the principal's rules as a whole. They apply at once to existing
    /// subscriptions: a watcher now denied is cancelled (and told), a pending request now
    /// allowed or denied is decided, every watcher gets its new view.
    ///
    /// Names are normalised and the rules checked first ([`crate::rules_edit::check`]):
    /// `InvalidArgument` when they are over the gateway's limits or hold a bad address,
    /// domain or time; nothing is sent then. Concurrent editors: the last write wins, so
    /// read, change and write back promptly.
    pub async fn set_rules(&self, rules: Rules) -> Result<(), ClientError> {
        let rules = crate::rules_edit::normalised(rules)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        match self.request(Op::SetRules(rules)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Decides about one watcher, typically after [`Event::Asked`]: the gateway puts a
    /// presence rule for exactly that principal first among the rules (replacing an
    /// earlier one for it, without view or time) and applies the rules, so a pending
    /// request is granted ([`Decision::Allow`], [`Decision::Polite`]) or refused
    /// ([`Decision::Deny`]), and an active subscription now denied is cancelled.
    pub async fn decide(&self, watcher: String, decision: Decision) -> Result<(), ClientError> {
        let watcher = normalise(&watcher)?;
        match self.request(Op::Decide(watcher, decision)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends a watcher's subscription (or pending request) to this principal's presence
    /// (RFC 2779 5.1.16). Succeeds whether or not there was one. The watcher is told,
    /// unless it is politely blocked (then its subscription is left in place: removing
    /// it would tell). It may subscribe again under the rules: to keep it out, deny it
    /// ([`Self::decide`]).
    pub async fn cancel(&self, watcher: String) -> Result<(), ClientError> {
        let watcher = normalise(&watcher)?;
        match self.request(Op::Cancel(watcher)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Subscriptions and their states ([`SubState::Active`] or [`SubState::Pending`]),
    /// in address order. `incoming` false: this principal's own subscriptions (one
    /// politely blocked looks `Active`); true: the watchers of its presence and the
    /// requests waiting for its decision (anonymous watchers as `anonymous@domain`).
    pub async fn subscriptions(&self, incoming: bool) -> Result<Vec<SubInfo>, ClientError> {
        match self.request(Op::Subscriptions(incoming)).await? {
            Answer::Subscriptions(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces another principal's presence, as its delegate (RFC 2779 2.3.4): exactly
    /// like that principal's own publication. Fails with [`ClientError::Refused`] unless
    /// its rules name this principal a delegate with `Delegate::PUBLISH`, and `Failed`
    /// (`unknown_user`) for a presentity that does not exist. Not kept for restoring
    /// after a reconnect: the presence is the other principal's.
    pub async fn publish_for(
        &self,
        presentity: String,
        presence: Presence,
    ) -> Result<(), ClientError> {
        let presentity = normalise(&presentity)?;
        match self.request(Op::PublishFor(presentity, presence)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads another principal's inbox, as its delegate (RFC 2779 2.3.6): up to a page
    /// (32) of the items held after sequence number `after` (0: from the start), oldest
    /// first. Nothing is acknowledged: the owner's devices still get every item. Fails
    /// with [`ClientError::Refused`] unless the owner's rules name this principal a
    /// delegate with `Delegate::READ`.
    pub async fn read_inbox(&self, inbox: String, after: u64) -> Result<InboxPage, ClientError> {
        let inbox = normalise(&inbox)?;
        match self.request(Op::Read(inbox, after)).await? {
            Answer::Items(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends a subscription, or withdraws a pending request.
    pub async fn unsubscribe(&self, presentity: String) -> Result<(), ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Unsubscribe(target)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends an instant message with a new random id. `content_type` `None` means
    /// `text/plain;charset=utf-8`. See [`Self::send_message`].
    pub async fn send(
        &self,
        to: String,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<SendOutcome, ClientError> {
        let message = Message {
            id: new_message_id(),
            to,
            reply_to: None,
            content_type,
            body,
        };
        self.send_message(message).await
    }

    /// Sends a message with the caller's id and waits up to `request_timeout` for its
    /// receipt.
    ///
    /// The message goes into the outbox first (and into the state directory, when there
    /// is one), connected or not: while the client is reconnecting it waits there and is
    /// sent, in order, right after the next `Open`. If no receipt comes in time the call
    /// returns `Timeout` but the message stays queued; its receipt then comes as
    /// [`Event::Sent`]. Sending again with the same id is safe: the gateway delivers each
    /// id once and answers a repeat with the first one's status (a repeat while the first
    /// still waits joins it). Fails at once with `InvalidArgument` (bad address or id,
    /// over the gateway's limits), `OutboxFull` or `Storage`.
    pub async fn send_message(&self, mut message: Message) -> Result<SendOutcome, ClientError> {
        message.to = normalise(&message.to)?;
        if let Some(reply_to) = message.reply_to.take() {
            message.reply_to = Some(normalise(&reply_to)?);
        }
        check_message(&message, None, None).map_err(ClientError::from)?;
        let id = message.id.clone();
        let to = message.to.clone();
        // Handed over at once: concurrent sends keep the order of their calls.
        let answer = self.submit(Op::Send(message))?;
        let answer = tokio::time::timeout(self.request_timeout, answer)
            .await
            .map_err(|_| ClientError::Timeout)?;
        match answer.unwrap_or_else(|_| Err(ClientError::closed("the session ended")))? {
            Answer::Receipt(status) => Ok(SendOutcome { id, to, status }),
            other => Err(unexpected(&other)),
        }
    }

    /// The next event; `None` once the client is closed or disconnected for good.
    ///
    /// Calling it again releases the message or receipt it returned last: with a state
    /// directory, that is recorded there before this call goes on; then the item is
    /// acknowledged to the gateway, which drops it and tells its sender it was
    /// delivered. An item not released (the application stopped or failed before asking
    /// for more) is delivered again in the next session, so items are shown at least
    /// once; a released item is never shown again (see the crate documentation). Meant
    /// for one consumer loop: with concurrent callers, any call releases the item another
    /// caller holds. Cancel-safe.
    pub async fn next_event(&self) -> Option<Event> {
        self.release_held();
        let mut queue = self.events.lock().await;
        loop {
            let event = queue.rx.recv().await?;
            let Some(seq) = event.inbox_seq() else {
                return Some(event);
            };
            if queue.floor.is_some_and(|floor| seq <= floor) {
                continue;
            }
            queue.floor = Some(seq);
            self.lock_taken().held = Some(seq);
            return Some(event);
        }
    }

    /// Releases the message or receipt returned last by [`Self::next_event`] now,
    /// instead of at the next call: for an application that handled it and stops.
    pub fn acknowledge(&self) {
        self.release_held();
    }

    /// The device's network changed (Wi-Fi to cellular, a new address): moves the QUIC
    /// connection to a fresh UDP socket, so that it continues on the new path without a
    /// new handshake (QUIC connection migration). If that fails, the client reconnects.
    /// While reconnecting, it makes the next attempt at once. Apps call this from their
    /// platform's network-change callback.
    pub fn network_changed(&self) {
        // A closed client has nothing to move.
        let _ = self.commands.send(Command::NetworkChanged);
    }

    /// Says goodbye: sends `Bye` (after any acknowledgement due), waits briefly for the
    /// gateway, and closes the connection. The gateway ends the session at once (nothing
    /// to resume), so the presence kept in the state directory is forgotten; unanswered
    /// messages stay in the outbox there (without a state directory they are dropped).
    /// The item returned last by [`Self::next_event`] is not released unless
    /// [`Self::acknowledge`] was called: the application may have stopped because it
    /// could not handle it. Requests still waiting fail with `Closed`;
    /// [`Self::next_event`] then returns `None`. Calling it again does nothing. The state
    /// directory stays locked until the client is dropped.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            let _ = finished.await;
        }
    }

    /// Stops at once without a goodbye, as if the process had died: nothing more is sent
    /// or recorded, and the gateway keeps the device's session for its resume window, so
    /// that a new client with the same state directory resumes it. For tests and for
    /// apps that are being killed. Calls made afterwards fail with `Closed`.
    pub async fn abandon(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            // Resolves once the task is dropped, with its link and its state directory.
            let _ = task.await;
        }
        self.lock_taken().state = None;
    }

    /// A request other than a message: waits for a turn among [`REQUESTS_MAX`], then
    /// for its answer.
    async fn request(&self, op: Op) -> Result<Answer, ClientError> {
        let _turn = self
            .requests
            .acquire()
            .await
            .map_err(|_| ClientError::closed("the client is closed"))?;
        self.submit(op)?
            .await
            .unwrap_or_else(|_| Err(ClientError::closed("the session ended")))
    }

    /// Hands a request to the driver, without waiting; the receiver gets its answer.
    fn submit(
        &self,
        op: Op,
    ) -> Result<oneshot::Receiver<Result<Answer, ClientError>>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { op, reply })
            .map_err(|_| ClientError::closed("the client is closed"))?;
        Ok(answer)
    }

    /// The application is done with the item handed out last: it is recorded in the
    /// state directory, then may be acknowledged.
    fn release_held(&self) {
        let mut taken = self.lock_taken();
        let Some(seq) = taken.held.take() else {
            return;
        };
        if let Some(state) = &taken.state
            && let Err(e) = state::lock(state).set_inbox_seen(seq)
        {
            tracing::error!(error = %e, seq, "cannot record a taken inbox item; it will come again");
            return;
        }
        taken.consumed.send_if_modified(|consumed| {
            let newer = consumed.is_none_or(|c| seq > c);
            if newer {
                *consumed = Some(seq);
            }
            newer
        });
    }

    fn lock_taken(&self) -> std::sync::MutexGuard<'_, Taken> {
        // The lock guards plain values; a panic elsewhere cannot leave them torn.
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a client without a state directory starts from: a new random device.
fn fresh_device() -> Saved {
    Saved {
        device: rand::random::<[u8; DEVICE_LEN]>().to_vec(),
        inbox_seen: None,
        presence: None,
        outbox: Vec::new(),
        roster: Vec::new(),
    }
}

/// A new random message id of [`MESSAGE_ID_LEN`] bytes.
pub fn new_message_id() -> Vec<u8> {
    rand::random::<[u8; MESSAGE_ID_LEN]>().to_vec()
}

fn normalise(address: &str) -> Result<String, ClientError> {
    Address::parse(address)
        .map(Address::into_string)
        .map_err(|e| ClientError::InvalidArgument(format!("{address:?}: {e}")))
}

/// The session checks that each answer fits its request, so this cannot happen; it is an
/// error rather than a panic all the same.
fn unexpected(answer: &Answer) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_random_and_sized() {
        let a = new_message_id();
        assert_eq!(a.len(), MESSAGE_ID_LEN);
        assert_ne!(a, new_message_id());
    }

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(normalise("Bob@Example.COM").unwrap(), "bob@example.com");
        assert!(matches!(
            normalise("bob"),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn an_inbox_page_says_where_the_next_one_starts() {
        use tern_wire::{InboxItem, LateReceipt};
        let receipt = |seq| Item {
            seq,
            item: InboxItem::Receipt(LateReceipt {
                id: vec![1; 16],
                to: "bob@example.com".into(),
                status: ReceiptStatus::Stored,
            }),
        };
        let page = InboxPage {
            items: vec![receipt(3), receipt(7)],
            more: true,
        };
        assert_eq!(page.next_after(0), 7);
        let empty = InboxPage {
            items: vec![],
            more: false,
        };
        assert_eq!(empty.next_after(7), 7);
    }

    #[test]
    fn access_events_are_not_inbox_items() {
        let asked = Event::Asked {
            watcher: "bob@example.com".into(),
        };
        let changed = Event::SubscriptionChanged {
            target: "bob@example.com".into(),
            state: SubState::Cancelled,
        };
        assert_eq!(asked.inbox_seq(), None);
        assert_eq!(changed.inbox_seq(), None);
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Client>();
    }
}
