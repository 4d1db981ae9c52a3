//! What crosses the bridge to XMPP, as tern-side values (docs/federation.md).
//!
//! The hub decides federation the way it decides everything else: it is handed
//! [`Inbound`] stanzas the bridge has parsed and checked, and hands back [`Outbound`]
//! ones in `Action::Federate`, each first written to the durable federation outbox. This
//! module owns those two vocabularies and the pure conversions between tern's values and
//! what XMPP can carry (content types, message ids, remote presence tuples). It may not
//! touch XML, sockets or storage: the bridge in `tern-gateway` turns these values into
//! stanzas and back.
//!
//! Addresses here are tern addresses (`local@domain`, normalised); a remote XMPP
//! user's resource appears only where tern needs it (one tuple per resource).

use serde::{Deserialize, Serialize};
use tern_wire::limits::{MSG_ID_MAX, NAME_MAX, TEXT_MAX};
use tern_wire::{Availability, Basic, ErrorCode, Ext, MsgId, Presence, Tuple};

/// The subscription handshake of RFC 6121 section 3, and presence probes (4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubKind {
    /// `from` asks to see `to`'s presence.
    Subscribe,
    /// `from` lets `to` see its presence.
    Subscribed,
    /// `from` no longer wants `to`'s presence.
    Unsubscribe,
    /// `from` refuses or ends `to`'s subscription to it.
    Unsubscribed,
    /// `from` asks for `to`'s current presence (it is subscribed).
    Probe,
}

/// A stanza the hub asks the bridge to send to the XMPP network. `from` is always an
/// address in a domain this gateway serves (the bridge checks it again: a wrong `from`
/// makes the XMPP server close the whole component stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outbound {
    /// A chat message. `id` is the sender's message id: the stanza id and XEP-0359
    /// `origin-id`, so a resend is recognisable; a XEP-0184 receipt is requested.
    Message {
        /// The local sender.
        from: String,
        /// The remote recipient (bare).
        to: String,
        /// The sender's message id.
        id: MsgId,
        /// The text (`text/plain`, UTF-8).
        body: String,
    },
    /// A XEP-0184 receipt: the local recipient's client took the remote sender's message.
    Receipt {
        /// The local recipient.
        from: String,
        /// The remote sender's JID as it sent the message (resource included).
        to: String,
        /// The id of the message received.
        id: MsgId,
    },
    /// A subscription handshake step or a probe.
    Subscription {
        /// The local principal.
        from: String,
        /// The remote user (bare).
        to: String,
        /// Which step.
        kind: SubKind,
    },
    /// A local presentity's presence as one remote watcher may see it (the watcher's
    /// view already applied; a politely blocked watcher gets the empty document). No
    /// open tuple: unavailable.
    Presence {
        /// The local presentity.
        from: String,
        /// The remote watcher (bare).
        to: String,
        /// The document's presence.
        presence: Presence,
    },
    /// A remote stanza could not be accepted: the error goes back to its sender.
    Error {
        /// The local address the stanza was for.
        from: String,
        /// The remote sender (as it sent, resource included if any).
        to: String,
        /// The stanza's id, if it had one.
        id: Option<String>,
        /// Whether the stanza was a message (else a presence).
        message: bool,
        /// Why, as a tern code; the bridge picks the XMPP condition.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
}

impl Outbound {
    /// Presence is state: a later `Presence` for the same (from, to) replaces an earlier
    /// one still waiting in the outbox. Other stanzas are never coalesced.
    pub fn coalesce_key(&self) -> Option<(&str, &str)> {
        match self {
            Self::Presence { from, to, .. } => Some((from, to)),
            _ => None,
        }
    }
}

