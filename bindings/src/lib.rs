//! # tern-bindings (`tern_ffi`): the tern client for Kotlin, Swift and Python
//!
//! The FFI surface of `tern-client`, exported with [uniffi](https://mozilla.github.io/uniffi-rs)
//! proc macros (no UDL) under the namespace `tern`: Kotlin package `dev.tern`, Swift
//! module `Tern` (C module `ternFFI`), Python module `tern` (see `uniffi.toml`).
//!
//! Owns: the FFI surface only, **no logic**. Every exported call is a thin wrapper over
//! `tern_client::Client`; records and enums mirror the core's types with conversions
//! both ways where needed; errors are one flat enum, [`TernError`]. What the client
//! does (sessions, reconnects, the outbox, the presence cache, delivery guarantees) is
//! `tern-client`'s and documented there.
//!
//! Module map: `types` (records, enums, [`default_config`] and their conversions),
//! `error` ([`TernError`] and its mapping from `tern_client::ClientError`), `client`
//! ([`TernClient`], the foreign [`EventListener`] trait and the [`ListenerHandle`] of
//! the loop that feeds it).
//!
//! * [`TernClient::connect`] (an async constructor) takes a [`TernConfig`], built with
//!   [`default_config`]; the other requests are async methods, run on uniffi's tokio
//!   runtime (`async_runtime = "tokio"`), which the client's background task also uses.
//! * [`TernClient::listen`] hands every event to a foreign [`EventListener`] on a thread
//!   of its own, acknowledging messages and receipts when `on_event` returns, until its
//!   [`ListenerHandle`] is stopped or dropped, or the client is closed.
//!
//! The bindings are generated in library mode by the workspace's `uniffi-bindgen`
//! (same exact uniffi version): `scripts/bindings/build.sh`.

mod client;
mod error;
mod types;

pub use client::{EventListener, ListenerHandle, TernClient};
pub use error::TernError;
pub use types::{
    CardField, ClientMode, ConnectionState, Decision, Delegate, Delivery, Event, Fetcher,
    InboxRule, Message, Presence, PresenceDoc, PresenceRule, Receipt, ReceiptStatus, Rules,
    SubscribeOutcome, SubscriptionInfo, SubscriptionState, TernConfig, TimeWindow, Tuple, View,
    WatcherInfo, Who, default_config,
};

uniffi::setup_scaffolding!("tern");

#[cfg(test)]
mod tests;
