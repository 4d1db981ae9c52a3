//! A watching device, written against the wire protocol directly so that every frame it
//! sends and receives is counted: `Open` (with or without `Open::SYNC`), `Have`, one
//! `Subscribe` per contact, then whatever the gateway pushes. A synchronised session keeps
//! a mirror of its slots as `tern-client` does (apply each delta, verify the batch's
//! CRC) and acknowledges as `tern-client` does: lazily, every second batch (the `Have`'s
//! answer at once), and as its keep-alive (an `Applied` after half a keep-alive interval
//! without writing). A plain one keeps the last `Notify` per contact and leaves keep-alives
//! to QUIC PINGs.
//!
//! It records every frame (time, direction, encoded size, whether it carries presence)
//! and the first moment it held each publish of each contact, for the report to cut
//! into windows afterwards.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::delta::{self, Check};
use tern_wire::{
    Batch, Change, ClientMode, Down, Have, Open, Presence, Slot, Up, VERSION, Version,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::schedule::stamp;

/// Who the device is and how it opens.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) user: String,
    pub(crate) token: String,
    pub(crate) device: u8,
    /// Opens with `Open::SYNC` (else: one `Notify` per change, the baseline).
    pub(crate) sync: bool,
    pub(crate) mode: ClientMode,
    /// Presentities to subscribe to, in order.
    pub(crate) targets: Vec<String>,
    /// The keep-alive interval of a synchronised device (real time), sent as frames.
    pub(crate) keepalive: Option<std::time::Duration>,
}

/// One frame sent or received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRec {
    pub(crate) at: Instant,
    pub(crate) up: bool,
    /// Encoded size with its length prefix.
    pub(crate) size: usize,
    /// A pushed presence change: a `Batch` with changes, or a `Notify`.
    pub(crate) presence: bool,
    /// Presentities the frame changes.
    pub(crate) changes: usize,
}

/// What a device recorded.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) frames: Vec<FrameRec>,
    /// (target index, publish stamp, when first held), in time order.
    pub(crate) arrivals: Vec<(usize, u64, Instant)>,
    /// The document held per target.
    pub(crate) docs: Vec<Option<Presence>>,
    /// Batches whose CRC did not match the mirror, or whose delta did not apply.
    pub(crate) check_failures: usize,
    /// `Fail` answers and unexpected frames.
    pub(crate) errors: Vec<String>,
}

/// A running device.
pub(crate) struct Phone {
    pub(crate) conn: quinn::Connection,
    record: Arc<Mutex<Record>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

/// A slot of the mirror.
struct Held {
    target: usize,
    version: Version,
    presence: Presence,
}

impl Phone {
    /// Connects to `addr`, opens, subscribes to every target, and returns once every
    /// subscription is answered (and, synchronised, the `Have` too).
    pub(crate) async fn start(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        spec: Spec,
        wait: std::time::Duration,
    ) -> Result<Self> {
        let conn = endpoint
            .connect(addr, "localhost")?
            .await
            .with_context(|| format!("{} connects", spec.user))?;
        let (send, recv) = conn.open_bi().await?;
        let record = Arc::new(Mutex::new(Record {
            docs: vec![None; spec.targets.len()],
            ..Record::default()
        }));
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready) = oneshot::channel();
        let session = Session {
            index: spec
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i))
                .collect(),
            spec,
            send,
            recv,
            buf: FrameBuf::new(tern_wire::limits::FRAME_MAX),
            record: Arc::clone(&record),
            slots: BTreeMap::new(),
            best: Vec::new(),
            answered: 0,
            synced: false,
            last_batch: 0,
            applied: 0,
            owed: 0,
            wrote: false,
            ready: Some(ready_tx),
        };
        let user = session.spec.user.clone();
        let task = tokio::spawn(session.run(stopped));
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let why = match task.await {
                    Ok(Err(e)) => format!("{e:#}"),
                    other => format!("{other:?}"),
                };
                bail!("{user} ended before its subscriptions were answered: {why}");
            }
            Err(_) => bail!("{user}: subscriptions not answered within {wait:?}"),
        }
        Ok(Self {
            conn,
            record,
            stop,
            task,
        })
    }

    /// Reads the record meanwhile.
    pub(crate) fn with<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.record.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Says goodbye and returns the record.
    pub(crate) async fn stop(self) -> Result<Record> {
        let _ = self.stop.send(true);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
        self.conn.close(0u32.into(), b"bye");
        match ended {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("the device did not stop within 10 s"),
        }
        let record =
            std::mem::take(&mut *self.record.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(record)
    }
}

