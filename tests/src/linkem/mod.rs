//! # tern-linkem: a weak link between a client and the gateway, in user space
//!
//! The machine's kernel has no netem, so every weak-link test and benchmark runs its
//! traffic through this UDP relay on loopback instead: delay, jitter, random and burst
//! loss, reordering, duplication, a bandwidth cap with a bounded queue, and blackouts,
//! each direction on its own settings, reproducible from a seed.
//!
//! - [`impairment`] (pure data): what a link does, [`Impairment`], its validation and
//!   the text forms of the command line.
//! - [`model`] (pure, no tokio, no clock, no sockets): [`Direction`] applies an
//!   impairment to datagrams handed to it with the time, and counts.
//! - [`relay`] (tokio): [`Linkem`] owns the sockets, the timer and the clock, and asks
//!   the models what to do. It only ever binds and sends on loopback.
//!
//! The `tern-linkem` binary is a command line around [`Linkem`].
//!
//! ```no_run
//! # async fn demo(gateway: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//! use tern_tests::linkem::{Impairment, LinkConfig, Linkem};
//!
//! let train = Impairment {
//!     delay: Duration::from_millis(100),
//!     loss: 0.02,
//!     ..Impairment::default()
//! };
//! let link = Linkem::start(LinkConfig::new(gateway).symmetric(train).seed(7)).await?;
//! // Point the client at `link.addr()` instead of the gateway, then:
//! link.blackout_for(Duration::from_secs(3)); // a tunnel
//! println!("{}", serde_json::to_string(&link.stats()).unwrap_or_default());
//! # Ok(()) }
//! ```

pub mod impairment;
pub mod model;
pub mod relay;

pub use impairment::{
    Blackouts, GilbertElliott, Impairment, ImpairmentError, JitterShape, ParseError, Periodic,
    Window,
};
pub use model::{Direction, DirectionStats, DropCause, Release, Verdict};
pub use relay::{ConfigError, LinkConfig, LinkStats, Linkem};
