//! The gateway's configuration: a TOML file over embedded defaults, then command-line
//! overrides ([`Overrides`]), then checks ([`GatewayConfig::validate`]).
//!
//! Owns the file format and every default, and turns them into what the other modules
//! need ([`GatewayConfig::hub_config`] for the core; windows and timeouts for the QUIC
//! endpoint). It reads one file and touches nothing else.
//!
//! ```toml
//! listen = "0.0.0.0:4433"
//! data_dir = "/var/lib/tern"
//! domains = ["example.com", { name = "iot.example.com", presence = true, im = false }]
//! # or, one table per domain:
//! # [[domains]]
//! # name = "public.example.com"
//! # anonymous = true
//!
//! [limits]
//! frame_max = 65536
//!
//! [timeouts]
//! idle_timeout_ms = 60000
//!
//! [presence]
//! flush_inactive_ms = 120000
//!
//! [xmpp]                          # join the XMPP network (docs/federation.md)
//! component = "127.0.0.1:5347"    # the XMPP server's XEP-0114 component port
//! secret = "…"                    # the component's shared secret
//! domain = "example.com"          # which served domain; default the first
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_gateway_core::{CacheSizes, DomainConfig, FlushPolicy, HubConfig, RateLimits};
use tern_wire::addr::normalise_domain;
use tern_wire::limits::{DEFAULT_BODY_MAX, DEFAULT_FRAME_MAX, FRAME_MAX};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are refused too).
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of its range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the gateway is configured with. Every field has a default, so an empty
/// file (or none) is a working loopback gateway for `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// UDP address to listen on. Default `127.0.0.1:4433`: loopback until the operator
    /// says otherwise.
    pub listen: SocketAddr,
    /// Where the database, certificate and key live. Default `./tern-data`.
    pub data_dir: PathBuf,
    /// Domains served, each with its services. Default `["localhost"]`.
    pub domains: Vec<DomainEntry>,
    /// Size and queue limits.
    pub limits: Limits,
    /// Timers.
    pub timeouts: Timeouts,
    /// QUIC flow-control windows.
    pub quic: QuicTuning,
    /// Presence batching and caches.
    pub presence: PresenceTuning,
    /// The XMPP component connection, when the gateway joins the XMPP network.
    pub xmpp: Option<XmppConfig>,
}

/// How the gateway joins the XMPP network as an XEP-0114 component (docs/federation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The XMPP server's component listener, `host:port` (Prosody's default port is
    /// 5347); a host name is resolved at each connection attempt.
    pub component: String,
    /// The shared secret the XMPP server has for the component.
    pub secret: String,
    /// The served domain that is the component (its name is the component's name on
    /// the XMPP server). Default: the first domain.
    #[serde(default)]
    pub domain: Option<String>,
}

/// A served domain: a bare name (both services on) or a table.
///
/// Read by hand rather than as an untagged enum, so that a mistake in a table (a
/// misspelt key, a wrong type) is reported as such instead of as "data did not match
/// any variant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DomainEntry {
    /// `"example.com"`: presence and instant messages.
    Name(String),
    /// `{ name = "example.com", presence = true, im = false, anonymous = false }`, or a
    /// `[[domains]]` table with the same keys.
    Table(DomainTable),
}

impl<'de> Deserialize<'de> for DomainEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;

        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = DomainEntry;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a domain name or a table with a `name`")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<DomainEntry, E> {
                Ok(DomainEntry::Name(name.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DomainEntry, A::Error> {
                DomainTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DomainEntry::Table)
            }
        }

        deserializer.deserialize_any(Entry)
    }
}

/// A served domain written as a table; a misspelt key is refused, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainTable {
    /// The domain name, any spelling; normalised to its A-label form.
    pub name: String,
    /// Whether the presence service runs (default true).
    #[serde(default = "yes")]
    pub presence: bool,
    /// Whether the instant-message service runs (default true).
    #[serde(default = "yes")]
    pub im: bool,
    /// Rate limits of the domain's principals (defaults: the core's).
    #[serde(default)]
    pub rates: RateTable,
    /// Whether unauthenticated (anonymous) sessions may open in the domain (default
    /// false). They act as `anonymous@<domain>`, and each principal's rules still decide
    /// what they may see and send (by default nothing).
    #[serde(default)]
    pub anonymous: bool,
    /// Rate limits per source address, over all sessions of the domain from one address
    /// (absent: none; carrier NATs put many phones behind one address). Keys as in
    /// `rates`; a key left out takes the per-principal default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_rates: Option<RateTable>,
}

