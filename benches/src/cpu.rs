//! Where this process's CPU time goes, per thread name, from the kernel's scheduler
//! statistics (`/proc/self/task/*/schedstat`, nanoseconds): how long each thread ran,
//! and how long it was ready to run but waited for a CPU. A harness takes a
//! [`Snapshot`] before and after a phase; the difference says, e.g., whether the
//! gateway's hub thread was busy all the time (the bottleneck) or idle (waiting for the
//! disk or for work).
//!
//! Linux only; elsewhere every snapshot is empty.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// CPU and run-queue time of a group of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    /// Time spent running.
    pub cpu: Duration,
    /// Time spent runnable but waiting for a CPU.
    pub waiting: Duration,
}

/// Per-thread-name totals at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    by_name: BTreeMap<String, Times>,
}

impl Snapshot {
    /// The current totals of this process's threads, grouped by thread name (as the
    /// kernel keeps it: at most 15 bytes, so tokio's workers are `tokio-runtime-w`).
    pub fn take() -> Self {
        let at = Instant::now();
        let mut by_name: BTreeMap<String, Times> = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let (Ok(name), Ok(stat)) = (
                    std::fs::read_to_string(path.join("comm")),
                    std::fs::read_to_string(path.join("schedstat")),
                ) else {
                    continue;
                };
                let Some(times) = parse_schedstat(&stat) else {
                    continue;
                };
                let entry = by_name.entry(name.trim().to_owned()).or_default();
                entry.cpu += times.cpu;
                entry.waiting += times.waiting;
            }
        }
        Self { at, by_name }
    }

    /// What happened between `earlier` and this snapshot. Threads that ended meanwhile
    /// are missing from both sides' difference; threads that started count from zero.
    pub fn since(&self, earlier: &Self) -> Usage {
        let mut by_name = BTreeMap::new();
        for (name, now) in &self.by_name {
            let before = earlier.by_name.get(name).copied().unwrap_or_default();
            by_name.insert(
                name.clone(),
                Times {
                    cpu: now.cpu.saturating_sub(before.cpu),
                    waiting: now.waiting.saturating_sub(before.waiting),
                },
            );
        }
        Usage {
            wall: self.at.saturating_duration_since(earlier.at),
            by_name,
        }
    }
}

/// CPU use over an interval.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The interval's length.
    pub wall: Duration,
    /// Per thread name.
    pub by_name: BTreeMap<String, Times>,
}

impl Usage {
    /// The totals of the threads called `name` (zero if there are none).
    pub fn of(&self, name: &str) -> Times {
        self.by_name.get(name).copied().unwrap_or_default()
    }

    /// CPU time of all threads.
    pub fn total_cpu(&self) -> Duration {
        self.by_name.values().map(|t| t.cpu).sum()
    }

    /// `part` as a percentage of the interval, e.g. `"87%"`; `"n/a"` when nothing was
    /// measured.
    pub fn percent(&self, part: Duration) -> String {
        if self.wall.is_zero() || self.by_name.is_empty() {
            return "n/a".into();
        }
        format!(
            "{:.0}%",
            100.0 * part.as_secs_f64() / self.wall.as_secs_f64()
        )
    }
}

/// `cpu_ns wait_ns slices` as the kernel writes it.
fn parse_schedstat(line: &str) -> Option<Times> {
    let mut fields = line.split_whitespace();
    let cpu = fields.next()?.parse().ok()?;
    let waiting = fields.next()?.parse().ok()?;
    Some(Times {
        cpu: Duration::from_nanos(cpu),
        waiting: Duration::from_nanos(waiting),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines() {
        assert_eq!(
            parse_schedstat("387826827 149103399 997\n"),
            Some(Times {
                cpu: Duration::from_nanos(387_826_827),
                waiting: Duration::from_nanos(149_103_399),
            })
        );
        assert_eq!(parse_schedstat("garbage"), None);
    }

    #[test]
    fn usage_is_a_difference() {
        let t = |cpu, waiting| Times {
            cpu: Duration::from_millis(cpu),
            waiting: Duration::from_millis(waiting),
        };
        let start = Instant::now();
        let before = Snapshot {
            at: start,
            by_name: BTreeMap::from([("hub".to_owned(), t(100, 10))]),
        };
        let after = Snapshot {
            at: start + Duration::from_millis(1000),
            by_name: BTreeMap::from([
                ("hub".to_owned(), t(600, 110)),
                ("new".to_owned(), t(50, 0)),
            ]),
        };
        let usage = after.since(&before);
        assert_eq!(usage.of("hub"), t(500, 100));
        assert_eq!(usage.of("new"), t(50, 0));
        assert_eq!(usage.of("gone"), Times::default());
        assert_eq!(usage.total_cpu(), Duration::from_millis(550));
        assert_eq!(usage.percent(usage.of("hub").cpu), "50%");
    }
}
