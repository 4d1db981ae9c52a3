//! Principals' rules inside the hub: who may watch, what each watcher sees, pending
//! requests, cancellations, and the re-evaluation of every subscription when rules
//! change or a time window opens or closes (protocol section "Access rules").
//!
//! The decisions themselves are [`crate::access`]'s; this module owns the rules held in
//! memory (all of them, loaded at start and written through), the timers of time-based
//! rules, and what a change of decision does to subscriptions and sessions. It never
//! builds batches (the synchronisation module does, with [`access::shown`]).

use std::borrow::Cow;

use tern_wire::frame::ReqId;
use tern_wire::{
    Decision, Down, ErrorCode, Presence, PresenceDoc, PresenceRule, Rules, SubInfo, SubState,
    Version, Who,
};

use super::{ConnId, Hub, Millis};
use crate::access::{self, Grant, is_anonymous, public_name};
use crate::store::{Request, Store, StoreError, StoredRules, Versioned};

/// What nobody's rules say: everyone authenticated may watch, nobody anonymous.
static NO_RULES: Rules = Rules {
    presence: Vec::new(),
    inbox: Vec::new(),
    delegates: Vec::new(),
};

/// The index of [`NO_RULES`].
static NO_INDEX: std::sync::LazyLock<access::Index> = std::sync::LazyLock::new(Default::default);

/// A principal's rules in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Owned {
    pub(super) stored: StoredRules,
    /// The presence rules indexed by whom they name.
    pub(super) index: access::Index,
    /// Which time-limited rules applied at the last evaluation ([`access::timed_state`]).
    pub(super) timed: u64,
    /// When the next time window may open or close.
    pub(super) flip: Option<Millis>,
}

/// The document of a presentity that never published, as a politely blocked watcher
/// sees it whatever happens.
fn blank(presentity: &str) -> Versioned {
    Versioned {
        version: 0,
        doc: PresenceDoc {
            presentity: presentity.into(),
            updated: 0,
            presence: Presence::default(),
        },
    }
}

impl Hub {
    /// Loads every principal's rules and starts the timers of time-based ones.
    pub(super) fn load_rules(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        for (owner, stored) in store.all_rules()? {
            self.install_rules(&owner, stored);
        }
        Ok(())
    }

    /// The rules of a principal (the defaults if it has none).
    pub(super) fn rules_of(&self, owner: &str) -> &Rules {
        self.rules.get(owner).map_or(&NO_RULES, |o| &o.stored.rules)
    }

    /// The version no delta of `owner`'s document may span.
    pub(super) fn epoch(&self, owner: &str) -> Version {
        self.rules.get(owner).map_or(0, |o| o.stored.epoch)
    }