/// `[domains.rates]`: how many requests of each kind one principal may make per minute
/// on average, with bursts of up to `burst`; 0 turns a limit off. Over a limit a request
/// is answered `Limited` with the time to wait, and nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateTable {
    /// `Send` requests (instant messages).
    pub messages_per_minute: u32,
    /// `Subscribe` requests.
    pub subscriptions_per_minute: u32,
    /// `Fetch` and `FetchIf` requests.
    pub fetches_per_minute: u32,
    /// The largest burst of each kind (at least 1).
    pub burst: u32,
}

impl Default for RateTable {
    fn default() -> Self {
        let core = RateLimits::default();
        Self {
            messages_per_minute: core.messages_per_minute,
            subscriptions_per_minute: core.subscriptions_per_minute,
            fetches_per_minute: core.fetches_per_minute,
            burst: core.burst,
        }
    }
}

impl RateTable {
    fn to_limits(self) -> RateLimits {
        RateLimits {
            messages_per_minute: self.messages_per_minute,
            subscriptions_per_minute: self.subscriptions_per_minute,
            fetches_per_minute: self.fetches_per_minute,
            burst: self.burst.max(1),
        }
    }
}

fn yes() -> bool {
    true
}

/// Size and queue limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame body accepted, bytes; announced in `Welcome`. Default 64 KiB.
    pub frame_max: u32,
    /// Largest message body accepted, bytes; announced in `Welcome`. Default 16 KiB.
    pub body_max: u32,
    /// Most inbox items pushed to one session and not yet acknowledged. Default 256.
    pub inbox_window: u64,
    /// Most presentities one principal may subscribe to. Default 500: RFC 2779 2.2.4
    /// asks for hundreds, and every subscription costs a notification at each login.
    pub max_subscriptions: usize,
    /// Frames queued for one connection's writer, besides presence notifications. A
    /// connection whose queue is full is closed with `too_slow`: it is not reading, and
    /// holding more for it would let one stalled phone grow the gateway's memory. Nothing
    /// is lost: messages stay in the inbox until acknowledged and are delivered again
    /// after reconnecting. Presence notifications do not count: a connection keeps at
    /// most the newest unwritten one per watched presentity, so a slow link misses
    /// intermediate states instead of being closed. Default 1024; it must hold a login's
    /// burst: `inbox_window` + `max_subscriptions` + 64.
    pub outbound_queue: usize,
    /// Encoded bytes of the frames counted by `outbound_queue` that one connection may
    /// have queued; over it, the connection is closed with `too_slow` too. Default 8 MiB;
    /// it must hold a full delivery window of the largest messages and one largest frame:
    /// `inbox_window` × (`body_max` + 2048) + `frame_max`.
    pub outbound_bytes: usize,
    /// New connections one source IP address may open per minute, on average; 0: no
    /// limit. Over it, the connection is refused before its handshake (QUIC
    /// `CONNECTION_REFUSED`: no crypto is spent on it) and the client backs off. Default
    /// 0 (off): a carrier-grade NAT puts thousands of phones behind one address, and
    /// after an outage they all reconnect at once; principals are limited anyway.
    pub connections_per_minute: u32,
    /// The most new connections one address may open at once. Default 100.
    pub connection_burst: u32,
}

/// Timers, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// QUIC `max_idle_timeout`: a connection that carries no packet for this long is
    /// gone, and its principal goes out of contact (presence CLOSED). Default 60 s.
    ///
    /// It trades detection speed against battery and radio: a phone must send something
    /// (a QUIC PING) more often than this to stay connected, and each wake-up of a
    /// cellular radio costs energy for seconds afterwards. Carrier NATs commonly forget
    /// idle UDP bindings after 30 s to a few minutes, so clients ping every ~25 s anyway
    /// to stay reachable; 60 s tolerates one lost ping on a weak link and still reports
    /// a vanished client within a minute. QUIC uses the smaller of both sides' values.
    pub idle_timeout_ms: u64,
    /// The gateway's own QUIC keep-alive interval, if any. Default none: keeping the
    /// NAT binding open is the client's job, since only it knows its network and its
    /// battery; the interval clients should use is below `idle_timeout_ms` (about 25 s
    /// with the default). Set this for clients that cannot send keep-alives.
    pub keepalive_ms: Option<u64>,
    /// A connection that has not sent a complete first frame (its `Hello`) this long
    /// after the handshake is closed with `too_slow`. Default 10 s: enough for a
    /// handshake-to-first-frame on a bad 2G link, short enough that idle sockets do not
    /// pile up.
    pub hello_timeout_ms: u64,
    /// How long a send request waits for an online recipient's acknowledgement before it
    /// is answered `Stored`. Default 5 s.
    pub delivery_wait_ms: u64,
    /// How long a device's session is kept after its link is lost (no goodbye), so that
    /// it resumes instead of starting over. It is also presence's grace period: the
    /// presentity stays in contact meanwhile, and a shorter outage shows watchers
    /// nothing. Default 30 s: enough for a tunnel, a lift or a handover, short enough
    /// that a phone that is really gone shows CLOSED within `idle_timeout_ms` + 30 s.
    pub resume_window_ms: u64,
    /// The keep-alive interval suggested to clients in `Opened`. Default 20 s, below
    /// common carrier NAT timeouts (30 s and up) and well below `idle_timeout_ms`.
    pub client_keepalive_ms: u64,
    /// A device not seen for this long no longer holds inbox items back from deletion.
    /// Default 30 days.
    pub device_retention_ms: u64,
    /// How long a fetch of a principal's presence is listed in its watcher information.
    /// Default 24 hours.
    pub watcher_window_ms: u64,
}

