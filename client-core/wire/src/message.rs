//! Instant messages and their receipts (RFC 2779 section 4).
//!
//! A message is identified by the pair (authenticated sender, [`MsgId`]): the sender picks
//! the id, unique among its own messages (4.1.9); the gateway delivers each pair at most
//! once (5.4.2). The content type is MIME (4.1.5, 4.1.10); absent means
//! [`DEFAULT_CONTENT_TYPE`]. The body is any bytes.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::types::{Blob, Key, Name, Text};

/// The content type of a message that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain;charset=utf-8";

/// A sender-chosen message id: 1 to [`crate::limits::MSG_ID_MAX`] opaque bytes, unique
/// among the messages of one sender principal. `tern-client` uses 16 random bytes.
pub type MsgId = Key;

/// A message as its sender hands it to the gateway. The sender is not in it: the
/// gateway stamps the authenticated identity of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender-chosen id.
    pub id: MsgId,
    /// The instant inbox address of the recipient.
    pub to: Name,
    /// Where replies should go, when not to the sender (RFC 2779 4.1.3).
    pub reply_to: Option<Name>,
    /// MIME content type with parameters; `None` means [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<Text>,
    /// The payload.
    pub body: Blob,
}

/// A message as the gateway delivers it to the recipient's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The id the sender chose.
    pub id: MsgId,
    /// The authenticated sender.
    pub from: Name,
    /// The inbox address it was sent to (one of the recipient's addresses).
    pub to: Name,
    /// Where replies should go; `None` means to `from`.
    pub reply_to: Option<Name>,
    /// MIME content type; `None` means [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<Text>,
    /// The payload.
    pub body: Blob,
    /// When the gateway accepted it, Unix milliseconds.
    pub sent: u64,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// The recipient's client acknowledged it.
    Delivered,
    /// The gateway stored it durably; it is delivered when the recipient connects, and a
    /// [`LateReceipt`] then tells the sender.
    Stored,
    /// It was not accepted, for the reason given.
    Failed(ErrorCode),
    /// It left tern for another network (XMPP federation): accepted durably and handed on,
    /// final delivery unknown. A [`LateReceipt`] with `Delivered` follows if the
    /// recipient's client sends a receipt, one with `Failed` if the far side bounces it.
    Relayed,
}

/// A receipt that arrives after the send request was answered: the recipient took a
/// message that had been [`ReceiptStatus::Stored`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateReceipt {
    /// The id of the sender's message.
    pub id: MsgId,
    /// The address the message was sent to.
    pub to: Name,
    /// Its status now.
    pub status: ReceiptStatus,
}

/// An entry of a principal's inbox log: delivered in order, acknowledged cumulatively.
#[cfg_attr(not(feature = "std"), allow(clippy::large_enum_variant))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxItem {
    /// An instant message.
    Message(Incoming),
    /// A receipt for a message this principal sent.
    Receipt(LateReceipt),
}
