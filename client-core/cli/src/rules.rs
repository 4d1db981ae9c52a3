//! The rule editors of the command line: `tern rules allow|deny|ask|polite|remove|
//! delegate|undelegate`, `tern block`, `tern unblock` and `tern inbox-rule`.
//!
//! Owns the arguments of those commands and the one change ([`Edit`]) each makes to the
//! rules read from the gateway, which `main` then writes back whole. The textual forms
//! (WHO, days, times, offsets, hidden fields) and where a rule goes among the others are
//! `tern_client::rules_edit`'s. It may not do I/O or talk to the client.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use tern_client::rules_edit::{self, RuleError};
use tern_client::{Availability, Decision, Delegate, Delivery, PresenceRule, Rules, Who};

/// `tern rules ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Print your rules as one JSON line, in the form `tern rules set` reads.
    Show,
    /// Replace all your rules with those in a JSON file (`-`: standard input), in the form
    /// `tern rules show` prints.
    Set {
        /// The file.
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
    },
    /// Let WHO see your presence: all of it, or a view (--view-status, --hide,
    /// --tuples); always, or only at some times (--days, --from, --to, --utc-offset).
    Allow {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Refuse WHO's fetches and subscriptions; WHO is told, and an existing subscription
    /// is cancelled.
    Deny {
        #[command(flatten)]
        target: Target,
    },
    /// Ask you about WHO's subscriptions: they wait for `tern decide` (watch for
    /// "asked" lines); WHO's fetches are refused meanwhile.
    Ask {
        #[command(flatten)]
        target: Target,
    },
    /// Block WHO politely: WHO is told it was granted, and sees a presentity that never
    /// published and never changes.
    Polite {
        #[command(flatten)]
        target: Target,
    },
    /// Let WHO fetch (poll) your presence, all of it or a view, but not subscribe: its
    /// subscription is refused and an existing one cancelled.
    FetchOnly {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Remove every presence rule for WHO: back to the default (authenticated watchers
    /// allowed, anonymous ones denied).
    Remove {
        /// user@domain, @domain, anonymous or anyone.
        #[arg(value_name = "WHO", value_parser = parse_who)]
        who: Who,
    },
    /// Let USER act for you, with its own token: publish your presence (`tern publish
    /// --for YOU`) and/or read your inbox (`tern read YOU`). Replaces USER's rights.
    #[command(group(ArgGroup::new("rights").required(true).multiple(true)))]
    Delegate {
        /// The delegate, user@domain.
        #[arg(value_name = "USER", value_parser = parse_user)]
        user: String,
        /// USER may publish your presence.
        #[arg(long, group = "rights")]
        publish: bool,
        /// USER may read your inbox.
        #[arg(long, group = "rights")]
        read: bool,
    },
    /// Stop USER acting for you.
    Undelegate {
        /// The delegate, user@domain.
        #[arg(value_name = "USER", value_parser = parse_user)]
        user: String,
    },
}

/// Whom a presence rule is about, and when it applies.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Whom the rule is about: user@domain, @domain (every user of a domain),
    /// anonymous (unauthenticated peers) or anyone (every authenticated user). The most
    /// specific kind that names a watcher decides for it.
    #[arg(value_name = "WHO", value_parser = parse_who)]
    who: Who,
    /// Days the rule applies, in your time zone: mon-fri, sat,sun, weekdays, weekend
    /// [default: every day]. Outside its times the rule is skipped.
    #[arg(long, value_name = "DAYS", value_parser = parse_days, requires = "utc_offset")]
    days: Option<u8>,
    /// Time of day the rule starts to apply, HH:MM [default: 00:00].
    #[arg(long, value_name = "HH:MM", value_parser = parse_time, requires = "utc_offset")]
    from: Option<u16>,
    /// Time of day it stops applying, HH:MM [default: 24:00]; before --from for a window
    /// that crosses midnight (--from 22:00 --to 06:00).
    #[arg(long, value_name = "HH:MM", value_parser = parse_time, requires = "utc_offset")]
    to: Option<u16>,
    /// Your offset from UTC, minutes (+60 for UTC+1, -300 for UTC-5) or +HH:MM; required
    /// with --days, --from and --to.
    #[arg(
        long,
        value_name = "MINUTES",
        value_parser = parse_offset,
        allow_hyphen_values = true
    )]
    utc_offset: Option<i16>,
    /// Keep WHO's other rules and put this one before them (an exception while its
    /// times apply); without it, this rule replaces every rule for WHO.
    #[arg(long)]
    add: bool,
}