/// QUIC flow-control windows, bytes. Chat traffic is small, so the windows are small
/// too: they bound what one connection can make the gateway buffer. The session is one
/// bidirectional stream (the gateway allows exactly one, and no unidirectional ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicTuning {
    /// Receive window of the session stream. Default 64 KiB (one maximal frame).
    pub stream_receive_window: u32,
    /// Receive window of the whole connection. Default 256 KiB.
    pub receive_window: u32,
    /// Unacknowledged bytes the gateway keeps in flight per connection. Default 256 KiB.
    pub send_window: u64,
}

/// How presence changes are batched to synchronised sessions, and how much the gateway
/// keeps in memory to send them small. Durations in milliseconds, like `[timeouts]`.
///
/// The flush delays trade latency against wake-ups: a change waits up to the delay of the
/// session's mode (declared by the client) so that the changes meanwhile go in one batch,
/// one radio wake-up. A message or any answer to the client flushes at once, whatever
/// the mode. The caches trade the gateway's memory against bytes on the wire and store
/// reads: a missing earlier version means a whole document instead of a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceTuning {
    /// Active (foreground) sessions: the first pending change waits at most this long.
    /// Default 50 ms: changes arriving together go in one batch, and a person does not
    /// notice the delay. 0 sends every change at once.
    pub flush_active_ms: u64,
    /// Inactive (background) sessions. Default 3 min. Above 0.
    pub flush_inactive_ms: u64,
    /// Sleepy (IoT) sessions. Default 1 h. Above 0.
    pub flush_sleepy_ms: u64,
    /// An inactive or sleepy session's batch is flushed at once when this many
    /// presentities have pending changes. Default 64. At least 1.
    pub batch_max: usize,
    /// Most batches sent to a session and not yet acknowledged; further changes wait and
    /// coalesce. Default 2. At least 1.
    pub batch_window: u32,
    /// Current documents kept in memory (a miss reads the store). Default 100 000.
    pub cache_documents: usize,
    /// Earlier versions of documents kept as bases of deltas (a miss sends a document
    /// whole). Default 100 000.
    pub cache_versions: usize,
    /// Computed deltas kept, shared by watchers holding the same base. Default 20 000.
    pub cache_deltas: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("./tern-data"),
            domains: vec![DomainEntry::Name("localhost".into())],
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            quic: QuicTuning::default(),
            presence: PresenceTuning::default(),
            xmpp: None,
        }
    }
}

/// Room a Send frame needs besides its body: tags, request id, a 32-byte message id,
/// two addresses of up to 255 bytes and a content type of up to 255 bytes, with their
/// length prefixes.
const SEND_OVERHEAD_MAX: u64 = 1024;
/// Frames a login may queue besides the delivery window and the subscriptions.
const LOGIN_MARGIN: u64 = 64;
/// Room a `Deliver` frame needs besides its body: tags, sequence number, times, a 32-byte
/// message id, three addresses and a content type, with their length prefixes.
const DELIVER_OVERHEAD_MAX: u64 = 2048;

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_max: DEFAULT_FRAME_MAX,
            body_max: DEFAULT_BODY_MAX,
            inbox_window: HubConfig::default().inbox_window,
            max_subscriptions: HubConfig::default().max_subscriptions,
            outbound_queue: 1024,
            outbound_bytes: 8 << 20,
            connections_per_minute: 0,
            connection_burst: 100,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle_timeout_ms: 60_000,
            keepalive_ms: None,
            hello_timeout_ms: 10_000,
            delivery_wait_ms: HubConfig::default().delivery_wait_ms,
            resume_window_ms: HubConfig::default().resume_window_ms,
            client_keepalive_ms: HubConfig::default().keepalive_hint_ms,
            device_retention_ms: HubConfig::default().device_retention_ms,
            watcher_window_ms: HubConfig::default().watcher_window_ms,
        }
    }
}

