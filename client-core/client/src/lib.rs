//! # tern-client: the tern client library
//!
//! Two layers:
//! * [`session`]: the client side of a tern session as a sans-IO state machine (no tokio,
//!   no quinn, no clock). It can be driven by any runtime, and by tests in virtual time.
//! * The async API over tokio, quinn and rustls: [`Client::connect`] with a
//!   [`ClientConfig`], requests (`publish`, `fetch`, `fetch_if`, `subscribe`,
//!   `unsubscribe`, `send`, and the access requests below), [`Client::next_event`] for
//!   pushes and connection changes,
//!   reads of the presence cache ([`Client::presence`], [`Client::roster`]),
//!   [`Client::set_mode`], and [`Client::close`].
//!
//! Made for the worst links (phones on trains, satellite, NB-IoT):
//! * **Resumable device sessions.** Every session opens with `Open`, naming a device
//!   (16 random bytes). When the link is lost without a goodbye the gateway parks the
//!   session for its resume window; the next `Open` of the same device resumes it
//!   ([`SessionInfo::resumed`]): presence and subscriptions were kept, and the presence
//!   is not published again.
//! * **Reconnects** with backoff when the link drops, with the same device.
//! * **An offline queue**: `send` never fails for want of a link. Messages wait in the
//!   outbox, are sent right after `Open` on the next session in order with the same ids
//!   (the gateway delivers each id once), and a receipt that comes after `send` gave up
//!   waiting arrives as [`Event::Sent`].
//! * **0-RTT** within a process: a reconnect sends `Open`, `Have` and the outbox in its
//!   first flight, before the handshake completes (only frames whose replay is harmless:
//!   `Open`, `Have`, `Send`, `Ack`; see [`session`]). [`SessionInfo::zero_rtt`] tells
//!   whether it happened.
//! * **Connection migration**: [`Client::network_changed`] moves the connection to a new
//!   UDP socket without a new handshake.
//! * **A state directory** ([`ClientConfig::state_dir`]): the device id, what the
//!   application has taken from the inbox, unanswered messages, the last presence, the
//!   presence cache and QUIC address-validation tokens survive the process, so a
//!   restarted application resumes its session, resends what was not answered, and gets
//!   only the presence that changed.
//! * **Synchronised presence**: every session states the versions of the presence
//!   documents it holds (`Have`, in the first flight); the gateway answers with what
//!   changed since, as deltas, many presentities per batch, flushed according to the
//!   client's mode ([`ClientConfig::mode`], [`Client::set_mode`]: foreground,
//!   background, sleepy). Each batch is checked (a checksum over the states it leads to)
//!   and a client that lost track says again what it holds. The cache ([`roster`])
//!   answers [`Client::presence`] without a round trip; [`Event::Presence`] reports each
//!   change. [`Client::fetch_if`] polls one presentity for a few bytes when it did not
//!   change.
//!
//! ## Access rules, privacy and delegation
//! A principal's rules ([`Rules`], RFC 2779 2.3 and 5) say who may watch its presence and
//! what each watcher sees (allow with a view, deny, ask, polite blocking; per user,
//! domain, anonymous peers or anyone; optionally only at some times), who may send to its
//! inbox (accept, refuse, discard in silence), and who acts for it (delegates). The
//! gateway keeps and applies them whether or not the principal is connected.
//! * [`Client::rules`] and [`Client::set_rules`] read and replace them whole; the
//!   [`rules_edit`] module edits them (and parses what people type: `mon-fri`, `22:00`,
//!   `@example.com`).
//! * Someone asks to watch: [`Event::Asked`]; answer with [`Client::decide`]. End a
//!   watcher's subscription with [`Client::cancel`]; list subscriptions either way with
//!   [`Client::subscriptions`].
//! * Subscribing to a presentity that asks: [`Client::subscribe_request`] returns
//!   [`SubscribeOutcome::Pending`] ([`Client::subscribe`] fails with
//!   [`ClientError::SubscriptionPending`]); the decision comes as
//!   [`Event::SubscriptionChanged`], as does a cancellation by the presentity, which
//!   drops it from the presence cache. A request the rules deny fails with
//!   [`ClientError::Refused`].
//! * A delegate publishes for another principal ([`Client::publish_for`]) or reads its
//!   inbox ([`Client::read_inbox`]).
//! * [`ClientConfig::anonymous()`] opens an anonymous session (`anonymous@domain`, no
//!   token, no inbox, no state), where the gateway allows it.
//!
//! ## Delivery guarantee
//! Inbox items (messages, late receipts) are shown **at least once**: an item is
//! acknowledged to the gateway only after the application released it (by calling
//! [`Client::next_event`] again, or [`Client::acknowledge`]). With a state directory,
//! a released item is recorded there before the call goes on and before any `Ack`
//! covering it leaves, so it is shown **at most once**, across restarts too. An item
//! shown but not released when the process dies is shown again. Messages accepted by
//! `send` reach the gateway at least once and are delivered once. The exact rules are
//! in the `state` module's source documentation.
//!
//! This crate does not define the protocol (that is `tern-wire`, whose frame types are
//! re-exported here).
//!
//! Module map (each owns one thing): `config` (configuration, TLS and QUIC settings),
//! `link` (one QUIC connection: handshake with 0-RTT, migration, the byte pump),
//! `driver` (the background task: commands, events, outbox, reconnects, when the
//! presence cache is written), `outbox` (the waiting messages, pure), [`roster`] (the
//! presence cache and how batches change it, pure), [`rules_edit`] (editing rules and
//! parsing their textual forms, pure), `state` (the state directory and its files),
//! `backoff` (reconnect delays), `client` (the public handle), `error`
//! ([`ClientError`]).
//!
//! ```no_run
//! # async fn demo(ca_pem: Vec<u8>) -> Result<(), tern_client::ClientError> {
//! use tern_client::{Client, ClientConfig, Event};
//! let config = ClientConfig {
//!     state_dir: Some("/var/lib/myapp/tern".into()),
//!     ..ClientConfig::new(
//!         "gw.example.com:4433".into(),
//!         "alice@example.com".into(),
//!         "token".into(),
//!         ca_pem,
//!     )
//! };
//! let client = Client::connect(config).await?;
//! println!("resumed: {}", client.session_info().resumed);
//! let doc = client.subscribe("bob@example.com".into()).await?;
//! println!("bob is open: {}", doc.presence.is_open());
//! // The app goes to the background: presence changes may wait (and batch up).
//! client.set_mode(tern_client::ClientMode::INACTIVE);
//! client.send("bob@example.com".into(), b"hi".to_vec(), None).await?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Presence(doc) => println!("{} is open: {}", doc.presentity, doc.presence.is_open()),
//!         Event::Message { message, .. } => println!("message from {}", message.from),
//!         Event::Sent(outcome) => println!("{:?} is {:?}", outcome.id, outcome.status),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod config;
mod driver;
mod error;
mod link;
mod outbox;
pub mod roster;
pub mod rules_edit;
pub mod session;
mod state;
#[cfg(test)]
mod testing;

pub use client::{
    Client, ConnectionState, Event, FetchIf, InboxPage, MESSAGE_ID_LEN, SendOutcome, SessionInfo,
    SubscribeOutcome, WatcherInfo, ZeroRtt, new_message_id,
};
pub use config::{ClientConfig, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_REQUEST_TIMEOUT};
pub use error::ClientError;
pub use roster::CachedPresence;
pub use tern_wire::{
    Availability, Basic, CardField, CardKind, ClientMode, Decision, Delegate, Delivery, ErrorCode,
    Ext, Fetcher, InboxItem, InboxRule, Incoming, Item, LateReceipt, Message, Presence,
    PresenceDoc, PresenceRule, ReceiptStatus, Rules, Slot, SubInfo, SubState, Tuple, Version, View,
    When, Who,
};
