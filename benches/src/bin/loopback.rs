//! Loopback harness: publish-to-notify latency, message round trip and throughput of a
//! real tern gateway (in this process, SQLite on disk in a temporary directory) with
//! real `tern-client`s over QUIC on 127.0.0.1, next to baselines measured in the same
//! run: a raw quinn echo round trip and raw SQLite commits with the gateway's settings.
//!
//! ```sh
//! cargo run --release -p tern-benches --bin loopback -- [--runs N] [--messages M]
//! ```
//!
//! Prints Markdown on stdout (progress goes to stderr). Every phase is bounded by
//! `--phase-timeout`; every single wait by `--wait`. See `docs/benchmarks.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tern_benches::baseline::{self, CommitRun, EchoServer};
use tern_benches::env::FlushCounter;
use tern_benches::stats::{self, Summary, micros, per_second, ratio, ratio_of};
use tern_benches::{cpu, env, samples};
use tern_client::{Client, ClientConfig, Event, Presence, ReceiptStatus};
use tern_gateway::config::{DomainEntry, DomainTable, GatewayConfig, RateTable};
use tern_gateway::runtime::{RunningGateway, start};
use tern_gateway::users::{self, UserOptions};
use tern_wire::Up;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

const DOMAIN: &str = "example.com";
/// Loopback latency and throughput of one gateway, against same-run baselines.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loopback")]
struct Args {
    /// Latency samples per measurement.
    #[arg(long, default_value = "1000", value_parser = env::positive)]
    runs: usize,
    /// Messages per throughput workload.
    #[arg(long, default_value = "20000", value_parser = env::positive)]
    messages: usize,
    /// Sending clients in the throughput workloads.
    #[arg(long, default_value = "4", value_parser = env::positive)]
    senders: usize,
    /// Sends in flight per sending client.
    #[arg(long, default_value = "64", value_parser = env::positive)]
    window: usize,
    /// Unmeasured round trips before each latency series.
    #[arg(long, default_value = "50")]
    warmup: usize,
    /// Messages of the one-at-a-time stored workload.
    #[arg(long, default_value = "1000")]
    sequential: usize,
    /// Bound on each phase, seconds.
    #[arg(long = "phase-timeout", default_value = "180", value_parser = env::seconds)]
    phase_timeout: Duration,
    /// Bound on each single request or event, seconds.
    #[arg(long, default_value = "30", value_parser = env::seconds)]
    wait: Duration,
    /// Where the temporary data directory goes (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let workers = env::cores();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(TOKIO_THREADS)
        .enable_all()
        .build()?;
    runtime.block_on(run(args, workers))
}

/// Logs progress to stderr, keeping stdout for the tables.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[loopback] {}", format_args!($($arg)*)) };
}

