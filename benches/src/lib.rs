//! # tern-benches: measurements, not assertions
//!
//! Owns the benchmark inputs shared by the criterion benches (`benches/*.rs`) and the
//! loopback harness (`src/bin/loopback.rs`): representative frames of every type
//! ([`samples`]), the statistics used to print tables ([`stats`]), the baselines
//! measured in the same run ([`baseline`]: raw QUIC echo, raw SQLite commits), the
//! description of the machine and its disk flushes ([`env`]) and per-thread CPU
//! accounting ([`cpu`]) and the UDP tap of the link harnesses ([`tap`]). It may not be used by product code. Results and how to
//! reproduce them: `docs/benchmarks.md`.

pub mod baseline;
pub mod cpu;
pub mod env;
pub mod samples;
pub mod stats;
pub mod tap;
