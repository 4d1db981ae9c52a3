//! The presence service: publish, fetch, subscribe, unsubscribe, notify, and the
//! CLOSED document of a presentity that went out of contact (RFC 2779 3.2).
//!
//! A presentity's document is the last one published, stamped by the gateway. Fetch
//! and subscribe work whether or not the presentity is in contact (3.2.1, 3.2.2): they
//! answer with the stored document, or an empty one (reads CLOSED) if it never
//! published. Subscriptions are durable; a watcher gets the current document of each
//! subscription when its session opens.

use std::collections::HashMap;

use tern_wire::addr::Address;
use tern_wire::frame::ReqId;
use tern_wire::{
    Basic, Decision, Down, ErrorCode, Ext, Presence, PresenceDoc, Slot, Tuple, Version,
};

use super::{ConnId, Hub, Millis};
use crate::store::{Store, StoreError, Versioned};
use crate::validate::{self, Rejection};

/// The text of a refusal by a presentity's rules.
const REFUSED: &str = "refused by the presentity's rules";

impl Hub {
    pub(super) fn publish(
        &mut self,
        now: Millis,
        conn: ConnId,
        user: &str,
        req: ReqId,
        presence: Presence,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let allowed = self.presence_enabled(user) && self.has_presentity(conn);
        if !allowed {
            let text = "this principal has no presentity, or presence is off";
            self.fail(conn, req, ErrorCode::SERVICE_DISABLED, text);
            return Ok(());
        }
        self.write_presence(now, conn, user, req, presence, store)
    }

    /// Validates, versions, stores and notifies a presentity's new presence, answering
    /// `req` on `conn`.
    pub(super) fn write_presence(
        &mut self,
        now: Millis,
        conn: ConnId,
        user: &str,
        req: ReqId,
        presence: Presence,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Err((code, why)) = validate::presence(&presence) {
            self.fail(conn, req, code, why);
            return Ok(());
        }
        let version = self.current_doc(user, store)?.version + 1;
        let doc = Versioned {
            version,
            doc: PresenceDoc {
                presentity: user.into(),
                updated: now,
                presence,
            },
        };
        store.put_presence(&doc)?;
        self.send(conn, Down::Ok { req });
        self.set_doc(doc, store)
    }

