//! Admission of new connections: at most `connections_per_minute` per source IP address
//! (with bursts of `connection_burst`), so that one address flooding the gateway with
//! handshakes slows only itself. Over the limit, the connection is refused before its
//! handshake (QUIC `CONNECTION_REFUSED`), which costs the gateway no cryptography; the
//! client backs off and tries again.
//!
//! This module owns the per-address buckets (governor, on the real clock: this is the
//! runtime) and nothing else.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};

/// Per-address admission; `None` inside when unlimited.
pub(crate) struct Admission(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl Admission {
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Quota::per_minute(rate).allow_burst(burst)
        });
        Self(quota.map(DefaultKeyedRateLimiter::hashmap))
    }

    /// Whether a new connection from `ip` may proceed.
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        self.0.as_ref().is_none_or(|l| l.check_key(&ip).is_ok())
    }

    /// Forgets addresses whose buckets are full again.
    pub(crate) fn shrink(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_over_its_burst_is_refused_and_others_are_not() {
        let a = Admission::new(60, 2);
        let (one, two) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(a.admit(one) && a.admit(one));
        assert!(!a.admit(one));
        assert!(a.admit(two));
        let unlimited = Admission::new(0, 0);
        assert!((0..1000).all(|_| unlimited.admit(one)));
        a.shrink();
    }
}
