//! Presence synchronisation driven without sockets: slots, deltas, batches, the flush
//! policy by client mode, state vectors, and a property test that any run of changes,
//! lost batches and reconnections leaves the client with exactly the current state.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tern_wire::delta::{Check, apply};
use tern_wire::{Batch, Change, ClientMode, Ext, Have, Held, Slot, Version};

use super::*;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@other.org";

fn sync_open(who: &str, device: u8) -> Up {
    Up::Open(tern_wire::Open {
        version: VERSION,
        user: who.into(),
        token: format!("token-{who}"),
        device: vec![device; 16],
        inbox_seen: 0,
        flags: tern_wire::Open::INBOX | tern_wire::Open::SYNC,
    })
}

/// What a client holds: a model of tern-client's presence cache, applying frames by the
/// protocol's rules and checking every checksum.
#[derive(Debug, Default, Clone)]
struct Mirror {
    slots: BTreeMap<Slot, (String, Version, Presence)>,
    /// A `Have` was sent and its `Synced` not yet read: batches are discarded.
    awaiting: Option<u32>,
    /// Highest batch number read.
    last: u32,
    batches: usize,
}

impl Mirror {
    fn have(&mut self, req: u32, mode: ClientMode) -> Up {
        self.awaiting = Some(req);
        Up::Have(Have {
            req,
            mode,
            held: self
                .slots
                .iter()
                .map(|(slot, (_, version, _))| Held {
                    slot: *slot,
                    version: *version,
                })
                .collect(),
        })
    }

    fn read(&mut self, frames: &[Down]) {
        for frame in frames {
            match frame {
                Down::Subscribed {
                    slot, version, doc, ..
                } => {
                    let state = (doc.presentity.clone(), *version, doc.presence.clone());
                    self.slots.insert(*slot, state);
                }
                Down::Synced { req, batch } if self.awaiting == Some(*req) => {
                    self.awaiting = None;
                    self.apply(batch);
                }
                Down::Batch(batch) if self.awaiting.is_none() => self.apply(batch),
                Down::Batch(batch) | Down::Synced { batch, .. } => self.last = batch.seq,
                _ => {}
            }
        }
    }

    fn apply(&mut self, batch: &Batch) {
        self.batches += 1;
        self.last = batch.seq;
        let mut check = Check::new();
        for change in &batch.changes {
            match change {
                Change::Full {
                    slot,
                    version,
                    name,
                    presence,
                    ..
                } => {
                    let name = name
                        .clone()
                        .or_else(|| self.slots.get(slot).map(|s| s.0.clone()))
                        .expect("a Full without a name is for a slot the client holds");
                    check.state(*slot, &name, *version, presence);
                    self.slots.insert(*slot, (name, *version, presence.clone()));
                }
                Change::Delta {
                    slot,
                    version,
                    back,
                    ops,
                    ..
                } => {
                    let (name, held, presence) =
                        self.slots.get_mut(slot).expect("a delta's slot is held");
                    assert_eq!(*held + u64::from(*back), *version, "delta base");
                    apply(presence, ops).expect("delta applies");
                    *held = *version;
                    check.state(*slot, name, *version, presence);
                }
                Change::Gone { slot } => {
                    self.slots.remove(slot);
                    check.gone(*slot);
                }
            }
        }
        assert_eq!(check.finish(), batch.check, "checksum of {batch:?}");
    }

    fn presence_of(&self, who: &str) -> Option<&Presence> {
        self.slots
            .values()
            .find(|(name, _, _)| name == who)
            .map(|(_, _, p)| p)
    }
}

fn batches(frames: &[Down]) -> Vec<&Batch> {
    frames
        .iter()
        .filter_map(|f| match f {
            Down::Batch(b) => Some(b),
            _ => None,
        })
        .collect()
}

impl World {
    /// Alice's device opens a synchronised session, states what `mirror` holds, and
    /// reads the answer.
    fn sync_login(&mut self, conn: ConnId, mirror: &mut Mirror, mode: ClientMode) -> Vec<Down> {
        self.hub.handle_connect(self.now, conn);
        let mut frames = frames_to(&self.frame(conn, sync_open(ALICE, 1)), conn);
        let have = mirror.have(conn as u32, mode);
        frames.extend(frames_to(&self.frame(conn, have), conn));
        mirror.read(&frames);
        frames
    }

