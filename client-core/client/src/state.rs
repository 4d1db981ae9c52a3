//! The state directory (`ClientConfig::state_dir`): what a device keeps between
//! processes so that a restarted application resumes its session instead of starting a
//! new one.
//!
//! Owns the directory's layout and file formats, atomic writes, the lock that keeps a
//! second client out, and quinn's address-validation tokens ([`StateTokens`]). It may not
//! decide when to write (the driver and the client do) or talk to the network. Writes are
//! synchronous and small (one file of a few hundred bytes, or one message); each is
//! durable when the call returns.
//!
//! ## Layout, format 1
//! ```text
//! <dir>/lock                 held (flock) while a client uses the directory
//! <dir>/state.json           {"format":1,"user":"alice@example.com","device":"<hex>",
//!                             "inbox_seen":17,"presence":{..}|null,
//!                             "tokens":[{"server":"example.com","token":"<hex>"}]}
//! <dir>/outbox/<id hex>.json {"format":1,"seq":3,"id":"<hex>","to":"bob@example.com",
//!                             "reply_to":null,"content_type":null,"body":"<hex>"}
//! <dir>/presence.json        {"format":1,"entries":[{"slot":3,"version":17,"doc":
//!                             {"presentity":"bob@example.com","updated":1700000000000,
//!                              "presence":{"tuples":[..],"card":[..]}}}]}
//! ```
//! * `device`: 16 random bytes chosen when the directory is first used; sent in every
//!   `Open` so that the gateway resumes the device's session.
//! * `user`: the normalised principal the directory belongs to; a client of another
//!   principal is refused (`InvalidArgument`).
//! * `inbox_seen`: the highest inbox sequence number the application has taken (0: none).
//! * `presence`: the last presence the gateway accepted from this device, republished
//!   when a session starts afresh (not after a resumption); cleared by a goodbye.
//! * `tokens`: QUIC address-validation tokens from NEW_TOKEN frames (single use).
//! * `outbox/`: one file per message accepted by `send` and not answered yet; `seq` is
//!   the order of acceptance, in which they are sent again.
//! * `presence.json`: the presence cache ([`crate::roster`]), in slot order: each
//!   subscription's slot, the version of its presentity's document and the document. The
//!   next session's `Have` lists the slots and versions, so the gateway sends only what
//!   changed since. It is a cache: any consistent snapshot is valid, however old, so it
//!   is written after changes at most every few seconds and when a link ends (see the
//!   driver), not on every batch. A missing, unreadable or newer file is an empty cache
//!   (logged), never an error: the gateway then sends every document whole.
//!
//! Every file is replaced atomically: written to `<name>.tmp`, flushed to disk
//! (`fsync`), renamed over the old one, and the directory synced. A crash leaves the old
//! or the new version, never a mix; stray `.tmp` files are removed on the next start. A
//! file that does not parse, or is of a newer format, stops the client with
//! `ClientError::Storage` naming the file: the directory is never silently reset.
//!
//! ## The guarantee
//! With a state directory, for every inbox item (message or late receipt):
//! * **At least once.** An item is shown by `next_event` until the application releases
//!   it, in this process or a later one; it is released by the next call of `next_event`
//!   (or `acknowledge()`), never by being shown.
//! * **At most once after release.** Releasing an item writes `inbox_seen` to this
//!   directory *before* it returns, and only then may an `Ack` covering the item leave
//!   (the driver acknowledges nothing the directory does not hold). So the directory is
//!   never behind what the gateway was told: a released item is never shown again by
//!   any client using this directory, whatever the gateway redelivers (a new session's
//!   `Open` carries `inbox_seen`, which counts as an acknowledgement, and items at or
//!   below it are dropped on arrival).
//! * The window between showing and releasing is the application's: an item shown, then
//!   lost to a crash before the next `next_event`, is shown again. An application that
//!   needs exactly-once makes its handling of an item durable before it asks for the
//!   next one. If the directory cannot be written, the item is not released (the error
//!   is logged) and comes again in a later session.
//!
//! For messages sent: a message is in `outbox/` before `send` hands it to the network,
//! and leaves it only when the gateway answered it; so every accepted message reaches the
//! gateway at least once, and the gateway, which accepts each (sender, id) once, delivers
//! it once.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_wire::limits::MSG_ID_MAX;
use tern_wire::{Message, Presence};

