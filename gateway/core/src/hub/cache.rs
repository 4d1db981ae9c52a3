//! The presence caches: hot current documents, earlier versions (the bases of deltas),
//! and computed deltas, each a bounded least-recently-used map.
//!
//! Deltas are computed once per (presentity, base version, version) and shared by every
//! watcher that holds the same base: a change fanned out to a thousand watchers that are
//! up to date costs one diff. A cache never decides who may see what: callers apply
//! access decisions before they ask (RFC 2779 3.3.3), and a delta's key includes the
//! watcher's view (the index of the rule that gives it, stable within one epoch of the
//! presentity's rules).
//!
//! This module owns the three caches and their sizes. It reads the store only through
//! the caller (a miss on the current document is the caller's to fill) and never sends.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use tern_wire::codec::body_size;
use tern_wire::delta::{self, Op};
use tern_wire::{Presence, Version, View};

use crate::config::CacheSizes;
use crate::store::Versioned;

/// The cached result of a diff: `None` when the document must be sent whole.
pub(super) type Ops = Arc<Option<Vec<Op>>>;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Caches {
    current: LruCache<String, Versioned>,
    versions: LruCache<(String, Version), Arc<Presence>>,
    deltas: LruCache<(String, Version, Version, usize), Ops>,
    /// Counters, for benchmarks and logs.
    pub(super) stats: CacheStats,
}

/// Hits and misses since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Deltas taken from the cache.
    pub delta_hits: u64,
    /// Deltas computed.
    pub delta_misses: u64,
    /// Base versions no longer cached: the document went whole.
    pub base_misses: u64,
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl Caches {
    pub(super) fn new(sizes: CacheSizes) -> Self {
        Self {
            current: LruCache::new(cap(sizes.documents)),
            versions: LruCache::new(cap(sizes.versions)),
            deltas: LruCache::new(cap(sizes.deltas)),
            stats: CacheStats::default(),
        }
    }

    /// The current document of a presentity, if cached.
    pub(super) fn current(&mut self, presentity: &str) -> Option<&Versioned> {
        self.current.get(presentity)
    }

    /// Records a presentity's current document (just stored, or read from the store).
    pub(super) fn put_current(&mut self, doc: Versioned) {
        let key = (doc.doc.presentity.clone(), doc.version);
        if !self.versions.contains(&key) {
            self.versions.put(key, Arc::new(doc.doc.presence.clone()));
        }
        self.current.put(doc.doc.presentity.clone(), doc);
    }

    /// Forgets a presentity's current document (its principal was provisioned again).
    pub(super) fn forget(&mut self, presentity: &str) {
        self.current.pop(presentity);
    }

    /// The ops from version `base` of a presentity to `to` (whose document is
    /// `target`); `None` inside when the base is not cached or a diff cannot express the
    /// change (send it whole).
    /// `view` is the watcher's view with its key (`target` is already in that view);
    /// `None` for the whole document.
    pub(super) fn delta(
        &mut self,
        presentity: &str,
        base: Version,
        to: Version,
        view: Option<&(usize, View)>,
        target: &Presence,
    ) -> Ops {
        let key = (
            presentity.to_string(),
            base,
            to,
            view.map_or(usize::MAX, |v| v.0),
        );
        if let Some(ops) = self.deltas.get(&key) {
            self.stats.delta_hits += 1;
            return ops.clone();
        }
        let Some(old) = self.versions.get(&(presentity.to_string(), base)).cloned() else {
            self.stats.base_misses += 1;
            return Arc::new(None);
        };
        self.stats.delta_misses += 1;
        let old = match view {
            Some((_, view)) => Arc::new(crate::access::apply_view(view, &old)),
            None => old,
        };
        let ops = delta::diff(&old, target).filter(|ops| cheaper(ops, target));
        let ops = Arc::new(ops);
        self.deltas.put(key, ops.clone());
        ops
    }
}

/// Whether sending `ops` costs fewer bytes than sending `whole`.
fn cheaper(ops: &[Op], whole: &Presence) -> bool {
    body_size(&ops) < body_size(whole)
}
