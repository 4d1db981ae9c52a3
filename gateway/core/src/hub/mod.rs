//! The [`Hub`]: every session of the gateway and the services behind them, as one
//! state machine.
//!
//! ## How to drive it
//! The runtime calls, for each connection, [`Hub::handle_connect`] once, then
//! [`Hub::handle_frame`] for every decoded frame (or [`Hub::handle_bad_frame`] when the
//! bytes did not decode), and [`Hub::handle_disconnect`] when the connection is gone for
//! any reason (goodbye, idle timeout, error). It calls [`Hub::handle_timeout`] when the
//! time returned by [`Hub::poll_timeout`] has come. After each call it drains
//! [`Hub::poll_action`] and carries the actions out, in order.
//!
//! Calls that take a [`Store`] get the runtime's open transaction. A call that returns
//! `Err` met a storage failure: the runtime rolls back that call's writes; the hub has
//! already answered the request `internal` and kept its memory consistent with the
//! store (it writes the store first and changes memory after). Actions must not leave
//! the gateway before the transaction that produced them commits.
//!
//! Time is Unix milliseconds ([`Millis`]), passed in; the hub never reads a clock.

mod admin;
mod cache;
mod federate;
mod inbox;
mod limits;
mod presence;
mod roster;
mod rules;
mod session;
mod sync;
mod watchinfo;

use std::collections::{BTreeSet, HashMap, VecDeque};

use tern_wire::frame::ReqId;
use tern_wire::{Down, ErrorCode};

use crate::config::HubConfig;
use crate::store::{Store, StoreError};
use cache::Caches;
use limits::Limiter;
use roster::Rosters;
use watchinfo::FetchLog;

pub use cache::CacheStats;
pub use session::{ConnState, Early, EarlyAnswer};
pub use sync::SyncState;

/// Identifies one client connection; chosen by the runtime, never reused while live.
pub type ConnId = u64;
/// Unix time in milliseconds.
pub type Millis = u64;

/// How often idle principals' rate buckets are forgotten, ms.
const LIMITER_SHRINK_MS: Millis = 60_000;

/// What the hub asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this frame on the connection's session stream.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Down,
    },
    /// Send `Down::Close { code, text }` on the session stream, then close the
    /// connection with `code` as the QUIC application error code.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// Send this stanza to the XMPP network (docs/federation.md). It is already in the
    /// durable federation outbox under `seq`: the bridge removes it (`fed_remove`) once
    /// the XMPP server has it, and sends again whatever is left after a reconnection.
    Federate {
        /// Its number in the outbox.
        seq: u64,
        /// The stanza.
        stanza: crate::federation::Outbound,
    },
}

/// A send request waiting for the online recipient's acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    conn: ConnId,
    req: ReqId,
    deadline: Millis,
}

/// A device session whose link was lost, kept until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parked {
    until: Millis,
}

/// The gateway's state machine. See the module documentation for the calling order.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    conns: HashMap<ConnId, ConnState>,
    /// Principal → its live sessions.
    online: HashMap<String, Vec<ConnId>>,
    /// (principal, device) → the connection of its live device session.
    live: HashMap<(String, Vec<u8>), ConnId>,
    /// Principal → device → its parked session.
    parked: HashMap<String, HashMap<Vec<u8>, Parked>>,
    /// When parked sessions expire, earliest first.
    expiries: BTreeSet<(Millis, String, Vec<u8>)>,
    /// The time of the call in progress.
    now: Millis,
    /// Every subscription, both ways, with slots.
    rosters: Rosters,
    /// Hot documents, earlier versions and deltas.
    caches: Caches,
    /// When synchronised sessions' pending presence is due, earliest first.
    flushes: BTreeSet<(Millis, ConnId)>,
    /// When asleep presentities without a session go out of contact, earliest first.
    sleepers: BTreeSet<(Millis, String)>,
    /// Rate limits per principal.
    limiter: Limiter,
    /// When idle principals' rate buckets were last forgotten.
    limiter_shrunk: Millis,
    /// Recent fetchers per presentity, for watcher information.
    fetches: FetchLog,
    /// Every principal's rules that has any.
    rules: HashMap<String, rules::Owned>,
    /// When a time window of some principal's rules next opens or closes, earliest
    /// first.
    flips: BTreeSet<(Millis, String)>,
    /// Connection → its source address (opaque), for limits on anonymous peers.
    sources: HashMap<ConnId, String>,
    /// (inbox owner, seq) → the send request waiting for its delivery.
    pending: HashMap<(String, u64), Pending>,
    /// Deadlines of `pending`, earliest first.
    deadlines: BTreeSet<(Millis, String, u64)>,
    /// Actions of the call in progress; published to `actions` when it succeeds.
    staged: Vec<Action>,
    actions: VecDeque<Action>,
}

