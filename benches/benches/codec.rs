//! Encode and decode cost of every frame type (criterion), and their encoded sizes
//! (printed as a table before the timings).
//!
//! `cargo bench -p tern-benches --bench codec`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tern_benches::samples::{downs, ups};
use tern_wire::codec;

const FRAME_MAX_DEFAULT: usize = tern_wire::limits::DEFAULT_FRAME_MAX as usize;
use tern_wire::{Down, Up};

fn sizes() {
    println!("| frame | direction | encoded bytes (incl. length prefix) |");
    println!("|---|---|---|");
    for (name, f) in ups() {
        println!("| {name} | up | {} |", codec::encode(&f).len());
    }
    for (name, f) in downs() {
        println!("| {name} | down | {} |", codec::encode(&f).len());
    }
}

fn bench(c: &mut Criterion) {
    sizes();
    let mut group = c.benchmark_group("encode");
    for (name, f) in ups() {
        group.bench_function(format!("up/{name}"), |b| b.iter(|| codec::encode(black_box(&f))));
    }
    for (name, f) in downs() {
        group.bench_function(format!("down/{name}"), |b| b.iter(|| codec::encode(black_box(&f))));
    }
    group.finish();
    let mut group = c.benchmark_group("decode");
    for (name, f) in ups() {
        let bytes = codec::encode(&f);
        group.bench_function(format!("up/{name}"), |b| {
            b.iter(|| codec::decode::<Up>(black_box(&bytes), FRAME_MAX_DEFAULT))
        });
    }
    for (name, f) in downs() {
        let bytes = codec::encode(&f);
        group.bench_function(format!("down/{name}"), |b| {
            b.iter(|| codec::decode::<Down>(black_box(&bytes), FRAME_MAX_DEFAULT))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
