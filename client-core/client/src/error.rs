//! The one error type of the async API, [`ClientError`], and the mapping of QUIC and
//! session failures onto it.
//!
//! Owns: which failure is whose fault (caller, network, TLS, gateway's verdict, gateway
//! misbehaving) and whether reconnecting can help. It may not log, retry or hold state.
//! Its variants carry only owned, FFI-friendly fields (strings and integers) so that the
//! enum can be exported through uniffi as it is.

use std::net::SocketAddr;

use quinn::ConnectionError;
use tern_wire::ErrorCode;

use crate::session::{CloseReason, CommandError, is_transient};

/// Why an operation of [`crate::Client`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The caller passed something unusable: a bad address, configuration, message id,
    /// or a request over the gateway's size limits. Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The gateway could not be reached: name resolution, UDP socket, QUIC handshake.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// TLS failed: the gateway's certificate is not trusted for the server name, or the
    /// handshake was refused.
    #[error("tls: {0}")]
    Tls(String),
    /// The gateway refused the session (wrong token, unknown user, unsupported version).
    /// `code` is a [`tern_wire::ErrorCode`] value.
    #[error("rejected: {}: {text}", code_name(*code))]
    Rejected {
        /// The error code.
        code: u16,
        /// The gateway's explanation, for people.
        text: String,
    },
    /// The gateway refused this request; nothing was changed. `code` is a
    /// [`tern_wire::ErrorCode`] value.
    #[error("failed: {}: {text}", code_name(*code))]
    Failed {
        /// The error code.
        code: u16,
        /// The gateway's explanation, for people.
        text: String,
    },
    /// The rules refuse this request (the gateway's `refused`); nothing was changed.
    /// Returned when a presentity's rules deny a fetch or subscription (or ask, for a
    /// fetch), when a principal has not made this one its delegate (`publish_for`,
    /// `read_inbox`), and for requests an anonymous session may not make.
    #[error("refused: {text}")]
    Refused {
        /// The gateway's explanation, for people.
        text: String,
    },
    /// The subscription was not granted yet: the presentity's rules say *ask*, so the
    /// request is recorded and waits for its principal's decision. Not a failure: the
    /// decision comes as `Event::SubscriptionChanged` (`Active`, then the presence as
    /// `Event::Presence`; or `Denied`). Only [`crate::Client::subscribe`] returns this;
    /// [`crate::Client::subscribe_request`] returns `SubscribeOutcome::Pending` instead.
    #[error("the subscription to {presentity} waits for its principal's decision")]
    SubscriptionPending {
        /// The presentity, normalised.
        presentity: String,
    },
    /// The principal is over one of the gateway's rate limits; nothing was changed. The
    /// same request is accepted after `retry_after`.
    #[error("rate limited: retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long to wait before trying again.
        retry_after: std::time::Duration,
    },
    /// The link is down and the client is reconnecting; try again after
    /// `ConnectionState::Connected`. Nothing was sent. (Messages are not refused this
    /// way: they wait in the outbox.)
    #[error("not connected: reconnecting")]
    NotConnected,
    /// Too many messages wait for their receipt already (the link is down or slow); this
    /// one was not accepted. `limit` is the outbox's capacity.
    #[error("the outbox is full ({limit} messages wait for their receipt)")]
    OutboxFull {
        /// How many messages may wait.
        limit: u32,
    },
    /// The state directory cannot be used: an I/O error, a corrupt file or one of a
    /// newer format, or another client using it. Nothing was sent.
    #[error("state directory: {0}")]
    Storage(String),
    /// The session ended (link lost, gateway closed it, or `close()` was called) before
    /// the request was answered; its fate is unknown.
    #[error("closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
    /// No answer came in time; the request's fate is unknown. A message that timed out
    /// stays in the outbox and is sent again (same id) until the gateway answers; that
    /// answer comes as `Event::Sent`.
    #[error("timed out")]
    Timeout,
    /// The gateway broke the protocol, or speaks another version.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn code_name(code: u16) -> ErrorCode {
    ErrorCode(code)
}

impl ClientError {
    /// Whether reconnecting cannot help: the gateway's verdict on the principal, a
    /// protocol mismatch, or a bad configuration.
    pub(crate) fn is_final(&self) -> bool {
        match self {
            Self::Rejected { code, .. } => !is_transient(ErrorCode(*code)),
            Self::Protocol(_) | Self::InvalidArgument(_) | Self::Storage(_) => true,
            _ => false,
        }
    }

    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        Self::Closed {
            reason: reason.into(),
        }
    }
}

