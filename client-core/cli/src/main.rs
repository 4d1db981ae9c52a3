//! `tern`: the tern command-line client, for people, scripts and small devices.
//!
//! Owns the command line (flags, `TERN_*` environment variables, subcommands), turning
//! arguments into client calls, printing one JSON object per line on stdout (flushed per
//! line; schema in `json.rs`), and exit codes: 0 on success, 1 with one line
//! `tern: <error>` on stderr otherwise (2 for usage errors, from clap). Logs go to stderr,
//! filtered by `RUST_LOG` (default `warn`); tokens and message bodies are never logged.
//!
//! With `--state-dir` (or `TERN_STATE_DIR`) successive runs are one device: a run
//! resumes the session the previous one left without a goodbye, `listen` never prints
//! an item a previous run already printed, a message a run could not get answered is
//! sent again by the next run, and the presence cache is kept, so that `watch` gets only
//! the presence that changed since the previous run.
//!
//! `--client-state` (or `TERN_CLIENT_STATE`) says how long the gateway may hold
//! presence changes back for this client: `active` (tens of milliseconds), `inactive`
//! (minutes) or `sleepy` (until the client sends something). A sleepy device publishes
//! `publish --asleep-until`.
//!
//! Access rules (`rules`, `block`, `unblock`, `inbox-rule`) are read, changed and written
//! back whole; `decide`, `cancel` and `subscriptions` act on single subscriptions;
//! `publish --for` and `read` act as another user's delegate; `--anonymous` connects
//! without an account, where the gateway allows it.
//!
//! It may only use `tern-client`'s public API (and `tern-wire`'s types); it never depends
//! on the gateway crates.

mod json;
mod rules;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tern_client::{
    Availability, Basic, CardField, CardKind, Client, ClientConfig, ClientError, ClientMode,
    ConnectionState, Decision, Event, Ext, FetchIf, InboxItem, Message, Presence, PresenceDoc,
    Rules, SubscribeOutcome, Tuple, Version, Who,
};

use crate::rules::{Edit, InboxAction, RulesCommand};
use tern_wire::addr::Address;
use tern_wire::limits::MSG_ID_MAX;

