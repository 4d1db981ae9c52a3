//! The async API: [`Client`] and the values it hands out ([`Event`], [`ConnectionState`],
//! [`SendOutcome`]).
//!
//! Owns: argument checks and address normalisation before anything is sent, message ids,
//! the application's side of the event queue (including which inbox items the application
//! has taken, which is what gets acknowledged), and the commands to the driver task. It
//! may not touch the connection or the session (the driver task owns them).
//!
//! The public surface is shaped for uniffi export as it is: `Client` is `Send + Sync` with
//! `&self` methods, arguments and results are owned values, errors are one enum.

use std::sync::{Arc, Mutex, PoisonError};

use tern_wire::addr::Address;
use tern_wire::{Incoming, LateReceipt, Message, Presence, PresenceDoc, ReceiptStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::driver::{Answer, Command, Driver};
use crate::error::ClientError;
use crate::link::{Link, Op};

/// Requests that may wait for the driver before callers are held back.
const COMMAND_QUEUE: usize = 64;
/// Length of the message ids [`Client::send`] generates.
pub const MESSAGE_ID_LEN: usize = 16;

/// Something the gateway or the connection tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A subscribed presentity's presence changed (or is restated after a reconnect).
    Presence(PresenceDoc),
    /// An instant message (only with `ClientConfig::inbox`). It is acknowledged to the
    /// gateway when `next_event` is called again (or [`Client::acknowledge`]): handle it
    /// before asking for the next event.
    Message {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The message.
        message: Incoming,
    },
    /// A receipt for a message sent earlier and answered `Stored`. Acknowledged like a
    /// message.
    Receipt {
        /// Position in the principal's inbox log.
        seq: u64,
        /// The receipt.
        receipt: LateReceipt,
    },
    /// The connection changed state.
    Connection(ConnectionState),
}

impl Event {
    /// The inbox sequence number of a message or receipt.
    fn inbox_seq(&self) -> Option<u64> {
        match self {
            Self::Message { seq, .. } | Self::Receipt { seq, .. } => Some(*seq),
            Self::Presence(_) | Self::Connection(_) => None,
        }
    }
}

/// The state of the connection, reported when it changes after [`Client::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A new session is open after a reconnect.
    Connected,
    /// The link dropped; the client is trying again.
    Reconnecting {
        /// Why the link dropped.
        reason: String,
    },
    /// The connection is gone for good; no more events follow.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// The message id (keep it to resend with [`Client::send_message`]).
    pub id: Vec<u8>,
    /// Delivered, stored for later delivery, or failed with a reason.
    pub status: ReceiptStatus,
}

/// A connection to a tern gateway as one principal.
///
/// Created by [`Client::connect`], which spawns a background task on the current tokio
/// runtime; dropping the client (or [`Client::close`]) ends it.
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: tokio::sync::Mutex<EventQueue>,
    taken: Mutex<Taken>,
    user: String,
}

/// The application's end of the event channel.
struct EventQueue {
    rx: mpsc::UnboundedReceiver<Event>,
    /// Highest inbox sequence number handed out; items at or below it that come again
    /// (redelivered after a reconnect) are skipped.
    floor: Option<u64>,
}

/// Which inbox item the application holds, and what it has finished with.
struct Taken {
    /// The sequence number of the item last handed out, not yet acknowledged.
    held: Option<u64>,
    consumed: watch::Sender<Option<u64>>,
}

