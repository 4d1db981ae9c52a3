//! The link emulator's runtime: [`Linkem`] relays UDP datagrams between clients and one
//! upstream address on loopback, each direction through its own
//! [`Direction`] model.
//!
//! Owns: the sockets (one client-facing socket; one upstream socket per client source
//! address, so the upstream sees a client that changes address as a new source, as a
//! NAT rebinding or a QUIC migration looks), one relay task plus one reader task per
//! upstream socket, the release queue (a heap ordered by release time, served by a single
//! timer) and the clock. It may not decide anything about a datagram's fate: the model
//! does. It binds and sends only on loopback addresses (127.0.0.0/8 and ::1) and refuses
//! any other with [`ConfigError::NotLoopback`].

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::impairment::{Impairment, ImpairmentError, Window};
use super::model::{Direction, DirectionStats, Release, Verdict};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;
/// Bytes waiting for release per direction beyond which new datagrams are dropped (and
/// counted as queue drops), whatever the impairments: bounds the emulator's memory.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Default bound on client source addresses relayed at once.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Default time after which a silent client's upstream socket is closed.
pub const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(120);
/// Datagrams from the upstream sockets waiting for the relay task.
const FROM_UPSTREAM_QUEUE: usize = 1_024;
/// How often idle clients are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What to relay where, and how badly.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Client-facing address; port 0 picks one. Loopback only.
    pub listen: SocketAddr,
    /// Where datagrams go (the gateway). Loopback only.
    pub upstream: SocketAddr,
    /// Seeds both directions' random draws (each its own stream derived from it).
    pub seed: u64,
    /// Client → upstream impairments.
    pub up: Impairment,
    /// Upstream → client impairments.
    pub down: Impairment,
    /// Client source addresses relayed at once; datagrams from more are refused.
    pub max_clients: usize,
    /// A client silent both ways for this long loses its upstream socket; its next
    /// datagram opens a new one, so the upstream sees a NAT rebinding.
    pub client_idle: Duration,
}

impl LinkConfig {
    /// A perfect link to `upstream`, listening on a free loopback port of the same family,
    /// seed 0.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            listen: SocketAddr::new(loopback_like(upstream), 0),
            upstream,
            seed: 0,
            up: Impairment::default(),
            down: Impairment::default(),
            max_clients: DEFAULT_MAX_CLIENTS,
            client_idle: DEFAULT_CLIENT_IDLE,
        }
    }

    /// The same impairments both ways.
    pub fn symmetric(mut self, impairment: Impairment) -> Self {
        self.up = impairment.clone();
        self.down = impairment;
        self
    }

    /// This seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The seeds of the up and down models derived from `seed`: with them a run's fates
    /// can be replayed on [`Direction`]s alone.
    pub fn direction_seeds(&self) -> (u64, u64) {
        (derive_seed(self.seed, 1), derive_seed(self.seed, 2))
    }

    /// Checks the addresses and the impairments.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (role, addr) in [("listen", self.listen), ("upstream", self.upstream)] {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::NotLoopback { role, addr });
            }
        }
        if self.upstream.port() == 0 {
            return Err(ConfigError::UpstreamPortZero);
        }
        if self.max_clients == 0 {
            return Err(ConfigError::NoClients);
        }
        for (direction, imp) in [("up", &self.up), ("down", &self.down)] {
            imp.validate()
                .map_err(|source| ConfigError::Impairment { direction, source })?;
        }
        Ok(())
    }
}

/// A configuration the emulator refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An address that is not on loopback.
    #[error(
        "{role} address {addr} is not a loopback address: tern-linkem binds and sends only on 127.0.0.0/8 and ::1"
    )]
    NotLoopback {
        /// `listen` or `upstream`.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Nothing can be sent to port 0.
    #[error("the upstream port is 0")]
    UpstreamPortZero,
    /// `max_clients` is zero.
    #[error("max_clients is 0: no client could be relayed")]
    NoClients,
    /// A direction's impairments are invalid.
    #[error("{direction} impairment: {source}")]
    Impairment {
        /// `up` or `down`.
        direction: &'static str,
        /// What is wrong.
        source: ImpairmentError,
    },
}

