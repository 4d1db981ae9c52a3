//! Sessions: the life of one connection (awaiting its opening frame, active, closing),
//! authentication, the device sessions that outlive a lost link (parking and
//! resumption), and the dispatch of each request to its service.
//!
//! Connection transitions:
//! `AwaitHello --Hello/Open ok--> Active --Bye/close--> Closing --disconnect--> gone`.
//! Any other frame while awaiting the opening frame, or a second one, closes the
//! connection with `protocol`; frames on a closing connection are ignored.
//!
//! Device sessions (opened with `Open`): when the link is lost without a goodbye, the
//! session is *parked* for `resume_window_ms`: the presentity stays in contact. An
//! `Open` of the same device within the window resumes it (the current state of every
//! subscription is restated, never the history); a newer
//! connection of a device that is still connected supersedes the old one. When the
//! window passes, the session ends as if the client had vanished. `Hello` sessions have
//! no device and end when their connection does.

use std::borrow::Cow;
use std::collections::VecDeque;

use tern_wire::addr::Address;
use tern_wire::codec::CodecError;
use tern_wire::frame::{Opened, ReqId, Welcome};
use tern_wire::{ClientMode, Down, ErrorCode, Have, Hello, Open, Up, VERSION};

use super::limits::Kind;
use super::sync::SyncState;
use super::{Action, ConnId, Hub, Millis, Parked};
use crate::auth::verify_token;
use crate::store::{DeviceRecord, Store, StoreError, UserRecord};
use tern_wire::limits::MSG_ID_MAX;

/// The state of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// The TLS handshake is not confirmed yet: what arrives may be a replayed 0-RTT
    /// flight. See [`Early`].
    Early(Early),
    /// Connected; the first frame must be `Hello` or `Open`.
    AwaitHello,
    /// Authenticated as a principal.
    Active(Session),
    /// An administrator's session for this domain (see `hub/admin.rs`).
    Admin(String),
    /// A close was sent; waiting for the runtime to report the disconnect.
    Closing,
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The principal's normalised address.
    pub user: String,
    /// Whether the principal has a presentity.
    pub presentity: bool,
    /// The device; empty for a `Hello` session.
    pub device: Vec<u8>,
    /// Opened with `Open`: parked, not ended, when its link is lost.
    pub resumable: bool,
    /// Whether the session takes inbox items.
    pub inbox: bool,
    /// Highest inbox sequence number this device acknowledged.
    pub(super) acked: u64,
    /// Highest inbox sequence number pushed to this session.
    pub(super) pushed: u64,
    /// Sequence numbers pushed and not yet acknowledged, oldest first.
    pub(super) in_flight: VecDeque<u64>,
    /// Presence synchronisation, for a session opened with `Open::SYNC`.
    pub(super) sync: Option<SyncState>,
}

/// A connection whose handshake is not confirmed: its frames may be 0-RTT data that an
/// attacker recorded and replays. Until confirmation the only effect allowed is storing
/// messages, which is idempotent (each (sender, id) is accepted once). The opening frame
/// is authenticated and answered at once with what only reading takes (`Opened`, the
/// current presence of the subscriptions, a window of inbox items, and the receipts of
/// the early messages), sent as 0.5-RTT data that a replayer cannot decrypt; but it does
/// not take the device session over, move any position, or run any other request: those
/// wait. At confirmation the session is taken over for real, presence that changed in
/// between is restated, and the waiting frames are handled in order. A replayed flight
/// is never confirmed: it stores nothing new and changes no state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Early {
    /// The authenticated opening frame, once it came.
    pub(super) opening: Option<Opening>,
    /// Frames waiting for confirmation.
    pub(super) waiting: Vec<Up>,
    /// Frames for the connection produced before it was answered.
    pub(super) held: Vec<Down>,
    /// Set once the read-only answer went out as 0.5-RTT data.
    pub(super) answered: Option<EarlyAnswer>,
}