impl Client {
    /// Connects to the gateway, opens a session, and returns once the gateway welcomed it.
    ///
    /// Fails with `InvalidArgument` for a bad configuration, `Connect`, `Tls` or `Timeout`
    /// when the gateway cannot be reached, and `Rejected` when it refuses the principal
    /// (e.g. a wrong token). The first connection is not retried. Must be called within a
    /// tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let target = Arc::new(config.prepare()?);
        let span = tracing::info_span!("tern_client", user = %target.user);
        let link = Link::establish(&target, None)
            .instrument(span.clone())
            .await?;
        let user = link.user().unwrap_or_else(|| target.user.clone());
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, rx) = mpsc::unbounded_channel();
        let (consumed, consumed_rx) = watch::channel(None);
        let driver = Driver::new(target, command_rx, event_tx, consumed_rx);
        tokio::spawn(driver.run(link).instrument(span));
        Ok(Self {
            commands,
            events: tokio::sync::Mutex::new(EventQueue { rx, floor: None }),
            taken: Mutex::new(Taken {
                held: None,
                consumed,
            }),
            user,
        })
    }

    /// The principal's normalised address, as the gateway stamps it.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// Replaces the principal's presence information.
    pub async fn publish(&self, presence: Presence) -> Result<(), ClientError> {
        match self.request(Op::Publish(presence)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches a presentity's presence once.
    pub async fn fetch(&self, presentity: String) -> Result<PresenceDoc, ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Fetch(target)).await? {
            Answer::Presence(doc) => Ok(doc),
            other => Err(unexpected(&other)),
        }
    }

    /// Subscribes to a presentity and returns its current presence; changes then arrive
    /// as [`Event::Presence`]. Subscriptions are kept by the gateway across sessions.
    pub async fn subscribe(&self, presentity: String) -> Result<PresenceDoc, ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Subscribe(target)).await? {
            Answer::Presence(doc) => Ok(doc),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, presentity: String) -> Result<(), ClientError> {
        let target = normalise(&presentity)?;
        match self.request(Op::Unsubscribe(target)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends an instant message with a new random id. `content_type` `None` means
    /// `text/plain;charset=utf-8`.
    pub async fn send(
        &self,
        to: String,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<SendOutcome, ClientError> {
        let message = Message {
            id: new_message_id(),
            to,
            reply_to: None,
            content_type,
            body,
        };
        self.send_message(message).await
    }

    /// Sends a message with the caller's id. Sending again with the same id (after a
    /// `Timeout` or `Closed`) is safe: the gateway delivers each id once and answers a
    /// repeat with the first one's status.
    pub async fn send_message(&self, mut message: Message) -> Result<SendOutcome, ClientError> {
        message.to = normalise(&message.to)?;
        if let Some(reply_to) = message.reply_to.take() {
            message.reply_to = Some(normalise(&reply_to)?);
        }
        let id = message.id.clone();
        match self.request(Op::Send(message)).await? {
            Answer::Receipt(status) => Ok(SendOutcome { id, status }),
            other => Err(unexpected(&other)),
        }
    }

    /// The next event; `None` once the client is closed or disconnected for good.
    ///
    /// Calling it again acknowledges the message or receipt it returned last: the gateway
    /// then drops it and tells its sender it was delivered. An item not acknowledged (the
    /// application stopped or failed before asking for more) is delivered again in the
    /// next session, so messages are shown at least once. Meant for one consumer loop:
    /// with concurrent callers, any call acknowledges the item another caller holds.
    /// Cancel-safe.
    pub async fn next_event(&self) -> Option<Event> {
        self.release_held();
        let mut queue = self.events.lock().await;
        loop {
            let event = queue.rx.recv().await?;
            let Some(seq) = event.inbox_seq() else {
                return Some(event);
            };
            if queue.floor.is_some_and(|floor| seq <= floor) {
                continue;
            }
            queue.floor = Some(seq);
            self.lock_taken().held = Some(seq);
            return Some(event);
        }
    }

    /// Acknowledges the message or receipt returned last by [`Self::next_event`] now,
    /// instead of at the next call: for an application that handled it and stops.
    pub fn acknowledge(&self) {
        self.release_held();
    }

    /// Says goodbye: sends `Bye` (after any acknowledgement due), waits briefly for the
    /// gateway, and closes the connection. The item returned last by
    /// [`Self::next_event`] is not acknowledged unless [`Self::acknowledge`] was called:
    /// the application may have stopped because it could not handle it. Requests still
    /// waiting fail with `Closed`; [`Self::next_event`] then returns `None`. Calling it
    /// again does nothing.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = finished.await;
        }
    }

    async fn request(&self, op: Op) -> Result<Answer, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { op, reply })
            .await
            .map_err(|_| ClientError::closed("the client is closed"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(ClientError::closed("the session ended")))
    }

    /// The application is done with the item handed out last: it may be acknowledged.
    fn release_held(&self) {
        let mut taken = self.lock_taken();
        if let Some(seq) = taken.held.take() {
            taken.consumed.send_if_modified(|consumed| {
                let newer = consumed.is_none_or(|c| seq > c);
                if newer {
                    *consumed = Some(seq);
                }
                newer
            });
        }
    }

    fn lock_taken(&self) -> std::sync::MutexGuard<'_, Taken> {
        // The lock guards two plain values; a panic elsewhere cannot leave them torn.
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A new random message id of [`MESSAGE_ID_LEN`] bytes.
pub fn new_message_id() -> Vec<u8> {
    rand::random::<[u8; MESSAGE_ID_LEN]>().to_vec()
}

fn normalise(address: &str) -> Result<String, ClientError> {
    Address::parse(address)
        .map(Address::into_string)
        .map_err(|e| ClientError::InvalidArgument(format!("{address:?}: {e}")))
}

/// The session checks that each answer fits its request, so this cannot happen; it is an
/// error rather than a panic all the same.
fn unexpected(answer: &Answer) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_random_and_sized() {
        let a = new_message_id();
        assert_eq!(a.len(), MESSAGE_ID_LEN);
        assert_ne!(a, new_message_id());
    }

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(normalise("Bob@Example.COM").unwrap(), "bob@example.com");
        assert!(matches!(
            normalise("bob"),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Client>();
    }
}