impl From<ConfigError> for io::Error {
    fn from(err: ConfigError) -> Self {
        Self::new(io::ErrorKind::InvalidInput, err)
    }
}

/// A snapshot of the emulator's counters; serialises to JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Time since the emulator started, in milliseconds.
    pub elapsed_ms: u64,
    /// Client source addresses with an upstream socket now.
    pub clients_active: usize,
    /// Client source addresses seen since the start.
    pub clients_total: u64,
    /// Datagrams refused because `max_clients` was reached (or an upstream socket could
    /// not be opened).
    pub clients_refused: u64,
    /// Copies the model released that a socket failed to send (e.g. the upstream is not
    /// listening).
    pub send_errors: u64,
    /// Client → upstream.
    pub up: DirectionStats,
    /// Upstream → client.
    pub down: DirectionStats,
}

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Up,
    Down,
}

/// State shared by the relay task and the [`Linkem`] handle; locked briefly, never across
/// an await.
struct Shared {
    up: Direction,
    down: Direction,
    clients_active: usize,
    clients_total: u64,
    clients_refused: u64,
    send_errors: u64,
}

impl Shared {
    fn direction(&mut self, way: Way) -> &mut Direction {
        match way {
            Way::Up => &mut self.up,
            Way::Down => &mut self.down,
        }
    }
}