/// A stanza from the XMPP network, parsed and checked by the bridge: `to` is in a
/// domain this gateway serves, `from` is in one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A chat or normal message with a text body.
    Message {
        /// The remote sender (bare).
        from: String,
        /// The local recipient.
        to: String,
        /// The XEP-0359 `origin-id`, else the stanza id (see [`message_id`]).
        id: MsgId,
        /// The text.
        body: String,
        /// Whether the sender asked for a XEP-0184 receipt.
        receipt: bool,
        /// The sender's JID as it came, resource included: errors and the receipt go
        /// there (an error to a bare JID is dropped by XMPP servers, RFC 6121 8.5.2).
        sender: String,
    },
    /// A XEP-0184 receipt for a message a local principal sent.
    Receipt {
        /// The remote recipient that received it.
        from: String,
        /// The local sender.
        to: String,
        /// The message's id.
        id: MsgId,
    },
    /// A message a local principal sent came back as an error.
    Failed {
        /// The remote address it was sent to.
        from: String,
        /// The local sender.
        to: String,
        /// The message's id.
        id: MsgId,
        /// The XMPP condition as a tern code.
        code: ErrorCode,
        /// The condition's name and text, for logs.
        text: String,
    },
    /// A subscription handshake step or a probe.
    Subscription {
        /// The remote user (bare).
        from: String,
        /// The local principal.
        to: String,
        /// Which step.
        kind: SubKind,
    },
    /// A presence error from a remote address (it does not exist, its server is
    /// unreachable): a local principal's pending request to it cannot succeed.
    Unreachable {
        /// The remote address (bare).
        from: String,
        /// The local principal.
        to: String,
        /// The XMPP condition as a tern code.
        code: ErrorCode,
    },
    /// Presence of one resource of a remote user.
    Presence {
        /// The remote user (bare).
        from: String,
        /// The local watcher it was sent to.
        to: String,
        /// The resource's tuple (its id names the resource); `None`: the resource went
        /// unavailable.
        tuple: Option<Tuple>,
        /// The resource's tuple id when `tuple` is `None`.
        resource: String,
    },
}

/// Whether a message of this content type can be carried as an XMPP body:
/// `text/plain`, with no charset or a UTF-8 (or US-ASCII) one. `None` is tern's default,
/// `text/plain;charset=utf-8`.
pub fn carries_as_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("text/plain") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("us-ascii")
        }
        // Other parameters (format=flowed, ...) do not change the bytes.
        _ => true,
    })
}

/// Prefix of an XMPP id that stands for message-id bytes which are not a plain token.
const HEX_PREFIX: char = '~';

/// The XMPP id (stanza id and `origin-id`) of a tern message id: the id itself when it
/// is a plain token (ASCII letters, digits, `-`, `_`, `.`, `:`), else `~` and its hex.
/// [`message_id`] reverses it.
pub fn xmpp_id(id: &[u8]) -> String {
    let plain = !id.is_empty()
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if plain {
        // Checked ASCII above.
        String::from_utf8_lossy(id).into_owned()
    } else {
        format!("{HEX_PREFIX}{}", hex::encode(id))
    }
}

/// The tern message id of an XMPP id: [`xmpp_id`] reversed; an id longer than tern
/// allows is replaced by `~` and the first bytes of its SHA-256 (stable, so resends
/// still match). `None` for an empty id.
pub fn message_id(xmpp: &str) -> Option<MsgId> {
    if xmpp.is_empty() {
        return None;
    }
    if let Some(hexed) = xmpp.strip_prefix(HEX_PREFIX)
        && let Ok(bytes) = hex::decode(hexed)
        && !bytes.is_empty()
        && bytes.len() <= MSG_ID_MAX
    {
        return Some(bytes);
    }
    if xmpp.len() <= MSG_ID_MAX {
        return Some(xmpp.as_bytes().to_vec());
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(xmpp.as_bytes());
    let mut id = vec![b'#'];
    id.extend_from_slice(&digest[..MSG_ID_MAX - 1]);
    Some(id)
}

/// XMPP `show` values, as tern availabilities (RFC 6121 4.7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// No `show`: available.
    None,
    /// `chat`: available and eager to talk.
    Chat,
    /// `away`.
    Away,
    /// `xa`: extended away.
    Xa,
    /// `dnd`: do not disturb.
    Dnd,
}

impl Show {
    /// The tern availability it stands for.
    pub fn availability(self) -> Availability {
        match self {
            Self::None | Self::Chat => Availability::AVAILABLE,
            Self::Away => Availability::AWAY,
            Self::Xa => Availability::EXTENDED_AWAY,
            Self::Dnd => Availability::DND,
        }
    }

    /// The `show` for a tern availability (`None` for available and unknown values).
    pub fn of(availability: Option<Availability>) -> Self {
        match availability {
            Some(Availability::AWAY) | Some(Availability::IDLE) => Self::Away,
            Some(Availability::EXTENDED_AWAY) | Some(Availability::ASLEEP) => Self::Xa,
            Some(Availability::BUSY) | Some(Availability::DND) => Self::Dnd,
            _ => Self::None,
        }
    }
}

/// Registered extension key: a remote XMPP resource's priority (RFC 6121 4.7.2.3), as
/// decimal text (`"-128"` to `"127"`).
pub const PRIORITY_EXT: &str = "priority";

