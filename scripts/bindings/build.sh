#!/usr/bin/env bash
# Builds the FFI library (tern-bindings, debug), the gateway and the workspace's
# uniffi-bindgen, then generates the Kotlin, Swift and Python bindings in library mode
# into target/bindings/{kotlin,swift,python}. Idempotent: cargo rebuilds only what
# changed, and the bindings are generated again only when the library or uniffi.toml is
# newer than them. Prints the paths.
#
#   target/debug/libtern_ffi.so             the cdylib (loaded by Kotlin/JNA and Python)
#   target/debug/libtern_ffi.a              the staticlib (Swift links it)
#   target/bindings/kotlin/dev/tern/tern.kt
#   target/bindings/swift/{Tern.swift,ternFFI.h,ternFFI.modulemap}
#   target/bindings/python/tern.py          with libtern_ffi.so linked next to it, where
#                                           tern.py loads it from
#
# Environment: CARGO_TARGET_DIR is honoured; TERN_BINDINGS_FORCE=1 regenerates always.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

cargo build -p tern-bindings -p tern-gateway --bins --lib
cargo build -p uniffi-bindgen --bins

lib="$target/debug/libtern_ffi.so"
bindgen="$target/debug/uniffi-bindgen"
out="$target/bindings"

stale() { # stale MARKER: whether MARKER is missing or older than the library or the config
    [[ ! -e "$1" || "$lib" -nt "$1" || "$root/bindings/uniffi.toml" -nt "$1" ]]
}

generate() { # generate LANGUAGE MARKER
    local language="$1" marker="$2"
    if [[ "${TERN_BINDINGS_FORCE:-0}" == 1 ]] || stale "$marker"; then
        rm -rf "${out:?}/$language"
        mkdir -p "$out/$language"
        # --no-format: the formatters (ktlint, swiftformat) are not installed here and
        # the output is not meant to be read.
        "$bindgen" generate --library "$lib" --language "$language" \
            --out-dir "$out/$language" --no-format >/dev/null
        touch "$marker"
    fi
}

generate kotlin "$out/kotlin/dev/tern/tern.kt"
generate swift "$out/swift/Tern.swift"
generate python "$out/python/tern.py"
ln -sf "$lib" "$out/python/libtern_ffi.so"

echo "cdylib:    $lib"
echo "staticlib: $target/debug/libtern_ffi.a"
echo "gateway:   $target/debug/tern-gateway"
echo "kotlin:    $out/kotlin/dev/tern/tern.kt"
echo "swift:     $out/swift/Tern.swift $out/swift/ternFFI.h $out/swift/ternFFI.modulemap"
echo "python:    $out/python/tern.py $out/python/libtern_ffi.so"
