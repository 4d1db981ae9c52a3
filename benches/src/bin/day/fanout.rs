//! One presence change delivered to many watchers: the bytes one change costs across
//! `--watchers` synchronised (active) watchers, and across as many plain ones, in the same
//! run and for the same publishes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tern_wire::{Availability, ClientMode, Presence};

use crate::phone::{Phone, Spec};
use crate::publisher::Publisher;
use crate::schedule::EPOCH;
use crate::{Args, DOMAIN, User, net};

/// The fan-out measurement's result for one kind of watcher, per change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fan {
    pub(crate) watchers: usize,
    /// Watchers that held the change within the settle time, summed over changes.
    pub(crate) delivered: usize,
    pub(crate) app_down: f64,
    pub(crate) app_up: f64,
    pub(crate) udp_down: f64,
    pub(crate) udp_up: f64,
    pub(crate) datagrams_down: f64,
    pub(crate) datagrams_up: f64,
    /// Sizes of the presence frames seen (min, max).
    pub(crate) frame_sizes: (usize, usize),
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
            };
            groups[g].push(Phone::start(&endpoint, addr, spec, args.wait).await?);
        }
    }
    let settle = Duration::from_millis(400);
    tokio::time::sleep(settle).await;
    let mut fans = [Fan::default(), Fan::default()];
    let mut last = doc(Availability::AVAILABLE, EPOCH);
    for k in 0..args.fanout_changes {
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
        for ((group, before), fan) in groups.iter().zip(&before).zip(&mut fans) {
            fan.watchers = group.len();
            for (phone, (stats, frames)) in group.iter().zip(before) {
                let now = phone.conn.stats();
                fan.udp_down += (now.udp_rx.bytes - stats.udp_rx.bytes) as f64;
                fan.udp_up += (now.udp_tx.bytes - stats.udp_tx.bytes) as f64;
                fan.datagrams_down += (now.udp_rx.datagrams - stats.udp_rx.datagrams) as f64;
                fan.datagrams_up += (now.udp_tx.datagrams - stats.udp_tx.datagrams) as f64;
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
        }
    }
    let n = args.fanout_changes as f64;
    for fan in &mut fans {
        fan.app_down /= n;
        fan.app_up /= n;
        fan.udp_down /= n;
        fan.udp_up /= n;
        fan.datagrams_down /= n;
        fan.datagrams_up /= n;
    }
    for group in groups {
        for phone in group {
            phone.stop().await?;
        }
    }
    publisher.bye().await;
    let [sync, plain] = fans;
    Ok((sync, plain, last))
}
