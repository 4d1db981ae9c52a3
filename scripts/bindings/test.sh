#!/usr/bin/env bash
# The SDKs' tests, each against a real gateway on loopback: Python, Kotlin on the JVM,
# Swift in a Debian trixie chroot; then the type-check of the client and the bindings for
# the Android and iOS targets. Each step installs what it needs itself (idempotently)
# and fails the run if its test fails. scripts/test.sh calls this after the Rust tests.
#
#   scripts/bindings/test.sh [python] [kotlin] [swift] [mobile]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/../.."

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=(python kotlin swift mobile)
fi

declare -A script=(
    [python]=scripts/bindings/python.sh
    [kotlin]=scripts/bindings/kotlin.sh
    [swift]=scripts/bindings/swift.sh
    [mobile]=scripts/bindings/mobile-check.sh
)

failed=()
for step in "${steps[@]}"; do
    if [ -z "${script[$step]:-}" ]; then
        echo "bindings: unknown step '$step' (python, kotlin, swift, mobile)" >&2
        exit 2
    fi
    echo "== bindings: $step"
    started=$SECONDS
    if bash "${script[$step]}"; then
        echo "bindings: $step passed in $((SECONDS - started)) s"
    else
        echo "bindings: $step FAILED after $((SECONDS - started)) s"
        failed+=("$step")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "bindings: failed: ${failed[*]}"
    exit 1
fi
echo "bindings: ${steps[*]}: all passed"