    /// What `owner`'s rules grant `watcher` now.
    pub(super) fn grant(&self, owner: &str, watcher: &str) -> Grant<'_> {
        match self.rules.get(owner) {
            Some(o) => access::grant(&o.stored.rules, &o.index, owner, watcher, self.now),
            None => access::grant(&NO_RULES, &NO_INDEX, owner, watcher, self.now),
        }
    }

    /// The versioned document as `watcher` sees it: its view when allowed, a presentity
    /// that never published when politely blocked. Applied before any diff or cache
    /// (batches apply the same [`access::shown`] with the grant they already hold), so no
    /// notification or delta ever carries what the watcher may not see (RFC 2779 3.3.3).
    pub(super) fn seen(&self, watcher: &str, mut current: Versioned) -> Versioned {
        let grant = self.grant(&current.doc.presentity, watcher);
        if grant.decision == Decision::Polite {
            return blank(&current.doc.presentity);
        }
        // The whole document, when the watcher may see it all, is not copied.
        let viewed = match access::shown(grant.decision, grant.view, &current.doc.presence) {
            Cow::Owned(presence) => Some(presence),
            Cow::Borrowed(_) => None,
        };
        if let Some(presence) = viewed {
            current.doc.presence = presence;
        }
        current
    }

    /// `Up::GetRules`.
    pub(super) fn get_rules(&mut self, conn: ConnId, owner: &str, req: ReqId) {
        let rules = self.rules_of(owner).clone();
        self.send(conn, Down::Rules { req, rules });
    }

    /// `Up::SetRules` (also an administrator's): checks, stores, and applies them.
    pub(super) fn set_rules(
        &mut self,
        conn: ConnId,
        owner: &str,
        req: ReqId,
        rules: Rules,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        match access::normalise(rules) {
            Ok(rules) => {
                self.replace_rules(owner, rules, store)?;
                self.send(conn, Down::Ok { req });
            }
            Err(why) => self.fail(conn, req, ErrorCode::MALFORMED, why),
        }
        Ok(())
    }

    /// `Up::Decide`: a rule for exactly one watcher, first.
    pub(super) fn decide(
        &mut self,
        conn: ConnId,
        owner: &str,
        req: ReqId,
        watcher: &str,
        decision: Decision,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(watcher) = self.address_or_fail(conn, req, watcher) else {
            return Ok(());
        };
        let who = if is_anonymous(watcher.as_str()) {
            Who::Anonymous
        } else {
            Who::User(watcher.into_string())
        };
        let mut rules = self.rules_of(owner).clone();
        rules.presence.retain(|r| r.who != who);
        rules.presence.insert(
            0,
            PresenceRule {
                who,
                decision,
                view: None,
                when: None,
            },
        );
        self.set_rules(conn, owner, req, rules, store)
    }

    /// `Up::Cancel`: the presentity's principal ends a watcher's subscription (or pending
    /// request). A politely blocked subscription is left alone: it costs nothing, and
    /// ending it would tell the watcher.
    pub(super) fn cancel(
        &mut self,
        conn: ConnId,
        owner: &str,
        req: ReqId,
        watcher: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(watcher) = self.address_or_fail(conn, req, watcher) else {
            return Ok(());
        };
        // `anonymous@d` names every anonymous watcher of that domain.
        let named = |w: &str| public_name(w) == watcher.as_str();
        let watchers: Vec<String> = self
            .rosters
            .watchers(owner)
            .filter(|w| named(w))
            .map(String::from)
            .collect();
        for w in watchers {
            if self.grant(owner, &w).decision != Decision::Polite {
                self.end_subscription(&w, owner, SubState::Cancelled, store)?;
            }
        }
        for request in store.requests_to(owner)? {
            if named(&request.watcher) {
                store.remove_request(&request.watcher, owner)?;
                self.tell_watcher(&request.watcher, owner, SubState::Cancelled, store)?;
            }
        }
        self.send(conn, Down::Ok { req });
        Ok(())
    }

    /// `Up::Subscriptions`: one's own subscriptions, or those to one's presentity.
    pub(super) fn list_subscriptions(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        incoming: bool,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let mut list: Vec<SubInfo> = Vec::new();
        let active = |who: &str| SubInfo {
            who: public_name(who).into_owned(),
            state: SubState::Active,
        };
        let pending = |who: &str| SubInfo {
            who: public_name(who).into_owned(),
            state: SubState::Pending,
        };
        if incoming {
            list.extend(self.rosters.watchers(user).map(active));
            list.extend(store.requests_to(user)?.iter().map(|r| pending(&r.watcher)));
        } else {
            if let Some(roster) = self.rosters.of(user) {
                list.extend(roster.iter().map(|(_, t)| active(t)));
            }
            list.extend(store.requests_of(user)?.iter().map(|r| pending(&r.target)));
        }
        list.sort_by(|a, b| a.who.cmp(&b.who));
        self.send(conn, Down::Subscriptions { req, list });
        Ok(())
    }

    /// A subscription the rules say *ask* about: recorded, answered `Pending`, and the
    /// presentity's principal told.
    pub(super) fn ask(
        &mut self,
        conn: ConnId,
        watcher: &str,
        req: ReqId,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.record_request(watcher, target, store)?;
        self.send(conn, Down::Pending { req });
        self.tell_owner_asked(target, watcher);
        Ok(())
    }

    /// Stores a pending request of `watcher` to watch `target`, asked now.
    pub(super) fn record_request(
        &self,
        watcher: &str,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let request = Request {
            watcher: watcher.into(),
            target: target.into(),
            at: self.now,
        };
        store.add_request(&request)
    }

    /// Tells the presentity's principal's sessions that `watcher` asks to watch.
    pub(super) fn tell_owner_asked(&mut self, target: &str, watcher: &str) {
        let shown = public_name(watcher).into_owned();
        for owner_conn in self.online.get(target).cloned().unwrap_or_default() {
            let frame = Down::Asked {
                watcher: shown.clone(),
            };
            self.send(owner_conn, frame);
        }
    }

    /// Stores new rules for `owner` and makes every subscription and request to it
    /// follow them.
    pub(super) fn replace_rules(
        &mut self,
        owner: &str,
        rules: Rules,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let epoch = self.epoch(owner);
        let same_presence = self.rules_of(owner).presence == rules.presence;
        self.install_rules(owner, StoredRules { rules, epoch });
        let presentity = store.user(owner)?.is_some_and(|u| u.presentity);
        if same_presence || !presentity {
            // Nothing any watcher sees changed: only the rules are stored.
            let stored = self.rules.get(owner).map(|o| o.stored.clone());
            return match stored {
                Some(stored) => store.put_rules(owner, &stored),
                None => Ok(()),
            };
        }
        self.rules_changed(owner, store)
    }

    /// Puts rules in memory and (re)starts their timer.
    fn install_rules(&mut self, owner: &str, stored: StoredRules) {
        if let Some(old) = self.rules.get(owner).and_then(|o| o.flip) {
            self.flips.remove(&(old, owner.to_string()));
        }
        let timed = access::timed_state(&stored.rules, self.now);
        let flip = access::next_boundary(&stored.rules, self.now);
        if let Some(at) = flip {
            self.flips.insert((at, owner.to_string()));
        }
        let owned = Owned {
            index: access::Index::new(&stored.rules),
            stored,
            timed,
            flip,
        };
        self.rules.insert(owner.to_string(), owned);
    }

    /// Time windows that opened or closed: the rules they belong to apply anew.
    pub(super) fn flip_due(&mut self, store: &mut dyn Store) -> Result<(), StoreError> {
        while let Some((at, owner)) = self.flips.first().cloned() {
            if at > self.now {
                break;
            }
            self.flips.pop_first();
            let Some(owned) = self.rules.get(&owner) else {
                continue;
            };
            let before = owned.timed;
            let stored = owned.stored.clone();
            self.install_rules(&owner, stored);
            let after = self.rules.get(&owner).map_or(0, |o| o.timed);
            let presentity = store.user(&owner)?.is_some_and(|u| u.presentity);
            if after != before && presentity {
                tracing::debug!(%owner, "a time window of the rules opened or closed");
                self.rules_changed(&owner, store)?;
            }
        }
        Ok(())
    }

    /// What `owner`'s watchers may see changed: a new version of the document (the
    /// rules' epoch: no delta spans it), cancelled subscriptions for watchers now
    /// denied or allowed to fetch only, decided requests, and the new views sent to
    /// everyone else.
    fn rules_changed(&mut self, owner: &str, store: &mut dyn Store) -> Result<(), StoreError> {
        let current = self.current_doc(owner, store)?;
        let bumped = Versioned {
            version: current.version + 1,
            doc: current.doc,
        };
        store.put_presence(&bumped)?;
        let stored = match self.rules.get_mut(owner) {
            Some(owned) => {
                owned.stored.epoch = bumped.version;
                owned.stored.clone()
            }
            None => return Ok(()),
        };
        store.put_rules(owner, &stored)?;
        let watchers: Vec<String> = self.rosters.watchers(owner).map(String::from).collect();
        for watcher in watchers {
            let decision = self.grant(owner, &watcher).decision;
            if matches!(decision, Decision::Deny | Decision::FetchOnly) {
                self.end_subscription(&watcher, owner, SubState::Cancelled, store)?;
            }
        }
        // Everyone still subscribed (but the politely blocked) gets the new view.
        self.set_doc(bumped, store)?;
        for request in store.requests_to(owner)? {
            match self.grant(owner, &request.watcher).decision {
                Decision::Ask => {}
                Decision::Deny | Decision::FetchOnly => {
                    store.remove_request(&request.watcher, owner)?;
                    self.tell_watcher(&request.watcher, owner, SubState::Denied, store)?;
                }
                Decision::Allow | Decision::Polite => {
                    self.grant_request(&request.watcher, owner, store)?;
                }
            }
        }
        Ok(())
    }

    /// A pending request granted: the subscription exists, and the watcher's sessions
    /// are told and get the presence as for a new subscription.
    pub(super) fn grant_request(
        &mut self,
        watcher: &str,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        store.remove_request(watcher, target)?;
        let slot = store.add_subscription(watcher, target)?;
        self.rosters.add(watcher, target, slot);
        self.tell_watcher(watcher, target, SubState::Active, store)?;
        let current = self.current_doc(target, store)?;
        let doc = self.seen(watcher, current).doc;
        for conn in self.online.get(watcher).cloned().unwrap_or_default() {
            if self.syncs(conn) {
                self.mark_pending(conn, slot, store)?;
            } else {
                self.send(conn, Down::Notify { doc: doc.clone() });
            }
        }
        Ok(())
    }

    /// Ends `watcher`'s subscription to `target` by the presentity's (or an
    /// administrator's) will, and tells the watcher's sessions.
    pub(super) fn end_subscription(
        &mut self,
        watcher: &str,
        target: &str,
        state: SubState,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        store.remove_subscription(watcher, target)?;
        let slot = self.rosters.remove(watcher, target);
        tracing::debug!(%watcher, %target, ?state, "subscription ended by the presentity");
        self.tell_watcher(watcher, target, state, store)?;
        if let Some(slot) = slot {
            for conn in self.online.get(watcher).cloned().unwrap_or_default() {
                self.mark_pending(conn, slot, store)?;
            }
        }
        Ok(())
    }

    /// Pushes a subscription's new state to every session of its watcher (to a remote
    /// watcher, as the XMPP handshake's answer).
    pub(super) fn tell_watcher(
        &mut self,
        watcher: &str,
        target: &str,
        state: SubState,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if self.federates(watcher) {
            return self.tell_remote_watcher(watcher, target, state, store);
        }
        for conn in self.online.get(watcher).cloned().unwrap_or_default() {
            let frame = Down::Subscription {
                target: target.into(),
                state,
            };
            self.send(conn, frame);
        }
        Ok(())
    }
}
