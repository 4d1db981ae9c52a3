#!/usr/bin/env bash
# A Python virtual environment with slixmpp (the XMPP library tern's XMPP tests drive
# real XMPP clients and components with), cached outside the repository and created only
# if missing. Prints the venv's python on stdout, nothing else:
#
#   PY=$(scripts/xmpp/slixmpp.sh)
#   "$PY" my_xmpp_test.py
#
# The venv is built from Debian's /usr/bin/python3 (3.11 on bookworm; slixmpp 1.17
# needs 3.11 or later), installing python3-venv from Debian if its ensurepip is missing,
# and holds exactly the pinned versions below (binary wheels from PyPI; no compiler
# needed). A marker file records what was installed; a different pin list or base
# interpreter rebuilds the venv. Concurrent runs wait on a lock.
#
# Environment:
#   TERN_XMPP_VENV   where the venv lives (default /var/cache/tern/xmpp-venv)
#   TERN_XMPP_PYTHON the base interpreter (default /usr/bin/python3, else python3)
#
# Progress and errors go to stderr; pip's output to "$TERN_XMPP_VENV.log", whose tail is
# printed if a step fails.
set -euo pipefail

# Verified together on Python 3.11 (Debian bookworm), see scripts/xmpp/selftest.sh.
PINS=(
    slixmpp==1.17.0
    aiodns==4.0.4
    pycares==5.2.1
    cffi==2.1.1
    pycparser==3.12
    pyasn1==0.6.5
    pyasn1-modules==0.4.2
)

VENV=${TERN_XMPP_VENV:-/var/cache/tern/xmpp-venv}
VENV=${VENV%/}
LOG="$VENV.log"
LOCK="$VENV.lock"
MARKER="$VENV/.tern-xmpp-ready"

# say, die, now, elapsed, quietly (output to $LOG): shared with the SDK scripts.
SCRIPT_NAME=slixmpp.sh
# shellcheck source=scripts/bindings/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../bindings/common.sh"

base=${TERN_XMPP_PYTHON:-}
if [[ -z "$base" ]]; then
    if [[ -x /usr/bin/python3 ]]; then base=/usr/bin/python3; else base=$(command -v python3 || true); fi
fi
[[ -n "$base" && -x "$base" ]] || die "no python3 found"
base_version=$("$base" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
STAMP="tern-xmpp-venv v1 python=$(readlink -f "$base") $base_version ${PINS[*]}"

ready() {
    [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" && -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c 'import slixmpp' 2>/dev/null
}

if ready; then
    echo "$VENV/bin/python"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$LOCK"
flock -w 600 9 || die "could not take $LOCK within 600 s"
if ready; then # built by another run while this one waited
    echo "$VENV/bin/python"
    exit 0
fi

start=$(now)
: >"$LOG"
if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
    [[ $EUID -eq 0 ]] || die "$base has no venv/ensurepip module, and installing python3-venv needs root"
    say "installing python3-venv from Debian (apt-get)"
    quietly env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update
    quietly env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
        --no-install-recommends python3-venv
fi
say "creating $VENV with ${PINS[0]} (Python $base_version)"
rm -rf "$VENV"
quietly "$base" -m venv "$VENV"
quietly env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --no-input \
    --only-binary=:all: "${PINS[@]}"
quietly "$VENV/bin/python" -c 'import slixmpp, slixmpp.componentxmpp, aiodns; print(slixmpp.__version__)'
echo "$STAMP" >"$MARKER"
say "venv ready in $(elapsed "$start")"
echo "$VENV/bin/python"