/// tern presence and instant messaging client. Prints one JSON object per line.
///
/// Made for weak links: sessions resume after a lost link, presence comes as deltas
/// against a cache, batched as --client-state allows, and with --state-dir successive
/// runs are one device (a run resumes the previous one's session, never prints an item
/// twice, sends again what a previous run could not get answered, and gets only the
/// presence that changed since).
#[derive(Debug, Parser)]
#[command(name = "tern", version)]
struct Cli {
    /// The gateway's address, host:port.
    #[arg(long, env = "TERN_GATEWAY", default_value = "127.0.0.1:4433")]
    gateway: String,
    /// PEM file with the gateway's certificate or its CA (required: nothing else is trusted).
    #[arg(long, env = "TERN_CA", value_name = "CERT.pem")]
    ca: PathBuf,
    /// TLS server name the certificate must match [default: the domain of --user].
    #[arg(long, env = "TERN_SERVER_NAME", value_name = "NAME")]
    server_name: Option<String>,
    /// Who you are (with --anonymous: any address of the domain, or the domain).
    #[arg(long, env = "TERN_USER", value_name = "NAME@DOMAIN")]
    user: String,
    /// Your access token (prefer the environment variable: flags show in process lists).
    #[arg(
        long,
        env = "TERN_TOKEN",
        hide_env_values = true,
        required_unless_present = "anonymous"
    )]
    token: Option<String>,
    /// Connect without an account, as anonymous@DOMAIN (the domain of --user), where the
    /// gateway's operator allows it: fetch, watch, subscriptions and send only; no
    /// token, no inbox, no --state-dir.
    #[arg(long)]
    anonymous: bool,
    /// Seconds between keep-alive pings (0: none); must be below --idle-timeout. Lower
    /// keeps NAT bindings open on mobile networks, higher saves battery.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    keepalive: u64,
    /// Seconds without a packet after which the link counts as lost (and the client
    /// reconnects, for the long-running commands).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    idle_timeout: u64,
    /// Directory where this device keeps its identity, what `listen` has printed,
    /// unanswered messages, its presence and the presence cache, across runs. Created if
    /// missing; one tern process at a time per directory, one user per directory.
    #[arg(long, env = "TERN_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long the gateway may hold presence changes back for this client: active
    /// (foreground: tens of milliseconds), inactive (background: minutes, or until
    /// something else is sent to it), sleepy (IoT: until it sends something).
    #[arg(
        long,
        env = "TERN_CLIENT_STATE",
        value_name = "STATE",
        default_value = "active",
        value_parser = parse_mode
    )]
    client_state: ClientMode,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replace your presence with one tuple; prints {"ok":true}.
    ///
    /// The gateway marks you CLOSED when your last session ends, so without --hold the
    /// presence lasts only as long as this command does.
    Publish {
        /// Whether you accept instant messages.
        #[arg(long, value_enum)]
        status: Status,
        /// available, away, busy, idle, dnd, xa, asleep, or a registered number.
        #[arg(long, value_parser = parse_availability)]
        availability: Option<Availability>,
        /// A sleepy device going to sleep: availability `asleep`, with the time it will
        /// wake (the `wake` extension), as Unix seconds or `+DURATION` from now (`+90s`,
        /// `+30m`, `+2h`, `+1d`). Watchers tell it from a dead device until then.
        #[arg(
            long,
            value_name = "UNIX_SECONDS|+DURATION",
            value_parser = parse_wake,
            conflicts_with = "availability"
        )]
        asleep_until: Option<Wake>,
        /// A free-text note.
        #[arg(long)]
        note: Option<String>,
        /// Where to reach you, as a URI (tern:you@example.com, tel:+1555..., mailto:...).
        #[arg(long, value_name = "URI")]
        contact: Option<String>,
        /// The tuple's id.
        #[arg(long, value_name = "ID", default_value = "default")]
        tuple: String,
        /// A contact-card field (name, email, tel, postal, url, or a number); repeatable.
        #[arg(long = "card", value_name = "KIND=VALUE", value_parser = parse_card)]
        card: Vec<CardField>,
        /// Stay connected until interrupted, keeping this presence (restored after a
        /// reconnect).
        #[arg(long)]
        hold: bool,
        /// Publish for another user, as its delegate (`tern rules delegate YOU
        /// --publish` on its side).
        #[arg(long = "for", value_name = "NAME@DOMAIN", conflicts_with = "hold")]
        for_presentity: Option<String>,
    },
    /// Print a presentity's presence once, with its version.
    ///
    /// With --if-version, prints {"type":"unchanged",...} instead when the version is
    /// still the current one (a cheap poll).
    Fetch {
        /// The presentity.
        #[arg(value_name = "NAME@DOMAIN")]
        presentity: String,
        /// The version you hold (from an earlier fetch or watch).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<Version>,
    },
    /// Who watches you: your subscribers, and who fetched your presence recently, as one
    /// {"type":"watchers",...} line. With --follow, then one {"type":"watched",...} line
    /// per new subscriber and one {"type":"asked",...} line per request waiting for your
    /// decision (`tern decide`), until interrupted.
    Watchers {
        /// Keep printing new subscribers as they come.
        #[arg(long)]
        follow: bool,
    },
    /// Subscribe, print each one's presence, then every change until interrupted.
    ///
    /// Changes come as presence lines with their version (each version once), and
    /// {"type":"gone",...} when a subscription ends elsewhere (another device of yours,
    /// or the gateway). A presentity whose rules ask first prints {"type":"pending",...};
    /// its decision comes as {"type":"subscription","state":"active"|"denied",...} (then
    /// its presence), and a presentity that cancels your subscription prints
    /// {"type":"subscription","state":"cancelled",...}. Requests to watch you print
    /// {"type":"asked",...}. Presence not in the cache is restated when the session opens:
    /// every subscription on a first run or without --state-dir, only what changed since
    /// the last run with it.
    Watch {
        /// The presentities.
        #[arg(value_name = "NAME@DOMAIN", required = true)]
        presentities: Vec<String>,
        /// Exit after this many lines following the subscriptions' own (restatements
        /// count).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Send an instant message; prints its receipt.
    ///
    /// With --state-dir, a message that gets no receipt in time stays queued there and
    /// is sent again (same id, delivered once) by the next run with that directory.
    Send {
        /// The recipient's inbox.
        #[arg(value_name = "NAME@DOMAIN")]
        to: String,
        /// The message text; `-` reads the body from standard input.
        text: String,
        /// MIME content type [default: text/plain;charset=utf-8].
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// Message id in hex (1 to 32 bytes); resending with the same id is safe.
        #[arg(long, value_name = "HEX", value_parser = parse_id)]
        id: Option<MessageId>,
    },
    /// Print incoming messages and late receipts until interrupted.
    ///
    /// Each item is acknowledged once printed and flushed; in a pipeline, prefer --count
    /// to a reader that stops early (`| head -1`): what sits unread in the pipe is lost.
    /// Also prints the receipts of messages that an earlier run with the same
    /// --state-dir sent but did not see answered (`receipt` lines without `seq`).
    Listen {
        /// Exit after this many messages and receipts.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Your access rules: who sees your presence and what of it, who may message you,
    /// who acts for you. Editors read the rules, change one thing, write them back whole
    /// and print the result.
    Rules {
        #[command(subcommand)]
        action: RulesCommand,
    },
    /// Refuse messages from WHO (user@domain, @domain, anonymous, anyone): the sender's
    /// receipt says `refused`; with --silent, they are dropped and it says `stored`.
    Block {
        /// Whose messages.
        #[arg(value_name = "WHO", value_parser = rules::parse_who)]
        who: Who,
        /// Drop them without telling the sender.
        #[arg(long)]
        silent: bool,
    },
    /// Remove the inbox rule for WHO: back to the default (accepted; anonymous senders
    /// refused).
    Unblock {
        /// Whose messages.
        #[arg(value_name = "WHO", value_parser = rules::parse_who)]
        who: Who,
    },
    /// Set what becomes of messages from WHO: accept, refuse, discard (in silence), or
    /// remove the rule.
    InboxRule {
        /// What to do with them.
        #[arg(value_enum)]
        action: InboxAction,
        /// Whose messages: user@domain, @domain, anonymous or anyone.
        #[arg(value_name = "WHO", value_parser = rules::parse_who)]
        who: Who,
    },
    /// List subscriptions with their state (active, or pending your or their decision),
    /// as one {"type":"subscriptions",...} line: yours, or with --incoming those to your
    /// presence.
    Subscriptions {
        /// The subscriptions to your presence, and requests waiting for your decision.
        #[arg(long)]
        incoming: bool,
    },
    /// Decide about a watcher (typically one that asked): puts a rule for exactly that
    /// user first among your rules; prints {"ok":true}.
    Decide {
        /// The watcher.
        #[arg(value_name = "NAME@DOMAIN")]
        watcher: String,
        /// allow, deny, ask, or polite (it sees a presence that never changes).
        #[arg(value_enum)]
        decision: DecisionArg,
    },
    /// End a watcher's subscription to your presence (or its request); prints
    /// {"ok":true}. It may subscribe again under your rules: to keep it out, `decide ...
    /// deny`.
    Cancel {
        /// The watcher.
        #[arg(value_name = "NAME@DOMAIN")]
        watcher: String,
    },
    /// Read another user's inbox as its delegate (`tern rules delegate YOU --read` on
    /// its side), without taking anything from it: message and receipt lines with their
    /// seq, then one {"type":"read",...} line saying whether more follow.
    Read {
        /// The inbox.
        #[arg(value_name = "NAME@DOMAIN")]
        inbox: String,
        /// Start after this sequence number (the `next_after` of the last read).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// Read every page, not just the first.
        #[arg(long)]
        all: bool,
    },
}

/// A decision about a watcher, on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DecisionArg {
    /// It sees your presence (as your rules' views allow).
    Allow,
    /// It is refused, and told.
    Deny,
    /// Ask you each time.
    Ask,
    /// It is told it was granted, and sees a presence that never changes.
    Polite,
    /// It may fetch your presence (poll) but not subscribe; a subscription is refused.
    FetchOnly,
}