/// Runs `work` bounded by `limit`, naming the phase in errors and progress.
async fn phase<T>(name: &str, limit: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    progress!("{name} ...");
    let started = Instant::now();
    let out = tokio::time::timeout(limit, work)
        .await
        .with_context(|| format!("phase {name:?} did not finish within {limit:?}"))?
        .with_context(|| format!("phase {name:?} failed"))?;
    progress!("{name}: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(out)
}

/// Reads the device flush counter (if there is one) and the threads' CPU times.
#[derive(Debug, Clone)]
struct Meter(Option<FlushCounter>);

/// The counters at the start of a measurement.
struct Mark {
    flushes: Option<u64>,
    cpu: cpu::Snapshot,
}

/// What the counters say about a measurement.
struct Measured {
    /// Device flushes.
    flushes: Option<u64>,
    /// CPU time per thread name.
    cpu: cpu::Usage,
}

impl Meter {
    fn mark(&self) -> Mark {
        Mark {
            flushes: self.read(),
            cpu: cpu::Snapshot::take(),
        }
    }

    fn read(&self) -> Option<u64> {
        self.0.as_ref().and_then(FlushCounter::read)
    }

    fn since(&self, mark: Mark) -> Measured {
        let cpu = cpu::Snapshot::take().since(&mark.cpu);
        let flushes = self
            .read()
            .zip(mark.flushes)
            .map(|(now, then)| now.saturating_sub(then));
        Measured { flushes, cpu }
    }
}

/// The gateway's hub thread, as the kernel names it.
const HUB_THREAD: &str = "tern-hub";
/// The tokio threads of this process (clients, the gateway's connection tasks, QUIC).
const TOKIO_THREADS: &str = "tokio-worker";

/// A flush count, or `n/a`.
fn count(flushes: Option<u64>) -> String {
    flushes.map_or_else(|| "n/a".into(), |f| f.to_string())
}

/// `things ÷ flushes` with `decimals`, or `n/a`.
fn per(things: usize, flushes: Option<u64>, decimals: usize) -> String {
    match flushes {
        Some(f) if f > 0 => format!("{:.*}", decimals, things as f64 / f as f64),
        _ => "n/a".into(),
    }
}

/// `flushes ÷ things` with two decimals, or `n/a`.
fn flushes_per(flushes: Option<u64>, things: usize) -> String {
    match flushes {
        Some(f) if things > 0 => format!("{:.2}", f as f64 / things as f64),
        _ => "n/a".into(),
    }
}

async fn run(args: Args, workers: usize) -> Result<()> {
    let base = match &args.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("tern-loopback-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("tern-loopback-")
            .tempdir()?,
    };
    let environment = env::describe(base.path());
    let limit = args.phase_timeout;
    let wait = args.wait;
    let meter = Meter(FlushCounter::for_dir(base.path()));
    let f = &meter;
    // The echo payload is as long as a `Send` frame with a 40-byte message.
    let payload = tern_wire::codec::encode(&Up::Send {
        req: 7,
        msg: samples::message(),
    })
    .len();

    // Baselines first, then tern, then the baselines again: ratios are taken against
    // both halves pooled, which evens out drift over the run.
    let echo = EchoServer::start()?;
    let mut echo_before = phase(
        "raw QUIC echo (before)",
        limit,
        echo.round_trips(payload, args.warmup, args.runs, wait),
    )
    .await?;
    let sqlite_before = phase(
        "raw SQLite, 1 row per commit (before)",
        limit,
        raw_commits(base.path().join("raw-1-before.db"), 1, 2000, limit, f),
    )
    .await?;
    let sqlite_batch = phase(
        "raw SQLite, 256 rows per commit",
        limit,
        raw_commits(base.path().join("raw-256.db"), 256, 200, limit, f),
    )
    .await?;

    let data = base.path().join("gateway");
    let gw = phase("gateway start", limit, Gateway::start(&data)).await?;
    let notify = phase(
        "publish -> notify",
        limit,
        publish_notify(&gw, args.warmup, args.runs, wait, f),
    )
    .await?;
    let message = phase(
        "send -> receive -> Delivered",
        limit,
        message_round_trip(&gw, args.warmup, args.runs, wait, f),
    )
    .await?;
    let online = Workload {
        tag: "on",
        senders: args.senders,
        window: args.window,
        messages: args.messages,
        online: true,
    };
    let online = phase(
        "throughput, recipients online",
        limit,
        online.run(&gw, wait, f),
    )
    .await?;
    let offline = Workload {
        tag: "off",
        online: false,
        ..online.workload
    };
    let offline = phase(
        "throughput, recipients offline",
        limit,
        offline.run(&gw, wait, f),
    )
    .await?;
    let drained = phase(
        "stored inboxes drained",
        limit,
        drain(&gw, &offline.receivers, wait, f),
    )
    .await?;
    let sequential = Workload {
        tag: "seq",
        senders: 1,
        window: 1,
        messages: args.sequential.max(1),
        online: false,
    };
    let sequential = phase(
        "throughput, one at a time, offline",
        limit,
        sequential.run(&gw, wait, f),
    )
    .await?;
    phase("gateway shutdown", limit, async {
        gw.running.shutdown().await;
        Ok(())
    })
    .await?;
    let sqlite_after = phase(
        "raw SQLite, 1 row per commit (after)",
        limit,
        raw_commits(base.path().join("raw-1-after.db"), 1, 2000, limit, f),
    )
    .await?;
    let mut echo_after = phase(
        "raw QUIC echo (after)",
        limit,
        echo.round_trips(payload, args.warmup, args.runs, wait),
    )
    .await?;
    echo.stop();

    // Report.
    let mut echo_both = [echo_before.as_slice(), echo_after.as_slice()].concat();
    let quic = summary(&mut echo_both)?;
    let quic_before = summary(&mut echo_before)?;
    let quic_after = summary(&mut echo_after)?;
    let sqlite_one = sqlite_before.pooled(&sqlite_after);
    println!("# tern loopback benchmarks\n");
    println!("Command: `{}`\n", env::command_line("loopback"));
    println!("| environment | |\n|---|---|");
    for (name, value) in environment {
        println!("| {name} | {value} |");
    }
    println!(
        "| tokio worker threads | {workers} (gateway, clients and baselines share them; the hub has its own thread) |"
    );
    let counter = meter.0.as_ref().map_or_else(
        || "none (no block device under the data directory)".to_owned(),
        |c| format!("/proc/diskstats, device {} (device-wide)", c.device()),
    );
    println!("| flush counter | {counter} |");
    println!(
        "| parameters | runs {} (+{} warm-up), messages {}, senders {}, window {}, sequential {} |",
        args.runs, args.warmup, args.messages, args.senders, args.window, args.sequential
    );
    println!();

    println!("## Baselines (same run)\n");
    println!(
        "| baseline | n | min µs | p50 µs | p99 µs | max µs | rate | device flushes (per commit) | CPU µs per commit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (when, s) in [
        ("before", &quic_before),
        ("after", &quic_after),
        ("**both (the base of ratios)**", &quic),
    ] {
        println!(
            "| raw QUIC echo round trip, {payload} B, {when} | {} | | | |",
            cells(s)
        );
    }
    for (when, raw) in [
        ("1 row, before", &sqlite_before),
        ("1 row, after", &sqlite_after),
        ("1 row, **both (the base of ratios)**", &sqlite_one),
        ("256 rows", &sqlite_batch),
    ] {
        let run = &raw.run;
        let mut latencies = run.latencies.clone();
        let s = summary(&mut latencies)?;
        let mut rate = format!("{:.0} commits/s", run.commits_per_second());
        if run.rows_per_commit > 1 {
            rate.push_str(&format!(" = {:.0} rows/s", run.rows_per_second()));
        }
        println!(
            "| raw SQLite commit (WAL, synchronous=FULL) of {when} | {} | {rate} | {} ({}) | {} |",
            cells(&s),
            count(raw.flushes),
            flushes_per(raw.flushes, run.commits),
            micros(raw.cpu / u32::try_from(run.commits.max(1)).unwrap_or(u32::MAX)),
        );
    }
    println!();

    println!("## Latency (ratios against the raw QUIC echo, both)\n");
    println!(
        "| measurement | n | min µs | p50 µs | p99 µs | max µs | p50 ÷ QUIC p50 | p99 ÷ QUIC p99 | device flushes per run | CPU µs per run: hub thread / whole process |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let runs = args.runs + args.warmup;
    let mut rows = [
        (
            "publish() → watcher's Notify event",
            notify.first,
            &notify.measured,
        ),
        (
            "publish() → publisher's Ok",
            notify.second,
            &notify.measured,
        ),
        (
            "send() → recipient's Message event (one way)",
            message.first,
            &message.measured,
        ),
        (
            "send() → Delivered receipt (round trip)",
            message.second,
            &message.measured,
        ),
    ];
    for (name, samples, measured) in &mut rows {
        let s = summary(samples)?;
        let per_run = |d: Duration| micros(d / u32::try_from(runs).unwrap_or(u32::MAX));
        println!(
            "| {name} | {} | {} | {} | {} | {} / {} |",
            cells(&s),
            ratio_of(s.p50, quic.p50),
            ratio_of(s.p99, quic.p99),
            flushes_per(measured.flushes, runs),
            per_run(measured.cpu.of(HUB_THREAD).cpu),
            per_run(measured.cpu.total_cpu()),
        );
    }
    println!();

    let commit_rate = sqlite_one.run.commits_per_second();
    println!("## Throughput (ratios against raw SQLite 1-row commits/s, both)\n");
    println!(
        "| workload | senders × window | messages | seconds | msgs/s | ÷ raw commits/s | send p50 µs | send p99 µs | device flushes | msgs per flush | outcomes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu_rows = Vec::new();
    for (name, result) in [
        ("recipients online: sent → Delivered", &online),
        ("recipients offline: sent → Stored", &offline),
        ("one at a time, offline: sent → Stored", &sequential),
    ] {
        let w = &result.workload;
        let mut latencies = result.latencies.clone();
        let s = summary(&mut latencies)?;
        let rate = per_second(w.messages, result.elapsed);
        let flushes = result.measured.as_ref().and_then(|m| m.flushes);
        println!(
            "| {name} | {} × {} | {} | {:.2} | {rate:.0} | {} | {} | {} | {} | {} | {} |",
            w.senders,
            w.window,
            w.messages,
            result.elapsed.as_secs_f64(),
            ratio(rate, commit_rate),
            micros(s.p50),
            micros(s.p99),
            count(flushes),
            per(w.messages, flushes, 1),
            result.outcomes(),
        );
        if let Some(received) = result.received {
            let rate = per_second(w.messages, received);
            println!(
                "| … the same, until the last message was taken by its recipient | | {} | {:.2} | {rate:.0} | {} | | | | | |",
                w.messages,
                received.as_secs_f64(),
                ratio(rate, commit_rate),
            );
        }
        if let Some(measured) = &result.measured {
            cpu_rows.push((name, w.messages, measured));
        }
    }
    let rate = per_second(drained.messages, drained.elapsed);
    println!(
        "| stored inboxes drained: {} recipients connect and take all | – | {} | {:.2} | {rate:.0} | {} | | | {} | {} | {} taken |",
        drained.recipients,
        drained.messages,
        drained.elapsed.as_secs_f64(),
        ratio(rate, commit_rate),
        count(drained.measured.flushes),
        per(drained.messages, drained.measured.flushes, 1),
        drained.messages,
    );
    cpu_rows.push((
        "stored inboxes drained",
        drained.messages,
        &drained.measured,
    ));
    println!();
    println!(
        "Raw SQLite baseline: {commit_rate:.0} commits/s of 1 row; {:.0} rows/s in commits of 256 rows.",
        sqlite_batch.run.rows_per_second()
    );
    println!();

    println!("## Where the CPU went during the throughput workloads\n");
    println!(
        "Shares of wall time (100% = one core busy all along; {workers} cores = {}%). \"Waiting\" is time a thread was ready to run but had no CPU.\n",
        100 * workers
    );
    println!(
        "| workload | wall s | whole process CPU | hub thread running | hub thread waiting | tokio threads running | hub CPU µs per message | process CPU µs per message |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, messages, measured) in cpu_rows {
        let usage = &measured.cpu;
        let hub = usage.of(HUB_THREAD);
        let tokio = usage.of(TOKIO_THREADS);
        let per_message =
            |d: Duration| micros(d / u32::try_from(messages.max(1)).unwrap_or(u32::MAX));
        println!(
            "| {name} | {:.2} | {} | {} | {} | {} | {} | {} |",
            usage.wall.as_secs_f64(),
            usage.percent(usage.total_cpu()),
            usage.percent(hub.cpu),
            usage.percent(hub.waiting),
            usage.percent(tokio.cpu),
            per_message(hub.cpu),
            per_message(usage.total_cpu()),
        );
    }
    Ok(())
}

fn summary(samples: &mut [Duration]) -> Result<Summary> {
    stats::summarise(samples).context("no samples")
}

/// `n | min | p50 | p99 | max` table cells, in µs.
fn cells(s: &Summary) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        s.n,
        micros(s.min),
        micros(s.p50),
        micros(s.p99),
        micros(s.max)
    )
}

/// A raw SQLite baseline and the device flushes and CPU it took.
struct RawCommits {
    run: CommitRun,
    flushes: Option<u64>,
    /// CPU time of the whole process meanwhile (nothing else runs then).
    cpu: Duration,
}

impl RawCommits {
    /// Two runs of the same kind as one.
    fn pooled(&self, other: &Self) -> Self {
        Self {
            run: CommitRun {
                rows_per_commit: self.run.rows_per_commit,
                commits: self.run.commits + other.run.commits,
                elapsed: self.run.elapsed + other.run.elapsed,
                latencies: [
                    self.run.latencies.as_slice(),
                    other.run.latencies.as_slice(),
                ]
                .concat(),
            },
            flushes: self.flushes.zip(other.flushes).map(|(a, b)| a + b),
            cpu: self.cpu + other.cpu,
        }
    }
}

/// Raw SQLite commits of `rows` rows each to a new file `path`, off the runtime.
async fn raw_commits(
    path: PathBuf,
    rows: usize,
    commits: usize,
    limit: Duration,
    meter: &Meter,
) -> Result<RawCommits> {
    let budget = limit.min(Duration::from_secs(20));
    let mark = meter.mark();
    let run = tokio::task::spawn_blocking(move || {
        baseline::sqlite_commits(&path, rows, 100, commits, budget)
    })
    .await??;
    let measured = meter.since(mark);
    Ok(RawCommits {
        run,
        flushes: measured.flushes,
        cpu: measured.cpu.total_cpu(),
    })
}

/// The gateway under test, in this process, with its data in `data_dir`.
struct Gateway {
    running: RunningGateway,
    data_dir: PathBuf,
    addr: SocketAddr,
    cert_pem: Vec<u8>,
}

impl Gateway {
    async fn start(data_dir: &Path) -> Result<Self> {
        let config = GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            // A throughput benchmark measures the pipeline, not the rate limiter: every
            // per-principal limit off (0).
            domains: vec![DomainEntry::Table(DomainTable {
                name: DOMAIN.into(),
                presence: true,
                im: true,
                rates: RateTable {
                    messages_per_minute: 0,
                    subscriptions_per_minute: 0,
                    fetches_per_minute: 0,
                    burst: 1,
                },
                anonymous: false,
                address_rates: None,
            })],
            ..GatewayConfig::default()
        };
        let running = start(config).await?;
        Ok(Self {
            addr: running.local_addr(),
            cert_pem: running.cert_pem(),
            running,
            data_dir: data_dir.to_owned(),
        })
    }

    /// Provisions `name@example.com`; returns its address and token.
    async fn add_user(&self, name: &str) -> Result<(String, String)> {
        let address = format!("{name}@{DOMAIN}");
        let dir = self.data_dir.clone();
        let user = address.clone();
        let token =
            tokio::task::spawn_blocking(move || users::add(&dir, &user, UserOptions::default()))
                .await??;
        Ok((address, token))
    }

    /// Connects as `address`; `inbox` says whether the client takes inbox items.
    async fn connect(&self, address: &str, token: &str, inbox: bool) -> Result<Arc<Client>> {
        let mut config = ClientConfig::new(
            self.addr.to_string(),
            address.into(),
            token.into(),
            self.cert_pem.clone(),
        );
        config.inbox = inbox;
        config.reconnect = false;
        let client = Client::connect(config)
            .await
            .with_context(|| format!("{address} connects"))?;
        Ok(Arc::new(client))
    }

    /// A new user and a client connected as it.
    async fn user(&self, name: &str, inbox: bool) -> Result<Arc<Client>> {
        let (address, token) = self.add_user(name).await?;
        self.connect(&address, &token, inbox).await
    }
}