impl Default for QuicTuning {
    fn default() -> Self {
        Self {
            stream_receive_window: 64 * 1024,
            receive_window: 256 * 1024,
            send_window: 256 * 1024,
        }
    }
}

impl Default for PresenceTuning {
    fn default() -> Self {
        let flush = FlushPolicy::default();
        let caches = CacheSizes::default();
        Self {
            flush_active_ms: flush.active_ms,
            flush_inactive_ms: flush.inactive_ms,
            flush_sleepy_ms: flush.sleepy_ms,
            batch_max: flush.batch_max,
            batch_window: flush.window,
            cache_documents: caches.documents,
            cache_versions: caches.versions,
            cache_deltas: caches.deltas,
        }
    }
}

/// Values from the command line, applied over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// When not empty, replaces `domains` (each with both services on).
    pub domains: Vec<String>,
    /// With `xmpp_secret`, sets `xmpp.component` (the XMPP server's component port).
    pub xmpp_component: Option<String>,
    /// Sets `xmpp.secret`.
    pub xmpp_secret: Option<String>,
}

impl GatewayConfig {
    /// Reads a TOML file; missing keys take their defaults. The result is validated.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses TOML text; missing keys take their defaults. The result is validated.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line values, then validates again.
    pub fn apply(&mut self, overrides: Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(dir) = overrides.data_dir {
            self.data_dir = dir;
        }
        if !overrides.domains.is_empty() {
            self.domains = overrides
                .domains
                .into_iter()
                .map(DomainEntry::Name)
                .collect();
        }
        match (overrides.xmpp_component, overrides.xmpp_secret) {
            (None, None) => {}
            (component, secret) => {
                let old = self.xmpp.take();
                let component = component.or_else(|| old.as_ref().map(|x| x.component.clone()));
                let secret = secret.or_else(|| old.as_ref().map(|x| x.secret.clone()));
                let (Some(component), Some(secret)) = (component, secret) else {
                    return Err(ConfigError::Invalid(
                        "--xmpp-component and --xmpp-secret go together (or with an [xmpp] table)"
                            .into(),
                    ));
                };
                let domain = old.and_then(|x| x.domain);
                self.xmpp = Some(XmppConfig {
                    component,
                    secret,
                    domain,
                });
            }
        }
        self.validate()
    }

    /// The served domain joined to the XMPP network, if any (after [`Self::validate`]).
    pub fn xmpp_domain(&self) -> Option<&str> {
        let xmpp = self.xmpp.as_ref()?;
        Some(
            xmpp.domain
                .as_deref()
                .unwrap_or_else(|| self.domains[0].name()),
        )
    }