use crate::error::ClientError;
use crate::roster::CachedPresence;

/// The file holding the device's identity and small state.
pub(crate) const STATE_FILE: &str = "state.json";
/// The file holding the presence cache.
pub(crate) const PRESENCE_FILE: &str = "presence.json";
/// The directory holding one file per waiting message.
pub(crate) const OUTBOX_DIR: &str = "outbox";
/// The lock file.
pub(crate) const LOCK_FILE: &str = "lock";
/// The format this build writes and reads.
pub(crate) const FORMAT: u32 = 1;
/// Length of a new device id.
pub(crate) const DEVICE_LEN: usize = 16;
/// Address-validation tokens kept for one server name, and in all.
const TOKENS_PER_SERVER: usize = 2;
const TOKENS_MAX: usize = 8;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is corrupt ({why}); move it away to start this device afresh", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "{} was written by a newer tern-client (format {found}; this one reads {FORMAT})",
        path.display()
    )]
    Newer { path: PathBuf, found: u32 },
    #[error("the state directory {} belongs to {owner}, not {user}", dir.display())]
    OtherUser {
        dir: PathBuf,
        owner: String,
        user: String,
    },
    #[error("the state directory {} is in use by another tern client", dir.display())]
    InUse { dir: PathBuf },
}

impl From<StateError> for ClientError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::OtherUser { .. } => Self::InvalidArgument(e.to_string()),
            _ => Self::Storage(e.to_string()),
        }
    }
}

/// What an earlier process left for this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) device: Vec<u8>,
    pub(crate) inbox_seen: Option<u64>,
    pub(crate) presence: Option<Presence>,
    /// Waiting messages with their order numbers, oldest first.
    pub(crate) outbox: Vec<(u64, Message)>,
    /// The presence cache, in slot order.
    pub(crate) roster: Vec<CachedPresence>,
}

/// An open, locked state directory and the current content of its `state.json`.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    record: Record,
    /// Held for the directory's lifetime; the OS releases it if the process dies.
    _lock: File,
}

/// The state directory as the driver, the client and the token store share it.
pub(crate) type SharedState = Arc<Mutex<StateDir>>;

/// Locks the shared state; a panic elsewhere cannot leave the record torn (every change
/// is one assignment after a successful write).
pub(crate) fn lock(state: &SharedState) -> MutexGuard<'_, StateDir> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    format: u32,
    user: String,
    #[serde(with = "hex_bytes")]
    device: Vec<u8>,
    inbox_seen: u64,
    presence: Option<Presence>,
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    server: String,
    #[serde(with = "hex_bytes")]
    token: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OutgoingRecord {
    format: u32,
    seq: u64,
    #[serde(with = "hex_bytes")]
    id: Vec<u8>,
    to: String,
    reply_to: Option<String>,
    content_type: Option<String>,
    #[serde(with = "hex_bytes")]
    body: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct PresenceRecord {
    entries: Vec<CachedPresence>,
}

/// [`PresenceRecord`] as it is written, without copying the entries.
#[derive(Serialize)]
struct PresenceOut<'a> {
    format: u32,
    entries: &'a [CachedPresence],
}

/// The first field of every file, read before the rest.
#[derive(Deserialize)]
struct Header {
    format: u32,
}

