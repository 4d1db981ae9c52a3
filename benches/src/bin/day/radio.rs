//! What a cellular radio makes of a series of transmissions, and the order statistics of
//! the report.
//!
//! The radio model is the usual one for LTE and 5G power states: any datagram, either
//! way, brings the radio up (a *wakeup* if it was idle) and keeps it up for a *tail*
//! after the last one. The energy a phone spends on the network is roughly proportional
//! to the time the radio is up, and each wakeup adds a promotion cost on top.

/// Wakeups and time up, within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Radio {
    /// Times the radio went from idle to up.
    pub(crate) wakeups: usize,
    /// Seconds the radio was up.
    pub(crate) up_s: f64,
}

/// Applies the model to transmission times (seconds, any order) in the window
/// `[0, end)`. Times before 0 only decide whether the radio is already up at 0; times at
/// or after `end` are ignored.
pub(crate) fn radio(times: &[f64], tail: f64, end: f64) -> Radio {
    let mut times: Vec<f64> = times.iter().copied().filter(|t| *t < end).collect();
    times.sort_by(f64::total_cmp);
    let mut wakeups = 0;
    let mut up_s = 0.0;
    // The end of the current up period, if any.
    let mut until: Option<f64> = None;
    for t in times {
        match until {
            Some(u) if t <= u => {}
            _ => {
                if t >= 0.0 {
                    wakeups += 1;
                }
                if let Some(u) = until {
                    up_s += u.clamp(0.0, end);
                }
                // Open a new period at t; count what lies in the window at its close.
                up_s -= t.clamp(0.0, end);
            }
        }
        until = Some(t + tail);
    }
    if let Some(u) = until {
        up_s += u.clamp(0.0, end);
    }
    Radio { wakeups, up_s }
}

/// Distinct flushes: runs of arrivals (seconds, sorted or not) no more than `gap` apart.
pub(crate) fn bursts(times: &[f64], gap: f64) -> usize {
    let mut times = times.to_vec();
    times.sort_by(f64::total_cmp);
    let mut count = 0;
    let mut last: Option<f64> = None;
    for t in times {
        if last.is_none_or(|l| t - l > gap) {
            count += 1;
        }
        last = Some(t);
    }
    count
}

/// The nearest-rank `q` quantile of `samples` (sorted by this function), `None` when
/// there are none.
pub(crate) fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let i = (q * samples.len() as f64).ceil() as usize;
    Some(samples[i.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_transmission_is_one_wakeup_and_one_tail() {
        assert_eq!(
            radio(&[10.0], 5.0, 100.0),
            Radio {
                wakeups: 1,
                up_s: 5.0
            }
        );
    }

    #[test]
    fn transmissions_within_the_tail_share_a_wakeup() {
        let r = radio(&[10.0, 12.0, 16.9, 30.0], 5.0, 100.0);
        assert_eq!(r.wakeups, 2);
        assert!((r.up_s - (11.9 + 5.0)).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn the_window_cuts_both_ends() {
        // Up since before the window: no wakeup at 1, up from 0 to 6.
        let r = radio(&[-2.0, 1.0, 98.0, 120.0], 5.0, 100.0);
        assert_eq!(r.wakeups, 1);
        assert!((r.up_s - (6.0 + 2.0)).abs() < 1e-9, "{r:?}");
        // Idle at 0: the first transmission wakes it.
        assert_eq!(radio(&[-10.0, 1.0], 5.0, 100.0).wakeups, 1);
    }

    #[test]
    fn bursts_split_on_gaps() {
        assert_eq!(bursts(&[0.0, 0.05, 0.1, 3.0, 3.5, 10.0], 1.0), 3);
        assert_eq!(bursts(&[], 1.0), 0);
    }

    #[test]
    fn nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut s, 0.5), Some(50.0));
        assert_eq!(quantile(&mut s, 0.95), Some(95.0));
        assert_eq!(quantile(&mut s, 1.0), Some(100.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
