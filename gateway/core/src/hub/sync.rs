//! Presence synchronisation: what sessions opened with `Open::SYNC` get instead of one
//! `Notify` per change (protocol section "Presence synchronisation").
//!
//! Presence is state, so each such session keeps, per subscription slot, the version of
//! the document the client holds once it has read everything sent (`held`), and the
//! slots whose presentity changed since (`pending`). A flush turns the pending slots into
//! one `Batch`: for each, the changes from the held version to the current one (a delta
//! from the cache, or the document whole), never the versions in between. On a live
//! connection the stream is reliable and ordered, so what was sent is what the client
//! will hold; when the link was lost, the client's `Have` says exactly what it holds and
//! replaces `held`.
//!
//! When to flush is the radio's business: each session has a mode (active, inactive,
//! sleepy) with its own delay ([`crate::config::FlushPolicy`]); an inactive or sleepy
//! batch that has `batch_max` slots goes at once; anything the client sends and every
//! message delivered to it flush pending presence right away (its radio is up anyway);
//! at most `window` batches wait for the client's `Applied`, and later changes coalesce
//! meanwhile.
//!
//! This module owns the per-session synchronisation state, the flush policy and the
//! building of batches. It reads documents through the presence service and the caches;
//! it changes no durable state.

use std::collections::{BTreeSet, HashMap};

use tern_wire::delta::Check;
use tern_wire::frame::ReqId;
use tern_wire::{
    Batch, Change, ClientMode, Decision, Down, ErrorCode, Have, Presence, Slot, Version,
};

use super::session::ConnState;
use super::{ConnId, Hub, Millis};
use crate::access;
use crate::store::{Store, StoreError, Versioned};

/// The synchronisation state of one session; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub(super) mode: ClientMode,
    /// Slot → the version the client holds once it has read everything sent.
    pub(super) held: HashMap<Slot, Version>,
    /// Slots whose presentity changed since it was last sent.
    pub(super) pending: BTreeSet<Slot>,
    /// When the pending slots must go, by the mode; `None` when nothing is pending.
    pub(super) due: Option<Millis>,
    /// Number of the last batch sent on this connection.
    pub(super) sent: u32,
    /// Highest batch number the client acknowledged.
    pub(super) acked: u32,
}

impl SyncState {
    pub(super) fn new(mode: ClientMode) -> Self {
        Self {
            mode,
            held: HashMap::new(),
            pending: BTreeSet::new(),
            due: None,
            sent: 0,
            acked: 0,
        }
    }
}

/// What one slot's entry in a batch does to `held`.
enum Held {
    Set(Version),
    Forget,
}

impl Hub {
    /// Whether the connection is a synchronised session.
    pub(super) fn syncs(&self, conn: ConnId) -> bool {
        matches!(self.conns.get(&conn), Some(ConnState::Active(s)) if s.sync.is_some())
    }

    /// A presentity the principal of `conn` subscribes to in `slot` changed: it goes in
    /// the next batch, which may be due now.
    pub(super) fn mark_pending(
        &mut self,
        conn: ConnId,
        slot: Slot,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some((_, mut sync)) = self.take_sync(conn) else {
            return Ok(());
        };
        sync.pending.insert(slot);
        if sync.due.is_none() {
            let at = self.now.saturating_add(self.flush_delay(sync.mode));
            self.set_due(conn, &mut sync, Some(at));
        }
        let full =
            sync.mode != ClientMode::ACTIVE && sync.pending.len() >= self.config.flush.batch_max;
        self.put_sync(conn, sync);
        if full {
            self.flush(conn, true, store)?;
        }
        Ok(())
    }

    /// Sends the pending slots if they are due (or `now` is true) and the window allows.
    pub(super) fn flush(
        &mut self,
        conn: ConnId,
        now: bool,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some((user, mut sync)) = self.take_sync(conn) else {
            return Ok(());
        };
        let due = now || sync.due.is_some_and(|at| at <= self.now);
        let room = sync.sent.wrapping_sub(sync.acked) < self.config.flush.window;
        let result = if due && room && !sync.pending.is_empty() {
            let slots = std::mem::take(&mut sync.pending);
            self.send_batch(conn, &user, &mut sync, None, slots, store)
        } else {
            Ok(())
        };
        self.put_sync(conn, sync);
        result
    }

    /// The timer of some session's pending slots came.
    pub(super) fn flush_due(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        while let Some(&(at, conn)) = self.flushes.first() {
            if at > self.now {
                break;
            }
            self.flushes.pop_first();
            self.flush(conn, false, store)?;
        }
        Ok(())
    }

