//! The running gateway: a QUIC endpoint, one task per connection, and the hub thread.
//!
//! ```text
//!  quinn endpoint ──accept──▶ connection task (per client, tokio)
//!                               reader ──Event──▶ ┌──────────── hub thread ────────────┐
//!                               writer ◀─outlet─  │ Hub (tern-gateway-core) + SQLite    │
//!                                                 │ batch → savepoints → commit → send  │
//!                                                 └─────────────────────────────────────┘
//! ```
//!
//! [`start`] opens the database, loads the hub, loads or makes the certificate, binds
//! the endpoint and returns a [`RunningGateway`]; [`RunningGateway::shutdown`] closes
//! every connection with `shutdown`, commits the sessions' departure and waits for the
//! endpoint to go idle. The protocol's decisions are all in the core: this module moves
//! bytes, events and time between the network, the hub and the disk.
//!
//! The hub thread never waits for a connection: it pushes frames into the connection's
//! outbound queue ([`outbound`]), which coalesces presence notifications per presentity
//! and bounds everything else, and the connection's writer drains it at the pace the
//! client reads.

mod admission;
mod connection;
pub(crate) mod hub_thread;
mod outbound;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_gateway_core::{ConnId, Hub, Millis, StoreError};
use tern_wire::ErrorCode;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::config::{ConfigError, GatewayConfig};
use crate::sqlite::{DbError, SqliteStore};
use crate::tls::{self, TlsError};
use admission::Admission;
use connection::Shared;
use hub_thread::{Event, HubThread};
use outbound::Bounds;

/// Events queued for the hub thread before readers wait (and QUIC flow control pushes
/// back on the clients).
const EVENT_QUEUE: usize = 4096;
/// How long shutdown waits for connections to deliver their `Close` frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long shutdown waits for the endpoint to finish closing.
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// Why the gateway could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened, read or committed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The hub could not load its state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The certificate or TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The hub thread could not be started or died.
    #[error("hub thread: {0}")]
    HubThread(String),
}

/// A gateway serving connections. Dropping it without [`Self::shutdown`] stops the
/// hub thread and the endpoint abruptly.
#[derive(Debug)]
pub struct RunningGateway {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    cert_pem: Vec<u8>,
    cert_path: PathBuf,
    events: flume::Sender<Event>,
    stop_accepting: Option<oneshot::Sender<()>>,
    acceptor: Option<tokio::task::JoinHandle<()>>,
    /// The XMPP bridge task, when the gateway joins the XMPP network.
    bridge: Option<tokio::task::JoinHandle<()>>,
    hub_done: Option<oneshot::Receiver<Result<(), RuntimeError>>>,
}

/// Starts a gateway with this configuration: opens (or creates) the database in
/// `data_dir`, loads the hub, loads or generates the certificate, and listens.
/// Must be called inside a tokio runtime.
pub async fn start(mut config: GatewayConfig) -> Result<RunningGateway, RuntimeError> {
    config.validate()?;
    let mut store = SqliteStore::open(&config.data_dir)?;
    let mut hub = Hub::new(config.hub_config());
    store.write(|s| hub.load(unix_ms(), s))?;
    let identity = tls::load_or_generate(&config.data_dir, &config.domain_names())?;
    let server_config = tls::server_config(&identity, &config)?;
    let bind = |source| RuntimeError::Bind {
        addr: config.listen,
        source,
    };
    let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(bind)?;
    let local_addr = endpoint.local_addr().map_err(bind)?;

    let (events, events_rx) = flume::bounded(EVENT_QUEUE);
    let (done_tx, hub_done) = oneshot::channel();
    std::thread::Builder::new()
        .name("tern-hub".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                HubThread::new(hub, store).run(&events_rx)
            }));
            let result = run.unwrap_or_else(|_| Err(RuntimeError::HubThread("panicked".into())));
            if let Err(err) = &result {
                tracing::error!(%err, "the hub thread stopped");
            }
            let _ = done_tx.send(result);
        })
        .map_err(|e| RuntimeError::HubThread(e.to_string()))?;

    let shared = Arc::new(Shared {
        events: events.clone(),
        frame_max: config.limits.frame_max as usize,
        hello_timeout: config.hello_timeout(),
        outbound: Bounds {
            frames: config.limits.outbound_queue,
            bytes: config.limits.outbound_bytes,
        },
    });
    let (stop_accepting, stop_rx) = oneshot::channel();
    let admission = Admission::new(
        config.limits.connections_per_minute,
        config.limits.connection_burst,
    );
    let acceptor = tokio::spawn(accept(endpoint.clone(), shared, admission, stop_rx));
    let bridge = match (&config.xmpp, config.xmpp_domain()) {
        (Some(xmpp), Some(domain)) => {
            let settings = crate::xmpp::bridge::Settings {
                component: xmpp.component.clone(),
                secret: xmpp.secret.clone(),
                domain: domain.to_string(),
            };
            tracing::info!(component = %xmpp.component, %domain, "joining the XMPP network");
            Some(crate::xmpp::bridge::spawn(settings, events.clone()))
        }
        _ => None,
    };
    tracing::info!(%local_addr, domains = ?config.domain_names(), "listening");
    Ok(RunningGateway {
        endpoint,
        local_addr,
        cert_pem: identity.cert_pem,
        cert_path: identity.cert_path,
        events,
        stop_accepting: Some(stop_accepting),
        acceptor: Some(acceptor),
        bridge,
        hub_done: Some(hub_done),
    })
}

