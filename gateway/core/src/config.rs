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
}

impl DomainConfig {
    /// A domain with both services on.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            presence: true,
            im: true,
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
        }
    }
}

impl HubConfig {
    /// The configuration of a served domain.
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }
}
