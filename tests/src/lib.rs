//! # tern-tests: the gateway and clients, for real, on loopback
//!
//! Owns the harness that the end-to-end tests in `tests/*.rs` share: a gateway started
//! in-process on `127.0.0.1:0` with its data in a temporary directory (real SQLite on
//! disk, real certificate), users provisioned through the operator path, `tern-client`
//! clients connected over real QUIC, and a raw QUIC session for feeding the gateway
//! bytes no well-behaved client would send. It may not reach into the gateway's or the
//! client's internals: only their public APIs.

pub mod federation;
pub mod linkem;
pub mod raw;
pub mod relay;
pub mod xmpp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tern_client::{Client, ClientConfig, Event};
use tern_gateway::config::GatewayConfig;
use tern_gateway::runtime::{RunningGateway, start};
use tern_gateway::sqlite::SqliteStore;
use tern_gateway::users::{self, UserOptions};

/// How long a test waits for something that should happen at once on loopback.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// A gateway running in this process with its own data directory.
pub struct Harness {
    dir: TempDir,
    config: GatewayConfig,
    gateway: Option<RunningGateway>,
    addr: SocketAddr,
    cert_pem: Vec<u8>,
}

impl Harness {
    /// A gateway for `example.com` and `example.org` on embedded defaults, except that
    /// per-principal rate limits are off (see [`Self::start_with`]).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose configuration `tune` adjusts first.
    pub async fn start_with(tune: impl FnOnce(&mut GatewayConfig)) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_path_buf(),
            ..GatewayConfig::default()
        };
        // Per-principal rate limits are off here: these tests pipeline hundreds of
        // requests from one principal on purpose. Tests of the limits set their own.
        let unlimited = |name: &str| {
            let off = tern_gateway::config::RateTable {
                messages_per_minute: 0,
                subscriptions_per_minute: 0,
                fetches_per_minute: 0,
                burst: 1,
            };
            domain(name, off)
        };
        config.domains = vec![unlimited("example.com"), unlimited("example.org")];
        tune(&mut config);
        let gateway = start(config.clone()).await.expect("gateway starts");
        let addr = gateway.local_addr();
        let cert_pem = gateway.cert_pem();
        // Restarts reuse the port, so that clients reconnect to the same address.
        config.listen = addr;
        Self {
            dir,
            config,
            gateway: Some(gateway),
            addr,
            cert_pem,
        }
    }

    /// Where the gateway listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The gateway's certificate (PEM), which clients trust.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert_pem.clone()
    }

    /// Provisions a user with a presentity and an inbox; returns its token.
    pub fn add_user(&self, address: &str) -> String {
        self.add_user_with(address, UserOptions::default())
    }

    /// Provisions a user with these options; returns its token.
    pub fn add_user_with(&self, address: &str, options: UserOptions) -> String {
        users::add(self.dir.path(), address, options).expect("user added")
    }

    /// Sets a domain's administrator token, as `tern-gateway admin token` does; returns
    /// it.
    pub fn add_admin(&self, domain: &str) -> String {
        let token = users::generate_token();
        let hash = tern_gateway_core::auth::hash_token(&token);
        let mut store = SqliteStore::open(self.dir.path()).expect("store opens");
        store
            .write(|s| s.put_admin_token(domain, &hash))
            .expect("token stored");
        token
    }

    /// A domain's administrators' audit log, oldest first.
    pub fn admin_log(&self, domain: &str) -> Vec<tern_gateway_core::AdminRecord> {
        let store = SqliteStore::open(self.dir.path()).expect("store opens");
        store.read(|s| s.admin_log(domain, 1000)).expect("log read")
    }

    /// A client configuration for this gateway.
    pub fn client_config(&self, user: &str, token: &str) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.addr.to_string(),
            user.into(),
            token.into(),
            self.cert_pem.clone(),
        );
        config.request_timeout = PROMPTLY;
        config
    }

    /// A connected client.
    pub async fn connect(&self, user: &str, token: &str) -> Client {
        Client::connect(self.client_config(user, token))
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"))
    }

    /// A new user and a connected client for it.
    pub async fn user(&self, address: &str) -> Client {
        let token = self.add_user(address);
        self.connect(address, &token).await
    }

    /// Stops the gateway cleanly (clients see `shutdown`).
    pub async fn stop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }

    /// Stops and starts the gateway on the same address and data directory.
    ///
    /// quinn releases the old socket when its endpoint driver task next runs after the
    /// last handle is dropped, so binding the same port again in the same process may
    /// briefly fail; a new process (an operator's restart) never sees this.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut tries = 0;
        let gateway = loop {
            match start(self.config.clone()).await {
                Ok(gateway) => break gateway,
                Err(tern_gateway::RuntimeError::Bind { .. }) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("gateway restarts: {err}"),
            }
        };
        self.addr = gateway.local_addr();
        self.gateway = Some(gateway);
    }
}

/// Waits for the first event that `pick` accepts, skipping others; panics after
/// [`PROMPTLY`].
pub async fn expect_event<T>(client: &Client, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let wait = async {
        loop {
            match client.next_event().await {
                Some(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                None => panic!("event stream ended"),
            }
        }
    };
    tokio::time::timeout(PROMPTLY, wait)
        .await
        .expect("expected event did not arrive in time")
}

/// Collects every event that arrives within `window`.
pub async fn events_within(client: &Client, window: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        seen.push(event);
    }
    seen
}

/// A served domain with both services and these rate limits.
pub fn domain(
    name: &str,
    rates: tern_gateway::config::RateTable,
) -> tern_gateway::config::DomainEntry {
    tern_gateway::config::DomainEntry::Table(tern_gateway::config::DomainTable {
        name: name.into(),
        presence: true,
        im: true,
        rates,
        anonymous: false,
        address_rates: None,
    })
}

/// A one-tuple presence: OPEN, with `note`.
pub fn open_presence(note: &str) -> tern_client::Presence {
    tern_client::Presence {
        tuples: vec![tern_client::Tuple {
            id: "phone".into(),
            basic: tern_client::Basic::Open,
            availability: None,
            contact: None,
            note: Some(note.into()),
            at: None,
            ext: Vec::new(),
        }],
        card: Vec::new(),
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
