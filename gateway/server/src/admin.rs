//! `tern-gateway admin`: domain administrators, from the operator's side.
//!
//! Owns two things:
//!
//! * **Local commands** on the database in the data directory, like `user add` (they
//!   work while the gateway runs): creating or rotating a domain's administrator token
//!   ([`create_token`]: 256 random bits shown once, only their hash stored) and reading
//!   the durable audit log ([`read_log`]).
//! * **The administrator client**: one QUIC session to a running gateway
//!   ([`AdminSession`]), opened with `Up::Operate` (the domain and its administrator
//!   token) instead of a user's `Hello`, then `Up::Admin` requests about principals of
//!   that domain, and the printing of their answers ([`render`]).
//!
//! It decides nothing about what an administrator may do: the gateway checks the token,
//! applies each request and writes the audit log. Rules travel as JSON here
//! (`serde_json` over `tern_wire::Rules`' own serde form) and as postcard on the wire.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tern_gateway::config::GatewayConfig;
use tern_gateway::sqlite::{DbError, SqliteStore};
use tern_gateway::users;
use tern_gateway_core::auth::hash_token;
use tern_gateway_core::{AdminRecord, StoreError};
use tern_wire::addr::{Address, normalise_domain};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::{
    AdminOp, Basic, Down, ErrorCode, Operate, Presence, PresenceDoc, Rules, SubState, Up, VERSION,
};

/// The `tracing` target of administrator actions, here and in the gateway.
pub(crate) const LOG_TARGET: &str = "tern::admin";