/// What an allowed watcher sees.
#[derive(Debug, Args)]
pub(crate) struct ViewArgs {
    /// Show this availability instead of yours in every open tuple (busy, away, ...).
    #[arg(long, value_name = "AVAILABILITY", value_parser = crate::parse_availability)]
    view_status: Option<Availability>,
    /// Fields to hide, comma-separated: contact, note, time, ext, card.
    #[arg(long, value_name = "FIELDS", value_parser = parse_hide)]
    hide: Option<u8>,
    /// Show only these tuples, by id, comma-separated.
    #[arg(long, value_name = "IDS", value_parser = parse_tuples)]
    tuples: Option<TupleIds>,
}

impl ViewArgs {
    /// The view these options describe; `None` for the whole document.
    fn into_view(self) -> Option<tern_client::View> {
        let tuples = self.tuples.map(|t| t.0).unwrap_or_default();
        rules_edit::view(tuples, self.hide.unwrap_or(0), self.view_status)
    }
}

/// Tuple ids given on the command line (a newtype: clap reads `Option<Vec<_>>` as a
/// repeated flag).
#[derive(Debug, Clone)]
pub(crate) struct TupleIds(Vec<String>);

/// What becomes of messages from someone (`tern inbox-rule`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum InboxAction {
    /// Deliver them.
    Accept,
    /// Refuse them: the sender's receipt says `refused`.
    Refuse,
    /// Drop them in silence: the sender's receipt says `stored`.
    Discard,
    /// Remove the rule: back to the default (accepted; anonymous senders refused).
    Remove,
}

/// One change to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    /// A presence rule, replacing WHO's others or (`add`) before them.
    Presence { rule: PresenceRule, add: bool },
    /// Remove WHO's presence rules.
    RemovePresence(Who),
    /// An inbox rule for WHO, replacing its others.
    Inbox(Who, Delivery),
    /// Remove WHO's inbox rules.
    RemoveInbox(Who),
    /// A delegate's rights (none: remove it).
    Delegate(String, u8),
}

impl Edit {
    /// The change a `tern rules` editor asks for; `None` for `show` and `set`.
    pub(crate) fn of_rules(command: RulesCommand) -> Result<Option<Self>, RuleError> {
        let presence = |decision, target: Target, view| {
            let when = rules_edit::window(
                target.days,
                target.from,
                target.to,
                target.utc_offset.unwrap_or(0),
            )?;
            let rule = PresenceRule {
                who: target.who,
                decision,
                view,
                when,
            };
            Ok(Some(Self::Presence {
                rule,
                add: target.add,
            }))
        };
        match command {
            RulesCommand::Show | RulesCommand::Set { .. } => Ok(None),
            RulesCommand::Allow { target, view } => {
                presence(Decision::Allow, target, view.into_view())
            }
            RulesCommand::FetchOnly { target, view } => {
                presence(Decision::FetchOnly, target, view.into_view())
            }
            RulesCommand::Deny { target } => presence(Decision::Deny, target, None),
            RulesCommand::Ask { target } => presence(Decision::Ask, target, None),
            RulesCommand::Polite { target } => presence(Decision::Polite, target, None),
            RulesCommand::Remove { who } => Ok(Some(Self::RemovePresence(who))),
            RulesCommand::Delegate {
                user,
                publish,
                read,
            } => {
                let publish = if publish { Delegate::PUBLISH } else { 0 };
                let read = if read { Delegate::READ } else { 0 };
                Ok(Some(Self::Delegate(user, publish | read)))
            }
            RulesCommand::Undelegate { user } => Ok(Some(Self::Delegate(user, 0))),
        }
    }

