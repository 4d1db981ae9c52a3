//! Who watches whom: each principal's subscriptions with their slots, and the reverse
//! index from presentity to watchers.
//!
//! This module owns the two indexes and keeps them consistent; it knows nothing of
//! sessions, documents or storage (the presence service writes the store first, then
//! changes these).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tern_wire::Slot;

/// One principal's subscriptions, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Roster {
    by_target: HashMap<String, Slot>,
    by_slot: BTreeMap<Slot, String>,
}

impl Roster {
    /// The slot of the subscription to `target`.
    pub(super) fn slot(&self, target: &str) -> Option<Slot> {
        self.by_target.get(target).copied()
    }

    /// The presentity subscribed to in `slot`.
    pub(super) fn target(&self, slot: Slot) -> Option<&str> {
        self.by_slot.get(&slot).map(String::as_str)
    }

    /// Subscriptions, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Slot, &str)> {
        self.by_slot.iter().map(|(slot, t)| (*slot, t.as_str()))
    }

    /// How many subscriptions.
    pub(super) fn len(&self) -> usize {
        self.by_slot.len()
    }
}

/// Every subscription the gateway knows, indexed both ways.
#[derive(Debug, Default)]
pub(super) struct Rosters {
    /// Principal → its subscriptions.
    watching: HashMap<String, Roster>,
    /// Presentity → principals subscribed to it.
    watchers: HashMap<String, BTreeSet<String>>,
}

impl Rosters {
    /// The subscriptions of a principal.
    pub(super) fn of(&self, watcher: &str) -> Option<&Roster> {
        self.watching.get(watcher)
    }

    /// The principals subscribed to a presentity.
    pub(super) fn watchers(&self, target: &str) -> impl Iterator<Item = &str> {
        self.watchers
            .get(target)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Every presentity someone subscribes to, with one of its subscribers (the first
    /// by address), in no particular order.
    pub(super) fn targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.watchers.iter().filter_map(|(target, watchers)| {
            let first = watchers.first()?;
            Some((target.as_str(), first.as_str()))
        })
    }

    /// Adds (or re-slots) a subscription.
    pub(super) fn add(&mut self, watcher: &str, target: &str, slot: Slot) {
        let roster = self.watching.entry(watcher.into()).or_default();
        if let Some(old) = roster.by_target.insert(target.into(), slot) {
            roster.by_slot.remove(&old);
        }
        roster.by_slot.insert(slot, target.into());
        self.watchers
            .entry(target.into())
            .or_default()
            .insert(watcher.into());
    }

    /// Removes a subscription; its slot, if it had one.
    pub(super) fn remove(&mut self, watcher: &str, target: &str) -> Option<Slot> {
        if let Some(set) = self.watchers.get_mut(target) {
            set.remove(watcher);
            if set.is_empty() {
                self.watchers.remove(target);
            }
        }
        let roster = self.watching.get_mut(watcher)?;
        let slot = roster.by_target.remove(target)?;
        roster.by_slot.remove(&slot);
        if roster.by_slot.is_empty() {
            self.watching.remove(watcher);
        }
        Some(slot)
    }

    /// Forgets every subscription of and to a principal (before re-reading them).
    pub(super) fn forget(&mut self, principal: &str) {
        let targets: Vec<String> = self
            .watching
            .get(principal)
            .map(|r| r.by_target.keys().cloned().collect())
            .unwrap_or_default();
        for target in targets {
            self.remove(principal, &target);
        }
        let watchers: Vec<String> = self.watchers(principal).map(String::from).collect();
        for watcher in watchers {
            self.remove(&watcher, principal);
        }
    }
}
