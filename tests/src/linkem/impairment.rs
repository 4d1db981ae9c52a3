//! What a link does to datagrams, as plain data: [`Impairment`] and its parts, their
//! validation ([`ImpairmentError`]) and the text forms the `tern-linkem` command line uses
//! (`FromStr`, errors as [`ParseError`]).
//!
//! Owns: the meaning and the limits of every knob. It may not hold state, draw random
//! numbers or read a clock: [`crate::linkem::model::Direction`] applies an impairment.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest delay, jitter or extra reorder delay accepted: an hour keeps all time arithmetic
/// far from overflow and is longer than any link worth emulating.
pub const MAX_DELAY: Duration = Duration::from_secs(3_600);
/// Extra delay of a packet picked for reordering, unless set.
pub const DEFAULT_REORDER_EXTRA: Duration = Duration::from_millis(20);
/// Bottleneck queue limit, unless set: about half a second at 512 kbit/s.
pub const DEFAULT_QUEUE_BYTES: usize = 32_000;

/// The impairments of one direction of a link. [`Impairment::default`] is a perfect link.
///
/// A datagram goes through the stages in this order:
/// 1. **blackout** at entry: while the link is down it is dropped;
/// 2. **bottleneck** (with `rate_bps`): it waits in a FIFO queue of at most `queue_bytes`
///    (else it is tail-dropped) and takes `len × 8 / rate_bps` seconds to serialise;
///    only the payload's bytes count, not UDP/IP headers;
/// 3. **loss** on the wire (Bernoulli `loss`, or Gilbert–Elliott with `burst`): a lost
///    datagram has still used the bottleneck, as on a radio link;
/// 4. **propagation**: `delay` plus a jitter sample; jitter alone never reorders (a
///    datagram never leaves before one that entered earlier, as behind a real FIFO
///    hop, so datagrams closer together than the jitter's range see delays bunched
///    towards its top), only `reorder` does, by adding `reorder_extra` to a datagram
///    and exempting it from that rule;
/// 5. **duplication**: with probability `duplicate` a second copy follows, with its own
///    jitter sample, after the first;
/// 6. **blackout** at exit: a copy due to leave while the link is down is dropped too.
///
/// So a blackout `[s, e)` stops everything that enters in it and everything that would
/// leave in it; a listener sees silence from `s` until `e` plus the one-way delay.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Jitter added to `delay`: see [`JitterShape`] for what the number means.
    pub jitter: Duration,
    /// How jitter is distributed.
    pub jitter_shape: JitterShape,
    /// Probability that a datagram is lost; with `burst`, the loss probability in the
    /// good state.
    pub loss: f64,
    /// Gilbert–Elliott burst loss, if any.
    pub burst: Option<GilbertElliott>,
    /// Probability that a datagram is held back by `reorder_extra` and so overtaken.
    pub reorder: f64,
    /// Extra delay of a reordered datagram; `None` means [`DEFAULT_REORDER_EXTRA`].
    pub reorder_extra: Option<Duration>,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited (no queue either).
    pub rate_bps: Option<u64>,
    /// Bottleneck queue limit in bytes; `None` means [`DEFAULT_QUEUE_BYTES`]. A datagram
    /// that finds the queue empty is always accepted, however large.
    pub queue_bytes: Option<usize>,
    /// When the link is down.
    pub blackouts: Blackouts,
}

impl Impairment {
    /// Checks every knob against its limits.
    pub fn validate(&self) -> Result<(), ImpairmentError> {
        check_delay("delay", self.delay)?;
        check_delay("jitter", self.jitter)?;
        check_delay("reorder_extra", self.reorder_extra())?;
        check_probability("loss", self.loss)?;
        check_probability("reorder", self.reorder)?;
        check_probability("duplicate", self.duplicate)?;
        if let Some(burst) = &self.burst {
            check_probability("burst p_good_to_bad", burst.p_good_to_bad)?;
            check_probability("burst p_bad_to_good", burst.p_bad_to_good)?;
            check_probability("burst loss_bad", burst.loss_bad)?;
        }
        if self.rate_bps == Some(0) {
            return Err(ImpairmentError::ZeroRate);
        }
        if self.queue_bytes == Some(0) {
            return Err(ImpairmentError::ZeroQueue);
        }
        self.blackouts.validate()
    }

    /// The extra delay of a reordered datagram.
    pub fn reorder_extra(&self) -> Duration {
        self.reorder_extra.unwrap_or(DEFAULT_REORDER_EXTRA)
    }

    /// The bottleneck queue limit in bytes.
    pub fn queue_limit(&self) -> usize {
        self.queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES)
    }
}

fn check_probability(knob: &'static str, value: f64) -> Result<(), ImpairmentError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ImpairmentError::Probability { knob, value })
    }
}

fn check_delay(knob: &'static str, value: Duration) -> Result<(), ImpairmentError> {
    if value <= MAX_DELAY {
        Ok(())
    } else {
        Err(ImpairmentError::TooLong { knob, value })
    }
}

