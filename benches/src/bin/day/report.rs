//! The report: a phone's hour cut into per-hour figures, and the Markdown tables.

use std::time::Duration;

use tern_benches::env;
use tern_gateway::config::PresenceTuning;
use tern_wire::Presence;

use crate::fanout::Fan;
use crate::radio::{bursts, quantile, radio};
use crate::schedule::Day;
use crate::{Args, Clock, DOMAIN, Measured, Published};

/// Logs a phone's datagrams (`↓size`/`↑size`) and frames (`[↓size]`, `*` when it carries
/// presence) in time order, in simulated seconds.
pub(crate) fn trace(m: &Measured, clock: Clock, upto: f64) {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for d in &m.datagrams {
        let t = clock.sim(d.at);
        lines.push((t, format!("{}{}", if d.up { "↑" } else { "↓" }, d.len)));
    }
    for f in &m.record.frames {
        let t = clock.sim(f.at);
        let mark = if f.presence {
            format!("*{}", f.changes)
        } else {
            String::new()
        };
        lines.push((
            t,
            format!("[{}{}{mark}]", if f.up { "↑" } else { "↓" }, f.size),
        ));
    }
    lines.retain(|(t, _)| (0.0..upto).contains(t));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    progress!("trace of {} (simulated s):", m.label);
    for (t, what) in lines {
        eprintln!("  {t:9.3} {what}");
    }
}

/// A phone's figures over the hour, scaled to one hour.
struct Hourly {
    app_down: f64,
    app_up: f64,
    udp_down: f64,
    udp_up: f64,
    datagrams_down: f64,
    datagrams_up: f64,
    presence_frames: f64,
    changes: f64,
    flushes: f64,
    presence_wakeups: f64,
    wakeups: f64,
    radio_up_s: f64,
    /// Simulated seconds, one per publish of the hour that reached the phone.
    latencies: Vec<f64>,
    never: usize,
}

fn hourly(m: &Measured, published: &[Published], clock: Clock, args: &Args) -> Hourly {
    let hour = args.seconds as f64;
    let per_hour = 3_600.0 / hour;
    let within = |t: f64| (0.0..hour).contains(&t);
    let mut h = Hourly {
        app_down: 0.0,
        app_up: 0.0,
        udp_down: 0.0,
        udp_up: 0.0,
        datagrams_down: 0.0,
        datagrams_up: 0.0,
        presence_frames: 0.0,
        changes: 0.0,
        flushes: 0.0,
        presence_wakeups: 0.0,
        wakeups: 0.0,
        radio_up_s: 0.0,
        latencies: Vec::new(),
        never: 0,
    };
    let mut presence_times = Vec::new();
    for f in &m.record.frames {
        let t = clock.sim(f.at);
        if !within(t) {
            continue;
        }
        if f.up {
            h.app_up += f.size as f64;
        } else {
            h.app_down += f.size as f64;
        }
        if f.presence {
            h.presence_frames += 1.0;
            h.changes += f.changes as f64;
            presence_times.push(t);
        }
    }
    let mut all_times = Vec::new();
    for d in &m.datagrams {
        let t = clock.sim(d.at);
        all_times.push(t);
        if !within(t) {
            continue;
        }
        if d.up {
            h.udp_up += d.len as f64;
            h.datagrams_up += 1.0;
        } else {
            h.udp_down += d.len as f64;
            h.datagrams_down += 1.0;
        }
    }
    h.flushes = bursts(&presence_times, args.flush_gap_ms / 1000.0) as f64;
    h.presence_wakeups = radio(&presence_times, args.tail_s, hour).wakeups as f64;
    let r = radio(&all_times, args.tail_s, hour);
    h.wakeups = r.wakeups as f64;
    h.radio_up_s = r.up_s;
    for v in [
        &mut h.app_down,
        &mut h.app_up,
        &mut h.udp_down,
        &mut h.udp_up,
        &mut h.datagrams_down,
        &mut h.datagrams_up,
        &mut h.presence_frames,
        &mut h.changes,
        &mut h.flushes,
        &mut h.presence_wakeups,
        &mut h.wakeups,
        &mut h.radio_up_s,
    ] {
        *v *= per_hour;
    }
    for p in published {
        let arrived = m
            .record
            .arrivals
            .iter()
            .find(|(c, s, _)| *c == p.contact && *s >= p.stamp);
        match arrived {
            Some((_, _, at)) => h.latencies.push(clock.between(p.ok, *at)),
            None => h.never += 1,
        }
    }
    h
}