    /// `Up::Have`: the client's state vector. Answered with everything that differs from
    /// it, at once, whatever the mode and the window.
    pub(super) fn have(
        &mut self,
        conn: ConnId,
        have: Have,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some((user, mut sync)) = self.take_sync(conn) else {
            let text = "Have needs a session opened with the SYNC flag";
            self.fail(conn, have.req, ErrorCode::PROTOCOL, text);
            return Ok(());
        };
        let result = self.answer_have(conn, &user, &mut sync, have, store);
        self.put_sync(conn, sync);
        result
    }

    /// Answers a `Have` into `sync` (which need not be attached to the connection yet:
    /// an unconfirmed connection answers before it has a session).
    pub(super) fn answer_have(
        &mut self,
        conn: ConnId,
        user: &str,
        sync: &mut SyncState,
        have: Have,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        sync.mode = have.mode;
        sync.held = have.held.iter().map(|h| (h.slot, h.version)).collect();
        let mut slots: BTreeSet<Slot> = sync.held.keys().copied().collect();
        if let Some(roster) = self.rosters.of(user) {
            slots.extend(roster.iter().map(|(slot, _)| slot));
        }
        sync.pending.clear();
        self.send_batch(conn, user, sync, Some(have.req), slots, store)
    }

    /// Answers `Subscribe` on a synchronised session: the slot and the document, which
    /// the client then holds.
    pub(super) fn answer_subscribed(
        &mut self,
        conn: ConnId,
        req: ReqId,
        slot: Slot,
        current: Versioned,
    ) {
        let Some((user, mut sync)) = self.take_sync(conn) else {
            return;
        };
        sync.held.insert(slot, current.version);
        sync.pending.remove(&slot);
        let doc = current.doc;
        let _ = user;
        self.put_sync(conn, sync);
        let version = current.version;
        self.send(
            conn,
            Down::Subscribed {
                req,
                slot,
                version,
                doc,
            },
        );
    }

    /// The client ended the subscription in `slot` on this session: nothing more about it.
    pub(super) fn forget_slot(&mut self, conn: ConnId, slot: Slot) {
        if let Some((_, mut sync)) = self.take_sync(conn) {
            sync.held.remove(&slot);
            sync.pending.remove(&slot);
            self.put_sync(conn, sync);
        }
    }

    /// At confirmation of a session whose `Have` was answered early: whatever changed
    /// since goes now.
    pub(super) fn restate_changed(
        &mut self,
        conn: ConnId,
        user: &str,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some((_, mut sync)) = self.take_sync(conn) else {
            return Ok(());
        };
        if sync.sent > 0 {
            sync.pending.extend(sync.held.keys().copied());
            if let Some(roster) = self.rosters.of(user) {
                sync.pending.extend(roster.iter().map(|(slot, _)| slot));
            }
        }
        self.put_sync(conn, sync);
        self.flush(conn, true, store)
    }

    /// `Up::Mode`: the client's mode from now on.
    pub(super) fn set_mode(&mut self, conn: ConnId, mode: ClientMode) {
        let Some((_, mut sync)) = self.take_sync(conn) else {
            return;
        };
        sync.mode = mode;
        if let Some(due) = sync.due {
            let at = due.min(self.now.saturating_add(self.flush_delay(mode)));
            self.set_due(conn, &mut sync, Some(at));
        }
        self.put_sync(conn, sync);
    }

    /// `Up::Applied`: batches up to `batch` arrived; what waited for the window may go.
    pub(super) fn applied(
        &mut self,
        conn: ConnId,
        batch: u32,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some((_, mut sync)) = self.take_sync(conn) else {
            return Ok(());
        };
        // Only numbers already sent count; an old or bogus one changes nothing.
        if batch.wrapping_sub(sync.acked) <= sync.sent.wrapping_sub(sync.acked) {
            sync.acked = batch;
        }
        self.put_sync(conn, sync);
        self.flush(conn, false, store)
    }

    /// Makes the batch of `slots` (answering `reply` if it is a `Have`) and sends it; a
    /// batch with no change is sent only as an answer.
    fn send_batch(
        &mut self,
        conn: ConnId,
        user: &str,
        sync: &mut SyncState,
        reply: Option<ReqId>,
        slots: BTreeSet<Slot>,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        self.set_due(conn, sync, None);
        let mut check = Check::new();
        let mut changes = Vec::new();
        let mut updates = Vec::new();
        for slot in slots {
            if let Some((change, held)) = self.change(user, sync, slot, &mut check, store)? {
                changes.push(change);
                updates.push((slot, held));
            }
        }
        // Only once every document was read: a storage failure leaves `held` as it was.
        for (slot, held) in updates {
            match held {
                Held::Set(version) => sync.held.insert(slot, version),
                Held::Forget => sync.held.remove(&slot),
            };
        }
        if changes.is_empty() && reply.is_none() {
            return Ok(());
        }
        sync.sent = sync.sent.wrapping_add(1);
        let batch = Batch {
            seq: sync.sent,
            time: self.now / 1000,
            check: check.finish(),
            changes,
        };
        let frame = match reply {
            Some(req) => Down::Synced { req, batch },
            None => Down::Batch(batch),
        };
        self.send(conn, frame);
        Ok(())
    }