    fn publish(&mut self, conn: ConnId, presence: Presence) {
        let actions = self.frame(conn, Up::Publish { req: 1, presence });
        assert!(matches!(frames_to(&actions, conn)[0], Down::Ok { .. }));
    }

    fn current(&self, who: &str) -> Presence {
        self.store
            .presence(who)
            .unwrap()
            .map(|v| v.doc.presence)
            .unwrap_or_default()
    }
}

/// Alice (synchronised, device 1, conn 1) watches Bob (conn 2) and Carol (conn 3).
fn watching(mode: ClientMode) -> (World, Mirror) {
    let mut w = World::new();
    let mut mirror = Mirror::default();
    w.sync_login(1, &mut mirror, mode);
    w.login(2, BOB);
    w.login(3, CAROL);
    for (req, who) in [(10, BOB), (11, CAROL)] {
        let actions = w.frame(
            1,
            Up::Subscribe {
                req,
                target: who.into(),
            },
        );
        mirror.read(&frames_to(&actions, 1));
    }
    w.frame(1, Up::Applied { batch: mirror.last });
    (w, mirror)
}

#[test]
fn subscribe_answers_with_a_slot_and_changes_come_as_one_coalesced_batch() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    assert_eq!(mirror.slots.keys().copied().collect::<Vec<_>>(), [1, 2]);
    w.publish(2, open("zero"));
    mirror.read(&frames_to(&w.tick(50), 1));
    w.publish(2, open("one"));
    w.publish(2, open("two"));
    w.publish(3, open("carol"));
    w.publish(2, open("three"));
    // Nothing before the active flush delay: the changes coalesce.
    assert!(frames_to(&w.tick(10), 1).is_empty());
    let frames = frames_to(&w.tick(40), 1);
    assert_eq!(batches(&frames).len(), 1, "{frames:?}");
    let batch = batches(&frames)[0];
    assert_eq!(batch.changes.len(), 2);
    // Bob's change goes from the version alice holds straight to the newest.
    assert!(matches!(
        batch.changes[0],
        Change::Delta {
            slot: 1,
            back: 3,
            version: 4,
            ..
        }
    ));
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), Some(&open("three")));
    assert_eq!(mirror.presence_of(CAROL), Some(&open("carol")));
}

#[test]
fn a_note_change_is_a_few_bytes() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    w.publish(2, open("at my desk"));
    mirror.read(&frames_to(&w.tick(50), 1));
    w.frame(1, Up::Applied { batch: mirror.last });
    w.publish(2, open("lunch"));
    let frames = frames_to(&w.tick(50), 1);
    let size = tern_wire::codec::frame_size(&frames[0]);
    let notify = tern_wire::codec::frame_size(&Down::Notify {
        doc: w.store.presence(BOB).unwrap().unwrap().doc,
    });
    assert!(size <= 25, "{size} bytes: {frames:?}");
    assert!(size * 2 < notify, "batch {size} vs notify {notify}");
}

#[test]
fn inactive_mode_waits_for_the_interval_or_a_full_batch() {
    let (mut w, mut mirror) = watching(ClientMode::INACTIVE);
    w.publish(2, open("x"));
    assert!(frames_to(&w.tick(60_000), 1).is_empty());
    let policy = w.hub.config().flush;
    let frames = frames_to(&w.tick(policy.inactive_ms - 60_000), 1);
    assert_eq!(batches(&frames).len(), 1);
    mirror.read(&frames);
    w.frame(1, Up::Applied { batch: mirror.last });
    // batch_max pending presentities go at once.
    let mut w2 = World::new();
    w2.hub = Hub::new(HubConfig {
        flush: crate::config::FlushPolicy {
            batch_max: 2,
            ..policy
        },
        ..w2.hub.config().clone()
    });
    w2.hub.load(w2.now, &mut w2.store).unwrap();
    let mut m2 = Mirror::default();
    w2.sync_login(1, &mut m2, ClientMode::INACTIVE);
    w2.login(2, BOB);
    w2.login(3, CAROL);
    for (req, who) in [(10, BOB), (11, CAROL)] {
        let target = who.into();
        m2.read(&frames_to(&w2.frame(1, Up::Subscribe { req, target }), 1));
    }
    w2.publish(2, open("b"));
    let actions = w2.frame(
        3,
        Up::Publish {
            req: 1,
            presence: open("c"),
        },
    );
    assert_eq!(batches(&frames_to(&actions, 1)).len(), 1);
}

