//! Delta-encoded, batched presence over real QUIC (issue 4): a watcher's radio wakes
//! for a handful of frames however busy its roster is, a message never waits for
//! presence and carries the pending presence with it, and a returning device gets only
//! what changed. The phone here is a raw session (so that every frame can be counted)
//! applying batches with tern-client's own presence cache.

use std::time::Duration;

use tern_client::roster::Roster;
use tern_tests::raw::RawSession;
use tern_tests::{Harness, open_presence};
use tern_wire::{ClientMode, Down, Have, Message, Open, Up};
use tokio::task::JoinSet;

const CONTACTS: usize = 200;
const CHANGES: usize = 1_000;

/// A synchronised phone: its raw session and its presence cache.
struct Phone {
    session: RawSession,
    roster: Roster,
    /// Batches (and `Synced` answers) read, with their encoded sizes.
    batches: Vec<usize>,
}

impl Phone {
    async fn open(gw: &Harness, user: &str, token: &str, device: u8, mode: ClientMode) -> Self {
        let flags = Open::INBOX | Open::SYNC;
        let mut session =
            RawSession::open_device(gw.addr(), &gw.cert_pem(), user, token, device, flags).await;
        assert!(matches!(session.recv().await, Some(Down::Opened(_))));
        let mut phone = Self {
            session,
            roster: Roster::new(),
            batches: Vec::new(),
        };
        phone.have(1, mode).await;
        phone
    }

    /// States what the cache holds and applies the answer.
    async fn have(&mut self, req: u32, mode: ClientMode) {
        let held = self.roster.have(usize::MAX);
        self.session.send(&Up::Have(Have { req, mode, held })).await;
        loop {
            match self.session.recv().await {
                Some(Down::Synced { req: r, batch }) if r == req => {
                    self.take(&batch, true).await;
                    return;
                }
                Some(Down::Batch(_)) => {} // made for the state before the Have
                other => panic!("expected Synced, got {other:?}"),
            }
        }
    }

    /// Applies a batch (checking its checksum) and acknowledges it.
    async fn take(&mut self, batch: &tern_wire::Batch, synced: bool) {
        let frame = Down::Batch(batch.clone());
        self.batches.push(tern_wire::codec::frame_size(&frame));
        self.roster.apply(batch, synced).expect("the batch applies");
        self.session.send(&Up::Applied { batch: batch.seq }).await;
    }

    /// Reads frames for `wait`, applying batches; returns the other frames.
    async fn read_for(&mut self, wait: Duration) -> Vec<Down> {
        let mut others = Vec::new();
        let until = tokio::time::Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(tokio::time::Instant::now()) {
            match self.session.recv_within(left).await {
                Some(Down::Batch(batch)) => self.take(&batch, false).await,
                Some(frame) => others.push(frame),
                None => break,
            }
        }
        others
    }

    fn note_of(&self, who: &str) -> Option<String> {
        let cached = self.roster.get(who)?;
        cached.doc.presence.tuples.first()?.note.clone()
    }
}