    /// What the client must learn about `slot`, if anything, and what it then holds.
    fn change(
        &mut self,
        user: &str,
        sync: &SyncState,
        slot: Slot,
        check: &mut Check,
        store: &dyn Store,
    ) -> Result<Option<(Change, Held)>, StoreError> {
        let held = sync.held.get(&slot).copied();
        let target = self
            .rosters
            .of(user)
            .and_then(|r| r.target(slot))
            .map(String::from);
        let Some(target) = target else {
            return Ok(held.map(|_| {
                check.gone(slot);
                (Change::Gone { slot }, Held::Forget)
            }));
        };
        let (decision, view) = {
            let grant = self.grant(&target, user);
            let view = grant.view.cloned();
            (
                grant.decision,
                view.map(|v| (grant.rule.unwrap_or(usize::MAX), v)),
            )
        };
        if decision == Decision::Polite {
            // A presentity that never published and never changes: whatever the client
            // holds stays; a client that holds nothing learns the empty document.
            if held.is_some() {
                return Ok(None);
            }
            let empty = Presence::default();
            check.state(slot, &target, 0, &empty);
            let change = Change::Full {
                slot,
                version: 0,
                age: 0,
                name: Some(target),
                presence: empty,
            };
            return Ok(Some((change, Held::Set(0))));
        }
        let Versioned { version, doc } = self.current_doc(&target, store)?;
        if held == Some(version) {
            return Ok(None);
        }
        // Borrowed when the watcher sees the whole document: a delta copies nothing.
        let presence = access::shown(decision, view.as_ref().map(|(_, v)| v), &doc.presence);
        let age = if version == 0 {
            0
        } else {
            let secs = (self.now / 1000).saturating_sub(doc.updated / 1000);
            u32::try_from(secs).unwrap_or(u32::MAX)
        };
        check.state(slot, &target, version, &presence);
        // No delta spans a change of the rules: the views before and after differ.
        let epoch = self.epoch(&target);
        let delta = match held {
            Some(base) if base < version && base >= epoch => {
                self.caches
                    .delta(&target, base, version, view.as_ref(), &presence)
            }
            _ => std::sync::Arc::new(None),
        };
        let change = match (held, delta.as_ref()) {
            (Some(base), Some(ops)) => Change::Delta {
                slot,
                version,
                back: u32::try_from(version - base).unwrap_or(u32::MAX),
                age,
                ops: ops.clone(),
            },
            (held, _) => Change::Full {
                slot,
                version,
                age,
                name: held.is_none().then_some(target),
                presence: presence.into_owned(),
            },
        };
        Ok(Some((change, Held::Set(version))))
    }

    /// How long a change waits in this mode.
    fn flush_delay(&self, mode: ClientMode) -> Millis {
        let policy = &self.config.flush;
        match mode {
            ClientMode::INACTIVE => policy.inactive_ms,
            ClientMode::SLEEPY => policy.sleepy_ms,
            _ => policy.active_ms,
        }
    }

    /// Sets when the session's pending slots are due, keeping the timer index in step.
    fn set_due(&mut self, conn: ConnId, sync: &mut SyncState, at: Option<Millis>) {
        if let Some(old) = sync.due {
            self.flushes.remove(&(old, conn));
        }
        if let Some(at) = at {
            self.flushes.insert((at, conn));
        }
        sync.due = at;
    }

    /// Detaches a session's synchronisation state for the duration of a change.
    fn take_sync(&mut self, conn: ConnId) -> Option<(String, SyncState)> {
        match self.conns.get_mut(&conn) {
            Some(ConnState::Active(session)) => {
                let sync = session.sync.take()?;
                Some((session.user.clone(), sync))
            }
            _ => None,
        }
    }

    fn put_sync(&mut self, conn: ConnId, sync: SyncState) {
        if let Some(ConnState::Active(session)) = self.conns.get_mut(&conn) {
            session.sync = Some(sync);
        }
    }

    /// A connection is gone: its timer too.
    pub(super) fn forget_sync(&mut self, conn: ConnId, sync: Option<&SyncState>) {
        if let Some(at) = sync.and_then(|s| s.due) {
            self.flushes.remove(&(at, conn));
        }
    }
}
