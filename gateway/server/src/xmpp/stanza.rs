//! Stanzas of the XMPP bridge: the core's [`Outbound`] values as XEP-0114 stanzas, and
//! stanzas from the XMPP server as the core's [`Inbound`] values, direct answers or
//! nothing (docs/federation.md).
//!
//! This module owns the mapping between tern's vocabulary and XMPP's on the component
//! stream: addressing checks (a stanza written with a `from` outside the component's
//! domain makes Prosody close the whole stream, so every stanza built here is checked,
//! and the bridge checks again before writing), XEP-0359 ids, XEP-0184 receipts,
//! presence `show`/`status`/`priority`, stanza error conditions both ways, the answers
//! the component gives by itself (XEP-0199 ping, XEP-0030 disco#info, errors for what
//! it does not implement) and the bridge's own pings. Everything here is a pure
//! function of its arguments (apart from the counter that makes synthetic message ids
//! unique): it may not touch the connection, the hub or storage, and it decides nothing
//! about presence or messages (the hub does).
//!
//! minidom panics when it serialises text XML 1.0 forbids (U+0001, ...): every text and
//! id put into a stanza goes through [`xml_text`] first, and nothing here serialises
//! with `String::from(&Element)`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use minidom::Element;
use tern_gateway_core::federation::{
    self, Inbound, Outbound, SubKind, cut, message_id, remote_tuple, summarise, xmpp_id,
};
use tern_wire::ErrorCode;
use tern_wire::addr::{Address, normalise_domain};
use xmpp_parsers::FromElementError;
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Id, Lang, Message, MessageType};
use xmpp_parsers::ns;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::{Presence, Show, Type as PresenceType};
use xmpp_parsers::receipts::{Received as ReceiptReceived, Request as ReceiptRequest};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use xmpp_parsers::stanza_id::OriginId;

/// The largest stanza the bridge writes, serialised. Prosody closes the whole component
/// stream (`not-well-formed`) on a stanza over 512 KiB, and the outbox would hand the
/// same stanza over again after every reconnection: one such stanza would keep the
/// bridge down for good.
pub(crate) const STANZA_MAX: usize = 500_000;

/// What every id of the bridge's own pings starts with.
pub(crate) const PING_PREFIX: &str = "tern-ping-";

/// The XEP-0114 stream namespace (`xmpp-parsers` is built with its `component` feature,
/// so its stanza types use it).
const STREAM_NS: &str = ns::COMPONENT;

/// The namespace of stream error conditions (RFC 6120 4.9.3).
const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Longest error text kept for logs and [`Inbound::Failed`].
const NOTE_MAX: usize = 256;

/// Why an [`Outbound`] value cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unsendable {
    /// The `from` is not `local@domain` of the component's domain (a hub bug: written,
    /// it would make the XMPP server close the stream).
    #[error("`from` {0:?} is not an address in the component's domain")]
    ForeignFrom(String),
    /// The `to` is no XMPP address outside the component's domain.
    #[error("`to` {0:?} is not an XMPP address outside the component's domain")]
    BadTo(String),
    /// The stanza is larger than the component stream takes ([`STANZA_MAX`]).
    #[error("the stanza is {0} bytes serialised, more than the component stream takes")]
    TooLarge(usize),
}

/// What to do with one element read from the component stream.
#[derive(Debug)]
pub(crate) enum Received {
    /// A stanza for the hub.
    Inbound(Inbound),
    /// An answer to write back (an iq result or a stanza error), already addressed.
    Reply(Element),
    /// One of the bridge's own pings ([`ping`]) came back, or was answered: every
    /// stanza written before it has been read by the server.
    Pong(String),
    /// The server's stream error (condition and text): the stream ends.
    StreamError(String),
    /// Nothing to do.
    Ignored(Ignored),
}

/// A stanza the bridge drops, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ignored {
    /// The element's name.
    pub(crate) kind: String,
    /// Its `from` attribute, as sent.
    pub(crate) from: Option<String>,
    /// Why it is dropped.
    pub(crate) why: &'static str,
    /// Whether it suggests a misconfiguration or a hostile peer (logged as a warning)
    /// rather than ordinary traffic the bridge has no use for.
    pub(crate) suspicious: bool,
}

// ---- Texts ---------------------------------------------------------------------------

/// Whether XML 1.0 allows the character (production `Char`; Rust strings hold no
/// surrogates).
fn xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// The text without the characters XML 1.0 forbids (control characters, U+FFFE,
/// U+FFFF), which minidom would panic on when serialising.
pub(crate) fn xml_text(text: &str) -> Cow<'_, str> {
    if text.chars().all(xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| xml_char(c)).collect())
    }
}

/// The element serialised, or `None` if it cannot be (never panics, unlike
/// `String::from(&Element)`).
#[cfg(test)]
fn to_xml(element: &Element) -> Option<String> {
    let mut out = Vec::new();
    element.write_to(&mut out).ok()?;
    String::from_utf8(out).ok()
}

/// The serialised size of the element, `None` if it cannot be serialised.
fn serialised_len(element: &Element) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    element.write_to(&mut count).ok()?;
    Some(count.0)
}

/// The text of the preferred language: no `xml:lang` first, then English (Prosody
/// stamps `xml:lang='en'` on what it forwards, which untagged bodies inherit), then
/// the first there is.
fn best_text(texts: &BTreeMap<Lang, String>) -> Option<&str> {
    texts
        .get("")
        .or_else(|| texts.get("en"))
        .or_else(|| texts.values().next())
        .map(String::as_str)
}

// ---- Addresses -----------------------------------------------------------------------

/// The domain, normalised as tern normalises domains (`None` if it is not one).
fn domain_of(jid: &Jid) -> Option<String> {
    normalise_domain(jid.domain().as_str()).ok()
}

/// Whether the JID is in the component's domain (`domain` normalised).
fn in_domain(jid: &Jid, domain: &str) -> bool {
    domain_of(jid).is_some_and(|d| d == domain)
}

/// The tern address of a JID's bare part (`None` for a domain-only JID or a local
/// part tern does not accept).
fn address_of(jid: &Jid) -> Option<Address> {
    jid.node()?;
    Address::parse(jid.to_bare().as_str()).ok()
}

/// The bare JID of a tern address, if XMPP can carry it unchanged: it parses as a bare
/// JID with a local part, and reads back as the same tern address (so answers come
/// back to it).
fn bare_jid(address: &Address) -> Option<Jid> {
    let jid = BareJid::new(address.as_str()).ok()?;
    let jid = Jid::from(jid);
    (address_of(&jid).as_ref() == Some(address)).then_some(jid)
}

/// A local principal's JID: `local@domain` of the component's domain.
fn local_jid(domain: &str, from: &str) -> Result<Jid, Unsendable> {
    Address::parse(from)
        .ok()
        .filter(|a| a.domain() == domain)
        .and_then(|a| bare_jid(&a))
        .ok_or_else(|| Unsendable::ForeignFrom(from.into()))
}

/// A remote user's bare JID, outside the component's domain.
fn remote_bare_jid(domain: &str, to: &str) -> Result<Jid, Unsendable> {
    Address::parse(to)
        .ok()
        .filter(|a| a.domain() != domain)
        .and_then(|a| bare_jid(&a))
        .ok_or_else(|| Unsendable::BadTo(to.into()))
}

/// A remote JID as the remote side sent it (resource included), outside the
/// component's domain.
fn remote_jid(domain: &str, to: &str) -> Result<Jid, Unsendable> {
    Jid::new(to)
        .ok()
        .filter(|j| !in_domain(j, domain))
        .ok_or_else(|| Unsendable::BadTo(to.into()))
}

/// Whether the element may be written: its `from` is in the component's domain
/// (`domain` normalised). Prosody closes the whole component stream (`invalid-from`)
/// on anything else.
pub(crate) fn from_is_ours(domain: &str, element: &Element) -> bool {
    element
        .attr("from")
        .and_then(|from| Jid::new(from).ok())
        .is_some_and(|jid| in_domain(&jid, domain))
}

// ---- Outbound ------------------------------------------------------------------------

