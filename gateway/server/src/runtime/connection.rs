//! One client connection: handshake, the session stream, a reader and a writer.
//!
//! The reader turns stream bytes into [`Up`] frames ([`FrameBuf`], at most
//! `frame_max` bytes each) and forwards them to the hub thread; bytes that are not a
//! frame are reported as such and reading stops (framing is lost). The writer takes what
//! the hub thread queued for the connection from its [`Outlet`] (waiting for a wake-up
//! when it is empty), one frame at a time, so that whatever the client is too slow to
//! read stays in the queue, where presence can still be coalesced; a close is written as
//! `Down::Close`, the stream finished, and the connection closed with the same code once
//! the peer has the frame (or after [`CLOSE_LINGER`]).
//!
//! Rules kept here, not in the core: the client must open its session stream and send a
//! complete first frame within `hello_timeout` (else `too_slow`); a session stream that
//! the client ends or resets without the hub closing the session is closed `protocol`
//! after [`STREAM_END_LINGER`]. Whatever ends the connection (close, error, idle
//! timeout of a client that vanished), the hub hears of it exactly once.
//!
//! Logs carry the connection's span (`conn` id, remote address, and the user once
//! welcomed); never tokens or message bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tern_gateway_core::ConnId;
use tern_wire::codec::{FrameBuf, encode};
use tern_wire::{CodecError, Down, ErrorCode, Up};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::hub_thread::{Event, Outlet, Peer, close_quic};
use super::outbound::{Bounds, Outbound};

/// How long the writer waits for the peer to acknowledge a `Close` frame before it
/// closes the connection anyway.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long after the client ended its stream (or sent garbage) the gateway waits for
/// the hub's own close before closing the connection itself.
pub(crate) const STREAM_END_LINGER: Duration = Duration::from_secs(4);
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The hub thread's event queue.
    pub(crate) events: flume::Sender<Event>,
    /// Largest frame body accepted.
    pub(crate) frame_max: usize,
    /// Time from handshake to the first complete frame.
    pub(crate) hello_timeout: Duration,
    /// Bounds of each connection's outbound queue (ordinary frames).
    pub(crate) outbound: Bounds,
}

/// Serves one incoming connection to its end.
pub(crate) async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>, id: ConnId) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("conn", id, %remote, user = tracing::field::Empty);
    handle(incoming, shared, id).instrument(span).await;
}

async fn handle(incoming: quinn::Incoming, shared: Arc<Shared>, id: ConnId) {
    // `into_0rtt` lets the session start on a client's 0-RTT data, before the handshake
    // is confirmed; `confirmed` completes when it is (never, for a replayed flight).
    let (connection, confirmed) = match incoming.accept() {
        Ok(connecting) => match connecting.into_0rtt() {
            Ok((connection, accepted)) => (connection, Confirmation::Pending(accepted)),
            Err(connecting) => match connecting.await {
                Ok(connection) => (connection, Confirmation::Done),
                Err(err) => {
                    tracing::debug!(%err, "handshake failed");
                    return;
                }
            },
        },
        Err(err) => {
            tracing::debug!(%err, "refused");
            return;
        }
    };
    tracing::debug!("connected");
    // The session runs in its own task so that even a panic in it ends in a disconnect
    // the hub hears of.
    let connected = Arc::new(AtomicBool::new(false));
    let session = tokio::spawn(
        session(
            connection.clone(),
            confirmed,
            Arc::clone(&shared),
            id,
            Arc::clone(&connected),
        )
        .in_current_span(),
    );
    if let Err(err) = session.await {
        tracing::error!(%err, "session task failed");
        close_quic(
            &connection,
            ErrorCode::INTERNAL,
            "the gateway failed internally",
        );
    }
    if connected.load(Ordering::Acquire) {
        // Fails only when the hub thread is gone (shutdown), which needs no notice.
        let _ = shared
            .events
            .send_async(Event::Disconnect { conn: id })
            .await;
    }
    let reason = connection.closed().await;
    tracing::debug!(%reason, "disconnected");
}

/// Whether a connection's handshake is confirmed.
enum Confirmation {
    /// Confirmed (or the connection never offered 0-RTT).
    Done,
    /// Completes when the handshake is confirmed.
    Pending(quinn::ZeroRttAccepted),
}

impl Confirmation {
    /// Whether it is confirmed by now, without waiting.
    async fn settled(&mut self) -> bool {
        match self {
            Self::Done => true,
            Self::Pending(accepted) => {
                let now = tokio::time::timeout(Duration::ZERO, accepted).await.is_ok();
                if now {
                    *self = Self::Done;
                }
                now
            }
        }
    }
}

async fn session(
    connection: quinn::Connection,
    mut confirmation: Confirmation,
    shared: Arc<Shared>,
    id: ConnId,
    connected: Arc<AtomicBool>,
) {
    let hello_deadline = Instant::now() + shared.hello_timeout;
    let (send, recv) = match tokio::time::timeout_at(hello_deadline, connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(err)) => {
            tracing::debug!(%err, "gone before opening a session stream");
            return;
        }
        Err(_) => {
            close_quic(
                &connection,
                ErrorCode::TOO_SLOW,
                "no session stream in time",
            );
            return;
        }
    };
    let out = Arc::new(Outlet::new(shared.outbound));
    let peer = Peer::new(Arc::clone(&out), connection.clone());
    let confirmed = confirmation.settled().await;
    if shared
        .events
        .send_async(Event::Connect {
            conn: id,
            peer,
            confirmed,
        })
        .await
        .is_err()
    {
        close_quic(
            &connection,
            ErrorCode::SHUTDOWN,
            "the gateway is shutting down",
        );
        return;
    }
    connected.store(true, Ordering::Release);
    if let Confirmation::Pending(accepted) = confirmation {
        let events = shared.events.clone();
        tokio::spawn(
            async move {
                // Resolves when the handshake completes; a replayed flight never does,
                // and its connection ends by the idle timeout.
                accepted.await;
                tracing::debug!("handshake confirmed");
                let _ = events.send_async(Event::Confirmed { conn: id }).await;
            }
            .in_current_span(),
        );
    }
    let reader = async {
        let end = read_frames(recv, &shared, id, hello_deadline).await;
        after_reading(end, &connection, &out).await;
    };
    let writer = write_frames(&connection, send, &out);
    tokio::select! {
        _ = connection.closed() => {}
        _ = async { tokio::join!(reader, writer) } => {}
    }
    let stats = out.stats();
    tracing::debug!(
        written = stats.taken,
        coalesced = stats.coalesced,
        peak_frames = stats.peak_frames,
        peak_bytes = stats.peak_bytes,
        "outbound totals"
    );
}