/// What an unconfirmed connection was already sent in 0.5-RTT data: `Opened`, the current
/// presence of its subscriptions and a window of inbox items. None of it changed state,
/// and a replayer cannot read it (it is encrypted under keys only the real client holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyAnswer {
    /// When, for restating what changed before confirmation.
    pub(super) at: Millis,
    /// Highest inbox sequence number sent.
    pub(super) pushed: u64,
    /// Inbox sequence numbers sent, oldest first.
    pub(super) in_flight: VecDeque<u64>,
    /// For a synchronised session whose `Have` came early: what the client holds once
    /// it has read the answer.
    pub(super) sync: Option<SyncState>,
}

/// Most frames an unconfirmed connection may have waiting.
const EARLY_FRAMES_MAX: usize = 64;

/// What an opening frame asks for, whichever frame it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Opening {
    version: u16,
    user: String,
    token: String,
    device: Vec<u8>,
    inbox_seen: u64,
    inbox: bool,
    resumable: bool,
    sync: bool,
}

impl From<Hello> for Opening {
    fn from(h: Hello) -> Self {
        Self {
            version: h.version,
            user: h.user,
            token: h.token,
            device: Vec::new(),
            inbox_seen: 0,
            inbox: true,
            resumable: false,
            sync: false,
        }
    }
}

impl Opening {
    /// An `Open` frame, once its device id is checked.
    fn from_open(o: Open) -> Result<Self, (ErrorCode, &'static str)> {
        if o.device.is_empty() || o.device.len() > MSG_ID_MAX {
            return Err((ErrorCode::MALFORMED, "a device id has 1 to 32 bytes"));
        }
        let inbox = o.takes_inbox();
        let sync = o.syncs();
        Ok(Self {
            sync,
            version: o.version,
            user: o.user,
            token: o.token,
            device: o.device,
            inbox_seen: o.inbox_seen,
            inbox,
            resumable: true,
        })
    }
}

const BAD_LOGIN: &str = "unknown user or wrong token";

/// The request id and rate-limit kind of a request that a rate limit counts.
fn limited_kind(frame: &Up) -> Option<(ReqId, Kind)> {
    match frame {
        Up::Send { req, .. } => Some((*req, Kind::Message)),
        Up::Subscribe { req, .. } => Some((*req, Kind::Subscription)),
        Up::Fetch { req, .. } | Up::FetchIf { req, .. } => Some((*req, Kind::Fetch)),
        _ => None,
    }
}