impl Hub {
    /// A hub with no sessions. Call [`Self::load`] before the first connection.
    pub fn new(config: HubConfig) -> Self {
        Self {
            conns: HashMap::new(),
            online: HashMap::new(),
            live: HashMap::new(),
            parked: HashMap::new(),
            expiries: BTreeSet::new(),
            now: 0,
            rosters: Rosters::default(),
            caches: Caches::new(config.caches),
            flushes: BTreeSet::new(),
            sleepers: BTreeSet::new(),
            limiter: Limiter::new(&config.domains),
            limiter_shrunk: 0,
            fetches: FetchLog::default(),
            rules: HashMap::new(),
            flips: BTreeSet::new(),
            sources: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            staged: Vec::new(),
            actions: VecDeque::new(),
            config,
        }
    }

    /// Starts the hub on durable state: loads the subscriptions into its indexes and,
    /// since no session is open at start, closes every presentity still stored OPEN (the
    /// gateway stopped without their departures: a crash, a kill, a power cut).
    pub fn load(&mut self, now: Millis, store: &mut dyn Store) -> Result<(), StoreError> {
        self.now = now;
        for sub in store.subscriptions()? {
            if crate::access::is_anonymous(&sub.watcher) {
                // An anonymous peer's subscriptions end with its session; these
                // outlived a gateway that stopped without ending it.
                store.remove_subscription(&sub.watcher, &sub.target)?;
                continue;
            }
            self.rosters.add(&sub.watcher, &sub.target, sub.slot);
        }
        self.load_rules(store)?;
        for stored in store.presences()? {
            self.mark_out_of_contact(now, &stored.doc.presentity, store)?;
        }
        self.staged.clear();
        Ok(())
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Where a new connection comes from (an address, opaque to the hub): anonymous
    /// peers' rate limits count per source. Call it before the connect call.
    pub fn set_source(&mut self, conn: ConnId, source: String) {
        self.sources.insert(conn, source);
    }

    /// A new connection: its first frame must be `Hello`.
    pub fn handle_connect(&mut self, now: Millis, conn: ConnId) {
        self.now = now;
        self.conns.insert(conn, ConnState::AwaitHello);
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let receipts = self.deadlines.first().map(|(at, _, _)| *at);
        let parked = self.expiries.first().map(|(at, _, _)| *at);
        let flush = self.flushes.first().map(|(at, _)| *at);
        let sleeper = self.sleepers.first().map(|(at, _)| *at);
        let flip = self.flips.first().map(|(at, _)| *at);
        [receipts, parked, flush, sleeper, flip]
            .into_iter()
            .flatten()
            .min()
    }

    /// The deadline from [`Self::poll_timeout`] has come: send requests still waiting
    /// are answered `Stored`, parked sessions past their window end (their principals
    /// may go out of contact), pending presence that is due is flushed, and asleep
    /// presentities past their wake time go out of contact.
    pub fn handle_timeout(&mut self, now: Millis, store: &mut dyn Store) -> Result<(), StoreError> {
        self.now = now;
        if now.saturating_sub(self.limiter_shrunk) >= LIMITER_SHRINK_MS {
            self.limiter.shrink();
            self.limiter_shrunk = now;
        }
        self.answer_overdue_sends(now);
        let result = self
            .expire_parked(now, store)
            .and_then(|()| self.wake_overdue_sleepers(now, store))
            .and_then(|()| self.flip_due(store))
            .and_then(|()| self.flush_due(store));
        if result.is_err() {
            self.staged.clear();
        }
        self.publish_staged();
        result
    }

    /// Device sessions of a principal that are parked (link lost, window open).
    pub fn parked_sessions_of(&self, principal: &str) -> usize {
        self.parked.get(principal).map_or(0, HashMap::len)
    }

    /// Live sessions of a principal.
    pub fn sessions_of(&self, principal: &str) -> usize {
        self.online.get(principal).map_or(0, Vec::len)
    }

    /// Live connections, in any state.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The presence caches' counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.caches.stats
    }

    /// Principals subscribed to a presentity.
    pub fn watchers_of(&self, presentity: &str) -> Vec<String> {
        self.rosters
            .watchers(presentity)
            .map(String::from)
            .collect()
    }

    fn emit(&mut self, action: Action) {
        self.staged.push(action);
    }

    fn send(&mut self, conn: ConnId, frame: Down) {
        // Until a connection that may be a replay is answered, what is for it waits.
        if let Some(ConnState::Early(early)) = self.conns.get_mut(&conn)
            && early.answered.is_none()
        {
            early.held.push(frame);
            return;
        }
        self.emit(Action::Send { conn, frame });
    }

    fn fail(&mut self, conn: ConnId, req: ReqId, code: ErrorCode, text: &str) {
        self.send(
            conn,
            Down::Fail {
                req,
                code,
                text: text.into(),
            },
        );
    }

    /// Parses an address a request names; if it is not one, the request is answered
    /// `bad_address`.
    fn address_or_fail(
        &mut self,
        conn: ConnId,
        req: ReqId,
        name: &str,
    ) -> Option<tern_wire::addr::Address> {
        let parsed = tern_wire::addr::Address::parse(name).ok();
        if parsed.is_none() {
            let text = "not a local@domain address";
            self.fail(conn, req, ErrorCode::BAD_ADDRESS, text);
        }
        parsed
    }

    /// Publishes the staged actions of a call that succeeded.
    fn publish_staged(&mut self) {
        self.actions.extend(self.staged.drain(..));
    }
}

#[cfg(test)]
mod tests;