/// The stanza for a value the hub hands over. `domain` is the component's domain,
/// normalised.
pub(crate) fn outbound(domain: &str, stanza: &Outbound) -> Result<Element, Unsendable> {
    let element = match stanza {
        Outbound::Message { from, to, id, body } => {
            let (from, to) = (local_jid(domain, from)?, remote_bare_jid(domain, to)?);
            chat_message(from, to, id, body)
        }
        Outbound::Receipt { from, to, id } => {
            // To the sender's full JID (XEP-0184): the resource that asked.
            let (from, to) = (local_jid(domain, from)?, remote_jid(domain, to)?);
            receipt(from, to, id)
        }
        Outbound::Subscription { from, to, kind } => {
            let (from, to) = (local_jid(domain, from)?, remote_bare_jid(domain, to)?);
            strip_priority(
                Presence::new(presence_type(*kind))
                    .with_from(from)
                    .with_to(to),
            )
        }
        Outbound::Presence { from, to, presence } => {
            let (from, to) = (local_jid(domain, from)?, remote_bare_jid(domain, to)?);
            presence_of(from, to, presence)
        }
        Outbound::Error {
            from,
            to,
            id,
            message,
            code,
            text,
        } => {
            let (from, to) = (local_jid(domain, from)?, remote_jid(domain, to)?);
            let error = stanza_error(*code, text);
            let id = id.as_deref().map(|id| xml_text(id).into_owned());
            if *message {
                error_message(from, to, id, error)
            } else {
                error_presence(from, to, id, error)
            }
        }
    };
    match serialised_len(&element) {
        Some(len) if len <= STANZA_MAX => Ok(element),
        Some(len) => Err(Unsendable::TooLarge(len)),
        // Not serialisable although every text was cleaned: treated as too large, the
        // one way a message can fail for its content.
        None => Err(Unsendable::TooLarge(usize::MAX)),
    }
}

/// What the hub hears of a stanza that cannot be written: a message fails (as if the
/// XMPP network had bounced it), anything else is only logged by the caller.
pub(crate) fn bounce(stanza: &Outbound, why: &Unsendable) -> Option<Inbound> {
    let Outbound::Message { from, to, id, .. } = stanza else {
        return None;
    };
    let code = match why {
        Unsendable::BadTo(_) => ErrorCode::BAD_ADDRESS,
        Unsendable::TooLarge(_) => ErrorCode::TOO_LARGE,
        Unsendable::ForeignFrom(_) => ErrorCode::UNROUTABLE,
    };
    Some(Inbound::Failed {
        from: to.clone(),
        to: from.clone(),
        id: id.clone(),
        code,
        text: why.to_string(),
    })
}

/// A chat message with its id as stanza id and XEP-0359 `origin-id`, asking for a
/// XEP-0184 receipt.
fn chat_message(from: Jid, to: Jid, id: &[u8], body: &str) -> Element {
    let id = xml_text(&xmpp_id(id)).into_owned();
    let mut message = Message::chat(Some(to));
    message.from = Some(from);
    message.id = Some(Id(id.clone()));
    message
        .bodies
        .insert(Lang::new(), xml_text(body).into_owned());
    message.payloads.push(OriginId { id }.into());
    message.payloads.push(ReceiptRequest.into());
    message.into()
}

/// A XEP-0184 receipt for the message `id`.
fn receipt(from: Jid, to: Jid, id: &[u8]) -> Element {
    let id = xml_text(&xmpp_id(id)).into_owned();
    let mut message = Message::chat(Some(to));
    message.from = Some(from);
    message.id = Some(Id(format!("r-{id}")));
    message.payloads.push(ReceiptReceived { id }.into());
    message.into()
}

/// The presence type of a subscription step.
fn presence_type(kind: SubKind) -> PresenceType {
    match kind {
        SubKind::Subscribe => PresenceType::Subscribe,
        SubKind::Subscribed => PresenceType::Subscribed,
        SubKind::Unsubscribe => PresenceType::Unsubscribe,
        SubKind::Unsubscribed => PresenceType::Unsubscribed,
        SubKind::Probe => PresenceType::Probe,
    }
}

/// A local presentity's presence as one stanza.
///
/// It is sent from the bare JID, which Prosody handles: checked with scripts/xmpp
/// (Prosody 0.12.3, a slixmpp 1.17 client subscribed to a tern user), Prosody hands it
/// to the watcher's resource unchanged (`<presence from='alice@example.com'>`), the
/// client's roster shows the contact online with resource "" (show and status as
/// sent), and an `unavailable` from the same bare JID leaves no resource online. One
/// stanza per presentity: one XMPP resource to track, not one per tern device.
fn presence_of(from: Jid, to: Jid, presence: &tern_wire::Presence) -> Element {
    let mut stanza = match summarise(presence) {
        Ok((show, note, priority)) => {
            let mut stanza = Presence::available().with_priority(priority);
            stanza.show = match show {
                federation::Show::None => None,
                federation::Show::Chat => Some(Show::Chat),
                federation::Show::Away => Some(Show::Away),
                federation::Show::Xa => Some(Show::Xa),
                federation::Show::Dnd => Some(Show::Dnd),
            };
            set_status(&mut stanza, note);
            stanza
        }
        Err(note) => {
            let mut stanza = Presence::unavailable();
            set_status(&mut stanza, note);
            stanza
        }
    };
    stanza.from = Some(from);
    stanza.to = Some(to);
    strip_priority(stanza)
}

/// The presence's status (no `xml:lang`), if there is a non-empty one.
fn set_status(stanza: &mut Presence, note: Option<&str>) {
    if let Some(note) = note.map(xml_text).filter(|n| !n.is_empty()) {
        stanza.statuses.insert(Lang::new(), note.into_owned());
    }
}

/// The presence as an element, without the `<priority>0</priority>` xmpp-parsers
/// always writes (0 is the default; it means nothing on other presence types).
fn strip_priority(stanza: Presence) -> Element {
    let zero = stanza.priority.0 == 0;
    let mut element = Element::from(stanza);
    if zero {
        element.remove_child("priority", STREAM_NS);
    }
    element
}

/// The XMPP condition and error type for a tern code (RFC 6120 8.3.3).
fn condition_of(code: ErrorCode) -> (DefinedCondition, ErrorType) {
    match code {
        // RFC 6121 8.5.1: a message to an account that does not exist gets
        // service-unavailable, which does not tell an account from a refusal.
        ErrorCode::UNKNOWN_USER => (DefinedCondition::ServiceUnavailable, ErrorType::Cancel),
        ErrorCode::SERVICE_DISABLED => (DefinedCondition::ServiceUnavailable, ErrorType::Cancel),
        ErrorCode::REFUSED => (DefinedCondition::NotAcceptable, ErrorType::Cancel),
        ErrorCode::TOO_LARGE => (DefinedCondition::PolicyViolation, ErrorType::Modify),
        ErrorCode::RATE_LIMITED => (DefinedCondition::ResourceConstraint, ErrorType::Wait),
        ErrorCode::BAD_ADDRESS => (DefinedCondition::JidMalformed, ErrorType::Modify),
        ErrorCode::MALFORMED => (DefinedCondition::BadRequest, ErrorType::Modify),
        ErrorCode::UNROUTABLE => (DefinedCondition::ServiceUnavailable, ErrorType::Cancel),
        ErrorCode::INTERNAL => (DefinedCondition::InternalServerError, ErrorType::Cancel),
        _ => (DefinedCondition::UndefinedCondition, ErrorType::Cancel),
    }
}

/// A stanza error for a tern code, with the text in English.
fn stanza_error(code: ErrorCode, text: &str) -> StanzaError {
    let (condition, type_) = condition_of(code);
    error_with(condition, type_, text)
}

/// A stanza error with an English text (none if empty).
fn error_with(condition: DefinedCondition, type_: ErrorType, text: &str) -> StanzaError {
    let mut error = StanzaError::new(type_, condition, "en", xml_text(text).into_owned());
    error.texts.retain(|_, text| !text.is_empty());
    error
}

/// A message of type error.
fn error_message(from: Jid, to: Jid, id: Option<String>, error: StanzaError) -> Element {
    let mut message = Message::error(Some(to));
    message.from = Some(from);
    message.id = id.map(Id);
    message.payloads.push(error.into());
    message.into()
}

/// A presence of type error.
fn error_presence(from: Jid, to: Jid, id: Option<String>, error: StanzaError) -> Element {
    let mut presence = Presence::error().with_from(from).with_to(to);
    presence.id = id;
    presence.add_payload(error);
    strip_priority(presence)
}