impl RunningGateway {
    /// The address the endpoint is bound to (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The gateway's certificate, PEM; clients that pin it trust this gateway.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert_pem.clone()
    }

    /// Where the certificate file is.
    pub fn cert_path(&self) -> PathBuf {
        self.cert_path.clone()
    }

    /// Completes if the gateway stops on its own, which happens only when its database
    /// can no longer be read; never during normal operation. Cancel-safe.
    pub async fn stopped(&mut self) -> RuntimeError {
        let Some(done) = self.hub_done.as_mut() else {
            return std::future::pending().await;
        };
        let result = done.await;
        self.hub_done = None;
        match result {
            Ok(Err(err)) => err,
            Ok(Ok(())) => RuntimeError::HubThread("stopped".into()),
            Err(_) => RuntimeError::HubThread("vanished".into()),
        }
    }

    /// Stops accepting, closes every connection with `shutdown` (each client gets a
    /// `Close` frame), commits the sessions' departure, stops the hub thread and waits
    /// for the endpoint to go idle.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
        // The XMPP server sees the component leave; what is unsent stays in the outbox.
        if let Some(bridge) = self.bridge.take() {
            bridge.abort();
            let _ = bridge.await;
        }
        let _ = self.events.send_async(Event::Shutdown).await;
        if let Some(done) = self.hub_done.take() {
            match done.await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(err)) => tracing::error!(%err, "the hub thread had failed"),
            }
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.await;
        }
        let code = quinn::VarInt::from_u32(u32::from(ErrorCode::SHUTDOWN.0));
        self.endpoint.close(code, b"the gateway is shutting down");
        let _ = tokio::time::timeout(IDLE_GRACE, self.endpoint.wait_idle()).await;
        tracing::info!("stopped");
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(acceptor) = &self.acceptor {
            acceptor.abort();
        }
        if let Some(bridge) = &self.bridge {
            bridge.abort();
        }
        // Stops the hub thread if shutdown did not.
        let _ = self.events.try_send(Event::Shutdown);
    }
}

/// How often addresses that stopped connecting are forgotten.
const ADMISSION_SHRINK: Duration = Duration::from_secs(60);

/// Accepts connections until told to stop, then gives them [`SHUTDOWN_GRACE`] to close.
async fn accept(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    admission: Admission,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let mut next_id: ConnId = 1;
    let mut shrink = tokio::time::interval(ADMISSION_SHRINK);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = shrink.tick() => admission.shrink(),
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let from = incoming.remote_address();
                if !admission.admit(from.ip()) {
                    tracing::debug!(%from, "connection refused: over the per-address rate");
                    incoming.refuse();
                    continue;
                }
                connections.spawn(connection::serve(incoming, Arc::clone(&shared), next_id));
                next_id += 1;
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(%err, "connection task failed");
                }
            }
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open at shutdown"
        );
    }
}

/// Wall-clock Unix milliseconds.
pub(crate) fn unix_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