async fn subscribe_all(phone: &mut Phone, contacts: &[String]) {
    for (i, who) in contacts.iter().enumerate() {
        let req = 100 + i as u32;
        phone
            .session
            .send(&Up::Subscribe {
                req,
                target: who.clone(),
            })
            .await;
    }
    let mut answered = 0;
    while answered < contacts.len() {
        match phone.session.recv().await {
            Some(Down::Subscribed {
                slot, version, doc, ..
            }) => {
                phone.roster.subscribed(slot, version, doc);
                answered += 1;
            }
            Some(Down::Batch(batch)) => phone.take(&batch, false).await,
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_changes_across_200_contacts_reaches_an_inactive_phone_as_a_handful_of_frames()
 {
    // The inactive interval is shortened from minutes so the test ends in seconds.
    let gw = Harness::start_with(|c| c.presence.flush_inactive_ms = 4_000).await;
    let token = gw.add_user("phone@example.com");
    let contacts: Vec<String> = (0..CONTACTS)
        .map(|i| format!("contact{i}@example.com"))
        .collect();
    let mut tokens = Vec::new();
    for who in &contacts {
        tokens.push(gw.add_user(who));
    }
    let mut phone = Phone::open(&gw, "phone@example.com", &token, 1, ClientMode::INACTIVE).await;
    subscribe_all(&mut phone, &contacts).await;
    let before = phone.batches.len();

    // Every contact publishes five times, as fast as it can: 1,000 changes.
    let (addr, cert) = (gw.addr(), gw.cert_pem());
    let mut publishers = JoinSet::new();
    for (who, token) in contacts.iter().cloned().zip(tokens) {
        let cert = cert.clone();
        publishers.spawn(async move {
            let mut s = RawSession::login(addr, &cert, &who, &token).await;
            assert!(matches!(s.recv().await, Some(Down::Welcome(_))));
            for n in 0..CHANGES / CONTACTS {
                let presence = open_presence(&format!("{who} #{n}"));
                s.send(&Up::Publish {
                    req: n as u32,
                    presence,
                })
                .await;
                assert!(matches!(s.recv().await, Some(Down::Ok { .. })));
            }
            s
        });
    }
    let mut sessions = Vec::new();
    while let Some(session) = publishers.join_next().await {
        sessions.push(session.expect("publisher"));
    }
    let others = phone.read_for(Duration::from_secs(6)).await;
    assert!(others.is_empty(), "only batches: {others:?}");
    let frames = phone.batches.len() - before;
    let bytes: usize = phone.batches[before..].iter().sum();
    eprintln!("{CHANGES} changes reached the phone as {frames} frames, {bytes} bytes");
    assert!(frames <= 6, "{frames} frames for {CHANGES} changes");
    for who in &contacts {
        let last = format!("{who} #{}", CHANGES / CONTACTS - 1);
        assert_eq!(phone.note_of(who), Some(last), "{who}");
    }
    drop(sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_during_a_pending_batch_arrives_at_once_and_carries_the_pending_presence() {
    let gw = Harness::start().await; // inactive: presence waits 180 s
    let token = gw.add_user("phone@example.com");
    let bob = gw.add_user("bob@example.com");
    let mut phone = Phone::open(&gw, "phone@example.com", &token, 1, ClientMode::INACTIVE).await;
    subscribe_all(&mut phone, &["bob@example.com".to_string()]).await;

    let mut b = RawSession::login(gw.addr(), &gw.cert_pem(), "bob@example.com", &bob).await;
    assert!(matches!(b.recv().await, Some(Down::Welcome(_))));
    let presence = open_presence("on my way");
    b.send(&Up::Publish { req: 1, presence }).await;
    assert!(matches!(b.recv().await, Some(Down::Ok { .. })));
    // Held back: the phone is in the background.
    assert!(phone.read_for(Duration::from_millis(500)).await.is_empty());
    assert_ne!(
        phone.note_of("bob@example.com").as_deref(),
        Some("on my way")
    );

    let msg = Message {
        id: vec![7; 16],
        to: "phone@example.com".into(),
        reply_to: None,
        content_type: None,
        body: b"call me".to_vec(),
    };
    b.send(&Up::Send { req: 2, msg }).await;
    // The message comes at once, and the pending presence right behind it.
    let first = phone.session.recv().await;
    assert!(matches!(first, Some(Down::Deliver { .. })), "{first:?}");
    let second = phone.session.recv_within(Duration::from_millis(200)).await;
    let Some(Down::Batch(batch)) = second else {
        panic!("expected the pending presence right after the message, got {second:?}");
    };
    phone.take(&batch, false).await;
    assert_eq!(
        phone.note_of("bob@example.com").as_deref(),
        Some("on my way")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_phone_gets_only_what_changed_while_it_was_away() {
    let gw = Harness::start().await;
    let token = gw.add_user("phone@example.com");
    let contacts: Vec<String> = (0..20).map(|i| format!("c{i}@example.com")).collect();
    let mut sessions = Vec::new();
    for who in &contacts {
        let t = gw.add_user(who);
        let mut s = RawSession::login(gw.addr(), &gw.cert_pem(), who, &t).await;
        assert!(matches!(s.recv().await, Some(Down::Welcome(_))));
        let presence = open_presence("here");
        s.send(&Up::Publish { req: 1, presence }).await;
        assert!(matches!(s.recv().await, Some(Down::Ok { .. })));
        sessions.push(s);
    }
    let mut phone = Phone::open(&gw, "phone@example.com", &token, 1, ClientMode::ACTIVE).await;
    subscribe_all(&mut phone, &contacts).await;
    let roster = phone.roster.clone();
    drop(phone);

    // While it is away, two contacts change.
    for i in [3, 11] {
        let presence = open_presence("changed");
        sessions[i].send(&Up::Publish { req: 2, presence }).await;
        // The contact was told that the phone subscribed (`Watched`) before its `Ok`.
        loop {
            match sessions[i].recv().await {
                Some(Down::Ok { .. }) => break,
                Some(Down::Watched { .. }) => {}
                other => panic!("expected Ok, got {other:?}"),
            }
        }
    }
    let flags = Open::INBOX | Open::SYNC;
    let session = RawSession::open_device(
        gw.addr(),
        &gw.cert_pem(),
        "phone@example.com",
        &token,
        1,
        flags,
    )
    .await;
    let mut phone = Phone {
        session,
        roster,
        batches: Vec::new(),
    };
    assert!(matches!(phone.session.recv().await, Some(Down::Opened(_))));
    phone.have(9, ClientMode::ACTIVE).await;
    assert_eq!(phone.batches.len(), 1);
    eprintln!("state vector answered in {} bytes", phone.batches[0]);
    assert!(phone.batches[0] < 80, "two deltas, not twenty documents");
    assert_eq!(phone.note_of("c3@example.com").as_deref(), Some("changed"));
    assert_eq!(phone.note_of("c11@example.com").as_deref(), Some("changed"));
    assert_eq!(phone.note_of("c4@example.com").as_deref(), Some("here"));
}