#[test]
fn a_message_during_a_pending_batch_arrives_at_once_and_carries_the_presence() {
    let (mut w, mut mirror) = watching(ClientMode::INACTIVE);
    w.publish(3, open("carol is busy"));
    let actions = w.frame(
        2,
        Up::Send {
            req: 5,
            msg: msg(1, ALICE, "hi"),
        },
    );
    let frames = frames_to(&actions, 1);
    assert!(matches!(frames[0], Down::Deliver { .. }), "{frames:?}");
    assert!(matches!(frames[1], Down::Batch(_)), "{frames:?}");
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(CAROL), Some(&open("carol is busy")));
}

#[test]
fn anything_the_client_sends_flushes_pending_presence_after_its_answer() {
    let (mut w, mut mirror) = watching(ClientMode::SLEEPY);
    w.publish(2, open("bob"));
    assert!(frames_to(&w.tick(600_000), 1).is_empty());
    let actions = w.frame(
        1,
        Up::Mode {
            mode: ClientMode::SLEEPY,
        },
    );
    let frames = frames_to(&actions, 1);
    assert_eq!(batches(&frames).len(), 1);
    let actions = w.frame(
        1,
        Up::Fetch {
            req: 7,
            target: CAROL.into(),
        },
    );
    assert!(matches!(
        frames_to(&actions, 1)[..],
        [Down::Presence { .. }]
    ));
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), Some(&open("bob")));
}

#[test]
fn unacknowledged_batches_hold_later_changes_which_coalesce() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    let mut sent = Vec::new();
    for i in 0..7 {
        w.publish(2, open(&format!("v{i}")));
        sent.extend(frames_to(&w.tick(50), 1));
    }
    // Four batches fit the window; later changes wait, and coalesce.
    assert_eq!(batches(&sent).len(), 4, "{sent:?}");
    mirror.read(&sent);
    let frames = frames_to(&w.frame(1, Up::Applied { batch: mirror.last }), 1);
    assert_eq!(batches(&frames).len(), 1);
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), Some(&open("v6")));
}

#[test]
fn a_state_vector_after_a_lost_link_gets_only_what_changed() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    w.publish(2, open("before"));
    w.publish(3, open("carol"));
    mirror.read(&frames_to(&w.tick(50), 1));
    w.disconnect(1);
    w.publish(2, open("while away"));
    let frames = w.sync_login(4, &mut mirror, ClientMode::ACTIVE);
    let synced: Vec<&Batch> = frames
        .iter()
        .filter_map(|f| match f {
            Down::Synced { batch, .. } => Some(batch),
            _ => None,
        })
        .collect();
    assert_eq!(synced.len(), 1);
    assert!(matches!(
        synced[0].changes[..],
        [Change::Delta { slot: 1, .. }]
    ));
    assert_eq!(mirror.presence_of(BOB), Some(&open("while away")));
    // Unchanged: an empty answer.
    w.disconnect(4);
    let frames = w.sync_login(5, &mut mirror, ClientMode::ACTIVE);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Down::Synced { batch, .. } if batch.changes.is_empty()))
    );
}

#[test]
fn a_base_no_longer_cached_is_sent_whole_and_a_fresh_device_gets_names() {
    let mut w = World::new();
    w.hub = Hub::new(HubConfig {
        caches: crate::config::CacheSizes {
            documents: 1,
            versions: 1,
            deltas: 1,
        },
        ..w.hub.config().clone()
    });
    w.hub.load(w.now, &mut w.store).unwrap();
    let mut mirror = Mirror::default();
    w.sync_login(1, &mut mirror, ClientMode::ACTIVE);
    w.login(2, BOB);
    w.login(3, CAROL);
    let target = BOB.into();
    mirror.read(&frames_to(&w.frame(1, Up::Subscribe { req: 1, target }), 1));
    w.publish(2, open("a"));
    w.publish(3, open("carol pushes bob's versions out"));
    let frames = frames_to(&w.tick(50), 1);
    assert!(matches!(
        batches(&frames)[0].changes[..],
        [Change::Full { name: None, .. }]
    ));
    mirror.read(&frames);
    // A device with nothing gets names.
    let mut fresh = Mirror::default();
    w.hub.handle_connect(w.now, 9);
    w.frame(9, sync_open(ALICE, 2));
    let frames = frames_to(&w.frame(9, fresh.have(1, ClientMode::ACTIVE)), 9);
    assert!(frames.iter().any(|f| matches!(
        f,
        Down::Synced { batch, .. }
            if matches!(&batch.changes[..], [Change::Full { name: Some(n), .. }] if n == BOB)
    )));
    fresh.read(&frames);
    assert_eq!(fresh.presence_of(BOB), Some(&open("a")));
}

