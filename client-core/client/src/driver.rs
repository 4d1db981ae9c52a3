//! The background task behind a [`crate::Client`]: it owns the current [`Link`], serves
//! the client's commands on it, forwards session events to the application, and
//! reconnects with backoff when the link drops.
//!
//! Owns: the table of callers waiting for answers, the mapping of session events to
//! [`Event`]s, the reconnect policy, and the goodbye. It may not parse frames or decide
//! protocol questions (the session does), nor touch the application's side of the event
//! queue (the client does).
//!
//! ## Reconnecting
//! When a session ends and [`CloseReason::may_retry`] allows (and the configuration does),
//! the driver emits `Reconnecting`, then tries again after [`Backoff`] delays until a new
//! session opens (`Connected`) or the failure is final (`Disconnected`). A link that
//! stayed up for [`STABLE_LINK`] starts the backoff over. Requests waiting when the link
//! dropped fail with `Closed`; requests made while it is down fail at once with
//! `NotConnected` (see [`Driver::offline`], where an offline queue would go).
//!
//! Subscriptions are durable on the gateway, so nothing about them is replayed. Presence
//! is not: when the link drops, the gateway marks the presentity CLOSED. So the last
//! presence the gateway accepted is published again first thing on each new session.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_wire::frame::ReqId;
use tern_wire::{PresenceDoc, ReceiptStatus};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::client::{ConnectionState, Event};
use crate::config::Target;
use crate::error::ClientError;
use crate::link::{Link, Op};
use crate::session::{CloseReason, Reply, SessionEvent};

/// A link that stayed up this long resets the reconnect backoff.
pub(crate) const STABLE_LINK: Duration = Duration::from_secs(10);

/// What the client asks of the driver.
pub(crate) enum Command {
    /// A request; the answer goes to `reply`.
    Request {
        op: Op,
        reply: oneshot::Sender<Result<Answer, ClientError>>,
    },
    /// Say goodbye and stop; `done` fires when the link is closed.
    Close { done: oneshot::Sender<()> },
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Done,
    Presence(PresenceDoc),
    Receipt(ReceiptStatus),
}

/// Who waits for the answer to a request.
enum Waiter {
    /// A caller of the client.
    Caller(oneshot::Sender<Result<Answer, ClientError>>),
    /// A caller's `Publish`: on success its presence is the one to restore.
    Publish(
        oneshot::Sender<Result<Answer, ClientError>>,
        tern_wire::Presence,
    ),
    /// The driver's own re-publication after a reconnect.
    Restore,
}

