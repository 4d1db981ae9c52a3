//! The presence cache of a synchronised session ([`tern_wire::Open::SYNC`]): for every
//! subscription slot, the presentity's name, the version of its document and the
//! document, as the gateway's batches leave them.
//!
//! Owns: applying a [`Batch`] all or nothing (full documents, deltas, ends of
//! subscriptions) and checking its checksum; deciding that the client lost track (a
//! delta whose base is not what is held, an unnamed document for an unknown slot, a
//! delta that does not apply, a checksum that differs) and dropping the slots of such a
//! batch; the state vector a `Have` lists; which presentities' state really changed (the
//! events); and the entries written to the state directory. It is pure: no I/O, no
//! clock, no protocol flow (when to send `Have` or `Applied`, which batches to discard
//! is the session's business, what to persist when is the driver's).
//!
//! ## Dropped slots
//! A slot is *set aside* (kept out of the next `Have`, and out of every read) when a
//! batch about it did not apply, or when a `Have` has no room for it. The gateway then
//! restates it whole, with its name, in the answer to that `Have` if the subscription
//! still exists; if the answer does not mention it, the subscription ended meanwhile and
//! that is reported ([`RosterChange::Ended`]). The state set aside also keeps a
//! restatement of the same version from being reported as a change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tern_wire::delta::{self, Check, DeltaError};
use tern_wire::{Batch, Change, Held, PresenceDoc, Slot, Version};

/// One cached presentity: its subscription slot, the version of its document, and the
/// document (whose `presentity` is the name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPresence {
    /// The slot that names the subscription in batches.
    pub slot: Slot,
    /// The version of the document; 0 when the presentity never published.
    pub version: Version,
    /// The document as this watcher may see it.
    pub doc: PresenceDoc,
}

/// What applying a batch did to one presentity, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterChange {
    /// Its document changed (or is new to the cache); this is the new state.
    Changed(CachedPresence),
    /// The subscription ended; this was the last state held.
    Ended(CachedPresence),
}

/// Why a batch did not apply: the client lost track and must state what it holds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostTrack {
    /// A delta or an unnamed document for a slot the cache does not hold.
    UnknownSlot(Slot),
    /// A delta made from another version than the one held.
    WrongBase {
        /// The slot.
        slot: Slot,
        /// The version held (`None`: the base underflows).
        held: Version,
        /// The version the delta was made from.
        base: Option<Version>,
    },
    /// A delta that does not apply to the document held.
    Delta(Slot, DeltaError),
    /// The states the batch leads to are not the gateway's.
    Checksum,
}

impl fmt::Display for LostTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSlot(slot) => write!(f, "slot {slot} is not held"),
            Self::WrongBase { slot, held, base } => match base {
                Some(base) => write!(f, "slot {slot}: delta from version {base}, {held} held"),
                None => write!(f, "slot {slot}: delta from before version 0"),
            },
            Self::Delta(slot, e) => write!(f, "slot {slot}: {e}"),
            Self::Checksum => f.write_str("the batch checksum differs"),
        }
    }
}

/// The presence cache; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    slots: BTreeMap<Slot, CachedPresence>,
    /// Name → slot, for reads by name.
    names: HashMap<String, Slot>,
    /// Slots set aside until the answer to the next `Have` (see the module documentation).
    aside: BTreeMap<Slot, CachedPresence>,
    /// One more per change of what [`Self::entries`] returns.
    generation: u64,
}

/// The cache as the session, the driver and the client share it.
pub type SharedRoster = Arc<Mutex<Roster>>;