/// Says goodbye on every client at once, bounded.
async fn close_all(clients: &[Arc<Client>]) {
    let mut set = JoinSet::new();
    for client in clients {
        let client = Arc::clone(client);
        set.spawn(async move { client.close().await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), set.join_all()).await;
}

fn presence(note: String) -> Presence {
    let mut presence = samples::presence();
    if let Some(tuple) = presence.tuples.first_mut() {
        tuple.note = Some(note);
    }
    presence
}

/// Waits for the first value from `rx` that `pick` accepts, bounded by `wait`.
async fn expect<T, U>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    wait: Duration,
    mut pick: impl FnMut(T) -> Option<U>,
) -> Result<U> {
    tokio::time::timeout(wait, async {
        while let Some(value) = rx.recv().await {
            if let Some(found) = pick(value) {
                return Ok(found);
            }
        }
        bail!("the event stream ended")
    })
    .await
    .context("the expected event did not arrive in time")?
}

/// Two series measured on the same runs, and the device flushes during those runs.
struct Pair {
    first: Vec<Duration>,
    second: Vec<Duration>,
    measured: Measured,
}

/// a. A watcher subscribed to a publisher: time from calling `publish` to the watcher's
/// `Presence` event (`first`), and to the publisher's `Ok` (`second`).
async fn publish_notify(
    gw: &Gateway,
    warmup: usize,
    runs: usize,
    wait: Duration,
    meter: &Meter,
) -> Result<Pair> {
    let publisher = gw.user("publisher", false).await?;
    let watcher = gw.user("watcher", false).await?;
    watcher.subscribe(format!("publisher@{DOMAIN}")).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watching = {
        let watcher = Arc::clone(&watcher);
        tokio::spawn(async move {
            while let Some(event) = watcher.next_event().await {
                if let Event::Presence(doc) = event {
                    let at = Instant::now();
                    let note = doc.presence.tuples.first().and_then(|t| t.note.clone());
                    if tx.send((note, at)).is_err() {
                        break;
                    }
                }
            }
        })
    };
    let mut notify = Vec::with_capacity(runs);
    let mut ok = Vec::with_capacity(runs);
    let mark = meter.mark();
    for i in 0..warmup + runs {
        let note = format!("run {i}");
        let started = Instant::now();
        tokio::time::timeout(wait, publisher.publish(presence(note.clone())))
            .await
            .context("publish timed out")??;
        let answered = started.elapsed();
        let seen = expect(&mut rx, wait, |(n, at)| {
            (n.as_deref() == Some(note.as_str())).then_some(at)
        })
        .await?;
        if i >= warmup {
            notify.push(seen.duration_since(started));
            ok.push(answered);
        }
    }
    let measured = meter.since(mark);
    watching.abort();
    close_all(&[publisher, watcher]).await;
    Ok(Pair {
        first: notify,
        second: ok,
        measured,
    })
}