impl Hub {
    /// A decoded frame from a connection.
    pub fn handle_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.now = now;
        let req = frame.req();
        let result = self.dispatch(now, conn, frame, store);
        if result.is_err() {
            self.staged.clear();
            match req {
                Some(req) => self.fail(conn, req, ErrorCode::INTERNAL, "storage failed"),
                None => {
                    // The close itself may need storage (the session departs); if that
                    // fails too, the disconnect will retry the departure.
                    let _ = self.close(now, conn, ErrorCode::INTERNAL, "storage failed", store);
                }
            }
        }
        self.publish_staged();
        result
    }

    /// Bytes from a connection that are not a frame: the connection is closed.
    pub fn handle_bad_frame(&mut self, now: Millis, conn: ConnId, err: CodecError) {
        self.now = now;
        let (code, text) = match err {
            CodecError::Oversize { .. } => (ErrorCode::TOO_LARGE, "frame over the size limit"),
            CodecError::Malformed | CodecError::BufferTooSmall => {
                (ErrorCode::MALFORMED, "frame could not be decoded")
            }
        };
        // Closing needs no storage unless the session departs; departure is deferred
        // to `handle_disconnect`, which the runtime calls once the connection is gone.
        if self.conns.contains_key(&conn) {
            self.emit(Action::Close {
                conn,
                code,
                text: text.into(),
            });
            self.mark_closing(conn);
        }
        let _ = now;
        self.publish_staged();
    }

    /// The connection is gone (goodbye, idle timeout, error, or closed by the gateway).
    pub fn handle_disconnect(
        &mut self,
        now: Millis,
        conn: ConnId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.now = now;
        self.sources.remove(&conn);
        let result = match self.conns.remove(&conn) {
            Some(ConnState::Active(session)) if session.resumable => {
                self.park(now, conn, &session);
                Ok(())
            }
            Some(ConnState::Active(session)) => self.depart(now, conn, &session, store),
            _ => {
                self.forget_departed(conn);
                Ok(())
            }
        };
        if result.is_err() {
            self.staged.clear();
        }
        self.publish_staged();
        result
    }

    fn dispatch(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let session = match self.conns.get(&conn) {
            None | Some(ConnState::Closing) => return Ok(()),
            Some(ConnState::Early(_)) => return self.early_frame(now, conn, frame, store),
            Some(ConnState::AwaitHello) => {
                return match frame {
                    Up::Hello(hello) => self.open(now, conn, hello.into(), None, store),
                    Up::Open(open) => match Opening::from_open(open) {
                        Ok(opening) => self.open(now, conn, opening, None, store),
                        Err((code, text)) => self.close(now, conn, code, text, store),
                    },
                    Up::Operate(operate) => self.operate(now, conn, operate, store),
                    _ => {
                        let text = "Hello or Open must come first";
                        self.close(now, conn, ErrorCode::PROTOCOL, text, store)
                    }
                };
            }
            Some(ConnState::Admin(domain)) => {
                let domain = domain.clone();
                return self.admin_frame(now, conn, &domain, frame, store);
            }
            Some(ConnState::Active(session)) => session,
        };
        let user = session.user.clone();
        // Anything the client sends means its radio is up: pending presence rides back
        // with the answer (a client's keep-alive is an `Applied` for this reason).
        let flushes = !matches!(frame, Up::Bye);
        self.request(now, conn, &user, frame, store)?;
        if flushes {
            self.flush(conn, true, store)?;
        }
        Ok(())
    }

    /// A frame of an active session.
    fn request(
        &mut self,
        now: Millis,
        conn: ConnId,
        user: &str,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let user = user.to_string();
        let anonymous = crate::access::is_anonymous(&user);
        if anonymous && !Self::anonymous_may(&frame) {
            if let Some(req) = frame.req() {
                let text = "anonymous peers may only watch and send";
                self.fail(conn, req, ErrorCode::REFUSED, text);
            }
            return Ok(());
        }
        if let Some((req, kind)) = limited_kind(&frame)
            && self.limited(now, conn, &user, req, kind)
        {
            return Ok(());
        }
        match frame {
            Up::Hello(_) | Up::Open(_) => {
                let text = "the session is already open";
                self.close(now, conn, ErrorCode::PROTOCOL, text, store)
            }
            Up::Publish { req, presence } => self.publish(now, conn, &user, req, presence, store),
            Up::Fetch { req, target } => self.fetch(conn, &user, req, &target, store),
            Up::Subscribe { req, target } => self.subscribe(conn, &user, req, &target, store),
            Up::Unsubscribe { req, target } => self.unsubscribe(conn, &user, req, &target, store),
            Up::Send { req, msg } => self.send_message(now, conn, &user, req, msg, store),
            Up::Ack { upto } => self.ack(now, conn, upto, store),
            Up::Bye => self.close(now, conn, ErrorCode::GOODBYE, "goodbye", store),
            Up::FetchIf {
                req,
                target,
                version,
            } => self.fetch_if(conn, &user, req, &target, version, store),
            Up::Have(have) => self.have(conn, have, store),
            Up::Mode { mode } => {
                self.set_mode(conn, mode);
                Ok(())
            }
            Up::Applied { batch } => self.applied(conn, batch, store),
            Up::Watchers { req } => {
                self.watchers(now, conn, &user, req);
                Ok(())
            }
            Up::GetRules { req } => {
                self.get_rules(conn, &user, req);
                Ok(())
            }
            Up::SetRules { req, rules } => self.set_rules(conn, &user, req, rules, store),
            Up::Decide {
                req,
                watcher,
                decision,
            } => self.decide(conn, &user, req, &watcher, decision, store),
            Up::Cancel { req, watcher } => self.cancel(conn, &user, req, &watcher, store),
            Up::Subscriptions { req, incoming } => {
                self.list_subscriptions(conn, &user, req, incoming, store)
            }
            Up::PublishFor {
                req,
                presentity,
                presence,
            } => self.publish_for(now, conn, &user, req, &presentity, presence, store),
            Up::Read { req, inbox, after } => self.read_for(conn, &user, req, &inbox, after, store),
            Up::Operate(_) => {
                let text = "the session is already open";
                self.close(now, conn, ErrorCode::PROTOCOL, text, store)
            }
            Up::Admin { req, .. } => {
                let text = "administrator requests need an administrator session";
                self.fail(conn, req, ErrorCode::PROTOCOL, text);
                Ok(())
            }
        }
    }

    /// Whether an anonymous peer may make this request: watching and sending only.
    fn anonymous_may(frame: &Up) -> bool {
        matches!(
            frame,
            Up::Fetch { .. }
                | Up::FetchIf { .. }
                | Up::Subscribe { .. }
                | Up::Unsubscribe { .. }
                | Up::Subscriptions {
                    incoming: false,
                    ..
                }
                | Up::Send { .. }
                | Up::Ack { .. }
                | Up::Bye
                | Up::Have(_)
                | Up::Mode { .. }
                | Up::Applied { .. }
        )
    }

    /// Whether a request of `kind` puts `user` over a rate limit; if so it is answered
    /// `Limited` and must go no further. Anonymous peers have no identity to count by:
    /// their source address stands for it. Every session's requests also count against
    /// its source address's budget, where the domain sets one.
    fn limited(&mut self, now: Millis, conn: ConnId, user: &str, req: ReqId, kind: Kind) -> bool {
        let domain = user.rsplit_once('@').map_or("", |(_, d)| d);
        let source = self.sources.get(&conn);
        let key = match source {
            Some(source) if crate::access::is_anonymous(user) => {
                Cow::Owned(format!("anonymous+{source}@{domain}"))
            }
            _ => Cow::Borrowed(user),
        };
        let checked = self
            .limiter
            .check(now, &key, kind)
            .and_then(|()| match source {
                Some(source) => self.limiter.check_address(now, domain, source, kind),
                None => Ok(()),
            });
        let Err(wait) = checked else {
            return false;
        };
        let retry_after = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
        tracing::debug!(conn, %user, ?kind, retry_after, "rate limited");
        self.send(conn, Down::Limited { req, retry_after });
        true
    }

    /// A connection that may carry 0-RTT data: its frames count only once confirmed.
    pub fn handle_early_connect(&mut self, now: Millis, conn: ConnId) {
        self.now = now;
        self.conns.insert(conn, ConnState::Early(Early::default()));
    }

    /// The handshake of a connection is confirmed: it is not a replay.
    pub fn handle_confirmed(
        &mut self,
        now: Millis,
        conn: ConnId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.now = now;
        let result = self.confirm(now, conn, store);
        if result.is_err() {
            self.staged.clear();
            let _ = self.close(now, conn, ErrorCode::INTERNAL, "storage failed", store);
        }
        self.publish_staged();
        result
    }

    fn confirm(
        &mut self,
        now: Millis,
        conn: ConnId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(ConnState::Early(early)) = self.conns.get(&conn).cloned() else {
            return Ok(());
        };
        self.conns.insert(conn, ConnState::AwaitHello);
        if let Some(opening) = early.opening {
            self.open(now, conn, opening, early.answered, store)?;
        }
        for frame in early.held {
            self.send(conn, frame);
        }
        for frame in early.waiting {
            self.dispatch(now, conn, frame, store)?;
        }
        Ok(())
    }

    /// A frame before confirmation (see [`Early`]).
    fn early_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(ConnState::Early(early)) = self.conns.get(&conn) else {
            return Ok(());
        };
        let opened = early.opening.as_ref().map(|o| o.user.clone());
        let waiting = early.waiting.len();
        match (frame, opened) {
            (Up::Hello(hello), None) => self.early_opening(now, conn, hello.into(), store),
            (Up::Open(open), None) => match Opening::from_open(open) {
                Ok(opening) => self.early_opening(now, conn, opening, store),
                Err((code, text)) => self.close(now, conn, code, text, store),
            },
            (Up::Operate(_), None) => {
                let text = "administrator sessions cannot use 0-RTT";
                self.close(now, conn, ErrorCode::PROTOCOL, text, store)
            }
            // An anonymous peer's messages wait for confirmation: it has no name yet.
            (Up::Send { req, msg }, Some(user)) if !crate::access::is_anonymous(&user) => {
                if self.limited(now, conn, &user, req, Kind::Message) {
                    return Ok(());
                }
                self.send_message(now, conn, &user, req, msg, store)
            }
            (Up::Have(have), Some(user)) => self.early_have(conn, &user, have, store),
            (_, None) => {
                let text = "Hello or Open must come first";
                self.close(now, conn, ErrorCode::PROTOCOL, text, store)
            }
            (_, Some(_)) if waiting >= EARLY_FRAMES_MAX => {
                let text = "too many frames before the handshake completed";
                self.close(now, conn, ErrorCode::TOO_LARGE, text, store)
            }
            (frame, Some(_)) => {
                if let Some(ConnState::Early(early)) = self.conns.get_mut(&conn) {
                    early.waiting.push(frame);
                }
                Ok(())
            }
        }
    }

    /// Authenticates an opening frame that came before confirmation; its effects wait.
    fn early_opening(
        &mut self,
        now: Millis,
        conn: ConnId,
        mut opening: Opening,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        match self.authenticate(conn, &opening, store)? {
            Ok(record) => {
                // The normalised address, as `open` will use it (an anonymous peer
                // authenticates again as `anonymous@domain`).
                if !crate::access::is_anonymous(&record.address) {
                    opening.user = record.address;
                }
                let answer = self.answer_early(now, conn, &opening, store)?;
                if let Some(ConnState::Early(early)) = self.conns.get_mut(&conn) {
                    early.opening = Some(opening);
                    early.answered = Some(answer);
                }
                Ok(())
            }
            Err((code, text)) => self.close(now, conn, code, text, store),
        }
    }

    /// A `Have` before confirmation: answered at once (it only reads), and what the
    /// client then holds is kept for the session.
    fn early_have(
        &mut self,
        conn: ConnId,
        user: &str,
        have: Have,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let syncs = matches!(
            self.conns.get(&conn),
            Some(ConnState::Early(Early { opening: Some(o), answered: Some(_), .. })) if o.sync
        );
        if !syncs {
            let text = "Have needs a session opened with the SYNC flag";
            self.fail(conn, have.req, ErrorCode::PROTOCOL, text);
            return Ok(());
        }
        let mut sync = SyncState::new(have.mode);
        self.answer_have(conn, user, &mut sync, have, store)?;
        if let Some(ConnState::Early(Early {
            answered: Some(answer),
            ..
        })) = self.conns.get_mut(&conn)
        {
            answer.sync = Some(sync);
        }
        Ok(())
    }

    /// Opens (or resumes, or takes over) a session. `answered` is what the connection
    /// was already sent before its handshake was confirmed.
    fn open(
        &mut self,
        now: Millis,
        conn: ConnId,
        opening: Opening,
        answered: Option<EarlyAnswer>,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let record = match self.authenticate(conn, &opening, store)? {
            Ok(record) => record,
            Err((code, text)) => return self.close(now, conn, code, text, store),
        };
        let user = record.address.clone();
        // An anonymous peer's session is never parked and takes no inbox.
        let anonymous = crate::access::is_anonymous(&user);
        let resumable = opening.resumable && !anonymous;
        let takes_inbox = opening.inbox && !anonymous;
        tracing::debug!(conn, %user, resumable, "session opening");
        if self.sessions_of(&user) == 0 && !self.parked.contains_key(&user) {
            self.resync_principal(&user, store)?;
        }
        let key = (user.clone(), opening.device.clone());
        let mut resumed = false;
        if resumable {
            if let Some(old) = self.live.get(&key).copied() {
                // The same device again while its old connection looks alive: the old
                // link is dead (the client knows first).
                self.supersede(old);
                resumed = true;
            } else if self.unpark(&user, &opening.device).is_some() {
                resumed = true;
            }
        }
        let acked = if takes_inbox {
            self.register_device(now, &user, &opening.device, opening.inbox_seen, store)?
        } else {
            0
        };
        let early_sync = answered.as_ref().and_then(|a| a.sync.clone());
        let sync = opening
            .sync
            .then(|| early_sync.unwrap_or_else(|| SyncState::new(ClientMode::ACTIVE)));
        let (pushed, in_flight) = match &answered {
            Some(a) => (
                a.pushed.max(acked),
                a.in_flight
                    .iter()
                    .copied()
                    .filter(|seq| *seq > acked)
                    .collect(),
            ),
            None => (acked, VecDeque::new()),
        };
        self.conns.insert(
            conn,
            ConnState::Active(Session {
                user: user.clone(),
                presentity: record.presentity,
                device: opening.device.clone(),
                resumable,
                inbox: takes_inbox,
                acked,
                pushed,
                in_flight,
                sync,
            }),
        );
        if resumable {
            self.live.insert(key, conn);
        }
        self.online.entry(user.clone()).or_default().push(conn);
        match answered {
            None => {
                self.send(conn, self.opened_frame(now, &user, &opening, resumed));
                // Presence is state: the current document of every subscription, once,
                // never the states in between. Even on resumption everything is restated,
                // because notifications written just before a link died may never have
                // arrived. A synchronised session waits for its `Have` instead.
                if !opening.sync {
                    self.send_subscribed_presence(conn, &user, store)?;
                }
            }
            // Already answered in 0.5-RTT data: only what changed since then.
            Some(_) if opening.sync => self.restate_changed(conn, &user, store)?,
            Some(answer) => self.send_subscribed_presence_since(conn, &user, answer.at, store)?,
        }
        self.deliver_more(conn, store)
    }

    /// The read-only answer to an opening that came before confirmation (see [`Early`]):
    /// sent at once, it changes nothing.
    fn answer_early(
        &mut self,
        now: Millis,
        conn: ConnId,
        opening: &Opening,
        store: &mut dyn Store,
    ) -> Result<EarlyAnswer, StoreError> {
        let user = opening.user.clone();
        let device = &opening.device;
        let resumed = opening.resumable
            && (self.live.contains_key(&(user.clone(), device.clone()))
                || self
                    .parked
                    .get(&user)
                    .is_some_and(|d| d.contains_key(device)));
        if self.sessions_of(&user) == 0 && !self.parked.contains_key(&user) {
            self.resync_principal(&user, store)?;
        }
        let opened = self.opened_frame(now, &user, opening, resumed);
        self.emit(Action::Send {
            conn,
            frame: opened,
        });
        // A synchronised session's presence answers its `Have`.
        let targets: Vec<String> = if opening.sync {
            Vec::new()
        } else {
            self.rosters
                .of(&user)
                .map(|r| r.iter().map(|(_, t)| t.to_string()).collect())
                .unwrap_or_default()
        };
        for target in targets {
            let current = self.current_doc(&target, store)?;
            let doc = self.seen(&user, current).doc;
            self.emit(Action::Send {
                conn,
                frame: Down::Notify { doc },
            });
        }
        let mut answer = EarlyAnswer {
            at: now,
            pushed: 0,
            in_flight: VecDeque::new(),
            sync: None,
        };
        if opening.inbox {
            let stored = store.device(&user, device)?.map_or(0, |r| r.acked);
            let from = stored.max(opening.inbox_seen.min(store.inbox_last(&user)?));
            let window = usize::try_from(self.config.inbox_window).unwrap_or(usize::MAX);
            answer.pushed = from;
            for (seq, item) in store.inbox_after(&user, from, window)? {
                answer.pushed = seq;
                answer.in_flight.push_back(seq);
                self.emit(Action::Send {
                    conn,
                    frame: Down::Deliver { seq, item },
                });
            }
        }
        Ok(answer)
    }

    /// Checks the version, the address and the token of an opening frame.
    ///
    /// An anonymous peer (`anonymous@<domain>`, empty token, in a domain whose operator
    /// allows them) gets a name of its own inside the gateway, `anonymous+<conn>@domain`,
    /// that nobody else sees.
    fn authenticate(
        &self,
        conn: ConnId,
        opening: &Opening,
        store: &dyn Store,
    ) -> Result<Result<UserRecord, (ErrorCode, &'static str)>, StoreError> {
        if opening.version != VERSION {
            let text = "this gateway speaks tern version 1";
            return Ok(Err((ErrorCode::UNSUPPORTED_VERSION, text)));
        }
        let Ok(address) = Address::parse(&opening.user) else {
            return Ok(Err((ErrorCode::BAD_ADDRESS, "user is not local@domain")));
        };
        if address.local() == crate::access::ANONYMOUS && opening.token.is_empty() {
            let allowed = self
                .config
                .domain(address.domain())
                .is_some_and(|d| d.anonymous);
            if !allowed {
                let text = "anonymous sessions are off in this domain";
                return Ok(Err((ErrorCode::UNAUTHORIZED, text)));
            }
            return Ok(Ok(UserRecord {
                address: format!("anonymous+{conn}@{}", address.domain()),
                token_hash: [0; 32],
                presentity: false,
                inbox: false,
                aliases: Vec::new(),
                created: 0,
            }));
        }
        let record = match self.config.domain(address.domain()) {
            Some(_) => store.user(address.as_str())?,
            None => None,
        };
        Ok(record
            .filter(|r| verify_token(&opening.token, &r.token_hash))
            .ok_or((ErrorCode::UNAUTHORIZED, BAD_LOGIN)))
    }

    /// The device's acknowledged position, updated with what it says it has processed
    /// (an acknowledgement lost with the link counts once it is said here).
    fn register_device(
        &mut self,
        now: Millis,
        user: &str,
        device: &[u8],
        inbox_seen: u64,
        store: &mut dyn Store,
    ) -> Result<u64, StoreError> {
        let stored = store.device(user, device)?.map_or(0, |r| r.acked);
        let seen = inbox_seen.min(store.inbox_last(user)?);
        if seen > stored {
            self.record_ack(now, user, device, seen, store)?;
        } else {
            let record = DeviceRecord {
                acked: stored,
                seen: now,
            };
            store.put_device(user, device, record)?;
        }
        Ok(stored.max(seen))
    }

    fn opened_frame(&self, now: Millis, user: &str, opening: &Opening, resumed: bool) -> Down {
        if !opening.resumable {
            return Down::Welcome(Welcome {
                version: VERSION,
                user: user.into(),
                frame_max: self.config.frame_max,
                body_max: self.config.body_max,
                time: now,
            });
        }
        let ms = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Down::Opened(Opened {
            version: VERSION,
            user: user.into(),
            frame_max: self.config.frame_max,
            body_max: self.config.body_max,
            time: now,
            resumed,
            resume_window: ms(self.config.resume_window_ms),
            keepalive: ms(self.config.keepalive_hint_ms),
        })
    }

    /// A newer connection of the same device takes the session over.
    fn supersede(&mut self, old: ConnId) {
        self.emit(Action::Close {
            conn: old,
            code: ErrorCode::SUPERSEDED,
            text: "a newer connection of this device took over".into(),
        });
        if let Some(ConnState::Active(session)) = self.mark_closing(old) {
            self.detach(old, &session);
        }
    }

    /// Removes a connection from the indexes of live sessions.
    fn detach(&mut self, conn: ConnId, session: &Session) {
        self.forget_sync(conn, session.sync.as_ref());
        let key = (session.user.clone(), session.device.clone());
        if self.live.get(&key) == Some(&conn) {
            self.live.remove(&key);
        }
        if let Some(conns) = self.online.get_mut(&session.user) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.online.remove(&session.user);
            }
        }
        self.forget_departed(conn);
    }

    /// The link of a device session was lost: keep the session for the window.
    fn park(&mut self, now: Millis, conn: ConnId, session: &Session) {
        self.detach(conn, session);
        let until = now.saturating_add(self.config.resume_window_ms);
        tracing::debug!(conn, user = %session.user, until, "session parked");
        let previous = self
            .parked
            .entry(session.user.clone())
            .or_default()
            .insert(session.device.clone(), Parked { until });
        if let Some(previous) = previous {
            self.expiries
                .remove(&(previous.until, session.user.clone(), session.device.clone()));
        }
        self.expiries
            .insert((until, session.user.clone(), session.device.clone()));
    }

    fn unpark(&mut self, user: &str, device: &[u8]) -> Option<Parked> {
        let devices = self.parked.get_mut(user)?;
        let parked = devices.remove(device)?;
        if devices.is_empty() {
            self.parked.remove(user);
        }
        self.expiries
            .remove(&(parked.until, user.to_string(), device.to_vec()));
        Some(parked)
    }

    /// Parked sessions whose window has passed end now.
    pub(super) fn expire_parked(
        &mut self,
        now: Millis,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        while let Some((at, user, device)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if self.unpark(&user, &device).is_some() {
                tracing::debug!(%user, "parked session expired");
                self.leave_if_gone(now, &user, store)?;
            }
        }
        Ok(())
    }

    /// Whether the principal is in contact: a live session or a parked one.
    pub(super) fn in_contact(&self, user: &str) -> bool {
        self.online.contains_key(user) || self.parked.contains_key(user)
    }

    /// Closes a connection with a reason; an active session departs at once.
    pub(super) fn close(
        &mut self,
        now: Millis,
        conn: ConnId,
        code: ErrorCode,
        text: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.emit(Action::Close {
            conn,
            code,
            text: text.into(),
        });
        if let Some(ConnState::Active(session)) = self.mark_closing(conn) {
            self.depart(now, conn, &session, store)?;
        }
        Ok(())
    }

    fn mark_closing(&mut self, conn: ConnId) -> Option<ConnState> {
        let state = self.conns.get_mut(&conn)?;
        Some(std::mem::replace(state, ConnState::Closing))
    }

    /// A session ends for good: its principal may go out of contact.
    fn depart(
        &mut self,
        now: Millis,
        conn: ConnId,
        session: &Session,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.detach(conn, session);
        self.leave_if_gone(now, &session.user, store)
    }

    /// If the principal has no session left, live or parked, it is out of contact.
    fn leave_if_gone(
        &mut self,
        now: Millis,
        user: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if self.in_contact(user) {
            return Ok(());
        }
        tracing::debug!(%user, "out of contact");
        if crate::access::is_anonymous(user) {
            // An anonymous peer's subscriptions and requests end with its session.
            for target in self
                .rosters
                .of(user)
                .map(|r| r.iter().map(|(_, t)| t.to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
            {
                store.remove_subscription(user, &target)?;
                self.rosters.remove(user, &target);
            }
            for request in store.requests_of(user)? {
                store.remove_request(user, &request.target)?;
            }
        }
        self.release_waiting_senders(user);
        self.mark_out_of_contact(now, user, store)
    }
}
