//! Reconnect delays: exponential backoff with jitter, capped.
//!
//! Owns only the arithmetic. It is pure: the caller supplies the random jitter and does
//! the waiting, so it may not sleep, read a clock or draw random numbers itself.
//!
//! The n-th delay (from 0) is drawn uniformly from `[c/2, c]` where
//! `c = min(FIRST * 2^n, CAP)`: never instant (a gateway that just restarted is not
//! hammered by every client at once), never longer than `CAP`.

use std::time::Duration;

/// The ceiling of the first delay.
pub(crate) const FIRST: Duration = Duration::from_millis(500);
/// The largest delay.
pub(crate) const CAP: Duration = Duration::from_secs(30);

/// The attempt counter of one run of reconnection attempts.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt; `jitter` is a uniform random number in `[0, 1]`.
    pub(crate) fn next_delay(&mut self, jitter: f64) -> Duration {
        let ceiling = FIRST.saturating_mul(1u32 << self.attempt.min(16)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Starts over: the link was up long enough to count as healthy.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let mut b = Backoff::default();
        let ceilings: Vec<u64> = (0..10)
            .map(|_| b.next_delay(1.0).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        for _ in 0..100 {
            assert_eq!(b.next_delay(1.0), CAP, "no overflow after many attempts");
        }
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), FIRST / 2);
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.5), FIRST.mul_f64(0.75));
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(f64::NAN), FIRST, "bad jitter is clamped");
        assert_eq!(b.next_delay(-3.0), FIRST);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(1.0);
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), FIRST);
    }
}