/// The bridge's XEP-0199 ping, proving that the server has read everything written
/// before it when it comes back.
///
/// It is addressed to the component's own domain. Checked with Prosody 0.12.3:
/// * no `to`: Prosody answers at once with an error (`bad-request`, "Components MUST
///   specify a 'to' address on stanzas"), but logs a warning for each one, which a
///   keepalive every minute would turn into log spam;
/// * the component's parent domain (`com` for `example.com`, the VirtualHost only when
///   the component is a subdomain of it): goes to server-to-server routing (here
///   `not-allowed`, "Communication with remote domains is not enabled"; with s2s on, a
///   DNS lookup and a connection attempt to a domain that may not exist);
/// * the server's VirtualHost: answered by mod_ping with a result, but the bridge does
///   not know the VirtualHost without more configuration;
/// * the component's own domain (chosen): the server routes the ping back to the
///   component on the same stream, logged at debug level only. It needs no
///   configuration and no module, and works on any server that routes its
///   component's domain to the component (which is what XEP-0114 is). Nobody else can
///   send a stanza from the component's domain, so it cannot be forged.
pub(crate) fn ping(domain: &str, id: &str) -> Option<Element> {
    let jid = Jid::new(domain).ok()?;
    let iq = Iq::Get {
        from: Some(jid.clone()),
        to: Some(jid),
        id: xml_text(id).into_owned(),
        payload: Ping.into(),
    };
    Some(iq.into())
}

// ---- Inbound -------------------------------------------------------------------------

/// The three stanza kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Presence,
    Iq,
}

/// The attributes of a stanza read before parsing it (an error answer to a stanza that
/// does not parse is built from them).
#[derive(Debug, Clone)]
struct Head {
    kind: Kind,
    type_: Option<String>,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl Head {
    fn of(kind: Kind, element: &Element) -> Self {
        let attr = |name: &str| element.attr(name).map(String::from);
        Self {
            kind,
            type_: attr("type"),
            id: attr("id"),
            from: attr("from"),
            to: attr("to"),
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }

    fn skip(&self, why: &'static str, suspicious: bool) -> Ignored {
        Ignored {
            kind: self.name().into(),
            from: self.from.clone(),
            why,
            suspicious,
        }
    }

    fn ignored(&self, why: &'static str, suspicious: bool) -> Received {
        Received::Ignored(self.skip(why, suspicious))
    }
}

/// Whom a local stanza is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    /// The component's domain itself.
    Domain,
    /// A tern address in it.
    User(Address),
    /// A local part tern does not accept: nobody.
    Nobody,
}

/// A checked stanza's addresses.
#[derive(Debug, Clone)]
struct Route {
    /// The sender, as it sent (resource included).
    from: Jid,
    /// The recipient, as sent (in the component's domain).
    to: Jid,
    /// The sender's tern address (`None`: a domain-only JID, e.g. a server, or a local
    /// part tern does not accept).
    remote: Option<Address>,
    /// The recipient.
    local: Local,
}

/// A stanza's addresses checked: `to` in the component's domain, `from` present and
/// outside it.
fn route(
    head: &Head,
    domain: &str,
    from: Option<&Jid>,
    to: Option<&Jid>,
) -> Result<Route, Ignored> {
    let Some(to) = to else {
        return Err(head.skip("no `to`", true));
    };
    if !in_domain(to, domain) {
        // Prosody routes only the component's domain here; and an answer would have to
        // come from the other domain, which would close the stream.
        return Err(head.skip("`to` outside the component's domain", true));
    }
    let Some(from) = from else {
        return Err(head.skip("no `from`", true));
    };
    if in_domain(from, domain) {
        return Err(head.skip("`from` in the component's own domain", true));
    }
    let local = match to.node() {
        None => Local::Domain,
        Some(_) => address_of(to).map_or(Local::Nobody, Local::User),
    };
    Ok(Route {
        from: from.clone(),
        to: to.clone(),
        remote: address_of(from),
        local,
    })
}

/// What to do with an element read from the component stream. `domain` is the
/// component's domain, normalised.
pub(crate) fn received(domain: &str, element: Element) -> Received {
    if element.is("error", ns::STREAM) {
        return Received::StreamError(stream_error(&element));
    }
    let kind = match element.name() {
        "message" => Kind::Message,
        "presence" => Kind::Presence,
        "iq" => Kind::Iq,
        _ => {
            return Received::Ignored(Ignored {
                kind: element.name().into(),
                from: element.attr("from").map(String::from),
                why: "not a stanza",
                suspicious: false,
            });
        }
    };
    let head = Head::of(kind, &element);
    if element.ns() != STREAM_NS {
        return head.ignored("a stanza in another namespace", true);
    }
    if let Some(id) = own_ping(&head, domain) {
        return Received::Pong(id);
    }
    let parsed = match kind {
        Kind::Message => Message::try_from(element).map(|m| message(&head, domain, m)),
        Kind::Presence => Presence::try_from(element).map(|p| presence(&head, domain, p)),
        Kind::Iq => Iq::try_from(element).map(|iq| iq_request(&head, domain, iq)),
    };
    match parsed {
        Ok(received) => received,
        Err(FromElementError::Mismatch(_)) => head.ignored("not a stanza", false),
        Err(FromElementError::Invalid(err)) => invalid(&head, domain, &err.to_string()),
    }
}

/// The id of one of the bridge's pings coming back (or answered by the server): an iq
/// with a ping id, from the component's domain itself or from the server (no `from`).
fn own_ping(head: &Head, domain: &str) -> Option<String> {
    let id = head.id.as_deref()?;
    if head.kind != Kind::Iq || !id.starts_with(PING_PREFIX) {
        return None;
    }
    let from_us = match head.from.as_deref() {
        None => true,
        Some(from) => Jid::new(from)
            .ok()
            .is_some_and(|j| j.node().is_none() && in_domain(&j, domain)),
    };
    from_us.then(|| id.to_string())
}

/// A stream error's condition and text.
fn stream_error(element: &Element) -> String {
    let mut condition = None;
    let mut text = None;
    for child in element.children() {
        if child.ns() != STREAM_ERRORS {
            continue;
        }
        if child.name() == "text" {
            text = Some(child.text());
        } else if condition.is_none() {
            condition = Some(child.name().to_string());
        }
    }
    let condition = condition.unwrap_or_else(|| "undefined-condition".into());
    match text {
        Some(text) if !text.is_empty() => format!("{condition}: {}", cut(&text, NOTE_MAX)),
        _ => condition,
    }
}

/// A stanza of the right name whose content does not parse: `bad-request` back where
/// XMPP allows an answer (never to an error, never to an iq result), else nothing.
fn invalid(head: &Head, domain: &str, why: &str) -> Received {
    let type_ = head.type_.as_deref();
    if type_ == Some("error") || (head.kind == Kind::Iq && type_ == Some("result")) {
        return head.ignored("an invalid error or result", false);
    }
    let from = head.from.as_deref().and_then(|j| Jid::new(j).ok());
    let to = head.to.as_deref().and_then(|j| Jid::new(j).ok());
    let route = match route(head, domain, from.as_ref(), to.as_ref()) {
        Ok(route) => route,
        Err(ignored) => return Received::Ignored(ignored),
    };
    let text = format!("tern could not parse this stanza: {}", cut(why, NOTE_MAX));
    let error = error_with(DefinedCondition::BadRequest, ErrorType::Modify, &text);
    let id = head.id.clone();
    let reply = match head.kind {
        Kind::Message => error_message(route.to, route.from, id, error),
        Kind::Presence => error_presence(route.to, route.from, id, error),
        Kind::Iq => {
            let Some(id) = id else {
                return head.ignored("an invalid iq without id", false);
            };
            iq_error(route.to, route.from, id, error)
        }
    };
    Received::Reply(reply)
}

/// An iq of type error.
fn iq_error(from: Jid, to: Jid, id: String, error: StanzaError) -> Element {
    Iq::Error {
        from: Some(from),
        to: Some(to),
        id,
        error,
        payload: None,
    }
    .into()
}

/// A message from the XMPP network.
fn message(head: &Head, domain: &str, mut message: Message) -> Received {
    let route = match route(head, domain, message.from.as_ref(), message.to.as_ref()) {
        Ok(route) => route,
        Err(ignored) => return Received::Ignored(ignored),
    };
    match message.type_ {
        MessageType::Error => return bounced(head, &route, &message),
        MessageType::Groupchat | MessageType::Headline => {
            return head.ignored("a groupchat or headline message", false);
        }
        MessageType::Chat | MessageType::Normal => {}
    }
    let body = best_text(&message.bodies).map(String::from);
    let to = match (&route.local, &body) {
        (Local::User(to), _) => to.clone(),
        (Local::Domain, Some(_)) => {
            let text = "this domain takes messages for its users only";
            let error = error_with(
                DefinedCondition::ServiceUnavailable,
                ErrorType::Cancel,
                text,
            );
            return Received::Reply(answer_message(&route, &message, error));
        }
        (Local::Nobody, Some(_)) => {
            // RFC 6121 8.5.1: a message to an account that does not exist.
            let error = error_with(
                DefinedCondition::ServiceUnavailable,
                ErrorType::Cancel,
                "no such user",
            );
            return Received::Reply(answer_message(&route, &message, error));
        }
        (_, None) => return head.ignored("a message without body to no user", false),
    };
    let Some(from) = route.remote.clone() else {
        if body.is_none() {
            return head.ignored("a message without body from a non-tern address", false);
        }
        if route.from.node().is_none() {
            // A server's announcement: nobody to answer.
            return head.ignored("a message from a domain", false);
        }
        let text = "the sender's address is not one tern can represent";
        let error = error_with(DefinedCondition::JidMalformed, ErrorType::Cancel, text);
        return Received::Reply(answer_message(&route, &message, error));
    };
    // A body makes it a message; a message that also acknowledges another (rare:
    // clients send receipts on their own) is taken as the message.
    match body {
        Some(body) => {
            let id = message_id_of(&mut message).unwrap_or_else(|| synthetic_id(from.as_str()));
            let receipt = message
                .payloads
                .iter()
                .any(|p| p.is("request", ns::RECEIPTS));
            Received::Inbound(Inbound::Message {
                from: from.into_string(),
                to: to.into_string(),
                id,
                body,
                receipt,
                sender: route.from.to_string(),
            })
        }
        None => match message.extract_payload::<ReceiptReceived>() {
            Ok(Some(received)) => match message_id(&received.id) {
                Some(id) => Received::Inbound(Inbound::Receipt {
                    from: from.into_string(),
                    to: to.into_string(),
                    id,
                }),
                None => head.ignored("a receipt with an empty id", false),
            },
            Ok(None) => head.ignored("a message without body (chat state, ...)", false),
            Err(_) => head.ignored("an invalid receipt", false),
        },
    }
}

/// The tern id of a message: its XEP-0359 `origin-id`, else its stanza id.
fn message_id_of(message: &mut Message) -> Option<Vec<u8>> {
    let origin = message.extract_payload::<OriginId>().ok().flatten();
    origin
        .and_then(|o| message_id(&o.id))
        .or_else(|| message.id.as_ref().and_then(|id| message_id(&id.0)))
}

/// An id for a message that came without any: unique (a hash of the sender, the time
/// and a counter), so the message is still delivered; a resend of it cannot be
/// recognised (no de-duplication without an id).
fn synthetic_id(from: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hash = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        (salt, from, nanos, n).hash(&mut hasher);
        hasher.finish()
    };
    let hexed = format!("~{:016x}{:016x}", hash(0), hash(1));
    // `~` and hex: the 16 bytes themselves, as for any id sent that way.
    message_id(&hexed).unwrap_or_else(|| hexed.into_bytes())
}

