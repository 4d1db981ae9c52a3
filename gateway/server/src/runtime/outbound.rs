//! A connection's outbound queue: what the hub thread has handed one connection and its
//! writer has not written yet.
//!
//! Presence is state, messages are a log. A client on a 2 kbit/s link cannot read every
//! change of a busy roster, and it does not need to: only the newest document of each
//! presentity matters. Messages need every item, but they are durable in the inbox, and
//! the hub already bounds the inbox items in flight per session (`inbox_window`). So the
//! queue keeps, in one sequence:
//!
//! - **ordinary frames** (`Welcome`/`Opened`, answers, `Deliver`): bounded by a number of
//!   frames and a number of encoded bytes ([`Bounds`]). Going over either bound
//!   overflows the queue (see below): with `Deliver` window-bounded by the hub, only a
//!   client that has stopped reading and keeps sending requests gets there;
//! - **`Notify` frames, coalesced** per presentity: a newer `Notify` for a presentity
//!   whose `Notify` is still queued replaces that one's document in place. The presence
//!   backlog is bounded by the number of presentities the connection watches (plus the
//!   ordinary frames, see the sealing rule), never by the rate of changes, so `Notify`
//!   frames do not count against [`Bounds`];
//! - at most one **close** ([`Outbound::Close`]), last: nothing is queued after it.
//!
//! # Ordering rule
//!
//! Frames are written in the order they were pushed; the one exception is that a queued
//! `Notify` is refreshed in place:
//!
//! 1. A pushed `Notify { doc }` for presentity *P* replaces the document of the queued,
//!    unwritten `Notify` for *P*, if there is one and it is still *open*; it keeps that
//!    one's place in the sequence. Otherwise it is appended.
//! 2. A queued `Notify` for *P* stops being open (is *sealed*) when a `Presence` answer
//!    carrying *P*'s document is pushed after it, and when it is taken for writing.
//!
//! Consequences, all relied upon:
//! - the relative order of the frames that are written never changes: answers in request
//!   order, `Deliver` in `seq` order, `Welcome`/`Opened` first, the close last;
//! - for each presentity, the documents a client reads come in the order the hub produced
//!   them (some skipped), and the last one it reads is the last one produced. Without
//!   rule 2, a refreshed `Notify` placed before a `Presence` answer would be followed by
//!   that answer's older document, and the client would end on a stale state;
//! - a refreshed `Notify` may report a change the hub produced after frames that are
//!   written after it (a `Deliver`, an `Ok`): presence may run *ahead* of the frames that
//!   follow it, never behind them.
//!
//! # Overflow
//!
//! Pushing an ordinary frame over a bound empties the queue and refuses everything from
//! then on: the connection is to be cut (`too_slow`), and what was queued is not worth
//! keeping (messages stay in the inbox and are delivered again on the next session).
//!
//! This module owns the order, the coalescing, the bounds and the counters. It does no
//! I/O, never blocks or waits, knows neither tokio nor quinn, and decides nothing: what
//! is sent is the hub's decision, and what happens on overflow is the hub thread's.

use std::collections::{HashMap, VecDeque};

use tern_wire::codec::frame_size;
use tern_wire::{Down, ErrorCode};

/// What a connection's writer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outbound {
    /// Write this frame.
    Frame(Down),
    /// Write `Down::Close`, finish the stream, then close the connection with `code`.
    Close { code: ErrorCode, text: String },
}

/// The limits on the ordinary frames one connection may have queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Most ordinary frames.
    pub(crate) frames: usize,
    /// Most encoded bytes of ordinary frames, length prefixes included.
    pub(crate) bytes: usize,
}

/// What became of a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Appended to the sequence.
    Queued,
    /// A `Notify` that refreshed the queued one of its presentity in place.
    Coalesced,
    /// Over a bound: the queue is now empty and refuses everything; the connection must
    /// be cut. The statistics are those just before the overflow.
    Overflow(Stats),
    /// Dropped: a close was queued before, or the queue had overflowed.
    Refused,
}