impl From<DecisionArg> for Decision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Allow => Self::Allow,
            DecisionArg::Deny => Self::Deny,
            DecisionArg::Ask => Self::Ask,
            DecisionArg::Polite => Self::Polite,
            DecisionArg::FetchOnly => Self::FetchOnly,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Status {
    Open,
    Closed,
}

/// A message id given on the command line.
#[derive(Debug, Clone)]
struct MessageId(Vec<u8>);

/// When a sleepy device will wake, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Unix seconds.
    At(u64),
    /// Seconds from now.
    In(u64),
}

impl Wake {
    fn at(self, now: u64) -> u64 {
        match self {
            Self::At(at) => at,
            Self::In(secs) => now.saturating_add(secs),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("tern: {text}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ca_pem =
        std::fs::read(&cli.ca).with_context(|| format!("cannot read {}", cli.ca.display()))?;
    let long_lived = matches!(
        cli.command,
        Command::Watch { .. }
            | Command::Listen { .. }
            | Command::Publish { hold: true, .. }
            | Command::Watchers { follow: true }
    );
    if cli.anonymous && matches!(cli.command, Command::Listen { .. }) {
        bail!("an anonymous session has no inbox to listen to");
    }
    let state_dir = if cli.anonymous {
        if cli.state_dir.is_some() {
            tracing::warn!("an anonymous session keeps no state: --state-dir ignored");
        }
        None
    } else {
        cli.state_dir.clone()
    };
    let config = ClientConfig {
        server_name: cli.server_name,
        keepalive: Duration::from_secs(cli.keepalive),
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        reconnect: long_lived,
        // Only `listen` shows messages; the others leave them in the inbox.
        inbox: matches!(cli.command, Command::Listen { .. }),
        state_dir,
        mode: cli.client_state,
        anonymous: cli.anonymous,
        ..ClientConfig::new(cli.gateway, cli.user, cli.token.unwrap_or_default(), ca_pem)
    };
    // A send that timed out with a state directory is not lost: say so.
    let queues = config.state_dir.is_some() && matches!(cli.command, Command::Send { .. });
    // A body from stdin is read before connecting: the session should not wait on it.
    let body = match &cli.command {
        Command::Send { text, .. } if text == "-" => Some(read_stdin()?),
        Command::Send { text, .. } => Some(text.clone().into_bytes()),
        _ => None,
    };
    // So is a rules file: a bad one fails before anything is sent.
    let new_rules = match &cli.command {
        Command::Rules {
            action: RulesCommand::Set { file },
        } => Some(read_rules(file)?),
        _ => None,
    };
    let client = Client::connect(config).await?;
    let result = match new_rules {
        Some(rules) => set_rules(&client, rules).await,
        None => command(&client, cli.command, body).await,
    };
    let result = result.map_err(|e| match e.downcast_ref::<ClientError>() {
        Some(e @ (ClientError::Timeout | ClientError::Closed { .. })) if queues => anyhow::anyhow!(
            "no receipt ({e}); the message stays queued in the state directory, and the \
             next run with it sends it again"
        ),
        _ => e,
    });
    // An event whose printing failed is not acknowledged: `close` leaves it in the inbox.
    client.close().await;
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

async fn command(client: &Client, command: Command, body: Option<Vec<u8>>) -> anyhow::Result<()> {
    match command {
        Command::Publish {
            status,
            availability,
            asleep_until,
            note,
            contact,
            tuple,
            card,
            hold,
            for_presentity,
        } => {
            let basic = match status {
                Status::Open => Basic::Open,
                Status::Closed => Basic::Closed,
            };
            let now = unix_seconds();
            let (availability, ext) = match asleep_until {
                Some(wake) => (Some(Availability::ASLEEP), vec![Ext::wake(wake.at(now))]),
                None => (availability, vec![]),
            };
            let tuple = Tuple {
                id: tuple,
                basic,
                availability,
                contact,
                note,
                at: Some(now),
                ext,
            };
            let presence = Presence {
                tuples: vec![tuple],
                card,
            };
            match for_presentity {
                Some(presentity) => client.publish_for(presentity, presence).await?,
                None => client.publish(presence).await?,
            }
            print_line(&serde_json::json!({ "ok": true }))?;
            if hold {
                follow(client, None, |_| Ok(false)).await?;
            }
            Ok(())
        }
        Command::Fetch {
            presentity,
            if_version,
        } => match client
            .fetch_if(presentity.clone(), if_version.unwrap_or(0))
            .await?
        {
            FetchIf::Changed { version, doc } => print_line(&json::presence(&doc, Some(version))),
            FetchIf::Unchanged => {
                let presentity =
                    Address::parse(&presentity).map_or(presentity, Address::into_string);
                let version = if_version.unwrap_or(0);
                print_line(&json::unchanged(&presentity, version))
            }
        },
        Command::Watchers { follow: following } => {
            print_line(&json::watchers(&client.watchers().await?))?;
            if !following {
                return Ok(());
            }
            follow(client, None, |event| match event {
                Event::Watched { watcher } => print_line(&json::watched(&watcher)).map(|()| true),
                other => show_access(&other),
            })
            .await
        }
        Command::Watch {
            presentities,
            count,
        } => {
            // Each version of a presentity is printed once: the answer to a subscription
            // and the restatement of a session's opening may bring the same one.
            let mut shown: HashMap<String, Version> = HashMap::new();
            let mut show = |doc: &PresenceDoc| -> anyhow::Result<bool> {
                let version = version_of(client, doc);
                if let Some(version) = version
                    && shown.insert(doc.presentity.clone(), version) == Some(version)
                {
                    return Ok(false);
                }
                print_line(&json::presence(doc, version)).map(|()| true)
            };
            for presentity in presentities {
                let outcome = client
                    .subscribe_request(presentity.clone())
                    .await
                    .with_context(|| format!("subscribe {presentity}"))?;
                match outcome {
                    SubscribeOutcome::Granted(doc) => {
                        show(&doc)?;
                    }
                    SubscribeOutcome::Pending => {
                        let presentity =
                            Address::parse(&presentity).map_or(presentity, Address::into_string);
                        print_line(&json::pending(&presentity))?;
                    }
                }
            }
            follow(client, count, |event| match event {
                Event::Presence(doc) => show(&doc),
                Event::SubscriptionEnded { presentity } => {
                    print_line(&json::gone(&presentity)).map(|()| true)
                }
                other => show_access(&other),
            })
            .await
        }
        Command::Send {
            to,
            text: _,
            content_type,
            id,
        } => {
            let message = Message {
                id: id.map_or_else(tern_client::new_message_id, |id| id.0),
                to,
                reply_to: None,
                content_type,
                body: body.unwrap_or_default(),
            };
            let outcome = client.send_message(message).await?;
            print_line(&json::receipt(
                None,
                &outcome.id,
                &outcome.to,
                outcome.status,
            ))
        }
        Command::Listen { count } => {
            follow(client, count, |event| {
                match event {
                    Event::Message { seq, message } => print_line(&json::message(seq, &message))?,
                    Event::Receipt { seq, receipt } => {
                        print_line(&json::late_receipt(seq, &receipt))?;
                    }
                    Event::Sent(outcome) => {
                        let line = json::receipt(None, &outcome.id, &outcome.to, outcome.status);
                        print_line(&line)?;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            })
            .await
        }
        Command::Rules { action } => match Edit::of_rules(action)? {
            Some(edit) => edit_rules(client, edit).await,
            // `set` is handled before connecting; `show` is what is left.
            None => print_line(&json::rules(&client.rules().await?)),
        },
        Command::Block { who, silent } => {
            let action = if silent {
                InboxAction::Discard
            } else {
                InboxAction::Refuse
            };
            edit_rules(client, Edit::of_inbox(action, who)).await
        }
        Command::Unblock { who } => {
            edit_rules(client, Edit::of_inbox(InboxAction::Remove, who)).await
        }
        Command::InboxRule { action, who } => edit_rules(client, Edit::of_inbox(action, who)).await,
        Command::Subscriptions { incoming } => {
            let list = client.subscriptions(incoming).await?;
            print_line(&json::subscriptions(incoming, &list))
        }
        Command::Decide { watcher, decision } => {
            client.decide(watcher, decision.into()).await?;
            print_line(&serde_json::json!({ "ok": true }))
        }
        Command::Cancel { watcher } => {
            client.cancel(watcher).await?;
            print_line(&serde_json::json!({ "ok": true }))
        }
        Command::Read { inbox, after, all } => {
            let inbox = Address::parse(&inbox).map_or(inbox, Address::into_string);
            let mut after = after;
            loop {
                let page = client.read_inbox(inbox.clone(), after).await?;
                for item in &page.items {
                    match &item.item {
                        InboxItem::Message(m) => print_line(&json::message(item.seq, m))?,
                        InboxItem::Receipt(r) => print_line(&json::late_receipt(item.seq, r))?,
                    }
                }
                after = page.next_after(after);
                print_line(&json::read(&inbox, page.items.len(), page.more, after))?;
                if !(all && page.more && !page.items.is_empty()) {
                    return Ok(());
                }
            }
        }
    }
}

/// Prints the events about access: someone asks to watch you, or one of your
/// subscriptions changed state. Says whether it printed.
fn show_access(event: &Event) -> anyhow::Result<bool> {
    match event {
        Event::Asked { watcher } => print_line(&json::asked(watcher)).map(|()| true),
        Event::SubscriptionChanged { target, state } => {
            print_line(&json::subscription(target, *state)).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Reads the rules, makes one change, writes them back whole and prints them. (Another
/// editor writing in between loses: the last write wins.)
async fn edit_rules(client: &Client, edit: Edit) -> anyhow::Result<()> {
    let mut rules = client.rules().await.context("read the rules")?;
    edit.apply(&mut rules)?;
    set_rules(client, rules).await
}

/// Replaces the rules and prints them.
async fn set_rules(client: &Client, rules: Rules) -> anyhow::Result<()> {
    client
        .set_rules(rules.clone())
        .await
        .context("write the rules")?;
    print_line(&json::rules(&rules))
}

/// Rules from a JSON file (`-`: standard input), as `tern rules show` prints them.
fn read_rules(file: &std::path::Path) -> anyhow::Result<Rules> {
    let text = if file == std::path::Path::new("-") {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the rules from standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let rules: Rules = serde_json::from_str(&text)
        .with_context(|| format!("{} does not hold rules", file.display()))?;
    tern_client::rules_edit::normalised(rules)
        .with_context(|| format!("{} does not hold valid rules", file.display()))
}

/// The version of `doc` if the presence cache still holds exactly this document (it
/// may have moved on already: then the next event shows the newer one with its version).
fn version_of(client: &Client, doc: &PresenceDoc) -> Option<Version> {
    client
        .cached(doc.presentity.clone())
        .filter(|cached| cached.doc.presence == doc.presence)
        .map(|cached| cached.version)
}

/// Hands every event to `show`, which says whether it printed it, until `count` were
/// printed or the user interrupts (Ok), or the connection is gone for good (Err).
/// Connection changes are logged on stderr.
async fn follow(
    client: &Client,
    count: Option<u64>,
    mut show: impl FnMut(Event) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut interrupted = std::pin::pin!(interrupted());
    let mut printed = 0;
    loop {
        if count.is_some_and(|count| printed >= count) {
            // The last item was printed and flushed: it is handled.
            client.acknowledge();
            return Ok(());
        }
        let event = tokio::select! {
            event = client.next_event() => event,
            () = &mut interrupted => return Ok(()),
        };
        match event {
            None => bail!("disconnected"),
            Some(Event::Connection(ConnectionState::Disconnected { reason })) => {
                bail!("disconnected: {reason}")
            }
            Some(Event::Connection(ConnectionState::Reconnecting { reason })) => {
                tracing::warn!(%reason, "reconnecting");
            }
            Some(Event::Connection(ConnectionState::Connected)) => tracing::warn!("reconnected"),
            Some(Event::Connection(state)) => tracing::warn!(?state, "connection"),
            Some(event) => {
                if show(event)? {
                    printed += 1;
                }
            }
        }
    }
}

/// Resolves on ctrl-c, or on SIGTERM where there is one.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler there is nothing to wait for; run until the connection ends.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Prints one JSON object on its own line and flushes, for scripts reading line by line.
fn print_line(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Whether stdout was closed by the reader (`tern listen | head -1`): a normal end.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the message body from standard input")?;
    Ok(body)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_availability(s: &str) -> Result<Availability, String> {
    Availability::parse(s).ok_or_else(|| {
        format!("{s:?} is not available, away, busy, idle, dnd, xa, asleep or a number 0-255")
    })
}

fn parse_mode(s: &str) -> Result<ClientMode, String> {
    ClientMode::parse(s)
        .ok_or_else(|| format!("{s:?} is not active, inactive, sleepy or a number 0-255"))
}

/// Unix seconds, or `+N[s|m|h|d]` from now.
fn parse_wake(s: &str) -> Result<Wake, String> {
    let bad = || format!("{s:?} is not Unix seconds or +DURATION (+90s, +30m, +2h, +1d)");
    let Some(duration) = s.strip_prefix('+') else {
        return s.parse().map(Wake::At).map_err(|_| bad());
    };
    let (number, unit) = match duration.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => duration.split_at(at),
        None => (duration, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number.checked_mul(scale).map(Wake::In).ok_or_else(bad)
}

fn parse_card(s: &str) -> Result<CardField, String> {
    let (kind, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KIND=VALUE"))?;
    let kind = CardKind::parse(kind).ok_or_else(|| {
        format!("{kind:?} is not name, email, tel, postal, url or a number 0-255")
    })?;
    Ok(CardField {
        kind,
        value: value.to_string(),
    })
}

fn parse_id(s: &str) -> Result<MessageId, String> {
    let id = hex::decode(s).map_err(|e| format!("{s:?} is not hex: {e}"))?;
    if id.is_empty() || id.len() > MSG_ID_MAX {
        return Err(format!("a message id has 1 to {MSG_ID_MAX} bytes"));
    }
    Ok(MessageId(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_publish() {
        let cli = Cli::try_parse_from([
            "tern",
            "--ca",
            "ca.pem",
            "--user",
            "a@example.com",
            "--token",
            "t",
            "publish",
            "--status",
            "open",
            "--availability",
            "dnd",
            "--card",
            "email=a@example.com",
        ])
        .unwrap();
        let Command::Publish {
            status,
            availability,
            card,
            tuple,
            ..
        } = cli.command
        else {
            panic!("not publish");
        };
        assert!(matches!(status, Status::Open));
        assert_eq!(availability, Some(Availability::DND));
        assert_eq!(card[0].kind, CardKind::EMAIL);
        assert_eq!(tuple, "default");
        assert_eq!(cli.gateway, "127.0.0.1:4433");
    }

    #[test]
    fn parses_the_weak_link_options() {
        let cli = Cli::try_parse_from([
            "tern",
            "--ca",
            "ca.pem",
            "--user",
            "a@example.com",
            "--token",
            "t",
            "--state-dir",
            "/var/lib/tern",
            "--keepalive",
            "5",
            "--idle-timeout",
            "15",
            "listen",
        ])
        .unwrap();
        assert_eq!(cli.state_dir, Some(PathBuf::from("/var/lib/tern")));
        assert_eq!((cli.keepalive, cli.idle_timeout), (5, 15));
        assert_eq!(cli.client_state, ClientMode::ACTIVE, "the default");
    }

    /// `tern --ca ca.pem --user a@example.com --token t ARGS...`
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec![
            "tern",
            "--ca",
            "ca.pem",
            "--user",
            "a@example.com",
            "--token",
            "t",
        ];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    #[test]
    fn parses_the_presence_synchronisation_options() {
        let cli = parse(&["--client-state", "sleepy", "listen"]).unwrap();
        assert_eq!(cli.client_state, ClientMode::SLEEPY);
        let cli = parse(&["--client-state", "inactive", "listen"]).unwrap();
        assert_eq!(cli.client_state, ClientMode::INACTIVE);
        assert!(parse(&["--client-state", "dozing", "listen"]).is_err());

        let cli = parse(&["fetch", "b@example.com", "--if-version", "12"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Fetch {
                if_version: Some(12),
                ..
            }
        ));
        let cli = parse(&["fetch", "b@example.com"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Fetch {
                if_version: None,
                ..
            }
        ));

        let cli = parse(&["publish", "--status", "open", "--asleep-until", "+30m"]).unwrap();
        let Command::Publish { asleep_until, .. } = cli.command else {
            panic!("not publish");
        };
        assert_eq!(asleep_until, Some(Wake::In(1800)));
        let both = [
            "publish",
            "--status",
            "open",
            "--asleep-until",
            "1700000000",
            "--availability",
            "away",
        ];
        assert!(parse(&both).is_err(), "asleep is the availability");
    }

    #[test]
    fn parses_the_access_commands() {
        // Anonymous: no token needed; --user names the domain.
        let cli = Cli::try_parse_from([
            "tern",
            "--ca",
            "ca.pem",
            "--user",
            "example.com",
            "--anonymous",
            "fetch",
            "b@example.com",
        ])
        .unwrap();
        assert!(cli.anonymous);
        assert_eq!(cli.token, None);
        let no_token = [
            "tern",
            "--ca",
            "ca.pem",
            "--user",
            "a@example.com",
            "listen",
        ];
        assert!(Cli::try_parse_from(no_token).is_err(), "a token is needed");

        let cli = parse(&["publish", "--status", "open", "--for", "boss@example.com"]).unwrap();
        let Command::Publish { for_presentity, .. } = cli.command else {
            panic!("not publish");
        };
        assert_eq!(for_presentity.as_deref(), Some("boss@example.com"));
        assert!(
            parse(&[
                "publish",
                "--status",
                "open",
                "--for",
                "b@example.com",
                "--hold"
            ])
            .is_err()
        );

        let cli = parse(&["decide", "b@example.com", "polite"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Decide {
                decision: DecisionArg::Polite,
                ..
            }
        ));
        assert!(parse(&["decide", "b@example.com", "maybe"]).is_err());
        assert!(matches!(
            parse(&["subscriptions", "--incoming"]).unwrap().command,
            Command::Subscriptions { incoming: true }
        ));
        assert!(matches!(
            parse(&["read", "boss@example.com", "--after", "17", "--all"])
                .unwrap()
                .command,
            Command::Read {
                after: 17,
                all: true,
                ..
            }
        ));
        let cli = parse(&["block", "@spam.example", "--silent"]).unwrap();
        let Command::Block { who, silent } = cli.command else {
            panic!("not block");
        };
        assert_eq!(who, Who::Domain("spam.example".into()));
        assert!(silent);
        assert!(matches!(
            parse(&["inbox-rule", "accept", "anonymous"])
                .unwrap()
                .command,
            Command::InboxRule {
                action: InboxAction::Accept,
                who: Who::Anonymous
            }
        ));
        assert!(parse(&["block", "nobody"]).is_err());
        assert!(matches!(
            parse(&["rules", "set", "-"]).unwrap().command,
            Command::Rules {
                action: RulesCommand::Set { .. }
            }
        ));
        assert!(parse(&["rules", "allow", "b@example.com", "--days", "sat"]).is_err());
        assert!(parse(&["rules", "delegate", "pa@example.com"]).is_err());
    }

    #[test]
    fn rules_files_are_read_normalised_and_checked() {
        let dir = std::env::temp_dir().join(format!("tern-cli-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        let text = r#"{"type":"rules","presence":[{"who":{"User":"Bob@Example.com"},
            "decision":"Deny","view":null,"when":null}],"inbox":[],"delegates":[]}"#;
        std::fs::write(&good, text).unwrap();
        let rules = read_rules(&good).unwrap();
        assert_eq!(rules.presence[0].who, Who::User("bob@example.com".into()));
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"presence":[{"who":"Nobody"}]}"#).unwrap();
        assert!(read_rules(&bad).is_err());
        let bad_when = dir.join("bad_when.json");
        let text = r#"{"presence":[{"who":"Anyone","decision":"Allow","view":null,
            "when":{"days":0,"from":0,"to":60,"offset":0}}],"inbox":[],"delegates":[]}"#;
        std::fs::write(&bad_when, text).unwrap();
        assert!(read_rules(&bad_when).is_err());
        assert!(read_rules(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wake_times() {
        assert_eq!(parse_wake("1700000000"), Ok(Wake::At(1_700_000_000)));
        assert_eq!(parse_wake("+90"), Ok(Wake::In(90)));
        assert_eq!(parse_wake("+90s"), Ok(Wake::In(90)));
        assert_eq!(parse_wake("+30m"), Ok(Wake::In(1800)));
        assert_eq!(parse_wake("+2h"), Ok(Wake::In(7200)));
        assert_eq!(parse_wake("+1d"), Ok(Wake::In(86_400)));
        for bad in [
            "",
            "+",
            "+m",
            "+5w",
            "+5mm",
            "-5",
            "soon",
            "+99999999999999999999d",
        ] {
            assert!(parse_wake(bad).is_err(), "{bad}");
        }
        assert_eq!(Wake::In(60).at(1000), 1060);
        assert_eq!(Wake::At(5).at(1000), 5);
        assert_eq!(Wake::In(u64::MAX).at(1000), u64::MAX);
    }

    #[test]
    fn argument_parsers() {
        assert_eq!(parse_availability("7"), Ok(Availability(7)));
        assert_eq!(parse_availability("asleep"), Ok(Availability::ASLEEP));
        assert!(parse_availability("sleepy").is_err());
        assert_eq!(parse_mode("2"), Ok(ClientMode::SLEEPY));
        assert!(parse_card("email").is_err());
        assert_eq!(parse_id("00ff").unwrap().0, vec![0, 255]);
        assert!(parse_id("").is_err());
        assert!(parse_id("zz").is_err());
        assert!(parse_id(&"ab".repeat(33)).is_err());
    }

    #[test]
    fn broken_pipes_end_quietly() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&e));
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&e));
    }
}
