//! The hub thread: the one place where the core [`Hub`] and the SQLite connection live.
//!
//! SQLite calls block, so the hub runs on a dedicated OS thread, fed [`Event`]s by the
//! connection tasks over a bounded channel. Each turn of its loop
//! 1. waits for the first event or the hub's next deadline,
//! 2. takes up to [`BATCH_MAX`] more events that are already queued,
//! 3. feeds them to the hub inside one transaction, each in its own savepoint (an event
//!    whose hub call fails is rolled back alone),
//! 4. commits: one fsync for the whole batch,
//! 5. and only then hands the hub's actions to the connections' outbound queues, so no
//!    answer leaves the gateway before the data it reports is on disk.
//!
//! Handing a frame over never waits for the connection: it goes into the connection's
//! [`OutQueue`] (behind an [`Outlet`]), where presence notifications are coalesced and
//! other frames are bounded. A connection whose queue overflows is closed `too_slow` on
//! the spot. A connection told to close that is still there [`FORCE_CLOSE_MS`] later
//! (its writer is stuck behind a peer that does not read) is closed without its `Close`
//! frame.
//!
//! If a batch cannot be committed, or the hub panics, the hub's memory may no longer
//! match the database: every connection is closed `internal`, and a fresh hub is loaded
//! from the database (clients reconnect and resume from their inbox position). Only a
//! database that cannot even be read stops the thread, and with it the gateway.
//!
//! This module owns the batching and dispatch rules; it decides nothing about the
//! protocol (that is the hub's) and touches no socket (it only hands frames to queues,
//! and closes connections).

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quinn::VarInt;
use tern_gateway_core::{Action, ConnId, Hub, HubConfig, Millis};
use tern_wire::codec::CodecError;
use tern_wire::{ErrorCode, Up};

use super::outbound::{Bounds, OutQueue, Outbound, Pushed, Stats};
use super::{RuntimeError, unix_ms};
use crate::sqlite::SqliteStore;
use crate::xmpp::FedEvent;
use tern_gateway_core::federation::Outbound as Stanza;

/// Most events fed to the hub in one transaction.
pub(crate) const BATCH_MAX: usize = 256;
/// Outbox stanzas read at a time when the bridge connects.
const OUTBOX_PAGE: usize = 512;
/// How long a connection may take to deliver its `Close` frame before it is cut.
pub(crate) const FORCE_CLOSE_MS: Millis = 5_000;

/// What the connection tasks tell the hub thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection opened its session stream.
    Connect {
        /// The connection.
        conn: ConnId,
        /// How to reach it.
        peer: Peer,
        /// Whether its handshake was already confirmed; if not, what it sends may be
        /// replayed 0-RTT data until [`Event::Confirmed`].
        confirmed: bool,
    },
    /// The handshake of a connection that connected unconfirmed is now confirmed.
    Confirmed { conn: ConnId },
    /// A decoded frame.
    Frame { conn: ConnId, frame: Up },
    /// Bytes that did not decode; the reader has stopped.
    BadFrame { conn: ConnId, err: CodecError },
    /// The connection is gone.
    Disconnect { conn: ConnId },
    /// From the XMPP bridge.
    Federation(FedEvent),
    /// Close everything, commit, and stop.
    Shutdown,
}

/// A connection's [`OutQueue`] shared between those who push (the hub thread, and the
/// connection's reader for its own close) and the writer task, which takes. The lock is
/// held only for one queue operation, never across an await or a write, so pushing
/// never waits for the peer.
#[derive(Debug)]
pub(crate) struct Outlet {
    queue: Mutex<OutQueue>,
    /// Woken when there is something to take (or the queue overflowed).
    ready: tokio::sync::Notify,
}

impl Outlet {
    /// An empty outlet with these bounds.
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            queue: Mutex::new(OutQueue::new(bounds)),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues an item and wakes the writer; never blocks on the peer.
    pub(crate) fn push(&self, out: Outbound) -> Pushed {
        let pushed = self.lock().push(out);
        match pushed {
            // A refreshed Notify sits in a slot the writer was already woken for.
            Pushed::Coalesced | Pushed::Refused => {}
            Pushed::Queued | Pushed::Overflow(_) => self.ready.notify_one(),
        }
        pushed
    }