    /// `Up::PublishFor`: a delegate replaces another principal's presence (RFC 2779
    /// 2.3.4), exactly as that principal's own `Publish` would.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_for(
        &mut self,
        now: Millis,
        conn: ConnId,
        user: &str,
        req: ReqId,
        presentity: &str,
        presence: Presence,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let target = match self.resolve_presentity(presentity, store)? {
            Ok(target) => target,
            Err((code, why)) => {
                self.fail(conn, req, code, why);
                return Ok(());
            }
        };
        let rules = self.rules_of(&target);
        if !crate::access::delegated(rules, user, tern_wire::Delegate::PUBLISH) {
            let text = "the presentity's principal has not delegated publishing to you";
            self.fail(conn, req, ErrorCode::REFUSED, text);
            return Ok(());
        }
        tracing::debug!(delegate = %user, %target, "delegate publishes");
        self.write_presence(now, conn, &target, req, presence, store)
    }

    pub(super) fn fetch(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Some(remote) = self.remote_target(target) {
            if let Some(current) = self.fetch_remote(conn, user, req, &remote, store)? {
                let doc = current.doc;
                self.send(conn, Down::Presence { req, doc });
            }
            return Ok(());
        }
        match self.resolve_presentity(target, store)? {
            Ok(target) => {
                if self.refuses_fetch(conn, user, req, &target) {
                    return Ok(());
                }
                let current = self.current_doc(&target, store)?;
                let doc = self.seen(user, current).doc;
                self.note_fetch(user, &target);
                self.send(conn, Down::Presence { req, doc });
            }
            Err((code, why)) => self.fail(conn, req, code, why),
        }
        Ok(())
    }

    /// Whether the presentity's rules refuse `user` a fetch (denied, or asked about
    /// and not decided); if so it is answered `refused`.
    fn refuses_fetch(&mut self, conn: ConnId, user: &str, req: ReqId, target: &str) -> bool {
        let refused = matches!(
            self.grant(target, user).decision,
            Decision::Deny | Decision::Ask
        );
        if refused {
            self.fail(conn, req, ErrorCode::REFUSED, REFUSED);
        }
        refused
    }

    /// A conditional fetch (RFC 2779 3.3): `Ok` when the fetcher's version is current.
    pub(super) fn fetch_if(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: &str,
        version: Version,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Some(remote) = self.remote_target(target) {
            if let Some(current) = self.fetch_remote(conn, user, req, &remote, store)? {
                if version != 0 && current.version == version {
                    self.send(conn, Down::Ok { req });
                } else {
                    let Versioned { version, doc } = current;
                    self.send(conn, Down::Versioned { req, version, doc });
                }
            }
            return Ok(());
        }
        match self.resolve_presentity(target, store)? {
            Ok(target) => {
                if self.refuses_fetch(conn, user, req, &target) {
                    return Ok(());
                }
                let current = self.current_doc(&target, store)?;
                let current = self.seen(user, current);
                self.note_fetch(user, &target);
                if version != 0 && current.version == version {
                    self.send(conn, Down::Ok { req });
                } else {
                    let Versioned { version, doc } = current;
                    self.send(conn, Down::Versioned { req, version, doc });
                }
            }
            Err((code, why)) => self.fail(conn, req, code, why),
        }
        Ok(())
    }

    pub(super) fn subscribe(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Some(remote) = self.remote_target(target) {
            return self.subscribe_remote(conn, user, req, remote, store);
        }
        let target = match self.resolve_presentity(target, store)? {
            Ok(target) => target,
            Err((code, why)) => {
                self.fail(conn, req, code, why);
                return Ok(());
            }
        };
        let roster = self.rosters.of(user);
        let count = roster.map_or(0, |r| r.len());
        let already = roster.and_then(|r| r.slot(&target)).is_some();
        if count >= self.config.max_subscriptions && !already {
            self.fail(conn, req, ErrorCode::REFUSED, "subscription limit reached");
            return Ok(());
        }
        let decision = self.grant(&target, user).decision;
        match decision {
            Decision::Deny => {
                self.fail(conn, req, ErrorCode::REFUSED, REFUSED);
                return Ok(());
            }
            Decision::FetchOnly => {
                let text = "the presentity's rules let you fetch its presence, not subscribe";
                self.fail(conn, req, ErrorCode::REFUSED, text);
                return Ok(());
            }
            // Ask gates new subscriptions only: an existing one stays granted.
            Decision::Ask if !already => return self.ask(conn, user, req, &target, store),
            Decision::Ask | Decision::Allow | Decision::Polite => {}
        }
        let slot = store.add_subscription(user, &target)?;
        let current = self.current_doc(&target, store)?;
        self.rosters.add(user, &target, slot);
        if !already && user != target && decision != Decision::Polite {
            self.announce_watcher(&target, user);
        }
        let current = self.seen(user, current);
        if self.syncs(conn) {
            self.answer_subscribed(conn, req, slot, current);
        } else {
            self.send(
                conn,
                Down::Presence {
                    req,
                    doc: current.doc,
                },
            );
        }
        // The principal's other synchronised sessions learn of it in their next batch.
        self.mark_pending_elsewhere(conn, user, slot, store)
    }

    pub(super) fn unsubscribe(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(target) = self.address_or_fail(conn, req, target) else {
            return Ok(());
        };
        // Idempotent: ending a subscription that does not exist succeeds. A pending
        // request is withdrawn the same way.
        store.remove_subscription(user, target.as_str())?;
        store.remove_request(user, target.as_str())?;
        let slot = self.rosters.remove(user, target.as_str());
        if let Some(slot) = slot {
            self.forget_slot(conn, slot);
            self.mark_pending_elsewhere(conn, user, slot, store)?;
        }
        if self.federates(target.as_str()) {
            self.unsubscribe_remote(user, target.as_str(), store)?;
        }
        self.send(conn, Down::Ok { req });
        Ok(())
    }

    /// At login, re-reads the principal's subscriptions both ways and its document from
    /// the store: the operator may have removed and provisioned it again while the
    /// gateway ran, and nobody must be notified of what they did not subscribe to.
    pub(super) fn resync_principal(
        &mut self,
        user: &str,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let targets = store.subscriptions_of(user)?;
        let watchers = store.watchers_of(user)?;
        self.rosters.forget(user);
        for (target, slot) in &targets {
            self.rosters.add(user, target, *slot);
        }
        for (watcher, slot) in &watchers {
            self.rosters.add(watcher, user, *slot);
        }
        self.caches.forget(user);
        Ok(())
    }

    /// On a new session: the current document of everything its principal watches.
    pub(super) fn send_subscribed_presence(
        &mut self,
        conn: ConnId,
        user: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.send_subscribed_presence_since(conn, user, 0, store)
    }

    /// The current document of everything the principal watches that changed at or
    /// after `since` (0: everything).
    pub(super) fn send_subscribed_presence_since(
        &mut self,
        conn: ConnId,
        user: &str,
        since: Millis,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let targets: Vec<String> = self
            .rosters
            .of(user)
            .map(|r| r.iter().map(|(_, t)| t.to_string()).collect())
            .unwrap_or_default();
        for target in targets {
            let current = self.current_doc(&target, store)?;
            let doc = self.seen(user, current).doc;
            if doc.updated >= since {
                self.send(conn, Down::Notify { doc });
            }
        }
        Ok(())
    }

    /// The principal's last session ended: an OPEN presentity becomes CLOSED for its
    /// watchers (3.2.4, 3.2.5). Notes and contact addresses stay; availability goes.
    /// A device that said it is asleep until a wake time keeps its document until that
    /// time plus the grace period (`resume_window_ms`): watchers can tell a sleeping
    /// sensor from a dead one.
    pub(super) fn mark_out_of_contact(
        &mut self,
        now: Millis,
        user: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let current = self.current_doc(user, store)?;
        if let Some(at) = self.sleeps_until(&current.doc.presence)
            && at > now
        {
            tracing::debug!(%user, at, "asleep: out of contact after the wake time");
            self.sleepers.insert((at, user.to_string()));
            return Ok(());
        }
        let presence = &current.doc.presence;
        if !presence.is_open() && !presence.tuples.iter().any(Tuple::asleep) {
            return Ok(());
        }
        let mut closed = Versioned {
            version: current.version + 1,
            doc: current.doc,
        };
        closed.doc.updated = now;
        for tuple in &mut closed.doc.presence.tuples {
            tuple.basic = Basic::Closed;
            tuple.availability = None;
            tuple.ext.retain(|e| e.key != Ext::WAKE);
        }
        store.put_presence(&closed)?;
        self.set_doc(closed, store)
    }

    /// Asleep presentities whose wake time (plus grace) passed without a session go out
    /// of contact.
    pub(super) fn wake_overdue_sleepers(
        &mut self,
        now: Millis,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        while let Some((at, user)) = self.sleepers.first().cloned() {
            if at > now {
                break;
            }
            self.sleepers.pop_first();
            if !self.in_contact(&user) {
                self.mark_out_of_contact(now, &user, store)?;
            }
        }
        Ok(())
    }

    /// When a document whose device said it is asleep stops being believed: the latest
    /// wake time of its asleep tuples plus the grace period.
    fn sleeps_until(&self, presence: &Presence) -> Option<Millis> {
        presence
            .tuples
            .iter()
            .filter(|t| t.asleep())
            .filter_map(Tuple::wake_at)
            .max()
            .map(|secs| {
                secs.saturating_mul(1000)
                    .saturating_add(self.config.resume_window_ms)
            })
    }

    /// Caches a new document and tells every online watcher: a `Notify` now, or a
    /// pending slot of a synchronised session.
    /// Politely blocked watchers are skipped: the gateway spends nothing on them.
    pub(super) fn set_doc(
        &mut self,
        doc: Versioned,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let presentity = doc.doc.presentity.clone();
        self.caches.put_current(doc.clone());
        self.fan_out_remote(&doc, store)?;
        let watchers: Vec<String> = self
            .rosters
            .watchers(&presentity)
            .filter(|w| self.online.contains_key(*w))
            .map(String::from)
            .collect();
        // One `Notify` per view (the deciding rule's index; `None`: the whole document),
        // shared by every plain session that sees it.
        let mut notifies: HashMap<Option<Option<usize>>, Down> = HashMap::new();
        for watcher in watchers {
            let (decision, view) = {
                let grant = self.grant(&presentity, &watcher);
                (grant.decision, grant.view.map(|_| grant.rule))
            };
            if decision == Decision::Polite {
                continue;
            }
            let slot = self.rosters.of(&watcher).and_then(|r| r.slot(&presentity));
            let conns = self.online.get(&watcher).cloned().unwrap_or_default();
            for conn in conns {
                match slot {
                    Some(slot) if self.syncs(conn) => self.mark_pending(conn, slot, &*store)?,
                    _ => {
                        let frame = match notifies.get(&view) {
                            Some(frame) => frame.clone(),
                            None => {
                                let seen = self.seen(&watcher, doc.clone()).doc;
                                let frame = Down::Notify { doc: seen };
                                notifies.insert(view, frame.clone());
                                frame
                            }
                        };
                        self.send(conn, frame);
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks `slot` pending on every synchronised session of `user` but `conn`.
    fn mark_pending_elsewhere(
        &mut self,
        conn: ConnId,
        user: &str,
        slot: Slot,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let others: Vec<ConnId> = self.online.get(user).cloned().unwrap_or_default();
        for other in others.into_iter().filter(|c| *c != conn) {
            self.mark_pending(other, slot, store)?;
        }
        Ok(())
    }

    /// The current document of a presentity, with its version (0 and an empty document
    /// if it never published).
    pub(super) fn current_doc(
        &mut self,
        target: &str,
        store: &dyn Store,
    ) -> Result<Versioned, StoreError> {
        if let Some(doc) = self.caches.current(target) {
            return Ok(doc.clone());
        }
        let doc = store.presence(target)?.unwrap_or_else(|| Versioned {
            version: 0,
            doc: PresenceDoc {
                presentity: target.into(),
                updated: 0,
                presence: Presence::default(),
            },
        });
        self.caches.put_current(doc.clone());
        Ok(doc)
    }

    /// The normalised address, when it is a well-formed one the bridge reaches.
    fn remote_target(&self, target: &str) -> Option<String> {
        self.config.federation.as_ref()?;
        Address::parse(target)
            .ok()
            .filter(|a| self.federates(a.as_str()))
            .map(Address::into_string)
    }

    /// Normalises a presentity address and checks that this gateway serves it.
    fn resolve_presentity(
        &self,
        target: &str,
        store: &dyn Store,
    ) -> Result<Result<String, Rejection>, StoreError> {
        let Ok(address) = Address::parse(target) else {
            return Ok(Err((ErrorCode::BAD_ADDRESS, "not a local@domain address")));
        };
        let Some(domain) = self.config.domain(address.domain()) else {
            return Ok(Err((
                ErrorCode::UNROUTABLE,
                "domain not served by this gateway",
            )));
        };
        if !domain.presence {
            return Ok(Err((
                ErrorCode::SERVICE_DISABLED,
                "presence is off in that domain",
            )));
        }
        let exists = store
            .user(address.as_str())?
            .is_some_and(|user| user.presentity);
        Ok(if exists {
            Ok(address.into_string())
        } else {
            Err((ErrorCode::UNKNOWN_USER, "no such presentity"))
        })
    }

    /// Remembers a fetch for the presentity's watcher information.
    fn note_fetch(&mut self, fetcher: &str, presentity: &str) {
        let window = self.config.watcher_window_ms;
        let fetcher = crate::access::public_name(fetcher);
        self.fetches.record(self.now, window, presentity, &fetcher);
    }

    pub(super) fn presence_enabled(&self, user: &str) -> bool {
        let domain = user.rsplit_once('@').map_or("", |(_, d)| d);
        self.config.domain(domain).is_some_and(|d| d.presence)
    }

    fn has_presentity(&self, conn: ConnId) -> bool {
        matches!(self.conns.get(&conn), Some(super::ConnState::Active(s)) if s.presentity)
    }
}
