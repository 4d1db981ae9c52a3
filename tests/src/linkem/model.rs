//! The impairment model of one direction of a link: [`Direction`] decides, for each
//! datagram it is handed with the current time, whether and when each copy leaves.
//!
//! Owns: the random draws (a seeded [`StdRng`]), the Gilbert–Elliott state, the
//! bottleneck queue, the blackouts started at run time and the per-direction counters.
//! It may not touch sockets, tasks or clocks: time is a [`Duration`] since the emulator
//! started, passed in by the caller, and the same seed with the same inputs always gives
//! the same outputs. It never looks inside a datagram, only at its length.
//!
//! Call order: [`Direction::handle_datagram`] when a datagram arrives; it returns a
//! [`Verdict`]. For each release time in it, call [`Direction::handle_release`] when that
//! time comes, which says whether the copy may leave (the link may have gone down in the
//! meantime) and counts it.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::impairment::{Impairment, ImpairmentError, JitterShape, Window};

/// Blackouts started at run time are forgotten this long after they end.
const FORGET_WINDOWS_AFTER: Duration = Duration::from_secs(60);

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropCause {
    /// Random loss, Bernoulli or Gilbert–Elliott.
    Loss,
    /// The link was down when it entered or when it was due to leave.
    Blackout,
    /// The bottleneck queue (or the emulator's own bound on datagrams in flight) was full.
    Queue,
}

/// What becomes of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped on entry.
    Drop(DropCause),
    /// Due to leave at `at`, and a second copy at `duplicate`, if any (times since start).
    Deliver {
        /// When the copy leaves.
        at: Duration,
        /// When a duplicate leaves (never before `at`).
        duplicate: Option<Duration>,
    },
}

/// What [`Direction::handle_release`] decided for a copy that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Send it.
    Send,
    /// Drop it.
    Drop(DropCause),
}

/// Counters of one direction. A duplicated datagram counts once in `packets_in` and up to
/// twice in `packets_delivered`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionStats {
    /// Datagrams handed to the model.
    pub packets_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Copies that left.
    pub packets_delivered: u64,
    /// Their bytes.
    pub bytes_delivered: u64,
    /// Datagrams lost at random.
    pub dropped_loss: u64,
    /// Datagrams or copies dropped because the link was down.
    pub dropped_blackout: u64,
    /// Datagrams tail-dropped at a full queue.
    pub dropped_queue: u64,
    /// Datagrams given a second copy.
    pub duplicated: u64,
    /// Datagrams held back to be overtaken.
    pub reordered: u64,
}

/// One direction of an emulated link. See the module docs for the call order and
/// [`Impairment`] for the stages a datagram goes through.
#[derive(Debug, Clone)]
pub struct Direction {
    impairment: Impairment,
    rng: StdRng,
    /// Gilbert–Elliott state.
    bad: bool,
    /// Datagrams in the bottleneck (being serialised or waiting): (end of serialisation,
    /// length), oldest first.
    queue: VecDeque<(Duration, usize)>,
    queued_bytes: usize,
    /// When the bottleneck finishes serialising what it holds.
    busy_until: Duration,
    /// The latest release time of an in-order copy: jitter never releases earlier.
    fifo_floor: Duration,
    /// Latest time seen, so that time never goes backwards.
    latest: Duration,
    /// Blackouts started at run time.
    forced: Vec<Window>,
    stats: DirectionStats,
}

impl Direction {
    /// A direction with these impairments, its random draws seeded by `seed`.
    pub fn new(impairment: Impairment, seed: u64) -> Result<Self, ImpairmentError> {
        impairment.validate()?;
        Ok(Self {
            impairment,
            rng: StdRng::seed_from_u64(seed),
            bad: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: Duration::ZERO,
            fifo_floor: Duration::ZERO,
            latest: Duration::ZERO,
            forced: Vec::new(),
            stats: DirectionStats::default(),
        })
    }

    /// The impairments in force.
    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// Replaces the impairments from now on. Counters, the random stream, the queue's
    /// content and blackouts started with [`Self::add_blackout`] carry over; datagrams
    /// already scheduled keep their release times.
    pub fn set_impairment(&mut self, impairment: Impairment) -> Result<(), ImpairmentError> {
        impairment.validate()?;
        if impairment.burst.is_none() {
            self.bad = false;
        }
        self.impairment = impairment;
        Ok(())
    }

