//! What the core needs to know of the gateway's configuration. The runtime builds it
//! from the TOML file and flags; the core never reads files.

use tern_wire::limits::{DEFAULT_BODY_MAX, DEFAULT_FRAME_MAX};

/// One domain the gateway serves, with its services (RFC 2779 2.1.1, 2.1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The normalised (A-label) domain name.
    pub name: String,
    /// Whether the presence service runs for this domain.
    pub presence: bool,
    /// Whether the instant-message service runs for this domain.
    pub im: bool,
    /// Rate limits for this domain's principals (anonymous sessions: per source
    /// address).
    pub rates: RateLimits,
    /// Rate limits per source address, over every session of the domain from that
    /// address (anonymous or not); off by default ([`RateLimits::OFF`]), since carrier
    /// NATs put many phones behind one address.
    pub address_rates: RateLimits,
    /// Whether unauthenticated (anonymous) sessions may open in this domain (RFC 2779
    /// 5.1.3): they watch and send as `anonymous@<domain>`, and each principal's rules
    /// still decide what they may do (by default nothing).
    pub anonymous: bool,
}

/// How many requests of each kind one principal may make: `per_minute` on average,
/// with bursts of up to `burst` at once (a token bucket, GCRA). A rate of 0 means no
/// limit. Over a limit, a request is answered `Limited { retry_after }` and changes
/// nothing; other principals are unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `Send` requests (instant messages).
    pub messages_per_minute: u32,
    /// `Subscribe` requests.
    pub subscriptions_per_minute: u32,
    /// `Fetch` and `FetchIf` requests (fetchers and pollers).
    pub fetches_per_minute: u32,
    /// The largest burst of each kind.
    pub burst: u32,
}

impl RateLimits {
    /// No limit of any kind.
    pub const OFF: Self = Self {
        messages_per_minute: 0,
        subscriptions_per_minute: 0,
        fetches_per_minute: 0,
        burst: 1,
    };
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            messages_per_minute: 600,
            subscriptions_per_minute: 600,
            fetches_per_minute: 600,
            // An app's first run subscribes to its whole buddy list at once: a burst must
            // hold `max_subscriptions` (500 by default).
            burst: 500,
        }
    }
}

impl DomainConfig {
    /// A domain with both services on.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            presence: true,
            im: true,
            rates: RateLimits::default(),
            address_rates: RateLimits::OFF,
            anonymous: false,
        }
    }
}

/// The core's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Domains served; identifiers in other domains are unroutable.
    pub domains: Vec<DomainConfig>,
    /// Largest frame body accepted, bytes (announced in `Welcome`).
    pub frame_max: u32,
    /// Largest message body accepted, bytes (announced in `Welcome`).
    pub body_max: u32,
    /// How long a send request waits for the online recipient to acknowledge before it is
    /// answered `Stored` (a late receipt then follows), milliseconds.
    pub delivery_wait_ms: u64,
    /// Most inbox items pushed to one session and not yet acknowledged.
    pub inbox_window: u64,
    /// Most presentities one principal may subscribe to.
    pub max_subscriptions: usize,
    /// How long a device's session is kept after its link is lost, milliseconds. It is
    /// also the grace period of presence: the presentity stays in contact meanwhile, so a
    /// shorter outage ending in a resumption shows watchers nothing.
    pub resume_window_ms: u64,
    /// The keep-alive interval suggested to clients in `Opened`, milliseconds.
    pub keepalive_hint_ms: u64,
    /// A device not seen for this long no longer holds inbox items back from deletion,
    /// milliseconds.
    pub device_retention_ms: u64,
    /// How long a fetch is remembered for watcher information, milliseconds.
    pub watcher_window_ms: u64,
    /// Presence batching: how long a change waits before it is flushed to a session.
    pub flush: FlushPolicy,
    /// Presence caches: how many entries each keeps.
    pub caches: CacheSizes,
    /// The served domain that is joined to the XMPP network as a component
    /// (docs/federation.md): its principals reach addresses in domains not served here
    /// through the bridge. `None`: such addresses are `unroutable`.
    pub federation: Option<String>,
}

/// When pending presence changes are flushed to a synchronised session, by the mode the
/// client declared (see `tern_wire::ClientMode`). A message or any answer to the client
/// flushes them at once whatever the mode: the radio is up anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Active (foreground): the first pending change waits at most this long, ms.
    pub active_ms: u64,
    /// Inactive (background): ms.
    pub inactive_ms: u64,
    /// Sleepy (IoT): ms.
    pub sleepy_ms: u64,
    /// An inactive or sleepy session's batch is flushed at once when this many
    /// presentities have pending changes.
    pub batch_max: usize,
    /// Most batches sent to a session and not yet acknowledged with `Applied`; further
    /// changes wait (and coalesce) until an acknowledgement comes. Clients acknowledge
    /// lazily (every second batch, or with their next frame), so this is at least 3.
    pub window: u32,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            active_ms: 50,
            inactive_ms: 180_000,
            sleepy_ms: 3_600_000,
            batch_max: 64,
            window: 4,
        }
    }
}

/// Sizes of the presence caches (least recently used entries go first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Current documents of presentities (the hot set; a miss reads the store).
    pub documents: usize,
    /// Earlier versions of documents, the bases of deltas (a miss sends a document whole).
    pub versions: usize,
    /// Computed deltas, shared by the watchers that hold the same base.
    pub deltas: usize,
}

impl Default for CacheSizes {
    fn default() -> Self {
        Self {
            documents: 100_000,
            versions: 100_000,
            deltas: 20_000,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            domains: vec![DomainConfig::new("localhost")],
            frame_max: DEFAULT_FRAME_MAX,
            body_max: DEFAULT_BODY_MAX,
            delivery_wait_ms: 5_000,
            inbox_window: 256,
            max_subscriptions: 500,
            resume_window_ms: 30_000,
            keepalive_hint_ms: 20_000,
            device_retention_ms: 30 * 24 * 3_600_000,
            watcher_window_ms: 24 * 3_600_000,
            flush: FlushPolicy::default(),
            caches: CacheSizes::default(),
            federation: None,
        }
    }
}

impl HubConfig {
    /// The configuration of a served domain.
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }
}