/// Locks a shared roster. A panic elsewhere cannot leave it torn: every change is
/// computed aside and committed without a fallible step.
pub fn lock(roster: &SharedRoster) -> MutexGuard<'_, Roster> {
    roster.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Roster {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache holding `entries` (from the state directory); a later entry for the same
    /// slot wins.
    pub fn from_entries(entries: impl IntoIterator<Item = CachedPresence>) -> Self {
        let mut roster = Self::new();
        for entry in entries {
            roster.put(entry);
        }
        roster.generation = 0;
        roster
    }

    /// Number of presentities held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Changes with every change of [`Self::entries`]: a writer compares it to the one it
    /// last wrote.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The cached state of a presentity, by its normalised name.
    pub fn get(&self, presentity: &str) -> Option<&CachedPresence> {
        self.names
            .get(presentity)
            .and_then(|slot| self.slots.get(slot))
    }

    /// The cached state of a slot.
    pub fn slot(&self, slot: Slot) -> Option<&CachedPresence> {
        self.slots.get(&slot)
    }

    /// Everything held, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = &CachedPresence> {
        self.slots.values()
    }

    /// The state vector for a `Have` of at most `max` entries, in slot order. Slots
    /// beyond `max` are set aside: the gateway restates them whole.
    pub fn have(&mut self, max: usize) -> Vec<Held> {
        while self.slots.len() > max {
            let Some((_, entry)) = self.slots.pop_last() else {
                break;
            };
            self.set_aside(entry);
        }
        self.slots
            .values()
            .map(|e| Held {
                slot: e.slot,
                version: e.version,
            })
            .collect()
    }

    /// A subscription's slot and current document (the answer to `Subscribe`).
    pub fn subscribed(&mut self, slot: Slot, version: Version, doc: PresenceDoc) {
        self.aside.remove(&slot);
        self.put(CachedPresence { slot, version, doc });
    }

    /// The subscription to `presentity` ended at the application's request; returns what
    /// was held.
    pub fn unsubscribed(&mut self, presentity: &str) -> Option<CachedPresence> {
        let slot = *self.names.get(presentity)?;
        self.remove(slot)
    }

    /// Applies a batch, all or nothing. `synced`: it answers the last `Have`, so slots set
    /// aside that it does not mention have ended. On error the batch's slots are set
    /// aside and nothing else changed.
    pub fn apply(&mut self, batch: &Batch, synced: bool) -> Result<Vec<RosterChange>, LostTrack> {
        let staged = match self.stage(batch) {
            Ok(staged) => staged,
            Err(lost) => {
                for change in &batch.changes {
                    if let Some(entry) = self.remove(change.slot()) {
                        self.set_aside(entry);
                    }
                }
                return Err(lost);
            }
        };
        let mut changes = Vec::new();
        for (slot, state) in staged {
            let Some(new) = state else {
                if let Some(old) = self.remove(slot).or_else(|| self.aside.remove(&slot)) {
                    changes.push(RosterChange::Ended(old));
                }
                continue;
            };
            let old = self.slots.get(&slot).or_else(|| self.aside.get(&slot));
            if old.is_some_and(|old| same_state(old, &new)) {
                // The state held stays (its `updated` is the more precise one).
                if let Some(old) = self.aside.remove(&slot) {
                    self.put(old);
                }
                continue;
            }
            self.aside.remove(&slot);
            self.put(new.clone());
            changes.push(RosterChange::Changed(new));
        }
        if synced {
            let ended = std::mem::take(&mut self.aside);
            changes.extend(ended.into_values().map(RosterChange::Ended));
        }
        Ok(changes)
    }

    /// The states `batch` leads to, in its order (`None`: gone), if it applies and its
    /// checksum matches.
    fn stage(&self, batch: &Batch) -> Result<Vec<(Slot, Option<CachedPresence>)>, LostTrack> {
        let mut staged: Vec<(Slot, Option<CachedPresence>)> = Vec::new();
        let mut index: HashMap<Slot, usize> = HashMap::new();
        let mut check = Check::new();
        for change in &batch.changes {
            let slot = change.slot();
            let current = match index.get(&slot) {
                Some(&at) => staged.get(at).and_then(|(_, state)| state.as_ref()),
                None => self.slots.get(&slot),
            };
            let state = match change {
                Change::Full {
                    version,
                    age,
                    name,
                    presence,
                    ..
                } => {
                    let presentity = match (name, current) {
                        (Some(name), _) => name.clone(),
                        (None, Some(held)) => held.doc.presentity.clone(),
                        (None, None) => return Err(LostTrack::UnknownSlot(slot)),
                    };
                    let doc = PresenceDoc {
                        presentity,
                        updated: updated_ms(batch.time, *age, *version),
                        presence: presence.clone(),
                    };
                    check.state(slot, &doc.presentity, *version, &doc.presence);
                    Some(CachedPresence {
                        slot,
                        version: *version,
                        doc,
                    })
                }
                Change::Delta {
                    version,
                    back,
                    age,
                    ops,
                    ..
                } => {
                    let held = current.ok_or(LostTrack::UnknownSlot(slot))?;
                    let base = version.checked_sub(Version::from(*back));
                    if base != Some(held.version) {
                        let held = held.version;
                        return Err(LostTrack::WrongBase { slot, held, base });
                    }
                    let mut presence = held.doc.presence.clone();
                    delta::apply(&mut presence, ops).map_err(|e| LostTrack::Delta(slot, e))?;
                    let doc = PresenceDoc {
                        presentity: held.doc.presentity.clone(),
                        updated: updated_ms(batch.time, *age, *version),
                        presence,
                    };
                    check.state(slot, &doc.presentity, *version, &doc.presence);
                    Some(CachedPresence {
                        slot,
                        version: *version,
                        doc,
                    })
                }
                Change::Gone { .. } => {
                    check.gone(slot);
                    None
                }
            };
            match index.get(&slot) {
                Some(&at) => {
                    if let Some(entry) = staged.get_mut(at) {
                        entry.1 = state;
                    }
                }
                None => {
                    index.insert(slot, staged.len());
                    staged.push((slot, state));
                }
            }
        }
        if check.finish() != batch.check {
            return Err(LostTrack::Checksum);
        }
        Ok(staged)
    }

    fn put(&mut self, entry: CachedPresence) {
        if let Some(old) = self.slots.get(&entry.slot)
            && old.doc.presentity != entry.doc.presentity
        {
            let old = old.doc.presentity.clone();
            self.forget_name(&old, entry.slot);
        }
        self.names.insert(entry.doc.presentity.clone(), entry.slot);
        self.slots.insert(entry.slot, entry);
        self.generation += 1;
    }

    fn remove(&mut self, slot: Slot) -> Option<CachedPresence> {
        let entry = self.slots.remove(&slot)?;
        self.forget_name(&entry.doc.presentity, slot);
        self.generation += 1;
        Some(entry)
    }

    /// Removes the name's mapping if it still points at `slot`, or points it at another
    /// slot of the same name (a resubscription elsewhere whose old slot is not gone yet).
    fn forget_name(&mut self, name: &str, slot: Slot) {
        if self.names.get(name) != Some(&slot) {
            return;
        }
        let other = self
            .slots
            .values()
            .find(|e| e.slot != slot && e.doc.presentity == name)
            .map(|e| e.slot);
        match other {
            Some(other) => self.names.insert(name.to_string(), other),
            None => self.names.remove(name),
        };
    }

    fn set_aside(&mut self, entry: CachedPresence) {
        self.generation += 1;
        // The earliest state set aside is what the application last saw.
        self.aside.entry(entry.slot).or_insert(entry);
    }
}

