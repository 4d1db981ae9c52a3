//! The day's script: who changes presence when, and to what. Seeded, so every phone of a
//! run (and every run with the same seed) sees the same hour.
//!
//! Each contact changes on its own Poisson clock: single changes, plus "arrivals"
//! (bursts of 3 to 5 changes within 10 s, as when someone reaches the office: status,
//! note, the laptop coming online). A change is what a person's phone would publish:
//! availability cycling between available, away, busy, idle and do-not-disturb, a note
//! set or cleared now and then, and occasionally a second device (`laptop`) appearing or
//! leaving. Every publish stamps the phone tuple's `at` with the simulated second, as the
//! `tern` CLI does with the wall clock; since a contact never changes twice in one
//! simulated second, `at` also names the publish, which is how latency is matched.

use tern_wire::{Availability, Basic, CardField, CardKind, Presence, Tuple};

/// The simulated epoch: `at` of the hour's start, Unix seconds.
pub(crate) const EPOCH: u64 = 1_800_000_000;

/// SplitMix64: small, seedable, and the same on every platform.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An exponential draw with this rate (events per unit).
    fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FIRST: &[&str] = &[
    "Ana", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kofi",
    "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tariq",
];
const LAST: &[&str] = &[
    "Almeida", "Berger", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Haddad", "Ivanova",
    "Jansen", "Kowalski", "Lefèvre", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka",
];
const NOTES: &[&str] = &[
    "in a meeting",
    "on the train",
    "lunch",
    "back at 3",
    "working from home",
    "at the gym",
    "driving, call later",
    "on holiday until Monday",
    "commuting",
    "picking up the kids",
    "in class",
    "coffee ☕",
    "focus time, ping if urgent",
    "doctor's appointment",
    "walking the dog",
];
const PLACES: &[&str] = &[
    "at the office",
    "at home",
    "at the airport",
    "at the station",
    "at the café",
    "at the client's",
];

/// What a contact's presence says now.
#[derive(Debug, Clone)]
struct State {
    availability: Availability,
    note: Option<String>,
    /// The laptop tuple, when it is online: its availability and when it came.
    laptop: Option<(Availability, u64)>,
}

const MOODS: [Availability; 5] = [
    Availability::AVAILABLE,
    Availability::AWAY,
    Availability::BUSY,
    Availability::IDLE,
    Availability::DND,
];
/// How likely each availability is to be the next one (people are mostly available).
const MOOD_WEIGHTS: [f64; 5] = [0.40, 0.25, 0.15, 0.15, 0.05];

impl State {
    fn initial(rng: &mut Rng) -> Self {
        let mut state = Self {
            availability: Availability::AVAILABLE,
            note: None,
            laptop: None,
        };
        state.availability = state.next_mood(rng);
        if rng.chance(0.4) {
            state.note = Some(rng.pick(NOTES).to_owned());
        }
        if rng.chance(0.2) {
            state.laptop = Some((Availability::AVAILABLE, EPOCH - 3_600));
        }
        state
    }

    /// Another availability than the current one, by [`MOOD_WEIGHTS`].
    fn next_mood(&self, rng: &mut Rng) -> Availability {
        let total: f64 = MOODS
            .iter()
            .zip(MOOD_WEIGHTS)
            .filter(|(m, _)| **m != self.availability)
            .map(|(_, w)| w)
            .sum();
        let mut x = rng.unit() * total;
        for (mood, weight) in MOODS.iter().zip(MOOD_WEIGHTS) {
            if *mood == self.availability {
                continue;
            }
            if x < weight {
                return *mood;
            }
            x -= weight;
        }
        Availability::AVAILABLE
    }

    /// A new note, or none (a cleared one) about a third of the time when one is set.
    fn next_note(&self, rng: &mut Rng) -> Option<String> {
        if self.note.is_some() && rng.chance(0.35) {
            return None;
        }
        loop {
            let note = rng.pick(NOTES);
            if self.note.as_deref() != Some(note) {
                return Some(note.to_owned());
            }
        }
    }

