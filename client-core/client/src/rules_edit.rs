//! Editing a principal's rules ([`Rules`]) before writing them back with
//! [`crate::Client::set_rules`]: the textual forms people type (whom a rule is about,
//! days of the week, times of day, UTC offsets, fields to hide), merging one rule into
//! the rules, and the checks the gateway makes (so that a bad edit fails here, with a
//! reason, instead of as `malformed`).
//!
//! Owns: parsing and formatting those forms, where an edited rule goes among the
//! others, and the rules' limits as the gateway enforces them. It is pure: no I/O, no
//! clock, no protocol flow. It does not evaluate rules (which one applies to a watcher
//! now is the gateway's business).
//!
//! ## Where an edited rule goes
//! Among presence rules, a watcher is matched by the most specific *kind* of rule that
//! names it (`User`, then `Domain`, then `Anonymous`, then `Anyone`); within that kind,
//! the first rule whose time window applies decides. Rules about different users or
//! different domains never compete, so only the order among the rules for the same
//! [`Who`] matters. Hence:
//! * [`put_presence_rule`] makes the rule *the* rule for its `Who`: it replaces every
//!   rule for it (in the place of the first), or is appended.
//! * [`add_presence_rule`] keeps the other rules for its `Who` and goes before them: a
//!   time-limited exception (allow colleagues 09:00 to 17:00, else the rule after it).
//!
//! ```
//! use tern_client::rules_edit::{parse_days, parse_time, parse_who, put_presence_rule, window};
//! use tern_client::{Decision, PresenceRule, Rules};
//! # fn main() -> Result<(), tern_client::rules_edit::RuleError> {
//! let mut rules = Rules::default();
//! let when = window(Some(parse_days("mon-fri")?), Some(parse_time("09:00")?),
//!     Some(parse_time("17:00")?), 60)?;
//! put_presence_rule(&mut rules, PresenceRule {
//!     who: parse_who("@example.com")?,
//!     decision: Decision::Allow,
//!     view: None,
//!     when,
//! });
//! assert_eq!(rules.presence.len(), 1);
//! # Ok(()) }
//! ```

use tern_wire::addr::{Address, normalise_domain};
use tern_wire::{
    Availability, Delegate, Delivery, InboxRule, PresenceRule, Rules, View, When, Who,
};

/// At most this many presence rules (the gateway refuses more as `malformed`).
pub const PRESENCE_RULES_MAX: usize = 64;
/// At most this many inbox rules.
pub const INBOX_RULES_MAX: usize = 64;
/// At most this many delegates.
pub const DELEGATES_MAX: usize = 16;
/// At most this many tuples named by one view.
pub const VIEW_TUPLES_MAX: usize = 16;
/// Every day of the week, as [`When::days`].
pub const EVERY_DAY: u8 = 0x7f;
/// Minutes in a day: the largest [`When::to`].
pub const DAY_MINUTES: u16 = 1440;
/// The largest UTC offset, minutes either way (UTC-14:00 to UTC+14:00).
pub const OFFSET_MAX: i16 = 840;

/// Why a textual form or an edit is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Not `user@domain`, `@domain`, `anonymous` or `anyone`.
    #[error("{0:?} is not user@domain, @domain, anonymous or anyone")]
    Who(String),
    /// Not a day, a range of days or a list of them.
    #[error("{0:?} is not a day (mon..sun), a range (mon-fri) or a list (sat,sun)")]
    Days(String),
    /// Not a time of day.
    #[error("{0:?} is not a time of day, HH:MM from 00:00 to 24:00")]
    Time(String),
    /// Not a UTC offset.
    #[error("{0:?} is not a UTC offset: minutes from -840 to +840 (+60), or +HH:MM")]
    Offset(String),
    /// Not a field a view can hide.
    #[error("{0:?} is not a field to hide: contact, note, time, ext or card")]
    Hide(String),
    /// A tuple id that is empty.
    #[error("a tuple id is empty")]
    Tuple,
    /// A time window the gateway would refuse.
    #[error("time window: {0}")]
    When(String),
    /// A name that is not a valid address or domain.
    #[error("{name:?}: {why}")]
    Name {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        why: String,
    },
    /// Over one of the gateway's limits.
    #[error("at most {max} {what}")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

// ----- whom a rule is about -----

