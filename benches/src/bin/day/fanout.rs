//! One presence change delivered to many watchers: the bytes one change costs across
//! `--watchers` synchronised (active) watchers, and across as many plain ones, in the same
//! run and for the same publishes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tern_wire::{Availability, ClientMode, Presence};

use crate::phone::{Phone, Spec};
use crate::publisher::Publisher;
use crate::radio::quantile;
use crate::schedule::EPOCH;
use crate::{Args, DOMAIN, User, net};

/// The fan-out measurement's result for one kind of watcher: totals over its watchers for
/// one change (and, once summarised, the median over the changes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fan {
    pub(crate) watchers: usize,
    /// Watchers that held the change within the settle time (summarised: summed over
    /// changes).
    pub(crate) delivered: usize,
    pub(crate) app_down: f64,
    pub(crate) app_up: f64,
    pub(crate) udp_down: f64,
    pub(crate) udp_up: f64,
    pub(crate) datagrams_down: f64,
    pub(crate) datagrams_up: f64,
    /// Sizes of the presence frames seen (min, max).
    pub(crate) frame_sizes: (usize, usize),
    /// QUIC frames received and sent: STREAM, ACK, PING, flow control (MAX_DATA,
    /// MAX_STREAM_DATA), others.
    pub(crate) quic_down: [f64; 5],
    pub(crate) quic_up: [f64; 5],
}

/// One presentity, `watchers` synchronised (active) watchers and as many plain ones,
/// all connected directly; `fanout_changes` availability changes, each measured from
/// just before the publish until the transport's acknowledgements have settled.
pub(crate) async fn fan_out(
    args: &Args,
    addr: SocketAddr,
    cert: &[u8],
    direct: &quinn::Endpoint,
    user: &impl Fn(&str) -> Result<User>,
) -> Result<(Fan, Fan, Presence)> {
    progress!(
        "fan-out: {} synchronised and {} plain watchers of one presentity ...",
        args.watchers,
        args.watchers
    );
    let x = user(&format!("x@{DOMAIN}"))?;
    let mut publisher = Publisher::login(direct, addr, &x.address, &x.token).await?;
    let doc = |availability: Availability, second: u64| Presence {
        tuples: vec![tern_wire::Tuple {
            id: "phone".into(),
            basic: tern_wire::Basic::Open,
            availability: Some(availability),
            contact: Some(format!("tern:{}", x.address)),
            note: Some("working from home".into()),
            at: Some(second),
            ext: Vec::new(),
        }],
        card: vec![tern_wire::CardField {
            kind: tern_wire::CardKind::NAME,
            value: "Xavier Okafor".into(),
        }],
    };
    publisher
        .publish(doc(Availability::AVAILABLE, EPOCH))
        .await?;
    // No keep-alives: the measurement windows must hold nothing but the change.
    let endpoint = net::endpoint(cert, None, Duration::from_secs(120))?;
    let mut groups: [Vec<Phone>; 2] = [Vec::new(), Vec::new()];
    for (g, (kind, sync)) in [("sync", true), ("plain", false)].into_iter().enumerate() {
        for i in 0..args.watchers {
            let u = user(&format!("w-{kind}-{i:03}@{DOMAIN}"))?;
            let spec = Spec {
                user: u.address,
                token: u.token,
                device: 1,
                sync,
                mode: ClientMode::ACTIVE,
                targets: vec![x.address.clone()],
                keepalive: None,
            };
            groups[g].push(Phone::start(&endpoint, addr, spec, args.wait).await?);
        }
    }
    let settle = Duration::from_millis(400);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut changes: [Vec<Fan>; 2] = [Vec::new(), Vec::new()];
    let mut last = doc(Availability::AVAILABLE, EPOCH);
    // Change 0 is not measured: the first packet after the handshake's quiet period also
    // carries one-off frames (the gateway's NEW_TOKENs), which are no part of a change.
    for k in 0..=args.fanout_changes {
        let before: Vec<Vec<(quinn::ConnectionStats, usize)>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| (p.conn.stats(), p.with(|r| r.frames.len())))
                    .collect()
            })
            .collect();
        let availability = if k % 2 == 0 {
            Availability::AWAY
        } else {
            Availability::AVAILABLE
        };
        last = doc(availability, EPOCH + 60 * (k as u64 + 1));
        publisher.publish(last.clone()).await?;
        tokio::time::sleep(settle).await;
        if k == 0 {
            continue;
        }
        for ((group, before), kind) in groups.iter().zip(&before).zip(&mut changes) {
            let mut fan = Fan {
                watchers: group.len(),
                ..Fan::default()
            };
            for (phone, (stats, frames)) in group.iter().zip(before) {
                let now = phone.conn.stats();
                fan.udp_down += (now.udp_rx.bytes - stats.udp_rx.bytes) as f64;
                fan.udp_up += (now.udp_tx.bytes - stats.udp_tx.bytes) as f64;
                fan.datagrams_down += (now.udp_rx.datagrams - stats.udp_rx.datagrams) as f64;
                fan.datagrams_up += (now.udp_tx.datagrams - stats.udp_tx.datagrams) as f64;
                add_frames(&mut fan.quic_down, &now.frame_rx, &stats.frame_rx);
                add_frames(&mut fan.quic_up, &now.frame_tx, &stats.frame_tx);
                phone.with(|r| {
                    for f in r.frames.get(*frames..).unwrap_or_default() {
                        if f.up {
                            fan.app_up += f.size as f64;
                        } else {
                            fan.app_down += f.size as f64;
                        }
                        if f.presence {
                            let (lo, hi) = fan.frame_sizes;
                            fan.frame_sizes = if lo == 0 {
                                (f.size, f.size)
                            } else {
                                (lo.min(f.size), hi.max(f.size))
                            };
                        }
                    }
                    if r.docs.first().and_then(|d| d.as_ref()) == Some(&last) {
                        fan.delivered += 1;
                    }
                });
            }
            kind.push(fan);
        }
    }
    for group in groups {
        for phone in group {
            phone.stop().await?;
        }
    }
    publisher.bye().await;
    let [sync, plain] = changes;
    Ok((summarise(&sync), summarise(&plain), last))
}