    /// Normalises the domain names (IDNA, lower case, no trailing dot) and checks every
    /// value's range.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        if self.domains.is_empty() {
            return invalid("at least one domain must be served".into());
        }
        let mut seen = Vec::new();
        for entry in &mut self.domains {
            let name = entry.name_mut();
            let normal = normalise_domain(name)
                .map_err(|e| ConfigError::Invalid(format!("domain {name:?}: {e}")))?;
            if seen.contains(&normal) {
                return invalid(format!("domain {normal} is listed twice"));
            }
            seen.push(normal.clone());
            *name = normal;
        }
        let l = &self.limits;
        if l.frame_max == 0 || l.frame_max as usize > FRAME_MAX {
            return invalid(format!("limits.frame_max must be 1..={FRAME_MAX}"));
        }
        // A Send frame carries, besides the body, an id, addresses and a content type:
        // leave room for them, so a body at the limit fails one message (too_large)
        // instead of closing the session with an oversize frame.
        if l.body_max == 0 || u64::from(l.body_max) + SEND_OVERHEAD_MAX > u64::from(l.frame_max) {
            return invalid(format!(
                "limits.body_max must be above 0 and at least {SEND_OVERHEAD_MAX} bytes below frame_max"
            ));
        }
        if l.inbox_window == 0 {
            return invalid("limits.inbox_window must be at least 1".into());
        }
        if l.max_subscriptions == 0 {
            return invalid("limits.max_subscriptions must be at least 1".into());
        }
        // At login a session is sent one Notify per subscription and a window of inbox
        // items at once; the queue must hold all of it with room to spare.
        let login_burst = l.inbox_window + l.max_subscriptions as u64 + LOGIN_MARGIN;
        if (l.outbound_queue as u64) < login_burst {
            return invalid(format!(
                "limits.outbound_queue must be at least inbox_window + max_subscriptions + {LOGIN_MARGIN} ({login_burst})"
            ));
        }
        // A full window of the largest messages is in the queue at once at login; one
        // more largest frame must fit beside it.
        let window_bytes = l
            .inbox_window
            .saturating_mul(u64::from(l.body_max) + DELIVER_OVERHEAD_MAX)
            .saturating_add(u64::from(l.frame_max));
        if (l.outbound_bytes as u64) < window_bytes {
            return invalid(format!(
                "limits.outbound_bytes must be at least inbox_window * (body_max + {DELIVER_OVERHEAD_MAX}) + frame_max ({window_bytes})"
            ));
        }
        let t = &self.timeouts;
        // QUIC encodes the idle timeout as a varint of milliseconds (< 2^62).
        if t.idle_timeout_ms == 0 || t.idle_timeout_ms >= 1 << 62 {
            return invalid("timeouts.idle_timeout_ms must be above 0 and below 2^62".into());
        }
        if t.keepalive_ms
            .is_some_and(|k| k == 0 || k >= t.idle_timeout_ms)
        {
            return invalid(
                "timeouts.keepalive_ms must be above 0 and below idle_timeout_ms".into(),
            );
        }
        // Clients follow the suggestion; a keep-alive as long as the idle timeout would
        // let every quiet connection die.
        if t.client_keepalive_ms == 0 || t.client_keepalive_ms >= t.idle_timeout_ms {
            return invalid(
                "timeouts.client_keepalive_ms must be above 0 and below idle_timeout_ms".into(),
            );
        }
        if t.hello_timeout_ms == 0 || t.delivery_wait_ms == 0 {
            return invalid(
                "timeouts.hello_timeout_ms and delivery_wait_ms must be above 0".into(),
            );
        }
        let q = &self.quic;
        if q.stream_receive_window == 0 || q.receive_window < q.stream_receive_window {
            return invalid(
                "quic.receive_window must be at least stream_receive_window, which must be above 0"
                    .into(),
            );
        }
        if q.send_window == 0 {
            return invalid("quic.send_window must be above 0".into());
        }
        let p = &self.presence;
        // Batching is what the background modes are for; 0 in active mode is fine (every
        // change at once).
        if p.flush_inactive_ms == 0 || p.flush_sleepy_ms == 0 {
            return invalid(
                "presence.flush_inactive_ms and flush_sleepy_ms must be above 0".into(),
            );
        }
        // Each mode is sleepier than the one before: it waits at least as long.
        if p.flush_active_ms > p.flush_inactive_ms || p.flush_inactive_ms > p.flush_sleepy_ms {
            return invalid(
                "presence.flush_active_ms must be at most flush_inactive_ms, and flush_inactive_ms at most flush_sleepy_ms"
                    .into(),
            );
        }
        if p.batch_max == 0 || p.batch_window == 0 {
            return invalid("presence.batch_max and batch_window must be at least 1".into());
        }
        if p.cache_documents == 0 || p.cache_versions == 0 || p.cache_deltas == 0 {
            return invalid(
                "presence.cache_documents, cache_versions and cache_deltas must be at least 1"
                    .into(),
            );
        }
        if let Some(x) = &mut self.xmpp {
            if x.component
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return invalid(format!(
                    "xmpp.component must be host:port, not {:?}",
                    x.component
                ));
            }
            if x.secret.is_empty() {
                return invalid("xmpp.secret must not be empty".into());
            }
            if let Some(name) = &mut x.domain {
                let normal = normalise_domain(name)
                    .map_err(|e| ConfigError::Invalid(format!("xmpp.domain {name:?}: {e}")))?;
                if !seen.contains(&normal) {
                    return invalid(format!("xmpp.domain {normal} is not a served domain"));
                }
                *name = normal;
            }
        }
        Ok(())
    }

    /// The served domains as the core sees them.
    pub fn domain_configs(&self) -> Vec<DomainConfig> {
        self.domains.iter().map(DomainEntry::to_config).collect()
    }

    /// The served domain names, normalised (after [`Self::validate`]).
    pub fn domain_names(&self) -> Vec<&str> {
        self.domains.iter().map(DomainEntry::name).collect()
    }

    /// The core's configuration.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            domains: self.domain_configs(),
            frame_max: self.limits.frame_max,
            body_max: self.limits.body_max,
            delivery_wait_ms: self.timeouts.delivery_wait_ms,
            resume_window_ms: self.timeouts.resume_window_ms,
            keepalive_hint_ms: self.timeouts.client_keepalive_ms,
            device_retention_ms: self.timeouts.device_retention_ms,
            watcher_window_ms: self.timeouts.watcher_window_ms,
            inbox_window: self.limits.inbox_window,
            max_subscriptions: self.limits.max_subscriptions,
            flush: self.presence.flush_policy(),
            caches: self.presence.cache_sizes(),
            federation: self.xmpp_domain().map(String::from),
        }
    }

    /// [`Timeouts::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.idle_timeout_ms)
    }

    /// [`Timeouts::hello_timeout_ms`] as a duration.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.hello_timeout_ms)
    }
}

