#!/usr/bin/env bash
# The whole test suite: what README.md's second command runs and what CI runs.
# Installs its own prerequisites (scripts/setup.sh), then: formatting, lints, every
# test of the workspace (unit, end-to-end over QUIC on loopback, property tests), the
# no_std build of the wire codec, and the SDKs' tests (scripts/bindings/test.sh: each
# installs its own toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# A fresh clone gains nothing from incremental compilation, and its caches double the
# size of target/ (CI's disk is not large). Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== no_std build of tern-wire"
scripts/check-no-std.sh

echo "== build the binaries (the CLI end-to-end tests run them as processes)"
cargo build --workspace --bins --locked

echo "== cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rust=0
cargo test --workspace --locked 2>&1 | tee "$log" || rust=$?

# The SDKs: Python, Kotlin (JVM) and Swift (trixie chroot) against a real gateway, and
# the Android/iOS type-check. Set TERN_SKIP_BINDINGS=1 to leave them out locally.
bindings=0
if [ "${TERN_SKIP_BINDINGS:-0}" != 1 ]; then
    scripts/bindings/test.sh 2>&1 | tee -a "$log" || bindings=$?
fi

# One closing line for the whole run (each test binary prints its own summary, and the
# last one is often a crate's empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^bindings: .* passed in/ { b++ } /^bindings: .* FAILED/ { bf++ }
     END { printf "tern: %d passed, %d failed; SDK suites: %d passed, %d failed\n", p, f, b, bf }' "$log"
if [ "$rust" -ne 0 ] || [ "$bindings" -ne 0 ]; then
    exit 1
fi
