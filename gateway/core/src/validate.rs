//! Checks of what clients send, beyond what decoding already guarantees. Each failure
//! names the error code and a reason for people; nothing is stored before it passes.

use std::collections::HashSet;

use tern_wire::ErrorCode;
use tern_wire::limits::{EXT_MAX, EXT_VALUE_MAX, MSG_ID_MAX, NAME_MAX, TEXT_MAX, TUPLES_MAX};
use tern_wire::{Message, Presence};

/// A rejected input: the code for the wire and a reason for people.
pub type Rejection = (ErrorCode, &'static str);

const TUPLE_ID_MAX: usize = 64;
const CONTENT_TYPE_MAX: usize = 255;

fn check(ok: bool, code: ErrorCode, why: &'static str) -> Result<(), Rejection> {
    if ok { Ok(()) } else { Err((code, why)) }
}

/// Checks presence information before it is published.
pub fn presence(p: &Presence) -> Result<(), Rejection> {
    use ErrorCode as E;
    check(
        !p.tuples.is_empty(),
        E::MALFORMED,
        "presence needs at least one tuple",
    )?;
    check(
        p.tuples.len() <= TUPLES_MAX,
        E::TOO_LARGE,
        "too many tuples",
    )?;
    check(
        p.card.len() <= EXT_MAX,
        E::TOO_LARGE,
        "too many contact-card fields",
    )?;
    let mut ids = HashSet::new();
    for t in &p.tuples {
        check(!t.id.is_empty(), E::MALFORMED, "a tuple id is empty")?;
        check(
            t.id.len() <= TUPLE_ID_MAX,
            E::TOO_LARGE,
            "a tuple id is too long",
        )?;
        check(ids.insert(t.id.as_str()), E::MALFORMED, "tuple ids repeat")?;
        if let Some(contact) = &t.contact {
            check(
                contact.len() <= TEXT_MAX,
                E::TOO_LARGE,
                "contact address too long",
            )?;
            check(
                is_uri(contact),
                E::MALFORMED,
                "contact is not a URI (scheme:address)",
            )?;
        }
        let note_len = t.note.as_ref().map_or(0, String::len);
        check(note_len <= TEXT_MAX, E::TOO_LARGE, "note too long")?;
        check(t.ext.len() <= EXT_MAX, E::TOO_LARGE, "too many extensions")?;
        for ext in &t.ext {
            check(
                !ext.key.is_empty(),
                E::MALFORMED,
                "an extension key is empty",
            )?;
            check(
                ext.key.len() <= TUPLE_ID_MAX,
                E::TOO_LARGE,
                "extension key too long",
            )?;
            check(
                ext.value.len() <= EXT_VALUE_MAX,
                E::TOO_LARGE,
                "extension too long",
            )?;
        }
    }
    for field in &p.card {
        check(
            field.value.len() <= TEXT_MAX,
            E::TOO_LARGE,
            "card field too long",
        )?;
    }
    Ok(())
}

/// Checks the parts of a message that are the sender's fault, whatever the recipient.
pub fn message(m: &Message) -> Result<(), Rejection> {
    use ErrorCode as E;
    check(!m.id.is_empty(), E::MALFORMED, "message id is empty")?;
    check(
        m.id.len() <= MSG_ID_MAX,
        E::MALFORMED,
        "message id longer than 32 bytes",
    )?;
    check(
        m.to.len() <= NAME_MAX,
        E::BAD_ADDRESS,
        "recipient address too long",
    )?;
    if let Some(ct) = &m.content_type {
        check(
            ct.len() <= CONTENT_TYPE_MAX,
            E::MALFORMED,
            "content type too long",
        )?;
        check(
            is_media_type(ct),
            E::MALFORMED,
            "content type is not type/subtype",
        )?;
    }
    Ok(())
}

/// `scheme:rest` with an RFC 3986 scheme.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
}

/// `type/subtype` optionally followed by `;parameters`, in MIME token characters.
fn is_media_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    essence
        .split_once('/')
        .is_some_and(|(ty, sub)| token(ty) && token(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(is_media_type("text/plain;charset=utf-8"));
        assert!(is_media_type("application/vnd.tern+cbor"));
        assert!(!is_media_type("text"));
        assert!(!is_media_type("text/"));
        assert!(!is_media_type("te xt/plain"));
    }

    #[test]
    fn uris() {
        assert!(is_uri("tel:+15551234"));
        assert!(is_uri("tern:bob@example.com"));
        assert!(!is_uri("bob@example.com"));
        assert!(!is_uri("1x:abc"));
        assert!(!is_uri("tel:"));
    }
}
