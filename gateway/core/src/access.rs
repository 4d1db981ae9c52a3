//! Access decisions: which of a principal's rules applies to a peer at a given time,
//! what that rule decides, what a view leaves of a document, and when time-based rules
//! next change (protocol section "Access rules").
//!
//! Pure functions over [`tern_wire::Rules`]: no sessions, no storage, no clock (time is
//! passed in). The hub calls them; this module may not send, store or cache anything.

use std::collections::HashMap;

use tern_wire::addr::Address;
use tern_wire::limits::TUPLES_MAX;
use tern_wire::{Decision, Delivery, Presence, PresenceRule, Rules, View, When, Who};

use crate::hub::Millis;

/// The local part that marks unauthenticated peers: `anonymous@<domain>`.
pub const ANONYMOUS: &str = "anonymous";

/// Most presence rules a principal may have.
pub const PRESENCE_RULES_MAX: usize = 64;
/// Most inbox rules a principal may have.
pub const INBOX_RULES_MAX: usize = 64;
/// Most delegates a principal may have.
pub const DELEGATES_MAX: usize = 16;

const DAY_MINUTES: i64 = 1440;
const MINUTE_MS: i64 = 60_000;

/// Whether a (normalised) principal name is an anonymous peer's: `anonymous@d` as
/// others see it, or `anonymous+<session>@d` as the gateway names it inside.
pub fn is_anonymous(name: &str) -> bool {
    let local = name.rsplit_once('@').map_or(name, |(local, _)| local);
    local == ANONYMOUS || local.starts_with("anonymous+")
}

/// The name others see for a peer: anonymous peers are all `anonymous@<domain>`.
pub fn public_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.rsplit_once('@') {
        Some((_, domain)) if is_anonymous(name) => format!("{ANONYMOUS}@{domain}").into(),
        _ => name.into(),
    }
}

fn domain_of(name: &str) -> &str {
    name.rsplit_once('@').map_or("", |(_, d)| d)
}

/// How specific a rule's `who` is for `peer`: `None` if it does not name the peer,
/// else a rank (0 most specific).
fn rank(who: &Who, peer: &str) -> Option<u8> {
    let anonymous = is_anonymous(peer);
    match who {
        Who::User(name) if !anonymous && name.as_str() == peer => Some(0),
        Who::Domain(domain) if !anonymous && domain.as_str() == domain_of(peer) => Some(1),
        Who::Anonymous if anonymous => Some(2),
        Who::Anyone if !anonymous => Some(3),
        _ => None,
    }
}

/// The presence rules indexed by whom they name, each list in rule order, so that
/// finding a watcher's rule costs a hash lookup or two, not a pass over every rule (a
/// publish fans out to every watcher).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    users: HashMap<String, Vec<usize>>,
    domains: HashMap<String, Vec<usize>>,
    anonymous: Vec<usize>,
    anyone: Vec<usize>,
}

impl Index {
    /// Indexes the presence rules.
    pub fn new(rules: &Rules) -> Self {
        let mut index = Self::default();
        for (i, rule) in rules.presence.iter().enumerate() {
            let list = match &rule.who {
                Who::User(name) => index.users.entry(name.to_string()).or_default(),
                Who::Domain(name) => index.domains.entry(name.to_string()).or_default(),
                Who::Anonymous => &mut index.anonymous,
                Who::Anyone => &mut index.anyone,
            };
            list.push(i);
        }
        index
    }
}

/// The presence rule that applies to `peer` at `now`, with its index in the list
/// (`index` is [`Index::new`] of the same rules).
pub fn presence_rule<'r>(
    rules: &'r Rules,
    index: &Index,
    peer: &str,
    now: Millis,
) -> Option<(usize, &'r PresenceRule)> {
    let empty: &[usize] = &[];
    let kinds: [&[usize]; 4] = if is_anonymous(peer) {
        [empty, empty, &index.anonymous, empty]
    } else {
        [
            index.users.get(peer).map_or(empty, Vec::as_slice),
            index
                .domains
                .get(domain_of(peer))
                .map_or(empty, Vec::as_slice),
            empty,
            &index.anyone,
        ]
    };
    kinds.into_iter().flatten().find_map(|&i| {
        let rule = rules.presence.get(i)?;
        rule.when
            .as_ref()
            .is_none_or(|w| applies(w, now))
            .then_some((i, rule))
    })
}

