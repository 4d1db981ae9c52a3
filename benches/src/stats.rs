//! Order statistics and table printing for the loopback harnesses.

use std::time::Duration;

/// Median, 99th percentile and extremes of a set of samples.
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
    Some(Summary {
        n: samples.len(),
        min: samples[0],
        p50: rank(0.5),
        p99: rank(0.99),
        max: samples[samples.len() - 1],
    })
}

/// Microseconds with one decimal, for tables.
pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = summarise(&mut s).unwrap();
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.max, Duration::from_millis(100));
        assert!(summarise(&mut []).is_none());
    }
}
