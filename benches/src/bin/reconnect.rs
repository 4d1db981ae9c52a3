//! Reconnect harness: how long a client takes, after (re)connecting over an emulated
//! slow link, until (a) the gateway has acknowledged its first message and (b) it has
//! received what was queued for it while it was away, in three cases:
//!
//! 1. **cold start**: a new `Client` (no session ticket, no state directory), so a full
//!    QUIC handshake and a fresh device session;
//! 2. **reconnect in the same process** after an outage longer than the idle timeout:
//!    the client's own reconnect, whose first flight may go as 0-RTT data;
//! 3. **restart from the state directory**: the old `Client` stops without a goodbye
//!    (`abandon`), a new one opens the same state directory (no ticket, but the device
//!    session resumes and the outbox is sent again).
//!
//! The gateway runs in this process on 127.0.0.1; the measured client talks to it
//! through `tern_tests::linkem` (one-way delay RTT/2 each way, optional loss), whose
//! counters give the UDP payload bytes of each reconnect. The other clients (the sender
//! of the missed messages, the offline recipient) talk to the gateway directly.
//!
//! ```sh
//! cargo run --release -p tern-benches --bin reconnect -- [--rtts 50,300,600,1000] [--runs N]
//! ```
//!
//! Prints Markdown on stdout (progress on stderr). Every wait is bounded by `--wait`.
//! The exact definitions of the start and end of each measurement are in
//! `docs/benchmarks.md` (section "reconnect").

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tern_benches::env;
use tern_benches::stats;
use tern_benches::tap::{Datagram, Tap};
use tern_client::{
    Client, ClientConfig, ClientError, ConnectionState, Event, Message, ReceiptStatus, SessionInfo,
    ZeroRtt, new_message_id,
};
use tern_gateway::config::{DomainEntry, GatewayConfig, Timeouts};
use tern_gateway::runtime::{RunningGateway, start};
use tern_gateway::users::{self, UserOptions};
use tern_tests::linkem::{Impairment, LinkConfig, LinkStats, Linkem, Window};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

const DOMAIN: &str = "example.com";
/// Shortest idle timeout used, whatever the RTT.
const IDLE_MIN: Duration = Duration::from_millis(1500);
/// The idle timeout is this many RTTs when that is longer than [`IDLE_MIN`].
const IDLE_RTTS: u32 = 4;
/// A blackout that is lifted by hand long before it ends.
const FOREVER: Duration = Duration::from_secs(3600);
/// The automatic reconnect attempt comes at the earliest this long after `Reconnecting`
/// (half the client's first backoff delay of 500 ms); the harness must start its own
/// attempt before.
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// The size quinn pads every datagram carrying an Initial packet to (its initial MTU);
/// larger ones are path MTU probes (or full packets, which a reconnect does not fill).
const FULL_DATAGRAM: usize = 1200;

/// The byte count of a reconnect ends this many RTTs, plus [`SETTLE_EXTRA`], after the
/// last measured event.
const SETTLE_RTTS: u32 = 5;
const SETTLE_EXTRA: Duration = Duration::from_millis(200);

/// Reconnect times and bytes through the link emulator, in units of its RTT.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "reconnect")]
struct Args {
    /// Round-trip times of the emulated link, ms (2 to 20000).
    #[arg(long, value_delimiter = ',', default_value = "50,300,600,1000", value_parser = rtt)]
    rtts: Vec<u64>,
    /// Runs per RTT and case; tables show the median.
    #[arg(long, default_value = "5", value_parser = env::positive)]
    runs: usize,
    /// Random loss probability on each direction of the link, in [0, 1).
    #[arg(long, default_value = "0", value_parser = probability)]
    loss: f64,
    /// Messages queued for the client while it is away.
    #[arg(long, default_value = "5", value_parser = env::positive)]
    missed: usize,
    /// Bound on every single wait, seconds.
    #[arg(long, default_value = "120", value_parser = env::seconds)]
    wait: Duration,
    /// Where the temporary data directory goes (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn rtt(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if (2..=20_000).contains(&ms) => Ok(ms),
        Ok(_) => Err("an RTT is 2 to 20000 ms".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p),
        Ok(_) => Err("a probability in [0, 1)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Logs progress to stderr, keeping stdout for the tables.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[reconnect] {}", format_args!($($arg)*)) };
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env::cores())
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// The three cases, in the order each run performs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Cold,
    Reconnect,
    Restart,
}

impl Case {
    const ALL: [Self; 3] = [Self::Cold, Self::Reconnect, Self::Restart];

