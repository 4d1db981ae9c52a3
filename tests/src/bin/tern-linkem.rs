//! `tern-linkem`: the link emulator as a process, for benchmarks and manual runs.
//!
//! Parses the command line into a [`LinkConfig`], runs [`Linkem`] until SIGINT, SIGTERM
//! or `--duration`, and prints JSON lines on stdout: one `started` line, a `stats` line
//! every `--stats-interval` seconds if asked, and a `final` line on exit. Impairment flags
//! without a prefix apply to both directions; `--up-…` (client → upstream) and
//! `--down-…` (upstream → client) flags override them for one direction. Only loopback
//! addresses are accepted.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser};
use serde::Serialize;
use tern_tests::linkem::{
    GilbertElliott, Impairment, JitterShape, LinkConfig, LinkStats, Linkem, Periodic, Window,
};
use tokio::time::{Instant, Interval};

/// A user-space weak-link emulator (delay, jitter, loss, reordering, duplication, rate
/// limit, blackouts) relaying UDP on loopback.
#[derive(Debug, Parser)]
#[command(name = "tern-linkem", version)]
struct Cli {
    /// Client-facing address (loopback only); port 0 picks one, printed in the `started`
    /// line.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where datagrams go, usually the gateway (loopback only).
    #[arg(long)]
    upstream: SocketAddr,
    /// Seed of the random draws: the same seed and the same traffic give the same fates.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a `stats` JSON line every SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    stats_interval: Option<Duration>,
    /// Stop by itself after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    duration: Option<Duration>,
    #[command(flatten)]
    both: BothWays,
    #[command(flatten)]
    up: UpOnly,
    #[command(flatten)]
    down: DownOnly,
}

/// Declares one set of impairment flags, all with the same prefix.
macro_rules! impairment_flags {
    ($name:ident, $prefix:literal, $heading:literal, $scope:literal) => {
        #[derive(Debug, Args)]
        #[command(next_help_heading = $heading)]
        struct $name {
            #[arg(
                long = concat!($prefix, "delay-ms"),
                id = concat!($prefix, "delay-ms"),
                value_name = "MS",
                help = concat!("One-way delay in milliseconds", $scope)
            )]
            delay_ms: Option<u64>,
            #[arg(
                long = concat!($prefix, "jitter-ms"),
                id = concat!($prefix, "jitter-ms"),
                value_name = "MS",
                help = concat!("Jitter in ms: ± bound (uniform) or std deviation (normal)", $scope)
            )]
            jitter_ms: Option<u64>,
            #[arg(
                long = concat!($prefix, "jitter-shape"),
                id = concat!($prefix, "jitter-shape"),
                value_name = "SHAPE",
                help = concat!("Jitter distribution, uniform (default) or normal", $scope)
            )]
            jitter_shape: Option<JitterShape>,
            #[arg(
                long = concat!($prefix, "loss"),
                id = concat!($prefix, "loss"),
                value_name = "P",
                help = concat!("Loss probability (with burst loss: in the good state)", $scope)
            )]
            loss: Option<f64>,
            #[arg(
                long = concat!($prefix, "burst-loss"),
                id = concat!($prefix, "burst-loss"),
                value_name = "P_GB,P_BG,LOSS_BAD",
                help = concat!("Gilbert-Elliott loss: P(good→bad),P(bad→good),P(loss|bad)", $scope)
            )]
            burst_loss: Option<GilbertElliott>,
            #[arg(
                long = concat!($prefix, "reorder"),
                id = concat!($prefix, "reorder"),
                value_name = "P",
                help = concat!("Probability that a datagram is held back to be overtaken", $scope)
            )]
            reorder: Option<f64>,
            #[arg(
                long = concat!($prefix, "reorder-ms"),
                id = concat!($prefix, "reorder-ms"),
                value_name = "MS",
                help = concat!("Extra delay of a reordered datagram in ms [default: 20]", $scope)
            )]
            reorder_ms: Option<u64>,
            #[arg(
                long = concat!($prefix, "duplicate"),
                id = concat!($prefix, "duplicate"),
                value_name = "P",
                help = concat!("Duplication probability", $scope)
            )]
            duplicate: Option<f64>,
            #[arg(
                long = concat!($prefix, "rate-kbps"),
                id = concat!($prefix, "rate-kbps"),
                value_name = "KBPS",
                help = concat!("Bottleneck rate in kbit/s (unlimited if unset)", $scope)
            )]
            rate_kbps: Option<f64>,
            #[arg(
                long = concat!($prefix, "queue-bytes"),
                id = concat!($prefix, "queue-bytes"),
                value_name = "BYTES",
                help = concat!("Bottleneck queue in bytes (tail drop) [default: 32000]", $scope)
            )]
            queue_bytes: Option<usize>,
            #[arg(
                long = concat!($prefix, "blackout"),
                id = concat!($prefix, "blackout"),
                value_name = "D/P[+OFFSET]",
                help = concat!("Down D s every P s; the first from OFFSET s [default: P-D]", $scope)
            )]
            blackout: Option<Periodic>,
            #[arg(
                long = concat!($prefix, "blackout-at"),
                id = concat!($prefix, "blackout-at"),
                value_name = "START-END",
                help = concat!("Blackout window in seconds since start; repeatable", $scope)
            )]
            blackout_at: Vec<Window>,
        }

        impl $name {
            /// Sets what these flags set, leaving the rest of `imp` as it is.
            fn apply(&self, imp: &mut Impairment) -> anyhow::Result<()> {
                if let Some(ms) = self.delay_ms {
                    imp.delay = Duration::from_millis(ms);
                }
                if let Some(ms) = self.jitter_ms {
                    imp.jitter = Duration::from_millis(ms);
                }
                if let Some(shape) = self.jitter_shape {
                    imp.jitter_shape = shape;
                }
                if let Some(p) = self.loss {
                    imp.loss = p;
                }
                if let Some(ge) = self.burst_loss {
                    imp.burst = Some(ge);
                }
                if let Some(p) = self.reorder {
                    imp.reorder = p;
                }
                if let Some(ms) = self.reorder_ms {
                    imp.reorder_extra = Some(Duration::from_millis(ms));
                }
                if let Some(p) = self.duplicate {
                    imp.duplicate = p;
                }
                if let Some(kbps) = self.rate_kbps {
                    imp.rate_bps = Some(kbps_to_bps(kbps)?);
                }
                if let Some(bytes) = self.queue_bytes {
                    imp.queue_bytes = Some(bytes);
                }
                if let Some(periodic) = self.blackout {
                    imp.blackouts.periodic = Some(periodic);
                }
                if !self.blackout_at.is_empty() {
                    imp.blackouts.windows = self.blackout_at.clone();
                }
                Ok(())
            }
        }
    };
}