/// The distribution of jitter around the fixed delay. The total delay never goes below
/// zero (a sample that would make it negative is clamped to zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JitterShape {
    /// Uniform in `[-jitter, +jitter]`.
    #[default]
    Uniform,
    /// Approximately normal with standard deviation `jitter` (the sum of twelve uniform
    /// samples, the Irwin–Hall approximation), so bounded by ±6 × `jitter`.
    Normal,
}

impl FromStr for JitterShape {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "normal" => Ok(Self::Normal),
            _ => Err(ParseError::new(
                "jitter shape",
                s,
                "expected uniform or normal",
            )),
        }
    }
}

/// Gilbert–Elliott burst loss: a two-state Markov chain stepped once per datagram. In the
/// good state a datagram is lost with [`Impairment::loss`], in the bad state with
/// `loss_bad`. Mean burst length (with `loss_bad = 1`) is `1 / p_bad_to_good`; the share
/// of time in the bad state is `p_good_to_bad / (p_good_to_bad + p_bad_to_good)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state, per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The long-run loss rate, given the good state's loss probability.
    pub fn mean_loss(&self, loss_good: f64) -> f64 {
        let moving = self.p_good_to_bad + self.p_bad_to_good;
        if moving == 0.0 {
            return loss_good;
        }
        let bad = self.p_good_to_bad / moving;
        (1.0 - bad) * loss_good + bad * self.loss_bad
    }
}

/// `P_GB,P_BG,LOSS_BAD`, e.g. `0.01,0.3,0.9`.
impl FromStr for GilbertElliott {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new("burst loss", s, "expected P_GB,P_BG,LOSS_BAD");
        let mut parts = s.split(',').map(|p| p.trim().parse::<f64>());
        let mut next = || parts.next().and_then(Result::ok).ok_or_else(bad);
        let parsed = Self {
            p_good_to_bad: next()?,
            p_bad_to_good: next()?,
            loss_bad: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(parsed)
    }
}

/// When a direction's link is down: a repeating pattern, explicit windows, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blackouts {
    /// A blackout of the same length every period.
    pub periodic: Option<Periodic>,
    /// Explicit windows, in time since the emulator started.
    pub windows: Vec<Window>,
}

impl Blackouts {
    /// Whether the link is down at `t` (time since start).
    pub fn contains(&self, t: Duration) -> bool {
        self.periodic.is_some_and(|p| p.contains(t)) || self.windows.iter().any(|w| w.contains(t))
    }

    fn validate(&self) -> Result<(), ImpairmentError> {
        if let Some(p) = &self.periodic
            && (p.down.is_zero() || p.down >= p.period)
        {
            return Err(ImpairmentError::Periodic {
                down: p.down,
                period: p.period,
            });
        }
        for w in &self.windows {
            if w.start >= w.end {
                return Err(ImpairmentError::EmptyWindow {
                    start: w.start,
                    end: w.end,
                });
            }
        }
        Ok(())
    }
}

/// The link goes down for `down` every `period`: the windows are
/// `[first + k × period, first + k × period + down)` for k = 0, 1, …, where `first` is
/// `offset`, or `period − down` when unset (up for `period − down`, then down for `down`,
/// from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periodic {
    /// Length of each blackout; shorter than `period`, not zero.
    pub down: Duration,
    /// Time from the start of one blackout to the start of the next.
    pub period: Duration,
    /// When the first blackout starts.
    pub offset: Option<Duration>,
}

impl Periodic {
    /// When the first blackout starts.
    pub fn first(&self) -> Duration {
        self.offset
            .unwrap_or_else(|| self.period.saturating_sub(self.down))
    }

    /// Whether `t` falls in a blackout.
    pub fn contains(&self, t: Duration) -> bool {
        let Some(since) = t.checked_sub(self.first()) else {
            return false;
        };
        let period = self.period.as_nanos();
        period != 0 && since.as_nanos() % period < self.down.as_nanos()
    }
}

/// `D_SECS/P_SECS[+OFFSET_SECS]`, e.g. `5/60` or `0.5/10+2`.
impl FromStr for Periodic {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| ParseError::new("periodic blackout", s, why);
        let (down, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("expected D_SECS/P_SECS[+OFFSET_SECS]"))?;
        let (period, offset) = match rest.split_once('+') {
            Some((period, offset)) => (period, Some(offset)),
            None => (rest, None),
        };
        let secs = |text: &str| parse_secs(text).ok_or_else(|| bad("not a number of seconds"));
        Ok(Self {
            down: secs(down)?,
            period: secs(period)?,
            offset: offset.map(secs).transpose()?,
        })
    }
}

/// A time window `[start, end)` since the emulator started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant inside.
    pub start: Duration,
    /// First instant after.
    pub end: Duration,
}

impl Window {
    /// Whether `t` is inside.
    pub fn contains(&self, t: Duration) -> bool {
        self.start <= t && t < self.end
    }
}

/// `START_SECS-END_SECS`, e.g. `10-12.5`.
impl FromStr for Window {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| ParseError::new("blackout window", s, why);
        let (start, end) = s
            .split_once('-')
            .ok_or_else(|| bad("expected START_SECS-END_SECS"))?;
        let secs = |text: &str| parse_secs(text).ok_or_else(|| bad("not a number of seconds"));
        Ok(Self {
            start: secs(start)?,
            end: secs(end)?,
        })
    }
}