/// Parses whom a rule is about: `user@domain` (one principal, normalised), `@domain`
/// (every principal of a domain), `anonymous` (unauthenticated peers) or `anyone`
/// (every authenticated principal).
pub fn parse_who(s: &str) -> Result<Who, RuleError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("anyone") {
        return Ok(Who::Anyone);
    }
    if s.eq_ignore_ascii_case("anonymous") {
        return Ok(Who::Anonymous);
    }
    if let Some(domain) = s.strip_prefix('@') {
        return normalise_domain(domain)
            .map(Who::Domain)
            .map_err(|_| RuleError::Who(s.to_string()));
    }
    if !s.contains('@') {
        return Err(RuleError::Who(s.to_string()));
    }
    Address::parse(s)
        .map(|a| Who::User(a.into_string()))
        .map_err(|_| RuleError::Who(s.to_string()))
}

/// The textual form of [`parse_who`]: `user@domain`, `@domain`, `anonymous`, `anyone`.
pub fn format_who(who: &Who) -> String {
    match who {
        Who::Anyone => "anyone".into(),
        Who::Anonymous => "anonymous".into(),
        Who::User(user) => user.clone(),
        Who::Domain(domain) => format!("@{domain}"),
    }
}

// ----- time windows -----

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One day's index (0 Monday … 6 Sunday), by its English name or a prefix of at least
/// three letters.
fn day(s: &str) -> Option<u8> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let s = s.trim().to_ascii_lowercase();
    if s.len() < 3 {
        return None;
    }
    FULL.iter()
        .position(|full| full.starts_with(&s))
        .and_then(|at| u8::try_from(at).ok())
}