/// The index a benchmark message body starts with.
fn body(i: usize) -> Vec<u8> {
    format!("{i:08} see you at the station in ten minutes").into_bytes()
}

fn index_of(body: &[u8]) -> Option<usize> {
    std::str::from_utf8(body.get(..8)?).ok()?.parse().ok()
}

/// b. Alice sends to Bob, online: time from calling `send` to Bob's `Message` event
/// (one way, `first`), and to Alice's `Delivered` receipt (round trip, `second`: Bob's
/// client must take the message and acknowledge it).
async fn message_round_trip(
    gw: &Gateway,
    warmup: usize,
    runs: usize,
    wait: Duration,
    meter: &Meter,
) -> Result<Pair> {
    let alice = gw.user("alice", false).await?;
    let bob = gw.user("bob", true).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiving = {
        let bob = Arc::clone(&bob);
        tokio::spawn(async move {
            // Asking for the next event acknowledges the previous message.
            while let Some(event) = bob.next_event().await {
                if let Event::Message { message, .. } = event {
                    let at = Instant::now();
                    if tx.send((index_of(&message.body), at)).is_err() {
                        break;
                    }
                }
            }
        })
    };
    let mut one_way = Vec::with_capacity(runs);
    let mut round_trip = Vec::with_capacity(runs);
    let mark = meter.mark();
    for i in 0..warmup + runs {
        let started = Instant::now();
        let send = alice.send(format!("bob@{DOMAIN}"), body(i), None);
        let outcome = tokio::time::timeout(wait, send)
            .await
            .context("send timed out")??;
        let answered = started.elapsed();
        if outcome.status != ReceiptStatus::Delivered {
            bail!(
                "message {i} was answered {:?}, not Delivered",
                outcome.status
            );
        }
        let seen = expect(&mut rx, wait, |(n, at)| (n == Some(i)).then_some(at)).await?;
        if i >= warmup {
            one_way.push(seen.duration_since(started));
            round_trip.push(answered);
        }
    }
    let measured = meter.since(mark);
    receiving.abort();
    close_all(&[alice, bob]).await;
    Ok(Pair {
        first: one_way,
        second: round_trip,
        measured,
    })
}