impl PresenceTuning {
    /// The flush delays and batch limits as the core sees them.
    pub fn flush_policy(&self) -> FlushPolicy {
        FlushPolicy {
            active_ms: self.flush_active_ms,
            inactive_ms: self.flush_inactive_ms,
            sleepy_ms: self.flush_sleepy_ms,
            batch_max: self.batch_max,
            window: self.batch_window,
        }
    }

    /// The cache sizes as the core sees them.
    pub fn cache_sizes(&self) -> CacheSizes {
        CacheSizes {
            documents: self.cache_documents,
            versions: self.cache_versions,
            deltas: self.cache_deltas,
        }
    }
}

impl DomainEntry {
    /// The domain name as written (normalised once validated).
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) | Self::Table(DomainTable { name, .. }) => name,
        }
    }

    fn name_mut(&mut self) -> &mut String {
        match self {
            Self::Name(name) | Self::Table(DomainTable { name, .. }) => name,
        }
    }

    /// The entry as the core's domain configuration.
    pub fn to_config(&self) -> DomainConfig {
        match self {
            Self::Name(name) => DomainConfig::new(name.clone()),
            Self::Table(DomainTable {
                name,
                presence,
                im,
                rates,
                anonymous,
                address_rates,
            }) => DomainConfig {
                name: name.clone(),
                presence: *presence,
                im: *im,
                rates: rates.to_limits(),
                address_rates: address_rates.map_or(RateLimits::OFF, RateTable::to_limits),
                anonymous: *anonymous,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let config = GatewayConfig::from_toml("").unwrap();
        assert_eq!(config, GatewayConfig::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:4433");
        assert_eq!(config.data_dir, PathBuf::from("./tern-data"));
        assert_eq!(config.domain_names(), ["localhost"]);
        assert_eq!(config.hub_config(), HubConfig::default());
        assert_eq!(config.timeouts.idle_timeout_ms, 60_000);
        assert_eq!(config.quic.stream_receive_window, 64 * 1024);
        assert_eq!(config.presence.flush_inactive_ms, 180_000);
    }

    #[test]
    fn presence_defaults_are_the_cores() {
        let hub = GatewayConfig::default().hub_config();
        assert_eq!(hub.flush, FlushPolicy::default());
        assert_eq!(hub.caches, CacheSizes::default());
        // A file that sets one key keeps the others' defaults.
        let config = GatewayConfig::from_toml("[presence]\ncache_deltas = 5").unwrap();
        assert_eq!(
            config.hub_config().caches,
            CacheSizes {
                deltas: 5,
                ..CacheSizes::default()
            }
        );
        assert_eq!(config.hub_config().flush, FlushPolicy::default());
    }

    #[test]
    fn presence_values_are_checked() {
        let with = |edit: fn(&mut PresenceTuning)| {
            let mut config = GatewayConfig::default();
            edit(&mut config.presence);
            config.validate()
        };
        with(|p| p.flush_active_ms = 0).unwrap();
        with(|p| p.flush_sleepy_ms = p.flush_inactive_ms).unwrap();
        for (edit, named) in [
            (
                (|p| p.flush_inactive_ms = 0) as fn(&mut PresenceTuning),
                "flush_inactive_ms",
            ),
            (
                |p| p.flush_active_ms = p.flush_inactive_ms + 1,
                "flush_active_ms",
            ),
            (
                |p| p.flush_sleepy_ms = p.flush_inactive_ms - 1,
                "flush_sleepy_ms",
            ),
            (|p| p.batch_max = 0, "batch_max"),
            (|p| p.batch_window = 0, "batch_window"),
            (|p| p.cache_documents = 0, "cache_documents"),
            (|p| p.cache_versions = 0, "cache_versions"),
            (|p| p.cache_deltas = 0, "cache_deltas"),
        ] {
            match with(edit) {
                Err(ConfigError::Invalid(msg)) => {
                    assert!(msg.starts_with("presence.") && msg.contains(named), "{msg}");
                }
                other => panic!("{named}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        GatewayConfig::default().validate().unwrap();
    }

    #[test]
    fn a_misspelt_key_in_a_domain_table_is_refused() {
        let typo = r#"domains = [{ name = "a.example", presense = false }]"#;
        assert!(GatewayConfig::from_toml(typo).is_err());
        // Named in the error, in either table form.
        let typo = "[[domains]]\nname = \"a.example\"\nanonymus = true\n";
        let err = GatewayConfig::from_toml(typo).unwrap_err().to_string();
        assert!(err.contains("unknown field `anonymus`"), "{err}");
        let no_name = "[[domains]]\nanonymous = true\n";
        let err = GatewayConfig::from_toml(no_name).unwrap_err().to_string();
        assert!(err.contains("missing field `name`"), "{err}");
        let number = "domains = [5]";
        let err = GatewayConfig::from_toml(number).unwrap_err().to_string();
        assert!(err.contains("a domain name or a table"), "{err}");
    }

    #[test]
    fn limits_leave_room_for_a_send_and_a_login_burst() {
        let mut tight = GatewayConfig::default();
        tight.limits.body_max = tight.limits.frame_max - 10;
        assert!(
            tight.validate().is_err(),
            "a body at the limit must fit in a frame"
        );
        let mut small_queue = GatewayConfig::default();
        small_queue.limits.outbound_queue = 300;
        assert!(
            small_queue.validate().is_err(),
            "login burst must fit the queue"
        );
        let mut few_bytes = GatewayConfig::default();
        few_bytes.limits.outbound_bytes = 4 << 20;
        assert!(
            few_bytes.validate().is_err(),
            "a window of the largest messages must fit the queue's bytes"
        );
        few_bytes.limits.body_max = 8 * 1024;
        few_bytes.validate().unwrap();
    }

    #[test]
    fn rate_limits_are_set_per_domain_and_default_to_the_cores() {
        let config = GatewayConfig::from_toml(
            r#"
            domains = [
                "example.com",
                { name = "iot.example", rates = { messages_per_minute = 6, burst = 2 } },
            ]
            "#,
        )
        .expect("parses");
        let hub = config.hub_config();
        let core = RateLimits::default();
        assert_eq!(hub.domains[0].rates, core);
        let iot = hub.domains[1].rates;
        assert_eq!((iot.messages_per_minute, iot.burst), (6, 2));
        assert_eq!(iot.fetches_per_minute, core.fetches_per_minute);
        let misspelt = r#"domains = [{ name = "a.example", rates = { mesages_per_minute = 1 } }]"#;
        assert!(GatewayConfig::from_toml(misspelt).is_err());
    }

    #[test]
    fn per_address_limits_are_off_unless_a_domain_sets_them() {
        let config = GatewayConfig::from_toml(
            r#"
            [[domains]]
            name = "example.com"
            address_rates = { fetches_per_minute = 30, burst = 5 }

            [[domains]]
            name = "example.org"
            "#,
        )
        .unwrap();
        let hub = config.hub_config();
        assert_eq!(hub.domains[0].address_rates.fetches_per_minute, 30);
        assert_eq!(hub.domains[0].address_rates.burst, 5);
        assert_eq!(hub.domains[1].address_rates, RateLimits::OFF);
        assert_eq!(
            GatewayConfig::default().hub_config().domains[0].address_rates,
            RateLimits::OFF
        );
    }

    #[test]
    fn anonymous_sessions_are_opt_in_per_domain() {
        let config = GatewayConfig::from_toml(
            r#"
            [[domains]]
            name = "example.com"

            [[domains]]
            name = "Public.Example"
            anonymous = true
            im = false

            [[domains]]
            name = "closed.example"
            anonymous = false
            "#,
        )
        .expect("parses");
        assert_eq!(
            config.domain_names(),
            ["example.com", "public.example", "closed.example"]
        );
        let hub = config.hub_config();
        let anonymous: Vec<bool> = hub.domains.iter().map(|d| d.anonymous).collect();
        assert_eq!(anonymous, [false, true, false]);
        assert!(hub.domains[1].presence && !hub.domains[1].im);
        // The bare-name and default forms keep anonymous sessions out.
        let bare = GatewayConfig::from_toml(r#"domains = ["a.example"]"#).unwrap();
        assert!(!bare.hub_config().domains[0].anonymous);
        assert!(!GatewayConfig::default().hub_config().domains[0].anonymous);
        // The inline table form takes the key too; a wrong type is refused.
        let inline =
            GatewayConfig::from_toml(r#"domains = [{ name = "a.example", anonymous = true }]"#)
                .unwrap();
        assert!(inline.hub_config().domains[0].anonymous);
        let bad = r#"domains = [{ name = "a.example", anonymous = "yes" }]"#;
        assert!(GatewayConfig::from_toml(bad).is_err());
    }

    #[test]
    fn a_full_file_parses_and_domains_are_normalised() {
        let config = GatewayConfig::from_toml(
            r#"
            listen = "[::]:5000"
            data_dir = "/var/lib/tern"
            domains = ["Example.COM.", { name = "Bücher.example", im = false }]
            [limits]
            frame_max = 32768
            body_max = 8192
            inbox_window = 64
            max_subscriptions = 200
            outbound_queue = 400
            [timeouts]
            idle_timeout_ms = 30000
            keepalive_ms = 10000
            hello_timeout_ms = 5000
            delivery_wait_ms = 2000
            [quic]
            stream_receive_window = 32768
            receive_window = 65536
            send_window = 65536
            [presence]
            flush_active_ms = 0
            flush_inactive_ms = 60000
            flush_sleepy_ms = 900000
            batch_max = 16
            batch_window = 4
            cache_documents = 1000
            cache_versions = 2000
            cache_deltas = 300
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 5000);
        assert_eq!(
            config.domain_names(),
            ["example.com", "xn--bcher-kva.example"]
        );
        let hub = config.hub_config();
        assert_eq!(hub.domains[0], DomainConfig::new("example.com"));
        assert!(hub.domains[1].presence && !hub.domains[1].im);
        assert_eq!(
            (hub.frame_max, hub.body_max, hub.inbox_window),
            (32768, 8192, 64)
        );
        assert_eq!(hub.delivery_wait_ms, 2000);
        assert_eq!(config.idle_timeout(), Duration::from_secs(30));
        assert_eq!(config.timeouts.keepalive_ms, Some(10_000));
        assert_eq!(
            hub.flush,
            FlushPolicy {
                active_ms: 0,
                inactive_ms: 60_000,
                sleepy_ms: 900_000,
                batch_max: 16,
                window: 4,
            }
        );
        assert_eq!(
            hub.caches,
            CacheSizes {
                documents: 1000,
                versions: 2000,
                deltas: 300,
            }
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        for bad in [
            "lisen = \"127.0.0.1:1\"",
            "listen = \"not an address\"",
            "[limits]\nframe_max = 0",
            "[limits]\nbody_max = 70000",
            "[limits]\nframe_max = 2000000",
            "[limits]\ninbox_window = 2000",
            "[timeouts]\nidle_timeout_ms = 0",
            "[timeouts]\nkeepalive_ms = 60000",
            "[quic]\nreceive_window = 1024",
            "[presence]\nflush_inactive_ms = 0",
            "[presence]\nflush_sleepy_ms = 1000",
            "[presence]\nbatch_window = 0",
            "[presence]\ncache_versions = 0",
            "[presence]\nbatch_max = -1",
            "[presence]\nflush_active = 50",
            "domains = []",
            "domains = [\"a..b\"]",
            "domains = [\"x.example\", \"X.example\"]",
        ] {
            assert!(
                GatewayConfig::from_toml(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut config = GatewayConfig::from_toml("domains = [\"a.example\"]").unwrap();
        config
            .apply(Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                data_dir: Some("/tmp/x".into()),
                domains: vec!["B.example".into(), "c.example".into()],
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.domain_names(), ["b.example", "c.example"]);
        // Empty overrides change nothing.
        let before = config.clone();
        config.apply(Overrides::default()).unwrap();
        assert_eq!(config, before);
    }

    #[test]
    fn xmpp_comes_from_the_file_or_the_flags_and_is_checked() {
        let file = "domains = [\"a.example\", \"b.example\"]\n[xmpp]\ncomponent = \"127.0.0.1:5347\"\nsecret = \"s\"\ndomain = \"B.Example\"\n";
        let config = GatewayConfig::from_toml(file).unwrap();
        assert_eq!(config.xmpp_domain(), Some("b.example"));
        assert_eq!(config.hub_config().federation.as_deref(), Some("b.example"));

        let mut config = GatewayConfig::from_toml("domains = [\"a.example\"]").unwrap();
        assert_eq!(config.hub_config().federation, None);
        let flags = Overrides {
            xmpp_component: Some("localhost:5347".into()),
            xmpp_secret: Some("s3cret".into()),
            ..Overrides::default()
        };
        config.apply(flags).unwrap();
        assert_eq!(config.xmpp_domain(), Some("a.example"), "the first domain");
        // A flag alone completes the file's table; alone without one it is refused.
        let mut bare = GatewayConfig::default();
        let half = Overrides {
            xmpp_secret: Some("s".into()),
            ..Overrides::default()
        };
        assert!(bare.apply(half).is_err());

        for bad in [
            "[xmpp]\ncomponent = \"nohost\"\nsecret = \"s\"",
            "[xmpp]\ncomponent = \"h:99999\"\nsecret = \"s\"",
            "[xmpp]\ncomponent = \"h:1\"\nsecret = \"\"",
            "[xmpp]\ncomponent = \"h:1\"\nsecret = \"s\"\ndomain = \"other.example\"",
            "[xmpp]\ncomponent = \"h:1\"\nsecret = \"s\"\nport = 1",
        ] {
            assert!(GatewayConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"").unwrap();
        assert_eq!(GatewayConfig::load(&path).unwrap().listen.port(), 9999);
        assert!(matches!(
            GatewayConfig::load(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
