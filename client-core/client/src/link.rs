//! One connection to the gateway: a QUIC connection, its single bidirectional session
//! stream, and the byte pump between that stream and a [`Session`].
//!
//! Owns: name resolution and the UDP socket of one connection (and moving it to a new
//! socket when the network changes), the QUIC handshake with 0-RTT when a session ticket
//! allows it, the length-delimited framing (`tern_wire::codec`) in both directions, write
//! buffering, feeding the session its frames, deadlines, handshake confirmation and link
//! failures, and closing the QUIC connection when the session ends. It may not decide
//! anything about the protocol (the session does), reconnect, or talk to the application
//! (the driver does).
//!
//! ## Opening a session
//! [`Link::establish`] connects and writes `Open` and `Have` followed by every message
//! of the outbox, in order. With a session ticket from an earlier connection of the same
//! client (the rustls configuration is shared), that first flight is 0-RTT data: it
//! leaves before the handshake completes. The session holds back every frame that is not
//! replay-safe until the handshake is confirmed. If the gateway rejects the early data,
//! quinn discards the stream; the link opens a new one and writes the same flight again.
//! Without a ticket, it is an ordinary handshake. [`Link::zero_rtt`] tells which.
//!
//! Every await in [`Link::io`] is cancel-safe, so the driver can `select!` on it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use quinn::{
    Connecting, Connection, ConnectionError, Endpoint, ReadError, RecvStream, SendStream, VarInt,
    WriteError, ZeroRttAccepted,
};
use tern_wire::codec::{self, CodecError, FrameBuf};
use tern_wire::frame::ReqId;
use tern_wire::limits::FRAME_MAX;
use tern_wire::{ClientMode, Decision, Down, ErrorCode, Message, Rules, Version};

use crate::client::ZeroRtt;
use crate::config::Target;
use crate::error::{ClientError, handshake_error, link_lost};
use crate::roster::SharedRoster;
use crate::session::{CloseReason, Session, SessionConfig, down_name, up_name};

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Above this many unwritten bytes the link takes no more messages (the gateway or the
/// network is not keeping up; messages wait in the outbox instead).
const OUTBOX_HIGH: usize = 256 * 1024;
/// How long a closing link waits for its CONNECTION_CLOSE to leave.
const CLOSE_DRAIN: Duration = Duration::from_millis(500);

/// A request as the driver hands it to the link.
#[derive(Debug)]
pub(crate) enum Op {
    Publish(tern_wire::Presence),
    Fetch(String),
    FetchIf(String, Version),
    Subscribe(String),
    Unsubscribe(String),
    Send(Message),
    Watchers,
    GetRules,
    SetRules(Rules),
    Decide(String, Decision),
    Cancel(String),
    Subscriptions(bool),
    PublishFor(String, tern_wire::Presence),
    Read(String, u64),
}

/// What a new session opens with, besides the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Opening {
    /// The device id.
    pub(crate) device: Vec<u8>,
    /// The highest inbox item the application has taken (and, with a state directory,
    /// recorded).
    pub(crate) consumed: Option<u64>,
    /// The gateway's frame limit as last announced.
    pub(crate) frame_max: u32,
    /// Messages waiting for their receipt, sent right after `Open` and `Have`, in this
    /// order.
    pub(crate) outbox: Vec<Message>,
    /// The client's mode, stated in `Have`.
    pub(crate) mode: ClientMode,
    /// The presence cache, stated in `Have` and kept up to date by the session.
    pub(crate) roster: SharedRoster,
}

/// One connection and its session.
pub(crate) struct Link {
    endpoint: Endpoint,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    frames: FrameBuf,
    read_buf: Vec<u8>,
    /// Encoded frames not yet accepted by the stream.
    outbox: Vec<u8>,
    /// The stream still has data to read.
    reading: bool,
    /// The stream still accepts writes.
    writing: bool,
    /// `finish()` was called after `Bye`.
    finished: bool,
    /// The QUIC connection was closed by us.
    conn_closed: bool,
    /// The gateway is closing or gone (it sent `Close`, or the connection is lost): it
    /// needs no CONNECTION_CLOSE from us.
    peer_done: bool,
    /// Whether the first flight went as 0-RTT data, and its fate.
    zero_rtt: ZeroRtt,
    /// The outbox messages sent after `Open`: request id and message id, in order. Taken
    /// by the driver.
    resent: Vec<(ReqId, Vec<u8>)>,
    pub(crate) session: Session,
}

