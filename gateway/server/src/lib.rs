//! # tern-gateway: the gateway around the core
//!
//! Everything the pure core ([`tern_gateway_core`]) leaves out: the QUIC endpoint and
//! one task per connection ([`runtime`]), TLS identity ([`tls`]), durable storage in
//! SQLite ([`sqlite`]), configuration ([`config`]), operator provisioning ([`users`]),
//! and the `tern-gateway` binary. It decides nothing about the protocol: every frame
//! goes to the core's `Hub`, and every frame sent comes from it.
//!
//! ```no_run
//! # async fn example() -> Result<(), tern_gateway::runtime::RuntimeError> {
//! let gateway = tern_gateway::runtime::start(tern_gateway::GatewayConfig::default()).await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod runtime;
pub mod sqlite;
pub mod tls;
pub mod users;
mod xmpp;

pub use config::{ConfigError, GatewayConfig, Overrides};
pub use runtime::{RunningGateway, RuntimeError, start};
pub use sqlite::{DbError, SqliteStore};
pub use users::{UserInfo, UserOptions, UsersError};

/// Creates the data directory (and its parents), readable by its owner only when new:
/// it holds the private key and the token hashes.
fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}
