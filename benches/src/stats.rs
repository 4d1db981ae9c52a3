//! Order statistics and table printing for the loopback harnesses.

use std::time::Duration;

/// Median, 99th percentile, extremes and mean of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// Summarises samples; `None` when there are none.
pub fn summarise(samples: &mut [Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |q: f64| {
        let i = (q * samples.len() as f64).ceil() as usize;
        samples[i.clamp(1, samples.len()) - 1]
    };
    let total: Duration = samples.iter().sum();
    Some(Summary {
        n: samples.len(),
        min: samples[0],
        p50: rank(0.5),
        p99: rank(0.99),
        max: samples[samples.len() - 1],
        mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
    })
}

/// Microseconds with one decimal, for tables.
pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// `value / base` as a multiplier with one decimal (`"3.2×"`); `"n/a"` for a zero base.
pub fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 && value.is_finite() {
        format!("{:.1}×", value / base)
    } else {
        "n/a".into()
    }
}

/// [`ratio`] of two durations.
pub fn ratio_of(value: Duration, base: Duration) -> String {
    ratio(value.as_secs_f64(), base.as_secs_f64())
}

/// Events per second: `count` events in `elapsed`.
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = summarise(&mut s).unwrap();
        assert_eq!(sum.min, Duration::from_millis(1));
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.max, Duration::from_millis(100));
        assert_eq!(sum.mean, Duration::from_micros(50_500));
        assert!(summarise(&mut []).is_none());
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let mut s = [Duration::from_micros(7)];
        let sum = summarise(&mut s).unwrap();
        assert_eq!(
            (sum.min, sum.p50, sum.p99, sum.max),
            (s[0], s[0], s[0], s[0])
        );
    }

    #[test]
    fn ratios_and_rates() {
        assert_eq!(ratio(3.0, 2.0), "1.5×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(
            ratio_of(Duration::from_micros(300), Duration::from_micros(100)),
            "3.0×"
        );
        assert!((per_second(500, Duration::from_millis(250)) - 2000.0).abs() < 1e-9);
        assert_eq!(per_second(1, Duration::ZERO), 0.0);
        assert_eq!(micros(Duration::from_nanos(1_260)), "1.3");
    }
}