pub(crate) struct Driver {
    target: Arc<Target>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    /// The highest inbox sequence number the application has taken.
    consumed: watch::Receiver<Option<u64>>,
    consumed_open: bool,
    waiting: HashMap<ReqId, Waiter>,
    /// The last presence the gateway accepted, published again after a reconnect.
    published: Option<tern_wire::Presence>,
    /// The client said goodbye, or was dropped.
    closing: bool,
    done: Option<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        target: Arc<Target>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        consumed: watch::Receiver<Option<u64>>,
    ) -> Self {
        Self {
            target,
            commands,
            events,
            consumed,
            consumed_open: true,
            waiting: HashMap::new(),
            published: None,
            closing: false,
            done: None,
        }
    }

    /// Runs until the client closes, is dropped, or the connection is lost for good.
    pub(crate) async fn run(mut self, mut link: Link) {
        let mut backoff = Backoff::default();
        loop {
            let up_since = Instant::now();
            let reason = self.serve(&mut link).await;
            // The session answered every waiting request before closing; drop any rest
            // (their callers see `Closed`).
            self.waiting.clear();
            link.shutdown().await;
            if self.closing {
                break;
            }
            if !(self.target.reconnect && reason.may_retry()) {
                tracing::warn!(%reason, "disconnected");
                let reason = reason.to_string();
                self.emit(Event::Connection(ConnectionState::Disconnected { reason }));
                break;
            }
            tracing::info!(%reason, "link lost; reconnecting");
            if up_since.elapsed() >= STABLE_LINK {
                backoff.reset();
            }
            let reason = reason.to_string();
            self.emit(Event::Connection(ConnectionState::Reconnecting { reason }));
            match self.reconnect(&mut backoff).await {
                Some(new) => {
                    link = new;
                    tracing::info!("reconnected");
                    self.restore_presence(&mut link);
                    self.emit(Event::Connection(ConnectionState::Connected));
                }
                None => break,
            }
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }

    /// Serves one link until its session closes; returns why.
    async fn serve(&mut self, link: &mut Link) -> CloseReason {
        loop {
            self.dispatch(link);
            if let Some(reason) = link.session.close_reason() {
                return reason.clone();
            }
            let take = !self.closing && link.can_take_request();
            tokio::select! {
                command = self.commands.recv(), if take => self.on_command(link, command),
                changed = self.consumed.changed(), if self.consumed_open => match changed {
                    Ok(()) => {
                        if let Some(upto) = self.latest_consumed() {
                            link.session.ack(upto);
                        }
                    }
                    Err(_) => self.consumed_open = false,
                },
                () = link.io() => {}
            }
            link.flush();
        }
    }

    fn on_command(&mut self, link: &mut Link, command: Option<Command>) {
        match command {
            None => self.leave(link, None),
            Some(Command::Close { done }) => self.leave(link, Some(done)),
            Some(Command::Request { op, reply }) => {
                let presence = match &op {
                    Op::Publish(presence) => Some(presence.clone()),
                    _ => None,
                };
                match link.request(op) {
                    Ok(req) => {
                        let waiter = match presence {
                            Some(presence) => Waiter::Publish(reply, presence),
                            None => Waiter::Caller(reply),
                        };
                        self.waiting.insert(req, waiter);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Publishes the last accepted presence again on a new session (the gateway marked
    /// it CLOSED when the old one dropped).
    fn restore_presence(&mut self, link: &mut Link) {
        let Some(presence) = self.published.clone() else {
            return;
        };
        match link.request(Op::Publish(presence)) {
            Ok(req) => {
                self.waiting.insert(req, Waiter::Restore);
            }
            Err(e) => tracing::warn!(error = %e, "cannot restore presence"),
        }
    }

    /// Starts the goodbye: what the application has handled is acknowledged first.
    fn leave(&mut self, link: &mut Link, done: Option<oneshot::Sender<()>>) {
        self.closing = true;
        self.done = done;
        if let Some(upto) = self.latest_consumed() {
            link.session.ack(upto);
        }
        link.session.close(Instant::now());
        link.flush();
    }

    /// Hands the session's events to their callers and the application.
    fn dispatch(&mut self, link: &mut Link) {
        while let Some(event) = link.session.poll_event() {
            match event {
                SessionEvent::Opened(welcome) => {
                    tracing::debug!(user = %welcome.user, frame_max = welcome.frame_max, "session open");
                }
                SessionEvent::Reply { req, reply } => {
                    if let Some(waiter) = self.waiting.remove(&req) {
                        self.answered(waiter, answer(reply));
                    }
                }
                SessionEvent::Notify(doc) => self.emit(Event::Presence(doc)),
                SessionEvent::Message { seq, message } => {
                    self.emit(Event::Message { seq, message });
                }
                SessionEvent::Receipt { seq, receipt } => {
                    self.emit(Event::Receipt { seq, receipt });
                }
                SessionEvent::Closed(reason) => tracing::debug!(%reason, "session closed"),
            }
        }
    }

    /// Attempts new sessions after backoff delays. `None` when the client closed or the
    /// failure is final (then `Disconnected` was emitted).
    async fn reconnect(&mut self, backoff: &mut Backoff) -> Option<Link> {
        loop {
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::debug!(?delay, "next connection attempt");
            self.offline(tokio::time::sleep(delay)).await?;
            let target = Arc::clone(&self.target);
            let consumed = self.latest_consumed();
            let attempt = async move { Link::establish(&target, consumed).await };
            match self.offline(attempt).await? {
                Ok(link) => return Some(link),
                Err(e) if e.is_final() => {
                    tracing::warn!(error = %e, "reconnect refused; giving up");
                    let reason = e.to_string();
                    self.emit(Event::Connection(ConnectionState::Disconnected { reason }));
                    return None;
                }
                Err(e) => tracing::info!(error = %e, "reconnect failed"),
            }
        }
    }

    /// Runs `work` while the link is down, answering commands meanwhile. `None` when the
    /// client closed or was dropped.
    ///
    /// OFFLINE QUEUE: requests made while offline are refused here with `NotConnected`.
    /// A later offline queue belongs exactly here: keep them (bounded, with their
    /// deadlines) and hand them to the next link after `Welcome`, before new ones.
    async fn offline<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                command = self.commands.recv() => match command {
                    None => {
                        self.closing = true;
                        return None;
                    }
                    Some(Command::Close { done }) => {
                        self.closing = true;
                        self.done = Some(done);
                        return None;
                    }
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::NotConnected));
                    }
                },
            }
        }
    }

    fn answered(&mut self, waiter: Waiter, answer: Result<Answer, ClientError>) {
        match waiter {
            Waiter::Caller(reply) => {
                let _ = reply.send(answer);
            }
            Waiter::Publish(reply, presence) => {
                if answer.is_ok() {
                    self.published = Some(presence);
                }
                let _ = reply.send(answer);
            }
            Waiter::Restore => match answer {
                Ok(_) => tracing::debug!("presence restored"),
                Err(e) => tracing::warn!(error = %e, "cannot restore presence"),
            },
        }
    }

    fn latest_consumed(&self) -> Option<u64> {
        *self.consumed.borrow()
    }

    fn emit(&self, event: Event) {
        // The application may have dropped its side; nothing to do then.
        let _ = self.events.send(event);
    }
}

fn answer(reply: Reply) -> Result<Answer, ClientError> {
    match reply {
        Reply::Done => Ok(Answer::Done),
        Reply::Presence(doc) => Ok(Answer::Presence(doc)),
        Reply::Receipt(status) => Ok(Answer::Receipt(status)),
        Reply::Failed { code, text } => Err(ClientError::Failed { code: code.0, text }),
        Reply::TimedOut => Err(ClientError::Timeout),
        Reply::Lost => Err(ClientError::closed(
            "the session ended before the answer came",
        )),
    }
}
