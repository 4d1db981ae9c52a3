//! # tern-client: the tern client library
//!
//! Two layers:
//! * [`session`]: the client side of a tern session as a sans-IO state machine (no tokio,
//!   no quinn, no clock). It can be driven by any runtime, and by tests in virtual time.
//! * The async API over tokio, quinn and rustls: [`Client::connect`] with a
//!   [`ClientConfig`], requests (`publish`, `fetch`, `subscribe`, `unsubscribe`, `send`),
//!   [`Client::next_event`] for pushes and connection changes, and [`Client::close`]. It
//!   reconnects with backoff when the link drops.
//!
//! This crate does not define the protocol (that is `tern-wire`, whose frame types are
//! re-exported here), store anything, or queue requests while offline.
//!
//! Module map (each owns one thing): `config` (configuration, TLS and QUIC settings),
//! `link` (one QUIC connection and the byte pump), `driver` (the background task:
//! commands, events, reconnects), `backoff` (reconnect delays), `client` (the public
//! handle), `error` ([`ClientError`]).
//!
//! ```no_run
//! # async fn demo(ca_pem: Vec<u8>) -> Result<(), tern_client::ClientError> {
//! use tern_client::{Client, ClientConfig, Event};
//! let config = ClientConfig::new(
//!     "gw.example.com:4433".into(),
//!     "alice@example.com".into(),
//!     "token".into(),
//!     ca_pem,
//! );
//! let client = Client::connect(config).await?;
//! let doc = client.subscribe("bob@example.com".into()).await?;
//! println!("bob is open: {}", doc.presence.is_open());
//! client.send("bob@example.com".into(), b"hi".to_vec(), None).await?;
//! while let Some(event) = client.next_event().await {
//!     if let Event::Message { message, .. } = event {
//!         println!("message from {}", message.from);
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
pub mod session;

pub use client::{Client, ConnectionState, Event, MESSAGE_ID_LEN, SendOutcome, new_message_id};
pub use config::{ClientConfig, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_REQUEST_TIMEOUT};
pub use error::ClientError;
pub use tern_wire::{
    Availability, Basic, CardField, CardKind, ErrorCode, Ext, Incoming, LateReceipt, Message,
    Presence, PresenceDoc, ReceiptStatus, Tuple,
};