/// c. A throughput workload: `senders` clients each keep `window` sends in flight to
/// their own recipient until `messages` have been answered in all. Online recipients
/// take every message (and so acknowledge it); offline ones are provisioned but do not
/// connect.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// Prefix of the workload's user names.
    tag: &'static str,
    senders: usize,
    window: usize,
    messages: usize,
    online: bool,
}

/// What a throughput workload achieved.
struct LoadResult {
    workload: Workload,
    /// From the first send to the last answer.
    elapsed: Duration,
    /// From the first send to the last message taken by its recipient (online only).
    received: Option<Duration>,
    /// Each send, call to answer.
    latencies: Vec<Duration>,
    delivered: usize,
    stored: usize,
    failed: usize,
    errors: usize,
    /// Device flushes and CPU from the first send to the last answer.
    measured: Option<Measured>,
    /// The recipients, `(address, token, messages sent to it)`.
    receivers: Vec<(String, String, usize)>,
}

impl LoadResult {
    fn outcomes(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.delivered, "delivered"),
            (self.stored, "stored"),
            (self.failed, "failed"),
            (self.errors, "errors"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

/// Per-task tallies of a throughput workload.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    delivered: usize,
    stored: usize,
    failed: usize,
    errors: usize,
}

impl Workload {
    async fn run(self, gw: &Gateway, wait: Duration, meter: &Meter) -> Result<LoadResult> {
        let mut sending = Vec::with_capacity(self.senders);
        let mut receivers = Vec::with_capacity(self.senders);
        let mut taking = Vec::new();
        let mut clients = Vec::new();
        let mut done = Vec::new();
        for k in 0..self.senders {
            let tag = self.tag;
            sending.push(gw.user(&format!("{tag}-s{k}"), false).await?);
            let (address, token) = gw.add_user(&format!("{tag}-r{k}")).await?;
            let quota =
                self.messages / self.senders + usize::from(k < self.messages % self.senders);
            if self.online {
                let client = gw.connect(&address, &token, true).await?;
                let (tx, rx) = oneshot::channel();
                taking.push(tokio::spawn(take(Arc::clone(&client), quota, tx)));
                done.push(rx);
                clients.push(client);
            }
            receivers.push((address, token, quota));
        }
        let mark = meter.mark();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (client, (to, _, quota)) in sending.iter().zip(&receivers) {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..self.window.min(*quota) {
                tasks.spawn(send_some(
                    Arc::clone(client),
                    to.clone(),
                    Arc::clone(&next),
                    *quota,
                    wait,
                ));
            }
        }
        let mut result = LoadResult {
            workload: self,
            elapsed: Duration::ZERO,
            received: None,
            latencies: Vec::with_capacity(self.messages),
            delivered: 0,
            stored: 0,
            failed: 0,
            errors: 0,
            measured: None,
            receivers: Vec::new(),
        };
        while let Some(tally) = tasks.join_next().await {
            let tally = tally?;
            result.latencies.extend(tally.latencies);
            result.delivered += tally.delivered;
            result.stored += tally.stored;
            result.failed += tally.failed;
            result.errors += tally.errors;
        }
        result.elapsed = started.elapsed();
        result.measured = Some(meter.since(mark));
        if self.online {
            let mut last = started;
            for rx in done {
                let at = tokio::time::timeout(wait, rx)
                    .await
                    .context("a recipient did not get all its messages in time")??;
                last = last.max(at);
            }
            result.received = Some(last.duration_since(started));
        }
        for task in taking {
            task.abort();
        }
        clients.extend(sending);
        close_all(&clients).await;
        result.receivers = receivers;
        Ok(result)
    }
}

/// One of a sender's `window` tasks: sends message after message (taking the next
/// number from `next`) until `quota` have been sent by all of them.
async fn send_some(
    client: Arc<Client>,
    to: String,
    next: Arc<AtomicUsize>,
    quota: usize,
    wait: Duration,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= quota {
            return tally;
        }
        let sent = Instant::now();
        let outcome = tokio::time::timeout(wait, client.send(to.clone(), body(i), None)).await;
        tally.latencies.push(sent.elapsed());
        match outcome {
            Ok(Ok(o)) => match o.status {
                ReceiptStatus::Delivered => tally.delivered += 1,
                ReceiptStatus::Stored => tally.stored += 1,
                ReceiptStatus::Failed(_) | ReceiptStatus::Relayed => tally.failed += 1,
            },
            Ok(Err(_)) | Err(_) => tally.errors += 1,
        }
    }
}

