//! # tern-gateway-core: what the gateway decides
//!
//! The gateway's protocol logic as one deterministic state machine, [`Hub`]: it is fed
//! connection events, decoded frames and the time, reads and writes durable state
//! through the [`Store`] port, and hands back [`Action`]s (frames to send, connections
//! to close) and its next deadline. It owns sessions (Hello, authentication, request
//! dispatch), the presence service (publish, fetch, subscribe, notify, out of contact),
//! the instant-message service (routing to inboxes, de-duplication, receipts) and
//! delivery windows.
//!
//! It may not touch sockets, QUIC, threads, clocks, randomness or files: `tern-gateway`
//! does that around it. Same inputs, same outputs: this is what lets tests run the whole
//! gateway in simulated time.
#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod config;
pub mod federation;
pub mod hub;
pub mod store;
pub mod validate;

pub use config::{CacheSizes, DomainConfig, FlushPolicy, HubConfig, RateLimits};
pub use hub::{Action, ConnId, Hub, Millis};
pub use store::{
    AdminRecord, DeviceRecord, MemStore, Relay, Request, SentRecord, Store, StoreError,
    StoredRules, Subscription, UserRecord, Versioned,
};