/// Why the reader stopped.
enum ReadEnd {
    /// No complete first frame before the deadline.
    HelloTimeout,
    /// The client finished its side of the stream.
    Finished,
    /// Bytes that are not a frame; the hub was told.
    BadFrame,
    /// The stream was reset or the connection lost.
    Broken,
    /// The hub thread is gone.
    HubGone,
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    shared: &Shared,
    conn: ConnId,
    hello_deadline: Instant,
) -> ReadEnd {
    let mut frames = FrameBuf::new(shared.frame_max);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut deadline = Some(hello_deadline);
    loop {
        loop {
            let event = match frames.next_frame::<Up>() {
                Ok(Some(frame)) => {
                    deadline = None;
                    Event::Frame { conn, frame }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "undecodable bytes");
                    return bad_frame(shared, conn, err).await;
                }
            };
            if shared.events.send_async(event).await.is_err() {
                return ReadEnd::HubGone;
            }
        }
        let read = recv.read(&mut chunk);
        let read = match deadline {
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(read) => read,
                Err(_) => return ReadEnd::HelloTimeout,
            },
            None => read.await,
        };
        match read {
            Ok(Some(n)) => frames.extend(chunk.get(..n).unwrap_or_default()),
            Ok(None) if frames.pending() > 0 => {
                return bad_frame(shared, conn, CodecError::Malformed).await;
            }
            Ok(None) => return ReadEnd::Finished,
            Err(err) => {
                tracing::debug!(%err, "session stream broken");
                return ReadEnd::Broken;
            }
        }
    }
}

async fn bad_frame(shared: &Shared, conn: ConnId, err: CodecError) -> ReadEnd {
    match shared
        .events
        .send_async(Event::BadFrame { conn, err })
        .await
    {
        Ok(()) => ReadEnd::BadFrame,
        Err(_) => ReadEnd::HubGone,
    }
}

/// After the reader stops: make sure the connection ends, politely if possible.
async fn after_reading(end: ReadEnd, connection: &quinn::Connection, out: &Outlet) {
    let (code, text) = match end {
        ReadEnd::HelloTimeout => (ErrorCode::TOO_SLOW, "no Hello in time"),
        ReadEnd::HubGone => {
            close_quic(
                connection,
                ErrorCode::SHUTDOWN,
                "the gateway is shutting down",
            );
            return;
        }
        ReadEnd::Finished | ReadEnd::BadFrame | ReadEnd::Broken => {
            // The hub normally closes the session first (after Bye, or on bad bytes).
            tokio::time::sleep(STREAM_END_LINGER).await;
            (ErrorCode::PROTOCOL, "the session stream ended")
        }
    };
    let close = Outbound::Close {
        code,
        text: text.to_owned(),
    };
    // Refused only when a close is queued already (the hub's, which the writer delivers
    // the same way) or the queue overflowed (the connection is cut already).
    let _ = out.push(close);
    // The writer delivers the close; if it is stuck behind a peer that does not read,
    // cut the connection.
    tokio::time::sleep(CLOSE_LINGER * 2).await;
    close_quic(connection, code, text);
}

async fn write_frames(connection: &quinn::Connection, mut send: quinn::SendStream, queue: &Outlet) {
    // Coalesced notifications already reported.
    let mut reported = 0;
    while let Some((out, stats)) = queue.next().await {
        match out {
            Outbound::Frame(frame) => {
                let user = match &frame {
                    Down::Welcome(welcome) => Some(welcome.user.as_str()),
                    Down::Opened(opened) => Some(opened.user.as_str()),
                    _ => None,
                };
                if let Some(user) = user {
                    Span::current().record("user", user);
                    tracing::info!("session opened");
                }
                if let Err(err) = send.write_all(&encode(&frame)).await {
                    tracing::debug!(%err, "write failed");
                    close_quic(
                        connection,
                        ErrorCode::PROTOCOL,
                        "the session stream was stopped",
                    );
                    return;
                }
                if stats.frames == 0 && stats.coalesced > reported {
                    // A backlog is written out: the client reads slower than the hub
                    // produces, and missed some intermediate presence states.
                    tracing::debug!(
                        coalesced = stats.coalesced,
                        written = stats.taken,
                        peak_frames = stats.peak_frames,
                        peak_bytes = stats.peak_bytes,
                        "outbound backlog drained"
                    );
                    reported = stats.coalesced;
                }
            }
            Outbound::Close { code, text } => {
                tracing::debug!(%code, reason = %text, "closing");
                let frame = Down::Close {
                    code,
                    text: text.clone(),
                };
                if send.write_all(&encode(&frame)).await.is_ok() && send.finish().is_ok() {
                    let _ = tokio::time::timeout(CLOSE_LINGER, send.stopped()).await;
                }
                close_quic(connection, code, &text);
                return;
            }
        }
    }
}
