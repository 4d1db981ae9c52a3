//! Builders shared by the unit tests of the presence cache and the session: documents
//! that differ by their note, changes, and batches sealed with the checksum the gateway
//! would compute.

use tern_wire::delta::Check;
use tern_wire::{Basic, Batch, Change, Presence, Slot, Tuple, Version};

/// The gateway's clock in the test batches, Unix seconds.
pub(crate) const TIME: u64 = 1_700_000_000;

/// A one-tuple OPEN document with this note.
pub(crate) fn noted(note: &str) -> Presence {
    Presence {
        tuples: vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: None,
            contact: None,
            note: Some(note.into()),
            at: None,
            ext: vec![],
        }],
        card: vec![],
    }
}

/// A whole document, changed 10 s before the batch.
pub(crate) fn full(slot: Slot, version: Version, name: Option<&str>, note: &str) -> Change {
    Change::Full {
        slot,
        version,
        age: 10,
        name: name.map(Into::into),
        presence: noted(note),
    }
}

/// The delta between two notes.
pub(crate) fn delta(slot: Slot, version: Version, back: u32, from: &str, to: &str) -> Change {
    let ops = tern_wire::delta::diff(&noted(from), &noted(to)).expect("a delta");
    Change::Delta {
        slot,
        version,
        back,
        age: 0,
        ops,
    }
}

/// A batch whose checksum is the gateway's for these resulting states (slot, name,
/// version, note): one per Full or Delta, in order; Gone changes need none.
pub(crate) fn sealed(
    seq: u32,
    changes: Vec<Change>,
    states: &[(Slot, &str, Version, &str)],
) -> Batch {
    let mut check = Check::new();
    let mut states = states.iter();
    for change in &changes {
        match change {
            Change::Gone { slot } => check.gone(*slot),
            _ => {
                let (slot, name, version, note) = states.next().expect("a state per change");
                check.state(*slot, name, *version, &noted(note));
            }
        }
    }
    Batch {
        seq,
        time: TIME,
        check: check.finish(),
        changes,
    }
}
