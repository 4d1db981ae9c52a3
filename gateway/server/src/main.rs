//! The `tern-gateway` binary: parses the command line, starts tracing and calls the
//! library (`serve` runs the gateway until ctrl-c or SIGTERM; `user` provisions
//! principals) or the `admin` module (domain administrators' tokens and audit log, and
//! the administrator client). Logs go to stderr; stdout carries only what scripts read:
//! the listening line, tokens, user lists and administrators' results.

mod admin;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tern_gateway::{GatewayConfig, Overrides, UserOptions, users};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "tern-gateway",
    version,
    about = "The tern presence and instant-messaging gateway"
)]
struct Cli {
    /// Log format on stderr (the filter is RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// What to do; without one, `serve` with the embedded defaults.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until ctrl-c or SIGTERM.
    Serve(ServeArgs),
    /// Provision principals (works while the gateway runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Domain administrators: their tokens and audit log (on the database, like `user`),
    /// and requests to a running gateway as a domain's administrator.
    Admin(AdminArgs),
}

#[derive(Debug, Default, Args)]
struct ConfigArgs {
    /// TOML configuration file; embedded defaults without one.
    #[arg(long, env = "TERN_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, certificate); overrides the file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// UDP address to listen on; overrides the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A domain to serve (repeatable); replaces the file's list.
    #[arg(long = "domain", value_name = "NAME")]
    domains: Vec<String>,
    /// Join the XMPP network: the XMPP server's XEP-0114 component address (host:port);
    /// the component's name is the first served domain (or the file's xmpp.domain).
    #[arg(long, value_name = "ADDR", requires = "xmpp_secret")]
    xmpp_component: Option<String>,
    /// The component's shared secret, as configured on the XMPP server.
    #[arg(long, env = "TERN_XMPP_SECRET", hide_env_values = true)]
    xmpp_secret: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a principal and print its access token (once) on stdout.
    Add {
        /// The principal's address, NAME@DOMAIN.
        address: String,
        #[command(flatten)]
        common: ConfigArgs,
        /// No presentity.
        #[arg(long)]
        no_presence: bool,
        /// No instant inbox at its own address.
        #[arg(long)]
        no_inbox: bool,
        /// A further inbox address (repeatable).
        #[arg(long = "alias", value_name = "ADDR")]
        aliases: Vec<String>,
    },
    /// List principals, one JSON object per line.
    List {
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Remove a principal with its presence, subscriptions and inbox.
    Remove {
        /// The principal's address.
        address: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
}

/// `tern-gateway admin`: the flags before the subcommand are for the remote commands
/// (`watchers`, `subscriptions`, `rules`, `set-rules`, `presence`, `cancel`).
#[derive(Debug, Args)]
struct AdminArgs {
    /// The gateway's address, host:port (remote commands).
    #[arg(long, env = "TERN_GATEWAY", default_value = "127.0.0.1:4433")]
    gateway: String,
    /// PEM file with the gateway's certificate or its CA; nothing else is trusted
    /// (remote commands).
    #[arg(long, env = "TERN_CA", value_name = "CERT.pem")]
    ca: Option<PathBuf>,
    /// TLS server name the certificate must match [default: the domain].
    #[arg(long, env = "TERN_SERVER_NAME", value_name = "NAME")]
    server_name: Option<String>,
    /// The administered domain (remote commands).
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// The domain's administrator token (prefer the environment variable: flags show in
    /// process lists).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create or rotate a configured domain's administrator token and print it (once)
    /// on stdout; only its hash is stored, and the previous token stops working.
    Token {
        /// The domain.
        domain: String,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Print a domain's audit log, oldest first: time (UTC), principal, action.
    Log {
        /// The domain.
        domain: String,
        /// How many of the latest entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Who watches a principal: its subscribers and recent fetchers, one per line.
    Watchers {
        /// The principal, NAME@DOMAIN.
        user: String,
    },
    /// A principal's subscriptions and pending requests, one per line with its state.
    Subscriptions {
        /// The principal.
        user: String,
        /// The subscriptions to the principal's presentity instead of its own.
        #[arg(long)]
        incoming: bool,
    },
    /// Print a principal's rules as JSON (the input of `set-rules`).
    Rules {
        /// The principal.
        user: String,
    },
    /// Replace a principal's rules with those in a JSON file (`-`: standard input).
    SetRules {
        /// The principal.
        user: String,
        /// The rules, as `rules` prints them.
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
    },
    /// Print a principal's presence: version, then one line per tuple.
    Presence {
        /// The principal.
        user: String,
    },
    /// Replace a principal's presence with the one in a JSON file (`-`: standard input),
    /// as its own publish would (JSON: `{"tuples": [{"id": "phone", "basic": "Open",
    /// ...}], "card": []}`, see docs/operator.md).
    SetPresence {
        /// The principal.
        user: String,
        /// The presence.
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
    },
    /// End one watcher's subscription to a principal's presentity.
    Cancel {
        /// The principal.
        user: String,
        /// The watcher, NAME@DOMAIN.
        watcher: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // No subcommand means `serve` with no flags; the environment still applies.
    let default_serve = || {
        let mut args = ServeArgs::default();
        args.common.config = std::env::var_os("TERN_GATEWAY_CONFIG").map(PathBuf::from);
        Command::Serve(args)
    };
    match cli.command.unwrap_or_else(default_serve) {
        Command::Serve(args) => serve(args),
        Command::User(command) => user(command),
        Command::Admin(args) => admin_command(args),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(args: &ConfigArgs, mut overrides: Overrides) -> anyhow::Result<GatewayConfig> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::load(path)?,
        None => GatewayConfig::default(),
    };
    overrides.data_dir = args.data_dir.clone();
    config.apply(overrides)?;
    Ok(config)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: None,
        domains: args.domains,
        xmpp_component: args.xmpp_component,
        xmpp_secret: args.xmpp_secret,
    };
    let config = load_config(&args.common, overrides)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut gateway = tern_gateway::start(config.clone()).await?;
        let signal = shutdown_signal()?;
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "tern-gateway listening on {} for {} (cert: {})",
            gateway.local_addr(),
            config.domain_names().join(", "),
            gateway.cert_path().display()
        )?;
        stdout.flush()?;
        tokio::select! {
            () = signal => {
                tracing::info!("shutting down");
                gateway.shutdown().await;
                Ok(())
            }
            err = gateway.stopped() => Err(err.into()),
        }
    })
}

/// Installs the handlers for ctrl-c and SIGTERM now (so that a signal arriving right
/// after the listening line is not lost) and returns a future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            address,
            common,
            no_presence,
            no_inbox,
            aliases,
        } => {
            let config = load_config(&common, Overrides::default())?;
            let normal = users::normalise_new(&address)?;
            if !config.domain_names().contains(&normal.domain()) {
                eprintln!(
                    "warning: {} is not a configured domain; {normal} cannot log in until it is",
                    normal.domain()
                );
            }
            let opts = UserOptions {
                presentity: !no_presence,
                inbox: !no_inbox,
                aliases,
            };
            let token = users::add(&config.data_dir, &address, opts)?;
            eprintln!("added {normal}; its access token follows (shown only now):");
            println!("{token}");
        }
        UserCommand::List { common } => {
            let config = load_config(&common, Overrides::default())?;
            let mut stdout = std::io::stdout().lock();
            for user in users::list(&config.data_dir)? {
                writeln!(stdout, "{}", serde_json::to_string(&user)?)?;
            }
        }
        UserCommand::Remove { address, common } => {
            let config = load_config(&common, Overrides::default())?;
            if !users::remove(&config.data_dir, &address)? {
                anyhow::bail!("no such user: {address}");
            }
            eprintln!("removed {address}");
        }
    }
    Ok(())
}