/// An error answer to a message (from its `to`, to its `from`, with its id).
fn answer_message(route: &Route, message: &Message, error: StanzaError) -> Element {
    let id = message.id.as_ref().map(|id| id.0.clone());
    error_message(route.to.clone(), route.from.clone(), id, error)
}

/// A message a local principal sent, bounced.
fn bounced(head: &Head, route: &Route, message: &Message) -> Received {
    let (Local::User(to), Some(from)) = (&route.local, &route.remote) else {
        return head.ignored("an error message not between tern addresses", false);
    };
    let Some(id) = message.id.as_ref().and_then(|id| message_id(&id.0)) else {
        return head.ignored("an error message without id", false);
    };
    let (condition, text) = error_condition(&message.payloads);
    let code = code_of(&condition);
    let text = match text {
        Some(text) if !text.is_empty() => format!("{condition}: {}", cut(&text, NOTE_MAX)),
        _ => condition,
    };
    Received::Inbound(Inbound::Failed {
        from: from.as_str().into(),
        to: to.as_str().into(),
        id,
        code,
        text,
    })
}

/// The condition's name and text of a stanza's `<error/>` (read as elements, so that
/// conditions xmpp-parsers does not know are kept).
fn error_condition(payloads: &[Element]) -> (String, Option<String>) {
    let error = payloads.iter().find(|p| p.is("error", STREAM_NS));
    let mut condition = None;
    let mut text = None;
    for child in error.iter().flat_map(|e| e.children()) {
        if child.ns() != ns::XMPP_STANZAS {
            continue;
        }
        if child.name() == "text" {
            text.get_or_insert_with(|| child.text());
        } else if condition.is_none() {
            condition = Some(child.name().to_string());
        }
    }
    (
        condition.unwrap_or_else(|| "undefined-condition".into()),
        text,
    )
}

/// The tern code for an XMPP error condition.
fn code_of(condition: &str) -> ErrorCode {
    match condition {
        "item-not-found" | "recipient-unavailable" | "gone" => ErrorCode::UNKNOWN_USER,
        "remote-server-not-found" | "remote-server-timeout" | "service-unavailable" => {
            ErrorCode::UNROUTABLE
        }
        "forbidden"
        | "not-allowed"
        | "not-acceptable"
        | "not-authorized"
        | "policy-violation"
        | "registration-required"
        | "subscription-required" => ErrorCode::REFUSED,
        "resource-constraint" => ErrorCode::RATE_LIMITED,
        "jid-malformed" => ErrorCode::BAD_ADDRESS,
        "bad-request" => ErrorCode::MALFORMED,
        _ => ErrorCode::UNROUTABLE,
    }
}

/// A presence from the XMPP network.
fn presence(head: &Head, domain: &str, presence: Presence) -> Received {
    let route = match route(head, domain, presence.from.as_ref(), presence.to.as_ref()) {
        Ok(route) => route,
        Err(ignored) => return Received::Ignored(ignored),
    };
    let (Local::User(to), Some(from)) = (&route.local, &route.remote) else {
        return head.ignored("a presence not between tern addresses", false);
    };
    let (from, to) = (from.as_str().to_string(), to.as_str().to_string());
    if presence.type_ == PresenceType::Error {
        // E.g. a subscribe to an address whose server does not exist: the hub fails a
        // pending request to it (and changes nothing else).
        let (condition, _) = error_condition(&presence.payloads);
        let code = code_of(&condition);
        return Received::Inbound(Inbound::Unreachable { from, to, code });
    }
    let kind = match presence.type_ {
        PresenceType::Subscribe => SubKind::Subscribe,
        PresenceType::Subscribed => SubKind::Subscribed,
        PresenceType::Unsubscribe => SubKind::Unsubscribe,
        PresenceType::Unsubscribed => SubKind::Unsubscribed,
        PresenceType::Probe => SubKind::Probe,
        PresenceType::None | PresenceType::Unavailable | PresenceType::Error => {
            let resource = route
                .from
                .resource()
                .map_or_else(String::new, |r| r.as_str().to_string());
            let tuple = (presence.type_ == PresenceType::None).then(|| {
                let show = match presence.show {
                    None => federation::Show::None,
                    Some(Show::Chat) => federation::Show::Chat,
                    Some(Show::Away) => federation::Show::Away,
                    Some(Show::Xa) => federation::Show::Xa,
                    Some(Show::Dnd) => federation::Show::Dnd,
                };
                let status = best_text(&presence.statuses);
                remote_tuple(&resource, show, status, presence.priority.0)
            });
            return Received::Inbound(Inbound::Presence {
                from,
                to,
                tuple,
                resource,
            });
        }
    };
    Received::Inbound(Inbound::Subscription { from, to, kind })
}

