#!/usr/bin/env bash
# Type-checks tern-client and tern-bindings for the mobile targets on a Linux host that
# has neither the Android NDK nor Xcode:
#
#   cargo check --locked -p tern-client -p tern-bindings --target aarch64-linux-android
#   cargo check --locked -p tern-client -p tern-bindings --target aarch64-apple-ios
#
# All the Rust code (ours and every dependency, with its target-specific cfgs) is
# type-checked for the real target by rustc, using the target's std from rustup. The one
# thing that needs a C toolchain is ring's build script, which compiles ring's C and
# assembly for the target. Here the host's clang does that, freestanding, as a stand-in
# for the NDK's clang or Xcode's; see "The stand-in" below. Nothing is linked or run.
# docs/sdk-mobile-targets.md says what a real Android/iOS build needs.
#
# Idempotent. It installs what is missing (Debian's `clang` with apt; the two rustup
# targets), keeps its stubs and a cargo target directory of its own under
# target/mobile-check/ (nothing in the source tree; see CARGO_TARGET_DIR below), and
# exits non-zero if a check fails.
# Measured on a 2-core Debian 12 machine: cold 105-115 s and 440 MB; warm (nothing
# changed) under 1 s; after an edit to tern-client, about 3 s.
#
# Usage: scripts/bindings/mobile-check.sh        (no arguments)
set -euo pipefail
if (($#)); then echo "usage: $0 (no arguments)" >&2; exit 2; fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

work="$root/target/mobile-check"
# A target directory of its own, not target/: cargo locks a target directory for a whole
# build, so this check and other builds in target/ would wait on each other; and ring's
# build script runs again whenever the variables below differ from the previous run for
# the same triple (ring and cc-rs declare `rerun-if-env-changed`), so these stand-in
# objects and a real NDK build's in target/aarch64-linux-android/ would replace each
# other on every alternation. Costs one extra build of the host-side build scripts and proc-macros: measured,
# about 50 s and 200 MB once (a cold run in a directory that already holds the host
# artifacts takes 55 s and adds 240 MB).
export CARGO_TARGET_DIR="$work/cargo"
targets=(aarch64-linux-android aarch64-apple-ios)
packages=(-p tern-client -p tern-bindings)

# --- Tools -------------------------------------------------------------------------
need=()
command -v clang >/dev/null || need+=(clang)
command -v ar >/dev/null || need+=(binutils) # a dependency of clang; checked anyway
if ((${#need[@]})); then
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { echo "mobile-check: need root to install ${need[*]}" >&2; exit 2; }
        sudo=(sudo)
    fi
    echo "mobile-check: installing ${need[*]} with apt" >&2
    install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}")
    "${install[@]}" || { "${sudo[@]}" apt-get update && "${install[@]}"; }
fi

command -v rustup >/dev/null || { echo "mobile-check: rustup is needed for the targets' std" >&2; exit 2; }
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# --- The stand-in --------------------------------------------------------------------
# cc-rs (ring's build script) picks the compiler, archiver and flags for target T from
# CC_T, AR_T and CFLAGS_T (T with underscores). For both targets:
#   CC_T=clang    Debian's clang is a cross-compiler for every LLVM target; cc-rs itself
#                 adds --target=aarch64-linux-android or --target=arm64-apple-ios and
#                 picks ring's matching pregenerated assembly (ELF or Mach-O flavour).
#   AR_T=ar       binutils' ar, which clang depends on. cc-rs would otherwise look for
#                 llvm-ar (Android; only in Debian's `llvm`, a recommendation of clang)
#                 and then aarch64-linux-android-ar (the NDK's), and fail without them.
#   -nostdlibinc  no system headers: the host's /usr/include is x86_64 glibc's and would
#                 break the build; the target's libc headers (NDK sysroot, iOS SDK) are
#                 not here. Clang's own freestanding headers (stddef.h, stdint.h) stay.
#   -DRING_CORE_NOSTDLIBINC=1
#                 ring's switch for exactly that case: it then includes no libc header
#                 (it replaces assert/memcpy/memset with builtins). ring sets these two
#                 flags itself for wasm32 and musl cross-builds; here we set them.
# For iOS only:
#   SDKROOT       cc-rs asks `xcrun --show-sdk-path` for the iOS SDK unless SDKROOT names
#                 an existing directory; an empty stub directory stands for the SDK (it
#                 becomes -isysroot, unused with -nostdlibinc). Set on the iOS run only.
#   -isystem $SDKROOT/usr/include
#                 for a stub TargetConditionals.h: ring's base.h includes that Apple
#                 header (part of the SDK) on __APPLE__ to tell iOS from macOS.
sdk="$work/stubs/iPhoneOS-stub.sdk"
mkdir -p "$sdk/usr/include"
header="$sdk/usr/include/TargetConditionals.h"
stub='/* Stub of the iOS SDK header, for scripts/bindings/mobile-check.sh only: an iOS
 * device build (arm64, not the simulator). ring reads TARGET_OS_OSX/TARGET_OS_IPHONE. */
#pragma once
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 0
#define TARGET_OS_IPHONE 1
#define TARGET_OS_IOS 1
#define TARGET_OS_SIMULATOR 0
#define TARGET_CPU_ARM64 1'
[[ -f "$header" && "$(cat "$header")" == "$stub" ]] || printf '%s\n' "$stub" >"$header"

ring_flags="-nostdlibinc -DRING_CORE_NOSTDLIBINC=1"
env_for() { # env_for TARGET: the variables of the stand-in for TARGET, as NAME=VALUE words
    local v="${1//-/_}"
    echo "CC_$v=clang"
    echo "AR_$v=ar"
    case "$1" in
        *-apple-ios)
            echo "SDKROOT=$sdk"
            echo "CFLAGS_$v=$ring_flags -isystem $sdk/usr/include"
            ;;
        *) echo "CFLAGS_$v=$ring_flags" ;;
    esac
}

# --- The checks ----------------------------------------------------------------------
declare -A result seconds
failed=0
for t in "${targets[@]}"; do
    mapfile -t vars < <(env_for "$t")
    echo "==> cargo check --locked ${packages[*]} --target $t" >&2
    printf '    with %s\n' "${vars[@]}" >&2
    start=$(date +%s.%N)
    # -u: host-oriented CFLAGS/TARGET_CFLAGS (e.g. -march=native) would reach the cross
    # compile too, since cc-rs adds them to CFLAGS_T.
    if env -u CFLAGS -u TARGET_CFLAGS "${vars[@]}" cargo check --locked "${packages[@]}" --target "$t"; then
        result[$t]=ok
    else
        result[$t]=FAILED
        failed=1
    fi
    seconds[$t]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
done

cat <<EOF

mobile-check: $(clang --version | head -n1), $(rustc --version)
EOF
for t in "${targets[@]}"; do
    printf '  %-24s %-7s %6ss\n' "$t" "${result[$t]}" "${seconds[$t]}"
done
cat <<EOF
  target directory: $CARGO_TARGET_DIR ($(du -sh "$CARGO_TARGET_DIR" | cut -f1))

What this proves: rustc type-checks, for each target, all the Rust code that
tern-client and tern-bindings (the uniffi FFI surface) build from: our crates and every
dependency, with their target-specific cfgs (Android, iOS), against the target's std.
ring's build script runs for the target, but its C and assembly are compiled by the
host's clang, freestanding, with stub SDK pieces: a stand-in for the NDK/Xcode compilers.

What it does not prove: no code is generated or linked (cargo check), so neither
libtern_ffi.so nor libtern_ffi.a is built; ring's C is not compiled against the real
Android NDK or iOS SDK; only aarch64 (not armv7, x86_64 or the iOS simulator); nothing
runs on a device or an emulator; the Kotlin/Swift packaging (jniLibs, AAR, XCFramework)
is not exercised. See docs/sdk-mobile-targets.md.
EOF
exit "$failed"
