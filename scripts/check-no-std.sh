#!/usr/bin/env bash
# Proves that tern-wire, the crate that defines the wire protocol, stays usable on small
# devices:
#   1. it builds with `--no-default-features` (#![no_std], no allocator, heapless
#      buffers) for a bare-metal Cortex-M4F target, thumbv7em-none-eabihf, where no std
#      exists to link by accident;
#   2. its tests pass in that configuration on the host, including the golden-byte
#      vectors (tests/golden.rs), which show that the no_std build puts exactly the same
#      bytes on the wire as the std build.
# Safe to run again and again; exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=thumbv7em-none-eabihf

if rustup target list --installed | grep -qx "$TARGET"; then
    echo "check-no-std: target $TARGET already installed"
else
    echo "check-no-std: installing target $TARGET"
    rustup target add "$TARGET"
fi

echo "check-no-std: building tern-wire without std for $TARGET"
cargo build -p tern-wire --no-default-features --target "$TARGET"

echo "check-no-std: clippy on tern-wire without std"
cargo clippy -p tern-wire --all-targets --no-default-features -- -D warnings

echo "check-no-std: testing tern-wire without std on the host"
cargo test -p tern-wire --no-default-features

echo "check-no-std: OK: tern-wire builds for $TARGET with no_std and no allocator,"
echo "check-no-std: and its no_std build passes its tests, golden wire bytes included."