/// Seconds, possibly fractional, not negative.
fn parse_secs(text: &str) -> Option<Duration> {
    let secs = text.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// An impairment that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ImpairmentError {
    /// A probability outside `[0, 1]` (or not a number).
    #[error("{knob} is {value}, not a probability in [0, 1]")]
    Probability {
        /// Which knob.
        knob: &'static str,
        /// Its value.
        value: f64,
    },
    /// A delay longer than [`MAX_DELAY`].
    #[error("{knob} of {value:?} is longer than the limit of {MAX_DELAY:?}")]
    TooLong {
        /// Which knob.
        knob: &'static str,
        /// Its value.
        value: Duration,
    },
    /// A bottleneck rate of zero would never deliver anything.
    #[error("the rate is zero: leave it unset for an unlimited link, or use a blackout")]
    ZeroRate,
    /// A bottleneck queue of zero bytes.
    #[error("the queue limit is zero bytes")]
    ZeroQueue,
    /// A periodic blackout whose length is zero or not shorter than its period.
    #[error(
        "a periodic blackout of {down:?} every {period:?}: it must be shorter than its period and not zero"
    )]
    Periodic {
        /// Length of each blackout.
        down: Duration,
        /// Its period.
        period: Duration,
    },
    /// A blackout window that ends before it starts.
    #[error("the blackout window [{start:?}, {end:?}) is empty")]
    EmptyWindow {
        /// Start.
        start: Duration,
        /// End.
        end: Duration,
    },
}

/// A knob's text form that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

impl ParseError {
    fn new(what: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            what,
            input: input.into(),
            reason,
        }
    }
}

impl fmt::Display for JitterShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uniform => "uniform",
            Self::Normal => "normal",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn text_forms_parse() {
        let p: Periodic = "5/60".parse().unwrap();
        assert_eq!(p.first(), secs(55.0));
        let p: Periodic = "0.5/10+2".parse().unwrap();
        assert_eq!(
            (p.down, p.period, p.first()),
            (secs(0.5), secs(10.0), secs(2.0))
        );
        let w: Window = "10-12.5".parse().unwrap();
        assert_eq!((w.start, w.end), (secs(10.0), secs(12.5)));
        let g: GilbertElliott = "0.01, 0.3,0.9".parse().unwrap();
        assert_eq!(g.loss_bad, 0.9);
        for bad in ["5", "a/b", "-1/3", "1/2+x"] {
            assert!(bad.parse::<Periodic>().is_err(), "{bad}");
        }
        for bad in ["", "1", "1-x", "-1-2"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
        for bad in ["0.1,0.2", "0.1,0.2,0.3,0.4", "a,b,c"] {
            assert!(bad.parse::<GilbertElliott>().is_err(), "{bad}");
        }
        assert_eq!("normal".parse::<JitterShape>(), Ok(JitterShape::Normal));
        assert!("gauss".parse::<JitterShape>().is_err());
    }

    #[test]
    fn validation_names_the_bad_knob() {
        let mut imp = Impairment {
            loss: 1.5,
            ..Impairment::default()
        };
        let err = imp.validate().unwrap_err();
        assert!(err.to_string().starts_with("loss is 1.5"), "{err}");
        imp.loss = f64::NAN;
        assert!(imp.validate().is_err());
        imp.loss = 0.1;
        imp.rate_bps = Some(0);
        assert_eq!(imp.validate(), Err(ImpairmentError::ZeroRate));
        imp.rate_bps = Some(1);
        imp.blackouts.periodic = Some("10/10".parse().unwrap());
        assert!(matches!(
            imp.validate(),
            Err(ImpairmentError::Periodic { .. })
        ));
        imp.blackouts.periodic = None;
        imp.blackouts.windows = vec!["3-3".parse().unwrap()];
        assert!(matches!(
            imp.validate(),
            Err(ImpairmentError::EmptyWindow { .. })
        ));
        imp.blackouts.windows.clear();
        imp.delay = MAX_DELAY + Duration::from_nanos(1);
        assert!(matches!(
            imp.validate(),
            Err(ImpairmentError::TooLong { .. })
        ));
        imp.delay = MAX_DELAY;
        assert_eq!(imp.validate(), Ok(()));
    }

    #[test]
    fn periodic_windows_follow_the_documented_phase() {
        let p: Periodic = "2/10".parse().unwrap();
        assert!(!p.contains(secs(0.0)));
        assert!(!p.contains(secs(7.999)));
        assert!(p.contains(secs(8.0)));
        assert!(p.contains(secs(9.999)));
        assert!(!p.contains(secs(10.0)));
        assert!(p.contains(secs(18.0)));
        let g = GilbertElliott {
            p_good_to_bad: 0.1,
            p_bad_to_good: 0.3,
            loss_bad: 1.0,
        };
        assert!((g.mean_loss(0.0) - 0.25).abs() < 1e-12);
    }
}
