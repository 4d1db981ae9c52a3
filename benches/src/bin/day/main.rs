//! Day in the life (issue 4): one phone watching 200 contacts for a simulated hour
//! through an emulated mobile link, in three ways at once: synchronised and active
//! (deltas, 50 ms batching), synchronised and inactive (deltas, 3 min batching) and
//! the baseline without synchronisation (one whole `Notify` per change, at once). Then
//! the cost of one presence change delivered to 100 watchers, both ways.
//!
//! ```sh
//! cargo run --release -p tern-benches --bin day -- [--dilation 25] [--rtt-ms 200]
//! ```
//!
//! Time is dilated: the simulated hour runs in `3600 / dilation` real seconds, and
//! every timer that shapes traffic (the script, the gateway's flush delays, the phones'
//! keep-alives, the link's delay) is divided by the same factor. Everything is reported
//! in simulated units. Prints Markdown on stdout, progress on stderr. See
//! `docs/benchmarks.md`, section "Day in the life (issue 4)".

/// Logs progress to stderr, keeping stdout for the tables.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[day] {}", format_args!($($arg)*)) };
}

mod fanout;
mod net;
mod phone;
mod publisher;
mod radio;
mod report;
mod schedule;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tern_benches::env;
use tern_gateway::config::{DomainEntry, GatewayConfig, PresenceTuning};
use tern_gateway::runtime::start;
use tern_gateway::users::{self, UserOptions};
use tern_tests::linkem::{Impairment, LinkConfig, Linkem};
use tern_wire::{ClientMode, Presence};
use tokio::task::JoinSet;

use crate::net::{Datagram, Tap};
use crate::phone::{Phone, Record, Spec};
use crate::publisher::Publisher;
use crate::schedule::{Day, Script, stamp};

const DOMAIN: &str = "example.com";

/// A simulated hour of presence through an emulated mobile link, three ways at once.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "day")]
struct Args {
    /// Time dilation: the simulated hour takes 3600/D real seconds. Every traffic timer is
    /// divided by D; 25 keeps the gateway's 50 ms active flush a whole millisecond count.
    #[arg(long, default_value = "25", value_parser = env::positive)]
    dilation: usize,
    /// Contacts the phone watches.
    #[arg(long, default_value = "200", value_parser = env::positive)]
    contacts: usize,
    /// Presence changes per contact per hour, bursts included.
    #[arg(long, default_value = "6")]
    rate: f64,
    /// Share of the changes that come in bursts (3 to 5 within 10 s).
    #[arg(long = "burst-share", default_value = "0.15")]
    burst_share: f64,
    /// Length of the simulated period, seconds (the report scales to one hour).
    #[arg(long, default_value = "3600", value_parser = env::positive)]
    seconds: usize,
    /// Round-trip time of the phone's link, simulated milliseconds.
    #[arg(long = "rtt-ms", default_value = "200")]
    rtt_ms: u64,
    /// Random loss on the phone's link, each way (0 to 1).
    #[arg(long, default_value = "0")]
    loss: f64,
    /// The phones' QUIC keep-alive interval, simulated seconds (0: none). 20 s is what
    /// the gateway suggests in `Opened` and what `tern-client` uses.
    #[arg(long = "keepalive-s", default_value = "20")]
    keepalive_s: f64,
    /// Radio tail: how long the radio stays up after a datagram, simulated seconds.
    #[arg(long = "tail-s", default_value = "5")]
    tail_s: f64,
    /// Presence frames closer than this count as one flush, simulated milliseconds.
    #[arg(long = "flush-gap-ms", default_value = "1000")]
    flush_gap_ms: f64,
    /// Watchers of the one-change fan-out measurement, per kind.
    #[arg(long, default_value = "100", value_parser = env::positive)]
    watchers: usize,
    /// Changes measured in the fan-out measurement (the table shows the mean per change).
    #[arg(long = "fanout-changes", default_value = "5", value_parser = env::positive)]
    fanout_changes: usize,
    /// Logs every datagram and frame of each phone's first this many simulated seconds of
    /// the hour to stderr (0: none).
    #[arg(long = "trace-s", default_value = "0")]
    trace_s: f64,
    /// Seed of the script and of the links.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Bound on each single wait (a login, the subscriptions), real seconds.
    #[arg(long, default_value = "60", value_parser = env::seconds)]
    wait: Duration,
    /// Where the temporary data directory goes (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if !(0.0..1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.burst_share) {
        bail!("--loss must be in [0, 1) and --burst-share in [0, 1]");
    }
    if args.rate <= 0.0 || args.tail_s <= 0.0 || args.keepalive_s < 0.0 {
        bail!("--rate and --tail-s must be above 0, --keepalive-s at least 0");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env::cores())
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// Simulated time and real time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    dilation: f64,
    /// The start of the hour.
    zero: Instant,
}