/// How long the handshake, the `Welcome` and each answer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the goodbye may take before the connection is dropped anyway.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// The QUIC idle timeout of an administrator's connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an administrator command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The domain is not a valid domain name.
    #[error("domain {input:?}: {reason}")]
    Domain {
        /// What was given.
        input: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The domain is not served by this configuration.
    #[error(
        "{0} is not a configured domain (add it to `domains` in the configuration file, or pass the same --config as the gateway)"
    )]
    NotServed(String),
    /// An address is not a valid `local@domain`.
    #[error(transparent)]
    Address(#[from] users::UsersError),
    /// A principal outside the administered domain.
    #[error("{user} is not in the administered domain {domain}")]
    ForeignUser {
        /// The principal.
        user: String,
        /// The domain.
        domain: String,
    },
    /// A command-line value is missing or unusable.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// A rules file is not valid JSON for `tern_wire::Rules`.
    #[error("rules {origin}: {source}")]
    Rules {
        /// Where the rules came from.
        origin: String,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// A presence file is not valid JSON for `tern_wire::Presence`.
    #[error("presence {origin}: {source}")]
    Presence {
        /// Where the presence came from.
        origin: String,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The CA file holds no usable certificate, or TLS refused the configuration.
    #[error("tls: {0}")]
    Tls(String),
    /// The gateway could not be reached.
    #[error("cannot connect to {gateway}: {reason}")]
    Connect {
        /// `host:port`.
        gateway: String,
        /// Why.
        reason: String,
    },
    /// The link failed or the gateway sent something it should not have.
    #[error("session: {0}")]
    Link(String),
    /// The gateway answered the request with `Fail`.
    #[error("{code}: {text}")]
    Failed {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// The gateway closed the session (a refused token is `unauthorized`).
    #[error("the gateway closed the session: {code}: {text}")]
    Closed {
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        text: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A domain name as the gateway normalises it.
pub(crate) fn normal_domain(input: &str) -> Result<String, AdminError> {
    normalise_domain(input).map_err(|e| AdminError::Domain {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// Whether the token was new or replaced an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenChange {
    /// The domain had no administrator token.
    Created,
    /// The domain's earlier token no longer works.
    Rotated,
}

/// Creates or replaces the administrator token of a configured domain and returns it
/// (shown once: only its hash is stored) with what happened. The change goes to the
/// audit log too, with no principal.
pub(crate) fn create_token(
    config: &GatewayConfig,
    domain: &str,
) -> Result<(String, String, TokenChange), AdminError> {
    let domain = normal_domain(domain)?;
    if !config.domain_names().contains(&domain.as_str()) {
        return Err(AdminError::NotServed(domain));
    }
    let token = users::generate_token();
    let hash = hash_token(&token);
    let mut store = SqliteStore::open(&config.data_dir)?;
    let change = store.write(|s| -> Result<TokenChange, StoreError> {
        let change = match s.admin_token(&domain)? {
            Some(_) => TokenChange::Rotated,
            None => TokenChange::Created,
        };
        s.put_admin_token(&domain, &hash)?;
        s.log_admin(&AdminRecord {
            at: unix_ms(),
            domain: domain.clone(),
            user: String::new(),
            action: match change {
                TokenChange::Created => "token created".into(),
                TokenChange::Rotated => "token rotated".into(),
            },
        })?;
        Ok(change)
    })?;
    tracing::info!(target: LOG_TARGET, %domain, ?change, "administrator token set");
    Ok((domain, token, change))
}

/// Now, Unix milliseconds (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The last `limit` entries of a domain's audit log, oldest first. The domain need not
/// be configured any more: its log outlives it.
pub(crate) fn read_log(
    data_dir: &Path,
    domain: &str,
    limit: usize,
) -> Result<Vec<AdminRecord>, AdminError> {
    let domain = normal_domain(domain)?;
    let store = SqliteStore::open(data_dir)?;
    Ok(store.read(|s| s.admin_log(&domain, limit))?)
}

/// One audit-log entry as a line: UTC time, principal (`-` for none), action.
pub(crate) fn log_line(record: &AdminRecord) -> String {
    let user = if record.user.is_empty() {
        "-"
    } else {
        &record.user
    };
    format!("{} {user} {}", utc(record.at), record.action)
}

/// Unix milliseconds as an RFC 3339 UTC time, `2025-01-31T23:59:59.999Z`.
fn utc(ms: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Parses rules written as JSON (the serde form of `tern_wire::Rules`); `origin` names
/// the source in errors.
pub(crate) fn parse_rules(json: &str, origin: &str) -> Result<Rules, AdminError> {
    serde_json::from_str(json).map_err(|source| AdminError::Rules {
        origin: origin.to_owned(),
        source,
    })
}

/// Rules as the JSON [`parse_rules`] reads, indented for people.
pub(crate) fn rules_json(rules: &Rules) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string_pretty(rules).unwrap_or_default()
}

/// Reads a rules file (`-`: standard input).
pub(crate) fn read_rules(path: &Path) -> Result<Rules, AdminError> {
    let (text, shown) = read_input(path)?;
    parse_rules(&text, &shown)
}

/// Reads a presence file (`-`: standard input): the JSON form of `tern_wire::Presence`
/// (`{"tuples": [...], "card": [...]}`).
pub(crate) fn read_presence(path: &Path) -> Result<Presence, AdminError> {
    let (text, shown) = read_input(path)?;
    serde_json::from_str(&text).map_err(|source| AdminError::Presence {
        origin: shown,
        source,
    })
}

/// A file's text (`-`: standard input), with its name for errors.
fn read_input(path: &Path) -> Result<(String, String), AdminError> {
    let shown = path.display().to_string();
    let read_error = |source| AdminError::Read {
        path: shown.clone(),
        source,
    };
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(read_error)?
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    Ok((text, shown))
}

/// A principal of the administered domain, normalised; anything else is refused before
/// connecting.
pub(crate) fn principal_in(domain: &str, input: &str) -> Result<Address, AdminError> {
    let user = users::normalise(input)?;
    if user.domain() != domain {
        return Err(AdminError::ForeignUser {
            user: user.into_string(),
            domain: domain.to_owned(),
        });
    }
    Ok(user)
}

/// What an administrator asks, with how its answer is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Who watches the principal.
    Watchers,
    /// Its subscriptions (`incoming`: those to its presentity).
    Subscriptions {
        /// Which way.
        incoming: bool,
    },
    /// Its rules, printed as JSON.
    GetRules,
    /// Replaces its rules.
    SetRules(Rules),
    /// Its presence.
    GetPresence,
    /// Replaces its presence, as its own publish would.
    SetPresence(Presence),
    /// Ends one watcher's subscription to it.
    Cancel(String),
}

impl Request {
    /// The operation on the wire.
    pub(crate) fn op(&self) -> AdminOp {
        match self {
            Self::Watchers => AdminOp::Watchers,
            Self::Subscriptions { incoming } => AdminOp::Subscriptions {
                incoming: *incoming,
            },
            Self::GetRules => AdminOp::GetRules,
            Self::SetRules(rules) => AdminOp::SetRules(rules.clone()),
            Self::GetPresence => AdminOp::GetPresence,
            Self::SetPresence(presence) => AdminOp::SetPresence(presence.clone()),
            Self::Cancel(watcher) => AdminOp::Cancel(watcher.clone()),
        }
    }
}

/// The lines to print for the gateway's answer to `request` about `user`: one per entry
/// (none for a bare `Ok`). A `Fail`, a `Close` or an answer of the wrong kind is an
/// error.
pub(crate) fn render(request: &Request, user: &str, answer: Down) -> Result<String, AdminError> {
    let unexpected = |answer: &Down| {
        AdminError::Link(format!(
            "unexpected answer to {request:?}: {}",
            down_name(answer)
        ))
    };
    let mut out = String::new();
    match (request, answer) {
        (_, Down::Fail { code, text, .. }) => return Err(AdminError::Failed { code, text }),
        (_, Down::Close { code, text }) => return Err(AdminError::Closed { code, text }),
        (
            Request::Watchers,
            Down::Watchers {
                subscribers,
                fetchers,
                ..
            },
        ) => {
            for who in subscribers {
                let _ = writeln!(out, "subscriber {who}");
            }
            for f in fetchers {
                let _ = writeln!(
                    out,
                    "fetcher {} last {}s ago, {} fetches",
                    f.who, f.age, f.count
                );
            }
        }
        (Request::Subscriptions { .. }, Down::Subscriptions { list, .. }) => {
            for sub in list {
                let _ = writeln!(out, "{} {}", sub.who, state_name(sub.state));
            }
        }
        (Request::GetRules, Down::Rules { rules, .. }) => {
            out = rules_json(&rules);
            out.push('\n');
        }
        (Request::GetPresence, Down::Versioned { version, doc, .. }) => {
            out = presence_lines(user, version, &doc);
        }
        (Request::SetRules(_) | Request::SetPresence(_) | Request::Cancel(_), Down::Ok { .. }) => {}
        (_, other) => return Err(unexpected(&other)),
    }
    Ok(out)
}

fn state_name(state: SubState) -> &'static str {
    match state {
        SubState::Active => "active",
        SubState::Pending => "pending",
        SubState::Denied => "denied",
        SubState::Cancelled => "cancelled",
    }
}

/// A presence document: a heading line (principal, version, when it was published),
/// then one line per tuple and per card field.
fn presence_lines(user: &str, version: u64, doc: &PresenceDoc) -> String {
    let mut out = format!("{user} version {version}");
    // 0: a document the principal never published (the gateway's placeholder).
    if doc.updated != 0 {
        let _ = write!(out, " updated {}", utc(doc.updated));
    }
    out.push('\n');
    for t in &doc.presence.tuples {
        let _ = write!(
            out,
            "tuple {} {}",
            t.id,
            if t.basic == Basic::Open {
                "open"
            } else {
                "closed"
            }
        );
        if let Some(a) = t.availability {
            match a.name() {
                Some(name) => {
                    let _ = write!(out, " {name}");
                }
                None => {
                    let _ = write!(out, " availability-{}", a.0);
                }
            }
        }
        if let Some(contact) = &t.contact {
            let _ = write!(out, " contact={contact}");
        }
        if let Some(at) = t.at {
            let _ = write!(out, " at={}", utc(at));
        }
        if !t.ext.is_empty() {
            let _ = write!(out, " ext={}", t.ext.len());
        }
        if let Some(note) = &t.note {
            let _ = write!(out, " note={note:?}");
        }
        out.push('\n');
    }
    for field in &doc.presence.card {
        match field.kind.name() {
            Some(kind) => {
                let _ = writeln!(out, "card {kind} {:?}", field.value);
            }
            None => {
                let _ = writeln!(out, "card kind-{} {:?}", field.kind.0, field.value);
            }
        }
    }
    out
}

/// Where the administrator's session goes and how it authenticates.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// `host:port`.
    pub(crate) gateway: String,
    /// PEM certificates to trust: the gateway's own or its CA's.
    pub(crate) ca_pem: Vec<u8>,
    /// The TLS name the certificate must match.
    pub(crate) server_name: String,
    /// The administered domain, normalised.
    pub(crate) domain: String,
    /// The domain's administrator token. Never logged.
    pub(crate) token: String,
}

/// An open administrator session: one QUIC connection, one bidirectional stream.
pub(crate) struct AdminSession {
    endpoint: Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuf,
    next_req: u32,
}

impl AdminSession {
    /// Connects, sends `Operate` and waits for `Welcome`.
    pub(crate) async fn open(remote: &Remote) -> Result<Self, AdminError> {
        let connect_error = |reason: String| AdminError::Connect {
            gateway: remote.gateway.clone(),
            reason,
        };
        let config = client_config(&remote.ca_pem)?;
        ServerName::try_from(remote.server_name.clone()).map_err(|_| {
            AdminError::Usage(format!(
                "server name {:?} is not a DNS name or IP address",
                remote.server_name
            ))
        })?;
        let addr = tokio::net::lookup_host(&remote.gateway)
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .next()
            .ok_or_else(|| connect_error("no address".into()))?;
        let bind: SocketAddr = if addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint =
            Endpoint::client(bind).map_err(|e| connect_error(format!("UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(config, addr, &remote.server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let handshake = async {
            let conn = connecting.await?;
            let streams = conn.open_bi().await?;
            Ok::<_, quinn::ConnectionError>((conn, streams))
        };
        let (conn, (send, recv)) = tokio::time::timeout(REQUEST_TIMEOUT, handshake)
            .await
            .map_err(|_| connect_error(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        tracing::debug!(%addr, server_name = %remote.server_name, "connected");
        let mut session = Self {
            endpoint,
            conn,
            send,
            recv,
            frames: FrameBuf::new(tern_wire::limits::FRAME_MAX),
            next_req: 1,
        };
        session
            .write(&Up::Operate(Operate {
                version: VERSION,
                domain: remote.domain.clone(),
                token: remote.token.clone(),
            }))
            .await?;
        match session.read().await? {
            Down::Welcome(_) => Ok(session),
            Down::Close { code, text } => {
                session.close().await;
                Err(AdminError::Closed { code, text })
            }
            other => {
                session.close().await;
                Err(AdminError::Link(format!(
                    "expected Welcome, got {}",
                    down_name(&other)
                )))
            }
        }
    }

    /// Sends one request about `user` and returns the gateway's answer to it (a `Fail`
    /// or a `Close` too: see [`render`]).
    pub(crate) async fn request(&mut self, user: &str, op: AdminOp) -> Result<Down, AdminError> {
        let req = self.next_req;
        self.next_req += 1;
        self.write(&Up::Admin {
            req,
            user: user.to_owned(),
            op,
        })
        .await?;
        loop {
            let frame = self.read().await?;
            if frame.req() == Some(req) || matches!(frame, Down::Close { .. }) {
                return Ok(frame);
            }
            tracing::debug!(frame = down_name(&frame), "ignored a frame");
        }
    }

    /// Says goodbye and closes the connection, waiting a moment for the gateway's
    /// `Close` and for the CONNECTION_CLOSE to leave.
    pub(crate) async fn close(mut self) {
        let goodbye = async {
            if self.write(&Up::Bye).await.is_ok() {
                let _ = self.send.finish();
                while let Ok(frame) = self.read().await {
                    if matches!(frame, Down::Close { .. }) {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_DRAIN, goodbye).await;
        let code = ErrorCode::GOODBYE;
        self.conn.close(VarInt::from(code.0), b"goodbye");
        let _ = tokio::time::timeout(CLOSE_DRAIN, self.endpoint.wait_idle()).await;
    }

    async fn write(&mut self, frame: &Up) -> Result<(), AdminError> {
        self.send
            .write_all(&codec::encode(frame))
            .await
            .map_err(|e| AdminError::Link(format!("writing: {e}")))
    }

    /// The next frame, within [`REQUEST_TIMEOUT`].
    async fn read(&mut self) -> Result<Down, AdminError> {
        let read = async {
            loop {
                match self.frames.next_frame::<Down>() {
                    Ok(Some(frame)) => return Ok(frame),
                    Ok(None) => {}
                    Err(e) => return Err(AdminError::Link(format!("bad frame: {e}"))),
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => self.frames.extend(&chunk.bytes),
                    Ok(None) => {
                        return Err(AdminError::Link("the gateway ended the session".into()));
                    }
                    Err(e) => return Err(AdminError::Link(e.to_string())),
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| AdminError::Link(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }
}

/// quinn over rustls (ring), TLS 1.3 only, trusting exactly the certificates in `pem`,
/// offering the tern ALPN; no 0-RTT (administrator requests are not replay-safe).
fn client_config(pem: &[u8]) -> Result<quinn::ClientConfig, AdminError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| AdminError::Tls(format!("CA file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| AdminError::Tls(format!("CA file: {e}")))?;
    }
    if roots.is_empty() {
        return Err(AdminError::Tls(
            "the CA file holds no PEM certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AdminError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| AdminError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
        .map_err(|e| AdminError::Usage(format!("idle timeout: {e}")))?;
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Opens a session, runs one request about `user` and returns what to print.
pub(crate) async fn run(
    remote: &Remote,
    user: &str,
    request: &Request,
) -> Result<String, AdminError> {
    let mut session = AdminSession::open(remote).await?;
    let answer = session.request(user, request.op()).await;
    session.close().await;
    render(request, user, answer?)
}

/// A frame's variant name, for errors and logs (never its contents).
fn down_name(frame: &Down) -> String {
    let debug = format!("{frame:?}");
    let end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    debug[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use tern_wire::{
        Availability, CardField, CardKind, Decision, Delegate, Delivery, Fetcher, InboxRule,
        Presence, PresenceRule, SubInfo, Tuple, View, When, Who,
    };

    use super::*;

    /// Rules as an administrator writes them by hand.
    const RULES_JSON: &str = r#"{
        "presence": [
            { "who": { "User": "bob@example.com" }, "decision": "Allow",
              "view": { "tuples": ["phone"], "hide": 2, "status": 2 },
              "when": { "days": 31, "from": 540, "to": 1020, "offset": 60 } },
            { "who": { "Domain": "example.com" }, "decision": "Ask", "view": null, "when": null },
            { "who": "Anonymous", "decision": "Polite", "view": null, "when": null }
        ],
        "inbox": [ { "who": "Anyone", "delivery": "Accept" },
                   { "who": "Anonymous", "delivery": "Discard" } ],
        "delegates": [ { "who": "assistant@example.com", "rights": 3 } ]
    }"#;

    fn expected_rules() -> Rules {
        Rules {
            presence: vec![
                PresenceRule {
                    who: Who::User("bob@example.com".into()),
                    decision: Decision::Allow,
                    view: Some(View {
                        tuples: vec!["phone".into()],
                        hide: View::NOTE,
                        status: Some(Availability::BUSY),
                    }),
                    when: Some(When {
                        days: 0x1f,
                        from: 9 * 60,
                        to: 17 * 60,
                        offset: 60,
                    }),
                },
                PresenceRule {
                    who: Who::Domain("example.com".into()),
                    decision: Decision::Ask,
                    view: None,
                    when: None,
                },
                PresenceRule {
                    who: Who::Anonymous,
                    decision: Decision::Polite,
                    view: None,
                    when: None,
                },
            ],
            inbox: vec![
                InboxRule {
                    who: Who::Anyone,
                    delivery: Delivery::Accept,
                },
                InboxRule {
                    who: Who::Anonymous,
                    delivery: Delivery::Discard,
                },
            ],
            delegates: vec![Delegate {
                who: "assistant@example.com".into(),
                rights: Delegate::PUBLISH | Delegate::READ,
            }],
        }
    }

    #[test]
    fn rules_parse_from_json_and_print_back_to_the_same() {
        let rules = parse_rules(RULES_JSON, "test").unwrap();
        assert_eq!(rules, expected_rules());
        let printed = rules_json(&rules);
        assert_eq!(parse_rules(&printed, "printed").unwrap(), rules);
        assert!(printed.lines().count() > 1, "indented for people");
        // `view` and `when` may be left out: they are options.
        let short = r#"{ "presence": [{ "who": "Anyone", "decision": "Deny" }], "inbox": [], "delegates": [] }"#;
        assert_eq!(
            parse_rules(short, "short").unwrap().presence[0],
            PresenceRule {
                who: Who::Anyone,
                decision: Decision::Deny,
                view: None,
                when: None,
            }
        );
        // No rules at all.
        let empty = r#"{ "presence": [], "inbox": [], "delegates": [] }"#;
        assert_eq!(parse_rules(empty, "empty").unwrap(), Rules::default());
    }

    #[test]
    fn bad_rules_json_names_the_file_and_the_problem() {
        for (bad, says) in [
            ("{", "EOF"),
            (
                r#"{ "presense": [], "inbox": [], "delegates": [] }"#,
                "presence",
            ),
            (
                r#"{ "presence": [{ "who": "Everyone", "decision": "Allow", "view": null, "when": null }], "inbox": [], "delegates": [] }"#,
                "Everyone",
            ),
            (
                r#"{ "presence": [], "inbox": [{ "who": "Anyone", "delivery": "Bounce" }], "delegates": [] }"#,
                "Bounce",
            ),
            (
                r#"{ "presence": [], "inbox": [], "delegates": [{ "who": "a@b", "rights": 300 }] }"#,
                "300",
            ),
        ] {
            let err = parse_rules(bad, "rules.json").unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with("rules rules.json: "), "{shown}");
            assert!(shown.contains(says), "{bad}: {shown}");
        }
    }

    #[test]
    fn read_rules_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        std::fs::write(&path, RULES_JSON).unwrap();
        assert_eq!(read_rules(&path).unwrap(), expected_rules());
        let missing = read_rules(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(missing, AdminError::Read { .. }), "{missing}");
    }

    #[test]
    fn watchers_and_subscriptions_print_one_line_each() {
        let watchers = Down::Watchers {
            req: 1,
            subscribers: vec!["bob@x".into(), "carol@x".into()],
            fetchers: vec![Fetcher {
                who: "dave@x".into(),
                age: 12,
                count: 3,
            }],
        };
        assert_eq!(
            render(&Request::Watchers, "alice@x", watchers).unwrap(),
            "subscriber bob@x\nsubscriber carol@x\nfetcher dave@x last 12s ago, 3 fetches\n"
        );
        let subs = Down::Subscriptions {
            req: 2,
            list: vec![
                SubInfo {
                    who: "anonymous@x".into(),
                    state: SubState::Pending,
                },
                SubInfo {
                    who: "bob@x".into(),
                    state: SubState::Active,
                },
            ],
        };
        let request = Request::Subscriptions { incoming: true };
        assert_eq!(
            render(&request, "alice@x", subs).unwrap(),
            "anonymous@x pending\nbob@x active\n"
        );
        let none = Down::Watchers {
            req: 1,
            subscribers: vec![],
            fetchers: vec![],
        };
        assert_eq!(render(&Request::Watchers, "alice@x", none).unwrap(), "");
    }

    #[test]
    fn rules_print_as_json_and_changes_print_nothing() {
        let answer = Down::Rules {
            req: 3,
            rules: expected_rules(),
        };
        let printed = render(&Request::GetRules, "alice@x", answer).unwrap();
        assert!(printed.ends_with("}\n"));
        assert_eq!(parse_rules(&printed, "out").unwrap(), expected_rules());
        for request in [
            Request::SetRules(expected_rules()),
            Request::Cancel("bob@x".into()),
        ] {
            assert_eq!(
                render(&request, "alice@x", Down::Ok { req: 4 }).unwrap(),
                ""
            );
        }
    }

    #[test]
    fn presence_prints_its_version_then_a_line_per_tuple() {
        let doc = PresenceDoc {
            presentity: "alice@x".into(),
            updated: 1_700_000_000_123,
            presence: Presence {
                tuples: vec![
                    Tuple {
                        id: "phone".into(),
                        basic: Basic::Open,
                        availability: Some(Availability::AWAY),
                        contact: Some("tern:alice@x".into()),
                        note: Some("at lunch".into()),
                        at: None,
                        ext: vec![],
                    },
                    Tuple {
                        id: "desk".into(),
                        basic: Basic::Closed,
                        availability: Some(Availability(77)),
                        contact: None,
                        note: None,
                        at: Some(0),
                        ext: vec![tern_wire::Ext::wake(5)],
                    },
                ],
                card: vec![CardField {
                    kind: CardKind::TEL,
                    value: "+1 555 0100".into(),
                }],
            },
        };
        let answer = Down::Versioned {
            req: 5,
            version: 7,
            doc,
        };
        assert_eq!(
            render(&Request::GetPresence, "alice@x", answer).unwrap(),
            "alice@x version 7 updated 2023-11-14T22:13:20.123Z\n\
             tuple phone open away contact=tern:alice@x note=\"at lunch\"\n\
             tuple desk closed availability-77 at=1970-01-01T00:00:00.000Z ext=1\n\
             card tel \"+1 555 0100\"\n"
        );
        let never = Down::Versioned {
            req: 6,
            version: 0,
            doc: PresenceDoc {
                presentity: "bob@x".into(),
                updated: 0,
                presence: Presence::default(),
            },
        };
        assert_eq!(
            render(&Request::GetPresence, "bob@x", never).unwrap(),
            "bob@x version 0\n"
        );
    }

    #[test]
    fn fail_close_and_wrong_answers_are_errors_with_code_and_text() {
        let fail = Down::Fail {
            req: 1,
            code: ErrorCode::UNKNOWN_USER,
            text: "no such principal".into(),
        };
        let err = render(&Request::Watchers, "alice@x", fail).unwrap_err();
        assert!(matches!(err, AdminError::Failed { code, .. } if code == ErrorCode::UNKNOWN_USER));
        assert_eq!(err.to_string(), "unknown_user: no such principal");
        let close = Down::Close {
            code: ErrorCode::UNAUTHORIZED,
            text: "bad token".into(),
        };
        let err = render(&Request::GetRules, "alice@x", close).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the gateway closed the session: unauthorized: bad token"
        );
        let wrong = render(&Request::GetRules, "alice@x", Down::Ok { req: 1 }).unwrap_err();
        assert!(wrong.to_string().contains("unexpected answer"), "{wrong}");
        assert!(wrong.to_string().contains("Ok"), "{wrong}");
        assert_eq!(down_name(&Down::Pending { req: 1 }), "Pending");
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(utc(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        let record = AdminRecord {
            at: 1_700_000_000_123,
            domain: "x".into(),
            user: "alice@x".into(),
            action: "cancel bob@x".into(),
        };
        assert_eq!(
            log_line(&record),
            "2023-11-14T22:13:20.123Z alice@x cancel bob@x"
        );
        let token = AdminRecord {
            user: String::new(),
            action: "token rotated".into(),
            ..record
        };
        assert_eq!(log_line(&token), "2023-11-14T22:13:20.123Z - token rotated");
    }

    fn config_in(dir: &Path) -> GatewayConfig {
        let mut config =
            GatewayConfig::from_toml(r#"domains = ["example.com", "b.example"]"#).unwrap();
        config.data_dir = dir.to_owned();
        config
    }

    #[test]
    fn create_token_stores_only_the_hash_rotates_and_is_logged() {
        use tern_gateway_core::auth::verify_token;

        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let (domain, first, change) = create_token(&config, "Example.COM").unwrap();
        assert_eq!(
            (domain.as_str(), change),
            ("example.com", TokenChange::Created)
        );
        assert_eq!(first.len(), 64);
        let (_, second, change) = create_token(&config, "example.com").unwrap();
        assert_eq!(change, TokenChange::Rotated);
        assert_ne!(first, second);
        let store = SqliteStore::open(dir.path()).unwrap();
        let hash = store
            .read(|s| s.admin_token("example.com"))
            .unwrap()
            .unwrap();
        assert!(verify_token(&second, &hash));
        assert!(!verify_token(&first, &hash), "the old token is gone");
        assert_eq!(store.read(|s| s.admin_token("b.example")).unwrap(), None);
        let log = read_log(dir.path(), "EXAMPLE.com", 10).unwrap();
        let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["token created", "token rotated"]);
        assert!(log.iter().all(|r| r.user.is_empty()));
        assert_eq!(read_log(dir.path(), "b.example", 10).unwrap(), vec![]);
        assert_eq!(read_log(dir.path(), "example.com", 1).unwrap().len(), 1);
    }

    #[test]
    fn create_token_refuses_domains_not_configured() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let err = create_token(&config, "other.example").unwrap_err();
        assert!(
            matches!(err, AdminError::NotServed(ref d) if d == "other.example"),
            "{err}"
        );
        assert!(err.to_string().contains("not a configured domain"));
        assert!(matches!(
            create_token(&config, "not a domain!"),
            Err(AdminError::Domain { .. })
        ));
        assert!(matches!(
            read_log(dir.path(), "", 10),
            Err(AdminError::Domain { .. })
        ));
    }

    #[test]
    fn principals_must_be_in_the_administered_domain() {
        assert_eq!(
            principal_in("example.com", "Alice@Example.com")
                .unwrap()
                .as_str(),
            "alice@example.com"
        );
        assert!(matches!(
            principal_in("example.com", "alice@other.example"),
            Err(AdminError::ForeignUser { .. })
        ));
        assert!(matches!(
            principal_in("example.com", "alice"),
            Err(AdminError::Address(_))
        ));
    }

    #[test]
    fn the_ca_file_must_hold_a_certificate() {
        assert!(matches!(client_config(b"not pem"), Err(AdminError::Tls(_))));
        let cert = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
        client_config(cert.cert.pem().as_bytes()).unwrap();
    }

    /// A stand-in gateway on loopback: accepts one connection, checks the `Operate`
    /// frame, and answers each frame with what `answer` makes of it (`None`: close).
    async fn fake_gateway(
        dir: &Path,
        answer: impl Fn(Up) -> Option<Down> + Send + 'static,
    ) -> (SocketAddr, Vec<u8>, tokio::task::JoinHandle<Vec<Up>>) {
        let identity = tern_gateway::tls::load_or_generate(dir, &["example.com"]).unwrap();
        let server =
            tern_gateway::tls::server_config(&identity, &GatewayConfig::default()).unwrap();
        let endpoint =
            Endpoint::server(server, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let conn = endpoint.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut frames = FrameBuf::new(tern_wire::limits::FRAME_MAX);
            let mut seen = Vec::new();
            'session: loop {
                while let Some(up) = frames.next_frame::<Up>().unwrap() {
                    seen.push(up.clone());
                    let Some(down) = answer(up) else {
                        break 'session;
                    };
                    send.write_all(&codec::encode(&down)).await.unwrap();
                    if matches!(down, Down::Close { .. }) {
                        let _ = send.finish();
                        break 'session;
                    }
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => frames.extend(&chunk.bytes),
                    _ => break,
                }
            }
            let _ = conn.closed().await;
            seen
        });
        (addr, identity.cert_pem, task)
    }

    fn remote(addr: SocketAddr, ca_pem: Vec<u8>, token: &str) -> Remote {
        Remote {
            gateway: addr.to_string(),
            ca_pem,
            server_name: "example.com".into(),
            domain: "example.com".into(),
            token: token.into(),
        }
    }

    fn welcome() -> Down {
        Down::Welcome(tern_wire::frame::Welcome {
            version: VERSION,
            user: "example.com".into(),
            frame_max: 65536,
            body_max: 16384,
            time: 0,
        })
    }

    #[tokio::test]
    async fn a_session_operates_then_asks_and_says_goodbye() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca, gateway) = fake_gateway(dir.path(), |up| match up {
            Up::Operate(op) if op.token == "secret" => Some(welcome()),
            Up::Admin {
                req,
                op: AdminOp::GetRules,
                ..
            } => Some(Down::Rules {
                req,
                rules: Rules::default(),
            }),
            Up::Bye => Some(Down::Close {
                code: ErrorCode::GOODBYE,
                text: "goodbye".into(),
            }),
            _ => None,
        })
        .await;
        let out = run(
            &remote(addr, ca, "secret"),
            "alice@example.com",
            &Request::GetRules,
        )
        .await
        .unwrap();
        assert_eq!(parse_rules(&out, "out").unwrap(), Rules::default());
        let seen = gateway.await.unwrap();
        assert_eq!(
            seen,
            vec![
                Up::Operate(Operate {
                    version: VERSION,
                    domain: "example.com".into(),
                    token: "secret".into(),
                }),
                Up::Admin {
                    req: 1,
                    user: "alice@example.com".into(),
                    op: AdminOp::GetRules,
                },
                Up::Bye,
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_a_close_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca, gateway) = fake_gateway(dir.path(), |_| {
            Some(Down::Close {
                code: ErrorCode::UNAUTHORIZED,
                text: "wrong administrator token".into(),
            })
        })
        .await;
        let err = run(
            &remote(addr, ca, "wrong"),
            "alice@example.com",
            &Request::Watchers,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, AdminError::Closed { code, .. } if code == ErrorCode::UNAUTHORIZED),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("unauthorized: wrong administrator token")
        );
        assert_eq!(gateway.await.unwrap().len(), 1, "nothing after Operate");
    }
}
