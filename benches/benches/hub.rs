//! What access decisions cost the hub on the hot path: one publish fanned out to 1,000
//! online watchers (plain sessions, one `Notify` each), driven through the sans-IO hub
//! with an in-memory store, under four rule sets of the presentity. The baseline is the
//! same publish with no rules, measured in the same run, interleaved round by round; the
//! table gives the ratios. (Frames per publish count the owner's `Ok` too.)
//!
//! Two more rows measure federation (issue 7): the same gateway joined to XMPP with the
//! same local watchers (what being federated costs when nobody is remote), and 1,000
//! XMPP watchers instead (one outbox write and one `Federate` stanza each; the store's
//! outbox is emptied after every publish, as the bridge's confirmations do).
//!
//! `cargo bench -p tern-benches --bench hub`

use std::hint::black_box;
use std::time::Instant;

use tern_gateway_core::auth::hash_token;
use tern_gateway_core::federation::{Inbound, SubKind};
use tern_gateway_core::{DomainConfig, Hub, HubConfig, MemStore, Store, UserRecord};
use tern_wire::{Availability, Decision, Hello, PresenceRule, Rules, Up, VERSION, View, When, Who};

const WATCHERS: u64 = 1_000;
const OWNER: &str = "alice@example.com";

fn user(address: &str) -> UserRecord {
    UserRecord {
        address: address.into(),
        token_hash: hash_token("t"),
        presentity: true,
        inbox: true,
        aliases: Vec::new(),
        created: 0,
    }
}

/// Who watches the owner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// `WATCHERS` local principals online, on a gateway not joined to XMPP.
    Local,
    /// The same on a gateway whose `example.com` is joined to XMPP.
    LocalFederated,
    /// `WATCHERS` XMPP users, on a gateway joined to XMPP.
    Remote,
}

/// A hub with the owner on connection 0 and `WATCHERS` subscribers, the owner's rules
/// set.
fn world(rules: &Rules, audience: Audience) -> (Hub, MemStore) {
    let federation = (audience != Audience::Local).then(|| "example.com".to_string());
    let config = HubConfig {
        domains: vec![
            DomainConfig::new("example.com"),
            DomainConfig::new("work.example"),
        ],
        federation,
        ..HubConfig::default()
    };
    let mut store = MemStore::default();
    let mut hub = Hub::new(config);
    store.put_user(&user(OWNER)).expect("user");
    for i in 0..WATCHERS {
        let domain = if i % 2 == 0 {
            "example.com"
        } else {
            "work.example"
        };
        store
            .put_user(&user(&format!("w{i}@{domain}")))
            .expect("user");
    }
    hub.load(0, &mut store).expect("load");
    let now = 1_000;
    let login = |hub: &mut Hub, store: &mut MemStore, conn: u64, who: &str| {
        hub.handle_connect(now, conn);
        let hello = Hello {
            version: VERSION,
            user: who.into(),
            token: "t".into(),
        };
        hub.handle_frame(now, conn, Up::Hello(hello), store)
            .expect("hello");
    };
    login(&mut hub, &mut store, 0, OWNER);
    let rules_frame = Up::SetRules {
        req: 1,
        rules: rules.clone(),
    };
    hub.handle_frame(now, 0, rules_frame, &mut store)
        .expect("rules");
    if audience == Audience::Remote {
        for i in 0..WATCHERS {
            let subscribe = Inbound::Subscription {
                from: format!("r{i}@xmpp.example"),
                to: OWNER.into(),
                kind: SubKind::Subscribe,
            };
            hub.handle_federated(now, subscribe, &mut store)
                .expect("remote subscribe");
        }
        while hub.poll_action().is_some() {}
        store.fed_remove(u64::MAX).expect("outbox");
        return (hub, store);
    }
    for i in 0..WATCHERS {
        let domain = if i % 2 == 0 {
            "example.com"
        } else {
            "work.example"
        };
        let conn = i + 1;
        login(&mut hub, &mut store, conn, &format!("w{i}@{domain}"));
        let subscribe = Up::Subscribe {
            req: 2,
            target: OWNER.into(),
        };
        hub.handle_frame(now, conn, subscribe, &mut store)
            .expect("subscribe");
    }
    while hub.poll_action().is_some() {}
    (hub, store)
}

