//! The client's configuration, [`ClientConfig`], and its validation into what a
//! connection attempt needs ([`Target`]): the normalised user, the server name, and the
//! quinn/rustls client configuration tuned for a chat client on a weak mobile link.
//!
//! Owns: the trust decision (only the certificates in `ca_pem`; no system or webpki roots),
//! ALPN, TLS 1.3 only with early data (0-RTT) enabled, and the QUIC transport parameters.
//! The rustls configuration is built once per [`crate::Client`] and shared by all its
//! connections: its session-ticket cache is what lets a reconnect send 0-RTT data. It may
//! not open sockets, resolve names at validation time (addresses can change between
//! reconnects), touch the state directory or log the token.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tern_wire::ClientMode;
use tern_wire::addr::{Address, normalise_domain};

use crate::error::ClientError;

/// Default interval of QUIC keep-alive pings.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(20);
/// Default QUIC idle timeout: the link counts as lost after this long without a packet.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time the QUIC handshake, the `Opened` and each response may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-stream receive window: a chat session needs little, and small windows keep a
/// slow link's buffers short.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Whole-connection receive window.
const CONNECTION_WINDOW: u32 = 512 * 1024;
/// Bytes the client may have in flight unacknowledged.
const SEND_WINDOW: u64 = 512 * 1024;

/// How to reach the gateway and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The gateway's UDP address, `host:port` (`[v6]:port` for IPv6 literals).
    pub gateway: String,
    /// The TLS server name (SNI) the gateway's certificate must match; `None` means the
    /// domain of `user`.
    pub server_name: Option<String>,
    /// PEM certificates to trust: the gateway's own certificate or its CA. Required: the
    /// client trusts nothing else.
    pub ca_pem: Option<Vec<u8>>,
    /// The principal, `local@domain`, in any equivalent spelling.
    pub user: String,
    /// The principal's access token. Never logged.
    pub token: String,
    /// Interval of QUIC keep-alive pings; zero turns them off. This setting wins over
    /// the interval the gateway suggests (`SessionInfo::suggested_keepalive_ms`).
    pub keepalive: Duration,
    /// The link counts as lost after this long without a packet from the gateway.
    pub idle_timeout: Duration,
    /// How long the handshake, the `Opened` and each response may take; also how long
    /// `send` waits for a receipt (the message stays queued after that).
    pub request_timeout: Duration,
    /// Whether to reconnect when the link drops unexpectedly.
    pub reconnect: bool,
    /// Whether this client takes the principal's inbox (messages and late receipts) as
    /// [`crate::Event`]s. A client that does not, such as a presence-only watcher or a
    /// one-shot sender, leaves inbox items on the gateway for a client that does.
    pub inbox: bool,
    /// A directory where this installation keeps its device id, what the application
    /// has taken from the inbox, unanswered messages, its last presence and QUIC
    /// address-validation tokens, so that a restarted process resumes its session (see
    /// the crate documentation for the guarantee). Created if missing; one client at a
    /// time, of one principal. `None`: a new random device per [`crate::Client`], and
    /// nothing survives the process. It also keeps the presence cache, so that a
    /// restarted process gets only what changed since.
    pub state_dir: Option<PathBuf>,
    /// The client's mode when it connects: [`ClientMode::ACTIVE`] (foreground: presence
    /// changes come within tens of milliseconds), [`ClientMode::INACTIVE`] (background:
    /// they wait minutes, or for something else to send) or [`ClientMode::SLEEPY`] (IoT:
    /// they wait until the device sends something). Change it with
    /// [`crate::Client::set_mode`].
    pub mode: ClientMode,
    /// Open the session anonymously, as `anonymous@<domain>` with no token, where the
    /// domain is `user`'s (`user` may also be the bare domain). The gateway accepts it
    /// only for a domain whose operator allows anonymous peers (else `Rejected`,
    /// `unauthorized`). An anonymous session may fetch, subscribe (its subscriptions end
    /// with the session: after a reconnect they are gone, reported as
    /// `Event::SubscriptionEnded`, and must be made again), list its own subscriptions
    /// and send messages (which arrive `from` `anonymous@<domain>`); anything else fails
    /// with `ClientError::Refused`. It has no inbox and keeps no state: `token` is not
    /// sent, `inbox` is treated as false, and a `state_dir` is refused.
    /// [`ClientConfig::anonymous()`] builds such a configuration.
    pub anonymous: bool,
}

impl ClientConfig {
    /// An anonymous configuration for a peer of `domain` (no token, no inbox), with the
    /// default timings and reconnection on; see the `anonymous` field.
    pub fn anonymous(gateway: String, domain: String, ca_pem: Vec<u8>) -> Self {
        Self {
            anonymous: true,
            inbox: false,
            ..Self::new(
                gateway,
                format!("{ANONYMOUS}@{domain}"),
                String::new(),
                ca_pem,
            )
        }
    }