    /// Takes the link down during `window` (time since start), whatever the impairments.
    pub fn add_blackout(&mut self, window: Window) {
        let horizon = self.latest.saturating_sub(FORGET_WINDOWS_AFTER);
        self.forced.retain(|w| w.end > horizon);
        self.forced.push(window);
    }

    /// Whether the link is down at `t`.
    pub fn is_down(&self, t: Duration) -> bool {
        self.impairment.blackouts.contains(t) || self.forced.iter().any(|w| w.contains(t))
    }

    /// The counters.
    pub fn stats(&self) -> DirectionStats {
        self.stats
    }

    /// Bytes in the bottleneck queue at the last time seen.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// A datagram arrives at `now`: decides its fate. Only its length is used.
    pub fn handle_datagram(&mut self, now: Duration, datagram: &[u8]) -> Verdict {
        let now = self.advance(now);
        let len = datagram.len();
        self.stats.packets_in += 1;
        self.stats.bytes_in += len as u64;
        if self.is_down(now) {
            return self.dropped(DropCause::Blackout);
        }
        let Some(sent) = self.serialise(now, len) else {
            return self.dropped(DropCause::Queue);
        };
        if self.lose() {
            return self.dropped(DropCause::Loss);
        }
        let at = if self.draw(self.impairment.reorder) {
            self.stats.reordered += 1;
            self.propagate(sent) + self.impairment.reorder_extra()
        } else {
            self.in_order(sent)
        };
        let duplicate = if self.draw(self.impairment.duplicate) {
            self.stats.duplicated += 1;
            Some(self.in_order(sent).max(at))
        } else {
            None
        };
        Verdict::Deliver { at, duplicate }
    }