/// The tuple for one available remote XMPP resource: OPEN, the availability of its
/// `show`, its status as the note, its priority as the [`PRIORITY_EXT`] extension.
/// Identifiers and texts are cut to tern's limits on character boundaries.
pub fn remote_tuple(resource: &str, show: Show, status: Option<&str>, priority: i8) -> Tuple {
    let mut ext = Vec::new();
    if priority != 0 {
        ext.push(Ext {
            key: PRIORITY_EXT.into(),
            value: priority.to_string().into_bytes(),
        });
    }
    Tuple {
        id: resource_id(resource),
        basic: Basic::Open,
        availability: Some(show.availability()),
        contact: None,
        note: status
            .filter(|s| !s.is_empty())
            .map(|s| cut(s, TEXT_MAX).into()),
        at: None,
        ext,
    }
}

/// The tuple id of a remote resource: the resource cut to tern's name limit (`xmpp`
/// when there is none).
pub fn resource_id(resource: &str) -> String {
    if resource.is_empty() {
        "xmpp".into()
    } else {
        cut(resource, NAME_MAX.min(64)).into()
    }
}

/// What one XMPP presence stanza says of a local presentity: the best open tuple's
/// availability and note, and its priority (0 unless the tuple carries
/// [`PRIORITY_EXT`]). `None`: unavailable (no open tuple), with the first tuple's note.
pub fn summarise(presence: &Presence) -> Result<(Show, Option<&str>, i8), Option<&str>> {
    let rank = |t: &Tuple| match Show::of(t.availability) {
        Show::None | Show::Chat => 0,
        Show::Dnd => 1,
        Show::Away => 2,
        Show::Xa => 3,
    };
    let best = presence
        .tuples
        .iter()
        .filter(|t| t.basic == Basic::Open)
        .min_by_key(|t| rank(t));
    match best {
        Some(t) => {
            let priority = t
                .ext
                .iter()
                .find(|e| e.key == PRIORITY_EXT)
                .and_then(|e| std::str::from_utf8(&e.value).ok())
                .and_then(|s| s.parse::<i8>().ok())
                .unwrap_or(0);
            Ok((Show::of(t.availability), t.note.as_deref(), priority))
        }
        None => Err(presence.tuples.iter().find_map(|t| t.note.as_deref())),
    }
}

/// `s` cut to at most `max` bytes on a character boundary (the bridge cuts texts for
/// XMPP with it too).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_plain_text_is_carried() {
        assert!(carries_as_text(None));
        assert!(carries_as_text(Some("text/plain")));
        assert!(carries_as_text(Some("text/plain; charset=UTF-8")));
        assert!(carries_as_text(Some(
            "TEXT/PLAIN;format=flowed;charset=\"utf-8\""
        )));
        assert!(!carries_as_text(Some("text/plain;charset=iso-8859-1")));
        assert!(!carries_as_text(Some("text/html")));
        assert!(!carries_as_text(Some("image/png")));
    }

    #[test]
    fn message_ids_round_trip_through_xmpp_ids() {
        for id in [
            b"m-1".to_vec(),
            vec![0, 1, 2, 255],
            b"a b".to_vec(),
            b"~77".to_vec(),
        ] {
            let x = xmpp_id(&id);
            assert!(x.bytes().all(|b| b.is_ascii_graphic()), "{x}");
            assert_eq!(message_id(&x), Some(id));
        }
        assert_eq!(message_id(""), None);
        let long = "x".repeat(200);
        let id = message_id(&long).unwrap();
        assert_eq!(id.len(), MSG_ID_MAX);
        assert_eq!(message_id(&long), Some(id), "stable");
    }

    #[test]
    fn shows_and_availabilities_map_both_ways() {
        for show in [Show::Away, Show::Xa, Show::Dnd] {
            assert_eq!(Show::of(Some(show.availability())), show);
        }
        assert_eq!(Show::of(Some(Show::Chat.availability())), Show::None);
        assert_eq!(Show::of(None), Show::None);
    }

    #[test]
    fn the_best_open_tuple_speaks_for_the_presentity() {
        let mut presence = Presence::default();
        assert_eq!(summarise(&presence), Err(None));
        let mut away = remote_tuple("laptop", Show::Away, Some("lunch"), 0);
        away.id = "laptop".into();
        presence.tuples.push(away);
        presence
            .tuples
            .push(remote_tuple("phone", Show::None, Some("here"), 5));
        assert_eq!(summarise(&presence), Ok((Show::None, Some("here"), 5)));
        for t in &mut presence.tuples {
            t.basic = Basic::Closed;
        }
        assert_eq!(summarise(&presence), Err(Some("lunch")));
    }

    #[test]
    fn long_resources_and_statuses_are_cut_on_character_boundaries() {
        let resource = "é".repeat(100);
        let tuple = remote_tuple(&resource, Show::None, Some(&"ü".repeat(5000)), 0);
        assert!(tuple.id.len() <= 64);
        assert!(tuple.note.unwrap().len() <= TEXT_MAX);
        assert_eq!(resource_id(""), "xmpp");
    }
}