impl Clock {
    /// Real duration of a simulated one.
    fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.dilation)
    }

    /// Simulated seconds since the start of the hour (negative before it).
    fn sim(&self, at: Instant) -> f64 {
        let real = match at.checked_duration_since(self.zero) {
            Some(after) => after.as_secs_f64(),
            None => -self.zero.duration_since(at).as_secs_f64(),
        };
        real * self.dilation
    }

    /// Simulated seconds between two instants (negative when `to` is first).
    fn between(&self, from: Instant, to: Instant) -> f64 {
        self.sim(to) - self.sim(from)
    }
}

/// A principal with its token.
#[derive(Debug, Clone)]
struct User {
    address: String,
    token: String,
}

/// The three ways the phone watches.
const WAYS: [(&str, bool, ClientMode); 3] = [
    ("SYNC, active", true, ClientMode::ACTIVE),
    ("SYNC, inactive", true, ClientMode::INACTIVE),
    ("baseline: Notify per change", false, ClientMode::ACTIVE),
];

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let base = match &args.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("tern-day-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("tern-day-").tempdir()?,
    };
    let environment = env::describe(base.path());
    let d = args.dilation as f64;
    let data = base.path().join("gateway");

    // The gateway's flush delays, dilated; idle and resume timers are left alone (they
    // only matter when a peer vanishes, which nobody does here).
    let defaults = PresenceTuning::default();
    let dilate = |ms: u64| -> u64 {
        if ms == 0 {
            0
        } else {
            ((ms as f64 / d).round() as u64).max(1)
        }
    };
    let presence = PresenceTuning {
        flush_active_ms: dilate(defaults.flush_active_ms),
        flush_inactive_ms: dilate(defaults.flush_inactive_ms),
        flush_sleepy_ms: dilate(defaults.flush_sleepy_ms),
        ..defaults.clone()
    };
    let config = GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data.clone(),
        domains: vec![DomainEntry::Name(DOMAIN.into())],
        presence: presence.clone(),
        ..GatewayConfig::default()
    };
    let gateway = start(config).await.context("the gateway starts")?;
    let addr = gateway.local_addr();
    let cert = gateway.cert_pem();

    let script = Script {
        contacts: args.contacts,
        rate: args.rate,
        burst_share: args.burst_share,
        seconds: args.seconds as u64,
        seed: args.seed,
        domain: DOMAIN,
    };
    let day = script.build();
    progress!(
        "script: {} contacts, {} changes in {} simulated s",
        day.contacts.len(),
        day.events.len(),
        args.seconds
    );

    progress!("provisioning users ...");
    let mut names: Vec<String> = day.contacts.iter().map(|c| c.address.clone()).collect();
    names.extend((0..WAYS.len()).map(|i| format!("phone{i}@{DOMAIN}")));
    names.push(format!("x@{DOMAIN}"));
    for kind in ["sync", "plain"] {
        names.extend((0..args.watchers).map(|i| format!("w-{kind}-{i:03}@{DOMAIN}")));
    }
    let users = provision(&data, names).await?;
    let user = |address: &str| -> Result<User> {
        users
            .iter()
            .find(|u| u.address == address)
            .cloned()
            .with_context(|| format!("{address} was provisioned"))
    };

    // Contacts' own sessions: plain QUIC to the gateway, a keep-alive well inside the idle
    // timeout.
    let direct = net::endpoint(
        &cert,
        Some(Duration::from_secs(10)),
        Duration::from_secs(120),
    )?;

    let fanout = fanout::fan_out(&args, addr, &cert, &direct, &user).await?;

    progress!("contacts log in and publish their first presence ...");
    let mut publishers = Vec::with_capacity(day.contacts.len());
    for (contact, first) in day.contacts.iter().zip(&day.initial) {
        let u = user(&contact.address)?;
        let mut p = Publisher::login(&direct, addr, &u.address, &u.token).await?;
        p.publish(first.clone()).await?;
        publishers.push(p);
    }

    progress!("phones connect through their links and subscribe ...");
    let keepalive =
        (args.keepalive_s > 0.0).then(|| Duration::from_secs_f64(args.keepalive_s).div_f64(d));
    let link = Impairment {
        delay: Duration::from_millis(args.rtt_ms).div_f64(2.0 * d),
        loss: args.loss,
        ..Impairment::default()
    };
    let targets: Vec<String> = day.contacts.iter().map(|c| c.address.clone()).collect();
    let mut phones = Vec::new();
    for (i, (label, sync, mode)) in WAYS.iter().enumerate() {
        let mut link_config = LinkConfig::new(addr)
            .symmetric(link.clone())
            .seed(args.seed.wrapping_add(i as u64));
        link_config.client_idle = Duration::from_secs(3_600);
        let linkem = Linkem::start(link_config).await?;
        let tap = Tap::start(linkem.addr()).await?;
        let endpoint = net::endpoint(&cert, keepalive, Duration::from_secs(120))?;
        let u = user(&format!("phone{i}@{DOMAIN}"))?;
        let spec = Spec {
            user: u.address,
            token: u.token,
            device: 1,
            sync: *sync,
            mode: *mode,
            targets: targets.clone(),
            keepalive,
        };
        let opened = Instant::now();
        let phone = Phone::start(&endpoint, tap.addr, spec, args.wait).await?;
        let subscribed = Instant::now();
        phones.push(Watching {
            label,
            phone,
            tap,
            linkem,
            _endpoint: endpoint,
            opened,
            subscribed,
        });
    }

    // The hour starts once every phone has settled (last acknowledgements, path MTU
    // probes).
    let clock = Clock {
        dilation: d,
        zero: Instant::now() + Duration::from_millis(500),
    };
    let hour = Duration::from_secs(args.seconds as u64);
    let end = clock.zero + clock.real(hour);
    progress!(
        "the hour: {} changes over {:.0} real s ...",
        day.events.len(),
        clock.real(hour).as_secs_f64()
    );
    // The contacts stay online until the phones are measured: a contact saying goodbye
    // is a presence change too (it goes CLOSED).
    let (published, publishers) = play(&day, publishers, clock, end).await?;

    // Whatever is still pending (the inactive phone's last batch) arrives within its
    // flush delay; the phones must then hold exactly every contact's current presence.
    let expected = final_docs(&day);
    let drain = Duration::from_millis(defaults.flush_inactive_ms + 30_000);
    let deadline = end + clock.real(drain);
    loop {
        let converged = phones.iter().all(|w| w.phone.with(|r| holds(r, &expected)));
        if converged || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut measured = Vec::new();
    for w in phones {
        let converged = w.phone.with(|r| holds(r, &expected));
        if !converged {
            w.phone.with(|r| {
                let wrong: Vec<usize> = (0..expected.len())
                    .filter(|&i| r.docs.get(i).and_then(Option::as_ref) != expected.get(i))
                    .collect();
                let first = wrong.first().map(|&i| (r.docs.get(i), expected.get(i)));
                progress!(
                    "{}: {} contacts differ; the first (held, published): {first:?}",
                    w.label,
                    wrong.len(),
                );
            });
        }
        let link_stats = w.linkem.stats();
        let datagrams = w.tap.datagrams();
        let record = w.phone.stop().await?;
        measured.push(Measured {
            label: w.label,
            record,
            datagrams,
            converged,
            opened: w.opened,
            subscribed: w.subscribed,
            link_dropped: link_stats.up.dropped_loss + link_stats.down.dropped_loss,
        });
    }
    for p in publishers {
        p.bye().await;
    }
    if args.trace_s > 0.0 {
        for m in &measured {
            report::trace(m, clock, args.trace_s);
        }
    }
    gateway.shutdown().await;

    report::report(
        &args,
        &environment,
        &presence,
        &day,
        &published,
        &measured,
        &fanout,
        clock,
        started.elapsed(),
    );
    Ok(())
}