    /// A datagram that the caller refuses before the model sees it (its own bound on
    /// datagrams in flight is reached): counted as arrived and dropped at the queue.
    pub fn handle_overflow(&mut self, datagram: &[u8]) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        self.stats.dropped_queue += 1;
    }

    /// A copy of `len` bytes is due to leave at `at`, a release time from a [`Verdict`]:
    /// says whether it may, and counts it.
    pub fn handle_release(&mut self, at: Duration, len: usize) -> Release {
        self.advance(at);
        if self.is_down(at) {
            self.stats.dropped_blackout += 1;
            return Release::Drop(DropCause::Blackout);
        }
        self.stats.packets_delivered += 1;
        self.stats.bytes_delivered += len as u64;
        Release::Send
    }

    fn advance(&mut self, now: Duration) -> Duration {
        self.latest = self.latest.max(now);
        while let Some(&(done, len)) = self.queue.front() {
            if done > self.latest {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= len;
        }
        self.latest
    }

    fn dropped(&mut self, cause: DropCause) -> Verdict {
        match cause {
            DropCause::Loss => self.stats.dropped_loss += 1,
            DropCause::Blackout => self.stats.dropped_blackout += 1,
            DropCause::Queue => self.stats.dropped_queue += 1,
        }
        Verdict::Drop(cause)
    }

    /// Through the bottleneck: when the last bit is out, or `None` if tail-dropped.
    fn serialise(&mut self, now: Duration, len: usize) -> Option<Duration> {
        let Some(rate) = self.impairment.rate_bps else {
            return Some(now);
        };
        if self.queued_bytes > 0 && self.queued_bytes + len > self.impairment.queue_limit() {
            return None;
        }
        let done = self.busy_until.max(now) + serialisation_time(len, rate);
        self.busy_until = done;
        self.queue.push_back((done, len));
        self.queued_bytes += len;
        Some(done)
    }

    fn lose(&mut self) -> bool {
        let loss = match self.impairment.burst {
            None => self.impairment.loss,
            Some(ge) => {
                let flip = if self.bad {
                    ge.p_bad_to_good
                } else {
                    ge.p_good_to_bad
                };
                if self.draw(flip) {
                    self.bad = !self.bad;
                }
                if self.bad {
                    ge.loss_bad
                } else {
                    self.impairment.loss
                }
            }
        };
        self.draw(loss)
    }

    /// Whether an event of probability `p` happens; draws nothing when `p` is zero.
    fn draw(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Delay plus a jitter sample after `sent`, not yet kept in order.
    fn propagate(&mut self, sent: Duration) -> Duration {
        let imp = &self.impairment;
        let jitter = imp.jitter.as_secs_f64();
        if jitter == 0.0 {
            return sent + imp.delay;
        }
        let unit = match imp.jitter_shape {
            JitterShape::Uniform => self.rng.random::<f64>() * 2.0 - 1.0,
            JitterShape::Normal => (0..12).map(|_| self.rng.random::<f64>()).sum::<f64>() - 6.0,
        };
        let total = imp.delay.as_secs_f64() + unit * jitter;
        // Bounded: delay and jitter are at most an hour each, so `total` is finite.
        sent + Duration::try_from_secs_f64(total.max(0.0)).unwrap_or(imp.delay)
    }

    /// A release time that keeps the copy behind every in-order copy before it.
    fn in_order(&mut self, sent: Duration) -> Duration {
        let at = self.propagate(sent).max(self.fifo_floor);
        self.fifo_floor = at;
        at
    }
}

/// How long `len` bytes take at `rate` bits per second, rounded up to the nanosecond.
pub fn serialisation_time(len: usize, rate: u64) -> Duration {
    let bits = len as u128 * 8 * 1_000_000_000;
    let rate = u128::from(rate.max(1));
    let nanos = bits.div_ceil(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkem::impairment::{Blackouts, GilbertElliott, Periodic};

    const MS: Duration = Duration::from_millis(1);

    fn direction(impairment: Impairment, seed: u64) -> Direction {
        Direction::new(impairment, seed).expect("valid impairment")
    }

    /// Feeds `n` datagrams of `len` bytes, one every `gap`, and returns the verdicts.
    fn feed(d: &mut Direction, n: u32, gap: Duration, len: usize) -> Vec<Verdict> {
        let payload = vec![0u8; len];
        (0..n)
            .map(|i| d.handle_datagram(gap * i, &payload))
            .collect()
    }

    #[test]
    fn a_perfect_link_delivers_everything_at_once() {
        let mut d = direction(Impairment::default(), 1);
        let verdicts = feed(&mut d, 100, MS, 10);
        for (i, v) in (0u32..).zip(&verdicts) {
            assert_eq!(
                *v,
                Verdict::Deliver {
                    at: MS * i,
                    duplicate: None
                }
            );
        }
        assert_eq!(d.stats().packets_in, 100);
        assert_eq!(d.stats().bytes_in, 1_000);
    }

    #[test]
    fn loss_rate_is_within_tolerance_over_100k_datagrams() {
        let mut d = direction(
            Impairment {
                loss: 0.05,
                ..Impairment::default()
            },
            7,
        );
        let lost = feed(&mut d, 100_000, MS, 100)
            .iter()
            .filter(|v| **v == Verdict::Drop(DropCause::Loss))
            .count();
        // Binomial(100000, 0.05): sigma is about 69, so ±500 is over seven sigma.
        assert!((4_500..=5_500).contains(&lost), "lost {lost}");
        assert_eq!(d.stats().dropped_loss, lost as u64);
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts_at_the_expected_mean() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.25,
            loss_bad: 1.0,
        };
        let mut d = direction(
            Impairment {
                burst: Some(ge),
                ..Impairment::default()
            },
            11,
        );
        let verdicts = feed(&mut d, 100_000, MS, 100);
        let lost: Vec<bool> = verdicts
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        let rate = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
        let expected = ge.mean_loss(0.0); // 0.01 / 0.26, about 3.8 %
        assert!((rate - expected).abs() < 0.01, "rate {rate} vs {expected}");
        let bursts = lost.windows(2).filter(|w| !w[0] && w[1]).count();
        let mean_burst = lost.iter().filter(|l| **l).count() as f64 / bursts as f64;
        // Mean burst length is 1 / p_bad_to_good = 4; Bernoulli loss would give about 1.
        assert!((3.5..=4.5).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn blackouts_drop_exactly_inside_their_windows() {
        let blackouts = Blackouts {
            periodic: Some(Periodic {
                down: MS * 200,
                period: MS * 1_000,
                offset: Some(MS * 300),
            }),
            windows: vec![Window {
                start: MS * 5_050,
                end: MS * 5_100,
            }],
        };
        let mut d = direction(
            Impairment {
                blackouts,
                ..Impairment::default()
            },
            3,
        );
        let verdicts = feed(&mut d, 10_000, MS, 50);
        for (ms, v) in (0u64..).zip(&verdicts) {
            let periodic = ms >= 300 && (ms - 300) % 1_000 < 200;
            let window = (5_050..5_100).contains(&ms);
            let dropped = *v == Verdict::Drop(DropCause::Blackout);
            assert_eq!(dropped, periodic || window, "at {ms} ms: {v:?}");
        }
        // 10 periodic windows of 200 ms, and the 50 ms window between two of them.
        let expected = 10 * 200 + 50;
        assert_eq!(d.stats().dropped_blackout, expected);
    }

    #[test]
    fn a_copy_due_inside_a_blackout_is_dropped_on_release() {
        let mut d = direction(
            Impairment {
                delay: MS * 100,
                ..Impairment::default()
            },
            3,
        );
        let v = d.handle_datagram(Duration::ZERO, b"x");
        assert_eq!(
            v,
            Verdict::Deliver {
                at: MS * 100,
                duplicate: None
            }
        );
        d.add_blackout(Window {
            start: MS * 50,
            end: MS * 150,
        });
        assert_eq!(
            d.handle_release(MS * 100, 1),
            Release::Drop(DropCause::Blackout)
        );
        assert_eq!(
            d.handle_datagram(MS * 149, b"x"),
            Verdict::Drop(DropCause::Blackout)
        );
        assert!(matches!(
            d.handle_datagram(MS * 150, b"x"),
            Verdict::Deliver { .. }
        ));
        assert_eq!(d.handle_release(MS * 250, 1), Release::Send);
        let stats = d.stats();
        assert_eq!((stats.dropped_blackout, stats.packets_delivered), (2, 1));
    }

    #[test]
    fn bandwidth_cap_serialises_exactly_and_tail_drops() {
        let mut d = direction(
            Impairment {
                delay: MS * 10,
                rate_bps: Some(64_000),
                queue_bytes: Some(3_000),
                ..Impairment::default()
            },
            5,
        );
        // 1000 bytes at 64 kbit/s take exactly 125 ms each.
        let burst = feed(&mut d, 4, Duration::ZERO, 1_000);
        let expect = |n: u32| Verdict::Deliver {
            at: MS * (125 * n + 10),
            duplicate: None,
        };
        assert_eq!(burst[..3], [expect(1), expect(2), expect(3)]);
        assert_eq!(burst[3], Verdict::Drop(DropCause::Queue), "queue full");
        assert_eq!(d.queued_bytes(), 3_000);
        // Once the first is out there is room for one more, behind the third.
        assert_eq!(d.handle_datagram(MS * 125, &[0; 1_000]), expect(4));
        // An idle link starts serialising at once.
        assert_eq!(
            d.handle_datagram(MS * 1_000, &[0; 8]),
            Verdict::Deliver {
                at: MS * 1_011,
                duplicate: None
            }
        );
        assert_eq!(
            serialisation_time(1, 3),
            Duration::from_nanos(2_666_666_667)
        );
        assert_eq!(d.stats().dropped_queue, 1);
    }

    fn jittery(shape: JitterShape) -> Direction {
        direction(
            Impairment {
                delay: MS * 100,
                jitter: MS * 20,
                jitter_shape: shape,
                ..Impairment::default()
            },
            9,
        )
    }

    fn release_times(verdicts: Vec<Verdict>) -> Vec<Duration> {
        verdicts
            .into_iter()
            .map(|v| match v {
                Verdict::Deliver { at, .. } => at,
                Verdict::Drop(cause) => panic!("nothing should drop: {cause:?}"),
            })
            .collect()
    }

    #[test]
    fn jitter_follows_its_shape_when_datagrams_are_sparse() {
        for (shape, low, high) in [
            (JitterShape::Uniform, 80.0, 120.0),
            (JitterShape::Normal, 0.0, 220.0),
        ] {
            let mut d = jittery(shape);
            let gap = MS * 500; // more than the jitter's whole range: order never binds
            let delays: Vec<f64> = (0u32..)
                .zip(release_times(feed(&mut d, 2_000, gap, 10)))
                .map(|(i, at)| (at - gap * i).as_secs_f64() * 1e3)
                .collect();
            let n = delays.len() as f64;
            let mean = delays.iter().sum::<f64>() / n;
            let sd = (delays.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let (min, max) = delays
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            assert!((mean - 100.0).abs() < 1.5, "{shape}: mean {mean}");
            assert!(min >= low && max <= high, "{shape}: [{min}, {max}]");
            match shape {
                // Uniform on ±20 ms: sd 20/sqrt(3), about 11.5 ms, reaching both ends.
                JitterShape::Uniform => {
                    assert!(
                        (sd - 11.55).abs() < 1.0 && min < 81.0 && max > 119.0,
                        "sd {sd}"
                    );
                }
                _ => assert!(
                    (sd - 20.0).abs() < 1.5 && min < 50.0 && max > 150.0,
                    "sd {sd}"
                ),
            }
        }
    }

    #[test]
    fn jitter_alone_never_reorders() {
        for shape in [JitterShape::Uniform, JitterShape::Normal] {
            let mut d = jittery(shape);
            let times = release_times(feed(&mut d, 10_000, MS, 10));
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{shape} reordered");
            assert_eq!(d.stats().reordered, 0);
        }
    }

    #[test]
    fn reordering_actually_reorders() {
        let mut d = direction(
            Impairment {
                delay: MS * 50,
                reorder: 0.1,
                reorder_extra: Some(MS * 5),
                ..Impairment::default()
            },
            13,
        );
        let times: Vec<Duration> = feed(&mut d, 10_000, MS, 10)
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Deliver { at, .. } => Some(at),
                Verdict::Drop(_) => None,
            })
            .collect();
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| (times[i], i));
        let overtaken = order.windows(2).filter(|w| w[0] > w[1]).count();
        let reordered = d.stats().reordered;
        assert!((900..=1_100).contains(&reordered), "reordered {reordered}");
        // Each held-back datagram is overtaken by the four sent in the next 4 ms.
        assert!(overtaken as u64 >= reordered / 2, "overtaken {overtaken}");
    }

    #[test]
    fn duplicates_follow_their_original() {
        let mut d = direction(
            Impairment {
                delay: MS * 30,
                jitter: MS * 5,
                duplicate: 0.2,
                ..Impairment::default()
            },
            17,
        );
        let verdicts = feed(&mut d, 10_000, MS, 10);
        let mut copies = 0u64;
        for v in &verdicts {
            if let Verdict::Deliver {
                at,
                duplicate: Some(dup),
            } = v
            {
                assert!(dup >= at);
                copies += 1;
            }
        }
        assert_eq!(copies, d.stats().duplicated);
        assert!((1_800..=2_200).contains(&copies), "duplicated {copies}");
    }

    fn everything() -> Impairment {
        Impairment {
            delay: MS * 40,
            jitter: MS * 10,
            loss: 0.05,
            burst: Some(GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.3,
                loss_bad: 0.8,
            }),
            reorder: 0.05,
            duplicate: 0.02,
            rate_bps: Some(2_000_000),
            queue_bytes: Some(8_000),
            ..Impairment::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_output_and_another_seed_does_not() {
        let run = |seed| {
            let mut d = direction(everything(), seed);
            let verdicts = feed(&mut d, 5_000, Duration::from_micros(300), 200);
            (verdicts, d.stats())
        };
        let (first, stats) = run(42);
        assert_eq!(run(42), (first.clone(), stats));
        let (other, _) = run(43);
        assert_ne!(first, other);
        assert!(stats.dropped_loss > 0 && stats.dropped_queue > 0);
        assert!(stats.reordered > 0 && stats.duplicated > 0);
    }

    #[test]
    fn changing_impairments_keeps_counters_and_takes_effect_at_once() {
        let mut d = direction(Impairment::default(), 1);
        feed(&mut d, 10, MS, 1);
        d.set_impairment(Impairment {
            loss: 1.0,
            ..Impairment::default()
        })
        .unwrap();
        assert_eq!(
            d.handle_datagram(MS * 20, b"x"),
            Verdict::Drop(DropCause::Loss)
        );
        assert!(
            d.set_impairment(Impairment {
                duplicate: -0.1,
                ..Impairment::default()
            })
            .is_err()
        );
        assert_eq!(d.impairment().loss, 1.0, "a bad impairment changes nothing");
        assert_eq!(d.stats().packets_in, 11);
    }

    #[test]
    fn time_going_backwards_is_treated_as_no_time_passing() {
        let mut d = direction(
            Impairment {
                rate_bps: Some(8_000),
                ..Impairment::default()
            },
            1,
        );
        assert_eq!(
            d.handle_datagram(MS * 100, &[0; 1]),
            Verdict::Deliver {
                at: MS * 101,
                duplicate: None
            }
        );
        assert_eq!(
            d.handle_datagram(MS * 50, &[0; 1]),
            Verdict::Deliver {
                at: MS * 102,
                duplicate: None
            }
        );
    }
}