/// An iq from the XMPP network: pings and disco#info are answered, other requests get
/// `service-unavailable` (RFC 6120 8.4), results and errors that are not the bridge's
/// are dropped.
fn iq_request(head: &Head, domain: &str, iq: Iq) -> Received {
    let route = match route(head, domain, iq.from(), iq.to()) {
        Ok(route) => route,
        Err(ignored) => return Received::Ignored(ignored),
    };
    let (id, payload, get) = match iq {
        Iq::Get { id, payload, .. } => (id, payload, true),
        Iq::Set { id, payload, .. } => (id, payload, false),
        Iq::Result { .. } | Iq::Error { .. } => {
            return head.ignored("an iq result or error not for the bridge", false);
        }
    };
    let answer = |payload: Option<Element>| {
        Iq::Result {
            from: Some(route.to.clone()),
            to: Some(route.from.clone()),
            id: id.clone(),
            payload,
        }
        .into()
    };
    let reply = if get && payload.is("ping", ns::PING) {
        answer(None)
    } else if get && payload.is("query", ns::DISCO_INFO) && payload.attr("node").is_none() {
        answer(Some(disco_info(&route.local).into()))
    } else {
        let text = "not implemented by tern";
        let error = error_with(
            DefinedCondition::ServiceUnavailable,
            ErrorType::Cancel,
            text,
        );
        iq_error(route.to.clone(), route.from.clone(), id.clone(), error)
    };
    Received::Reply(reply)
}