#[test]
fn a_subscription_ended_on_another_device_is_gone_on_this_one() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    w.hub.handle_connect(w.now, 8);
    w.frame(8, sync_open(ALICE, 2));
    let target = BOB.into();
    w.frame(8, Up::Unsubscribe { req: 1, target });
    let frames = frames_to(&w.tick(50), 1);
    assert!(matches!(
        batches(&frames)[0].changes[..],
        [Change::Gone { slot: 1 }]
    ));
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), None);
    // A slot is never reused for another presentity.
    let target = BOB.into();
    let actions = w.frame(8, Up::Subscribe { req: 2, target });
    assert!(matches!(
        frames_to(&actions, 8)[0],
        Down::Subscribed { slot: 3, .. }
    ));
}

#[test]
fn have_and_mode_on_a_session_without_sync_are_refused_or_ignored() {
    let mut w = World::new();
    w.login(1, ALICE);
    let actions = w.frame(1, Mirror::default().have(3, ClientMode::ACTIVE));
    assert!(matches!(
        frames_to(&actions, 1)[..],
        [Down::Fail {
            req: 3,
            code: ErrorCode::PROTOCOL,
            ..
        }]
    ));
    assert!(w.frame(1, Up::Applied { batch: 9 }).is_empty());
}

#[test]
fn conditional_fetch_answers_ok_when_unchanged() {
    let mut w = World::new();
    w.login(1, ALICE);
    w.login(2, BOB);
    w.publish(2, open("x"));
    let ask = |version| Up::FetchIf {
        req: 4,
        target: BOB.into(),
        version,
    };
    let actions = w.frame(1, ask(0));
    let [Down::Versioned { version, .. }] = frames_to(&actions, 1)[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(version, 1);
    let actions = w.frame(1, ask(1));
    assert!(matches!(frames_to(&actions, 1)[..], [Down::Ok { req: 4 }]));
}

#[test]
fn an_asleep_device_stays_asleep_until_its_wake_time_then_goes_out_of_contact() {
    let mut w = World::new();
    w.login(1, CAROL);
    let wake = w.now / 1000 + 600;
    let mut asleep = open("sensor");
    asleep.tuples[0].basic = Basic::Closed;
    asleep.tuples[0].availability = Some(Availability::ASLEEP);
    asleep.tuples[0].ext = vec![Ext::wake(wake)];
    w.publish(1, asleep.clone());
    w.disconnect(1);
    assert_eq!(w.current(CAROL), asleep, "still asleep, not dead");
    w.tick(600_000);
    assert_eq!(w.current(CAROL), asleep);
    w.tick(w.hub.config().resume_window_ms);
    let dead = w.current(CAROL);
    assert_eq!(dead.tuples[0].availability, None);
    assert!(dead.tuples[0].ext.is_empty());
    assert_eq!(dead.tuples[0].note.as_deref(), Some("sensor"));
}

#[test]
fn a_have_in_0rtt_is_answered_early_and_changes_before_confirmation_follow() {
    let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
    mirror.read(&frames_to(&w.tick(50), 1));
    w.disconnect(1);
    let have = mirror.have(77, ClientMode::ACTIVE);
    let early = w.early(6, vec![sync_open(ALICE, 1), have]);
    let frames = frames_to(&early, 6);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Down::Synced { req: 77, .. }))
    );
    mirror.read(&frames);
    w.publish(2, open("between"));
    let frames = frames_to(&w.confirm(6), 6);
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), Some(&open("between")));
}