/// What a watcher is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<'r> {
    /// The decision.
    pub decision: Decision,
    /// The view, when allowed with one.
    pub view: Option<&'r View>,
    /// The deciding rule's index; `None` when no rule matched. Within one epoch of the
    /// rules the same index means the same view (the cache key of deltas).
    pub rule: Option<usize>,
}

/// What `owner`'s rules grant `peer` at `now` (`index` is [`Index::new`] of them). The
/// owner always sees itself whole.
pub fn grant<'r>(
    rules: &'r Rules,
    index: &Index,
    owner: &str,
    peer: &str,
    now: Millis,
) -> Grant<'r> {
    if peer == owner {
        return Grant {
            decision: Decision::Allow,
            view: None,
            rule: None,
        };
    }
    match presence_rule(rules, index, peer, now) {
        Some((i, rule)) => Grant {
            decision: rule.decision,
            view: rule.view.as_ref(),
            rule: Some(i),
        },
        None => Grant {
            decision: if is_anonymous(peer) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            view: None,
            rule: None,
        },
    }
}

/// What becomes of a message from `sender` to an inbox under these rules.
pub fn delivery(rules: &Rules, sender: &str) -> Delivery {
    rules
        .inbox
        .iter()
        .filter_map(|rule| rank(&rule.who, sender).map(|r| (r, rule.delivery)))
        .min_by_key(|(r, _)| *r)
        .map_or_else(
            || {
                if is_anonymous(sender) {
                    Delivery::Refuse
                } else {
                    Delivery::Accept
                }
            },
            |(_, d)| d,
        )
}

/// Whether the rules name `peer` a delegate with every right in `rights`.
pub fn delegated(rules: &Rules, peer: &str, rights: u8) -> bool {
    rules
        .delegates
        .iter()
        .any(|d| d.who.as_str() == peer && d.rights & rights == rights)
}

/// What a decision and its view leave of a document: the view when allowed (to
/// subscribe or to fetch only, or when a granted subscription stays under *ask*),
/// nothing when denied or politely blocked.
pub fn shown<'a>(
    decision: Decision,
    view: Option<&View>,
    presence: &'a Presence,
) -> std::borrow::Cow<'a, Presence> {
    use std::borrow::Cow;
    match (decision, view) {
        (Decision::Allow | Decision::Ask | Decision::FetchOnly, None) => Cow::Borrowed(presence),
        (Decision::Allow | Decision::Ask | Decision::FetchOnly, Some(view)) => {
            Cow::Owned(apply_view(view, presence))
        }
        (Decision::Deny | Decision::Polite, _) => Cow::Owned(Presence::default()),
    }
}

/// The document as a view shows it.
pub fn apply_view(view: &View, presence: &Presence) -> Presence {
    let tuples = presence
        .tuples
        .iter()
        .filter(|t| view.tuples.is_empty() || view.tuples.contains(&t.id))
        .map(|t| {
            let mut t = t.clone();
            if view.hide & View::CONTACT != 0 {
                t.contact = None;
            }
            if view.hide & View::NOTE != 0 {
                t.note = None;
            }
            if view.hide & View::TIME != 0 {
                t.at = None;
            }
            if view.hide & View::EXT != 0 {
                t.ext.clear();
            }
            if let Some(status) = view.status
                && t.basic == tern_wire::Basic::Open
            {
                t.availability = Some(status);
            }
            t
        })
        .collect();
    let card = if view.hide & View::CARD != 0 {
        Vec::new()
    } else {
        presence.card.clone()
    };
    Presence { tuples, card }
}

/// Minutes since the Unix epoch in the rule's time zone.
fn local_minutes(when: &When, now: Millis) -> i64 {
    let utc = i64::try_from(now / 60_000).unwrap_or(i64::MAX / 2);
    utc + i64::from(when.offset)
}

/// Day of the week, 0 = Monday, of a local day number (day 0 was a Thursday).
fn weekday(day: i64) -> u32 {
    u32::try_from((day + 3).rem_euclid(7)).unwrap_or(0)
}