/// A row of a table: its name, the figure, and how it is shown.
type Row<T> = (&'static str, fn(&T) -> f64, fn(f64) -> String);

fn kb(bytes: f64) -> String {
    if bytes >= 10_000.0 {
        format!("{:.1} kB", bytes / 1000.0)
    } else {
        format!("{bytes:.0} B")
    }
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "n/a".into()
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".into(), |s| format!("{s:.2}"))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    args: &Args,
    environment: &[(&'static str, String)],
    presence: &PresenceTuning,
    day: &Day,
    published: &[Published],
    measured: &[Measured],
    fanout: &(Fan, Fan, Presence),
    clock: Clock,
    elapsed: Duration,
) {
    let d = args.dilation as f64;
    println!("# tern day in the life (issue 4)\n");
    println!("Command: `{}`\n", env::command_line("day"));
    println!("| environment | |\n|---|---|");
    for (name, value) in environment {
        println!("| {name} | {value} |");
    }
    println!(
        "| time dilation | {} (the simulated {} s took {:.0} real s; the whole run {:.0} s) |",
        args.dilation,
        args.seconds,
        args.seconds as f64 / d,
        elapsed.as_secs_f64()
    );
    println!(
        "| phone link | RTT {} ms, loss {} each way (simulated; linkem delay {:.1} ms real each way) |",
        args.rtt_ms,
        args.loss,
        args.rtt_ms as f64 / 2.0 / d
    );
    println!(
        "| gateway flush delays (simulated, as dilated) | active {} ms, inactive {} s, sleepy {} s; batch_max {}, window {} |",
        presence.flush_active_ms as f64 * d,
        presence.flush_inactive_ms as f64 * d / 1000.0,
        presence.flush_sleepy_ms as f64 * d / 1000.0,
        presence.batch_max,
        presence.batch_window
    );
    println!(
        "| phones' QUIC keep-alive | {} |",
        if args.keepalive_s > 0.0 {
            format!("{} s simulated", args.keepalive_s)
        } else {
            "none".into()
        }
    );
    println!(
        "| radio model | up for {} s after any datagram; presence frames closer than {} ms are one flush |",
        args.tail_s, args.flush_gap_ms
    );
    println!();

    // The script.
    let n = day.events.len();
    let in_bursts = day.events.iter().filter(|e| e.burst).count();
    let notify_sizes: Vec<usize> = day
        .events
        .iter()
        .map(|e| {
            tern_wire::codec::frame_size(&tern_wire::Down::Notify {
                doc: tern_wire::PresenceDoc {
                    presentity: day.contacts[e.contact].address.clone(),
                    updated: 1_800_000_000_000,
                    presence: e.presence.clone(),
                },
            })
        })
        .collect();
    let mean_notify = notify_sizes.iter().sum::<usize>() as f64 / notify_sizes.len().max(1) as f64;
    let mut late: Vec<f64> = published.iter().map(|p| p.late_s).collect();
    println!("## The hour's script (seed {})\n", args.seed);
    println!("| | |\n|---|---|");
    println!("| contacts | {} |", day.contacts.len());
    println!(
        "| presence changes published | {n} ({:.2} per contact-hour) |",
        n as f64 / day.contacts.len() as f64 * 3_600.0 / args.seconds as f64
    );
    println!(
        "| of them in bursts (3–5 within 10 s) | {in_bursts} ({:.0} %) |",
        in_bursts as f64 * 100.0 / n.max(1) as f64
    );
    println!(
        "| mean size of a `Notify` of one of these documents | {mean_notify:.0} B (min {}, max {}) |",
        notify_sizes.iter().min().copied().unwrap_or(0),
        notify_sizes.iter().max().copied().unwrap_or(0)
    );
    println!(
        "| publishes sent late against the script, p50 / max | {} / {} s simulated |",
        secs(quantile(&mut late, 0.5)),
        secs(quantile(&mut late, 1.0))
    );
    println!();

    // Subscribe phase.
    println!("## Subscribe phase (before the hour)\n");
    println!(
        "From the phone's connect to the last answer of its {} subscriptions (handshake, `Open`, `Have`, one `Subscribe` each); UDP until 100 ms real after it.\n",
        day.contacts.len()
    );
    println!(
        "| phone | time, s (simulated) | app bytes down / up | UDP bytes down / up | datagrams down / up |"
    );
    println!("|---|---|---|---|---|");
    for m in measured {
        let upto = m.subscribed + Duration::from_millis(100);
        let (mut ad, mut au) = (0, 0);
        for f in m.record.frames.iter().filter(|f| f.at <= m.subscribed) {
            if f.up {
                au += f.size;
            } else {
                ad += f.size;
            }
        }
        let (mut ud, mut uu, mut nd, mut nu) = (0, 0, 0, 0);
        for g in m
            .datagrams
            .iter()
            .filter(|g| g.at >= m.opened && g.at <= upto)
        {
            if g.up {
                uu += g.len;
                nu += 1;
            } else {
                ud += g.len;
                nd += 1;
            }
        }
        println!(
            "| {} | {:.2} | {} / {} | {} / {} | {nd} / {nu} |",
            m.label,
            clock.between(m.opened, m.subscribed),
            kb(ad as f64),
            kb(au as f64),
            kb(ud as f64),
            kb(uu as f64)
        );
    }
    println!();

    // The hour.
    let hours: Vec<Hourly> = measured
        .iter()
        .map(|m| hourly(m, published, clock, args))
        .collect();
    let base = hours.len() - 1;
    println!("## The hour, per phone (scaled to one hour; ratios against the baseline)\n");
    let mut header = String::from("| per hour |");
    let mut rule = String::from("|---|");
    for (i, m) in measured.iter().enumerate() {
        header.push_str(&format!(" {} |", m.label));
        rule.push_str("---|");
        if i != base {
            header.push_str(" ÷ baseline |");
            rule.push_str("---|");
        }
    }
    println!("{header}\n{rule}");
    let rows: [Row<Hourly>; 12] = [
        (
            "application bytes down (frames incl. length prefix)",
            |h| h.app_down,
            kb,
        ),
        ("application bytes up", |h| h.app_up, kb),
        (
            "UDP payload bytes down (QUIC/TLS included)",
            |h| h.udp_down,
            kb,
        ),
        ("UDP payload bytes up", |h| h.udp_up, kb),
        (
            "datagrams down",
            |h| h.datagrams_down,
            |v| format!("{v:.0}"),
        ),
        ("datagrams up", |h| h.datagrams_up, |v| format!("{v:.0}")),
        (
            "presence frames (`Batch` / `Notify`)",
            |h| h.presence_frames,
            |v| format!("{v:.0}"),
        ),
        (
            "presentity changes carried",
            |h| h.changes,
            |v| format!("{v:.0}"),
        ),
        ("distinct flushes", |h| h.flushes, |v| format!("{v:.0}")),
        (
            "radio wakeups from presence alone",
            |h| h.presence_wakeups,
            |v| format!("{v:.0}"),
        ),
        (
            "radio wakeups, all traffic (keep-alives, ACKs)",
            |h| h.wakeups,
            |v| format!("{v:.0}"),
        ),
        (
            "radio up, minutes (all traffic)",
            |h| h.radio_up_s / 60.0,
            |v| format!("{v:.1}"),
        ),
    ];
    for (name, pick, show) in rows {
        let mut line = format!("| {name} |");
        for (i, h) in hours.iter().enumerate() {
            line.push_str(&format!(" {} |", show(pick(h))));
            if i != base {
                line.push_str(&format!(" {} |", ratio(pick(h), pick(&hours[base]))));
            }
        }
        println!("{line}");
    }
    let mut line = String::from("| UDP bytes per change published (both ways) |");
    for (i, h) in hours.iter().enumerate() {
        let per = (h.udp_down + h.udp_up) / (n.max(1) as f64 * 3_600.0 / args.seconds as f64);
        line.push_str(&format!(" {per:.0} B |"));
        if i != base {
            let b = &hours[base];
            line.push_str(&format!(
                " {} |",
                ratio(h.udp_down + h.udp_up, b.udp_down + b.udp_up)
            ));
        }
    }
    println!("{line}");
    let mut line = String::from("| converged (holds every contact's current presence) |");
    for (i, m) in measured.iter().enumerate() {
        line.push_str(&format!(
            " {} |",
            if m.converged {
                "CONVERGED yes"
            } else {
                "CONVERGED **no**"
            }
        ));
        if i != base {
            line.push_str(" |");
        }
    }
    println!("{line}");
    let mut line = String::from("| batch checks failed / errors / datagrams lost on the link |");
    for (i, m) in measured.iter().enumerate() {
        line.push_str(&format!(
            " {} / {} / {} |",
            m.record.check_failures,
            m.record.errors.len(),
            m.link_dropped
        ));
        if i != base {
            line.push_str(" |");
        }
    }
    println!("{line}\n");
    for m in measured {
        for e in m.record.errors.iter().take(5) {
            println!("- {}: {e}", m.label);
        }
    }

    println!("## Notification latency\n");
    println!(
        "Simulated seconds from the publisher's `Ok` to the phone holding that publish or a newer one, over every publish of the hour. The link alone takes {:.2} s one way.\n",
        args.rtt_ms as f64 / 2000.0
    );
    println!("| phone | publishes | p50 s | p95 s | max s | never arrived |");
    println!("|---|---|---|---|---|---|");
    for (m, h) in measured.iter().zip(&hours) {
        let mut l = h.latencies.clone();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            m.label,
            l.len() + h.never,
            secs(quantile(&mut l, 0.5)),
            secs(quantile(&mut l, 0.95)),
            secs(quantile(&mut l, 1.0)),
            h.never
        );
    }
    println!();

    let (sync, plain, last) = fanout;
    println!(
        "## One presence change delivered to {} watchers\n",
        sync.watchers
    );
    println!(
        "One presentity, {} synchronised (active) and {} plain watchers connected directly (no emulated link); an availability change (and the `at` stamp) published {} times after one unmeasured warm-up change, each measured from just before the publish until 400 ms real after it. Summed over the watchers of each kind; the median over the changes. The document: {} B as a `Notify`.\n",
        sync.watchers,
        plain.watchers,
        args.fanout_changes,
        tern_wire::codec::frame_size(&tern_wire::Down::Notify {
            doc: tern_wire::PresenceDoc {
                presentity: format!("x@{DOMAIN}"),
                updated: 1_800_000_000_000,
                presence: last.clone(),
            }
        })
    );
    println!(
        "| one change, all watchers (median) | SYNC, active (`Batch` delta + `Applied`) | baseline (`Notify`) | ratio |"
    );
    println!("|---|---|---|---|");
    let rows: [Row<Fan>; 6] = [
        ("application bytes down", |f| f.app_down, kb),
        ("application bytes up", |f| f.app_up, kb),
        ("UDP payload bytes down", |f| f.udp_down, kb),
        ("UDP payload bytes up", |f| f.udp_up, kb),
        (
            "datagrams down",
            |f| f.datagrams_down,
            |v| format!("{v:.0}"),
        ),
        ("datagrams up", |f| f.datagrams_up, |v| format!("{v:.0}")),
    ];
    for (name, pick, show) in rows {
        println!(
            "| {name} | {} | {} | {} |",
            show(pick(sync)),
            show(pick(plain)),
            ratio(pick(sync), pick(plain))
        );
    }
    println!(
        "| UDP bytes both ways, per watcher | {:.0} B | {:.0} B | {} |",
        (sync.udp_down + sync.udp_up) / sync.watchers.max(1) as f64,
        (plain.udp_down + plain.udp_up) / plain.watchers.max(1) as f64,
        ratio(sync.udp_down + sync.udp_up, plain.udp_down + plain.udp_up)
    );
    let kinds = |k: &[f64; 5]| {
        let v: Vec<String> = k.iter().map(|c| format!("{c:.0}")).collect();
        v.join(" / ")
    };
    println!(
        "| QUIC frames received by the watchers (STREAM / ACK / PING / flow credit / other) | {} | {} | |",
        kinds(&sync.quic_down),
        kinds(&plain.quic_down)
    );
    println!(
        "| QUIC frames sent by the watchers (STREAM / ACK / PING / flow credit / other) | {} | {} | |",
        kinds(&sync.quic_up),
        kinds(&plain.quic_up)
    );
    println!(
        "| presence frame size (min–max) | {}–{} B | {}–{} B | |",
        sync.frame_sizes.0, sync.frame_sizes.1, plain.frame_sizes.0, plain.frame_sizes.1
    );
    println!(
        "| watchers holding the change after 400 ms (all changes) | {} of {} | {} of {} | |",
        sync.delivered,
        sync.watchers * args.fanout_changes,
        plain.delivered,
        plain.watchers * args.fanout_changes
    );
}