    /// A configuration with the default timings and reconnection on.
    pub fn new(gateway: String, user: String, token: String, ca_pem: Vec<u8>) -> Self {
        Self {
            gateway,
            server_name: None,
            ca_pem: Some(ca_pem),
            user,
            token,
            keepalive: DEFAULT_KEEPALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            reconnect: true,
            inbox: true,
            state_dir: None,
            mode: ClientMode::ACTIVE,
            anonymous: false,
        }
    }

    /// Validates the configuration and builds the QUIC client configuration.
    pub(crate) fn prepare(self) -> Result<Target, ClientError> {
        let user = if self.anonymous {
            anonymous_user(&self.user)?
        } else {
            Address::parse(&self.user).map_err(|e| invalid(format!("user {:?}: {e}", self.user)))?
        };
        if self.anonymous && self.state_dir.is_some() {
            return Err(invalid(
                "an anonymous session keeps no state: no state directory".into(),
            ));
        }
        if !self.anonymous && self.token.is_empty() {
            return Err(invalid("the token is empty".into()));
        }
        check_gateway(&self.gateway)?;
        let server_name = self
            .server_name
            .clone()
            .unwrap_or_else(|| user.domain().to_string());
        ServerName::try_from(server_name.clone()).map_err(|_| {
            invalid(format!(
                "server name {server_name:?} is not a DNS name or IP"
            ))
        })?;
        if self.request_timeout.is_zero() {
            return Err(invalid("the request timeout is zero".into()));
        }
        let pem = self
            .ca_pem
            .as_deref()
            .ok_or_else(|| invalid("no CA certificate (ca_pem) given to trust".into()))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(tls_config(pem)?));
        quic.transport_config(Arc::new(self.transport()?));
        Ok(Target {
            gateway: self.gateway,
            server_name,
            quic,
            user: user.into_string(),
            // An anonymous peer authenticates with an empty token, and takes no inbox.
            token: if self.anonymous {
                String::new()
            } else {
                self.token
            },
            request_timeout: self.request_timeout,
            reconnect: self.reconnect,
            inbox: self.inbox && !self.anonymous,
            keepalive: self.keepalive,
            state_dir: self.state_dir,
            mode: self.mode,
        })
    }

    fn transport(&self) -> Result<TransportConfig, ClientError> {
        if self.idle_timeout.is_zero() {
            return Err(invalid("the idle timeout is zero".into()));
        }
        if self.keepalive >= self.idle_timeout {
            return Err(invalid(format!(
                "the keep-alive interval ({:?}) must be shorter than the idle timeout ({:?})",
                self.keepalive, self.idle_timeout
            )));
        }
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| invalid("the idle timeout is too long".into()))?;
        let keepalive = (!self.keepalive.is_zero()).then_some(self.keepalive);
        let mut t = TransportConfig::default();
        t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
            .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
            .send_window(SEND_WINDOW)
            // The gateway pushes on the client's stream; it opens none of its own.
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(keepalive)
            .max_idle_timeout(Some(idle));
        Ok(t)
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("gateway", &self.gateway)
            .field("server_name", &self.server_name)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("keepalive", &self.keepalive)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .field("inbox", &self.inbox)
            .field("state_dir", &self.state_dir)
            .field("mode", &self.mode)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// A validated configuration: everything a connection attempt needs.
pub(crate) struct Target {
    /// `host:port`, resolved anew at every attempt.
    pub(crate) gateway: String,
    pub(crate) server_name: String,
    pub(crate) quic: quinn::ClientConfig,
    /// The normalised principal.
    pub(crate) user: String,
    pub(crate) token: String,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) inbox: bool,
    /// The keep-alive interval (zero: none); the session sends a frame at least this
    /// often on a quiet link, and QUIC PINGs remain as the backstop.
    pub(crate) keepalive: Duration,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) mode: ClientMode,
}

/// The local part of an anonymous peer's address (the gateway never provisions it).
pub(crate) const ANONYMOUS: &str = "anonymous";

/// `anonymous@<domain>`, the domain taken from an address or given bare.
fn anonymous_user(user: &str) -> Result<Address, ClientError> {
    let domain = match user.rsplit_once('@') {
        Some((_, domain)) => domain,
        None => user,
    };
    let domain = normalise_domain(domain)
        .map_err(|e| invalid(format!("anonymous user's domain {domain:?}: {e}")))?;
    Address::parse(&format!("{ANONYMOUS}@{domain}"))
        .map_err(|e| invalid(format!("anonymous user of {domain:?}: {e}")))
}

fn invalid(why: String) -> ClientError {
    ClientError::InvalidArgument(why)
}