/// Counters of a queue, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Items queued now, of every kind.
    pub(crate) frames: usize,
    /// Of which `Notify` frames.
    pub(crate) notifies: usize,
    /// Encoded bytes queued now (`Notify` and ordinary frames).
    pub(crate) bytes: usize,
    /// The most items ever queued at once.
    pub(crate) peak_frames: usize,
    /// The most bytes ever queued at once.
    pub(crate) peak_bytes: usize,
    /// Items taken for writing so far.
    pub(crate) taken: u64,
    /// `Notify` frames folded into a queued one so far (changes the client never saw).
    pub(crate) coalesced: u64,
}

/// How a queued item counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bounded by [`Bounds`].
    Ordinary,
    /// Coalesced, unbounded by [`Bounds`].
    Notify,
    /// The last item; not counted.
    Close,
}

#[derive(Debug)]
struct Slot {
    out: Outbound,
    kind: Kind,
    /// Encoded size, prefix included (0 for the close).
    size: usize,
}

/// Whether the queue still takes items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A close is queued (or was taken): nothing more is.
    Closing,
    /// It went over a bound: nothing more is queued or taken.
    Overflowed,
}

/// One connection's outbound queue; see the module documentation.
#[derive(Debug)]
pub(crate) struct OutQueue {
    bounds: Bounds,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`; slot `i` has number `head + i`.
    head: u64,
    /// The open `Notify` of each presentity, by sequence number.
    open: HashMap<String, u64>,
    /// Ordinary frames queued, and their bytes.
    ordinary: usize,
    ordinary_bytes: usize,
    stats: Stats,
    state: State,
}

impl OutQueue {
    /// An empty queue with these bounds.
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            slots: VecDeque::new(),
            head: 0,
            open: HashMap::new(),
            ordinary: 0,
            ordinary_bytes: 0,
            stats: Stats::default(),
            state: State::Open,
        }
    }

    /// Queues an item, following the ordering rule of the module documentation.
    pub(crate) fn push(&mut self, out: Outbound) -> Pushed {
        if self.state != State::Open {
            return Pushed::Refused;
        }
        let pushed = match out {
            Outbound::Frame(Down::Notify { doc }) => self.push_notify(Down::Notify { doc }),
            Outbound::Frame(frame) => self.push_ordinary(frame),
            close @ Outbound::Close { .. } => {
                self.state = State::Closing;
                self.append(close, Kind::Close, 0);
                Pushed::Queued
            }
        };
        self.stats.peak_frames = self.stats.peak_frames.max(self.stats.frames);
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.bytes);
        pushed
    }

    /// Takes the next item to write, if any.
    pub(crate) fn pop(&mut self) -> Option<Outbound> {
        let slot = self.slots.pop_front()?;
        let seq = self.head;
        self.head += 1;
        self.stats.frames -= 1;
        self.stats.bytes -= slot.size;
        self.stats.taken += 1;
        match slot.kind {
            Kind::Ordinary => {
                self.ordinary -= 1;
                self.ordinary_bytes -= slot.size;
            }
            Kind::Notify => {
                self.stats.notifies -= 1;
                if let Outbound::Frame(Down::Notify { doc }) = &slot.out
                    && self.open.get(doc.presentity.as_str()) == Some(&seq)
                {
                    self.open.remove(doc.presentity.as_str());
                }
            }
            Kind::Close => {}
        }
        Some(slot.out)
    }

    /// Whether the queue went over a bound (and so will never yield anything again).
    pub(crate) fn overflowed(&self) -> bool {
        self.state == State::Overflowed
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    fn push_notify(&mut self, frame: Down) -> Pushed {
        let Down::Notify { doc } = &frame else {
            return self.push_ordinary(frame);
        };
        let size = frame_size(&frame);
        let at = self
            .open
            .get(doc.presentity.as_str())
            .and_then(|seq| seq.checked_sub(self.head))
            .and_then(|i| usize::try_from(i).ok());
        if let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) {
            self.stats.bytes = self.stats.bytes - slot.size + size;
            slot.size = size;
            slot.out = Outbound::Frame(frame);
            self.stats.coalesced += 1;
            return Pushed::Coalesced;
        }
        let key = doc.presentity.to_string();
        let seq = self.head + self.slots.len() as u64;
        self.append(Outbound::Frame(frame), Kind::Notify, size);
        self.stats.notifies += 1;
        self.open.insert(key, seq);
        Pushed::Queued
    }

    fn push_ordinary(&mut self, frame: Down) -> Pushed {
        let size = frame_size(&frame);
        if self.ordinary >= self.bounds.frames
            || self.ordinary_bytes.saturating_add(size) > self.bounds.bytes
        {
            let before = self.stats;
            self.overflow();
            return Pushed::Overflow(before);
        }
        if let Down::Presence { doc, .. } = &frame {
            // Rule 2: a later Notify must not refresh one written before this answer.
            self.open.remove(doc.presentity.as_str());
        }
        self.ordinary += 1;
        self.ordinary_bytes += size;
        self.append(Outbound::Frame(frame), Kind::Ordinary, size);
        Pushed::Queued
    }

    fn append(&mut self, out: Outbound, kind: Kind, size: usize) {
        self.slots.push_back(Slot { out, kind, size });
        self.stats.frames += 1;
        self.stats.bytes += size;
    }

    fn overflow(&mut self) {
        self.state = State::Overflowed;
        self.slots = VecDeque::new();
        self.open = HashMap::new();
        self.ordinary = 0;
        self.ordinary_bytes = 0;
        self.stats.frames = 0;
        self.stats.notifies = 0;
        self.stats.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use tern_wire::codec::encode;
    use tern_wire::{Basic, Presence, PresenceDoc, Tuple};

    use super::*;

    const ROOMY: Bounds = Bounds {
        frames: 100,
        bytes: 1 << 20,
    };

    fn doc(presentity: &str, note: &str) -> PresenceDoc {
        PresenceDoc {
            presentity: presentity.into(),
            updated: 1,
            presence: Presence {
                tuples: vec![Tuple {
                    id: "phone".into(),
                    basic: Basic::Open,
                    availability: None,
                    contact: None,
                    note: Some(note.into()),
                    at: None,
                    ext: vec![],
                }],
                card: vec![],
            },
        }
    }

    fn notify(presentity: &str, note: &str) -> Outbound {
        Outbound::Frame(Down::Notify {
            doc: doc(presentity, note),
        })
    }

    fn ok(req: u32) -> Outbound {
        Outbound::Frame(Down::Ok { req })
    }

    fn close() -> Outbound {
        Outbound::Close {
            code: ErrorCode::GOODBYE,
            text: "bye".into(),
        }
    }

    fn drain(queue: &mut OutQueue) -> Vec<Outbound> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn frames_leave_in_the_order_they_came() {
        let mut queue = OutQueue::new(ROOMY);
        let items = [ok(1), notify("a@x", "1"), ok(2), notify("b@x", "1"), ok(3)];
        for item in items.clone() {
            assert_eq!(queue.push(item), Pushed::Queued);
        }
        assert_eq!(drain(&mut queue), items);
        assert_eq!(queue.stats().frames, 0);
    }

    #[test]
    fn a_newer_notify_replaces_the_queued_one_in_place() {
        let mut queue = OutQueue::new(ROOMY);
        queue.push(ok(1));
        queue.push(notify("a@x", "1"));
        queue.push(ok(2));
        queue.push(notify("b@x", "1"));
        assert_eq!(queue.push(notify("a@x", "2")), Pushed::Coalesced);
        assert_eq!(queue.push(notify("a@x", "3")), Pushed::Coalesced);
        queue.push(ok(3));
        assert_eq!(queue.stats().coalesced, 2);
        assert_eq!(
            drain(&mut queue),
            [ok(1), notify("a@x", "3"), ok(2), notify("b@x", "1"), ok(3)]
        );
    }

    #[test]
    fn the_presence_backlog_is_bounded_by_the_presentities_not_the_changes() {
        let mut queue = OutQueue::new(Bounds {
            frames: 4,
            bytes: 1 << 20,
        });
        for i in 0..10_000 {
            let pushed = queue.push(notify(&format!("p{}@x", i % 3), &i.to_string()));
            assert_ne!(pushed, Pushed::Refused);
            assert!(!matches!(pushed, Pushed::Overflow(_)));
        }
        let stats = queue.stats();
        assert_eq!((stats.frames, stats.notifies), (3, 3));
        assert_eq!(stats.coalesced, 10_000 - 3);
        assert_eq!(stats.peak_frames, 3);
        // The newest document of each presentity, in the order they were first queued.
        assert_eq!(
            drain(&mut queue),
            [
                notify("p0@x", "9999"),
                notify("p1@x", "9997"),
                notify("p2@x", "9998")
            ]
        );
    }

    #[test]
    fn a_notify_being_written_is_not_refreshed_a_new_one_is_queued() {
        let mut queue = OutQueue::new(ROOMY);
        queue.push(notify("a@x", "1"));
        assert_eq!(queue.pop(), Some(notify("a@x", "1")));
        assert_eq!(queue.push(notify("a@x", "2")), Pushed::Queued);
        assert_eq!(queue.push(notify("a@x", "3")), Pushed::Coalesced);
        assert_eq!(drain(&mut queue), [notify("a@x", "3")]);
    }

    #[test]
    fn a_presence_answer_seals_the_queued_notify_so_the_client_ends_on_the_newest() {
        let mut queue = OutQueue::new(ROOMY);
        let answer = Outbound::Frame(Down::Presence {
            req: 7,
            doc: doc("a@x", "2"),
        });
        queue.push(notify("a@x", "1"));
        queue.push(answer.clone());
        // Refreshing the first Notify would put "3" before the answer's "2".
        assert_eq!(queue.push(notify("a@x", "3")), Pushed::Queued);
        assert_eq!(queue.push(notify("a@x", "4")), Pushed::Coalesced);
        // Another presentity's answer seals nothing of a@x.
        queue.push(Outbound::Frame(Down::Presence {
            req: 8,
            doc: doc("b@x", "1"),
        }));
        assert_eq!(queue.push(notify("a@x", "5")), Pushed::Coalesced);
        assert_eq!(
            drain(&mut queue)[..3],
            [notify("a@x", "1"), answer, notify("a@x", "5")]
        );
    }

    #[test]
    fn too_many_ordinary_frames_overflow_and_the_queue_refuses_everything_after() {
        let mut queue = OutQueue::new(Bounds {
            frames: 3,
            bytes: 1 << 20,
        });
        queue.push(notify("a@x", "1"));
        for req in 1..=3 {
            assert_eq!(queue.push(ok(req)), Pushed::Queued);
        }
        let Pushed::Overflow(before) = queue.push(ok(4)) else {
            panic!("no overflow");
        };
        assert_eq!((before.frames, before.notifies), (4, 1));
        assert!(queue.overflowed());
        assert_eq!(queue.stats().frames, 0);
        assert_eq!(queue.stats().bytes, 0);
        assert_eq!(queue.push(notify("a@x", "2")), Pushed::Refused);
        assert_eq!(queue.push(close()), Pushed::Refused);
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn the_byte_bound_counts_encoded_frames() {
        let answer = |req, note: &str| {
            Outbound::Frame(Down::Presence {
                req,
                doc: doc("a@x", note),
            })
        };
        let Outbound::Frame(one) = answer(1, &"n".repeat(300)) else {
            unreachable!()
        };
        let size = encode(&one).len();
        assert_eq!(frame_size(&one), size);
        let mut queue = OutQueue::new(Bounds {
            frames: 100,
            bytes: 2 * size,
        });
        assert_eq!(queue.push(answer(1, &"n".repeat(300))), Pushed::Queued);
        assert_eq!(queue.push(answer(2, &"n".repeat(300))), Pushed::Queued);
        assert_eq!(queue.stats().bytes, 2 * size);
        // Notify frames are bounded by coalescing, not by bytes.
        assert_eq!(queue.push(notify("b@x", &"n".repeat(300))), Pushed::Queued);
        assert!(matches!(queue.push(ok(3)), Pushed::Overflow(_)));
    }

    #[test]
    fn bytes_follow_refreshes_and_writes() {
        let mut queue = OutQueue::new(ROOMY);
        queue.push(notify("a@x", "short"));
        let long = notify("a@x", &"n".repeat(500));
        queue.push(long.clone());
        let Outbound::Frame(frame) = &long else {
            unreachable!()
        };
        let size = encode(frame).len();
        assert_eq!(queue.stats().bytes, size);
        assert_eq!(queue.pop(), Some(long));
        let stats = queue.stats();
        assert_eq!((stats.frames, stats.bytes, stats.taken), (0, 0, 1));
        assert_eq!(stats.peak_bytes, size);
    }

    /// Random pushes of answers and notifications for a few presentities, with writes
    /// in between: the client never ends on a stale document, and never sees one go back.
    #[test]
    fn interleaved_pushes_and_writes_keep_the_ordering_rule() {
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..200 {
            let mut queue = OutQueue::new(ROOMY);
            let mut produced: Vec<Outbound> = Vec::new();
            let mut written: Vec<Outbound> = Vec::new();
            let mut version = 0u32;
            for _ in 0..60 {
                match next(6) {
                    0 | 1 => written.extend(queue.pop()),
                    2 => {
                        version += 1;
                        let p = format!("p{}@x", next(3));
                        let answer = Outbound::Frame(Down::Presence {
                            req: version,
                            doc: doc(&p, &version.to_string()),
                        });
                        produced.push(answer.clone());
                        queue.push(answer);
                    }
                    _ => {
                        version += 1;
                        let item = notify(&format!("p{}@x", next(3)), &version.to_string());
                        produced.push(item.clone());
                        queue.push(item);
                    }
                }
            }
            written.extend(std::iter::from_fn(|| queue.pop()));
            let docs = |items: &[Outbound], p: &str| -> Vec<u32> {
                items
                    .iter()
                    .filter_map(|out| match out {
                        Outbound::Frame(Down::Notify { doc } | Down::Presence { doc, .. })
                            if doc.presentity == p =>
                        {
                            doc.presence.tuples[0].note.clone()
                        }
                        _ => None,
                    })
                    .map(|note| note.parse().unwrap())
                    .collect()
            };
            // Every answer is written, in order.
            let answers = |items: &[Outbound]| -> Vec<Outbound> {
                items
                    .iter()
                    .filter(|out| matches!(out, Outbound::Frame(Down::Presence { .. })))
                    .cloned()
                    .collect()
            };
            assert_eq!(answers(&written), answers(&produced));
            for p in ["p0@x", "p1@x", "p2@x"] {
                let seen = docs(&written, p);
                assert!(seen.is_sorted(), "{p} went back: {seen:?}");
                assert_eq!(seen.last(), docs(&produced, p).last(), "{p} ends stale");
            }
        }
    }

    #[test]
    fn a_close_goes_last_even_when_full_and_nothing_follows_it() {
        let mut queue = OutQueue::new(Bounds {
            frames: 1,
            bytes: 1 << 20,
        });
        queue.push(ok(1));
        queue.push(notify("a@x", "1"));
        assert_eq!(queue.push(close()), Pushed::Queued);
        assert_eq!(queue.push(ok(2)), Pushed::Refused);
        assert_eq!(queue.push(notify("a@x", "2")), Pushed::Refused);
        assert_eq!(queue.push(close()), Pushed::Refused);
        assert_eq!(drain(&mut queue), [ok(1), notify("a@x", "1"), close()]);
        assert_eq!(queue.push(ok(3)), Pushed::Refused);
    }
}
