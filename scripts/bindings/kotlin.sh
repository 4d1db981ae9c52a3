#!/usr/bin/env bash
# Tests tern's Kotlin bindings on the JVM against a real gateway.
#
#   1. the toolchain (scripts/bindings/kotlin-toolchain.sh: kotlinc, kotlin-stdlib,
#      kotlinx-coroutines, JNA), installed if missing;
#   2. scripts/bindings/build.sh: libtern_ffi.so, tern-gateway, uniffi-bindgen;
#   3. the Kotlin bindings, generated as bindings/uniffi.toml says (package dev.tern,
#      TernClient.close renamed disconnect) and compiled with the idiomatic layer (bindings/kotlin/src) into the SDK
#      jar, and the test program (bindings/kotlin/test/TernTest.kt) into its own jar; both
#      are cached by the hash of their inputs, since kotlinc takes tens of seconds; the
#      Android example's ChatModel.kt is compiled too (not run), to keep it current;
#   4. a gateway (scripts/bindings/gateway.sh), stopped on exit;
#   5. the test program under `timeout`, with JNA pointed at the cdylib.
#
# Exits non-zero if any step or check fails. Environment: CARGO_TARGET_DIR is honoured;
# TERN_KOTLIN_TIMEOUT (seconds, default 180) bounds the test run; TERN_KOTLIN_REBUILD=1
# ignores the compiled-jar cache.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

SCRIPT_NAME=kotlin.sh
# shellcheck source=scripts/bindings/common.sh
source "$root/scripts/bindings/common.sh"
t_all=$(now)

# 1. Toolchain.
eval "$(scripts/bindings/kotlin-toolchain.sh env)"
cache="${TERN_KOTLIN_CACHE:-/var/cache/tern/kotlin}/build"
mkdir -p "$cache"

# 2. The library, the gateway and uniffi-bindgen.
t=$(now)
scripts/bindings/build.sh >/dev/null
say "build.sh ($(elapsed "$t"))"

lib="$target/debug/libtern_ffi.so"
bindgen="$target/debug/uniffi-bindgen"
[[ -f "$lib" && -x "$bindgen" ]] || { say "error: build.sh left no $lib or $bindgen"; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tern-kotlin.XXXXXX")"
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if declare -F tern_gateway_stop >/dev/null; then tern_gateway_stop; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# 3. Generate (fast, so every time), then compile what changed.
t=$(now)
"$bindgen" generate --library "$lib" --language kotlin --no-format \
    --out-dir "$work/gen" >"$work/bindgen.log" 2>&1 || {
    say "error: uniffi-bindgen failed:"; cat "$work/bindgen.log" >&2; exit 1
}
generated="$work/gen/dev/tern/tern.kt"
[[ -f "$generated" ]] || { say "error: uniffi-bindgen wrote no $generated"; exit 1; }
say "generated the Kotlin bindings ($(elapsed "$t"))"

classpath_libs="$KOTLINX_COROUTINES_JAR:$JNA_JAR"
# What the jars depend on besides their sources: the compiler's build and the libraries.
toolchain_id="kotlinc $(cat "$KOTLIN_HOME/build.txt") $(sha256sum "$KOTLINX_COROUTINES_JAR" "$JNA_JAR" | cut -c1-16 | tr '\n' ' ')"
hash_of() { { echo "$toolchain_id"; cat "$@"; } | sha256sum | cut -c1-24; }

layer_sources=(bindings/kotlin/src/dev/tern/*.kt)
sdk_key="$(hash_of "$generated" "${layer_sources[@]}")"
sdk_jar="$cache/tern-sdk-$sdk_key.jar"
test_key="$(hash_of <(echo "$sdk_key") bindings/kotlin/test/*.kt)"
test_jar="$cache/tern-test-$test_key.jar"

compile() { # compile OUT.jar CLASSPATH SOURCES...
    local out="$1" cp="$2"; shift 2
    local t; t=$(now)
    if [[ -f "$out" && "${TERN_KOTLIN_REBUILD:-0}" != 1 ]]; then
        say "$(basename "$out"): cached"
        return 0
    fi
    local tmp
    tmp="$work/$(basename "$out")"
    if ! "$KOTLINC" -nowarn -jvm-target 17 -cp "$cp" -d "$tmp" "$@" >"$work/kotlinc.log" 2>&1; then
        say "error: kotlinc failed for $*:"
        cat "$work/kotlinc.log" >&2
        exit 1
    fi
    mv -f "$tmp" "$out"
    say "compiled $(basename "$out") ($(elapsed "$t"))"
}
compile "$sdk_jar" "$classpath_libs" "$generated" "${layer_sources[@]}"
compile "$test_jar" "$sdk_jar:$classpath_libs" bindings/kotlin/test/*.kt
# The Android example's plain-Kotlin model, compiled only (it must keep up with the API).
example_model=bindings/examples/android/app/src/main/java/dev/tern/example/ChatModel.kt
example_jar="$cache/tern-example-$(hash_of <(echo "$sdk_key") "$example_model").jar"
compile "$example_jar" "$sdk_jar:$classpath_libs" "$example_model"
touch "$example_jar"
touch "$sdk_jar" "$test_jar"
# Keep the cache small: the 12 newest jars.
# shellcheck disable=SC2012  # names are tern-*-HEX.jar
ls -1t "$cache"/*.jar 2>/dev/null | tail -n +13 | xargs -r rm -f

# 4. A gateway of our own.
# shellcheck source=scripts/bindings/gateway.sh
source scripts/bindings/gateway.sh
t=$(now)
tern_gateway_start >/dev/null
say "gateway on $TERN_GATEWAY ($(elapsed "$t"))"

# 5. The test program.
t=$(now)
status=0
timeout --kill-after=10 "${TERN_KOTLIN_TIMEOUT:-180}" \
    "$JAVA" -XX:+UseSerialGC -Djna.library.path="$target/debug" \
    -cp "$test_jar:$sdk_jar:$KOTLIN_STDLIB_JAR:$classpath_libs" TernTestKt || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    say "error: the test program timed out after ${TERN_KOTLIN_TIMEOUT:-180}s"
fi
if [[ $status -ne 0 && -f "${TERN_DATA_DIR:-}/gateway.log" ]]; then
    say "the gateway's log (tail):"
    tail -n 30 "$TERN_DATA_DIR/gateway.log" >&2
fi
say "ran TernTest ($(elapsed "$t"), exit $status); total $(elapsed "$t_all")"
exit "$status"