    /// One ordinary change: availability (55 %), note (25 %), both (15 %), the laptop
    /// coming or going (5 %).
    fn change(&mut self, rng: &mut Rng, second: u64) {
        let r = rng.unit();
        if r < 0.55 {
            self.availability = self.next_mood(rng);
        } else if r < 0.80 {
            self.note = self.next_note(rng);
        } else if r < 0.95 {
            self.availability = self.next_mood(rng);
            self.note = self.next_note(rng);
        } else {
            self.toggle_laptop(second);
        }
    }

    fn toggle_laptop(&mut self, second: u64) {
        self.laptop = match self.laptop {
            Some(_) => None,
            None => Some((Availability::AVAILABLE, second)),
        };
    }

    /// The first change of an arrival: available, and where.
    fn arrive(&mut self, rng: &mut Rng) {
        self.availability = Availability::AVAILABLE;
        self.note = Some(rng.pick(PLACES).to_owned());
    }

    fn presence(&self, contact: &Contact, second: u64) -> Presence {
        let mut tuples = vec![Tuple {
            id: "phone".into(),
            basic: Basic::Open,
            availability: Some(self.availability),
            contact: Some(format!("tern:{}", contact.address)),
            note: self.note.clone(),
            at: Some(second),
            ext: Vec::new(),
        }];
        if let Some((availability, since)) = self.laptop {
            tuples.push(Tuple {
                id: "laptop".into(),
                basic: Basic::Open,
                availability: Some(availability),
                contact: Some(format!("tern:{}", contact.address)),
                note: None,
                at: Some(since),
                ext: Vec::new(),
            });
        }
        Presence {
            tuples,
            card: contact.card.clone(),
        }
    }
}

/// One of the phone's contacts.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    /// `c007@example.com`.
    pub(crate) address: String,
    /// A name, and for a third of them a phone number.
    card: Vec<CardField>,
}

/// One publish of the hour.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// Simulated milliseconds since the hour's start.
    pub(crate) at_ms: u64,
    /// Index into [`Day::contacts`].
    pub(crate) contact: usize,
    /// The whole document published.
    pub(crate) presence: Presence,
    /// Part of an arrival burst.
    pub(crate) burst: bool,
}

/// The whole script.
#[derive(Debug, Clone)]
pub(crate) struct Day {
    pub(crate) contacts: Vec<Contact>,
    /// What each contact publishes before the hour (and the phones subscribe to).
    pub(crate) initial: Vec<Presence>,
    /// Every publish of the hour, in time order.
    pub(crate) events: Vec<Event>,
}

/// The knobs of the script.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script {
    pub(crate) contacts: usize,
    /// Changes per contact per hour, bursts included.
    pub(crate) rate: f64,
    /// Share of changes that come in bursts.
    pub(crate) burst_share: f64,
    /// Length of the hour, simulated seconds.
    pub(crate) seconds: u64,
    pub(crate) seed: u64,
    pub(crate) domain: &'static str,
}

/// Mean size of a burst (3 to 5 changes).
const BURST_MEAN: f64 = 4.0;
/// A burst's changes fall within this many simulated seconds.
const BURST_SPAN_S: f64 = 10.0;

