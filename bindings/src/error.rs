//! [`TernError`], the one error type of the FFI surface, and its mapping from
//! `tern_client::ClientError`.
//!
//! Owns: which core failure each foreign-language error case stands for. Kotlin sees it
//! as `TernException` (a sealed class), Swift as `TernError`, Python as `TernError` with
//! a subclass per case.

/// Why a call failed. Flat: one level of cases, each with plain fields.
///
/// The core's `ClientError` maps onto it as follows: `InvalidArgument`, `Rejected`,
/// `Refused`, `Failed`, `RateLimited` and `Timeout` one to one; `SubscriptionPending`
/// to `Pending`; `Connect`, `Tls`, `NotConnected` and `Closed` to `Disconnected`;
/// `OutboxFull` to `RateLimited` with `retry_after_ms` 0 (try again once receipts
/// came); `Storage`, `Protocol` and anything newer to `Internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TernError {
    /// The caller passed something unusable (an address, a configuration, a name, a
    /// request over the gateway's limits). Nothing was sent.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// The gateway refused the session: `code` 4 (unauthorized) for a wrong token or an
    /// unknown user, 3 for an unsupported protocol version, … (tern error codes).
    #[error("rejected ({code}): {reason}")]
    Rejected {
        /// The tern error code.
        code: u16,
        /// The gateway's explanation, for people.
        reason: String,
    },
    /// The presentity's rules refuse this request (deny, or ask for a fetch), or the
    /// request is not allowed to this principal. Nothing was changed.
    #[error("refused: {reason}")]
    Refused {
        /// The gateway's explanation, for people.
        reason: String,
    },
    /// Over a rate limit: try again after `retry_after_ms` (0: once the receipts of the
    /// messages waiting in the outbox came). Nothing was changed.
    #[error("rate limited: retry after {retry_after_ms} ms")]
    RateLimited {
        /// How long to wait, ms.
        retry_after_ms: u64,
    },
    /// The gateway refused this request: `code` 6 (unknown_user) for a principal that
    /// does not exist, … (tern error codes). Nothing was changed.
    #[error("failed ({code}): {reason}")]
    Failed {
        /// The tern error code.
        code: u16,
        /// The gateway's explanation, for people.
        reason: String,
    },
    /// No answer came in time; the request's fate is unknown. (A message stays in the
    /// outbox; its receipt comes as `Event.Sent`.)
    #[error("timed out")]
    Timeout,
    /// The gateway cannot be reached (or its certificate is not trusted), the client
    /// is reconnecting, or the session ended before the answer came.
    #[error("disconnected: {reason}")]
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The subscription waits for the presentity's principal to decide (its rules say
    /// *ask*). `TernClient.subscribe` returns `SubscribeOutcome.Pending` instead.
    #[error("the subscription waits for its principal's decision")]
    Pending,
    /// Something went wrong inside the client: its state directory cannot be used, the
    /// gateway broke the protocol.
    #[error("internal error: {reason}")]
    Internal {
        /// What.
        reason: String,
    },
}

impl TernError {
    pub(crate) fn invalid(reason: String) -> Self {
        Self::InvalidArgument { reason }
    }
}

impl From<tern_client::ClientError> for TernError {
    fn from(e: tern_client::ClientError) -> Self {
        use tern_client::ClientError as E;
        match e {
            E::InvalidArgument(reason) => Self::InvalidArgument { reason },
            E::Rejected { code, text } => Self::Rejected { code, reason: text },
            E::Failed { code, text } => Self::Failed { code, reason: text },
            E::Refused { text } => Self::Refused { reason: text },
            E::SubscriptionPending { .. } => Self::Pending,
            E::RateLimited { retry_after } => Self::RateLimited {
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
            E::OutboxFull { .. } => Self::RateLimited { retry_after_ms: 0 },
            E::Timeout => Self::Timeout,
            E::Closed { reason } => Self::Disconnected { reason },
            e @ (E::Connect(_) | E::Tls(_) | E::NotConnected) => Self::Disconnected {
                reason: e.to_string(),
            },
            e => Self::Internal {
                reason: e.to_string(),
            },
        }
    }
}