impairment_flags!(BothWays, "", "Impairments (both directions)", "");
impairment_flags!(
    UpOnly,
    "up-",
    "Client → upstream overrides",
    ", client → upstream only"
);
impairment_flags!(
    DownOnly,
    "down-",
    "Upstream → client overrides",
    ", upstream → client only"
);

fn kbps_to_bps(kbps: f64) -> anyhow::Result<u64> {
    let bps = (kbps * 1_000.0).round();
    if !(bps.is_finite() && bps >= 1.0 && bps <= u64::MAX as f64) {
        bail!("rate of {kbps} kbit/s: give a positive rate of at least 0.001 kbit/s");
    }
    Ok(bps as u64)
}

fn positive_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

impl Cli {
    fn config(&self) -> anyhow::Result<LinkConfig> {
        let mut both = Impairment::default();
        self.both.apply(&mut both)?;
        let mut config = LinkConfig::new(self.upstream).seed(self.seed);
        config.listen = self.listen;
        config.up = both.clone();
        config.down = both;
        self.up.apply(&mut config.up)?;
        self.down.apply(&mut config.down)?;
        config.validate()?;
        Ok(config)
    }
}

/// One JSON line of output.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line<'a> {
    Started {
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    },
    Stats(&'a LinkStats),
    Final(&'a LinkStats),
}

fn emit(line: &Line<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    writeln!(out)?;
    out.flush().context("writing to stdout")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.config()?;
    let seed = config.seed;
    let link = Linkem::start(config).await?;
    emit(&Line::Started {
        listen: link.addr(),
        upstream: link.upstream(),
        seed,
    })?;
    let outcome = run(&cli, &link).await;
    let stats = link.shutdown().await;
    emit(&Line::Final(&stats))?;
    outcome
}

/// Prints stats until told to stop or the duration is over.
async fn run(cli: &Cli, link: &Linkem) -> anyhow::Result<()> {
    let deadline = cli.duration.map(|d| Instant::now() + d);
    let mut ticker = cli
        .stats_interval
        .map(|every| tokio::time::interval_at(Instant::now() + every, every));
    let stop = terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => return signal.context("listening for signals"),
            () = sleep_until(deadline) => return Ok(()),
            () = tick(&mut ticker) => emit(&Line::Stats(&link.stats()))?,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
async fn terminated() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn terminated() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
