//! Watcher information (RFC 2778 2.2, RFC 2779 5.1.11, 5.1.12): who subscribes to a
//! presentity, and who fetched its presence recently (fetchers and pollers), for its
//! principal to see.
//!
//! Subscribers come from the durable subscriptions; recent fetchers are kept in memory
//! for `watcher_window_ms`, at most [`FETCHERS_MAX`] per presentity (the least recent go
//! first), and are lost when the gateway restarts. When access rules let a watcher stay
//! anonymous, this is where it will be left out.
//!
//! This module owns the fetch log and the answer; it changes no durable state.

use std::collections::HashMap;

use tern_wire::frame::ReqId;
use tern_wire::{Down, Fetcher};

use super::{ConnId, Hub, Millis};

/// Most recent fetchers remembered per presentity.
pub(super) const FETCHERS_MAX: usize = 256;

/// One fetcher's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fetches {
    last: Millis,
    count: u32,
}

/// Recent fetchers per presentity.
#[derive(Debug, Default)]
pub(super) struct FetchLog {
    by_presentity: HashMap<String, HashMap<String, Fetches>>,
}

impl FetchLog {
    /// `fetcher` fetched `presentity` at `now`; records older than `window` are dropped.
    pub(super) fn record(&mut self, now: Millis, window: Millis, presentity: &str, fetcher: &str) {
        if presentity == fetcher {
            return; // one's own presence is not watching
        }
        let log = self.by_presentity.entry(presentity.into()).or_default();
        let entry = log.entry(fetcher.into()).or_insert(Fetches {
            last: now,
            count: 0,
        });
        entry.last = now;
        entry.count = entry.count.saturating_add(1);
        // Sweeping costs a pass over the log: only when it is over its bound. (Listing
        // filters by the window anyway.)
        if log.len() > FETCHERS_MAX {
            log.retain(|_, f| now.saturating_sub(f.last) < window);
        }
        if log.len() > FETCHERS_MAX
            && let Some(oldest) = log
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            log.remove(&oldest);
        }
    }

    /// The fetchers of `presentity` within `window`, most recent first.
    fn recent(&self, now: Millis, window: Millis, presentity: &str) -> Vec<Fetcher> {
        let mut recent: Vec<(&String, &Fetches)> = self
            .by_presentity
            .get(presentity)
            .into_iter()
            .flatten()
            .filter(|(_, f)| now.saturating_sub(f.last) < window)
            .collect();
        recent.sort_by(|a, b| b.1.last.cmp(&a.1.last).then_with(|| a.0.cmp(b.0)));
        recent
            .into_iter()
            .map(|(who, f)| Fetcher {
                who: who.clone(),
                age: u32::try_from(now.saturating_sub(f.last) / 1000).unwrap_or(u32::MAX),
                count: f.count,
            })
            .collect()
    }
}

impl Hub {
    /// `Up::Watchers`: the principal's subscribers and recent fetchers.
    pub(super) fn watchers(&mut self, now: Millis, conn: ConnId, user: &str, req: ReqId) {
        // Anonymous watchers are shown only as such (`anonymous@domain`).
        let mut subscribers: Vec<String> = self
            .rosters
            .watchers(user)
            .map(|w| crate::access::public_name(w).into_owned())
            .collect();
        subscribers.sort();
        let window = self.config.watcher_window_ms;
        let fetchers = self.fetches.recent(now, window, user);
        self.send(
            conn,
            Down::Watchers {
                req,
                subscribers,
                fetchers,
            },
        );
    }

    /// Tells every session of `target`'s principal that `watcher` subscribed.
    pub(super) fn announce_watcher(&mut self, target: &str, watcher: &str) {
        let conns = self.online.get(target).cloned().unwrap_or_default();
        for conn in conns {
            let frame = Down::Watched {
                watcher: crate::access::public_name(watcher).into_owned(),
            };
            self.send(conn, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetchers_are_counted_ordered_and_forgotten_after_the_window() {
        let mut log = FetchLog::default();
        log.record(1_000, 60_000, "a@x", "b@x");
        log.record(2_000, 60_000, "a@x", "c@x");
        log.record(3_000, 60_000, "a@x", "b@x");
        log.record(3_000, 60_000, "a@x", "a@x");
        let recent = log.recent(5_000, 60_000, "a@x");
        let seen: Vec<(&str, u32, u32)> = recent
            .iter()
            .map(|f| (f.who.as_str(), f.age, f.count))
            .collect();
        assert_eq!(seen, [("b@x", 2, 2), ("c@x", 3, 1)]);
        assert!(log.recent(70_000, 60_000, "a@x").is_empty());
        for i in 0..FETCHERS_MAX + 10 {
            log.record(10_000 + i as u64, 60_000, "a@x", &format!("f{i}@x"));
        }
        assert_eq!(log.recent(10_500, 60_000, "a@x").len(), FETCHERS_MAX);
    }
}
