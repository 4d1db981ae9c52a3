#!/usr/bin/env bash
# shellcheck shell=bash
# Helpers shared by the throw-away XMPP servers of tern's tests (prosody.sh,
# ejabberd.sh): sourced, never run. Each caller passes its own name for messages
# (XMPP_SCRIPT) and keeps everything particular to its server.
#
#   xmpp_say TEXT               a line on stderr, prefixed with "$XMPP_SCRIPT: "
#   xmpp_apt_install PKG...     apt-get install from Debian without starting services
#                               (a temporary policy-rc.d), updating the lists only when
#                               the install from the existing ones fails
#   xmpp_alive PID              true if PID is a live process (not a zombie)
#   xmpp_wait_gone PID N        waits up to N tenths of a second for PID to end
#   xmpp_instance_dir DIR       creates DIR, prints its absolute path (refused if it has
#                               quotes, backslashes or newlines)
#   xmpp_free_ports N           N distinct free TCP ports on 127.0.0.1, below the
#                               ephemeral range (a restarted server gets them back)
#   xmpp_port_open PORT         true if 127.0.0.1:PORT accepts a connection
#   xmpp_random NBYTES          NBYTES random bytes in hex

xmpp_say() { printf '%s: %s\n' "${XMPP_SCRIPT:-xmpp}" "$*" >&2; }

_XMPP_APT_UPDATED=

xmpp_apt_install() {
    local created_policy=0 status=0 log apt
    log=$(mktemp "${TMPDIR:-/tmp}/tern-xmpp-apt.XXXXXX")
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    # Debian starts a package's service on install unless policy-rc.d says no (101).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# tern scripts/xmpp/%s: no service starts during its apt-get\nexit 101\n' \
            "${XMPP_SCRIPT:-common.sh}" >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    {
        # From the existing package lists first; `apt-get update` only if that fails
        # (lists missing or stale).
        "${apt[@]}" install -y --no-install-recommends "$@" ||
            {
                if [[ -z "$_XMPP_APT_UPDATED" ]]; then
                    "${apt[@]}" update && _XMPP_APT_UPDATED=1
                fi &&
                    "${apt[@]}" install -y --no-install-recommends "$@"
            }
    } >"$log" 2>&1 || status=$?
    if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ $status -ne 0 ]]; then
        xmpp_say "apt-get install $* failed:"
        tail -n 30 "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

xmpp_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed -n 's/^[0-9]* (.*) \([A-Z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null || true)
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Reaps PID too if it is the caller's child.
xmpp_wait_gone() {
    local pid=$1 n=$2 i
    for ((i = 0; i < n; i++)); do
        if ! xmpp_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
    return 1
}

xmpp_instance_dir() {
    local dir=${1:-}
    if [[ -z "$dir" ]]; then
        xmpp_say "error: no instance directory given"
        return 1
    fi
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    if [[ "$dir" == *[\"\\\'$'\n']* ]]; then
        xmpp_say "error: the directory's path must not contain quotes, backslashes or newlines: $dir"
        return 1
    fi
    printf '%s\n' "$dir"
}

xmpp_free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
want = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
low = max(low, 12000)
ports = []
for _ in range(500):
    port = random.randrange(10000, low)
    if port in ports:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        ports.append(port)
    except OSError:
        pass
    finally:
        s.close()
    if len(ports) == want:
        break
if len(ports) != want:
    raise SystemExit("no free ports")
print(*ports)
PY
}

xmpp_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

xmpp_random() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}