/// `host:port` with a numeric port and a non-empty host.
fn check_gateway(gateway: &str) -> Result<(), ClientError> {
    let bad = || invalid(format!("gateway {gateway:?} is not host:port"));
    let (host, port) = gateway.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// rustls with the ring provider, TLS 1.3 only (QUIC requires it), trusting exactly the
/// certificates in `pem`, offering the tern ALPN, keeping session tickets (rustls'
/// default in-memory cache) and sending early data with them.
fn tls_config(pem: &[u8]) -> Result<QuicClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| invalid(format!("ca_pem: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("ca_pem: {e}")))?;
        found += 1;
    }
    if found == 0 {
        return Err(invalid("ca_pem holds no PEM certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    // Only replay-safe frames are written before the handshake is confirmed (see
    // `session`), so early data is safe to offer.
    tls.enable_early_data = true;
    QuicClientConfig::try_from(tls).map_err(|e| ClientError::Tls(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        let cert = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
        ClientConfig::new(
            "127.0.0.1:4433".into(),
            "Alice@Example.COM".into(),
            "token".into(),
            cert.cert.pem().into_bytes(),
        )
    }

    #[test]
    fn prepares_with_normalised_user_and_domain_as_server_name() {
        let target = config().prepare().unwrap();
        assert_eq!(target.user, "alice@example.com");
        assert_eq!(target.server_name, "example.com");
        let target = ClientConfig {
            server_name: Some("gw.example.net".into()),
            ..config()
        }
        .prepare()
        .unwrap();
        assert_eq!(target.server_name, "gw.example.net");
    }

    #[test]
    fn refuses_bad_configurations() {
        let bad = [
            ClientConfig {
                user: "alice".into(),
                ..config()
            },
            ClientConfig {
                token: String::new(),
                ..config()
            },
            ClientConfig {
                gateway: "127.0.0.1".into(),
                ..config()
            },
            ClientConfig {
                gateway: ":4433".into(),
                ..config()
            },
            ClientConfig {
                ca_pem: None,
                ..config()
            },
            ClientConfig {
                ca_pem: Some(b"not pem".to_vec()),
                ..config()
            },
            ClientConfig {
                keepalive: Duration::from_secs(60),
                ..config()
            },
            ClientConfig {
                idle_timeout: Duration::ZERO,
                ..config()
            },
            ClientConfig {
                request_timeout: Duration::ZERO,
                ..config()
            },
            ClientConfig {
                server_name: Some("not a name!".into()),
                ..config()
            },
        ];
        for config in bad {
            let shown = format!("{config:?}");
            match config.prepare() {
                Err(ClientError::InvalidArgument(_)) => {}
                Err(other) => panic!("{shown}: unexpected {other}"),
                Ok(_) => panic!("{shown} should be refused"),
            }
        }
    }

    #[test]
    fn keepalive_zero_turns_pings_off() {
        let config = ClientConfig {
            keepalive: Duration::ZERO,
            ..config()
        };
        assert!(config.prepare().is_ok());
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!(
            "{:?}",
            ClientConfig {
                token: "s3cr3t".into(),
                ..config()
            }
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn anonymous_sessions_have_no_token_no_inbox_and_no_state() {
        let pem = || {
            let cert = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
            cert.cert.pem().into_bytes()
        };
        let anonymous =
            ClientConfig::anonymous("127.0.0.1:4433".into(), "Example.COM".into(), pem());
        assert!(anonymous.anonymous && !anonymous.inbox);
        let target = anonymous.prepare().unwrap();
        assert_eq!(target.user, "anonymous@example.com");
        assert_eq!(target.server_name, "example.com");
        assert!(target.token.is_empty());
        assert!(!target.inbox);

        // The flag on an ordinary configuration: its user's domain, its token unsent,
        // no inbox whatever `inbox` says.
        let target = ClientConfig {
            anonymous: true,
            ..config()
        }
        .prepare()
        .unwrap();
        assert_eq!(target.user, "anonymous@example.com");
        assert!(target.token.is_empty(), "the token is not sent");
        assert!(!target.inbox);
        // A bare domain will do.
        let target = ClientConfig {
            anonymous: true,
            user: "example.org".into(),
            token: String::new(),
            ..config()
        }
        .prepare()
        .unwrap();
        assert_eq!(target.user, "anonymous@example.org");

        for bad in [
            ClientConfig {
                anonymous: true,
                state_dir: Some("/tmp/tern-anonymous".into()),
                ..config()
            },
            ClientConfig {
                anonymous: true,
                user: "bob@not a domain".into(),
                ..config()
            },
        ] {
            assert!(
                matches!(bad.prepare(), Err(ClientError::InvalidArgument(_))),
                "refused"
            );
        }
    }

    #[test]
    fn ipv6_gateways_are_accepted() {
        let config = ClientConfig {
            gateway: "[::1]:4433".into(),
            ..config()
        };
        assert!(config.prepare().is_ok());
    }
}
