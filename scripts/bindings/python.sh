#!/usr/bin/env bash
# Tests tern's Python bindings end to end: builds the library and generates tern.py
# (scripts/bindings/build.sh), starts a throw-away gateway (scripts/bindings/gateway.sh)
# and runs bindings/python/test_tern.py against it under a 120 s timeout. Exits with the
# test's status. Needs python3 (3.8 or later; no packages beyond the standard library).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if ! command -v python3 >/dev/null; then
    echo "python.sh: python3 is required" >&2
    exit 1
fi

scripts/bindings/build.sh

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

# shellcheck source=scripts/bindings/gateway.sh
source scripts/bindings/gateway.sh
trap tern_gateway_stop EXIT
tern_gateway_start

# tern.py loads libtern_ffi.so from its own directory (build.sh links it there).
status=0
PYTHONPATH="$target/bindings/python${PYTHONPATH:+:$PYTHONPATH}" \
    timeout 120 python3 bindings/python/test_tern.py || status=$?
if [[ $status -ne 0 ]]; then
    [[ $status -eq 124 ]] && echo "python.sh: the test timed out" >&2
    echo "python.sh: failed (status $status); the gateway's log:" >&2
    tail -n 50 "$TERN_DATA_DIR/gateway.log" >&2 || true
fi
exit "$status"
