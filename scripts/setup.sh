#!/usr/bin/env bash
# Installs what tern's tests need beyond a Rust toolchain, idempotently: running it
# twice changes nothing the second time. Called by scripts/test.sh; safe to run by hand.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

# The no_std build of tern-wire is checked for a bare-metal Cortex-M target.
NO_STD_TARGET=thumbv7em-none-eabihf
if ! rustup target list --installed 2>/dev/null | grep -qx "$NO_STD_TARGET"; then
  log "adding Rust target $NO_STD_TARGET (no_std check of tern-wire)"
  rustup target add "$NO_STD_TARGET"
fi

# rustfmt and clippy are part of the test command.
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    log "adding rustup component $component"
    rustup component add "$component"
  fi
done

# The XMPP federation tests (tests/tests/federation.rs) drive a real Prosody (Debian's
# package) with slixmpp clients (a venv cached outside the repository). Both scripts
# change nothing when everything is there, and need root only to install.
xmpp="$(cd "$(dirname "$0")" && pwd)/xmpp"
"$xmpp/prosody.sh" install
"$xmpp/ejabberd.sh" install
"$xmpp/slixmpp.sh" >/dev/null

log "ready"