// ---- Property: convergence under loss and reconnection --------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Bob (0) or Carol (1) publishes one of a few documents.
    Publish(usize, usize),
    /// Time passes.
    Wait(u64),
    /// The client acknowledges what it read.
    Ack,
    /// The client reads the first half of what is in flight (the rest may be lost).
    ReadHalf,
    /// The frames in flight are lost and the link dies; the client reconnects with Have.
    Lose,
    /// The client switches mode.
    Mode(u8),
    /// The presentity goes offline (out of contact) and comes back.
    Bounce(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..2usize, 0..4usize).prop_map(|(who, doc)| Step::Publish(who, doc)),
        2 => (1..200_000u64).prop_map(Step::Wait),
        2 => Just(Step::Ack),
        1 => Just(Step::ReadHalf),
        1 => Just(Step::Lose),
        1 => (0..3u8).prop_map(Step::Mode),
        1 => (0..2usize).prop_map(Step::Bounce),
    ]
}

fn document(i: usize) -> Presence {
    let mut p = open(&format!("note {}", i % 2));
    match i {
        1 => p.tuples[0].availability = Some(Availability::BUSY),
        2 => p.tuples.push(Tuple {
            id: "laptop".into(),
            ..p.tuples[0].clone()
        }),
        3 => {
            p.card = vec![tern_wire::CardField {
                kind: tern_wire::CardKind::NAME,
                value: "B".into(),
            }]
        }
        _ => {}
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_run_of_changes_losses_and_reconnections_converges(steps in prop::collection::vec(step(), 1..40)) {
        let (mut w, mut mirror) = watching(ClientMode::ACTIVE);
        let (mut conn, mut next) = (1, 10);
        let mut inflight: Vec<Down> = Vec::new();
        let conns = [2, 3];
        let names = [BOB, CAROL];
        let mut mode = ClientMode::ACTIVE;
        for step in steps {
            let actions = match step {
                Step::Publish(who, doc) => w.frame(conns[who], Up::Publish { req: 1, presence: document(doc) }),
                Step::Wait(ms) => w.tick(ms),
                Step::Ack => {
                    mirror.read(&std::mem::take(&mut inflight));
                    w.frame(conn, Up::Applied { batch: mirror.last })
                }
                Step::ReadHalf => {
                    let rest = inflight.split_off(inflight.len() / 2);
                    mirror.read(&std::mem::replace(&mut inflight, rest));
                    Vec::new()
                }
                Step::Lose => {
                    inflight.clear();
                    w.disconnect(conn);
                    conn = next;
                    next += 1;
                    w.sync_login(conn, &mut mirror, mode);
                    Vec::new()
                }
                Step::Mode(m) => {
                    mode = ClientMode(m);
                    w.frame(conn, Up::Mode { mode })
                }
                Step::Bounce(who) => {
                    let mut actions = w.disconnect(conns[who]);
                    actions.extend(w.login(conns[who], names[who]));
                    actions
                }
            };
            inflight.extend(frames_to(&actions, conn));
        }
        // Whatever happened, once the client reads everything and asks, it converges.
        mirror.read(&std::mem::take(&mut inflight));
        let frames = frames_to(&w.frame(conn, Up::Applied { batch: mirror.last }), conn);
        mirror.read(&frames);
        let frames = frames_to(&w.frame(conn, Up::Mode { mode }), conn);
        mirror.read(&frames);
        let frames = frames_to(&w.frame(conn, Up::Applied { batch: mirror.last }), conn);
        mirror.read(&frames);
        for who in names {
            prop_assert_eq!(mirror.presence_of(who), Some(&w.current(who)), "{}", who);
        }
    }
}

#[test]
fn a_keep_alive_frame_brings_pending_presence_without_a_wakeup_of_its_own() {
    let (mut w, mut mirror) = watching(ClientMode::INACTIVE);
    w.publish(2, open("held back"));
    assert!(frames_to(&w.tick(20_000), 1).is_empty());
    // The client's keep-alive is an `Applied` (here acknowledging nothing new).
    let frames = frames_to(&w.frame(1, Up::Applied { batch: mirror.last }), 1);
    assert_eq!(batches(&frames).len(), 1);
    mirror.read(&frames);
    assert_eq!(mirror.presence_of(BOB), Some(&open("held back")));
}