/// Parses days of the week into [`When::days`]: a comma-separated list of days (`mon`
/// or `monday`), ranges (`mon-fri`; `fri-mon` wraps over the weekend), `weekdays`,
/// `weekend` or `daily`.
pub fn parse_days(s: &str) -> Result<u8, RuleError> {
    let bad = || RuleError::Days(s.to_string());
    let mut days = 0u8;
    for item in s.split(',') {
        let item = item.trim().to_ascii_lowercase();
        days |= match item.as_str() {
            "daily" | "all" => EVERY_DAY,
            "weekdays" => 0x1f,
            "weekend" | "weekends" => 0x60,
            _ => match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (day(first).ok_or_else(bad)?, day(last).ok_or_else(bad)?);
                    let mut bits = 0u8;
                    let mut d = first;
                    loop {
                        bits |= 1 << d;
                        if d == last {
                            break bits;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => 1 << day(&item).ok_or_else(bad)?,
            },
        };
    }
    Ok(days)
}

/// The textual form of [`When::days`]: `daily`, or the days in order (`mon,tue,sat`).
pub fn format_days(days: u8) -> String {
    if days & EVERY_DAY == EVERY_DAY {
        return "daily".into();
    }
    DAYS.iter()
        .enumerate()
        .filter(|(bit, _)| days & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a time of day, `HH:MM` (or a bare hour, `9`), into minutes after midnight:
/// 0 (`00:00`) to [`DAY_MINUTES`] (`24:00`, only meaningful as the end of a window).
pub fn parse_time(s: &str) -> Result<u16, RuleError> {
    let bad = || RuleError::Time(s.to_string());
    let t = s.trim();
    let (hours, minutes) = t.split_once(':').unwrap_or((t, "00"));
    let digits = |p: &str| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours) || minutes.len() != 2 || !digits(minutes) {
        return Err(bad());
    }
    let hours: u16 = hours.parse().map_err(|_| bad())?;
    let minutes: u16 = minutes.parse().map_err(|_| bad())?;
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > DAY_MINUTES {
        return Err(bad());
    }
    Ok(total)
}

/// The textual form of minutes after midnight, `HH:MM`.
pub fn format_time(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Parses an offset from UTC into minutes: a signed number of minutes (`+60`, `-300`,
/// `0`) or `±HH:MM` (`+05:30`). At most [`OFFSET_MAX`] either way.
pub fn parse_offset(s: &str) -> Result<i16, RuleError> {
    let bad = || RuleError::Offset(s.to_string());
    let t = s.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return Err(bad());
    }
    let magnitude: u32 = match body.split_once(':') {
        Some((h, m)) if m.len() == 2 => {
            let h: u32 = h.parse().map_err(|_| bad())?;
            let m: u32 = m.parse().map_err(|_| bad())?;
            if m >= 60 {
                return Err(bad());
            }
            h * 60 + m
        }
        Some(_) => return Err(bad()),
        None => body.parse().map_err(|_| bad())?,
    };
    let magnitude = i16::try_from(magnitude)
        .ok()
        .filter(|m| *m <= OFFSET_MAX)
        .ok_or_else(bad)?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// A time window from its optional parts: `None` when none of days, start and end is
/// given (the rule always applies). Missing parts default to every day, from `00:00`,
/// to `24:00`. `offset` is the principal's offset from UTC, minutes. Checked as the
/// gateway checks it ([`check_when`]); a window whose start is after its end crosses
/// midnight (`22:00` to `06:00`).
pub fn window(
    days: Option<u8>,
    from: Option<u16>,
    to: Option<u16>,
    offset: i16,
) -> Result<Option<When>, RuleError> {
    if days.is_none() && from.is_none() && to.is_none() {
        return Ok(None);
    }
    let when = When {
        days: days.unwrap_or(EVERY_DAY),
        from: from.unwrap_or(0),
        to: to.unwrap_or(DAY_MINUTES),
        offset,
    };
    check_when(&when)?;
    Ok(Some(when))
}

/// Checks a time window as the gateway does: some days (and no bit beyond Sunday), a
/// start before `24:00`, an end after `00:00`, start and end different, and an offset
/// within [`OFFSET_MAX`].
pub fn check_when(when: &When) -> Result<(), RuleError> {
    let bad = |why: &str| Err(RuleError::When(why.to_string()));
    if when.days == 0 || when.days & !EVERY_DAY != 0 {
        return bad("no days, or days beyond Sunday");
    }
    if when.from >= DAY_MINUTES {
        return bad("it starts at 24:00 or later");
    }
    if when.to == 0 || when.to > DAY_MINUTES {
        return bad("it ends at 00:00 or after 24:00");
    }
    if when.from == when.to {
        return bad("it starts when it ends");
    }
    if when.offset.unsigned_abs() > OFFSET_MAX.unsigned_abs() {
        return bad("the UTC offset is more than 14 hours");
    }
    Ok(())
}

// ----- views -----

/// Parses a comma-separated list of fields to hide (`contact`, `note`, `time`, `ext`,
/// `card`) into [`View::hide`].
pub fn parse_hide(s: &str) -> Result<u8, RuleError> {
    let mut hide = 0;
    for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        hide |= match field.to_ascii_lowercase().as_str() {
            "contact" => View::CONTACT,
            "note" => View::NOTE,
            "time" | "at" => View::TIME,
            "ext" => View::EXT,
            "card" => View::CARD,
            _ => return Err(RuleError::Hide(field.to_string())),
        };
    }
    Ok(hide)
}

/// Parses a comma-separated list of tuple ids (at most [`VIEW_TUPLES_MAX`]).
pub fn parse_tuples(s: &str) -> Result<Vec<String>, RuleError> {
    let ids: Vec<String> = s.split(',').map(|id| id.trim().to_string()).collect();
    if ids.iter().any(String::is_empty) {
        return Err(RuleError::Tuple);
    }
    if ids.len() > VIEW_TUPLES_MAX {
        return Err(RuleError::TooMany {
            what: "tuples in a view",
            max: VIEW_TUPLES_MAX,
        });
    }
    Ok(ids)
}

/// A view from its parts; `None` (the whole document) when it would show everything.
pub fn view(tuples: Vec<String>, hide: u8, status: Option<Availability>) -> Option<View> {
    let view = View {
        tuples,
        hide,
        status,
    };
    (view != View::default()).then_some(view)
}

// ----- merging -----

/// Makes `rule` the one rule for its [`Who`]: it replaces every presence rule for the
/// same `Who` (taking the place of the first), or is appended when there is none.
pub fn put_presence_rule(rules: &mut Rules, rule: PresenceRule) {
    match rules.presence.iter().position(|r| r.who == rule.who) {
        Some(at) => {
            let who = rule.who.clone();
            rules.presence[at] = rule;
            let mut index = 0;
            rules.presence.retain(|r| {
                let keep = index <= at || r.who != who;
                index += 1;
                keep
            });
        }
        None => rules.presence.push(rule),
    }
}

/// Adds `rule` before the other presence rules for its [`Who`], keeping them: with a
/// time window, it decides while its window applies and the others decide otherwise.
pub fn add_presence_rule(rules: &mut Rules, rule: PresenceRule) {
    let at = rules
        .presence
        .iter()
        .position(|r| r.who == rule.who)
        .unwrap_or(rules.presence.len());
    rules.presence.insert(at, rule);
}

/// Removes every presence rule for `who`; returns how many there were. Without a rule,
/// an authenticated watcher is allowed and an anonymous one denied.
pub fn remove_presence_rules(rules: &mut Rules, who: &Who) -> usize {
    let before = rules.presence.len();
    rules.presence.retain(|r| &r.who != who);
    before - rules.presence.len()
}

/// Makes `delivery` what becomes of messages from `who`, replacing any inbox rule for
/// it (in the place of the first), or appended.
pub fn put_inbox_rule(rules: &mut Rules, who: Who, delivery: Delivery) {
    match rules.inbox.iter().position(|r| r.who == who) {
        Some(at) => {
            rules.inbox[at].delivery = delivery;
            let mut index = 0;
            rules.inbox.retain(|r| {
                let keep = index <= at || r.who != who;
                index += 1;
                keep
            });
        }
        None => rules.inbox.push(InboxRule { who, delivery }),
    }
}

/// Removes every inbox rule for `who`; returns how many there were. Without a rule, an
/// authenticated sender is accepted and an anonymous one refused.
pub fn remove_inbox_rules(rules: &mut Rules, who: &Who) -> usize {
    let before = rules.inbox.len();
    rules.inbox.retain(|r| &r.who != who);
    before - rules.inbox.len()
}

/// Gives the delegate `who` (`local@domain`, normalised: see [`parse_user`]) exactly `rights`
/// ([`Delegate::PUBLISH`], [`Delegate::READ`]); no rights removes it.
pub fn put_delegate(rules: &mut Rules, who: &str, rights: u8) {
    if rights == 0 {
        remove_delegate(rules, who);
        return;
    }
    match rules.delegates.iter_mut().find(|d| d.who == who) {
        Some(delegate) => delegate.rights = rights,
        None => rules.delegates.push(Delegate {
            who: who.to_string(),
            rights,
        }),
    }
}

/// Removes the delegate `who`; returns whether it was one.
pub fn remove_delegate(rules: &mut Rules, who: &str) -> bool {
    let before = rules.delegates.len();
    rules.delegates.retain(|d| d.who != who);
    before != rules.delegates.len()
}

// ----- checks -----

/// Checks rules as the gateway does before it takes them: the limits on the number of
/// rules, delegates and view tuples, valid time windows, and names that are valid
/// addresses and domains in their normalised form (see [`normalised`]).
pub fn check(rules: &Rules) -> Result<(), RuleError> {
    let limit = |len: usize, max: usize, what: &'static str| {
        if len > max {
            Err(RuleError::TooMany { what, max })
        } else {
            Ok(())
        }
    };
    limit(rules.presence.len(), PRESENCE_RULES_MAX, "presence rules")?;
    limit(rules.inbox.len(), INBOX_RULES_MAX, "inbox rules")?;
    limit(rules.delegates.len(), DELEGATES_MAX, "delegates")?;
    for rule in &rules.presence {
        check_who(&rule.who)?;
        if let Some(view) = &rule.view {
            limit(view.tuples.len(), VIEW_TUPLES_MAX, "tuples in a view")?;
            if view.tuples.iter().any(String::is_empty) {
                return Err(RuleError::Tuple);
            }
        }
        if let Some(when) = &rule.when {
            check_when(when)?;
        }
    }
    for rule in &rules.inbox {
        check_who(&rule.who)?;
    }
    for delegate in &rules.delegates {
        check_user(&delegate.who)?;
    }
    Ok(())
}

/// The rules with every name normalised (`Bob@Example.COM` becomes
/// `bob@example.com`), then [checked](check).
pub fn normalised(mut rules: Rules) -> Result<Rules, RuleError> {
    for rule in &mut rules.presence {
        normalise_who(&mut rule.who)?;
    }
    for rule in &mut rules.inbox {
        normalise_who(&mut rule.who)?;
    }
    for delegate in &mut rules.delegates {
        delegate.who = user(&delegate.who)?;
    }
    check(&rules)?;
    Ok(rules)
}

fn normalise_who(who: &mut Who) -> Result<(), RuleError> {
    match who {
        Who::User(name) => *name = user(name)?,
        Who::Domain(name) => *name = domain(name)?,
        Who::Anyone | Who::Anonymous => {}
    }
    Ok(())
}

fn check_who(who: &Who) -> Result<(), RuleError> {
    match who {
        Who::User(name) => check_user(name),
        Who::Domain(name) if domain(name)? == *name => Ok(()),
        Who::Domain(name) => Err(not_normalised(name)),
        Who::Anyone | Who::Anonymous => Ok(()),
    }
}

fn check_user(name: &str) -> Result<(), RuleError> {
    if user(name)? == name {
        Ok(())
    } else {
        Err(not_normalised(name))
    }
}

/// Parses a principal's address (a delegate), normalised.
pub fn parse_user(s: &str) -> Result<String, RuleError> {
    user(s.trim())
}

fn user(name: &str) -> Result<String, RuleError> {
    Address::parse(name)
        .map(Address::into_string)
        .map_err(|e| RuleError::Name {
            name: name.to_string(),
            why: e.to_string(),
        })
}

fn domain(name: &str) -> Result<String, RuleError> {
    normalise_domain(name).map_err(|e| RuleError::Name {
        name: name.to_string(),
        why: e.to_string(),
    })
}

fn not_normalised(name: &str) -> RuleError {
    RuleError::Name {
        name: name.to_string(),
        why: "not in normalised form".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_wire::Decision;

    fn rule(who: &str, decision: Decision) -> PresenceRule {
        PresenceRule {
            who: parse_who(who).unwrap(),
            decision,
            view: None,
            when: None,
        }
    }

    fn decisions(rules: &Rules) -> Vec<(String, Decision)> {
        rules
            .presence
            .iter()
            .map(|r| (format_who(&r.who), r.decision))
            .collect()
    }

    #[test]
    fn whom_a_rule_is_about() {
        assert_eq!(parse_who("anyone"), Ok(Who::Anyone));
        assert_eq!(parse_who("Anonymous"), Ok(Who::Anonymous));
        assert_eq!(
            parse_who("Bob@Example.COM"),
            Ok(Who::User("bob@example.com".into()))
        );
        assert_eq!(
            parse_who("@Example.COM"),
            Ok(Who::Domain("example.com".into()))
        );
        for bad in ["", "bob", "@", "bob@", "@bad domain", "a@b@c"] {
            assert!(parse_who(bad).is_err(), "{bad:?}");
        }
        for who in ["anyone", "anonymous", "bob@example.com", "@example.com"] {
            assert_eq!(format_who(&parse_who(who).unwrap()), who);
        }
    }

    #[test]
    fn days_of_the_week() {
        assert_eq!(parse_days("mon-fri"), Ok(0x1f));
        assert_eq!(parse_days("sat,sun"), Ok(0x60));
        assert_eq!(parse_days("Saturday, sunday"), Ok(0x60));
        assert_eq!(parse_days("fri-mon"), Ok(0x71), "a range wraps");
        assert_eq!(parse_days("wed"), Ok(0x04));
        assert_eq!(parse_days("wed-wed"), Ok(0x04));
        assert_eq!(parse_days("mon,wed-thu"), Ok(0x0d));
        assert_eq!(parse_days("weekdays"), Ok(0x1f));
        assert_eq!(parse_days("weekend"), Ok(0x60));
        assert_eq!(parse_days("daily"), Ok(EVERY_DAY));
        for bad in [
            "",
            "mo",
            "funday",
            "mon-",
            "-fri",
            "mon,,tue",
            "mon-fri-sat",
        ] {
            assert!(parse_days(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_days(0x1f), "mon,tue,wed,thu,fri");
        assert_eq!(format_days(0x60), "sat,sun");
        assert_eq!(format_days(EVERY_DAY), "daily");
    }

    #[test]
    fn times_of_day_and_offsets() {
        assert_eq!(parse_time("00:00"), Ok(0));
        assert_eq!(parse_time("09:00"), Ok(540));
        assert_eq!(parse_time("9:30"), Ok(570));
        assert_eq!(parse_time("17"), Ok(1020));
        assert_eq!(parse_time("23:59"), Ok(1439));
        assert_eq!(parse_time("24:00"), Ok(DAY_MINUTES));
        for bad in [
            "", "24:01", "25:00", "12:60", "12:5", "noon", "-1:00", "123:00", "1:2:3",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_time(570), "09:30");

        assert_eq!(parse_offset("+60"), Ok(60));
        assert_eq!(parse_offset("-300"), Ok(-300));
        assert_eq!(parse_offset("0"), Ok(0));
        assert_eq!(parse_offset("+05:30"), Ok(330));
        assert_eq!(parse_offset("-14:00"), Ok(-840));
        for bad in [
            "", "+", "841", "-15:00", "+1:5", "+01:60", "UTC", "--5", "+1:00:00",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_windows() {
        assert_eq!(window(None, None, None, 60), Ok(None), "always");
        let office = window(Some(0x1f), Some(540), Some(1020), 60).unwrap();
        assert_eq!(
            office,
            Some(When {
                days: 0x1f,
                from: 540,
                to: 1020,
                offset: 60
            })
        );
        // 22:00 to 06:00 crosses midnight: valid, with the start after the end.
        let night = window(None, Some(parse_time("22:00").unwrap()), Some(360), 0).unwrap();
        assert_eq!(
            night,
            Some(When {
                days: EVERY_DAY,
                from: 1320,
                to: 360,
                offset: 0
            })
        );
        // Days alone: the whole of those days.
        let weekend = window(Some(0x60), None, None, 0).unwrap();
        assert_eq!(weekend.map(|w| (w.from, w.to)), Some((0, DAY_MINUTES)));

        assert!(window(None, Some(600), Some(600), 0).is_err(), "empty");
        assert!(window(Some(0), None, None, 0).is_err(), "no days");
        assert!(window(Some(0x80), None, None, 0).is_err(), "an eighth day");
        assert!(window(None, None, Some(0), 0).is_err(), "ends at midnight");
        assert!(window(None, Some(DAY_MINUTES), None, 0).is_err());
        assert!(window(None, Some(60), None, 841).is_err());
    }

    #[test]
    fn views() {
        assert_eq!(parse_hide("note, contact"), Ok(View::NOTE | View::CONTACT));
        assert_eq!(
            parse_hide("time,ext,card"),
            Ok(View::TIME | View::EXT | View::CARD)
        );
        assert!(parse_hide("note,mood").is_err());
        assert_eq!(
            parse_tuples("phone, desk"),
            Ok(vec!["phone".into(), "desk".into()])
        );
        assert!(parse_tuples("phone,,desk").is_err());
        assert!(parse_tuples(&vec!["t"; 17].join(",")).is_err());
        assert_eq!(view(vec![], 0, None), None, "shows everything");
        let busy = view(vec![], View::NOTE, Some(Availability::BUSY)).unwrap();
        assert_eq!(busy.status, Some(Availability::BUSY));
    }

    #[test]
    fn a_put_rule_replaces_every_rule_for_the_same_who() {
        let mut rules = Rules::default();
        put_presence_rule(&mut rules, rule("bob@example.com", Decision::Allow));
        put_presence_rule(&mut rules, rule("@example.com", Decision::Ask));
        add_presence_rule(&mut rules, rule("bob@example.com", Decision::Polite));
        put_presence_rule(&mut rules, rule("anyone", Decision::Deny));
        assert_eq!(rules.presence.len(), 4);
        // Bob's two rules become one, in the place of the first.
        put_presence_rule(&mut rules, rule("Bob@Example.com", Decision::Deny));
        assert_eq!(
            decisions(&rules),
            vec![
                ("bob@example.com".into(), Decision::Deny),
                ("@example.com".into(), Decision::Ask),
                ("anyone".into(), Decision::Deny),
            ]
        );
        put_presence_rule(&mut rules, rule("@example.com", Decision::Allow));
        assert_eq!(
            decisions(&rules)[1],
            ("@example.com".into(), Decision::Allow)
        );
        assert_eq!(remove_presence_rules(&mut rules, &Who::Anyone), 1);
        assert_eq!(remove_presence_rules(&mut rules, &Who::Anyone), 0);
        assert_eq!(rules.presence.len(), 2);
    }

    #[test]
    fn an_added_rule_goes_before_the_others_for_its_who() {
        let mut rules = Rules::default();
        put_presence_rule(&mut rules, rule("anyone", Decision::Allow));
        put_presence_rule(&mut rules, rule("carol@example.com", Decision::Polite));
        let office = PresenceRule {
            when: window(Some(0x1f), Some(540), Some(1020), 0).unwrap(),
            ..rule("carol@example.com", Decision::Allow)
        };
        add_presence_rule(&mut rules, office.clone());
        assert_eq!(rules.presence[1], office);
        assert_eq!(rules.presence[2].decision, Decision::Polite);
        add_presence_rule(&mut rules, rule("@example.net", Decision::Ask));
        assert_eq!(rules.presence.len(), 4, "a new who is appended");
    }

    #[test]
    fn inbox_rules_and_delegates() {
        let mut rules = Rules::default();
        let spammer = parse_who("spam@example.net").unwrap();
        put_inbox_rule(&mut rules, spammer.clone(), Delivery::Refuse);
        put_inbox_rule(&mut rules, Who::Anonymous, Delivery::Accept);
        put_inbox_rule(&mut rules, spammer.clone(), Delivery::Discard);
        assert_eq!(
            rules.inbox,
            vec![
                InboxRule {
                    who: spammer.clone(),
                    delivery: Delivery::Discard
                },
                InboxRule {
                    who: Who::Anonymous,
                    delivery: Delivery::Accept
                },
            ]
        );
        assert_eq!(remove_inbox_rules(&mut rules, &spammer), 1);
        assert_eq!(rules.inbox.len(), 1);

        put_delegate(&mut rules, "pa@example.com", Delegate::PUBLISH);
        put_delegate(
            &mut rules,
            "pa@example.com",
            Delegate::PUBLISH | Delegate::READ,
        );
        assert_eq!(rules.delegates.len(), 1);
        assert_eq!(rules.delegates[0].rights, 3);
        put_delegate(&mut rules, "pa@example.com", 0);
        assert!(rules.delegates.is_empty(), "no rights: no delegate");
        put_delegate(&mut rules, "pa@example.com", Delegate::READ);
        assert!(remove_delegate(&mut rules, "pa@example.com"));
        assert!(!remove_delegate(&mut rules, "pa@example.com"));
    }

    #[test]
    fn rules_are_normalised_and_checked_as_the_gateway_does() {
        let rules = Rules {
            presence: vec![PresenceRule {
                who: Who::User("Bob@Example.COM".into()),
                decision: Decision::Allow,
                view: None,
                when: None,
            }],
            inbox: vec![InboxRule {
                who: Who::Domain("Example.NET.".into()),
                delivery: Delivery::Refuse,
            }],
            delegates: vec![Delegate {
                who: "PA@example.com".into(),
                rights: Delegate::READ,
            }],
        };
        assert!(check(&rules).is_err(), "not normalised");
        let rules = normalised(rules).unwrap();
        assert_eq!(rules.presence[0].who, Who::User("bob@example.com".into()));
        assert_eq!(rules.inbox[0].who, Who::Domain("example.net".into()));
        assert_eq!(rules.delegates[0].who, "pa@example.com");
        assert_eq!(check(&rules), Ok(()));

        let mut many = Rules::default();
        for i in 0..=PRESENCE_RULES_MAX {
            many.presence
                .push(rule(&format!("u{i}@example.com"), Decision::Allow));
        }
        assert!(matches!(
            check(&many),
            Err(RuleError::TooMany { max: 64, .. })
        ));

        let bad_when = Rules {
            presence: vec![PresenceRule {
                when: Some(When {
                    days: 0,
                    from: 0,
                    to: 60,
                    offset: 0,
                }),
                ..rule("anyone", Decision::Deny)
            }],
            ..Rules::default()
        };
        assert!(matches!(check(&bad_when), Err(RuleError::When(_))));
        let bad_name = Rules {
            delegates: vec![Delegate {
                who: "nobody".into(),
                rights: 1,
            }],
            ..Rules::default()
        };
        assert!(matches!(normalised(bad_name), Err(RuleError::Name { .. })));
    }
}