fn admin_command(args: AdminArgs) -> anyhow::Result<()> {
    let local_domain = |given: &str| -> anyhow::Result<()> {
        if let Some(flag) = &args.domain
            && admin::normal_domain(flag)? != admin::normal_domain(given)?
        {
            anyhow::bail!("--domain {flag} and the argument {given} differ");
        }
        Ok(())
    };
    let (user, request) = match &args.command {
        AdminCommand::Token { domain, common } => {
            local_domain(domain)?;
            let config = load_config(common, Overrides::default())?;
            let (domain, token, change) = admin::create_token(&config, domain)?;
            match change {
                admin::TokenChange::Created => eprintln!(
                    "created the administrator token of {domain}; it follows (shown only now):"
                ),
                admin::TokenChange::Rotated => eprintln!(
                    "rotated the administrator token of {domain}: the previous one no longer works; the new one follows (shown only now):"
                ),
            }
            println!("{token}");
            return Ok(());
        }
        AdminCommand::Log {
            domain,
            limit,
            common,
        } => {
            local_domain(domain)?;
            let config = load_config(common, Overrides::default())?;
            let mut stdout = std::io::stdout().lock();
            for record in admin::read_log(&config.data_dir, domain, *limit)? {
                writeln!(stdout, "{}", admin::log_line(&record))?;
            }
            return Ok(());
        }
        AdminCommand::Watchers { user } => (user, admin::Request::Watchers),
        AdminCommand::Subscriptions { user, incoming } => (
            user,
            admin::Request::Subscriptions {
                incoming: *incoming,
            },
        ),
        AdminCommand::Rules { user } => (user, admin::Request::GetRules),
        AdminCommand::SetRules { user, file } => {
            (user, admin::Request::SetRules(admin::read_rules(file)?))
        }
        AdminCommand::Presence { user } => (user, admin::Request::GetPresence),
        AdminCommand::SetPresence { user, file } => (
            user,
            admin::Request::SetPresence(admin::read_presence(file)?),
        ),
        AdminCommand::Cancel { user, watcher } => {
            let watcher = users::normalise(watcher)?.into_string();
            (user, admin::Request::Cancel(watcher))
        }
    };
    let domain = admin::normal_domain(
        args.domain
            .as_deref()
            .context("--domain is required for requests to the gateway")?,
    )?;
    let user = admin::principal_in(&domain, user)?;
    let ca = args
        .ca
        .as_ref()
        .context("--ca (or TERN_CA) is required for requests to the gateway")?;
    let remote = admin::Remote {
        gateway: args.gateway.clone(),
        ca_pem: std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?,
        server_name: args.server_name.clone().unwrap_or_else(|| domain.clone()),
        domain,
        token: args
            .token
            .clone()
            .context("--token (or TERN_ADMIN_TOKEN) is required for requests to the gateway")?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let output = runtime.block_on(admin::run(&remote, user.as_str(), &request))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    stdout.flush()?;
    match &request {
        admin::Request::SetRules(_) => eprintln!("replaced the rules of {user}"),
        admin::Request::SetPresence(_) => eprintln!("replaced the presence of {user}"),
        admin::Request::Cancel(watcher) => {
            eprintln!("ended {watcher}'s subscription to {user}, if there was one");
        }
        _ => {}
    }
    Ok(())
}