    /// The next item to write with the queue's counters after taking it; waits while
    /// the queue is empty. `None` once the queue has overflowed.
    pub(crate) async fn next(&self) -> Option<(Outbound, Stats)> {
        loop {
            {
                let mut queue = self.lock();
                if let Some(out) = queue.pop() {
                    return Some((out, queue.stats()));
                }
                if queue.overflowed() {
                    return None;
                }
            }
            // `notify_one` leaves a permit when nobody waits, so a push between the
            // check above and this wait is not missed.
            self.ready.notified().await;
        }
    }

    /// The queue's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats()
    }

    fn lock(&self) -> MutexGuard<'_, OutQueue> {
        // The queue's operations do not panic halfway; a poisoned lock holds a sound queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub thread's handle on one connection.
#[derive(Debug)]
pub(crate) struct Peer {
    out: Arc<Outlet>,
    quic: quinn::Connection,
    /// Set once a close was requested: later actions for the connection are dropped.
    closing: Option<(ErrorCode, String)>,
    /// Set after a reset: the connection belongs to a hub that no longer exists.
    orphan: bool,
}

impl Peer {
    pub(crate) fn new(out: Arc<Outlet>, quic: quinn::Connection) -> Self {
        Self {
            out,
            quic,
            closing: None,
            orphan: false,
        }
    }
}

/// Closes a QUIC connection with an error code from the registry.
pub(crate) fn close_quic(quic: &quinn::Connection, code: ErrorCode, text: &str) {
    quic.close(VarInt::from_u32(u32::from(code.0)), text.as_bytes());
}

/// The state owned by the hub thread.
pub(crate) struct HubThread {
    hub: Hub,
    config: HubConfig,
    store: SqliteStore,
    peers: HashMap<ConnId, Peer>,
    /// Connections told to close, by the time they are cut if still there.
    force_close: BTreeSet<(Millis, ConnId)>,
    last_now: Millis,
    /// The XMPP bridge's connection, while it is up.
    bridge: Option<tokio::sync::mpsc::UnboundedSender<(u64, Stanza)>>,
}

impl HubThread {
    /// A hub thread around a loaded hub and its database.
    pub(crate) fn new(hub: Hub, store: SqliteStore) -> Self {
        Self {
            config: hub.config().clone(),
            hub,
            store,
            peers: HashMap::new(),
            force_close: BTreeSet::new(),
            last_now: 0,
            bridge: None,
        }
    }