impl Link {
    /// Connects, opens the session stream, writes `Open` and the outbox (as 0-RTT data
    /// when a ticket allows) and waits for `Opened`. Frames that follow `Opened` in the
    /// same read stay queued in the session.
    pub(crate) async fn establish(target: &Target, opening: &Opening) -> Result<Self, ClientError> {
        let addr = resolve(&target.gateway).await?;
        let endpoint = Endpoint::client(unspecified(addr))
            .map_err(|e| ClientError::Connect(format!("cannot open a UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(target.quic.clone(), addr, &target.server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        tracing::debug!(%addr, server_name = %target.server_name, "connecting");
        let wait = target.request_timeout;
        let handshake = async {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    Self::early(endpoint, conn, accepted, target, opening).await
                }
                Err(connecting) => Self::full(endpoint, connecting, target, opening).await,
            }
        };
        let mut link = tokio::time::timeout(wait, handshake)
            .await
            .map_err(|_| ClientError::Connect(format!("no answer from {addr} within {wait:?}")))?
            .map_err(|e| handshake_error(e, addr))?;
        loop {
            if link.session.admitted().is_some() {
                return Ok(link);
            }
            if let Some(reason) = link.session.close_reason() {
                let error = ClientError::from(reason.clone());
                link.shutdown().await;
                return Err(error);
            }
            link.io().await;
        }
    }

    /// An ordinary handshake, then the first flight.
    async fn full(
        endpoint: Endpoint,
        connecting: Connecting,
        target: &Target,
        opening: &Opening,
    ) -> Result<Self, ConnectionError> {
        let conn = connecting.await?;
        let (send, recv) = conn.open_bi().await?;
        let mut link = Self::new(endpoint, conn, send, recv, target, opening, false);
        link.flush();
        Ok(link)
    }

    /// The first flight as 0-RTT data while the handshake completes; written again on a
    /// new stream if the gateway rejects it.
    async fn early(
        endpoint: Endpoint,
        conn: Connection,
        accepted: ZeroRttAccepted,
        target: &Target,
        opening: &Opening,
    ) -> Result<Self, ConnectionError> {
        let (send, recv) = conn.open_bi().await?;
        let mut link = Self::new(endpoint, conn, send, recv, target, opening, true);
        link.flush();
        let mut accepted = std::pin::pin!(accepted);
        let accepted = loop {
            if link.outbox.is_empty() {
                break accepted.await;
            }
            tokio::select! {
                verdict = &mut accepted => break verdict,
                wrote = link.send.write(&link.outbox) => match wrote {
                    Ok(n) => {
                        link.outbox.drain(..n.min(link.outbox.len()));
                    }
                    // Rejected or lost: the verdict tells which.
                    Err(_) => break accepted.await,
                },
            }
        };
        link.zero_rtt = ZeroRtt::Sent { accepted };
        if accepted {
            tracing::debug!("0-RTT data accepted");
            link.session.handle_confirmed(Instant::now());
            link.flush();
            return Ok(link);
        }
        if let Some(e) = link.conn.close_reason() {
            return Err(e);
        }
        tracing::debug!("0-RTT data rejected; sending the first flight again");
        let (send, recv) = link.conn.open_bi().await?;
        let Self { endpoint, conn, .. } = link;
        let mut link = Self::new(endpoint, conn, send, recv, target, opening, false);
        link.zero_rtt = ZeroRtt::Sent { accepted: false };
        link.flush();
        Ok(link)
    }

    /// A link over a fresh stream whose session has `Open` and the outbox queued.
    fn new(
        endpoint: Endpoint,
        conn: Connection,
        send: SendStream,
        recv: RecvStream,
        target: &Target,
        opening: &Opening,
        early_data: bool,
    ) -> Self {
        let now = Instant::now();
        let mut session = Session::new(
            now,
            SessionConfig {
                user: target.user.clone(),
                token: target.token.clone(),
                device: opening.device.clone(),
                request_timeout: target.request_timeout,
                consumed: opening.consumed,
                inbox: target.inbox,
                early_data,
                frame_max: opening.frame_max,
                mode: opening.mode,
                roster: opening.roster.clone(),
            },
        );
        if !target.keepalive.is_zero() {
            session.keep_alive(now, target.keepalive);
        }
        let mut resent = Vec::with_capacity(opening.outbox.len());
        for message in &opening.outbox {
            let id = message.id.clone();
            match session.send(now, message.clone()) {
                Ok(req) => resent.push((req, id)),
                // Checked when it was queued; the driver settles what cannot go.
                Err(e) => tracing::debug!(error = %e, "queued message not sent"),
            }
        }
        Self {
            endpoint,
            conn,
            send,
            recv,
            frames: FrameBuf::new(FRAME_MAX),
            read_buf: vec![0; READ_CHUNK],
            outbox: Vec::new(),
            reading: true,
            writing: true,
            finished: false,
            conn_closed: false,
            peer_done: false,
            zero_rtt: ZeroRtt::NotTried,
            resent,
            session,
        }
    }

    /// Whether the first flight went as 0-RTT data, and whether it was accepted.
    pub(crate) fn zero_rtt(&self) -> ZeroRtt {
        self.zero_rtt
    }

    /// The outbox messages sent after `Open` (request id, message id), once.
    pub(crate) fn take_resent(&mut self) -> Vec<(ReqId, Vec<u8>)> {
        std::mem::take(&mut self.resent)
    }

    /// Moves the connection to a new UDP socket (the network changed: Wi-Fi to
    /// cellular). QUIC validates the new path and carries on; no new handshake.
    pub(crate) fn rebind(&self) -> std::io::Result<()> {
        let old = self.endpoint.local_addr()?;
        let socket = std::net::UdpSocket::bind(unspecified(old))?;
        let new = socket.local_addr()?;
        self.endpoint.rebind(socket)?;
        tracing::info!(%old, %new, "moved to a new UDP socket");
        Ok(())
    }

    /// The normalised user the gateway announced.
    pub(crate) fn user(&self) -> Option<String> {
        self.session.admitted().map(|a| a.user().to_string())
    }

    /// Whether the link takes another message now: the session is open and the write
    /// buffer is not backed up.
    pub(crate) fn can_take_request(&self) -> bool {
        self.session.is_open() && self.outbox.len() < OUTBOX_HIGH
    }

    /// Hands a request to the session.
    pub(crate) fn request(&mut self, op: Op) -> Result<ReqId, ClientError> {
        let now = Instant::now();
        let s = &mut self.session;
        let req = match op {
            Op::Publish(presence) => s.publish(now, presence),
            Op::Fetch(target) => s.fetch(now, target),
            Op::FetchIf(target, version) => s.fetch_if(now, target, version),
            Op::Subscribe(target) => s.subscribe(now, target),
            Op::Unsubscribe(target) => s.unsubscribe(now, target),
            Op::Send(msg) => s.send(now, msg),
            Op::Watchers => s.watchers(now),
            Op::GetRules => s.get_rules(now),
            Op::SetRules(rules) => s.set_rules(now, rules),
            Op::Decide(watcher, decision) => s.decide(now, watcher, decision),
            Op::Cancel(watcher) => s.cancel(now, watcher),
            Op::Subscriptions(incoming) => s.subscriptions(now, incoming),
            Op::PublishFor(presentity, presence) => s.publish_for(now, presentity, presence),
            Op::Read(inbox, after) => s.read(now, inbox, after),
        }?;
        self.flush();
        Ok(req)
    }

    /// The client's mode changed: tells the gateway.
    pub(crate) fn set_mode(&mut self, mode: ClientMode) {
        self.session.set_mode(mode);
        self.flush();
    }

    /// Waits for one unit of progress (bytes read, bytes written or a deadline) and feeds
    /// it to the session. Cancel-safe.
    pub(crate) async fn io(&mut self) {
        let deadline = self.session.poll_timeout();
        let write = self.writing && !self.outbox.is_empty();
        tokio::select! {
            read = self.recv.read(&mut self.read_buf), if self.reading => self.on_read(read),
            wrote = self.send.write(&self.outbox), if write => self.on_write(wrote),
            () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
        }
        self.flush();
    }

    /// Encodes what the session has to send, finishes the stream after `Bye`, and closes
    /// the connection once the session has ended.
    pub(crate) fn flush(&mut self) {
        while let Some(frame) = self.session.poll_transmit() {
            tracing::trace!(frame = up_name(&frame), req = frame.req(), "send");
            self.outbox.extend_from_slice(&codec::encode(&frame));
        }
        if self.session.said_bye() && self.outbox.is_empty() && !self.finished {
            self.finished = true;
            // Already finished or reset: the goodbye is over either way.
            let _ = self.send.finish();
        }
        if let Some(reason) = self.session.close_reason()
            && !self.conn_closed
        {
            self.conn_closed = true;
            let code = reason.code();
            let text = code.name().unwrap_or("closed");
            self.conn.close(VarInt::from(code.0), text.as_bytes());
        }
    }

    /// Ends the link politely: closes the connection if the session has not, and gives the
    /// CONNECTION_CLOSE a moment to leave.
    pub(crate) async fn shutdown(mut self) {
        if !self.conn_closed {
            self.conn_closed = true;
            let code = ErrorCode::GOODBYE;
            self.conn.close(VarInt::from(code.0), b"goodbye");
        }
        if !self.peer_done {
            // Bounded: on a dead link the draining period could last seconds.
            let _ = tokio::time::timeout(CLOSE_DRAIN, self.endpoint.wait_idle()).await;
        }
    }

    fn on_read(&mut self, read: Result<Option<usize>, ReadError>) {
        let now = Instant::now();
        let n = match read {
            Ok(Some(n)) => n,
            Ok(None) => {
                self.reading = false;
                let why = "the gateway ended the session stream".to_string();
                return self.session.handle_closed(CloseReason::Link(why));
            }
            Err(e) => {
                self.reading = false;
                self.peer_done |= matches!(e, ReadError::ConnectionLost(_));
                return self.session.handle_closed(read_failure(e));
            }
        };
        let Some(bytes) = self.read_buf.get(..n) else {
            return;
        };
        self.frames.extend(bytes);
        // One batch: every complete frame of this read, then one flush (one `Ack`).
        while self.session.close_reason().is_none() {
            match self.frames.next_frame::<Down>() {
                Ok(Some(frame)) => {
                    tracing::trace!(frame = down_name(&frame), req = frame.req(), "received");
                    self.peer_done |= matches!(frame, Down::Close { .. });
                    self.session.handle_frame(now, frame);
                }
                Ok(None) => break,
                Err(e) => {
                    self.reading = false;
                    return self.session.handle_closed(undecodable(e));
                }
            }
        }
    }

    fn on_write(&mut self, wrote: Result<usize, WriteError>) {
        match wrote {
            Ok(n) => {
                self.outbox.drain(..n.min(self.outbox.len()));
            }
            Err(e) => {
                self.writing = false;
                self.peer_done |= matches!(e, WriteError::ConnectionLost(_));
                self.outbox.clear();
                self.session.handle_closed(write_failure(e));
            }
        }
    }
}

/// Resolves `host:port`, preferring the first address the resolver gives.
async fn resolve(gateway: &str) -> Result<SocketAddr, ClientError> {
    let mut addrs = tokio::net::lookup_host(gateway)
        .await
        .map_err(|e| ClientError::Connect(format!("cannot resolve {gateway}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{gateway} has no address")))
}

/// The wildcard address of `addr`'s family, any port.
fn unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// Resolves at `deadline`, or never.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn read_failure(e: ReadError) -> CloseReason {
    match e {
        ReadError::ConnectionLost(e) => link_lost(&e),
        ReadError::Reset(code) => CloseReason::Link(format!(
            "the gateway reset the session stream (code {code})"
        )),
        other => CloseReason::Link(other.to_string()),
    }
}

fn write_failure(e: WriteError) -> CloseReason {
    match e {
        WriteError::ConnectionLost(e) => link_lost(&e),
        WriteError::Stopped(code) => {
            CloseReason::Link(format!("the gateway stopped reading (code {code})"))
        }
        other => CloseReason::Link(other.to_string()),
    }
}

fn undecodable(e: CodecError) -> CloseReason {
    let code = match e {
        CodecError::Oversize { .. } => ErrorCode::TOO_LARGE,
        CodecError::Malformed | CodecError::BufferTooSmall => ErrorCode::MALFORMED,
    };
    CloseReason::Protocol {
        code,
        text: format!("from the gateway: {e}"),
    }
}
