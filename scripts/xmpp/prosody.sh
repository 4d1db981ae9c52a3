#!/usr/bin/env bash
# shellcheck shell=bash
# Throw-away Prosody instances (Debian's prosody 0.12) for tern's XMPP tests: one per
# test run, in a directory of its own, on 127.0.0.1 only. Source it from a test script,
# or run it:
#
#   source scripts/xmpp/prosody.sh
#   dir=$(mktemp -d /tmp/tern-xmpp.XXXXXX)
#   trap 'prosody_stop "$dir"; rm -rf "$dir"' EXIT
#   prosody_start "$dir"                     # exports PROSODY_* (below)
#   prosody_adduser "$dir" alice@xmpp.test secret
#   prosody_restart "$dir"                   # same ports, secret, users and data
#
#   scripts/xmpp/prosody.sh install           # install prosody if missing (idempotent)
#   scripts/xmpp/prosody.sh start DIR         # prints `export PROSODY_...=...` lines to eval
#   scripts/xmpp/prosody.sh env DIR           # the same lines for an instance already running
#   scripts/xmpp/prosody.sh adduser DIR user@host password
#   scripts/xmpp/prosody.sh restart DIR
#   scripts/xmpp/prosody.sh stop DIR          # idempotent; DIR itself is left in place
#
# prosody_install: installs `prosody` (and `lua-unbound`, without which every prosody and
# prosodyctl run prints a warning banner) from Debian with apt-get if missing, without
# letting the package start the system's own server (a temporary policy-rc.d), then
# makes sure the system's prosody service is stopped and disabled so it never holds
# 5222/5269/5347. Needs root only when something is missing.
#
# prosody_start DIR: on its first start in DIR, writes DIR/prosody.cfg.lua with two free
# ports (below the kernel's ephemeral range, so a restart gets them back), a random
# component secret, the data in DIR/data, the log in DIR/prosody.log (debug level) and
# the pid in DIR/prosody.pid; later starts in the same DIR reuse that configuration.
# Runs `prosody -F` as a background child of the calling shell (its process group), and
# waits until both ports accept connections. The instance has:
#   VirtualHost "xmpp.test"      c2s on 127.0.0.1:$PROSODY_C2S_PORT, accounts in plain
#                                text (internal_plain), no TLS offered, SCRAM-SHA-1 or
#                                PLAIN over the unencrypted loopback connection
#   Component "example.com"      XEP-0114 on 127.0.0.1:$PROSODY_COMPONENT_PORT
#   no s2s, no HTTP, no TLS, no in-band registration
# Prosody refuses to run as root unless told to: as root the config sets
# `run_as_root = true`, so prosody and prosodyctl both run as the caller and everything
# in DIR belongs to the caller (nothing under /etc/prosody or /var/lib/prosody is used).
# Exports:
#   PROSODY_DIR               DIR (absolute)
#   PROSODY_CONFIG            DIR/prosody.cfg.lua
#   PROSODY_LOG               DIR/prosody.log
#   PROSODY_PID               the server's process id
#   PROSODY_C2S_PORT          client port (127.0.0.1)
#   PROSODY_COMPONENT_PORT    XEP-0114 component port (127.0.0.1)
#   PROSODY_COMPONENT_SECRET  the component's secret
#   PROSODY_XMPP_HOST         the VirtualHost (xmpp.test)
#   PROSODY_COMPONENT_HOST    the component's domain (example.com)
#
# Settings read on the first start in a DIR (environment):
#   PROSODY_XMPP_HOST, PROSODY_COMPONENT_HOST, PROSODY_COMPONENT_SECRET   as above
#   PROSODY_LOG_LEVEL     debug (every stanza is logged), info, warn or error
#   PROSODY_EXTRA_CONFIG  Lua lines added to the global section (e.g.
#                         'component_conflict_resolve = "kick_old"')
# and on every start: PROSODY_START_TIMEOUT (seconds, default 30).
#
# prosody_stop DIR: SIGTERM, then SIGKILL after 10 s; waits until the process is gone.
# Does nothing if no server of DIR runs (safe in an EXIT trap).

# Shared helpers (xmpp_apt_install, xmpp_alive, xmpp_free_ports, ...).
XMPP_SCRIPT=prosody.sh
# shellcheck source=scripts/xmpp/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

_prosody_say() { xmpp_say "$@"; }