/// A phone with its link, while it runs.
struct Watching {
    label: &'static str,
    phone: Phone,
    tap: Tap,
    linkem: Linkem,
    _endpoint: quinn::Endpoint,
    opened: Instant,
    subscribed: Instant,
}

/// A phone's hour, for the report.
struct Measured {
    label: &'static str,
    record: Record,
    datagrams: Vec<Datagram>,
    converged: bool,
    opened: Instant,
    subscribed: Instant,
    link_dropped: u64,
}

/// One publish of the hour, as its publisher saw it.
#[derive(Debug, Clone, Copy)]
struct Published {
    contact: usize,
    stamp: u64,
    /// The publisher's `Ok` arrived.
    ok: Instant,
    /// Simulated seconds between the script's time and the publish being sent.
    late_s: f64,
}

async fn provision(data: &Path, names: Vec<String>) -> Result<Vec<User>> {
    let dir = data.to_owned();
    tokio::task::spawn_blocking(move || {
        names
            .into_iter()
            .map(|address| {
                let token = users::add(&dir, &address, UserOptions::default())
                    .with_context(|| format!("provisioning {address}"))?;
                Ok(User { address, token })
            })
            .collect::<Result<Vec<User>>>()
    })
    .await?
}

/// Runs the script: each contact's publisher sleeps until each of its changes is due.
/// Returns the publishes and the publishers, still connected.
async fn play(
    day: &Day,
    publishers: Vec<Publisher>,
    clock: Clock,
    end: Instant,
) -> Result<(Vec<Published>, Vec<Publisher>)> {
    let mut tasks = JoinSet::new();
    for (contact, mut publisher) in publishers.into_iter().enumerate() {
        let events: Vec<(u64, Presence)> = day
            .events
            .iter()
            .filter(|e| e.contact == contact)
            .map(|e| (e.at_ms, e.presence.clone()))
            .collect();
        tasks.spawn(async move {
            let mut done = Vec::with_capacity(events.len());
            for (at_ms, presence) in events {
                let due = clock.zero + clock.real(Duration::from_millis(at_ms));
                tokio::time::sleep_until(due.into()).await;
                let late_s = clock.sim(Instant::now()) - at_ms as f64 / 1000.0;
                let stamp = stamp(&presence).unwrap_or(0);
                let ok = publisher.publish(presence).await?;
                done.push(Published {
                    contact,
                    stamp,
                    ok,
                    late_s,
                });
            }
            anyhow::Ok((done, publisher))
        });
    }
    let ticker = tokio::spawn(async move {
        let step = (end - clock.zero) / 10;
        for k in 1..10 {
            tokio::time::sleep_until((clock.zero + step * k).into()).await;
            progress!("  {}0 % of the hour", k);
        }
    });
    let mut published = Vec::new();
    let mut done_publishers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (done, publisher) = joined??;
        published.extend(done);
        done_publishers.push(publisher);
    }
    tokio::time::sleep_until(end.into()).await;
    ticker.abort();
    Ok((published, done_publishers))
}

/// Every contact's document at the end of the script.
fn final_docs(day: &Day) -> Vec<Presence> {
    let mut docs = day.initial.clone();
    for e in &day.events {
        docs[e.contact] = e.presence.clone();
    }
    docs
}

fn holds(record: &Record, expected: &[Presence]) -> bool {
    record.docs.len() == expected.len()
        && record
            .docs
            .iter()
            .zip(expected)
            .all(|(held, want)| held.as_ref() == Some(want))
}
