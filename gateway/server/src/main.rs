//! The `tern-gateway` binary: parses the command line, starts tracing and calls the
//! library (`serve` runs the gateway until ctrl-c or SIGTERM; `user` provisions
//! principals). Logs go to stderr; stdout carries only what scripts read: the
//! listening line, tokens, and user lists.

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
            let normal = users::normalise(&address)?;
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
