//! Error codes: one registry for failed requests, failed receipts and closed connections.
//!
//! A code is a small integer so that codes added later decode in older peers; the text
//! that accompanies it on the wire is for people and logs, never for program logic.

use serde::{Deserialize, Serialize};

/// A registered error code. Unknown codes are kept as they are and shown as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The registered short name of the code (`snake_case`), `None` if unknown.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        /// Every registered code, in order.
        pub const ALL: &[ErrorCode] = &[$(ErrorCode::$name),*];
    };
}

codes! {
    /// A frame could not be decoded, or a field broke the protocol's rules.
    MALFORMED = 1, "malformed";
    /// A frame, message body or field is larger than allowed.
    TOO_LARGE = 2, "too_large";
    /// The protocol version is not spoken by the gateway.
    UNSUPPORTED_VERSION = 3, "unsupported_version";
    /// Authentication failed: unknown user or wrong token.
    UNAUTHORIZED = 4, "unauthorized";
    /// A frame came at the wrong time (e.g. a request before `Hello`).
    PROTOCOL = 5, "protocol";
    /// The named user, presentity or inbox does not exist.
    UNKNOWN_USER = 6, "unknown_user";
    /// The presence or instant-message service is turned off for this domain (2.1.1).
    SERVICE_DISABLED = 7, "service_disabled";
    /// The principal's rules refuse the request.
    REFUSED = 8, "refused";
    /// A rate limit was hit; try again later.
    RATE_LIMITED = 9, "rate_limited";
    /// The address is in a domain this gateway cannot reach.
    UNROUTABLE = 10, "unroutable";
    /// The peer did not read fast enough and the gateway stopped waiting.
    TOO_SLOW = 11, "too_slow";
    /// The peer opened more streams than the protocol allows.
    STREAM_LIMIT = 12, "stream_limit";
    /// An identifier is not a valid `local@domain`.
    BAD_ADDRESS = 13, "bad_address";
    /// The gateway is shutting down.
    SHUTDOWN = 14, "shutdown";
    /// The gateway failed internally; nothing was changed.
    INTERNAL = 15, "internal";
    /// The session was closed by the client's goodbye.
    GOODBYE = 16, "goodbye";
    /// A newer connection of the same device took the session over.
    SUPERSEDED = 17, "superseded";
    /// The message's content type cannot be carried to the recipient's network (XMPP
    /// carries `text/plain` only).
    UNSUPPORTED_CONTENT = 18, "unsupported_content";
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "error_{}", self.0),
        }
    }
}