/// What the component and its users support (XEP-0030).
fn disco_info(local: &Local) -> DiscoInfoResult {
    let identity = match local {
        Local::Domain => Identity::new("component", "presence", "en", "tern"),
        Local::User(_) | Local::Nobody => {
            Identity::new_anonymous::<_, _, String, String>("account", "registered")
        }
    };
    DiscoInfoResult {
        node: None,
        identities: vec![identity],
        features: [ns::DISCO_INFO, ns::PING, ns::RECEIPTS, ns::SID]
            .into_iter()
            .map(String::from)
            .collect(),
        extensions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_wire::{Availability, Basic, Tuple};

    const DOMAIN: &str = "example.com";

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test XML parses")
    }

    /// A stanza as the server would hand it to the component.
    fn stanza(xml: &str) -> Received {
        received(DOMAIN, parse(xml))
    }

    fn xml(element: &Element) -> String {
        to_xml(element).expect("serialisable")
    }

    fn out(stanza: &Outbound) -> Element {
        let element = outbound(DOMAIN, stanza).expect("sendable");
        assert!(from_is_ours(DOMAIN, &element), "{}", xml(&element));
        element
    }

    fn inbound(received: Received) -> Inbound {
        match received {
            Received::Inbound(inbound) => inbound,
            other => panic!("not for the hub: {other:?}"),
        }
    }

    fn reply(received: Received) -> Element {
        match received {
            Received::Reply(reply) => {
                assert!(from_is_ours(DOMAIN, &reply), "{}", xml(&reply));
                reply
            }
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn ignored(received: Received) -> Ignored {
        match received {
            Received::Ignored(ignored) => ignored,
            other => panic!("not ignored: {other:?}"),
        }
    }

    /// The defined condition of an error stanza, by name.
    fn condition(element: &Element) -> String {
        let error = element.get_child("error", STREAM_NS).expect("an <error/>");
        let condition = error
            .children()
            .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
            .expect("a condition");
        condition.name().to_string()
    }

    fn message(from: &str, to: &str, id: &[u8], body: &str) -> Outbound {
        Outbound::Message {
            from: from.into(),
            to: to.into(),
            id: id.to_vec(),
            body: body.into(),
        }
    }

    // ---- Outbound ----

    #[test]
    fn a_message_carries_its_id_as_stanza_id_and_origin_id_and_asks_for_a_receipt() {
        let element = out(&message(
            "alice@example.com",
            "bob@xmpp.test",
            b"m-1",
            "hi <3",
        ));
        assert_eq!(element.name(), "message");
        assert_eq!(element.attr("type"), Some("chat"));
        assert_eq!(element.attr("id"), Some("m-1"));
        assert_eq!(element.attr("from"), Some("alice@example.com"));
        assert_eq!(element.attr("to"), Some("bob@xmpp.test"));
        let text = xml(&element);
        assert!(text.contains("<body>hi &lt;3</body>"), "{text}");
        assert!(
            text.contains("<origin-id xmlns='urn:xmpp:sid:0' id='m-1'/>"),
            "{text}"
        );
        assert!(
            text.contains("<request xmlns='urn:xmpp:receipts'/>"),
            "{text}"
        );
        assert!(!text.contains("xml:lang"), "{text}");
    }

    #[test]
    fn ids_that_are_not_tokens_go_out_hexed_and_come_back_the_same() {
        let id = vec![0, 1, b' ', 255];
        let element = out(&message("alice@example.com", "bob@xmpp.test", &id, "x"));
        let xid = element.attr("id").expect("an id").to_string();
        assert_eq!(xid, "~000120ff");
        let receipt = format!(
            "<message xmlns='jabber:component:accept' from='bob@xmpp.test/phone' \
             to='alice@example.com' id='r1'><received xmlns='urn:xmpp:receipts' id='{xid}'/></message>"
        );
        let back = inbound(stanza(&receipt));
        assert_eq!(
            back,
            Inbound::Receipt {
                from: "bob@xmpp.test".into(),
                to: "alice@example.com".into(),
                id,
            }
        );
    }

    #[test]
    fn a_receipt_names_the_message_received() {
        let receipt = Outbound::Receipt {
            from: "alice@example.com".into(),
            to: "bob@xmpp.test".into(),
            id: b"c1".to_vec(),
        };
        let element = out(&receipt);
        assert_eq!(element.attr("type"), Some("chat"));
        assert_eq!(element.attr("id"), Some("r-c1"));
        let text = xml(&element);
        assert!(
            text.contains("<received xmlns='urn:xmpp:receipts' id='c1'/>"),
            "{text}"
        );
        assert!(!text.contains("<body"), "{text}");
    }

    #[test]
    fn subscription_steps_are_typed_presences_between_bare_jids() {
        for (kind, type_) in [
            (SubKind::Subscribe, "subscribe"),
            (SubKind::Subscribed, "subscribed"),
            (SubKind::Unsubscribe, "unsubscribe"),
            (SubKind::Unsubscribed, "unsubscribed"),
            (SubKind::Probe, "probe"),
        ] {
            let element = out(&Outbound::Subscription {
                from: "alice@example.com".into(),
                to: "bob@xmpp.test".into(),
                kind,
            });
            assert_eq!(element.name(), "presence");
            assert_eq!(element.attr("type"), Some(type_));
            assert_eq!(element.attr("from"), Some("alice@example.com"));
            assert_eq!(element.attr("to"), Some("bob@xmpp.test"));
            assert!(!xml(&element).contains("priority"), "{}", xml(&element));
        }
    }

    fn tuple(id: &str, basic: Basic, availability: Availability, note: Option<&str>) -> Tuple {
        Tuple {
            id: id.into(),
            basic,
            availability: Some(availability),
            contact: None,
            note: note.map(String::from),
            at: None,
            ext: Vec::new(),
        }
    }

    fn presence_out(presence: tern_wire::Presence) -> Element {
        out(&Outbound::Presence {
            from: "alice@example.com".into(),
            to: "bob@xmpp.test".into(),
            presence,
        })
    }

    #[test]
    fn presence_goes_out_with_show_status_and_priority_from_the_bare_jid() {
        let mut presence = tern_wire::Presence::default();
        let mut busy = tuple(
            "phone",
            Basic::Open,
            Availability::DND,
            Some("in a meeting"),
        );
        busy.ext.push(tern_wire::Ext {
            key: federation::PRIORITY_EXT.into(),
            value: b"5".to_vec(),
        });
        presence.tuples.push(busy);
        let element = presence_out(presence);
        assert_eq!(element.attr("type"), None);
        assert_eq!(element.attr("from"), Some("alice@example.com"));
        let text = xml(&element);
        assert!(text.contains("<show>dnd</show>"), "{text}");
        assert!(text.contains("<status>in a meeting</status>"), "{text}");
        assert!(text.contains("<priority>5</priority>"), "{text}");

        for (availability, show) in [
            (Availability::AWAY, Some("away")),
            (Availability::EXTENDED_AWAY, Some("xa")),
            (Availability::AVAILABLE, None),
        ] {
            let mut presence = tern_wire::Presence::default();
            presence
                .tuples
                .push(tuple("t", Basic::Open, availability, None));
            let text = xml(&presence_out(presence));
            match show {
                Some(show) => assert!(text.contains(&format!("<show>{show}</show>")), "{text}"),
                None => assert!(!text.contains("<show"), "{text}"),
            }
            assert!(
                !text.contains("<status") && !text.contains("priority"),
                "{text}"
            );
        }
    }

    #[test]
    fn no_open_tuple_is_unavailable_with_the_note() {
        let mut presence = tern_wire::Presence::default();
        let closed = tuple(
            "t",
            Basic::Closed,
            Availability::AVAILABLE,
            Some("gone fishing"),
        );
        presence.tuples.push(closed);
        let element = presence_out(presence);
        assert_eq!(element.attr("type"), Some("unavailable"));
        assert!(xml(&element).contains("<status>gone fishing</status>"));
        let element = presence_out(tern_wire::Presence::default());
        assert_eq!(element.attr("type"), Some("unavailable"));
        assert!(!xml(&element).contains("<status"));
    }

    #[test]
    fn errors_map_tern_codes_to_conditions() {
        let cases = [
            (ErrorCode::UNKNOWN_USER, "service-unavailable", "cancel"),
            (ErrorCode::SERVICE_DISABLED, "service-unavailable", "cancel"),
            (ErrorCode::REFUSED, "not-acceptable", "cancel"),
            (ErrorCode::TOO_LARGE, "policy-violation", "modify"),
            (ErrorCode::RATE_LIMITED, "resource-constraint", "wait"),
            (ErrorCode::BAD_ADDRESS, "jid-malformed", "modify"),
            (ErrorCode::MALFORMED, "bad-request", "modify"),
            (ErrorCode::TOO_SLOW, "undefined-condition", "cancel"),
        ];
        for (code, name, type_) in cases {
            for message in [true, false] {
                let element = out(&Outbound::Error {
                    from: "alice@example.com".into(),
                    to: "bob@xmpp.test/phone".into(),
                    id: Some("x1".into()),
                    message,
                    code,
                    text: "why\u{1}".into(),
                });
                assert_eq!(element.name(), if message { "message" } else { "presence" });
                assert_eq!(element.attr("type"), Some("error"));
                assert_eq!(element.attr("id"), Some("x1"));
                assert_eq!(element.attr("to"), Some("bob@xmpp.test/phone"));
                assert_eq!(condition(&element), name, "{code}");
                let error = element.get_child("error", STREAM_NS).expect("error");
                assert_eq!(error.attr("type"), Some(type_));
                let text = xml(&element);
                assert!(text.contains("xml:lang='en'>why</text>"), "{text}");
            }
        }
    }

    #[test]
    fn control_characters_are_stripped_from_everything_sent() {
        let element = out(&message(
            "alice@example.com",
            "bob@xmpp.test",
            b"m",
            "a\u{1}b\u{0}c\u{1b}d\u{fffe}e\tf",
        ));
        let text = xml(&element);
        assert!(text.contains("<body>abcde\tf</body>"), "{text}");
        let mut presence = tern_wire::Presence::default();
        let t = tuple("t", Basic::Open, Availability::AWAY, Some("\u{7}ring"));
        presence.tuples.push(t);
        assert!(xml(&presence_out(presence)).contains("<status>ring</status>"));
        let error = out(&Outbound::Error {
            from: "alice@example.com".into(),
            to: "bob@xmpp.test".into(),
            id: Some("i\u{2}d".into()),
            message: true,
            code: ErrorCode::REFUSED,
            text: String::new(),
        });
        assert_eq!(error.attr("id"), Some("id"));
        assert!(!xml(&error).contains("<text"), "{}", xml(&error));
        assert_eq!(xml_text("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn a_from_outside_the_domain_is_never_built() {
        for from in [
            "alice@xmpp.test",
            "example.com",
            "not an address",
            "alice@sub.example.com",
        ] {
            let err = outbound(DOMAIN, &message(from, "bob@xmpp.test", b"m", "x"));
            assert_eq!(err, Err(Unsendable::ForeignFrom(from.into())), "{from}");
        }
        let stranger = parse("<message xmlns='jabber:component:accept' from='eve@xmpp.test'/>");
        assert!(!from_is_ours(DOMAIN, &stranger));
        let none = parse("<message xmlns='jabber:component:accept'/>");
        assert!(!from_is_ours(DOMAIN, &none));
        let domain = parse("<iq xmlns='jabber:component:accept' from='EXAMPLE.com'/>");
        assert!(from_is_ours(DOMAIN, &domain));
    }

    #[test]
    fn a_to_xmpp_cannot_carry_bounces_as_bad_address() {
        for to in [
            "bob@example.com",
            "xmpp.test",
            "a:b@xmpp.test",
            "a/b@xmpp.test",
        ] {
            let stanza = message("alice@example.com", to, b"m", "x");
            let err = outbound(DOMAIN, &stanza).expect_err(to);
            assert_eq!(err, Unsendable::BadTo(to.into()));
            match bounce(&stanza, &err) {
                Some(Inbound::Failed {
                    from,
                    to: sender,
                    code,
                    id,
                    ..
                }) => {
                    assert_eq!((from.as_str(), sender.as_str()), (to, "alice@example.com"));
                    assert_eq!((code, id), (ErrorCode::BAD_ADDRESS, b"m".to_vec()));
                }
                other => panic!("{other:?}"),
            }
        }
        let probe = Outbound::Subscription {
            from: "alice@example.com".into(),
            to: "xmpp.test".into(),
            kind: SubKind::Probe,
        };
        let err = outbound(DOMAIN, &probe).expect_err("domain-only");
        assert_eq!(bounce(&probe, &err), None);
    }

    #[test]
    fn a_stanza_the_stream_would_refuse_is_not_built() {
        let stanza = message(
            "alice@example.com",
            "bob@xmpp.test",
            b"m",
            &"&".repeat(120_000),
        );
        let err = outbound(DOMAIN, &stanza).expect_err("too large once escaped");
        assert!(
            matches!(err, Unsendable::TooLarge(n) if n > STANZA_MAX),
            "{err}"
        );
        match bounce(&stanza, &err) {
            Some(Inbound::Failed { code, .. }) => assert_eq!(code, ErrorCode::TOO_LARGE),
            other => panic!("{other:?}"),
        }
        let fits = message(
            "alice@example.com",
            "bob@xmpp.test",
            b"m",
            &"x".repeat(400_000),
        );
        assert!(outbound(DOMAIN, &fits).is_ok());
    }

    #[test]
    fn the_ping_goes_to_the_components_own_domain_and_comes_back_as_a_pong() {
        let id = format!("{PING_PREFIX}7-1");
        let element = ping(DOMAIN, &id).expect("a ping");
        assert!(from_is_ours(DOMAIN, &element));
        assert_eq!(element.attr("to"), Some(DOMAIN));
        assert_eq!(element.attr("type"), Some("get"));
        assert!(element.has_child("ping", ns::PING));
        // Routed back by the server as Prosody 0.12.3 does, with xml:lang stamped.
        let back = format!(
            "<iq xmlns='jabber:component:accept' to='example.com' from='example.com' \
             xml:lang='en' id='{id}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        match stanza(&back) {
            Received::Pong(pong) => assert_eq!(pong, id),
            other => panic!("{other:?}"),
        }
        // Answered by a server (no `from`).
        let answered = format!("<iq xmlns='jabber:component:accept' type='error' id='{id}'/>");
        assert!(matches!(stanza(&answered), Received::Pong(_)));
        // Nobody else can claim to answer it.
        let forged = format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{id}' \
             from='eve@xmpp.test' to='example.com'/>"
        );
        assert!(matches!(stanza(&forged), Received::Ignored(_)));
    }

    // ---- Inbound ----

    #[test]
    fn a_chat_message_reaches_the_hub_with_its_origin_id_and_receipt_request() {
        let xml = "<message xmlns='jabber:component:accept' type='chat' id='s1' \
                   from='Bob@XMPP.test/phone' to='Alice@example.com/x' xml:lang='en'>\
                   <body xml:lang='fr'>salut</body><body>hello</body>\
                   <origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
                   <request xmlns='urn:xmpp:receipts'/>\
                   <markable xmlns='urn:xmpp:chat-markers:0'/><x xmlns='urn:example:unknown'><y/></x>\
                   </message>";
        assert_eq!(
            inbound(stanza(xml)),
            Inbound::Message {
                from: "bob@xmpp.test".into(),
                to: "alice@example.com".into(),
                id: b"o1".to_vec(),
                body: "hello".into(),
                receipt: true,
                sender: "bob@xmpp.test/phone".into(),
            }
        );
    }

    #[test]
    fn bodies_are_chosen_by_language_and_ids_fall_back_to_the_stanza_id() {
        let message = |bodies: &str, id: &str| {
            let xml = format!(
                "<message xmlns='jabber:component:accept' {id} from='bob@xmpp.test' \
                 to='alice@example.com'>{bodies}</message>"
            );
            match inbound(stanza(&xml)) {
                Inbound::Message {
                    body, id, receipt, ..
                } => (body, id, receipt),
                other => panic!("{other:?}"),
            }
        };
        let untagged =
            "<body xml:lang='de'>hallo</body><body>plain</body><body xml:lang='en'>en</body>";
        assert_eq!(message(untagged, "id='a'").0, "plain");
        let english = "<body xml:lang='de'>hallo</body><body xml:lang='en'>hello</body>";
        assert_eq!(message(english, "id='a'").0, "hello");
        let first = "<body xml:lang='fr'>salut</body><body xml:lang='de'>hallo</body>";
        assert_eq!(message(first, "id='a'").0, "hallo");
        let (_, id, receipt) = message("<body>x</body>", "type='normal' id='~6869'");
        assert_eq!((id, receipt), (b"hi".to_vec(), false));
    }

    #[test]
    fn a_message_without_any_id_is_delivered_with_a_unique_one() {
        let xml = "<message xmlns='jabber:component:accept' from='bob@xmpp.test' \
                   to='alice@example.com'><body>x</body></message>";
        let id = |received| match inbound(received) {
            Inbound::Message { id, .. } => id,
            other => panic!("{other:?}"),
        };
        let (a, b) = (id(stanza(xml)), id(stanza(xml)));
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(message_id(&xmpp_id(&a)) == Some(a.clone()));
    }

    #[test]
    fn a_large_body_is_passed_to_the_hub_which_decides() {
        let body = "y".repeat(400 * 1024);
        let xml = format!(
            "<message xmlns='jabber:component:accept' id='big' from='bob@xmpp.test' \
             to='alice@example.com'><body>{body}</body></message>"
        );
        match inbound(stanza(&xml)) {
            Inbound::Message { body: got, .. } => assert_eq!(got.len(), body.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounces_become_failures_with_the_condition_as_a_tern_code() {
        let cases = [
            ("item-not-found", ErrorCode::UNKNOWN_USER),
            ("recipient-unavailable", ErrorCode::UNKNOWN_USER),
            ("gone", ErrorCode::UNKNOWN_USER),
            ("remote-server-not-found", ErrorCode::UNROUTABLE),
            ("remote-server-timeout", ErrorCode::UNROUTABLE),
            ("service-unavailable", ErrorCode::UNROUTABLE),
            ("forbidden", ErrorCode::REFUSED),
            ("not-allowed", ErrorCode::REFUSED),
            ("not-acceptable", ErrorCode::REFUSED),
            ("not-authorized", ErrorCode::REFUSED),
            ("policy-violation", ErrorCode::REFUSED),
            ("registration-required", ErrorCode::REFUSED),
            ("subscription-required", ErrorCode::REFUSED),
            ("resource-constraint", ErrorCode::RATE_LIMITED),
            ("jid-malformed", ErrorCode::BAD_ADDRESS),
            ("bad-request", ErrorCode::MALFORMED),
            ("internal-server-error", ErrorCode::UNROUTABLE),
            ("no-such-condition", ErrorCode::UNROUTABLE),
        ];
        for (name, code) in cases {
            let xml = format!(
                "<message xmlns='jabber:component:accept' type='error' id='~6869' \
                 from='bob@xmpp.test' to='alice@example.com/tern' xml:lang='en'>\
                 <error type='cancel'><{name} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Component unavailable</text>\
                 </error></message>"
            );
            assert_eq!(
                inbound(stanza(&xml)),
                Inbound::Failed {
                    from: "bob@xmpp.test".into(),
                    to: "alice@example.com".into(),
                    id: b"hi".to_vec(),
                    code,
                    text: format!("{name}: Component unavailable"),
                },
                "{name}"
            );
        }
        // A bounce whose <error/> says nothing recognisable is still a bounce.
        let vague = "<message xmlns='jabber:component:accept' type='error' id='e' \
                     from='bob@xmpp.test' to='alice@example.com'><error type='nonsense'/></message>";
        match inbound(stanza(vague)) {
            Inbound::Failed { code, text, .. } => {
                assert_eq!(
                    (code, text.as_str()),
                    (ErrorCode::UNROUTABLE, "undefined-condition")
                );
            }
            other => panic!("{other:?}"),
        }
        let no_id = "<message xmlns='jabber:component:accept' type='error' \
                     from='bob@xmpp.test' to='alice@example.com'/>";
        ignored(stanza(no_id));
    }

    #[test]
    fn what_the_hub_has_no_use_for_is_ignored_quietly() {
        let cases = [
            // A chat state: no body.
            "<message xmlns='jabber:component:accept' type='chat' from='bob@xmpp.test/p' \
             to='alice@example.com'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:component:accept' type='groupchat' from='room@muc.xmpp.test/bob' \
             to='alice@example.com'><body>x</body></message>",
            "<message xmlns='jabber:component:accept' type='headline' from='xmpp.test' \
             to='alice@example.com'><body>x</body></message>",
            // A server's announcement.
            "<message xmlns='jabber:component:accept' from='xmpp.test' \
             to='alice@example.com'><body>maintenance</body></message>",
            "<presence xmlns='jabber:component:accept' from='xmpp.test' to='alice@example.com'/>",
            "<presence xmlns='jabber:component:accept' from='bob@xmpp.test' to='example.com'/>",
            "<iq xmlns='jabber:component:accept' type='result' id='q' from='bob@xmpp.test' \
             to='alice@example.com'/>",
            "<handshake xmlns='jabber:component:accept'/>",
        ];
        for xml in cases {
            let ignored = ignored(stanza(xml));
            assert!(!ignored.suspicious, "{xml}: {ignored:?}");
        }
    }

    #[test]
    fn a_presence_error_makes_the_address_unreachable_for_the_hub() {
        let xml = "<presence xmlns='jabber:component:accept' type='error' from='bob@nowhere.test' \
                   to='alice@example.com'><error type='cancel'>\
                   <remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                   </error></presence>";
        assert_eq!(
            inbound(stanza(xml)),
            Inbound::Unreachable {
                from: "bob@nowhere.test".into(),
                to: "alice@example.com".into(),
                code: ErrorCode::UNROUTABLE,
            }
        );
    }

    #[test]
    fn a_receipt_goes_to_the_resource_that_asked() {
        let element = out(&Outbound::Receipt {
            from: "alice@example.com".into(),
            to: "bob@xmpp.test/phone".into(),
            id: b"m1".to_vec(),
        });
        assert_eq!(element.attr("to"), Some("bob@xmpp.test/phone"));
    }

    #[test]
    fn misaddressed_stanzas_are_dropped_without_answer() {
        let cases = [
            // Not the component's domain (an answer would have to come from it).
            "<message xmlns='jabber:component:accept' id='1' from='bob@xmpp.test' \
             to='alice@other.test'><body>x</body></message>",
            // From the component's own domain: a loop, or a forgery.
            "<message xmlns='jabber:component:accept' id='1' from='mallory@example.com' \
             to='alice@example.com'><body>x</body></message>",
            "<message xmlns='jabber:component:accept' id='1' \
             to='alice@example.com'><body>x</body></message>",
            "<message xmlns='jabber:component:accept' id='1' from='bob@xmpp.test'><body>x</body></message>",
            "<iq xmlns='jabber:component:accept' type='get' id='1' from='bob@xmpp.test' \
             to='other.test'><ping xmlns='urn:xmpp:ping'/></iq>",
            // Another namespace.
            "<message xmlns='jabber:client' id='1' from='bob@xmpp.test' \
             to='alice@example.com'><body>x</body></message>",
        ];
        for xml in cases {
            let ignored = ignored(stanza(xml));
            assert!(ignored.suspicious, "{xml}: {ignored:?}");
        }
    }

    #[test]
    fn messages_to_nobody_or_from_addresses_tern_cannot_hold_are_answered() {
        let domain = "<message xmlns='jabber:component:accept' id='d1' from='bob@xmpp.test/p' \
                      to='example.com'><body>x</body></message>";
        let answer = reply(stanza(domain));
        assert_eq!(condition(&answer), "service-unavailable");
        assert_eq!(answer.attr("to"), Some("bob@xmpp.test/p"));
        assert_eq!(answer.attr("from"), Some("example.com"));
        assert_eq!(answer.attr("id"), Some("d1"));
        // A local part JIDs allow (nodeprep) and tern does not (PRECIS refuses symbols).
        let stranger = "<message xmlns='jabber:component:accept' id='s1' \
                        from='bob\u{2603}@xmpp.test/p' to='alice@example.com'><body>x</body></message>";
        let answer = reply(stanza(stranger));
        assert_eq!(condition(&answer), "jid-malformed");
        assert_eq!(answer.attr("from"), Some("alice@example.com"));
        // A local part tern refuses, as recipient: nobody.
        let nobody = "<message xmlns='jabber:component:accept' id='n1' from='bob@xmpp.test/p' \
                      to='al\u{2603}ce@example.com'><body>x</body></message>";
        assert_eq!(condition(&reply(stanza(nobody))), "service-unavailable");
        // Presence and receipts between such addresses are dropped.
        let presence = "<presence xmlns='jabber:component:accept' from='bob\u{2603}@xmpp.test/p' \
                        to='alice@example.com'/>";
        ignored(stanza(presence));
    }

    #[test]
    fn presences_become_remote_tuples_or_subscription_steps() {
        let available = "<presence xmlns='jabber:component:accept' from='bob@xmpp.test/phone' \
                         to='alice@example.com' xml:lang='en'><show>xa</show>\
                         <status xml:lang='de'>weg</status><status>away for a while</status>\
                         <priority>-3</priority><c xmlns='http://jabber.org/protocol/caps' \
                         hash='sha-1' node='n' ver='v'/></presence>";
        assert_eq!(
            inbound(stanza(available)),
            Inbound::Presence {
                from: "bob@xmpp.test".into(),
                to: "alice@example.com".into(),
                tuple: Some(remote_tuple(
                    "phone",
                    federation::Show::Xa,
                    Some("away for a while"),
                    -3
                )),
                resource: "phone".into(),
            }
        );
        let gone = "<presence xmlns='jabber:component:accept' type='unavailable' \
                    from='bob@xmpp.test/phone' to='alice@example.com'/>";
        assert_eq!(
            inbound(stanza(gone)),
            Inbound::Presence {
                from: "bob@xmpp.test".into(),
                to: "alice@example.com".into(),
                tuple: None,
                resource: "phone".into(),
            }
        );
        for (type_, kind) in [
            ("subscribe", SubKind::Subscribe),
            ("subscribed", SubKind::Subscribed),
            ("unsubscribe", SubKind::Unsubscribe),
            ("unsubscribed", SubKind::Unsubscribed),
            ("probe", SubKind::Probe),
        ] {
            let xml = format!(
                "<presence xmlns='jabber:component:accept' type='{type_}' \
                 from='bob@xmpp.test/laptop' to='alice@example.com'/>"
            );
            assert_eq!(
                inbound(stanza(&xml)),
                Inbound::Subscription {
                    from: "bob@xmpp.test".into(),
                    to: "alice@example.com".into(),
                    kind,
                }
            );
        }
    }

    #[test]
    fn pings_and_disco_are_answered_and_other_requests_refused() {
        let ping = "<iq xmlns='jabber:component:accept' type='get' id='p1' \
                    from='bob@xmpp.test/phone' to='alice@example.com'><ping xmlns='urn:xmpp:ping'/></iq>";
        let answer = reply(stanza(ping));
        assert_eq!(answer.attr("type"), Some("result"));
        assert_eq!(answer.attr("id"), Some("p1"));
        assert_eq!(answer.attr("to"), Some("bob@xmpp.test/phone"));
        assert_eq!(answer.attr("from"), Some("alice@example.com"));
        assert_eq!(answer.children().count(), 0);
        // The server's own ping (s2s keepalive) is answered too.
        let server = "<iq xmlns='jabber:component:accept' type='get' id='p2' from='xmpp.test' \
                      to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>";
        assert_eq!(reply(stanza(server)).attr("type"), Some("result"));

        let disco = "<iq xmlns='jabber:component:accept' type='get' id='d1' from='bob@xmpp.test/p' \
                     to='example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
        let answer = reply(stanza(disco));
        assert_eq!(answer.attr("type"), Some("result"));
        let text = xml(&answer);
        for feature in [ns::DISCO_INFO, ns::PING, ns::RECEIPTS, ns::SID] {
            assert!(text.contains(&format!("var='{feature}'")), "{text}");
        }
        assert!(text.contains("category='component'"), "{text}");

        for request in [
            "<iq xmlns='jabber:component:accept' type='get' id='v1' from='bob@xmpp.test/p' \
             to='alice@example.com'><query xmlns='jabber:iq:version'/></iq>",
            "<iq xmlns='jabber:component:accept' type='set' id='v2' from='bob@xmpp.test/p' \
             to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:component:accept' type='get' id='v3' from='bob@xmpp.test/p' \
             to='example.com'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
        ] {
            let answer = reply(stanza(request));
            assert_eq!(answer.attr("type"), Some("error"), "{request}");
            assert_eq!(condition(&answer), "service-unavailable");
        }
    }

    #[test]
    fn stanzas_that_do_not_parse_get_bad_request_where_xmpp_allows_an_answer() {
        let cases = [
            (
                "<presence xmlns='jabber:component:accept' id='p1' from='bob@xmpp.test/py' \
                 to='alice@example.com'><show>sleeping</show></presence>",
                "presence",
            ),
            (
                "<presence xmlns='jabber:component:accept' from='bob@xmpp.test/py' \
                 to='alice@example.com'><priority>300</priority></presence>",
                "presence",
            ),
            (
                "<message xmlns='jabber:component:accept' type='bogus' id='c2' \
                 from='bob@xmpp.test/py' to='alice@example.com'><body>x</body></message>",
                "message",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='get' id='q1' \
                 from='bob@xmpp.test/py' to='alice@example.com'/>",
                "iq",
            ),
        ];
        for (xml, kind) in cases {
            let answer = reply(stanza(xml));
            assert_eq!(answer.name(), kind);
            assert_eq!(answer.attr("type"), Some("error"));
            assert_eq!(answer.attr("to"), Some("bob@xmpp.test/py"));
            assert_eq!(condition(&answer), "bad-request", "{xml}");
        }
        for xml in [
            // Never an error for an error, nor for an iq result.
            "<presence xmlns='jabber:component:accept' type='error' id='e' from='bob@xmpp.test' \
             to='alice@example.com'><show>bogus</show></presence>",
            "<iq xmlns='jabber:component:accept' type='result' id='r' from='bob@xmpp.test' \
             to='alice@example.com'><a xmlns='x'/><b xmlns='y'/></iq>",
            // Without id, an iq cannot be answered.
            "<iq xmlns='jabber:component:accept' type='get' from='bob@xmpp.test' \
             to='alice@example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
            // An invalid JID: nobody to answer.
            "<message xmlns='jabber:component:accept' from='@@@' to='alice@example.com'>\
             <body>x</body></message>",
        ] {
            ignored(stanza(xml));
        }
    }

    #[test]
    fn a_stream_error_ends_the_stream_with_its_condition() {
        let xml = "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
                   <conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                   <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced</text></stream:error>";
        match stanza(xml) {
            Received::StreamError(why) => assert_eq!(why, "conflict: Replaced"),
            other => panic!("{other:?}"),
        }
    }
}
