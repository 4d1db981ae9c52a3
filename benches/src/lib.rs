//! # tern-benches: measurements, not assertions
//!
//! Owns the benchmark inputs shared by the criterion benches (`benches/*.rs`) and the
//! loopback harnesses (`src/bin/*.rs`): representative frames of every type, and the
//! statistics used to print tables. It may not be used by product code.

pub mod samples;
pub mod stats;
