//! Rate limits per principal and per source address (RFC 2778 section 5's spam and
//! flooding; issue 5 part 8): how many messages, subscriptions and fetches one principal
//! may make, by its domain's [`RateLimits`], and how many all sessions from one source
//! address may make, by its domain's per-address limits (off by default). A request over a limit is answered `Limited { retry_after }` before
//! anything else happens, so it changes nothing and costs no storage; other principals
//! have their own buckets.
//!
//! The buckets are governor's GCRA, keyed by principal or source address, on a clock this module advances
//! to the hub's `now`: the core still reads no clock, and tests control time.
//!
//! This module owns the buckets and the decision; it knows nothing of sessions or frames.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::Millis;
use crate::config::{DomainConfig, RateLimits};

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Message,
    Subscription,
    Fetch,
}

type Bucket = RateLimiter<
    String,
    HashMapStateStore<String>,
    FakeRelativeClock,
    NoOpMiddleware<<FakeRelativeClock as Clock>::Instant>,
>;

/// One bucket per limited kind, keyed by whoever is counted.
type Buckets = Vec<(Kind, Bucket)>;

/// A domain's buckets: per principal, and per source address.
struct Table {
    principals: Buckets,
    addresses: Buckets,
}

/// The buckets of every domain and kind.
pub(super) struct Limiter {
    clock: FakeRelativeClock,
    /// The hub time the clock stands at.
    at: Millis,
    /// Domain → its buckets.
    tables: HashMap<String, Table>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("at", &self.at)
            .field("domains", &self.tables.len())
            .finish()
    }
}

impl Limiter {
    pub(super) fn new(domains: &[DomainConfig]) -> Self {
        let clock = FakeRelativeClock::default();
        let buckets = |rates: &RateLimits| -> Buckets {
            [Kind::Message, Kind::Subscription, Kind::Fetch]
                .into_iter()
                .filter_map(|kind| {
                    let quota = quota(rates, kind)?;
                    Some((kind, RateLimiter::hashmap_with_clock(quota, clock.clone())))
                })
                .collect()
        };
        let tables = domains
            .iter()
            .map(|domain| {
                let table = Table {
                    principals: buckets(&domain.rates),
                    addresses: buckets(&domain.address_rates),
                };
                (domain.name.clone(), table)
            })
            .collect();
        Self {
            clock,
            at: 0,
            tables,
        }
    }

    /// Counts one request of `kind` by `principal` at `now`: `Err(retry_after)` if it is
    /// over its domain's limit.
    pub(super) fn check(
        &mut self,
        now: Millis,
        principal: &str,
        kind: Kind,
    ) -> Result<(), Duration> {
        let domain = principal.rsplit_once('@').map_or("", |(_, d)| d);
        self.count(now, domain, |t| &t.principals, principal, kind)
    }

    /// Counts one request of `kind` by `key`, someone outside the gateway's domains (a
    /// remote XMPP sender), against `domain`'s per-principal limits: it is limited like
    /// a principal of the domain it writes to.
    pub(super) fn check_in(
        &mut self,
        now: Millis,
        domain: &str,
        key: &str,
        kind: Kind,
    ) -> Result<(), Duration> {
        self.count(now, domain, |t| &t.principals, key, kind)
    }

    /// Counts one request of `kind` from source address `source` to `domain` at `now`,
    /// by the domain's per-address limits.
    pub(super) fn check_address(
        &mut self,
        now: Millis,
        domain: &str,
        source: &str,
        kind: Kind,
    ) -> Result<(), Duration> {
        self.count(now, domain, |t| &t.addresses, source, kind)
    }

    /// Counts one request of `kind` by `key` in the buckets `pick` chooses of `domain`.
    fn count(
        &mut self,
        now: Millis,
        domain: &str,
        pick: impl Fn(&Table) -> &Buckets,
        key: &str,
        kind: Kind,
    ) -> Result<(), Duration> {
        if now > self.at {
            self.clock.advance(Duration::from_millis(now - self.at));
            self.at = now;
        }
        let bucket = self
            .tables
            .get(domain)
            .and_then(|t| pick(t).iter().find(|(k, _)| *k == kind));
        let Some((_, bucket)) = bucket else {
            return Ok(());
        };
        match bucket.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets buckets that are full again (idle principals), to bound memory.
    pub(super) fn shrink(&mut self) {
        for table in self.tables.values() {
            for (_, bucket) in table.principals.iter().chain(&table.addresses) {
                bucket.retain_recent();
            }
        }
    }
}

fn quota(rates: &RateLimits, kind: Kind) -> Option<Quota> {
    let per_minute = match kind {
        Kind::Message => rates.messages_per_minute,
        Kind::Subscription => rates.subscriptions_per_minute,
        Kind::Fetch => rates.fetches_per_minute,
    };
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(rates.burst).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_minute(per_minute).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> Limiter {
        let mut domain = DomainConfig::new("example.com");
        domain.rates = RateLimits {
            messages_per_minute: per_minute,
            subscriptions_per_minute: 0,
            fetches_per_minute: per_minute,
            burst,
        };
        Limiter::new(&[domain])
    }

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_rate() {
        let mut l = limiter(60, 3);
        for _ in 0..3 {
            assert_eq!(l.check(1_000, "a@example.com", Kind::Message), Ok(()));
        }
        let wait = l.check(1_000, "a@example.com", Kind::Message).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1), "one per second refills");
        // Another principal and another kind are unaffected; 0 means unlimited.
        assert_eq!(l.check(1_000, "b@example.com", Kind::Message), Ok(()));
        assert_eq!(l.check(1_000, "a@example.com", Kind::Fetch), Ok(()));
        for _ in 0..100 {
            assert_eq!(l.check(1_000, "a@example.com", Kind::Subscription), Ok(()));
        }
        // After the wait, one more goes.
        assert_eq!(l.check(2_000, "a@example.com", Kind::Message), Ok(()));
        assert!(l.check(2_000, "a@example.com", Kind::Message).is_err());
    }

    #[test]
    fn a_source_address_has_its_own_budget_across_principals() {
        let mut domain = DomainConfig::new("example.com");
        domain.rates = RateLimits::OFF;
        domain.address_rates = RateLimits {
            fetches_per_minute: 60,
            burst: 2,
            ..RateLimits::OFF
        };
        let mut l = Limiter::new(&[domain]);
        let from = |l: &mut Limiter, source| l.check_address(0, "example.com", source, Kind::Fetch);
        assert_eq!(from(&mut l, "10.0.0.1"), Ok(()));
        assert_eq!(from(&mut l, "10.0.0.1"), Ok(()));
        assert!(from(&mut l, "10.0.0.1").is_err());
        assert_eq!(from(&mut l, "10.0.0.2"), Ok(()));
        // Principals themselves are unlimited here.
        assert_eq!(l.check(0, "a@example.com", Kind::Fetch), Ok(()));
    }

    #[test]
    fn other_domains_have_their_own_limits() {
        let mut l = limiter(60, 1);
        assert_eq!(l.check(0, "a@example.com", Kind::Message), Ok(()));
        assert!(l.check(0, "a@example.com", Kind::Message).is_err());
        for _ in 0..10 {
            assert_eq!(l.check(0, "a@elsewhere.org", Kind::Message), Ok(()));
        }
        l.shrink();
    }
}