# The system's own prosody (Debian's service, config /etc/prosody) must neither run nor
# start at boot: it would hold the standard ports and is no part of any test.
_prosody_quiet_system_service() {
    local pid
    if command -v systemctl >/dev/null &&
        [[ "$(systemctl is-enabled prosody 2>/dev/null || true)" == enabled ]]; then
        # Also turns its SysV links into K links; works without a running systemd.
        systemctl disable prosody >/dev/null 2>&1 || true
    elif [[ -n "$(ls /etc/rc[2-5].d/S*prosody 2>/dev/null)" ]]; then
        update-rc.d prosody disable >/dev/null 2>&1 || true
    fi
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet prosody 2>/dev/null; then
        systemctl stop prosody || true
    fi
    # Without systemd: Debian's init script cannot stop it (it looks for a process named
    # lua5.2, prosody runs as lua5.4), so stop the pid of the system's own pid file.
    pid=$(cat /run/prosody/prosody.pid 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && xmpp_alive "$pid" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/usr/bin/prosody' &&
        ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--config'; then
        _prosody_say "stopping the system's prosody service (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        xmpp_wait_gone "$pid" 100 || kill -KILL "$pid" 2>/dev/null || true
    fi
}

prosody_install() {
    local missing=()
    command -v prosody >/dev/null && command -v prosodyctl >/dev/null || missing+=(prosody)
    [[ -e /usr/lib/x86_64-linux-gnu/lua/5.4/lunbound.so ]] ||
        dpkg-query -W -f='${Status}' lua-unbound 2>/dev/null | grep -q 'ok installed' ||
        missing+=(lua-unbound)
    if ((${#missing[@]})); then
        if [[ $EUID -ne 0 ]]; then
            _prosody_say "error: ${missing[*]} missing, and installing needs root (apt-get)"
            return 1
        fi
        _prosody_say "installing ${missing[*]} from Debian (apt-get)"
        xmpp_apt_install "${missing[@]}" || return 1
    fi
    if [[ $EUID -eq 0 ]]; then _prosody_quiet_system_service; fi
    return 0
}




# The pid of DIR's server if it runs (checked against its command line), else nothing.
_prosody_pid() {
    local dir=$1 pid
    pid=$(cat "$dir/server.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    if xmpp_alive "$pid" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config $dir/prosody.cfg.lua"; then
        printf '%s\n' "$pid"
    fi
}


_prosody_write_config() {
    local dir=$1 c2s component secret xmpp_host component_host level user_opt=""
    read -r c2s component < <(xmpp_free_ports 2) || return 1
    [[ -n "$component" ]] || return 1
    secret=${PROSODY_COMPONENT_SECRET:-$(xmpp_random 16)}
    xmpp_host=${PROSODY_XMPP_HOST:-xmpp.test}
    component_host=${PROSODY_COMPONENT_HOST:-example.com}
    level=${PROSODY_LOG_LEVEL:-debug}
    if [[ "$secret$xmpp_host$component_host$level" == *[\"\\$'\n']* ]]; then
        _prosody_say "error: quotes, backslashes or newlines in the hosts, secret or log level"
        return 1
    fi
    if [[ $EUID -eq 0 ]]; then
        # prosody itself refuses root (and prosody 0.12.3 then hangs instead of exiting);
        # prosodyctl would switch to the prosody user, who cannot write DIR.
        user_opt='run_as_root = true'
    fi
    mkdir -p "$dir/data" "$dir/certs"
    cat >"$dir/instance.env" <<EOF
PROSODY_C2S_PORT=$c2s
PROSODY_COMPONENT_PORT=$component
PROSODY_COMPONENT_SECRET=$secret
PROSODY_XMPP_HOST=$xmpp_host
PROSODY_COMPONENT_HOST=$component_host
EOF
    cat >"$dir/prosody.cfg.lua" <<EOF
-- Written by tern's scripts/xmpp/prosody.sh for one test run; nothing else uses it.
$user_opt
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
certificates = "$dir/certs"
log = { $level = "$dir/prosody.log" }

-- Loopback only: every listener on 127.0.0.1, no IPv6, no s2s, no HTTP, no direct TLS.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_interfaces = { "127.0.0.1" }
component_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s }
component_ports = { $component }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }

modules_enabled = { "roster", "saslauth", "disco", "ping" }
modules_disabled = { "s2s", "s2s_auth_certs" }

authentication = "internal_plain"
storage = "internal"
allow_registration = false
-- No TLS at all (mod_tls is not loaded): fine for loopback tests.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

${PROSODY_EXTRA_CONFIG:-}

VirtualHost "$xmpp_host"

Component "$component_host"
    component_secret = "$secret"
EOF
}

_prosody_export() {
    local dir=$1 pid=${2:-}
    # shellcheck disable=SC1091
    source "$dir/instance.env" || return 1
    export PROSODY_C2S_PORT PROSODY_COMPONENT_PORT PROSODY_COMPONENT_SECRET
    export PROSODY_XMPP_HOST PROSODY_COMPONENT_HOST
    export PROSODY_DIR="$dir" PROSODY_CONFIG="$dir/prosody.cfg.lua" PROSODY_LOG="$dir/prosody.log"
    if [[ -n "$pid" ]]; then export PROSODY_PID="$pid"; fi
}


prosody_start() {
    local dir pid i limit
    dir=$(xmpp_instance_dir "${1:-}") || return 1
    prosody_install || return 1
    if [[ ! -f "$dir/prosody.cfg.lua" || ! -f "$dir/instance.env" ]]; then
        _prosody_write_config "$dir" || { _prosody_say "error: cannot write the configuration"; return 1; }
    fi
    _prosody_export "$dir" || return 1
    pid=$(_prosody_pid "$dir")
    if [[ -n "$pid" ]]; then
        export PROSODY_PID="$pid"
        return 0
    fi
    for port in "$PROSODY_C2S_PORT" "$PROSODY_COMPONENT_PORT"; do
        if xmpp_port_open "$port"; then
            _prosody_say "error: port $port is already taken by another process"
            return 1
        fi
    done
    local mark
    mark=0
    if [[ -f "$dir/prosody.log" ]]; then mark=$(wc -l <"$dir/prosody.log"); fi
    prosody --config "$dir/prosody.cfg.lua" -F </dev/null >>"$dir/prosody.out" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/server.pid"
    limit=$((${PROSODY_START_TIMEOUT:-30} * 10))
    for ((i = 0; i < limit; i++)); do
        if ! xmpp_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            _prosody_say "error: prosody exited during start; its output and log:"
            tail -n 20 "$dir/prosody.out" >&2 2>/dev/null || true
            tail -n +"$((mark + 1))" "$dir/prosody.log" 2>/dev/null | grep -v $'^\t' | tail -n 30 >&2 || true
            rm -f "$dir/server.pid"
            return 1
        fi
        if tail -n +"$((mark + 1))" "$dir/prosody.log" 2>/dev/null |
            grep -q -e 'Failed to open server port' -e 'Refusing to run as root' -e 'Error initializing module'; then
            _prosody_say "error: prosody could not start cleanly:"
            tail -n +"$((mark + 1))" "$dir/prosody.log" | grep -v $'^\t' | grep -e error -e warn >&2 || true
            prosody_stop "$dir"
            return 1
        fi
        if xmpp_port_open "$PROSODY_C2S_PORT" && xmpp_port_open "$PROSODY_COMPONENT_PORT"; then
            export PROSODY_PID="$pid"
            return 0
        fi
        sleep 0.1
    done
    _prosody_say "error: prosody did not listen on $PROSODY_C2S_PORT and $PROSODY_COMPONENT_PORT within ${PROSODY_START_TIMEOUT:-30} s"
    tail -n 30 "$dir/prosody.log" >&2 2>/dev/null || true
    prosody_stop "$dir"
    return 1
}

prosody_stop() {
    local dir pid
    [[ -n "${1:-}" && -d "$1" ]] || return 0
    dir=$(cd "$1" && pwd) || return 0
    pid=$(_prosody_pid "$dir")
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! xmpp_wait_gone "$pid" 100; then
            _prosody_say "prosody (pid $pid) did not stop within 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            xmpp_wait_gone "$pid" 50 || true
        fi
    fi
    rm -f "$dir/server.pid"
    if [[ "${PROSODY_DIR:-}" == "$dir" ]]; then unset PROSODY_PID; fi
    return 0
}

prosody_restart() {
    prosody_stop "${1:-}" && prosody_start "${1:-}"
}

# prosody_adduser DIR user@host password
prosody_adduser() {
    local dir jid=${2:-} password=${3:-} out
    dir=$(xmpp_instance_dir "${1:-}") || return 1
    if [[ ! -f "$dir/prosody.cfg.lua" ]]; then
        _prosody_say "error: no instance in $dir (run prosody_start first)"
        return 1
    fi
    if [[ "$jid" != ?*@?* || -z "$password" ]]; then
        _prosody_say "usage: prosody_adduser DIR user@host password"
        return 1
    fi
    if ! out=$(prosodyctl --config "$dir/prosody.cfg.lua" register "${jid%%@*}" "${jid#*@}" "$password" 2>&1); then
        _prosody_say "error: prosodyctl register $jid failed: $out"
        return 1
    fi
}

_prosody_print_env() {
    local name
    for name in PROSODY_DIR PROSODY_CONFIG PROSODY_LOG PROSODY_PID PROSODY_C2S_PORT \
        PROSODY_COMPONENT_PORT PROSODY_COMPONENT_SECRET PROSODY_XMPP_HOST PROSODY_COMPONENT_HOST; do
        printf 'export %s=%q\n' "$name" "${!name:-}"
    done
}

_prosody_main() {
    local cmd=${1:-} dir
    case "$cmd" in
        install) prosody_install ;;
        start | restart)
            [[ $# -eq 2 ]] || { _prosody_say "usage: $0 $cmd DIR"; return 2; }
            "prosody_$cmd" "$2" || return 1
            _prosody_print_env
            ;;
        env)
            [[ $# -eq 2 ]] || { _prosody_say "usage: $0 env DIR"; return 2; }
            dir=$(xmpp_instance_dir "$2") || return 1
            [[ -f "$dir/instance.env" ]] || { _prosody_say "error: no instance in $dir"; return 1; }
            _prosody_export "$dir" "$(_prosody_pid "$dir")"
            _prosody_print_env
            ;;
        stop)
            [[ $# -eq 2 ]] || { _prosody_say "usage: $0 stop DIR"; return 2; }
            prosody_stop "$2"
            ;;
        adduser)
            [[ $# -eq 4 ]] || { _prosody_say "usage: $0 adduser DIR user@host password"; return 2; }
            prosody_adduser "$2" "$3" "$4"
            ;;
        *)
            _prosody_say "usage: $0 install | start DIR | restart DIR | env DIR | stop DIR | adduser DIR user@host password"
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    _prosody_main "$@"
    exit $?
fi