impl Script {
    pub(crate) fn build(&self) -> Day {
        let mut rng = Rng::new(self.seed);
        let hours = self.seconds as f64 / 3_600.0;
        // Episodes per contact per hour: singles, and bursts of BURST_MEAN changes.
        let burst_rate = self.rate * self.burst_share / BURST_MEAN;
        let single_rate = self.rate * (1.0 - self.burst_share);
        let episode_rate = single_rate + burst_rate;
        let mut contacts = Vec::with_capacity(self.contacts);
        let mut initial = Vec::with_capacity(self.contacts);
        let mut events = Vec::new();
        for i in 0..self.contacts {
            let address = format!("c{i:03}@{}", self.domain);
            let mut card = vec![CardField {
                kind: CardKind::NAME,
                value: format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
            }];
            if rng.chance(1.0 / 3.0) {
                card.push(CardField {
                    kind: CardKind::TEL,
                    value: format!("+44 7700 9{:05}", rng.below(100_000)),
                });
            }
            let contact = Contact { address, card };
            let mut state = State::initial(&mut rng);
            initial.push(state.presence(&contact, EPOCH - 3_600));
            // Episode start times in simulated seconds.
            let mut t = rng.exp(episode_rate) * 3_600.0;
            let mut last_second: Option<u64> = None;
            let limit = hours * 3_600.0;
            while t < limit {
                let burst = rng.chance(burst_rate / episode_rate);
                let offsets: Vec<f64> = if burst {
                    let n = 3 + rng.below(3);
                    let mut o: Vec<f64> = (0..n)
                        .map(|k| {
                            if k == 0 {
                                0.0
                            } else {
                                rng.unit() * BURST_SPAN_S
                            }
                        })
                        .collect();
                    o.sort_by(f64::total_cmp);
                    o
                } else {
                    vec![0.0]
                };
                for (k, offset) in offsets.into_iter().enumerate() {
                    // Whole simulated seconds, strictly increasing per contact, so that
                    // `at` names the publish; a random millisecond within the second
                    // keeps contacts from publishing in lockstep.
                    let mut second = (t + offset).floor() as u64;
                    if let Some(last) = last_second {
                        second = second.max(last + 1);
                    }
                    if second as f64 >= limit {
                        break;
                    }
                    last_second = Some(second);
                    if burst && k == 0 {
                        state.arrive(&mut rng);
                    } else if burst && k == 1 && state.laptop.is_none() {
                        state.toggle_laptop(EPOCH + second);
                    } else {
                        state.change(&mut rng, EPOCH + second);
                    }
                    events.push(Event {
                        at_ms: second * 1000 + rng.below(1000) as u64,
                        contact: i,
                        presence: state.presence(&contact, EPOCH + second),
                        burst,
                    });
                }
                t += rng.exp(episode_rate) * 3_600.0;
            }
            contacts.push(contact);
        }
        events.sort_by_key(|e| (e.at_ms, e.contact));
        Day {
            contacts,
            initial,
            events,
        }
    }
}

/// The publish a document stands for: its phone tuple's `at`.
pub(crate) fn stamp(presence: &Presence) -> Option<u64> {
    presence
        .tuples
        .iter()
        .find(|t| t.id == "phone")
        .and_then(|t| t.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Script {
        Script {
            contacts: 200,
            rate: 6.0,
            burst_share: 0.15,
            seconds: 3_600,
            seed: 1,
            domain: "example.com",
        }
    }

    #[test]
    fn about_six_changes_per_contact_hour_with_some_bursts() {
        let day = script().build();
        let n = day.events.len() as f64;
        assert!((1_000.0..1_400.0).contains(&n), "{n} changes");
        let bursts = day.events.iter().filter(|e| e.burst).count() as f64;
        assert!((0.08..0.25).contains(&(bursts / n)), "{bursts} of {n}");
    }

    #[test]
    fn stamps_name_each_publish_of_a_contact() {
        let day = script().build();
        for c in 0..day.contacts.len() {
            let stamps: Vec<u64> = day
                .events
                .iter()
                .filter(|e| e.contact == c)
                .filter_map(|e| stamp(&e.presence))
                .collect();
            assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        let (a, b) = (script().build(), script().build());
        assert_eq!(a.events.len(), b.events.len());
        assert!(
            a.events
                .iter()
                .zip(&b.events)
                .all(|(x, y)| x.at_ms == y.at_ms && x.presence == y.presence)
        );
    }
}