fn rule(who: Who, decision: Decision, view: Option<View>, when: Option<When>) -> PresenceRule {
    PresenceRule {
        who,
        decision,
        view,
        when,
    }
}

fn rule_sets() -> Vec<(&'static str, Rules)> {
    let busy = View {
        tuples: Vec::new(),
        hide: View::NOTE | View::CONTACT,
        status: Some(Availability::BUSY),
    };
    let office = When {
        days: 0x1f,
        from: 0,
        to: 1440,
        offset: 0,
    };
    // Twenty rules naming other principals first: the watchers' own rule is found last.
    let mut crowded: Vec<PresenceRule> = (0..18)
        .map(|i| {
            rule(
                Who::User(format!("x{i}@else.example")),
                Decision::Deny,
                None,
                None,
            )
        })
        .collect();
    crowded.push(rule(
        Who::Domain("work.example".into()),
        Decision::Allow,
        Some(busy.clone()),
        Some(office),
    ));
    crowded.push(rule(Who::Anyone, Decision::Allow, None, None));
    vec![
        ("no rules (baseline)", Rules::default()),
        (
            "half the watchers see a view",
            Rules {
                presence: vec![rule(
                    Who::Domain("work.example".into()),
                    Decision::Allow,
                    Some(busy),
                    None,
                )],
                ..Rules::default()
            },
        ),
        (
            "20 rules, a timed view for half",
            Rules {
                presence: crowded,
                ..Rules::default()
            },
        ),
        (
            "every watcher politely blocked",
            Rules {
                presence: vec![rule(Who::Anyone, Decision::Polite, None, None)],
                ..Rules::default()
            },
        ),
    ]
}

/// Rounds of measurement; in each, every rule set publishes `PER_ROUND` times, in turn,
/// so that a noisy moment hurts all of them alike.
const ROUNDS: usize = 30;
const PER_ROUND: u32 = 10;

fn main() {
    // `cargo test` builds benches with `--bench`-less arguments: run a single round then.
    let quick = std::env::args().any(|a| a == "--test");
    let rounds = if quick { 1 } else { ROUNDS };
    let mut worlds: Vec<(&str, Hub, MemStore)> = rule_sets()
        .into_iter()
        .map(|(name, rules)| {
            let (hub, store) = world(&rules, Audience::Local);
            (name, hub, store)
        })
        .collect();
    for (name, audience) in [
        ("no rules, gateway joined to XMPP", Audience::LocalFederated),
        ("no rules, 1,000 XMPP watchers", Audience::Remote),
    ] {
        let (hub, store) = world(&Rules::default(), audience);
        worlds.push((name, hub, store));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); worlds.len()];
    let mut frames = vec![0usize; worlds.len()];
    let mut now = 10_000_000;
    let mut note = 0u64;
    for round in 0..=rounds {
        for (i, (_, hub, store)) in worlds.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..PER_ROUND {
                now += 1;
                note += 1;
                let presence = tern_benches::samples::presence_with_note(&format!("n{note}"));
                let publish = Up::Publish { req: 3, presence };
                hub.handle_frame(now, 0, publish, store).expect("publish");
                while let Some(action) = hub.poll_action() {
                    if round > 0 {
                        frames[i] += 1;
                    }
                    black_box(action);
                }
                // The bridge's confirmation empties the outbox.
                store.fed_remove(u64::MAX).expect("outbox");
            }
            // Round 0 warms up.
            if round > 0 {
                samples[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND));
            }
        }
    }
    println!("hub fan-out: one publish to {WATCHERS} watchers, {rounds} rounds of {PER_ROUND}");
    println!();
    println!(
        "| rule set | frames or stanzas per publish | p50 µs per publish | p90 µs | p50 ÷ no rules |"
    );
    println!("|---|---|---|---|---|");
    let mut base = None;
    for (i, (name, _, _)) in worlds.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        let (p50, p90) = (at(0.5), at(0.9));
        let base = *base.get_or_insert(p50);
        let per = frames[i] as f64 / (rounds as f64 * f64::from(PER_ROUND));
        println!(
            "| {name} | {per:.0} | {p50:.0} | {p90:.0} | {:.2}× |",
            p50 / base
        );
    }
}
