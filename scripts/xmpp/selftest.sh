#!/usr/bin/env bash
# Smoke test of tern's XMPP test infrastructure: installs what it needs (prosody from
# Debian, a slixmpp venv), starts a throw-away Prosody on loopback
# (scripts/xmpp/prosody.sh), adds alice@xmpp.test, and runs scripts/xmpp/selftest.py: a
# slixmpp component for example.com and a slixmpp client as alice exchange messages and
# a subscription through the server, the component goes away and comes back, the server
# restarts mid-way. Stops everything and deletes the instance directory at the end (keep
# it with TERN_KEEP_DATA=1). Exits 0 only if every check held.
#
# Environment: XMPP_SELFTEST_TIMEOUT (seconds for the whole run, default 300; the first
# run installs prosody and the venv, about 15 s), XMPP_SELFTEST_VERBOSE=1 prints every
# stanza received, XMPP_SELFTEST_DEBUG=1 slixmpp's debug log.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [[ -z "${_XMPP_SELFTEST_TIMED:-}" ]]; then
    export _XMPP_SELFTEST_TIMED=1
    status=0
    timeout -k 10 "${XMPP_SELFTEST_TIMEOUT:-300}" "$0" "$@" || status=$?
    if [[ $status -eq 124 || $status -eq 137 ]]; then
        echo "xmpp-selftest: timed out after ${XMPP_SELFTEST_TIMEOUT:-300} s" >&2
    fi
    exit "$status"
fi

say() { printf 'xmpp-selftest: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f s", b - a }'; }

# shellcheck source=scripts/xmpp/prosody.sh
source "$here/prosody.sh"

t=$(now)
prosody_install
say "prosody installed and the system service quiet: $(elapsed "$t")"
prosody_version=$(prosodyctl about 2>/dev/null | sed -n 's/^Prosody \([0-9].*\)/\1/p' | head -n 1)

t=$(now)
PY=$("$here/slixmpp.sh")
say "slixmpp venv ready ($("$PY" -c 'import slixmpp; print(slixmpp.__version__)')): $(elapsed "$t")"

dir=$(mktemp -d "${TMPDIR:-/tmp}/tern-xmpp-selftest.XXXXXX")
cleanup() {
    local status=$?
    prosody_stop "$dir"
    if [[ $status -ne 0 ]]; then
        say "failed; the last lines of the server's log ($dir/prosody.log):"
        grep -v $'^\t' "$dir/prosody.log" 2>/dev/null | tail -n 40 >&2 || true
    fi
    if [[ "${TERN_KEEP_DATA:-0}" == 1 ]]; then
        say "kept $dir"
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

t=$(now)
prosody_start "$dir"
say "Prosody $prosody_version started (pid $PROSODY_PID; c2s 127.0.0.1:$PROSODY_C2S_PORT, component 127.0.0.1:$PROSODY_COMPONENT_PORT): $(elapsed "$t")"

# Nothing of the instance listens beyond loopback.
listeners=$(ss -Hltnp 2>/dev/null | grep "pid=$PROSODY_PID," | awk '{ print $4 }' | sort | tr '\n' ' ')
say "its listeners: $listeners"
if grep -v -q '^127\.0\.0\.1:' <<<"$(tr ' ' '\n' <<<"$listeners" | sed '/^$/d')"; then
    say "error: a listener outside 127.0.0.1: $listeners"
    exit 1
fi

t=$(now)
export XMPP_ALICE_PASSWORD="alice-$RANDOM-pw"
prosody_adduser "$dir" alice@xmpp.test "$XMPP_ALICE_PASSWORD"
say "alice@xmpp.test added (prosodyctl register): $(elapsed "$t")"

# The checks print their own timings; their summary line is the last line of the run.
PROSODY_SH="$here/prosody.sh" "$PY" "$here/selftest.py"