/// Whether two states of a slot are the same for the application: same presentity,
/// version and presence (`updated` may differ by the rounding of `age`).
fn same_state(old: &CachedPresence, new: &CachedPresence) -> bool {
    old.version == new.version
        && old.doc.presentity == new.doc.presentity
        && old.doc.presence == new.doc.presence
}

/// A change's `updated`, Unix ms: `age` seconds before the batch's `time`, or 0 for a
/// presentity that never published.
fn updated_ms(time: u64, age: u32, version: Version) -> u64 {
    if version == 0 {
        return 0;
    }
    time.saturating_sub(u64::from(age)).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TIME, delta, full, noted, sealed};
    use tern_wire::delta::Op;

    fn names(changes: &[RosterChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                RosterChange::Changed(e) => format!("{}@{}", e.doc.presentity, e.version),
                RosterChange::Ended(e) => format!("-{}", e.doc.presentity),
            })
            .collect()
    }

    fn held(roster: &mut Roster) -> Vec<(Slot, Version)> {
        roster
            .have(usize::MAX)
            .into_iter()
            .map(|h| (h.slot, h.version))
            .collect()
    }

    fn with_bob_and_carol() -> Roster {
        let mut roster = Roster::new();
        let b = sealed(
            1,
            vec![
                full(1, 3, Some("bob@example.com"), "a"),
                full(2, 1, Some("carol@example.com"), "x"),
            ],
            &[
                (1, "bob@example.com", 3, "a"),
                (2, "carol@example.com", 1, "x"),
            ],
        );
        roster.apply(&b, true).unwrap();
        roster
    }

    #[test]
    fn full_documents_deltas_and_ends_apply() {
        let mut roster = with_bob_and_carol();
        assert_eq!(held(&mut roster), vec![(1, 3), (2, 1)]);
        let bob = roster.get("bob@example.com").unwrap();
        assert_eq!(bob.doc.updated, (TIME - 10) * 1000);
        assert_eq!(bob.doc.presence, noted("a"));

        let b = sealed(
            2,
            vec![
                delta(1, 5, 2, "a", "b"),
                full(2, 2, None, "y"),
                Change::Gone { slot: 9 },
            ],
            &[
                (1, "bob@example.com", 5, "b"),
                (2, "carol@example.com", 2, "y"),
            ],
        );
        let changes = roster.apply(&b, false).unwrap();
        assert_eq!(
            names(&changes),
            vec!["bob@example.com@5", "carol@example.com@2"]
        );
        assert_eq!(
            roster.get("bob@example.com").unwrap().doc.presence,
            noted("b")
        );
        assert_eq!(
            roster.get("bob@example.com").unwrap().doc.updated,
            TIME * 1000
        );

        let b = sealed(3, vec![Change::Gone { slot: 2 }], &[]);
        let changes = roster.apply(&b, false).unwrap();
        assert_eq!(names(&changes), vec!["-carol@example.com"]);
        assert_eq!(roster.get("carol@example.com"), None);
        assert_eq!(held(&mut roster), vec![(1, 5)]);
    }

    #[test]
    fn a_restatement_of_the_same_state_is_no_change() {
        let mut roster = with_bob_and_carol();
        let b = sealed(
            2,
            vec![full(1, 3, None, "a")],
            &[(1, "bob@example.com", 3, "a")],
        );
        assert!(roster.apply(&b, false).unwrap().is_empty());
    }

    #[test]
    fn a_wrong_base_drops_the_batchs_slots_and_nothing_else() {
        let mut roster = with_bob_and_carol();
        let generation = roster.generation();
        let b = sealed(
            2,
            vec![full(2, 2, None, "y"), delta(1, 5, 1, "a", "b")],
            &[
                (2, "carol@example.com", 2, "y"),
                (1, "bob@example.com", 5, "b"),
            ],
        );
        assert_eq!(
            roster.apply(&b, false),
            Err(LostTrack::WrongBase {
                slot: 1,
                held: 3,
                base: Some(4)
            })
        );
        assert!(roster.is_empty(), "both slots of the batch are set aside");
        assert_ne!(roster.generation(), generation);
        assert_eq!(roster.have(10), vec![]);

        // The answer to the next Have restates bob unchanged (no event) and carol
        // changed; a slot set aside that it does not mention has ended.
        let mut roster = with_bob_and_carol();
        let b = sealed(
            2,
            vec![delta(1, 5, 9, "a", "b")],
            &[(1, "bob@example.com", 5, "b")],
        );
        assert!(roster.apply(&b, false).is_err());
        let b = sealed(
            3,
            vec![delta(2, 2, 7, "x", "y")],
            &[(2, "carol@example.com", 2, "y")],
        );
        assert!(roster.apply(&b, false).is_err());
        let synced = sealed(
            4,
            vec![full(1, 3, Some("bob@example.com"), "a")],
            &[(1, "bob@example.com", 3, "a")],
        );
        let changes = roster.apply(&synced, true).unwrap();
        assert_eq!(names(&changes), vec!["-carol@example.com"]);
        assert_eq!(held(&mut roster), vec![(1, 3)]);
    }

    #[test]
    fn a_checksum_mismatch_is_lost_track() {
        let mut roster = with_bob_and_carol();
        let mut b = sealed(
            2,
            vec![full(1, 4, None, "b")],
            &[(1, "bob@example.com", 4, "b")],
        );
        b.check[0] ^= 1;
        assert_eq!(roster.apply(&b, false), Err(LostTrack::Checksum));
        assert_eq!(held(&mut roster), vec![(2, 1)]);
        assert_eq!(roster.get("bob@example.com"), None);
    }

    #[test]
    fn unknown_slots_are_lost_track() {
        let mut roster = Roster::new();
        let b = sealed(
            1,
            vec![full(7, 1, None, "a")],
            &[(7, "x@example.com", 1, "a")],
        );
        assert_eq!(roster.apply(&b, false), Err(LostTrack::UnknownSlot(7)));
        let b = sealed(
            1,
            vec![delta(7, 2, 1, "a", "b")],
            &[(7, "x@example.com", 2, "b")],
        );
        assert_eq!(roster.apply(&b, false), Err(LostTrack::UnknownSlot(7)));
    }

    #[test]
    fn bad_deltas_never_panic() {
        let ops_list = vec![
            vec![Op::Remove { i: 0 }, Op::Remove { i: 0 }],
            vec![Op::Remove { i: 255 }],
            vec![Op::Insert {
                i: 200,
                tuple: noted("z").tuples[0].clone(),
            }],
            vec![
                Op::Insert {
                    i: 0,
                    tuple: noted("z").tuples[0].clone(),
                };
                40
            ],
        ];
        for ops in ops_list {
            let mut roster = with_bob_and_carol();
            let b = Batch {
                seq: 2,
                time: TIME,
                check: [0; 4],
                changes: vec![Change::Delta {
                    slot: 1,
                    version: 4,
                    back: 1,
                    age: u32::MAX,
                    ops,
                }],
            };
            assert!(matches!(
                roster.apply(&b, false),
                Err(LostTrack::Delta(1, _))
            ));
            assert_eq!(held(&mut roster), vec![(2, 1)]);
        }
        // Underflowing bases and huge ages are refused or clamped, not panics.
        let mut roster = with_bob_and_carol();
        let b = sealed(
            2,
            vec![delta(1, 0, u32::MAX, "a", "b")],
            &[(1, "bob@example.com", 0, "b")],
        );
        assert!(matches!(
            roster.apply(&b, false),
            Err(LostTrack::WrongBase { base: None, .. })
        ));
        assert_eq!(updated_ms(5, u32::MAX, 1), 0);
        assert_eq!(updated_ms(u64::MAX, 0, 1), u64::MAX);
        assert_eq!(updated_ms(TIME, 3, 0), 0, "never published");
    }

    #[test]
    fn subscriptions_and_reads_by_name() {
        let mut roster = with_bob_and_carol();
        let doc = PresenceDoc {
            presentity: "dave@example.com".into(),
            updated: 5,
            presence: noted("d"),
        };
        roster.subscribed(4, 0, doc.clone());
        assert_eq!(roster.get("dave@example.com").unwrap().doc, doc);
        assert_eq!(roster.slot(4).unwrap().version, 0);
        assert_eq!(roster.len(), 3);
        let gone = roster.unsubscribed("carol@example.com").unwrap();
        assert_eq!(gone.slot, 2);
        assert_eq!(roster.unsubscribed("carol@example.com"), None);
        assert_eq!(held(&mut roster), vec![(1, 3), (4, 0)]);
        // Two slots of one name (a resubscription whose old slot is not gone yet).
        roster.subscribed(
            8,
            1,
            PresenceDoc {
                presentity: "dave@example.com".into(),
                ..doc.clone()
            },
        );
        roster.remove(8);
        assert_eq!(roster.get("dave@example.com").unwrap().slot, 4);
        // A slot given to another name keeps the index straight.
        roster.subscribed(
            1,
            9,
            PresenceDoc {
                presentity: "erin@example.com".into(),
                ..doc
            },
        );
        assert_eq!(roster.get("bob@example.com"), None);
        assert_eq!(roster.get("erin@example.com").unwrap().slot, 1);
    }

    #[test]
    fn a_have_without_room_sets_the_rest_aside() {
        let mut roster = with_bob_and_carol();
        let have = roster.have(1);
        assert_eq!(
            have,
            vec![Held {
                slot: 1,
                version: 3
            }]
        );
        assert_eq!(roster.get("carol@example.com"), None);
        // Restated whole in the answer: no change to report.
        let synced = sealed(
            2,
            vec![full(2, 1, Some("carol@example.com"), "x")],
            &[(2, "carol@example.com", 1, "x")],
        );
        assert!(roster.apply(&synced, true).unwrap().is_empty());
        assert_eq!(held(&mut roster), vec![(1, 3), (2, 1)]);
    }

    #[test]
    fn entries_round_trip() {
        let roster = with_bob_and_carol();
        let entries: Vec<CachedPresence> = roster.entries().cloned().collect();
        let again = Roster::from_entries(entries.clone());
        assert_eq!(again.entries().cloned().collect::<Vec<_>>(), entries);
        assert_eq!(again.generation(), 0);
        assert_eq!(again.get("carol@example.com").unwrap().slot, 2);
    }
}
