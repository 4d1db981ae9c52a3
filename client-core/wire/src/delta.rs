//! Deltas between two presence documents, and the checksum that proves a client applied
//! them to the right base.
//!
//! A delta is a list of [`Op`]s applied in order to the base document. Tuples are
//! addressed by their index in the document *as it stands when the op applies*; fields
//! are replaced whole. [`diff`] (std only: the gateway's side) produces removals first,
//! highest index first, then for each tuple of the target in order either the fields that
//! changed or an insertion, then the card if it changed. [`apply`] (both builds: the
//! client's side) checks every index and capacity and never panics.
//!
//! Identifying tuples by index rather than by their `id` is what keeps a note change to
//! five bytes plus the note: tuple ids are only ever sent in [`Op::Insert`].

use serde::{Deserialize, Serialize};

use crate::presence::{Availability, Basic, CardField, Ext, Presence, Tuple};
use crate::sync::{Slot, Version};
use crate::types::{List, Text};

/// One change to a presence document.
// Without an allocator (no_std) nothing can be boxed: every variant is held inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// 0: replaces one field of the tuple at index `i`.
    Set {
        /// The tuple's index.
        i: u8,
        /// The field and its new value.
        field: Field,
    },
    /// 1: inserts a tuple at index `i` (`i` may be the length: appends).
    Insert {
        /// Where.
        i: u8,
        /// The tuple.
        tuple: Tuple,
    },
    /// 2: removes the tuple at index `i`.
    Remove {
        /// The tuple's index.
        i: u8,
    },
    /// 3: replaces the contact card.
    Card(List<CardField>),
}

/// A tuple field with its new value (the tuple's `id` never changes: a renamed tuple is
/// removed and inserted).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// 0: OPEN or CLOSED.
    Basic(Basic),
    /// 1: availability.
    Availability(Option<Availability>),
    /// 2: communication address.
    Contact(Option<Text>),
    /// 3: note.
    Note(Option<Text>),
    /// 4: the publisher's timestamp, Unix seconds.
    At(Option<u64>),
    /// 5: the extensions, whole.
    Ext(List<Ext>),
}

/// Why a delta does not apply: the client's base is not the one the delta was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// An op names a tuple index the document does not have.
    #[error("no tuple at index {0}")]
    NoSuchTuple(u8),
    /// The document would have more tuples than the build can hold.
    #[error("too many tuples")]
    TooMany,
}

/// Applies `ops` in order. On error the document may be partly changed: the client must
/// then drop it and ask for it whole.
pub fn apply(doc: &mut Presence, ops: &[Op]) -> Result<(), DeltaError> {
    for op in ops {
        match op {
            Op::Set { i, field } => {
                let tuple = doc
                    .tuples
                    .get_mut(usize::from(*i))
                    .ok_or(DeltaError::NoSuchTuple(*i))?;
                set(tuple, field.clone());
            }
            Op::Insert { i, tuple } => insert(&mut doc.tuples, *i, tuple.clone())?,
            Op::Remove { i } => {
                if usize::from(*i) >= doc.tuples.len() {
                    return Err(DeltaError::NoSuchTuple(*i));
                }
                doc.tuples.remove(usize::from(*i));
            }
            Op::Card(card) => doc.card = card.clone(),
        }
    }
    Ok(())
}

fn set(tuple: &mut Tuple, field: Field) {
    match field {
        Field::Basic(v) => tuple.basic = v,
        Field::Availability(v) => tuple.availability = v,
        Field::Contact(v) => tuple.contact = v,
        Field::Note(v) => tuple.note = v,
        Field::At(v) => tuple.at = v,
        Field::Ext(v) => tuple.ext = v,
    }
}

#[cfg(feature = "std")]
fn insert(tuples: &mut List<Tuple>, i: u8, tuple: Tuple) -> Result<(), DeltaError> {
    let i = usize::from(i);
    if i > tuples.len() {
        return Err(DeltaError::NoSuchTuple(i as u8));
    }
    if tuples.len() >= crate::limits::TUPLES_MAX {
        return Err(DeltaError::TooMany);
    }
    tuples.insert(i, tuple);
    Ok(())
}

#[cfg(not(feature = "std"))]
fn insert(tuples: &mut List<Tuple>, i: u8, tuple: Tuple) -> Result<(), DeltaError> {
    let at = usize::from(i);
    if at > tuples.len() {
        return Err(DeltaError::NoSuchTuple(i));
    }
    tuples.insert(at, tuple).map_err(|_| DeltaError::TooMany)
}

