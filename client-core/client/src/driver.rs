//! The background task behind a [`crate::Client`]: it owns the current [`Link`], serves
//! the client's commands on it, forwards session events to the application, keeps the
//! outbox, and reconnects with backoff when the link drops.
//!
//! Owns: the table of callers waiting for answers, the outbox and the callers of each
//! waiting message, the mapping of session events to [`Event`]s, what a new session needs
//! (device, inbox position, outbox, presence to restore, mode, presence cache), the
//! reconnect policy, network changes, [`SessionInfo`], when the presence cache is written
//! to the state directory, and the goodbye. It may not parse frames or decide protocol
//! questions (the session does), nor touch the application's side of the event queue
//! (the client does).
//!
//! ## Reconnecting
//! When a session ends and [`CloseReason::may_retry`] allows (and the configuration does),
//! the driver emits `Reconnecting`, then tries again after [`Backoff`] delays until a new
//! session opens (`Connected`) or the failure is final (`Disconnected`). A link that
//! stayed up for [`STABLE_LINK`] starts the backoff over; so does a network change, which
//! also cuts the current wait short. Requests waiting when the link dropped fail with
//! `Closed`; requests made while it is down fail at once with `NotConnected`, except
//! messages (see [`Driver::offline`]).
//!
//! ## The outbox
//! Every message goes into the outbox (and the state directory) before it is sent, and
//! leaves it when the gateway answers (a receipt, or a refusal). A new session sends the
//! whole outbox right after `Open`, in order, with the same ids (as 0-RTT data when it
//! can). A message whose request timed out or whose link dropped is simply sent again
//! on the next session; its callers keep waiting until their own deadline. An answer
//! nobody waits for any more is surfaced as [`Event::Sent`].
//!
//! ## What a new session restores
//! Subscriptions are durable on the gateway, so nothing about them is replayed. Presence
//! is kept by the gateway while a device session is parked, so after a resumption
//! nothing is published; after a fresh session (the session truly ended and the gateway
//! marked the presentity CLOSED) the last presence the gateway accepted is published
//! again first thing.
//!
//! ## The presence cache
//! The cache ([`crate::roster`]) outlives sessions: each new session states it in its
//! `Have`, so a reconnect gets only what changed. With a state directory it is written
//! there [`ROSTER_SAVE_DELAY`] after the first change not yet written (so a burst of
//! batches costs one write), when a link ends, and when the driver stops (goodbye or
//! drop; not after `abandon`, which is a crash). A cache written a little late is still
//! valid: the gateway answers the older versions it lists with what changed since.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tern_wire::frame::ReqId;
use tern_wire::limits::DEFAULT_FRAME_MAX;
use tern_wire::{
    ClientMode, ErrorCode, Message, Presence, PresenceDoc, ReceiptStatus, Rules, SubInfo, Version,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::client::{ConnectionState, Event, InboxPage, SendOutcome, SessionInfo, WatcherInfo};
use crate::config::Target;
use crate::error::ClientError;
use crate::link::{Link, Op, Opening, sleep_until};
use crate::outbox::{OUTBOX_MAX, Outbox};
use crate::roster::{self, SharedRoster};
use crate::session::{Admitted, CloseReason, Reply, SessionEvent, check_message};
use crate::state::{self, SharedState};

/// A link that stayed up this long resets the reconnect backoff.
pub(crate) const STABLE_LINK: Duration = Duration::from_secs(10);
/// How long after its first unwritten change the presence cache is written.
pub(crate) const ROSTER_SAVE_DELAY: Duration = Duration::from_secs(2);

/// Where a request's answer goes.
pub(crate) type Responder = oneshot::Sender<Result<Answer, ClientError>>;

/// What the client asks of the driver.
pub(crate) enum Command {
    /// A request; the answer goes to `reply`.
    Request { op: Op, reply: Responder },
    /// The network changed: move the connection to a new socket.
    NetworkChanged,
    /// The client's mode changed.
    SetMode(ClientMode),
    /// Say goodbye and stop; `done` fires when the link is closed.
    Close { done: oneshot::Sender<()> },
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Done,
    Presence(PresenceDoc),
    Receipt(ReceiptStatus),
    Unchanged,
    Versioned(Version, PresenceDoc),
    Watchers(WatcherInfo),
    /// A subscription waits for the presentity's principal to decide.
    Pending,
    Rules(Rules),
    Subscriptions(Vec<SubInfo>),
    Items(InboxPage),
}

/// Who waits for the answer to a request.
enum Waiter {
    /// A caller of the client.
    Caller(Responder),
    /// A caller's `Publish`: on success its presence is the one to restore.
    Publish(Responder, Presence),
    /// The driver's own re-publication after a fresh session.
    Restore,
    /// A message of the outbox, by id; its callers are in `Driver::senders`.
    Outbox(Vec<u8>),
}

/// Everything the driver starts from.
pub(crate) struct Setup {
    pub(crate) target: Arc<Target>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    /// The highest inbox item the application has released (already recorded).
    pub(crate) consumed: watch::Receiver<Option<u64>>,
    pub(crate) state: Option<SharedState>,
    pub(crate) device: Vec<u8>,
    /// The presence to restore after a fresh session.
    pub(crate) presence: Option<Presence>,
    pub(crate) outbox: Outbox,
    pub(crate) info: Arc<Mutex<SessionInfo>>,
    /// The presence cache, shared with the client (reads) and each session (changes).
    pub(crate) roster: SharedRoster,
}

pub(crate) struct Driver {
    target: Arc<Target>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    consumed: watch::Receiver<Option<u64>>,
    consumed_open: bool,
    waiting: HashMap<ReqId, Waiter>,
    outbox: Outbox,
    /// Callers waiting for the receipt of an outbox message, by message id.
    senders: HashMap<Vec<u8>, Vec<Responder>>,
    /// The last presence the gateway accepted, published again after a fresh session.
    published: Option<Presence>,
    state: Option<SharedState>,
    device: Vec<u8>,
    /// The gateway's limits as last announced.
    frame_max: Option<u32>,
    body_max: Option<u32>,
    info: Arc<Mutex<SessionInfo>>,
    /// The client's mode, as last set.
    mode: ClientMode,
    roster: SharedRoster,
    /// The roster's generation last written to the state directory.
    roster_saved: u64,
    /// When the roster's unwritten changes are due to be written.
    roster_save_at: Option<Instant>,
    /// The client said goodbye, or was dropped.
    closing: bool,
    done: Option<oneshot::Sender<()>>,
}

/// How a stretch of offline work ended.
enum Offline<T> {
    Done(T),
    /// The network changed: the wait may end early.
    NetworkChanged,
    /// The client closed or was dropped.
    Stopped,
}

impl Driver {
    pub(crate) fn new(setup: Setup) -> Self {
        let mode = setup.target.mode;
        Self {
            target: setup.target,
            commands: setup.commands,
            events: setup.events,
            consumed: setup.consumed,
            consumed_open: true,
            waiting: HashMap::new(),
            outbox: setup.outbox,
            senders: HashMap::new(),
            published: setup.presence,
            state: setup.state,
            device: setup.device,
            frame_max: None,
            body_max: None,
            info: setup.info,
            mode,
            // A roster loaded from the state directory starts at generation 0.
            roster_saved: 0,
            roster: setup.roster,
            roster_save_at: None,
            closing: false,
            done: None,
        }
    }

    /// Runs until the client closes, is dropped, or the connection is lost for good.
    /// `link` has been [adopted](Self::adopt) already.
    pub(crate) async fn run(mut self, mut link: Link) {
        let mut backoff = Backoff::default();
        loop {
            let up_since = Instant::now();
            let reason = self.serve(&mut link).await;
            // The session answered every waiting request before closing; drop any rest
            // (their callers see `Closed`). Messages stay in the outbox.
            self.waiting.clear();
            self.outbox.link_lost();
            link.shutdown().await;
            self.save_roster();
            if self.closing {
                break;
            }
            if !(self.target.reconnect && reason.may_retry()) {
                tracing::warn!(%reason, "disconnected");
                let reason = reason.to_string();
                self.emit(Event::Connection(ConnectionState::Disconnected { reason }));
                break;
            }
            tracing::info!(%reason, queued = self.outbox.len(), "link lost; reconnecting");
            if up_since.elapsed() >= STABLE_LINK {
                backoff.reset();
            }
            let reason = reason.to_string();
            self.emit(Event::Connection(ConnectionState::Reconnecting { reason }));
            match self.reconnect(&mut backoff).await {
                Some(new) => {
                    link = new;
                    self.adopt(&mut link, true);
                }
                None => break,
            }
        }
        if self.closing {
            // A goodbye ends the session for good: the gateway closed the presence, and
            // a later process must not bring it back.
            self.forget_presence();
        }
        self.save_roster();
        // The state directory (and its lock) goes before `close()` returns.
        self.state = None;
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }

    /// Takes over a newly opened session: the outbox it carries, what it tells, and what
    /// must be restored on it. The client calls it for the first link before it returns
    /// from `connect`, so that [`SessionInfo`] is current by then.
    pub(crate) fn adopt(&mut self, link: &mut Link, reconnected: bool) {
        let admitted = link.session.admitted().cloned();
        let resumed = admitted.as_ref().is_some_and(Admitted::resumed);
        self.frame_max = admitted.as_ref().map(Admitted::frame_max);
        self.body_max = admitted.as_ref().map(Admitted::body_max);
        for (req, id) in link.take_resent() {
            self.outbox.sent(&id, req);
            self.waiting.insert(req, Waiter::Outbox(id));
        }
        // Messages queued while the session was being opened.
        self.feed(link);
        let zero_rtt = link.zero_rtt();
        {
            let mut info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
            info.resumed = resumed;
            info.zero_rtt = zero_rtt;
            info.connections += 1;
            info.suggested_keepalive_ms =
                admitted.as_ref().and_then(Admitted::suggested_keepalive_ms);
        }
        tracing::info!(
            resumed,
            ?zero_rtt,
            queued = self.outbox.len(),
            "session open"
        );
        if !resumed {
            self.restore_presence(link);
        }
        if reconnected {
            self.emit(Event::Connection(ConnectionState::Connected));
        }
    }

    /// Serves one link until its session closes; returns why.
    async fn serve(&mut self, link: &mut Link) -> CloseReason {
        loop {
            self.dispatch(link);
            if let Some(reason) = link.session.close_reason() {
                return reason.clone();
            }
            self.feed(link);
            self.note_roster();
            tokio::select! {
                command = self.commands.recv(), if !self.closing => self.on_command(link, command),
                () = sleep_until(self.roster_save_at) => self.save_roster(),
                changed = self.consumed.changed(), if self.consumed_open => match changed {
                    Ok(()) => {
                        if let Some(upto) = self.latest_consumed() {
                            link.session.ack(upto);
                        }
                    }
                    Err(_) => self.consumed_open = false,
                },
                () = link.io() => {}
            }
            link.flush();
        }
    }

    fn on_command(&mut self, link: &mut Link, command: Option<Command>) {
        match command {
            None => self.leave(link, None),
            Some(Command::Close { done }) => self.leave(link, Some(done)),
            Some(Command::SetMode(mode)) => {
                self.mode = mode;
                link.set_mode(mode);
            }
            Some(Command::NetworkChanged) => {
                if let Err(e) = link.rebind() {
                    tracing::warn!(error = %e, "cannot move to a new socket; reconnecting");
                    let why = format!("the network changed and the socket could not move: {e}");
                    link.session.handle_closed(CloseReason::Link(why));
                }
            }
            Some(Command::Request {
                op: Op::Send(message),
                reply,
            }) => self.queue_message(Some(link), message, reply),
            Some(Command::Request { op, reply }) => {
                let presence = match &op {
                    Op::Publish(presence) => Some(presence.clone()),
                    _ => None,
                };
                match link.request(op) {
                    Ok(req) => {
                        let waiter = match presence {
                            Some(presence) => Waiter::Publish(reply, presence),
                            None => Waiter::Caller(reply),
                        };
                        self.waiting.insert(req, waiter);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Puts a message in the outbox (and the state directory) and, when a link is up,
    /// sends it. A message whose id already waits gets another caller instead.
    fn queue_message(&mut self, link: Option<&mut Link>, message: Message, reply: Responder) {
        let id = message.id.clone();
        if self.outbox.contains(&id) {
            self.senders.entry(id).or_default().push(reply);
            return;
        }
        if let Err(e) = check_message(&message, self.frame_max, self.body_max) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        if self.outbox.is_full() {
            let limit = u32::try_from(OUTBOX_MAX).unwrap_or(u32::MAX);
            let _ = reply.send(Err(ClientError::OutboxFull { limit }));
            return;
        }
        if let Some(state) = &self.state
            && let Err(e) = state::lock(state).add_outgoing(self.outbox.next_seq(), &message)
        {
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.outbox.push(message);
        self.senders.insert(id, vec![reply]);
        match link {
            Some(link) => self.feed(link),
            None => tracing::debug!(queued = self.outbox.len(), "message queued while offline"),
        }
    }

    /// Hands the link the outbox messages not sent on it yet, oldest first, while it has
    /// room (a slow link keeps the rest in the outbox, not in its write buffer).
    fn feed(&mut self, link: &mut Link) {
        while link.can_take_request() {
            let Some(message) = self.outbox.next_unsent() else {
                return;
            };
            if !self.send_queued(link, message) {
                return;
            }
        }
    }

    /// Sends an outbox message on the current link; `false` if the session takes no
    /// more (it is closing: the next one sends it).
    fn send_queued(&mut self, link: &mut Link, message: Message) -> bool {
        let id = message.id.clone();
        match link.request(Op::Send(message)) {
            Ok(req) => {
                self.outbox.sent(&id, req);
                self.waiting.insert(req, Waiter::Outbox(id));
                true
            }
            // Over the limits the gateway announced since it was queued: it can never go.
            Err(e @ ClientError::InvalidArgument(_)) => {
                tracing::warn!(error = %e, "a queued message cannot be sent; dropped");
                self.settle(&id, Err(e));
                true
            }
            Err(_) => false,
        }
    }

    /// The gateway answered an outbox message (or it cannot be sent): it leaves the
    /// outbox, and its callers, or else the application's event queue, hear of it.
    fn settle(&mut self, id: &[u8], result: Result<ReceiptStatus, ClientError>) {
        let Some(entry) = self.outbox.remove(id) else {
            return;
        };
        if let Some(state) = &self.state
            && let Err(e) = state::lock(state).remove_outgoing(id)
        {
            // It will be sent again by a later process; the gateway answers the repeat.
            tracing::warn!(error = %e, "cannot forget an answered message");
        }
        let mut heard = false;
        for caller in self.senders.remove(id).unwrap_or_default() {
            heard |= caller.send(result.clone().map(Answer::Receipt)).is_ok();
        }
        if !heard {
            let status = match result {
                Ok(status) => status,
                Err(ClientError::Failed { code, .. }) => ReceiptStatus::Failed(ErrorCode(code)),
                Err(ClientError::Refused { .. }) => ReceiptStatus::Failed(ErrorCode::REFUSED),
                Err(_) => ReceiptStatus::Failed(ErrorCode::TOO_LARGE),
            };
            let outcome = SendOutcome {
                id: id.to_vec(),
                to: entry.message.to,
                status,
            };
            self.emit(Event::Sent(outcome));
        }
    }

    /// Publishes the last accepted presence again on a fresh session (the gateway marked
    /// it CLOSED when the old one ended).
    fn restore_presence(&mut self, link: &mut Link) {
        let Some(presence) = self.published.clone() else {
            return;
        };
        match link.request(Op::Publish(presence)) {
            Ok(req) => {
                self.waiting.insert(req, Waiter::Restore);
            }
            Err(e) => tracing::warn!(error = %e, "cannot restore presence"),
        }
    }

    /// Starts the goodbye: what the application has released is acknowledged first.
    fn leave(&mut self, link: &mut Link, done: Option<oneshot::Sender<()>>) {
        self.closing = true;
        self.done = done;
        if let Some(upto) = self.latest_consumed() {
            link.session.ack(upto);
        }
        link.session.close(Instant::now());
        link.flush();
    }

    /// Hands the session's events to their callers and the application.
    fn dispatch(&mut self, link: &mut Link) {
        while let Some(event) = link.session.poll_event() {
            match event {
                SessionEvent::Opened(admitted) => {
                    tracing::debug!(user = %admitted.user(), frame_max = admitted.frame_max(), "session opened");
                }
                SessionEvent::Reply { req, reply } => match self.waiting.remove(&req) {
                    Some(Waiter::Outbox(id)) => self.message_answered(&id, reply),
                    Some(waiter) => self.answered(waiter, answer(reply)),
                    None => {}
                },
                SessionEvent::Notify(doc) => self.emit(Event::Presence(doc)),
                SessionEvent::Watched(watcher) => self.emit(Event::Watched { watcher }),
                SessionEvent::Asked(watcher) => self.emit(Event::Asked { watcher }),
                SessionEvent::Subscription { target, state } => {
                    self.emit(Event::SubscriptionChanged { target, state });
                }
                SessionEvent::PresenceChanged(entry) => self.emit(Event::Presence(entry.doc)),
                SessionEvent::SubscriptionEnded(entry) => {
                    let presentity = entry.doc.presentity;
                    self.emit(Event::SubscriptionEnded { presentity });
                }
                SessionEvent::Message { seq, message } => {
                    self.emit(Event::Message { seq, message });
                }
                SessionEvent::Receipt { seq, receipt } => {
                    self.emit(Event::Receipt { seq, receipt });
                }
                SessionEvent::Closed(reason) => tracing::debug!(%reason, "session closed"),
            }
        }
    }

    fn message_answered(&mut self, id: &[u8], reply: Reply) {
        match reply {
            Reply::Receipt(status) => self.settle(id, Ok(status)),
            Reply::Failed { code, text } => self.settle(id, Err(failed(code, text))),
            // Refused for now: the caller hears why and when to send it again.
            Reply::Limited { retry_after } => {
                self.settle(id, Err(ClientError::RateLimited { retry_after }));
            }
            // Unanswered: it goes again on the next session; its callers keep waiting.
            Reply::TimedOut
            | Reply::Lost
            | Reply::Done
            | Reply::Presence(_)
            | Reply::Unchanged
            | Reply::Versioned { .. }
            | Reply::Watchers { .. }
            | Reply::Pending
            | Reply::Rules(_)
            | Reply::Subscriptions(_)
            | Reply::Items { .. } => {
                self.outbox.unanswered(id);
            }
        }
    }

    /// Attempts new sessions after backoff delays. `None` when the client closed or the
    /// failure is final (then `Disconnected` was emitted).
    async fn reconnect(&mut self, backoff: &mut Backoff) -> Option<Link> {
        loop {
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::debug!(?delay, "next connection attempt");
            match self.offline(tokio::time::sleep(delay), true).await {
                Offline::Done(()) => {}
                Offline::NetworkChanged => {
                    tracing::info!("the network changed; trying at once");
                    backoff.reset();
                }
                Offline::Stopped => return None,
            }
            let target = Arc::clone(&self.target);
            let opening = self.opening();
            let attempt = async move { Link::establish(&target, &opening).await };
            match self.offline(attempt, false).await {
                Offline::Done(Ok(link)) => return Some(link),
                Offline::Done(Err(e)) if e.is_final() => {
                    tracing::warn!(error = %e, "reconnect refused; giving up");
                    let reason = e.to_string();
                    self.emit(Event::Connection(ConnectionState::Disconnected { reason }));
                    return None;
                }
                Offline::Done(Err(e)) => tracing::info!(error = %e, "reconnect failed"),
                Offline::NetworkChanged => {}
                Offline::Stopped => return None,
            }
        }
    }

    /// What the next session opens with.
    fn opening(&self) -> Opening {
        Opening {
            device: self.device.clone(),
            consumed: self.latest_consumed(),
            frame_max: self.frame_max.unwrap_or(DEFAULT_FRAME_MAX),
            outbox: self.outbox.messages(),
            mode: self.mode,
            roster: Arc::clone(&self.roster),
        }
    }

    /// Schedules the write of the roster's changes, if there are any and none is due.
    fn note_roster(&mut self) {
        if self.state.is_none() || self.roster_save_at.is_some() {
            return;
        }
        if roster::lock(&self.roster).generation() != self.roster_saved {
            self.roster_save_at = Some(Instant::now() + ROSTER_SAVE_DELAY);
        }
    }

    /// Writes the roster to the state directory if it changed since it was last written.
    /// A failure is logged: the cache kept there stays an older, still valid, one.
    fn save_roster(&mut self) {
        self.roster_save_at = None;
        let Some(state) = &self.state else {
            return;
        };
        let (generation, entries) = {
            let roster = roster::lock(&self.roster);
            if roster.generation() == self.roster_saved {
                return;
            }
            let entries: Vec<_> = roster.entries().cloned().collect();
            (roster.generation(), entries)
        };
        match state::lock(state).set_roster(&entries) {
            Ok(()) => {
                tracing::debug!(presentities = entries.len(), "presence cache written");
                self.roster_saved = generation;
            }
            Err(e) => tracing::warn!(error = %e, "cannot keep the presence cache"),
        }
    }

    /// Runs `work` while the link is down, answering commands meanwhile.
    ///
    /// OFFLINE QUEUE: messages go into the outbox (and the state directory) and their
    /// callers wait, up to their own deadline, for the receipt that the next session
    /// brings; the next session sends them right after `Open`, before anything else.
    /// Other requests are refused with `NotConnected`: presence and subscriptions are
    /// state, not history, and the application is told `Reconnecting`. A network change
    /// ends `work` early when `interruptible` (a backoff wait).
    async fn offline<F: Future>(&mut self, work: F, interruptible: bool) -> Offline<F::Output> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Offline::Done(out),
                command = self.commands.recv() => match command {
                    None => {
                        self.closing = true;
                        return Offline::Stopped;
                    }
                    Some(Command::Close { done }) => {
                        self.closing = true;
                        self.done = Some(done);
                        return Offline::Stopped;
                    }
                    Some(Command::NetworkChanged) if interruptible => {
                        return Offline::NetworkChanged;
                    }
                    Some(Command::NetworkChanged) => {}
                    Some(Command::SetMode(mode)) => self.mode = mode,
                    Some(Command::Request { op: Op::Send(message), reply }) => {
                        self.queue_message(None, message, reply);
                    }
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::NotConnected));
                    }
                },
            }
        }
    }

    fn answered(&mut self, waiter: Waiter, answer: Result<Answer, ClientError>) {
        match waiter {
            Waiter::Caller(reply) => {
                let _ = reply.send(answer);
            }
            Waiter::Publish(reply, presence) => {
                if answer.is_ok() {
                    self.remember_presence(presence);
                }
                let _ = reply.send(answer);
            }
            Waiter::Restore => match answer {
                Ok(_) => tracing::debug!("presence restored"),
                Err(e) => tracing::warn!(error = %e, "cannot restore presence"),
            },
            Waiter::Outbox(id) => {
                // Routed to `message_answered` by `dispatch`; an answer here is a receipt.
                if let Ok(Answer::Receipt(status)) = answer {
                    self.settle(&id, Ok(status));
                }
            }
        }
    }

    fn remember_presence(&mut self, presence: Presence) {
        if let Some(state) = &self.state
            && let Err(e) = state::lock(state).set_presence(Some(&presence))
        {
            tracing::warn!(error = %e, "cannot keep the presence for a later process");
        }
        self.published = Some(presence);
    }

    fn forget_presence(&mut self) {
        self.published = None;
        if let Some(state) = &self.state
            && let Err(e) = state::lock(state).set_presence(None)
        {
            tracing::warn!(error = %e, "cannot forget the kept presence");
        }
    }

    fn latest_consumed(&self) -> Option<u64> {
        *self.consumed.borrow()
    }

    fn emit(&self, event: Event) {
        // The application may have dropped its side; nothing to do then.
        let _ = self.events.send(event);
    }
}

fn answer(reply: Reply) -> Result<Answer, ClientError> {
    match reply {
        Reply::Done => Ok(Answer::Done),
        Reply::Presence(doc) => Ok(Answer::Presence(doc)),
        Reply::Receipt(status) => Ok(Answer::Receipt(status)),
        Reply::Unchanged => Ok(Answer::Unchanged),
        Reply::Versioned { version, doc } => Ok(Answer::Versioned(version, doc)),
        Reply::Watchers {
            subscribers,
            fetchers,
        } => Ok(Answer::Watchers(WatcherInfo {
            subscribers,
            fetchers,
        })),
        Reply::Pending => Ok(Answer::Pending),
        Reply::Rules(rules) => Ok(Answer::Rules(rules)),
        Reply::Subscriptions(list) => Ok(Answer::Subscriptions(list)),
        Reply::Items { items, more } => Ok(Answer::Items(InboxPage { items, more })),
        Reply::Failed { code, text } => Err(failed(code, text)),
        Reply::Limited { retry_after } => Err(ClientError::RateLimited { retry_after }),
        Reply::TimedOut => Err(ClientError::Timeout),
        Reply::Lost => Err(ClientError::closed(
            "the session ended before the answer came",
        )),
    }
}

/// A request the gateway refused: `refused` (the rules' verdict) has its own error.
fn failed(code: ErrorCode, text: String) -> ClientError {
    if code == ErrorCode::REFUSED {
        ClientError::Refused { text }
    } else {
        ClientError::Failed { code: code.0, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_wire::frame::Item;
    use tern_wire::{InboxItem, LateReceipt, SubState};

    fn fail(code: ErrorCode) -> Reply {
        Reply::Failed {
            code,
            text: "why".into(),
        }
    }

    #[test]
    fn a_refusal_by_the_rules_has_its_own_error() {
        let refused = answer(fail(ErrorCode::REFUSED));
        assert!(
            matches!(&refused, Err(ClientError::Refused { text }) if text == "why"),
            "{refused:?}"
        );
        let unknown = answer(fail(ErrorCode::UNKNOWN_USER));
        assert_eq!(
            unknown.err(),
            Some(ClientError::Failed {
                code: ErrorCode::UNKNOWN_USER.0,
                text: "why".into()
            })
        );
        let retry_after = Duration::from_secs(2);
        assert_eq!(
            answer(Reply::Limited { retry_after }).err(),
            Some(ClientError::RateLimited { retry_after })
        );
    }

    #[test]
    fn access_answers_become_their_values() {
        assert!(matches!(answer(Reply::Pending), Ok(Answer::Pending)));
        assert!(matches!(
            answer(Reply::Rules(Rules::default())),
            Ok(Answer::Rules(rules)) if rules == Rules::default()
        ));
        let list = vec![SubInfo {
            who: "bob@example.com".into(),
            state: SubState::Active,
        }];
        assert!(matches!(
            answer(Reply::Subscriptions(list.clone())),
            Ok(Answer::Subscriptions(got)) if got == list
        ));
        let items = vec![Item {
            seq: 4,
            item: InboxItem::Receipt(LateReceipt {
                id: vec![1; 16],
                to: "bob@example.com".into(),
                status: ReceiptStatus::Delivered,
            }),
        }];
        let page = InboxPage {
            items: items.clone(),
            more: false,
        };
        assert!(matches!(
            answer(Reply::Items { items, more: false }),
            Ok(Answer::Items(got)) if got == page
        ));
    }
}