impl StateDir {
    /// Opens (creating it if needed) and locks the state directory of `user` (normalised),
    /// and reads what it holds. A new directory gets a new random device id at once.
    pub(crate) fn open(dir: &Path, user: &str) -> Result<(Self, Saved), StateError> {
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        let path = dir.join(STATE_FILE);
        let record = match fs::read(&path) {
            Ok(bytes) => parse_record(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let record = Record {
                    format: FORMAT,
                    user: user.to_string(),
                    device: rand::random::<[u8; DEVICE_LEN]>().to_vec(),
                    inbox_seen: 0,
                    presence: None,
                    tokens: Vec::new(),
                };
                write_atomically(&path, &to_json(&record))?;
                tracing::info!(dir = %dir.display(), "new state directory");
                record
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        if record.user != user {
            return Err(StateError::OtherUser {
                dir: dir.to_path_buf(),
                owner: record.user,
                user: user.to_string(),
            });
        }
        let outbox = load_outbox(&dir.join(OUTBOX_DIR))?;
        let saved = Saved {
            device: record.device.clone(),
            inbox_seen: (record.inbox_seen > 0).then_some(record.inbox_seen),
            presence: record.presence.clone(),
            outbox,
            roster: load_presence(&dir.join(PRESENCE_FILE)),
        };
        let state = Self {
            dir: dir.to_path_buf(),
            record,
            _lock: lock,
        };
        Ok((state, saved))
    }

    /// Records that the application took every inbox item up to `seq`.
    pub(crate) fn set_inbox_seen(&mut self, seq: u64) -> Result<(), StateError> {
        if seq <= self.record.inbox_seen {
            return Ok(());
        }
        self.save_with(|r| r.inbox_seen = seq)
    }

    /// Records the presence to republish after a fresh session (`None`: nothing).
    pub(crate) fn set_presence(&mut self, presence: Option<&Presence>) -> Result<(), StateError> {
        if self.record.presence.as_ref() == presence {
            return Ok(());
        }
        let presence = presence.cloned();
        self.save_with(|r| r.presence = presence)
    }

    /// Replaces the presence cache kept for the next process.
    pub(crate) fn set_roster(&mut self, entries: &[CachedPresence]) -> Result<(), StateError> {
        let record = PresenceOut {
            format: FORMAT,
            entries,
        };
        // Compact: the cache may hold hundreds of documents.
        let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
        bytes.push(b'\n');
        write_atomically(&self.dir.join(PRESENCE_FILE), &bytes)
    }

    /// Keeps a message accepted for sending, as number `seq` in the order.
    pub(crate) fn add_outgoing(&mut self, seq: u64, message: &Message) -> Result<(), StateError> {
        let record = OutgoingRecord {
            format: FORMAT,
            seq,
            id: message.id.clone(),
            to: message.to.clone(),
            reply_to: message.reply_to.clone(),
            content_type: message.content_type.clone(),
            body: message.body.clone(),
        };
        let dir = self.dir.join(OUTBOX_DIR);
        create_private_dir(&dir)?;
        write_atomically(&outgoing_path(&dir, &message.id), &to_json(&record))
    }

    /// Forgets an answered message.
    pub(crate) fn remove_outgoing(&mut self, id: &[u8]) -> Result<(), StateError> {
        let dir = self.dir.join(OUTBOX_DIR);
        let path = outgoing_path(&dir, id);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Takes one address-validation token for `server` (each is used once).
    fn take_token(&mut self, server: &str) -> Option<Vec<u8>> {
        let at = self.record.tokens.iter().position(|t| t.server == server)?;
        let mut tokens = self.record.tokens.clone();
        let token = tokens.remove(at).token;
        if let Err(e) = self.save_with(|r| r.tokens = tokens) {
            tracing::debug!(error = %e, "cannot forget a used address-validation token");
        }
        Some(token)
    }

    /// Keeps an address-validation token for `server`, dropping the oldest beyond the
    /// bounds.
    fn insert_token(&mut self, server: &str, token: Vec<u8>) {
        let mut tokens = self.record.tokens.clone();
        tokens.push(TokenRecord {
            server: server.to_string(),
            token,
        });
        while tokens.iter().filter(|t| t.server == server).count() > TOKENS_PER_SERVER {
            if let Some(at) = tokens.iter().position(|t| t.server == server) {
                tokens.remove(at);
            }
        }
        let excess = tokens.len().saturating_sub(TOKENS_MAX);
        tokens.drain(..excess);
        if let Err(e) = self.save_with(|r| r.tokens = tokens) {
            tracing::debug!(error = %e, "cannot keep an address-validation token");
        }
    }

    /// Writes the record as `change` leaves it; memory changes only if the write did.
    fn save_with(&mut self, change: impl FnOnce(&mut Record)) -> Result<(), StateError> {
        let mut record = self.record.clone();
        change(&mut record);
        write_atomically(&self.dir.join(STATE_FILE), &to_json(&record))?;
        self.record = record;
        Ok(())
    }
}

/// quinn's address-validation tokens (NEW_TOKEN), kept in the state directory so that a
/// restarted client can skip the gateway's address validation. It holds the directory
/// weakly: once the client is gone, tokens are neither kept nor handed out.
#[derive(Debug)]
pub(crate) struct StateTokens {
    state: Weak<Mutex<StateDir>>,
}

impl StateTokens {
    pub(crate) fn new(state: &SharedState) -> Self {
        Self {
            state: Arc::downgrade(state),
        }
    }
}

impl quinn::TokenStore for StateTokens {
    fn insert(&self, server_name: &str, token: Bytes) {
        if let Some(state) = self.state.upgrade() {
            lock(&state).insert_token(server_name, token.to_vec());
        }
    }

    fn take(&self, server_name: &str) -> Option<Bytes> {
        let state = self.state.upgrade()?;
        let token = lock(&state).take_token(server_name);
        token.map(Bytes::from)
    }
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<Record, StateError> {
    check_format(path, bytes)?;
    let record: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
    if record.device.is_empty() || record.device.len() > MSG_ID_MAX {
        let why = format!("a device id of {} bytes", record.device.len());
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            why,
        });
    }
    Ok(record)
}

fn check_format(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let header: Header = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
    match header.format {
        FORMAT => Ok(()),
        found if found > FORMAT => Err(StateError::Newer {
            path: path.to_path_buf(),
            found,
        }),
        found => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            why: format!("unknown format {found}"),
        }),
    }
}