struct Session {
    spec: Spec,
    index: HashMap<String, usize>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: FrameBuf,
    record: Arc<Mutex<Record>>,
    slots: BTreeMap<Slot, Held>,
    /// Newest stamp held per target.
    best: Vec<u64>,
    answered: usize,
    synced: bool,
    last_batch: u32,
    applied: u32,
    /// Batches received since the last `Applied`.
    owed: u32,
    /// Whether anything was written during the current keep-alive tick.
    wrote: bool,
    ready: Option<oneshot::Sender<()>>,
}

/// `tern_client::session::ACK_EVERY`: an `Applied` goes when this many batches are owed.
const ACK_EVERY: u32 = 2;

impl Session {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) -> Result<()> {
        self.best = vec![0; self.spec.targets.len()];
        let mut flags = Open::INBOX;
        if self.spec.sync {
            flags |= Open::SYNC;
        }
        let mut first = vec![Up::Open(Open {
            version: VERSION,
            user: self.spec.user.clone(),
            token: self.spec.token.clone(),
            device: vec![self.spec.device; 16],
            inbox_seen: 0,
            flags,
        })];
        if self.spec.sync {
            first.push(Up::Have(Have {
                req: 1,
                mode: self.spec.mode,
                held: Vec::new(),
            }));
        }
        for (i, target) in self.spec.targets.iter().enumerate() {
            first.push(Up::Subscribe {
                req: 2 + i as u32,
                target: target.clone(),
            });
        }
        self.write(&first).await?;
        let tick = self
            .spec
            .keepalive
            .filter(|_| self.spec.sync)
            .map(|k| k / 2)
            .filter(|t| !t.is_zero());
        let mut ticks = tokio::time::interval(tick.unwrap_or(std::time::Duration::from_secs(3600)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick(), if tick.is_some() => {
                    // As tern-client: a tick without a write sends one, which counts
                    // as this tick's write, so a quiet link sends one every interval.
                    if !std::mem::take(&mut self.wrote) {
                        self.applied = self.last_batch;
                        self.owed = 0;
                        self.write(&[Up::Applied { batch: self.last_batch }]).await?;
                    }
                }
                chunk = self.recv.read_chunk(64 * 1024, true) => {
                    match chunk? {
                        Some(chunk) => {
                            self.buf.extend(&chunk.bytes);
                            self.read_frames().await?;
                        }
                        None => bail!("the gateway ended the session"),
                    }
                }
                _ = stopped.changed() => break,
            }
        }
        self.write(&[Up::Bye]).await?;
        let _ = self.send.finish();
        Ok(())
    }

    async fn write(&mut self, frames: &[Up]) -> Result<()> {
        let mut bytes = Vec::new();
        let at = Instant::now();
        {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            for frame in frames {
                let encoded = codec::encode(frame);
                record.frames.push(FrameRec {
                    at,
                    up: true,
                    size: encoded.len(),
                    presence: false,
                    changes: 0,
                });
                bytes.extend_from_slice(&encoded);
            }
        }
        self.send.write_all(&bytes).await?;
        self.wrote = true;
        Ok(())
    }

    /// Handles every complete frame read so far, then acknowledges batches once.
    async fn read_frames(&mut self) -> Result<()> {
        let now = Instant::now();
        while let Some(frame) = self.buf.next_frame::<Down>()? {
            self.handle(now, frame)?;
        }
        if self.spec.sync && self.last_batch != self.applied && self.owed >= ACK_EVERY {
            self.applied = self.last_batch;
            self.owed = 0;
            self.write(&[Up::Applied {
                batch: self.last_batch,
            }])
            .await?;
        }
        let all = self.answered >= self.spec.targets.len() && (self.synced || !self.spec.sync);
        if all && let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        Ok(())
    }

    fn handle(&mut self, now: Instant, frame: Down) -> Result<()> {
        let size = codec::frame_size(&frame);
        let (presence, changes) = match &frame {
            Down::Batch(b) => (!b.changes.is_empty(), b.changes.len()),
            Down::Notify { .. } => (true, 1),
            _ => (false, 0),
        };
        self.lock().frames.push(FrameRec {
            at: now,
            up: false,
            size,
            presence,
            changes,
        });
        match frame {
            Down::Opened(_) | Down::Ok { .. } => {}
            Down::Subscribed {
                slot, version, doc, ..
            } => {
                self.answered += 1;
                let target = self.target(&doc.presentity)?;
                self.slots.insert(
                    slot,
                    Held {
                        target,
                        version,
                        presence: doc.presence.clone(),
                    },
                );
                self.hold(now, target, doc.presence);
            }
            Down::Presence { doc, .. } => {
                self.answered += 1;
                let target = self.target(&doc.presentity)?;
                self.hold(now, target, doc.presence);
            }
            Down::Notify { doc } => {
                let target = self.target(&doc.presentity)?;
                self.hold(now, target, doc.presence);
            }
            Down::Synced { batch, .. } => {
                self.synced = true;
                // The answer to the device's own `Have` is acknowledged at once.
                self.owed = ACK_EVERY;
                self.apply(now, batch)?;
            }
            Down::Batch(batch) => {
                self.owed += 1;
                self.apply(now, batch)?;
            }
            Down::Fail { req, code, text } => {
                self.answered += 1;
                self.lock()
                    .errors
                    .push(format!("request {req} failed: {code:?} {text}"));
            }
            Down::Close { code, text } => bail!("the gateway closed: {code:?} {text}"),
            other => self.lock().errors.push(format!("unexpected {other:?}")),
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .with_context(|| format!("presence of {name}, which was not subscribed to"))
    }

    /// The device now holds `presence` for `target`.
    fn hold(&mut self, now: Instant, target: usize, presence: Presence) {
        let stamp = stamp(&presence).unwrap_or(0);
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        if stamp > self.best[target] {
            self.best[target] = stamp;
            record.arrivals.push((target, stamp, now));
        }
        record.docs[target] = Some(presence);
    }

    /// Applies a batch to the mirror as `tern-client` does, checking its CRC.
    fn apply(&mut self, now: Instant, batch: Batch) -> Result<()> {
        self.last_batch = batch.seq;
        let mut check = Check::new();
        let mut changed = Vec::new();
        let mut failed = false;
        for change in batch.changes {
            match change {
                Change::Full {
                    slot,
                    version,
                    name,
                    presence,
                    ..
                } => {
                    let target = match &name {
                        Some(name) => self.target(name)?,
                        None => match self.slots.get(&slot) {
                            Some(held) => held.target,
                            None => {
                                failed = true;
                                continue;
                            }
                        },
                    };
                    let name = &self.spec.targets[target];
                    check.state(slot, name, version, &presence);
                    self.slots.insert(
                        slot,
                        Held {
                            target,
                            version,
                            presence,
                        },
                    );
                    changed.push(slot);
                }
                Change::Delta {
                    slot,
                    version,
                    back,
                    ops,
                    ..
                } => {
                    let Some(held) = self.slots.get_mut(&slot) else {
                        failed = true;
                        continue;
                    };
                    if held.version + u64::from(back) != version
                        || delta::apply(&mut held.presence, &ops).is_err()
                    {
                        failed = true;
                        continue;
                    }
                    held.version = version;
                    check.state(
                        slot,
                        &self.spec.targets[held.target],
                        version,
                        &held.presence,
                    );
                    changed.push(slot);
                }
                Change::Gone { slot } => {
                    self.slots.remove(&slot);
                    check.gone(slot);
                }
            }
        }
        if failed || check.finish() != batch.check {
            self.lock().check_failures += 1;
        }
        for slot in changed {
            if let Some(held) = self.slots.get(&slot) {
                let (target, presence) = (held.target, held.presence.clone());
                self.hold(now, target, presence);
            }
        }
        Ok(())
    }
}