impl From<CommandError> for ClientError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotOpen => Self::NotConnected,
            CommandError::Closed => Self::closed("the client is closing"),
            CommandError::FrameTooLarge { .. }
            | CommandError::BodyTooLarge { .. }
            | CommandError::BadMessageId { .. } => Self::InvalidArgument(e.to_string()),
        }
    }
}

/// Why a session could not be opened.
impl From<CloseReason> for ClientError {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Rejected { code, text } | CloseReason::Gateway { code, text } => {
                Self::Rejected { code: code.0, text }
            }
            CloseReason::Link(why) => Self::Connect(why),
            CloseReason::Protocol { text, .. } => Self::Protocol(text),
            CloseReason::Timeout => Self::Timeout,
            CloseReason::Goodbye => Self::closed("closed"),
        }
    }
}

/// A failure of the QUIC handshake with the gateway at `addr`.
pub(crate) fn handshake_error(e: ConnectionError, addr: SocketAddr) -> ClientError {
    match &e {
        ConnectionError::TransportError(t) if is_crypto(t.code.into()) => {
            ClientError::Tls(t.to_string())
        }
        ConnectionError::ConnectionClosed(c) if is_crypto(c.error_code.into()) => {
            ClientError::Tls(c.to_string())
        }
        ConnectionError::TimedOut => ClientError::Connect(format!("no answer from {addr}")),
        ConnectionError::ApplicationClosed(_) => link_lost(&e).into(),
        _ => ClientError::Connect(e.to_string()),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 to 0x1ff (RFC 9001 4.8).
fn is_crypto(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

/// How a broken QUIC connection ends a session.
pub(crate) fn link_lost(e: &ConnectionError) -> CloseReason {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let text = String::from_utf8_lossy(&close.reason).into_owned();
            match u16::try_from(close.error_code.into_inner()) {
                Ok(code) => CloseReason::Gateway {
                    code: ErrorCode(code),
                    text,
                },
                Err(_) => CloseReason::Link(format!("closed by the gateway: {close}")),
            }
        }
        ConnectionError::TimedOut => CloseReason::Link("the gateway stopped answering".into()),
        ConnectionError::LocallyClosed => CloseReason::Link("closed locally".into()),
        other => CloseReason::Link(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_code_names() {
        let e = ClientError::Rejected {
            code: ErrorCode::UNAUTHORIZED.0,
            text: "wrong token".into(),
        };
        assert_eq!(e.to_string(), "rejected: unauthorized: wrong token");
        let e = ClientError::Failed {
            code: 777,
            text: "new".into(),
        };
        assert_eq!(e.to_string(), "failed: error_777: new");
    }

    #[test]
    fn only_verdicts_and_mismatches_are_final() {
        let rejected = |code: ErrorCode| ClientError::Rejected {
            code: code.0,
            text: String::new(),
        };
        assert!(rejected(ErrorCode::UNAUTHORIZED).is_final());
        assert!(!rejected(ErrorCode::SHUTDOWN).is_final());
        assert!(ClientError::Protocol(String::new()).is_final());
        assert!(!ClientError::Timeout.is_final());
        assert!(!ClientError::Connect(String::new()).is_final());
        assert!(!ClientError::Tls(String::new()).is_final());
    }

    #[test]
    fn a_close_during_the_greeting_becomes_a_rejection() {
        let reason = CloseReason::Rejected {
            code: ErrorCode::UNAUTHORIZED,
            text: "wrong token".into(),
        };
        assert_eq!(
            ClientError::from(reason),
            ClientError::Rejected {
                code: 4,
                text: "wrong token".into()
            }
        );
        assert_eq!(
            ClientError::from(CloseReason::Timeout),
            ClientError::Timeout
        );
    }

    #[test]
    fn application_close_codes_map_to_gateway_closes() {
        let close = quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(14),
            reason: b"shutting down"[..].into(),
        };
        let reason = link_lost(&ConnectionError::ApplicationClosed(close));
        assert_eq!(
            reason,
            CloseReason::Gateway {
                code: ErrorCode::SHUTDOWN,
                text: "shutting down".into()
            }
        );
        assert!(matches!(
            link_lost(&ConnectionError::TimedOut),
            CloseReason::Link(_)
        ));
    }
}