/// The ops that turn `base` into `target`, or `None` when the tuples common to both are
/// in a different order, or either document repeats a tuple id: send `target` whole.
#[cfg(feature = "std")]
pub fn diff(base: &Presence, target: &Presence) -> Option<std::vec::Vec<Op>> {
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn ids(p: &Presence) -> BTreeSet<&str> {
        p.tuples.iter().map(|t| t.id.as_str()).collect()
    }
    let (base_ids, target_ids) = (ids(base), ids(target));
    if base_ids.len() != base.tuples.len() || target_ids.len() != target.tuples.len() {
        return None;
    }
    let mut ops = Vec::new();
    // Indexes are bytes: longer documents (never valid, `TUPLES_MAX` is 16) go whole.
    if base.tuples.len() > usize::from(u8::MAX) || target.tuples.len() > usize::from(u8::MAX) {
        return None;
    }
    for (i, tuple) in base.tuples.iter().enumerate().rev() {
        if !target_ids.contains(tuple.id.as_str()) {
            ops.push(Op::Remove { i: i as u8 });
        }
    }
    let kept: Vec<&Tuple> = base
        .tuples
        .iter()
        .filter(|t| target_ids.contains(t.id.as_str()))
        .collect();
    let common: Vec<&str> = target
        .tuples
        .iter()
        .map(|t| t.id.as_str())
        .filter(|id| base_ids.contains(id))
        .collect();
    if !kept
        .iter()
        .map(|t| t.id.as_str())
        .eq(common.iter().copied())
    {
        return None;
    }
    let mut kept = kept.into_iter().peekable();
    for (i, tuple) in target.tuples.iter().enumerate() {
        let i = i as u8;
        match kept.peek() {
            Some(old) if old.id == tuple.id => {
                fields(old, tuple, |field| ops.push(Op::Set { i, field }));
                kept.next();
            }
            _ => ops.push(Op::Insert {
                i,
                tuple: tuple.clone(),
            }),
        }
    }
    if base.card != target.card {
        ops.push(Op::Card(target.card.clone()));
    }
    Some(ops)
}

/// Calls `out` with every field of `new` that differs from `old`, in field order.
#[cfg(feature = "std")]
fn fields(old: &Tuple, new: &Tuple, mut out: impl FnMut(Field)) {
    if old.basic != new.basic {
        out(Field::Basic(new.basic));
    }
    if old.availability != new.availability {
        out(Field::Availability(new.availability));
    }
    if old.contact != new.contact {
        out(Field::Contact(new.contact.clone()));
    }
    if old.note != new.note {
        out(Field::Note(new.note.clone()));
    }
    if old.at != new.at {
        out(Field::At(new.at));
    }
    if old.ext != new.ext {
        out(Field::Ext(new.ext.clone()));
    }
}

/// The checksum of a [`crate::sync::Batch`]: CRC-32 (IEEE 802.3, as in zlib) over, for
/// each change in order, `postcard(slot) ‖ postcard(name) ‖ postcard(version) ‖
/// postcard(presence)` of the state it leads to, or `postcard(slot)` for a
/// [`crate::sync::Change::Gone`]. The name is the presentity's normalised address; the
/// presence is the whole resulting document as this watcher may see it. Both sides compute
/// it by streaming the encoding into the hash, without a buffer.
#[derive(Debug, Clone, Default)]
pub struct Check(crc32fast::Hasher);

impl Check {
    /// A checksum over nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the state one change leads to.
    pub fn state(&mut self, slot: Slot, name: &str, version: Version, presence: &Presence) {
        self.feed(&slot);
        self.feed(name);
        self.feed(&version);
        self.feed(presence);
    }

    /// Adds a slot that is gone.
    pub fn gone(&mut self, slot: Slot) {
        self.feed(&slot);
    }

    /// The checksum, as it is sent.
    pub fn finish(self) -> [u8; 4] {
        self.0.finalize().to_le_bytes()
    }

    fn feed<T: Serialize + ?Sized>(&mut self, value: &T) {
        // Feeding never fails, and these types always serialise: no error can come back.
        let _ = postcard::serialize_with_flavor(value, Feed(&mut self.0));
    }
}

/// A postcard output that hashes the bytes instead of keeping them.
struct Feed<'a>(&'a mut crc32fast::Hasher);

impl postcard::ser_flavors::Flavor for Feed<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