    /// Runs until [`Event::Shutdown`] or until every sender is gone.
    pub(crate) fn run(mut self, events: &flume::Receiver<Event>) -> Result<(), RuntimeError> {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        loop {
            match self.next_wake() {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(unix_ms()));
                    match events.recv_timeout(wait) {
                        Ok(event) => batch.push(event),
                        Err(flume::RecvTimeoutError::Timeout) => {}
                        Err(flume::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match events.recv() {
                    Ok(event) => batch.push(event),
                    Err(flume::RecvError::Disconnected) => break,
                },
            }
            batch.extend(events.try_iter().take(BATCH_MAX - batch.len()));
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.turn(&mut batch)));
            batch.clear();
            let now = self.now();
            self.cut_stuck(now);
            match outcome {
                Ok(Ok(Turn::Continue)) => {}
                Ok(Ok(Turn::Stop)) => return Ok(()),
                Ok(Err(err)) => {
                    tracing::error!(%err, "a batch failed; restarting the core");
                    self.reset()?;
                }
                Err(_) => {
                    tracing::error!("the core panicked; restarting it");
                    self.reset()?;
                }
            }
        }
        Ok(())
    }

    /// Wall-clock Unix milliseconds, never going backwards.
    fn now(&mut self) -> Millis {
        self.last_now = self.last_now.max(unix_ms());
        self.last_now
    }

    fn next_wake(&self) -> Option<Millis> {
        let force = self.force_close.first().map(|(at, _)| *at);
        match (self.hub.poll_timeout(), force) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One batch: feed, commit, dispatch.
    fn turn(&mut self, batch: &mut Vec<Event>) -> Result<Turn, RuntimeError> {
        let now = self.now();
        // New connections first (they need no storage), so that a batch that fails
        // still knows every connection it must close.
        let mut rest = Vec::with_capacity(batch.len());
        for event in batch.drain(..) {
            match event {
                Event::Connect {
                    conn,
                    peer,
                    confirmed,
                } => {
                    // Anonymous peers' rate limits count per source address.
                    let source = peer.quic.remote_address().ip().to_string();
                    self.hub.set_source(conn, source);
                    self.peers.insert(conn, peer);
                    if confirmed {
                        self.hub.handle_connect(now, conn);
                    } else {
                        self.hub.handle_early_connect(now, conn);
                    }
                }
                other => rest.push(other),
            }
        }
        let mut shutdown = false;
        let mut tx = self.store.begin()?;
        for event in rest {
            let (conn, result) = match event {
                Event::Connect { .. } => continue,
                Event::Frame { conn, frame } => {
                    if self.peers.get(&conn).is_none_or(|p| p.orphan) {
                        continue;
                    }
                    let hub = &mut self.hub;
                    (conn, tx.event(|s| hub.handle_frame(now, conn, frame, s)))
                }
                Event::Confirmed { conn } => {
                    if self.peers.get(&conn).is_none_or(|p| p.orphan) {
                        continue;
                    }
                    let hub = &mut self.hub;
                    (conn, tx.event(|s| hub.handle_confirmed(now, conn, s)))
                }
                Event::BadFrame { conn, err } => {
                    if self.peers.get(&conn).is_some_and(|p| !p.orphan) {
                        self.hub.handle_bad_frame(now, conn, err);
                    }
                    continue;
                }
                Event::Disconnect { conn } => {
                    let Some(peer) = self.peers.remove(&conn) else {
                        continue;
                    };
                    if peer.orphan {
                        continue;
                    }
                    let hub = &mut self.hub;
                    (conn, tx.event(|s| hub.handle_disconnect(now, conn, s)))
                }
                Event::Shutdown => {
                    shutdown = true;
                    continue;
                }
                Event::Federation(FedEvent::Inbound(inbound)) => {
                    let hub = &mut self.hub;
                    let result = tx.event(|s| hub.handle_federated(now, inbound, s));
                    if let Err(err) = result {
                        tracing::warn!(%err, "federated stanza rolled back");
                    }
                    continue;
                }
                Event::Federation(FedEvent::Written { upto }) => {
                    if let Err(err) = tx.event(|s| s.fed_remove(upto)) {
                        tracing::warn!(%err, "federation outbox not trimmed");
                    }
                    continue;
                }
                Event::Federation(FedEvent::Up { out }) => {
                    self.bridge = bridge_up(out, &mut tx);
                    let hub = &mut self.hub;
                    if let Err(err) = tx.event(|s| hub.handle_federation_up(now, s)) {
                        tracing::warn!(%err, "federation probes rolled back");
                    }
                    continue;
                }
                Event::Federation(FedEvent::Down) => {
                    self.bridge = None;
                    continue;
                }
            };
            if let Err(err) = result {
                tracing::warn!(conn, %err, "event rolled back");
            }
        }
        if self.hub.poll_timeout().is_some_and(|at| at <= now) {
            let hub = &mut self.hub;
            if let Err(err) = tx.event(|s| hub.handle_timeout(now, s)) {
                tracing::warn!(%err, "timeouts rolled back");
            }
        }
        if shutdown {
            // Every session departs now, durably (presence goes CLOSED).
            let live: Vec<ConnId> = self
                .peers
                .iter()
                .filter(|(_, p)| !p.orphan)
                .map(|(c, _)| *c)
                .collect();
            for conn in live {
                let hub = &mut self.hub;
                if let Err(err) = tx.event(|s| hub.handle_disconnect(now, conn, s)) {
                    tracing::warn!(conn, %err, "departure at shutdown rolled back");
                }
            }
        }
        tx.commit()?;
        if shutdown {
            while self.hub.poll_action().is_some() {}
            for peer in self.peers.values_mut() {
                request_close(peer, ErrorCode::SHUTDOWN, "the gateway is shutting down");
            }
            return Ok(Turn::Stop);
        }
        self.dispatch(now);
        Ok(Turn::Continue)
    }

    /// Hands the hub's actions to the connections.
    fn dispatch(&mut self, now: Millis) {
        while let Some(action) = self.hub.poll_action() {
            match action {
                Action::Send { conn, frame } => {
                    let Some(peer) = self.peers.get_mut(&conn) else {
                        continue;
                    };
                    if peer.closing.is_some() {
                        continue;
                    }
                    match peer.out.push(Outbound::Frame(frame)) {
                        // Refused: the connection queued its own close; it ends by itself.
                        Pushed::Queued | Pushed::Coalesced | Pushed::Refused => {}
                        Pushed::Overflow(stats) => {
                            tracing::warn!(
                                conn,
                                frames = stats.frames,
                                notifies = stats.notifies,
                                bytes = stats.bytes,
                                coalesced = stats.coalesced,
                                "outbound queue full: closing too_slow"
                            );
                            let text = "the client does not read fast enough";
                            close_quic(&peer.quic, ErrorCode::TOO_SLOW, text);
                            peer.closing = Some((ErrorCode::TOO_SLOW, text.into()));
                        }
                    }
                }
                Action::Federate { seq, stanza } => {
                    // Without a bridge it waits in the outbox for the next connection.
                    if let Some(bridge) = &self.bridge
                        && bridge.send((seq, stanza)).is_err()
                    {
                        self.bridge = None;
                    }
                }
                Action::Close { conn, code, text } => {
                    let Some(peer) = self.peers.get_mut(&conn) else {
                        continue;
                    };
                    if peer.closing.is_none() {
                        tracing::debug!(conn, %code, "closing");
                        request_close(peer, code, &text);
                        self.force_close
                            .insert((now.saturating_add(FORCE_CLOSE_MS), conn));
                    }
                }
            }
        }
    }

    /// Cuts connections whose `Close` frame did not get out in time.
    fn cut_stuck(&mut self, now: Millis) {
        while let Some(&(at, conn)) = self.force_close.first() {
            if at > now {
                break;
            }
            self.force_close.pop_first();
            if let Some(peer) = self.peers.get(&conn)
                && let Some((code, text)) = &peer.closing
            {
                tracing::debug!(conn, "close frame not delivered in time: cutting");
                close_quic(&peer.quic, *code, text);
            }
        }
    }

    /// Closes every connection and starts over with a fresh hub loaded from the
    /// database. Fails only if the database cannot be read.
    fn reset(&mut self) -> Result<(), RuntimeError> {
        // A connection already gone may have lost its disconnect event with the batch.
        self.peers
            .retain(|_, peer| peer.quic.close_reason().is_none());
        let deadline = self.now().saturating_add(FORCE_CLOSE_MS);
        self.force_close.clear();
        for (conn, peer) in &mut self.peers {
            request_close(peer, ErrorCode::INTERNAL, "the gateway failed internally");
            peer.orphan = true;
            self.force_close.insert((deadline, *conn));
        }
        let mut hub = Hub::new(self.config.clone());
        let now = self.now();
        self.store.write(|s| hub.load(now, s))?;
        self.hub = hub;
        Ok(())
    }
}