/// A running link emulator. Dropping it stops it at once; [`Linkem::shutdown`] also
/// returns the final counters.
pub struct Linkem {
    addr: SocketAddr,
    upstream: SocketAddr,
    start: Instant,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Linkem {
    /// Binds the client-facing socket and starts relaying. Fails with
    /// [`io::ErrorKind::InvalidInput`] wrapping a [`ConfigError`] for a refused
    /// configuration, or with the error of a bind that failed. Must be called within a
    /// tokio runtime.
    pub async fn start(config: LinkConfig) -> io::Result<Self> {
        config.validate()?;
        let front = UdpSocket::bind(config.listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", config.listen)))?;
        let addr = front.local_addr()?;
        let impairment_error = |direction| {
            move |source| io::Error::from(ConfigError::Impairment { direction, source })
        };
        let (up_seed, down_seed) = config.direction_seeds();
        let up = Direction::new(config.up.clone(), up_seed).map_err(impairment_error("up"))?;
        let down =
            Direction::new(config.down.clone(), down_seed).map_err(impairment_error("down"))?;
        let shared = Arc::new(Mutex::new(Shared {
            up,
            down,
            clients_active: 0,
            clients_total: 0,
            clients_refused: 0,
            send_errors: 0,
        }));
        let start = Instant::now();
        let (stop, stopped) = oneshot::channel();
        let (to_relay, from_upstream) = mpsc::channel(FROM_UPSTREAM_QUEUE);
        let pump = Pump {
            front,
            upstream: config.upstream,
            start,
            shared: shared.clone(),
            clients: HashMap::new(),
            max_clients: config.max_clients,
            client_idle: config.client_idle,
            pending: BinaryHeap::new(),
            pending_bytes: [0; 2],
            seq: 0,
            to_relay,
            from_upstream,
        };
        let task = tokio::spawn(pump.run(stopped));
        tracing::debug!(%addr, upstream = %config.upstream, seed = config.seed, "linkem started");
        Ok(Self {
            addr,
            upstream: config.upstream,
            start,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where datagrams go.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Time since the start, the origin of every blackout window.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The counters now.
    pub fn stats(&self) -> LinkStats {
        let shared = self.lock();
        LinkStats {
            elapsed_ms: u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX),
            clients_active: shared.clients_active,
            clients_total: shared.clients_total,
            clients_refused: shared.clients_refused,
            send_errors: shared.send_errors,
            up: shared.up.stats(),
            down: shared.down.stats(),
        }
    }

    /// Replaces the client → upstream impairments from now on.
    pub fn set_up(&self, impairment: Impairment) -> Result<(), ImpairmentError> {
        self.lock().up.set_impairment(impairment)
    }

    /// Replaces the upstream → client impairments from now on.
    pub fn set_down(&self, impairment: Impairment) -> Result<(), ImpairmentError> {
        self.lock().down.set_impairment(impairment)
    }

    /// Replaces both directions' impairments from now on; if `impairment` is invalid
    /// neither changes.
    pub fn set_both(&self, impairment: Impairment) -> Result<(), ImpairmentError> {
        impairment.validate()?;
        let mut shared = self.lock();
        shared.up.set_impairment(impairment.clone())?;
        shared.down.set_impairment(impairment)
    }

    /// Takes the link down both ways from now for `length`: nothing enters, and nothing
    /// already on its way leaves, until then.
    pub fn blackout_for(&self, length: Duration) {
        let start = self.elapsed();
        let window = Window {
            start,
            end: start.saturating_add(length),
        };
        let mut shared = self.lock();
        shared.up.add_blackout(window);
        shared.down.add_blackout(window);
    }

    /// Stops relaying, closes every socket and returns the final counters.
    pub async fn shutdown(mut self) -> LinkStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.stats()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl Drop for Linkem {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The relay never panics while holding the lock, but a poisoned lock is still usable.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Independent seeds for the two directions.
fn derive_seed(seed: u64, stream: u64) -> u64 {
    seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn loopback_like(addr: SocketAddr) -> std::net::IpAddr {
    if addr.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    }
}

/// Errors a UDP socket reports for an earlier datagram (ICMP port unreachable), after
/// which it works on.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// A copy waiting for its release time.
struct Pending {
    at: Duration,
    seq: u64,
    way: Way,
    client: SocketAddr,
    payload: Vec<u8>,
}

impl Pending {
    fn key(&self) -> (Duration, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reversed, so that the max-heap yields the earliest release (then the first
/// scheduled) first.
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// One client source address's upstream socket and the task reading it.
struct Upstream {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    last_active: Duration,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The relay task's state.
struct Pump {
    front: UdpSocket,
    upstream: SocketAddr,
    start: Instant,
    shared: Arc<Mutex<Shared>>,
    clients: HashMap<SocketAddr, Upstream>,
    max_clients: usize,
    client_idle: Duration,
    pending: BinaryHeap<Pending>,
    /// Bytes in `pending`, up then down.
    pending_bytes: [usize; 2],
    seq: u64,
    to_relay: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    from_upstream: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

impl Pump {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let timer = tokio::time::sleep_until(self.start);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let next = self.pending.peek().map(|p| p.at);
            if next != armed {
                if let Some(at) = next {
                    timer.as_mut().reset(self.start + at);
                }
                armed = next;
            }
            tokio::select! {
                _ = &mut stop => break,
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.release_due().await;
                }
                got = self.front.recv_from(&mut buf) => match got {
                    Ok((n, from)) => self.handle_client_datagram(from, &buf[..n]).await,
                    Err(err) if is_transient(&err) => {}
                    Err(err) => {
                        tracing::warn!(%err, "linkem: the client-facing socket failed; stopping");
                        break;
                    }
                },
                Some((client, datagram)) = self.from_upstream.recv() => {
                    self.handle_upstream_datagram(client, datagram);
                }
                _ = housekeeping.tick() => self.evict_idle(),
            }
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn handle_client_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = self.now();
        match self.clients.get_mut(&from) {
            Some(client) => client.last_active = now,
            None => {
                if !self.open_upstream(from, now).await {
                    lock(&self.shared).clients_refused += 1;
                    return;
                }
            }
        }
        self.admit(Way::Up, from, now, datagram.to_vec());
    }

    fn handle_upstream_datagram(&mut self, client: SocketAddr, datagram: Vec<u8>) {
        let now = self.now();
        if let Some(upstream) = self.clients.get_mut(&client) {
            upstream.last_active = now;
        }
        self.admit(Way::Down, client, now, datagram);
    }

    /// Opens an upstream socket for a new client source address; false if refused.
    async fn open_upstream(&mut self, client: SocketAddr, now: Duration) -> bool {
        if self.clients.len() >= self.max_clients {
            return false;
        }
        let socket = match self.connect_upstream().await {
            Ok(socket) => Arc::new(socket),
            Err(err) => {
                tracing::warn!(%err, %client, "linkem: cannot open an upstream socket");
                return false;
            }
        };
        let reader = tokio::spawn(read_upstream(socket.clone(), client, self.to_relay.clone()));
        self.clients.insert(
            client,
            Upstream {
                socket,
                reader,
                last_active: now,
            },
        );
        let mut shared = lock(&self.shared);
        shared.clients_total += 1;
        shared.clients_active = self.clients.len();
        true
    }

    async fn connect_upstream(&self) -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind(SocketAddr::new(loopback_like(self.upstream), 0)).await?;
        socket.connect(self.upstream).await?;
        Ok(socket)
    }

    /// Hands a datagram to its direction's model and schedules what it releases.
    fn admit(&mut self, way: Way, client: SocketAddr, now: Duration, payload: Vec<u8>) {
        let slot = way as usize;
        let verdict = {
            let mut shared = lock(&self.shared);
            let direction = shared.direction(way);
            if self.pending_bytes[slot].saturating_add(payload.len()) > MAX_PENDING_BYTES {
                direction.handle_overflow(&payload);
                return;
            }
            direction.handle_datagram(now, &payload)
        };
        if let Verdict::Deliver { at, duplicate } = verdict {
            if let Some(again) = duplicate {
                self.schedule(again, way, client, payload.clone());
            }
            self.schedule(at, way, client, payload);
        }
    }

    fn schedule(&mut self, at: Duration, way: Way, client: SocketAddr, payload: Vec<u8>) {
        self.seq += 1;
        self.pending_bytes[way as usize] += payload.len();
        self.pending.push(Pending {
            at,
            seq: self.seq,
            way,
            client,
            payload,
        });
    }

    /// Sends (or drops, if the link went down) every copy whose time has come.
    async fn release_due(&mut self) {
        let now = self.now();
        while self.pending.peek().is_some_and(|p| p.at <= now) {
            let Some(copy) = self.pending.pop() else {
                break;
            };
            self.pending_bytes[copy.way as usize] -= copy.payload.len();
            let release = lock(&self.shared)
                .direction(copy.way)
                .handle_release(copy.at, copy.payload.len());
            if release == Release::Send && !self.send(&copy).await {
                lock(&self.shared).send_errors += 1;
            }
        }
    }

    async fn send(&self, copy: &Pending) -> bool {
        let sent = match copy.way {
            Way::Up => match self.clients.get(&copy.client) {
                Some(upstream) => upstream.socket.send(&copy.payload).await,
                None => return false,
            },
            Way::Down => self.front.send_to(&copy.payload, copy.client).await,
        };
        sent.is_ok()
    }

    fn evict_idle(&mut self) {
        let now = self.now();
        let idle = self.client_idle;
        let before = self.clients.len();
        self.clients
            .retain(|_, upstream| now.saturating_sub(upstream.last_active) < idle);
        if self.clients.len() != before {
            lock(&self.shared).clients_active = self.clients.len();
        }
    }
}

/// Forwards what the upstream sends on one client's socket to the relay task.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    to_relay: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if to_relay.send((client, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(err) if is_transient(&err) => {}
            Err(err) => {
                tracing::warn!(%err, %client, "linkem: an upstream socket failed");
                return;
            }
        }
    }
}