    /// The change `tern inbox-rule ACTION WHO` asks for.
    pub(crate) fn of_inbox(action: InboxAction, who: Who) -> Self {
        match action {
            InboxAction::Accept => Self::Inbox(who, Delivery::Accept),
            InboxAction::Refuse => Self::Inbox(who, Delivery::Refuse),
            InboxAction::Discard => Self::Inbox(who, Delivery::Discard),
            InboxAction::Remove => Self::RemoveInbox(who),
        }
    }

    /// Makes the change, and checks the result as the gateway will.
    pub(crate) fn apply(self, rules: &mut Rules) -> Result<(), RuleError> {
        match self {
            Self::Presence { rule, add: false } => rules_edit::put_presence_rule(rules, rule),
            Self::Presence { rule, add: true } => rules_edit::add_presence_rule(rules, rule),
            Self::RemovePresence(who) => {
                rules_edit::remove_presence_rules(rules, &who);
            }
            Self::Inbox(who, delivery) => rules_edit::put_inbox_rule(rules, who, delivery),
            Self::RemoveInbox(who) => {
                rules_edit::remove_inbox_rules(rules, &who);
            }
            Self::Delegate(user, rights) => rules_edit::put_delegate(rules, &user, rights),
        }
        rules_edit::check(rules)
    }
}