/// What a turn asks of the loop.
enum Turn {
    Continue,
    Stop,
}

/// Asks a connection's writer to close it, after what is queued. A close always finds
/// room; if the connection queued its own close first, that one is written instead.
/// Either way [`FORCE_CLOSE_MS`] (or the connection's own linger) cuts a writer that is
/// stuck.
fn request_close(peer: &mut Peer, code: ErrorCode, text: &str) {
    if peer.closing.is_some() {
        return;
    }
    let close = Outbound::Close {
        code,
        text: text.to_owned(),
    };
    if let Pushed::Overflow(_) = peer.out.push(close) {
        close_quic(&peer.quic, code, text);
    }
    peer.closing = Some((code, text.to_owned()));
}

/// The bridge connected: everything in the outbox goes to it first, in order (what
/// this turn adds is dispatched after the commit, behind it).
fn bridge_up(
    out: tokio::sync::mpsc::UnboundedSender<(u64, Stanza)>,
    tx: &mut crate::sqlite::Batch<'_>,
) -> Option<tokio::sync::mpsc::UnboundedSender<(u64, Stanza)>> {
    let mut after = 0;
    loop {
        let waiting = match tx.event(|s| s.fed_after(after, OUTBOX_PAGE)) {
            Ok(waiting) => waiting,
            Err(err) => {
                tracing::warn!(%err, "federation outbox unreadable");
                return None;
            }
        };
        let Some((last, _)) = waiting.last() else {
            break;
        };
        after = *last;
        for item in waiting {
            if out.send(item).is_err() {
                return None;
            }
        }
    }
    tracing::info!(replayed_upto = after, "XMPP bridge up");
    Some(out)
}