/// Takes inbox items until `expect` messages have come, reports when, and goes on
/// taking (which acknowledges the last one) until aborted.
async fn take(client: Arc<Client>, expect: usize, done: oneshot::Sender<Instant>) {
    let mut done = Some(done);
    let mut got = 0;
    if expect == 0
        && let Some(done) = done.take()
    {
        let _ = done.send(Instant::now());
    }
    while let Some(event) = client.next_event().await {
        if matches!(event, Event::Message { .. }) {
            got += 1;
            if got >= expect
                && let Some(done) = done.take()
            {
                let _ = done.send(Instant::now());
            }
        }
    }
}

/// What draining stored inboxes achieved.
struct DrainResult {
    recipients: usize,
    messages: usize,
    /// From the first connect to the last message taken.
    elapsed: Duration,
    /// Device flushes and CPU meanwhile.
    measured: Measured,
}

/// The recipients of the offline workload connect and take everything stored for them.
async fn drain(
    gw: &Gateway,
    receivers: &[(String, String, usize)],
    wait: Duration,
    meter: &Meter,
) -> Result<DrainResult> {
    let mark = meter.mark();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(receivers.len());
    let mut taking = Vec::with_capacity(receivers.len());
    let mut done = Vec::with_capacity(receivers.len());
    for (address, token, quota) in receivers {
        let client = gw.connect(address, token, true).await?;
        let (tx, rx) = oneshot::channel();
        taking.push(tokio::spawn(take(Arc::clone(&client), *quota, tx)));
        done.push(rx);
        clients.push(client);
    }
    let mut last = started;
    for rx in done {
        let at = tokio::time::timeout(wait, rx)
            .await
            .context("a recipient did not get all its stored messages in time")??;
        last = last.max(at);
    }
    let measured = meter.since(mark);
    for task in taking {
        task.abort();
    }
    close_all(&clients).await;
    Ok(DrainResult {
        recipients: receivers.len(),
        messages: receivers.iter().map(|(_, _, quota)| quota).sum(),
        elapsed: last.duration_since(started),
        measured,
    })
}