    fn tag(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Reconnect => "reconnect",
            Self::Restart => "restart",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Cold => {
                "1. cold start: new Client, no ticket, no state dir; send() once connect() returned"
            }
            Self::Reconnect => {
                "2. reconnect in the same process after the outage; message queued while reconnecting"
            }
            Self::Restart => {
                "3. restart from the state dir (abandon, new Client); message left in the outbox"
            }
        }
    }

    /// The round trips an ideal client needs from the start to the first
    /// acknowledgement, and to the missed messages: 1 with 0-RTT (the flight goes out
    /// at once, the answers could come back in the gateway's first flight), 2 with a
    /// full handshake (docs/protocol.md section 17).
    fn ideal_rtts(self) -> u32 {
        match self {
            Self::Reconnect => 1,
            Self::Cold | Self::Restart => 2,
        }
    }
}

/// The timers of one RTT's gateway and clients.
#[derive(Debug, Clone, Copy)]
struct Timings {
    rtt: Duration,
    /// QUIC idle timeout on both sides.
    idle: Duration,
    /// The gateway's QUIC keep-alive interval (the client sends none).
    gateway_keepalive: Duration,
    /// How long the client waits for the handshake, `Opened` and each answer.
    request_timeout: Duration,
}

impl Timings {
    fn for_rtt(rtt_ms: u64) -> Self {
        let rtt = Duration::from_millis(rtt_ms);
        let idle = IDLE_MIN.max(rtt * IDLE_RTTS);
        Self {
            rtt,
            idle,
            gateway_keepalive: idle / 3,
            request_timeout: Duration::from_secs(30) + rtt * 10,
        }
    }
}

/// Bytes and packets that entered the link (UDP payloads, as the endpoints sent them).
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    up_packets: u64,
    up_bytes: u64,
    down_packets: u64,
    down_bytes: u64,
}

impl Traffic {
    fn between(before: &LinkStats, after: &LinkStats) -> Self {
        Self {
            up_packets: after.up.packets_in.saturating_sub(before.up.packets_in),
            up_bytes: after.up.bytes_in.saturating_sub(before.up.bytes_in),
            down_packets: after.down.packets_in.saturating_sub(before.down.packets_in),
            down_bytes: after.down.bytes_in.saturating_sub(before.down.bytes_in),
        }
    }

    fn total_bytes(&self) -> u64 {
        self.up_bytes + self.down_bytes
    }
}

/// The datagrams the tap saw in a window, in order, and the window's start.
#[derive(Debug, Clone)]
struct Sizes {
    datagrams: Vec<Datagram>,
    t0: Instant,
}

impl Sizes {
    /// How many datagrams `pick` accepts by size, and their bytes.
    fn count(&self, pick: impl Fn(usize) -> bool) -> (usize, usize) {
        let picked = self.datagrams.iter().filter(|d| pick(d.len));
        picked.fold((0, 0), |(count, bytes), d| (count + 1, bytes + d.len))
    }

    /// Datagrams of exactly [`FULL_DATAGRAM`] bytes (padded), and their bytes.
    fn padded(&self) -> (usize, usize) {
        self.count(|n| n == FULL_DATAGRAM)
    }

    /// Datagrams above [`FULL_DATAGRAM`] bytes (path MTU probes), and their bytes.
    fn probes(&self) -> (usize, usize) {
        self.count(|n| n > FULL_DATAGRAM)
    }