/// The waiting messages, in their order; removes leftovers of interrupted writes.
fn load_outbox(dir: &Path) -> Result<Vec<(u64, Message)>, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            let path = dir.to_path_buf();
            return Err(StateError::Io { path, source });
        }
    };
    let mut outbox = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| StateError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => outbox.push(parse_outgoing(&path)?),
            Some("tmp") => {
                // A write that never finished: its message was never handed out.
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
    outbox.sort_by_key(|(seq, _)| *seq);
    Ok(outbox)
}

fn parse_outgoing(path: &Path) -> Result<(u64, Message), StateError> {
    let bytes = fs::read(path).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_format(path, &bytes)?;
    let r: OutgoingRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e))?;
    if r.id.is_empty() || r.id.len() > MSG_ID_MAX {
        let why = format!("a message id of {} bytes", r.id.len());
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            why,
        });
    }
    let message = Message {
        id: r.id,
        to: r.to,
        reply_to: r.reply_to,
        content_type: r.content_type,
        body: r.body,
    };
    Ok((r.seq, message))
}

/// The presence cache an earlier process kept; empty (and logged) if there is none or it
/// cannot be used: it is only a cache.
fn load_presence(path: &Path) -> Vec<CachedPresence> {
    // A write that never finished: the file itself is the old version or missing.
    let _ = fs::remove_file(path.with_extension("tmp"));
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the presence cache; starting without it");
            return Vec::new();
        }
    };
    let parsed = check_format(path, &bytes).and_then(|()| {
        serde_json::from_slice::<PresenceRecord>(&bytes).map_err(|e| corrupt(path, e))
    });
    match parsed {
        Ok(record) => record.entries,
        Err(e) => {
            tracing::warn!(error = %e, "the presence cache is unusable; starting without it");
            Vec::new()
        }
    }
}

fn corrupt(path: &Path, e: serde_json::Error) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

fn outgoing_path(dir: &Path, id: &[u8]) -> PathBuf {
    dir.join(format!("{}.json", hex::encode(id)))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // These records hold strings, numbers, lists and options only: serialising cannot
    // fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Replaces `path` with `bytes`: temporary file, fsync, rename, directory sync.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let io_error = |source| StateError::Io {
        path: tmp.clone(),
        source,
    };
    let mut file = private_file(&tmp).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Makes a rename or removal in `dir` durable where the platform allows it.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A new file readable by its owner only (it holds message bodies).
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StateError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn lock_dir(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StateError::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(dir = %dir.display(), "file locks are not supported here; use one client per state directory");
            Ok(file)
        }
        Err(TryLockError::Error(source)) => Err(StateError::Io { path, source }),
    }
}

