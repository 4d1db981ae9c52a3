//! Encode and decode cost of every frame type (criterion), and their encoded sizes
//! (printed as a table before the timings). After the timings, a Markdown table joins
//! both: bytes and criterion's median time per frame type.
//!
//! `cargo bench -p tern-benches --bench codec`
//!
//! Each benchmark warms up for 0.5 s and measures for 1.5 s, so the whole run (two per
//! frame type, and `encode_into` for four) stays under two minutes on two cores.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use tern_benches::samples::{downs, ups};
use tern_wire::codec;
use tern_wire::limits::DEFAULT_FRAME_MAX;
use tern_wire::{Down, Up};

const FRAME_MAX: usize = DEFAULT_FRAME_MAX as usize;

/// A frame of either direction.
enum Frame {
    Up(Up),
    Down(Down),
}

fn sizes() {
    println!("| frame | direction | encoded bytes (incl. length prefix) |");
    println!("|---|---|---|");
    for (name, f) in ups() {
        println!("| {name} | up | {} |", codec::encode(&f).len());
    }
    for (name, f) in downs() {
        println!("| {name} | down | {} |", codec::encode(&f).len());
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, f) in ups() {
        group.bench_function(format!("up/{name}"), |b| {
            b.iter(|| codec::encode(black_box(&f)))
        });
    }
    for (name, f) in downs() {
        group.bench_function(format!("down/{name}"), |b| {
            b.iter(|| codec::encode(black_box(&f)))
        });
    }
    group.finish();
    // The allocation-free form (what a no_std device uses) into a reused buffer, for the
    // frames that dominate traffic: how much of `encode` is the allocation.
    let mut group = c.benchmark_group("encode_into");
    let hot = ups()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "Send" | "Ack"))
        .map(|(name, f)| (format!("up/{name}"), Frame::Up(f)))
        .chain(
            downs()
                .into_iter()
                .filter(|(name, _)| matches!(*name, "Notify" | "Deliver(Message)"))
                .map(|(name, f)| (format!("down/{name}"), Frame::Down(f))),
        );
    for (id, frame) in hot {
        let mut out = vec![0_u8; FRAME_MAX];
        group.bench_function(id, |b| {
            b.iter(|| match black_box(&frame) {
                Frame::Up(f) => codec::encode_into(f, &mut out),
                Frame::Down(f) => codec::encode_into(f, &mut out),
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("decode");
    for (name, f) in ups() {
        let bytes = codec::encode(&f);
        group.bench_function(format!("up/{name}"), |b| {
            b.iter(|| codec::decode::<Up>(black_box(&bytes), FRAME_MAX))
        });
    }
    for (name, f) in downs() {
        let bytes = codec::encode(&f);
        group.bench_function(format!("down/{name}"), |b| {
            b.iter(|| codec::decode::<Down>(black_box(&bytes), FRAME_MAX))
        });
    }
    group.finish();
}

fn main() {
    let started = SystemTime::now();
    sizes();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        // Fewer bootstrap resamples than the default 100 000: the analysis otherwise
        // costs half a second per benchmark on a small machine.
        .nresamples(20_000)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary(started);
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else `<target>/criterion`
/// (this executable is `<target>/<profile>/deps/codec-<hash>`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.ancestors().nth(3)?.join("criterion"))
}

/// Prints bytes and median nanoseconds per frame type, from the estimates criterion
/// wrote in this run (older ones, e.g. of benchmarks filtered out, are skipped).
fn summary(started: SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let medians = read_medians(&dir, started);
    if medians.is_empty() {
        return;
    }
    println!();
    println!(
        "| frame | direction | bytes | encode median ns | encode_into median ns | decode median ns |"
    );
    println!("|---|---|---|---|---|---|");
    let show = |id: &str| {
        medians
            .get(id)
            .map_or_else(|| "–".to_owned(), |ns| format!("{ns:.1}"))
    };
    let rows = ups()
        .into_iter()
        .map(|(name, f)| (name, "up", codec::encode(&f).len()))
        .chain(
            downs()
                .into_iter()
                .map(|(name, f)| (name, "down", codec::encode(&f).len())),
        );
    for (name, dir, bytes) in rows {
        println!(
            "| {name} | {dir} | {bytes} | {} | {} | {} |",
            show(&format!("encode/{dir}/{name}")),
            show(&format!("encode_into/{dir}/{name}")),
            show(&format!("decode/{dir}/{name}")),
        );
    }
}

/// Full benchmark id → median point estimate (ns), for every benchmark whose estimates
/// were written after `since`.
fn read_medians(dir: &Path, since: SystemTime) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    for group in ["encode", "encode_into", "decode"] {
        let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            let new = entry.path().join("new");
            let estimates = new.join("estimates.json");
            let fresh = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let id = read_json(&new.join("benchmark.json"))
                .and_then(|b| b.get("full_id")?.as_str().map(str::to_owned));
            let median = read_json(&estimates)
                .and_then(|e| e.get("median")?.get("point_estimate")?.as_f64());
            if let (Some(id), Some(median)) = (id, median) {
                found.insert(id, median);
            }
        }
    }
    found
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