    /// `up: bytes@ms … / down: bytes@ms …` (ms since t0), for the progress log.
    fn describe(&self) -> String {
        let list = |up: bool| {
            self.datagrams
                .iter()
                .filter(|d| d.up == up)
                .map(|d| {
                    format!(
                        "{}@{:.0}",
                        d.len,
                        ms(d.at.saturating_duration_since(self.t0))
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!("up: {} / down: {}", list(true), list(false))
    }
}

/// The tap, with windows as this harness cuts them.
trait Cut {
    fn since_at(&self, mark: usize, t0: Instant) -> Sizes;
}

impl Cut for Tap {
    fn since_at(&self, mark: usize, t0: Instant) -> Sizes {
        Sizes {
            datagrams: self.since(mark),
            t0,
        }
    }
}

/// One run of one case. Times are from the start of the (re)connection (`t0`).
#[derive(Debug, Clone)]
struct Sample {
    /// Until the session was open: `connect()` returned, or `Connected` was reported.
    opened: Duration,
    /// (a) Until the gateway's receipt of the first message was in the application's
    /// hands.
    first_ack: Duration,
    /// Case 3 only: until a `send()` made once `connect()` returned got its receipt.
    send_after_open: Option<Duration>,
    /// (b) Until the last of the missed messages was handed to the application.
    caught_up: Duration,
    info: SessionInfo,
    traffic: Traffic,
    /// The same window's datagrams, by size.
    sizes: Sizes,
    /// Cases 2 and 3: from cutting the uplink to the client's `Reconnecting`.
    outage: Option<Duration>,
    /// Case 2: from `Reconnecting` to `t0` (must stay under [`BACKOFF_MIN`]).
    reaction: Option<Duration>,
}

/// The gateway of one RTT, with the sender of the missed messages and the offline
/// recipient of the measured client's messages.
struct Bench {
    running: RunningGateway,
    data_dir: PathBuf,
    base: PathBuf,
    addr: SocketAddr,
    cert_pem: Vec<u8>,
    timings: Timings,
    link: Impairment,
    missed: usize,
    wait: Duration,
    /// Sends the missed messages; connected directly, not through the emulated link.
    sender: Arc<Client>,
    /// Provisioned, never connected: messages to it are answered `Stored`.
    offline: String,
}

/// A provisioned principal.
struct User {
    address: String,
    token: String,
}

impl Bench {
    async fn start(base: &Path, rtt_ms: u64, args: &Args) -> Result<Self> {
        let timings = Timings::for_rtt(rtt_ms);
        let data_dir = base.join(format!("gateway-{rtt_ms}"));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.clone(),
            domains: vec![DomainEntry::Name(DOMAIN.into())],
            timeouts: Timeouts {
                idle_timeout_ms: ms(timings.idle),
                keepalive_ms: Some(ms(timings.gateway_keepalive)),
                client_keepalive_ms: ms(timings.gateway_keepalive),
                ..Timeouts::default()
            },
            ..GatewayConfig::default()
        };
        let running = start(config).await?;
        let addr = running.local_addr();
        let cert_pem = running.cert_pem();
        let link = Impairment {
            delay: timings.rtt / 2,
            loss: args.loss,
            ..Impairment::default()
        };
        let sender = add_user(&data_dir, "sender").await?;
        let offline = add_user(&data_dir, "offline").await?;
        let mut config = client_config(&timings, &cert_pem, addr, &sender);
        config.inbox = false;
        let client = bounded(args.wait, "the sender connects", Client::connect(config)).await??;
        Ok(Self {
            running,
            data_dir,
            base: base.to_owned(),
            addr,
            cert_pem,
            timings,
            link,
            missed: args.missed,
            wait: args.wait,
            sender: Arc::new(client),
            offline: offline.address,
        })
    }

    async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.sender.close()).await;
        self.running.shutdown().await;
    }

    async fn add_user(&self, name: &str) -> Result<User> {
        add_user(&self.data_dir, name).await
    }

    /// A client of `user` talking to `gateway` (the tap in front of the link emulator).
    fn client_config(&self, gateway: SocketAddr, user: &User) -> ClientConfig {
        client_config(&self.timings, &self.cert_pem, gateway, user)
    }

    /// A new emulated link to the gateway, seeded by the run.
    async fn link(&self, seed: u64) -> Result<Linkem> {
        let config = LinkConfig::new(self.addr)
            .symmetric(self.link.clone())
            .seed(seed);
        Ok(Linkem::start(config).await?)
    }

    /// The outage. Only the uplink is cut, so that the two sides notice it in a known
    /// order: the gateway hears nothing and parks the session one idle timeout later,
    /// while the client still hears the gateway's keep-alives until then, and gives up
    /// one idle timeout after the last of them. When the client reports
    /// `Reconnecting`, the gateway has parked the session for most of an idle timeout.
    fn cut_uplink(&self, link: &Linkem) -> Result<()> {
        let now = link.elapsed();
        let mut cut = self.link.clone();
        cut.blackouts.windows.push(Window {
            start: now,
            end: now + FOREVER,
        });
        link.set_up(cut)?;
        Ok(())
    }

    /// The link is whole again, both ways.
    fn restore(&self, link: &Linkem) -> Result<()> {
        link.set_both(self.link.clone())?;
        Ok(())
    }

    /// Queues the missed messages for `to` (directly, not through the link); each must
    /// be answered `Stored`. Returns their bodies.
    async fn queue_missed(&self, to: &str, tag: &str) -> Result<Vec<Vec<u8>>> {
        let bodies: Vec<Vec<u8>> = (0..self.missed)
            .map(|i| format!("{tag} missed {i}").into_bytes())
            .collect();
        let mut sends = JoinSet::new();
        for body in &bodies {
            let sender = Arc::clone(&self.sender);
            let to = to.to_owned();
            let body = body.clone();
            sends.spawn(async move { sender.send(to, body, None).await });
        }
        let all = async {
            while let Some(sent) = sends.join_next().await {
                let outcome = sent??;
                ensure!(
                    outcome.status == ReceiptStatus::Stored,
                    "a missed message was answered {:?}, not Stored",
                    outcome.status
                );
            }
            Ok(())
        };
        bounded(self.wait, "queueing the missed messages", all).await??;
        Ok(bodies)
    }

    /// A message to the offline recipient, with a fresh id.
    fn message(&self, body: &str) -> Message {
        Message {
            id: new_message_id(),
            to: self.offline.clone(),
            reply_to: None,
            content_type: None,
            body: body.as_bytes().to_vec(),
        }
    }

    /// After the measured events: lets the acknowledgement of the last message, the
    /// transport's acknowledgements and the path MTU search that follows every
    /// handshake (one probe per round trip, four each way with quinn's defaults) cross
    /// the link, then reads the counters.
    async fn settle(&self, link: &Linkem) -> LinkStats {
        tokio::time::sleep(SETTLE_RTTS * self.timings.rtt + SETTLE_EXTRA).await;
        link.stats()
    }

    /// Case 1. Before `t0`: a new principal, the missed messages queued for it.
    /// `t0`: `Client::connect` is called. (a) ends when the `send()` called as soon as
    /// `connect` returned returns `Stored`; (b) when the last missed message is handed
    /// over.
    async fn cold(&self, run: usize) -> Result<Sample> {
        let wait = self.wait;
        let tag = format!("cold-{run}");
        let user = self.add_user(&tag).await?;
        let link = self.link(run as u64).await?;
        let tap = Tap::start(link.addr()).await?;
        let config = self.client_config(tap.addr, &user);
        let missed = self.queue_missed(&user.address, &tag).await?;
        let before = link.stats();
        let mark = tap.mark();
        let t0 = Instant::now();
        let client = bounded(wait, "connect", Client::connect(config)).await??;
        let opened = t0.elapsed();
        let client = Arc::new(client);
        let mut events = Watcher::start(&client);
        let message = self.message("first after a cold start");
        let outcome = bounded(wait, "the first receipt", client.send_message(message)).await??;
        let first_ack = t0.elapsed();
        ensure!(
            outcome.status == ReceiptStatus::Stored,
            "answered {:?}",
            outcome.status
        );
        events
            .until(wait, "the missed messages", |w| w.all(&missed).is_some())
            .await?;
        let caught_up = events.all(&missed).unwrap_or(t0).duration_since(t0);
        let after = self.settle(&link).await;
        let sizes = tap.since_at(mark, t0);
        let info = client.session_info();
        finish(&client, events, link).await;
        Ok(Sample {
            opened,
            first_ack,
            send_after_open: None,
            caught_up,
            info,
            traffic: Traffic::between(&before, &after),
            sizes,
            outage: None,
            reaction: None,
        })
    }

    /// Case 2. Before `t0`: the client is connected (and has its session ticket), the
    /// uplink is cut, and the client reports `Reconnecting`; then the missed messages
    /// are queued, the link is restored, and `send()` is called (the message waits in
    /// the outbox). `t0`: `network_changed()` is called, which starts the reconnect
    /// attempt at once instead of after the backoff delay. (a) ends when that `send()`
    /// returns `Stored`; (b) when the last missed message is handed over.
    async fn reconnect(&self, run: usize) -> Result<Sample> {
        let wait = self.wait;
        let tag = format!("reconnect-{run}");
        let user = self.add_user(&tag).await?;
        let link = self.link(run as u64).await?;
        let tap = Tap::start(link.addr()).await?;
        let config = self.client_config(tap.addr, &user);
        let client = bounded(wait, "connect", Client::connect(config)).await??;
        let client = Arc::new(client);
        let mut events = Watcher::start(&client);
        // One round trip, so that the session ticket of the handshake has arrived.
        bounded(wait, "a fetch", client.fetch(self.sender.user())).await??;

        let cut = Instant::now();
        self.cut_uplink(&link)?;
        events
            .until(wait, "Reconnecting", |w| w.reconnecting.is_some())
            .await?;
        let noticed = events.reconnecting.unwrap_or(cut);
        let missed = self.queue_missed(&user.address, &tag).await?;
        self.restore(&link)?;
        let sending = {
            let client = Arc::clone(&client);
            let message = self.message("first after a reconnect");
            let mut send = Box::pin(async move {
                let outcome = client.send_message(message).await;
                (outcome, Instant::now())
            });
            // Polled once here, so that the message is in the outbox before the attempt
            // starts; the task then waits for the receipt.
            let early = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
            if let Poll::Ready((outcome, _)) = early {
                bail!("send() returned before the reconnect: {outcome:?}");
            }
            tokio::spawn(send)
        };
        let before = link.stats();
        let mark = tap.mark();
        let t0 = Instant::now();
        client.network_changed();
        let reaction = t0.duration_since(noticed);
        let (outcome, answered) = bounded(wait, "the first receipt", sending).await??;
        let outcome = outcome?;
        ensure!(
            outcome.status == ReceiptStatus::Stored,
            "answered {:?}",
            outcome.status
        );
        let first_ack = answered.duration_since(t0);
        events
            .until(wait, "Connected and the missed messages", |w| {
                w.connected.is_some() && w.all(&missed).is_some()
            })
            .await?;
        let info = client.session_info();
        let opened = events.connected.unwrap_or(t0).duration_since(t0);
        let caught_up = events.all(&missed).unwrap_or(t0).duration_since(t0);
        let after = self.settle(&link).await;
        let sizes = tap.since_at(mark, t0);
        finish(&client, events, link).await;
        Ok(Sample {
            opened,
            first_ack,
            send_after_open: None,
            caught_up,
            info,
            traffic: Traffic::between(&before, &after),
            sizes,
            outage: Some(noticed.duration_since(cut)),
            reaction: Some(reaction),
        })
    }

    /// Case 3. Before `t0`: a client with a state directory is connected, the uplink is
    /// cut, and the client reports `Reconnecting`; the application sends a message (it
    /// waits in the outbox and the state directory) and the client is abandoned (no
    /// goodbye, as if the process died). Then the missed messages are queued and the
    /// link is restored. `t0`: `Client::connect` is called with the same state
    /// directory. (a) ends when the receipt of the message left in the outbox arrives
    /// (`Event::Sent`, as nobody waits for it any more); (a′) when a `send()` called as
    /// soon as `connect` returned returns `Stored`; (b) when the last missed message is
    /// handed over.
    async fn restart(&self, run: usize) -> Result<Sample> {
        let wait = self.wait;
        let tag = format!("restart-{run}");
        let user = self.add_user(&tag).await?;
        let link = self.link(run as u64).await?;
        let tap = Tap::start(link.addr()).await?;
        let mut config = self.client_config(tap.addr, &user);
        config.state_dir = Some(
            self.base
                .join(format!("state-{}-{tag}", self.timings.rtt.as_millis())),
        );

        let old = bounded(wait, "connect", Client::connect(config.clone())).await??;
        let old = Arc::new(old);
        let mut events = Watcher::start(&old);
        let cut = Instant::now();
        self.cut_uplink(&link)?;
        events
            .until(wait, "Reconnecting", |w| w.reconnecting.is_some())
            .await?;
        let noticed = events.reconnecting.unwrap_or(cut);
        let left = self.message("left in the outbox");
        let left_id = left.id.clone();
        {
            // Handed over, not answered: it waits in the outbox and the state directory.
            let mut send = Box::pin(old.send_message(left));
            let early = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
            ensure!(
                early.is_pending(),
                "send() returned while offline: {early:?}"
            );
        }
        // The driver takes commands in order: once this one is refused, the message
        // before it is recorded.
        match bounded(wait, "a fetch", old.fetch(self.sender.user())).await? {
            Err(ClientError::NotConnected) => {}
            other => bail!("a fetch while reconnecting gave {other:?}, not NotConnected"),
        }
        events.task.abort();
        bounded(wait, "abandon", old.abandon()).await?;
        drop(events);
        drop(old);
        let missed = self.queue_missed(&user.address, &tag).await?;
        self.restore(&link)?;

        let before = link.stats();
        let mark = tap.mark();
        let t0 = Instant::now();
        let client = bounded(wait, "connect", Client::connect(config)).await??;
        let opened = t0.elapsed();
        let client = Arc::new(client);
        let mut events = Watcher::start(&client);
        let message = self.message("first after a restart");
        let outcome = bounded(wait, "a receipt", client.send_message(message)).await??;
        let send_after_open = t0.elapsed();
        ensure!(
            outcome.status == ReceiptStatus::Stored,
            "answered {:?}",
            outcome.status
        );
        events
            .until(wait, "the outbox's receipt and the missed messages", |w| {
                w.sent(&left_id).is_some() && w.all(&missed).is_some()
            })
            .await?;
        let (status, answered) = events.sent(&left_id).context("no receipt")?;
        ensure!(
            status == ReceiptStatus::Stored,
            "the message left in the outbox was answered {status:?}"
        );
        let first_ack = answered.duration_since(t0);
        let caught_up = events.all(&missed).unwrap_or(t0).duration_since(t0);
        let after = self.settle(&link).await;
        let sizes = tap.since_at(mark, t0);
        let info = client.session_info();
        finish(&client, events, link).await;
        Ok(Sample {
            opened,
            first_ack,
            send_after_open: Some(send_after_open),
            caught_up,
            info,
            traffic: Traffic::between(&before, &after),
            sizes,
            outage: Some(noticed.duration_since(cut)),
            reaction: None,
        })
    }
}

/// Provisions `name@example.com` in the gateway's data directory.
async fn add_user(data_dir: &Path, name: &str) -> Result<User> {
    let address = format!("{name}@{DOMAIN}");
    let dir = data_dir.to_owned();
    let user = address.clone();
    let token =
        tokio::task::spawn_blocking(move || users::add(&dir, &user, UserOptions::default()))
            .await??;
    Ok(User { address, token })
}

/// A client of `user` talking to `gateway`.
fn client_config(
    timings: &Timings,
    cert_pem: &[u8],
    gateway: SocketAddr,
    user: &User,
) -> ClientConfig {
    let mut config = ClientConfig::new(
        gateway.to_string(),
        user.address.clone(),
        user.token.clone(),
        cert_pem.to_vec(),
    );
    // The gateway pings (see `Bench::cut_uplink`); the client stays quiet.
    config.keepalive = Duration::ZERO;
    config.idle_timeout = timings.idle;
    config.request_timeout = timings.request_timeout;
    config
}

/// Says goodbye, stops the event task and the link, all bounded.
async fn finish(client: &Client, events: Watcher, link: Linkem) {
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    events.task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), link.shutdown()).await;
}