pub(crate) fn parse_who(s: &str) -> Result<Who, String> {
    rules_edit::parse_who(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<String, String> {
    rules_edit::parse_user(s).map_err(|e| e.to_string())
}

fn parse_days(s: &str) -> Result<u8, String> {
    rules_edit::parse_days(s).map_err(|e| e.to_string())
}

fn parse_time(s: &str) -> Result<u16, String> {
    rules_edit::parse_time(s).map_err(|e| e.to_string())
}

fn parse_offset(s: &str) -> Result<i16, String> {
    rules_edit::parse_offset(s).map_err(|e| e.to_string())
}

fn parse_hide(s: &str) -> Result<u8, String> {
    rules_edit::parse_hide(s).map_err(|e| e.to_string())
}

fn parse_tuples(s: &str) -> Result<TupleIds, String> {
    rules_edit::parse_tuples(s)
        .map(TupleIds)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tern_client::{View, When};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        rules: RulesCommand,
    }

    fn edit(args: &[&str]) -> Result<Option<Edit>, String> {
        let mut all = vec!["rules"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        Edit::of_rules(cli.rules).map_err(|e| e.to_string())
    }

    fn rule(edit: Option<Edit>) -> (PresenceRule, bool) {
        match edit {
            Some(Edit::Presence { rule, add }) => (rule, add),
            other => panic!("not a presence rule: {other:?}"),
        }
    }

    #[test]
    fn an_office_hours_view_for_a_domain() {
        let (rule, add) = rule(
            edit(&[
                "allow",
                "@Example.com",
                "--view-status",
                "busy",
                "--hide",
                "note,contact",
                "--tuples",
                "desk,phone",
                "--days",
                "mon-fri",
                "--from",
                "09:00",
                "--to",
                "17:00",
                "--utc-offset",
                "+60",
            ])
            .unwrap(),
        );
        assert!(!add);
        assert_eq!(rule.who, Who::Domain("example.com".into()));
        assert_eq!(rule.decision, Decision::Allow);
        assert_eq!(
            rule.view,
            Some(View {
                tuples: vec!["desk".into(), "phone".into()],
                hide: View::NOTE | View::CONTACT,
                status: Some(Availability::BUSY),
            })
        );
        assert_eq!(
            rule.when,
            Some(When {
                days: 0x1f,
                from: 540,
                to: 1020,
                offset: 60
            })
        );
    }

    #[test]
    fn decisions_windows_and_exceptions() {
        let (rule, add) = rule(
            edit(&[
                "polite",
                "bob@example.com",
                "--from",
                "22:00",
                "--to",
                "06:00",
                "--utc-offset",
                "-300",
                "--add",
            ])
            .unwrap(),
        );
        assert!(add);
        assert_eq!(rule.decision, Decision::Polite);
        assert_eq!(rule.view, None);
        let when = rule.when.unwrap();
        assert_eq!((when.from, when.to, when.offset), (1320, 360, -300));
        assert_eq!(when.days, 0x7f);
        let (rule, _) = rule_of(&["deny", "anonymous"]);
        assert_eq!(
            (rule.who, rule.decision, rule.when),
            (Who::Anonymous, Decision::Deny, None)
        );
        let (rule, _) = rule_of(&["ask", "anyone"]);
        assert_eq!((rule.who, rule.decision), (Who::Anyone, Decision::Ask));
    }

    fn rule_of(args: &[&str]) -> (PresenceRule, bool) {
        rule(edit(args).unwrap())
    }

    #[test]
    fn bad_editors_are_refused() {
        for bad in [
            &["allow", "bob"][..],
            &["allow", "bob@example.com", "--from", "09:00"],
            &[
                "allow",
                "bob@example.com",
                "--days",
                "funday",
                "--utc-offset",
                "0",
            ],
            &[
                "allow",
                "bob@example.com",
                "--from",
                "9:00",
                "--to",
                "9:00",
                "--utc-offset",
                "0",
            ],
            &["allow", "bob@example.com", "--hide", "mood"],
            &[
                "allow",
                "bob@example.com",
                "--utc-offset",
                "+900",
                "--days",
                "sat",
            ],
            &["deny", "bob@example.com", "--hide", "note"],
            &["delegate", "pa@example.com"],
            &["delegate", "nobody", "--read"],
        ] {
            assert!(edit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delegates_and_removals() {
        assert_eq!(
            edit(&["delegate", "PA@example.com", "--publish", "--read"]).unwrap(),
            Some(Edit::Delegate("pa@example.com".into(), 3))
        );
        assert_eq!(
            edit(&["undelegate", "pa@example.com"]).unwrap(),
            Some(Edit::Delegate("pa@example.com".into(), 0))
        );
        assert_eq!(
            edit(&["remove", "@example.net"]).unwrap(),
            Some(Edit::RemovePresence(Who::Domain("example.net".into())))
        );
        assert_eq!(edit(&["show"]).unwrap(), None);
        assert_eq!(edit(&["set", "rules.json"]).unwrap(), None);
    }

    #[test]
    fn edits_apply_and_replace_what_was_there() {
        let mut rules = Rules::default();
        edit(&["ask", "bob@example.com"])
            .unwrap()
            .unwrap()
            .apply(&mut rules)
            .unwrap();
        edit(&["deny", "bob@example.com"])
            .unwrap()
            .unwrap()
            .apply(&mut rules)
            .unwrap();
        assert_eq!(rules.presence.len(), 1);
        assert_eq!(rules.presence[0].decision, Decision::Deny);
        let spam = Who::User("spam@example.net".into());
        Edit::of_inbox(InboxAction::Refuse, spam.clone())
            .apply(&mut rules)
            .unwrap();
        Edit::of_inbox(InboxAction::Discard, spam.clone())
            .apply(&mut rules)
            .unwrap();
        assert_eq!(rules.inbox.len(), 1);
        assert_eq!(rules.inbox[0].delivery, Delivery::Discard);
        Edit::of_inbox(InboxAction::Remove, spam)
            .apply(&mut rules)
            .unwrap();
        assert!(rules.inbox.is_empty());
        Edit::Delegate("pa@example.com".into(), Delegate::READ)
            .apply(&mut rules)
            .unwrap();
        assert_eq!(rules.delegates.len(), 1);
        Edit::RemovePresence(Who::User("bob@example.com".into()))
            .apply(&mut rules)
            .unwrap();
        assert!(rules.presence.is_empty());
    }

    #[test]
    fn an_edit_over_the_limits_is_refused() {
        let mut rules = Rules::default();
        for i in 0..rules_edit::PRESENCE_RULES_MAX {
            let who = Who::User(format!("u{i}@example.com"));
            Edit::Presence {
                rule: PresenceRule {
                    who,
                    decision: Decision::Allow,
                    view: None,
                    when: None,
                },
                add: false,
            }
            .apply(&mut rules)
            .unwrap();
        }
        let one_more = edit(&["deny", "spam@example.net"]).unwrap().unwrap();
        assert!(one_more.apply(&mut rules).is_err());
    }
}
