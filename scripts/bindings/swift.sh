#!/usr/bin/env bash
# Tests tern's Swift bindings against a real gateway, on Linux.
#
#   1. sets up the Swift toolchain (a Debian trixie chroot with Swift 6.0.3, Foundation
#      and XCTest: scripts/bindings/swift-toolchain.sh, cached, idempotent);
#   2. builds the FFI library and the gateway and generates the bindings
#      (scripts/bindings/build.sh);
#   3. starts a throw-away gateway on 127.0.0.1 (scripts/bindings/gateway.sh), stopped
#      on exit;
#   4. copies the generated Tern.swift, ternFFI.h and its modulemap, the idiomatic
#      layer (bindings/swift/Sources/Tern), the test (bindings/swift/Tests) and
#      libtern_ffi.so into a work directory under target/ (files written inside the
#      chroot belong to root, so never into the source tree);
#   5. compiles them inside the chroot with swiftc (Swift 6 language mode) into one
#      module `Tern` with an XCTMain entry point, linked against libtern_ffi.so; and
#      type-checks the iOS example's model (bindings/examples/ios) against Tern built as
#      a module of its own;
#   6. runs the test program inside the chroot under `timeout`, with the gateway's
#      address, certificate and tokens in its environment. The chroot shares the host's
#      network namespace (swift-toolchain.sh unshares only the mount namespace), so the
#      program reaches the gateway on the host's loopback.
#
# Exits non-zero when a step or a test fails; prints a timing line per step. Needs root
# (debootstrap, mount, chroot).
#
# Environment:
#   CARGO_TARGET_DIR        honoured (the work directory is $CARGO_TARGET_DIR/swift-bindings)
#   TERN_SWIFT_TIMEOUT      seconds the test program may run (default 180)
#   TERN_SWIFT_CHROOT, TERN_DEBIAN_MIRROR   see swift-toolchain.sh
#   RUST_LOG                passed to the gateway and to the test program (the client core)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
toolchain="$root/scripts/bindings/swift-toolchain.sh"
work="$target/swift-bindings"
timeout_s="${TERN_SWIFT_TIMEOUT:-180}"

SCRIPT_NAME=swift.sh
# shellcheck source=scripts/bindings/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
total_start=$(now)

# 1. The toolchain.
t=$(now)
"$toolchain" setup
say "toolchain ready ($(elapsed "$t"))"

# 2. The library, the gateway and the generated bindings.
t=$(now)
"$root/scripts/bindings/build.sh" >/dev/null
generated="$target/bindings/swift"
for f in Tern.swift ternFFI.h ternFFI.modulemap; do
    [[ -f "$generated/$f" ]] || { say "error: build.sh generated no $generated/$f"; exit 1; }
done
lib="$target/debug/libtern_ffi.so"
[[ -f "$lib" ]] || { say "error: no $lib"; exit 1; }
say "built and generated the bindings ($(elapsed "$t"))"

# 3. The gateway, on the host.
# shellcheck source=scripts/bindings/gateway.sh
source "$root/scripts/bindings/gateway.sh"
trap tern_gateway_stop EXIT
t=$(now)
tern_gateway_start >&2
say "gateway started ($(elapsed "$t"))"

# 4. The work directory, laid out for swiftc:
#   include/ternFFI.h, include/module.modulemap   the C module ternFFI (-I include)
#   lib/libtern_ffi.so                            -L lib -ltern_ffi, LD_LIBRARY_PATH
#   src/*.swift                                   one module, Tern
#   cert.pem                                      the gateway's certificate
rm -rf "$work"
mkdir -p "$work/include" "$work/lib" "$work/src"
cp "$generated/ternFFI.h" "$work/include/"
# swiftc finds a C module through a file named module.modulemap in an -I directory.
cp "$generated/ternFFI.modulemap" "$work/include/module.modulemap"
cp "$lib" "$work/lib/"
cp "$generated/Tern.swift" "$work/src/Tern.swift"
cp "$root"/bindings/swift/Sources/Tern/*.swift "$work/src/"
cp "$root/bindings/swift/Tests/TernTests.swift" "$work/src/"
cp "$TERN_CA" "$work/cert.pem"

# 5. Compile inside the chroot: the generated bindings, the layer and the test in one
# module (TERN_SINGLE_MODULE: the test does not `import Tern`) with XCTMain as its
# entry point (TERN_XCTMAIN; -parse-as-library for its @main), in the Swift 6 language
# mode (strict concurrency checking), as Xcode 16 compiles a new app's package.
# (The chroot's command is not run by a shell: the file names are listed here.)
sources=()
for f in "$work"/src/*.swift; do sources+=("src/${f##*/}"); done
t=$(now)
"$toolchain" run "$work" -- swiftc -swift-version 6 -module-name Tern -parse-as-library \
    -D TERN_SINGLE_MODULE -D TERN_XCTMAIN \
    -I include -L lib -ltern_ffi \
    "${sources[@]}" -o TernTests
say "compiled the Swift module and its tests ($(elapsed "$t"))"

# 5b. The iOS example's model (bindings/examples/ios/TernDemo/TernModel.swift: no
# SwiftUI, no Network) type-checked against Tern built as a module of its own, as an
# app sees it: this also checks that the layer's API is public. The SwiftUI views are
# not built here (no SwiftUI on Linux).
mkdir -p "$work/module" "$work/example"
cp "$root/bindings/examples/ios/TernDemo/TernModel.swift" "$work/example/"
module_sources=()
for f in "$generated/Tern.swift" "$root"/bindings/swift/Sources/Tern/*.swift; do
    cp "$f" "$work/module/"
    module_sources+=("module/${f##*/}")
done
t=$(now)
"$toolchain" run "$work" -- swiftc -swift-version 6 -module-name Tern -parse-as-library \
    -emit-library -emit-module -emit-module-path module/Tern.swiftmodule \
    -I include -L lib -ltern_ffi "${module_sources[@]}" -o module/libTern.so
"$toolchain" run "$work" -- swiftc -swift-version 6 -typecheck -I module -I include \
    example/TernModel.swift
say "type-checked the iOS example's model against the Tern module ($(elapsed "$t"))"

# 6. Run inside the chroot, bounded.
run_env=(
    LD_LIBRARY_PATH=/work/lib
    TERN_GATEWAY="$TERN_GATEWAY"
    TERN_CA=/work/cert.pem
    TERN_ALICE_TOKEN="$TERN_ALICE_TOKEN"
    TERN_BOB_TOKEN="$TERN_BOB_TOKEN"
)
[[ -z "${RUST_LOG:-}" ]] || run_env+=(RUST_LOG="$RUST_LOG")
t=$(now)
status=0
timeout --kill-after=10 "$timeout_s" \
    "$toolchain" run "$work" -- env "${run_env[@]}" ./TernTests || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    say "error: the test program did not finish within ${timeout_s}s"
fi
say "ran the tests ($(elapsed "$t"), exit $status)"
if [[ $status -ne 0 ]]; then
    say "the gateway's log:"
    tail -n 40 "$TERN_DATA_DIR/gateway.log" >&2 || true
fi
say "total $(elapsed "$total_start")"
exit "$status"