/// `work` bounded by `limit`, named in the error.
async fn bounded<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .with_context(|| format!("{what} did not finish within {limit:?}"))
}

/// What a client reported, with when the harness received it.
struct Watcher {
    rx: mpsc::UnboundedReceiver<(Event, Instant)>,
    task: JoinHandle<()>,
    reconnecting: Option<Instant>,
    connected: Option<Instant>,
    /// `Event::Sent`: message id, status, when.
    sent: Vec<(Vec<u8>, ReceiptStatus, Instant)>,
    /// `Event::Message`: body, when (first time only).
    messages: Vec<(Vec<u8>, Instant)>,
    disconnected: Option<String>,
}

impl Watcher {
    /// Takes every event of `client` (which also releases each message, so that it is
    /// acknowledged) and stamps it.
    fn start(client: &Arc<Client>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Arc::clone(client);
        let task = tokio::spawn(async move {
            while let Some(event) = client.next_event().await {
                if tx.send((event, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            task,
            reconnecting: None,
            connected: None,
            sent: Vec::new(),
            messages: Vec::new(),
            disconnected: None,
        }
    }

    fn note(&mut self, event: Event, at: Instant) {
        match event {
            Event::Connection(ConnectionState::Reconnecting { .. }) => {
                self.reconnecting.get_or_insert(at);
            }
            Event::Connection(ConnectionState::Connected) => {
                self.connected.get_or_insert(at);
            }
            Event::Connection(ConnectionState::Disconnected { reason }) => {
                self.disconnected = Some(reason);
            }
            Event::Sent(outcome) => self.sent.push((outcome.id, outcome.status, at)),
            Event::Message { message, .. }
                if !self.messages.iter().any(|(b, _)| *b == message.body) =>
            {
                self.messages.push((message.body, at));
            }
            _ => {}
        }
    }

    /// Takes events until `done` holds, at most `wait`.
    async fn until(
        &mut self,
        wait: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(self) {
            if let Some(reason) = &self.disconnected {
                bail!("disconnected while waiting for {what}: {reason}");
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((event, at))) => self.note(event, at),
                Ok(None) => bail!("the event stream ended while waiting for {what}"),
                Err(_) => bail!("{what}: not within {wait:?}"),
            }
        }
        Ok(())
    }

    /// When the last of `bodies` arrived, once all have.
    fn all(&self, bodies: &[Vec<u8>]) -> Option<Instant> {
        bodies
            .iter()
            .map(|body| {
                self.messages
                    .iter()
                    .find(|(b, _)| b == body)
                    .map(|(_, at)| *at)
            })
            .try_fold(None, |last: Option<Instant>, at| {
                at.map(|at| Some(last.map_or(at, |l| l.max(at))))
            })
            .flatten()
    }

    /// The receipt of message `id` that came as an event.
    fn sent(&self, id: &[u8]) -> Option<(ReceiptStatus, Instant)> {
        self.sent
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, status, at)| (*status, *at))
    }
}

/// The samples of one RTT and case.
struct Series {
    rtt_ms: u64,
    timings: Timings,
    case: Case,
    samples: Vec<Sample>,
}

async fn run(args: Args) -> Result<()> {
    let base = match &args.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("tern-reconnect-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("tern-reconnect-")
            .tempdir()?,
    };
    let environment = env::describe(base.path());
    let started = Instant::now();
    let mut results: Vec<Series> = Vec::new();
    for &rtt_ms in &args.rtts {
        let bench = Bench::start(base.path(), rtt_ms, &args).await?;
        let timings = bench.timings;
        progress!(
            "RTT {rtt_ms} ms: idle timeout {:?}, gateway keep-alive {:?}",
            timings.idle,
            timings.gateway_keepalive
        );
        let mut series: Vec<Series> = Case::ALL
            .iter()
            .map(|&case| Series {
                rtt_ms,
                timings,
                case,
                samples: Vec::with_capacity(args.runs),
            })
            .collect();
        for run in 0..args.runs {
            for (case, out) in Case::ALL.iter().zip(series.iter_mut()) {
                let sample = match case {
                    Case::Cold => bench.cold(run).await,
                    Case::Reconnect => bench.reconnect(run).await,
                    Case::Restart => bench.restart(run).await,
                }
                .with_context(|| format!("RTT {rtt_ms} ms, {}, run {run}", case.tag()))?;
                progress!(
                    "RTT {rtt_ms} ms, run {run}, {}: first ack {:.0} ms, caught up {:.0} ms, {:?}, resumed {}, {} B; datagrams {}",
                    case.tag(),
                    ms(sample.first_ack),
                    ms(sample.caught_up),
                    sample.info.zero_rtt,
                    sample.info.resumed,
                    sample.traffic.total_bytes(),
                    sample.sizes.describe(),
                );
                out.samples.push(sample);
            }
        }
        bench.stop().await;
        results.extend(series);
    }
    report(&args, &environment, &results, started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median (the middle one; the upper middle of an even count) and the extremes.
fn spread(mut values: Vec<Duration>) -> Option<(Duration, Duration, Duration)> {
    let s = stats::summarise(&mut values)?;
    Some((s.p50, s.min, s.max))
}

/// `median (min–max)` in ms.
fn ms_cell(values: Vec<Duration>) -> String {
    match spread(values) {
        Some((mid, lo, hi)) if lo == hi => format!("{:.0}", ms(mid)),
        Some((mid, lo, hi)) => format!("{:.0} ({:.0}–{:.0})", ms(mid), ms(lo), ms(hi)),
        None => "–".into(),
    }
}

/// The median in RTTs, two decimals.
fn rtt_cell(values: Vec<Duration>, rtt: Duration) -> String {
    match spread(values) {
        Some((mid, _, _)) => format!("{:.2}", mid.as_secs_f64() / rtt.as_secs_f64()),
        None => "–".into(),
    }
}

/// The median of whole numbers.
fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

fn zero_rtt_name(z: ZeroRtt) -> &'static str {
    match z {
        ZeroRtt::NotTried => "full handshake",
        ZeroRtt::Sent { accepted: true } => "0-RTT, accepted",
        ZeroRtt::Sent { accepted: false } => "0-RTT, refused",
        _ => "other",
    }
}

/// How often each value occurred, e.g. `0-RTT, accepted ×5`.
fn tally<T: PartialEq + Copy>(
    values: impl Iterator<Item = T>,
    name: impl Fn(T) -> String,
) -> String {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(seen, _)| *seen == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(v, n)| format!("{} ×{n}", name(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(
    args: &Args,
    environment: &[(&'static str, String)],
    results: &[Series],
    elapsed: Duration,
) -> Result<()> {
    println!("# tern reconnect benchmarks\n");
    println!("Command: `{}`\n", env::command_line("reconnect"));
    println!("| environment | |\n|---|---|");
    for (name, value) in environment {
        println!("| {name} | {value} |");
    }
    println!(
        "| link | tern_tests::linkem on 127.0.0.1: one-way delay RTT/2 each way, loss {} each way, seed = run number; only the measured client goes through it |",
        args.loss
    );
    println!(
        "| timers | QUIC idle timeout max({} s, {IDLE_RTTS} × RTT) on gateway and client; gateway keep-alive idle/3; client keep-alive off; resume window 30 s |",
        IDLE_MIN.as_secs_f64()
    );
    println!(
        "| parameters | RTTs {:?} ms, {} runs per RTT and case, {} missed messages |",
        args.rtts, args.runs, args.missed
    );
    println!("| wall time | {:.0} s |", elapsed.as_secs_f64());
    println!();

    println!("## From the start of the (re)connection (t0)\n");
    println!(
        "Median of {} runs, (min–max) in ms; \"in RTT\" is the median divided by the link's RTT. \"ideal\" is the round trips the protocol needs (docs/protocol.md section 17): 1 with 0-RTT, 2 with a full handshake.\n",
        args.runs
    );
    println!(
        "| RTT ms | case | session open, ms | in RTT | first message acknowledged, ms | in RTT | ideal | all {} missed messages received, ms | in RTT | ideal | first flight | session resumed |",
        args.missed
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in results {
        let rtt = s.timings.rtt;
        let pick = |f: fn(&Sample) -> Duration| s.samples.iter().map(f).collect::<Vec<_>>();
        let ideal = s.case.ideal_rtts();
        println!(
            "| {} | {} | {} | {} | {} | **{}** | {ideal} | {} | **{}** | {ideal} | {} | {} |",
            s.rtt_ms,
            s.case.title(),
            ms_cell(pick(|x| x.opened)),
            rtt_cell(pick(|x| x.opened), rtt),
            ms_cell(pick(|x| x.first_ack)),
            rtt_cell(pick(|x| x.first_ack), rtt),
            ms_cell(pick(|x| x.caught_up)),
            rtt_cell(pick(|x| x.caught_up), rtt),
            tally(s.samples.iter().map(|x| x.info.zero_rtt), |z| {
                zero_rtt_name(z).into()
            }),
            tally(s.samples.iter().map(|x| x.info.resumed), |r| {
                if r { "yes" } else { "no" }.into()
            }),
        );
        let later: Vec<Duration> = s.samples.iter().filter_map(|x| x.send_after_open).collect();
        if !later.is_empty() {
            println!(
                "| {} | 3′. the same restart: send() once connect() returned | | | {} | **{}** | 2 | | | | | |",
                s.rtt_ms,
                ms_cell(later.clone()),
                rtt_cell(later, rtt),
            );
        }
    }
    println!();

    println!("## Bytes on the wire for one reconnect\n");
    println!(
        "UDP payload bytes that entered the link, from t0 until {SETTLE_RTTS} RTT + {} ms after both (a) and (b) happened (so that the last acknowledgements and the path MTU search after the handshake are in). Median of {} runs per column (total: min–max). Case 3 carries two messages (the one left in the outbox and the one sent after connect()). The gateway's keep-alives (every idle/3) and their acknowledgements falling in the window are counted too.\n",
        SETTLE_EXTRA.as_millis(),
        args.runs
    );
    println!(
        "| RTT ms | case | packets up | bytes up | packets down | bytes down | bytes in all | of which {FULL_DATAGRAM}-byte datagrams (padded): n, bytes | of which larger datagrams (path MTU probes): n, bytes | handshakes of the client so far |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in results {
        let col =
            |f: fn(&Traffic) -> u64| median_u64(s.samples.iter().map(|x| f(&x.traffic)).collect());
        let totals: Vec<u64> = s.samples.iter().map(|x| x.traffic.total_bytes()).collect();
        let lo = totals.iter().min().copied().unwrap_or(0);
        let hi = totals.iter().max().copied().unwrap_or(0);
        let total = if lo == hi {
            format!("{lo}")
        } else {
            format!("{} ({lo}–{hi})", median_u64(totals.clone()))
        };
        let sizes = |f: fn(&Sizes) -> (usize, usize)| {
            let pairs: Vec<(usize, usize)> = s.samples.iter().map(|x| f(&x.sizes)).collect();
            let n = median_u64(pairs.iter().map(|p| p.0 as u64).collect());
            let bytes = median_u64(pairs.iter().map(|p| p.1 as u64).collect());
            format!("{n}, {bytes}")
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {total} | {} | {} | {} |",
            s.rtt_ms,
            s.case.tag(),
            col(|t| t.up_packets),
            col(|t| t.up_bytes),
            col(|t| t.down_packets),
            col(|t| t.down_bytes),
            sizes(Sizes::padded),
            sizes(Sizes::probes),
            tally(s.samples.iter().map(|x| x.info.connections), |c| c
                .to_string()),
        );
    }
    println!();

    println!("## The outage (cases 2 and 3)\n");
    println!(
        "From cutting the uplink to the client's `Reconnecting` (the gateway gives up after one idle timeout, the client one idle timeout after the gateway's last keep-alive; QUIC stretches each to at least 3 PTO), and, in case 2, from `Reconnecting` to t0 (the harness must call `network_changed()` before the client's own first attempt, {} ms at the earliest).\n",
        BACKOFF_MIN.as_millis()
    );
    println!(
        "| RTT ms | idle timeout ms | case | cut → Reconnecting, ms | Reconnecting → t0, ms (max) |"
    );
    println!("|---|---|---|---|---|");
    let mut late = false;
    for s in results.iter().filter(|s| s.case != Case::Cold) {
        let outage: Vec<Duration> = s.samples.iter().filter_map(|x| x.outage).collect();
        let reaction = s.samples.iter().filter_map(|x| x.reaction).max();
        late |= reaction.is_some_and(|r| r >= BACKOFF_MIN);
        println!(
            "| {} | {} | {} | {} | {} |",
            s.rtt_ms,
            s.timings.idle.as_millis(),
            s.case.tag(),
            ms_cell(outage),
            reaction.map_or_else(|| "–".into(), |r| format!("{:.1}", ms(r))),
        );
    }
    if late {
        println!(
            "\n**Warning:** in some runs t0 came {} ms or more after `Reconnecting`: the client's own attempt may have started first, and those runs' figures are too short.",
            BACKOFF_MIN.as_millis()
        );
    }
    println!();

    println!("## Every run\n");
    println!(
        "| RTT ms | case | run | open ms | first ack ms | 3′ ms | missed ms | first flight | resumed | bytes up / down |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in results {
        for (i, x) in s.samples.iter().enumerate() {
            println!(
                "| {} | {} | {i} | {:.0} | {:.0} | {} | {:.0} | {} | {} | {} / {} |",
                s.rtt_ms,
                s.case.tag(),
                ms(x.opened),
                ms(x.first_ack),
                x.send_after_open
                    .map_or_else(|| "–".into(), |d| format!("{:.0}", ms(d))),
                ms(x.caught_up),
                zero_rtt_name(x.info.zero_rtt),
                if x.info.resumed { "yes" } else { "no" },
                x.traffic.up_bytes,
                x.traffic.down_bytes,
            );
        }
    }
    Ok(())
}