/// Byte strings as lowercase hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;
    use crate::session::{Session, SessionConfig};
    use quinn::TokenStore;
    use std::time::{Duration, Instant};
    use tern_wire::{Basic, ClientMode, Held, PresenceDoc, Tuple, Up};

    const ALICE: &str = "alice@example.com";

    fn message(id: u8) -> Message {
        Message {
            id: vec![id; 16],
            to: "bob@example.com".into(),
            reply_to: Some("alice@example.org".into()),
            content_type: Some("application/octet-stream".into()),
            body: vec![0, 1, 2, 255],
        }
    }

    fn presence() -> Presence {
        Presence {
            tuples: vec![Tuple {
                id: "phone".into(),
                basic: Basic::Open,
                availability: None,
                contact: None,
                note: Some("on a train".into()),
                at: Some(1),
                ext: vec![],
            }],
            card: vec![],
        }
    }

    #[test]
    fn a_new_directory_gets_a_device_that_a_later_process_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.device.len(), DEVICE_LEN);
        assert_eq!(saved.inbox_seen, None);
        assert!(saved.outbox.is_empty());
        drop(state);
        let (_state, again) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(again, saved);
    }

    #[test]
    fn everything_kept_comes_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, _) = StateDir::open(dir.path(), ALICE).unwrap();
        state.set_inbox_seen(17).unwrap();
        state.set_inbox_seen(3).unwrap(); // never backwards
        state.set_presence(Some(&presence())).unwrap();
        state.add_outgoing(2, &message(9)).unwrap();
        state.add_outgoing(1, &message(8)).unwrap();
        state.add_outgoing(3, &message(7)).unwrap();
        state.remove_outgoing(&[7; 16]).unwrap();
        state.remove_outgoing(&[7; 16]).unwrap(); // already gone: fine
        drop(state);
        let (mut state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.inbox_seen, Some(17));
        assert_eq!(saved.presence, Some(presence()));
        assert_eq!(saved.outbox, vec![(1, message(8)), (2, message(9))]);
        state.set_presence(None).unwrap();
        drop(state);
        let (_state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.presence, None);
    }

    #[test]
    fn writes_are_atomic_and_leftovers_of_a_crash_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, _) = StateDir::open(dir.path(), ALICE).unwrap();
        state.set_inbox_seen(5).unwrap();
        state.add_outgoing(1, &message(1)).unwrap();
        drop(state);
        // A crash in the middle of the next writes leaves only temporary files behind.
        fs::write(dir.path().join("state.tmp"), b"{\"format\":1,\"us").unwrap();
        let outbox = dir.path().join(OUTBOX_DIR);
        fs::write(outbox.join("0202.tmp"), b"{").unwrap();
        let names: Vec<String> = fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let (_state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.inbox_seen, Some(5));
        assert_eq!(saved.outbox, vec![(1, message(1))]);
        assert!(!outbox.join("0202.tmp").exists(), "leftover removed");
        let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"format\": 1"), "{text}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDir::open(dir.path(), ALICE).unwrap());
        let err = StateDir::open(dir.path(), "bob@example.com").unwrap_err();
        assert!(matches!(err, StateError::OtherUser { .. }), "{err}");
        let err = ClientError::from(err);
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(ALICE), "{err}");
    }

    #[test]
    fn corrupt_or_newer_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDir::open(dir.path(), ALICE).unwrap());
        let path = dir.path().join(STATE_FILE);
        let good = fs::read(&path).unwrap();
        for bad in [
            &b""[..],
            b"\x00\xff garbage",
            &good[..good.len() / 2],
            b"{\"format\":1}",
            b"{\"format\":1,\"user\":\"alice@example.com\",\"device\":\"zz\",\"inbox_seen\":0,\"presence\":null,\"tokens\":[]}",
            b"{\"format\":1,\"user\":\"alice@example.com\",\"device\":\"\",\"inbox_seen\":0,\"presence\":null,\"tokens\":[]}",
        ] {
            fs::write(&path, bad).unwrap();
            let err = StateDir::open(dir.path(), ALICE).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
            let shown = ClientError::from(err).to_string();
            assert!(shown.contains("state.json"), "{shown}");
            assert!(shown.starts_with("state directory:"), "{shown}");
        }
        fs::write(&path, b"{\"format\":2,\"whatever\":true}").unwrap();
        let err = StateDir::open(dir.path(), ALICE).unwrap_err();
        assert!(matches!(err, StateError::Newer { found: 2, .. }), "{err}");

        fs::write(&path, &good).unwrap();
        let outbox = dir.path().join(OUTBOX_DIR);
        fs::create_dir_all(&outbox).unwrap();
        fs::write(outbox.join("01.json"), b"{\"format\":1,\"seq\":1}").unwrap();
        let err = StateDir::open(dir.path(), ALICE).unwrap_err();
        assert!(err.to_string().contains("01.json"), "{err}");
    }

    #[test]
    fn one_client_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = StateDir::open(dir.path(), ALICE).unwrap();
        let err = StateDir::open(dir.path(), ALICE).unwrap_err();
        assert!(matches!(err, StateError::InUse { .. }), "{err}");
        drop(first);
        assert!(StateDir::open(dir.path(), ALICE).is_ok());
    }

    #[test]
    fn tokens_are_kept_bounded_and_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = StateDir::open(dir.path(), ALICE).unwrap();
        let state: SharedState = Arc::new(Mutex::new(state));
        let tokens = StateTokens::new(&state);
        for t in 1..=3u8 {
            tokens.insert("example.com", Bytes::from(vec![t; 8]));
        }
        tokens.insert("example.org", Bytes::from(vec![9; 8]));
        assert_eq!(tokens.take("example.com"), Some(Bytes::from(vec![2; 8])));
        assert_eq!(tokens.take("example.com"), Some(Bytes::from(vec![3; 8])));
        assert_eq!(tokens.take("example.com"), None);
        drop(state);
        assert_eq!(tokens.take("example.org"), None, "gone with the client");
        let (_state, _) = StateDir::open(dir.path(), ALICE).unwrap();
        let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("example.org"), "{text}");
    }

    fn cached() -> Vec<CachedPresence> {
        vec![
            CachedPresence {
                slot: 1,
                version: 3,
                doc: PresenceDoc {
                    presentity: "bob@example.com".into(),
                    updated: 1_700_000_000_000,
                    presence: presence(),
                },
            },
            CachedPresence {
                slot: 4,
                version: 0,
                doc: PresenceDoc {
                    presentity: "carol@example.com".into(),
                    updated: 0,
                    presence: Presence::default(),
                },
            },
        ]
    }

    #[test]
    fn the_presence_cache_survives_a_restart_and_the_next_have_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert!(saved.roster.is_empty());
        state.set_roster(&cached()).unwrap();
        drop(state);
        let text = fs::read_to_string(dir.path().join(PRESENCE_FILE)).unwrap();
        assert!(
            text.starts_with(r#"{"format":1,"entries":[{"slot":1,"version":3,"doc":"#),
            "{text}"
        );

        let (_state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.roster, cached());
        let roster = Arc::new(Mutex::new(Roster::from_entries(saved.roster)));
        let mut session = Session::new(
            Instant::now(),
            SessionConfig {
                user: ALICE.into(),
                token: "t".into(),
                device: saved.device,
                request_timeout: Duration::from_secs(1),
                consumed: saved.inbox_seen,
                inbox: true,
                early_data: false,
                frame_max: 4096,
                mode: ClientMode::ACTIVE,
                roster,
            },
        );
        assert!(matches!(session.poll_transmit(), Some(Up::Open(_))));
        let Some(Up::Have(have)) = session.poll_transmit() else {
            panic!("Have follows Open");
        };
        let held = vec![
            Held {
                slot: 1,
                version: 3,
            },
            Held {
                slot: 4,
                version: 0,
            },
        ];
        assert_eq!(have.held, held);
    }

    #[test]
    fn an_unusable_presence_cache_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, _) = StateDir::open(dir.path(), ALICE).unwrap();
        state.set_roster(&cached()).unwrap();
        drop(state);
        let path = dir.path().join(PRESENCE_FILE);
        let good = fs::read(&path).unwrap();
        for bad in [
            &b""[..],
            b"\x00\xff garbage",
            &good[..good.len() / 2],
            b"{\"format\":1}",
            b"{\"format\":1,\"entries\":[{\"slot\":-1}]}",
            b"{\"format\":2,\"entries\":[]}",
        ] {
            fs::write(&path, bad).unwrap();
            let (_state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
            assert!(saved.roster.is_empty());
        }
        // A write interrupted by a crash leaves the old file, and a leftover that goes.
        fs::write(&path, &good).unwrap();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, b"{\"format\":1,\"entr").unwrap();
        let (_state, saved) = StateDir::open(dir.path(), ALICE).unwrap();
        assert_eq!(saved.roster, cached());
        assert!(!tmp.exists());
    }
}