/// Whether a time window applies at `now`.
pub fn applies(when: &When, now: Millis) -> bool {
    let local = local_minutes(when, now);
    let day = local.div_euclid(DAY_MINUTES);
    let minute = local.rem_euclid(DAY_MINUTES);
    let on = |day: i64| when.days & (1 << weekday(day)) != 0;
    let (from, to) = (i64::from(when.from), i64::from(when.to));
    if from < to {
        on(day) && from <= minute && minute < to
    } else {
        (on(day) && minute >= from) || (on(day - 1) && minute < to)
    }
}

/// The first instant after `now` at which some time window of the rules may start or
/// end; `None` when no rule has one.
pub fn next_boundary(rules: &Rules, now: Millis) -> Option<Millis> {
    rules
        .presence
        .iter()
        .filter_map(|r| r.when.as_ref())
        .flat_map(|w| [(w, w.from), (w, w.to)])
        .filter_map(|(w, minute)| {
            let local = local_minutes(w, now);
            let m = i64::from(minute).rem_euclid(DAY_MINUTES);
            let mut at = local - local.rem_euclid(DAY_MINUTES) + m;
            if at <= local {
                at += DAY_MINUTES;
            }
            let utc_ms = (at - i64::from(w.offset)).checked_mul(MINUTE_MS)?;
            u64::try_from(utc_ms).ok()
        })
        .min()
}

/// Which time-limited rules apply at `now`, as a bit set by index (the first 64): when
/// it changes, some watcher's decision or view may have changed.
pub fn timed_state(rules: &Rules, now: Millis) -> u64 {
    rules
        .presence
        .iter()
        .enumerate()
        .take(64)
        .filter(|(_, r)| r.when.as_ref().is_some_and(|w| applies(w, now)))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

/// Whether any presence rule is time-limited.
pub fn has_timed(rules: &Rules) -> bool {
    rules.presence.iter().any(|r| r.when.is_some())
}

/// Checks rules sent by a client and normalises the names in them.
pub fn normalise(mut rules: Rules) -> Result<Rules, &'static str> {
    if rules.presence.len() > PRESENCE_RULES_MAX {
        return Err("at most 64 presence rules");
    }
    if rules.inbox.len() > INBOX_RULES_MAX {
        return Err("at most 64 inbox rules");
    }
    if rules.delegates.len() > DELEGATES_MAX {
        return Err("at most 16 delegates");
    }
    for rule in &mut rules.presence {
        normalise_who(&mut rule.who)?;
        if let Some(view) = &rule.view
            && view.tuples.len() > TUPLES_MAX
        {
            return Err("a view names at most 16 tuples");
        }
        if let Some(when) = &rule.when {
            check_when(when)?;
        }
    }
    for rule in &mut rules.inbox {
        normalise_who(&mut rule.who)?;
    }
    for delegate in &mut rules.delegates {
        let address = Address::parse(&delegate.who).map_err(|_| "a delegate is local@domain")?;
        if is_anonymous(address.as_str()) {
            return Err("an anonymous peer cannot be a delegate");
        }
        delegate.who = address.into_string();
    }
    Ok(rules)
}

fn normalise_who(who: &mut Who) -> Result<(), &'static str> {
    match who {
        Who::User(name) => {
            let address = Address::parse(name).map_err(|_| "a user rule names local@domain")?;
            *name = address.into_string();
        }
        Who::Domain(domain) => {
            // A domain is normalised as the domain part of an address would be.
            let address = Address::parse(&format!("x@{domain}"))
                .map_err(|_| "a domain rule names a valid domain")?;
            *domain = address.domain().to_string();
        }
        Who::Anonymous | Who::Anyone => {}
    }
    Ok(())
}

fn check_when(when: &When) -> Result<(), &'static str> {
    let ok = (1..=0x7f).contains(&when.days)
        && when.from < 1440
        && (1..=1440).contains(&when.to)
        && when.from != when.to
        && when.offset.unsigned_abs() <= 840;
    if ok {
        Ok(())
    } else {
        Err("a time window needs days 1-127, from 0-1439, to 1-1440 (not from), offset ±840")
    }
}

#[cfg(test)]
mod tests;