/// The median of each figure over the changes (housekeeping frames of the transport, such
/// as new connection ids, fall into a few windows and should not count as the cost of a
/// change); deliveries summed; frame sizes over all.
fn summarise(changes: &[Fan]) -> Fan {
    let median = |pick: &dyn Fn(&Fan) -> f64| {
        let mut v: Vec<f64> = changes.iter().map(pick).collect();
        quantile(&mut v, 0.5).unwrap_or(0.0)
    };
    let sizes = changes.iter().map(|f| f.frame_sizes).filter(|s| s.0 > 0);
    Fan {
        watchers: changes.first().map_or(0, |f| f.watchers),
        delivered: changes.iter().map(|f| f.delivered).sum(),
        app_down: median(&|f| f.app_down),
        app_up: median(&|f| f.app_up),
        udp_down: median(&|f| f.udp_down),
        udp_up: median(&|f| f.udp_up),
        datagrams_down: median(&|f| f.datagrams_down),
        datagrams_up: median(&|f| f.datagrams_up),
        frame_sizes: sizes
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
            .unwrap_or((0, 0)),
        quic_down: std::array::from_fn(|i| median(&|f| f.quic_down[i])),
        quic_up: std::array::from_fn(|i| median(&|f| f.quic_up[i])),
    }
}

/// Adds the QUIC frames counted between two snapshots, by kind: STREAM, ACK, PING, and
/// flow-control credit (MAX_DATA, MAX_STREAM_DATA), everything else.
fn add_frames(sum: &mut [f64; 5], now: &quinn::FrameStats, then: &quinn::FrameStats) {
    let total = |s: &quinn::FrameStats| {
        s.acks
            + s.ack_frequency
            + s.crypto
            + s.connection_close
            + s.data_blocked
            + s.datagram
            + u64::from(s.handshake_done)
            + s.immediate_ack
            + s.max_data
            + s.max_stream_data
            + s.max_streams_bidi
            + s.max_streams_uni
            + s.new_connection_id
            + s.new_token
            + s.path_challenge
            + s.path_response
            + s.ping
            + s.reset_stream
            + s.retire_connection_id
            + s.stream_data_blocked
            + s.streams_blocked_bidi
            + s.streams_blocked_uni
            + s.stop_sending
            + s.stream
    };
    let stream = now.stream - then.stream;
    let acks = now.acks - then.acks;
    let ping = now.ping - then.ping;
    let credit = (now.max_data + now.max_stream_data) - (then.max_data + then.max_stream_data);
    let other = (total(now) - total(then)).saturating_sub(stream + acks + ping + credit);
    for (s, n) in sum.iter_mut().zip([stream, acks, ping, credit, other]) {
        *s += n as f64;
    }
}
