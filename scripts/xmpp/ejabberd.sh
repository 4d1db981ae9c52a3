#!/usr/bin/env bash
# shellcheck shell=bash
# Throw-away ejabberd instances (Debian's ejabberd 23.01) for tern's XMPP tests: one per
# test run, in a directory of its own, on 127.0.0.1 only. The same shape as prosody.sh
# beside it. Source it from a test script, or run it:
#
#   source scripts/xmpp/ejabberd.sh
#   dir=$(mktemp -d /tmp/tern-xmpp.XXXXXX)
#   trap 'ejabberd_stop "$dir"; rm -rf "$dir"' EXIT
#   ejabberd_start "$dir"                     # exports EJABBERD_* (below)
#   ejabberd_adduser "$dir" alice@xmpp.test secret
#   ejabberd_ctl "$dir" registered_users xmpp.test   # any ejabberdctl command
#   ejabberd_restart "$dir"                   # same ports, secret, node, users and data
#
#   scripts/xmpp/ejabberd.sh install           # install ejabberd if missing (idempotent)
#   scripts/xmpp/ejabberd.sh start DIR         # prints `export EJABBERD_...=...` lines to eval
#   scripts/xmpp/ejabberd.sh env DIR           # the same lines for an instance already running
#   scripts/xmpp/ejabberd.sh adduser DIR user@host password
#   scripts/xmpp/ejabberd.sh ctl DIR COMMAND [ARG...]
#   scripts/xmpp/ejabberd.sh restart DIR
#   scripts/xmpp/ejabberd.sh stop DIR          # idempotent; DIR itself is left in place
#
# ejabberd_install: installs `ejabberd` from Debian with apt-get if missing, without
# letting the package start the system's own server (a temporary policy-rc.d, as
# prosody.sh does), then makes sure the system's ejabberd service is stopped and
# disabled so it never holds 5222/5269/5280. If this run's apt-get brought Erlang's
# epmd in, its systemd units (epmd.socket would listen on *:4369 at the next boot) are
# disabled too; an epmd that was there before is left alone. Needs root only when
# something is missing.
#
# How an instance runs. Debian's /usr/sbin/ejabberdctl is not used to start or stop
# instances: as root it always switches to the `ejabberd` user (hard-coded in the script,
# before any config file is read), which could not write DIR, and its epmd handling is
# machine-wide (`epmd -kill` when it sees no other node). Instead `erl` is run directly,
# as the calling user, with what ejabberdctl would have given it (ERL_LIBS, the config,
# log and Mnesia paths), and the ctl commands (`register`, ...) are run the way
# ejabberdctl runs them (`erl -hidden -s ejabberd_ctl -extra NODE COMMAND ...`):
#   * no epmd at all: the node's distribution listens on a fixed port of its own
#     (`-erl_epmd_port PORT -start_epmd false`, OTP 23+; the ctl client the same with
#     `-dist_listen false`), so there is no shared epmd to start, find or kill, and two
#     instances never meet;
#   * that port is bound to 127.0.0.1 (`-kernel inet_dist_use_interface {127,0,0,1}`);
#   * a unique node name (tern-<random>@127.0.0.1, kept in DIR for restarts: Mnesia
#     ties its data to it) and a random cookie in DIR/home/.erlang.cookie (HOME=DIR/home
#     for the server and the ctl client; never on a command line);
#   * everything in DIR: DIR/ejabberd.yml, DIR/spool (Mnesia), DIR/ejabberd.log and
#     DIR/error.log, DIR/ejabberd.out (the VM's console: the same log lines, without
#     their source locations, plus anything the VM says before ejabberd's logger runs),
#     DIR/erl_crash.dump.
# ejabberd.log is written through a delayed-write buffer (a line may land a fraction of
# a second, up to 2 s, after the event); ejabberd.out at once: a test that waits for a
# log line reads ejabberd.out.
#
# ejabberd_start DIR: on its first start in DIR, writes DIR/ejabberd.yml with three free
# ports (client, component, Erlang distribution; below the kernel's ephemeral range, so a
# restart gets them back), a random component secret and a random node name and cookie;
# later starts in the same DIR reuse them. Runs the VM in the background (`erl -noinput`,
# a child of the calling shell until it exits) and waits until ejabberd says it has
# started and both XMPP ports accept connections. The instance has:
#   host "xmpp.test"             c2s on 127.0.0.1:$EJABBERD_C2S_PORT, no TLS offered
#                                (starttls off), passwords stored in plain (so SCRAM-SHA-1
#                                and PLAIN both work over the unencrypted loopback stream)
#   component "example.com"      ejabberd_service (XEP-0114) on 127.0.0.1:$EJABBERD_COMPONENT_PORT
#   modules                      roster, disco, ping, offline, admin_extra
#   no s2s (no listener, `s2s_access: none`), no HTTP, no TLS, no in-band registration
# Exports:
#   EJABBERD_DIR               DIR (absolute)
#   EJABBERD_CONFIG            DIR/ejabberd.yml
#   EJABBERD_LOG               DIR/ejabberd.log
#   EJABBERD_OUT               DIR/ejabberd.out (the same lines, written at once)
#   EJABBERD_PID               the VM's process id (beam.smp)
#   EJABBERD_NODE              the Erlang node name
#   EJABBERD_DIST_PORT         its Erlang distribution port (127.0.0.1)
#   EJABBERD_C2S_PORT          client port (127.0.0.1)
#   EJABBERD_COMPONENT_PORT    XEP-0114 component port (127.0.0.1)
#   EJABBERD_COMPONENT_SECRET  the component's secret
#   EJABBERD_XMPP_HOST         the XMPP users' host (xmpp.test)
#   EJABBERD_COMPONENT_HOST    the component's domain (example.com)
#
# Settings read on the first start in a DIR (environment):
#   EJABBERD_XMPP_HOST, EJABBERD_COMPONENT_HOST, EJABBERD_COMPONENT_SECRET   as above
#   EJABBERD_LOG_LEVEL     debug (every stanza is logged, with the XML of each stream),
#                          info, notice, warning or error; default debug
#   EJABBERD_EXTRA_CONFIG  YAML lines added at the end of ejabberd.yml (top-level keys)
# and on every start: EJABBERD_START_TIMEOUT (seconds, default 30).
#
# ejabberd_stop DIR: SIGTERM (the VM stops ejabberd cleanly, about 2 to 3 s), then
# SIGKILL after 15 s; waits until the process is gone. Does nothing if no server of DIR
# runs (safe in an EXIT trap).

# Shared helpers (xmpp_apt_install, xmpp_alive, xmpp_free_ports, ...).
XMPP_SCRIPT=ejabberd.sh
# shellcheck source=scripts/xmpp/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

_ejabberd_say() { xmpp_say "$@"; }





_ejabberd_cmdline() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# The system's own ejabberd (Debian's service: user ejabberd, node ejabberd@localhost,
# Mnesia in /var/lib/ejabberd) must neither run nor start at boot.
_ejabberd_quiet_system_service() {
    local pid
    if command -v systemctl >/dev/null &&
        [[ "$(systemctl is-enabled ejabberd 2>/dev/null || true)" == enabled ]]; then
        # Also turns its SysV links into K links; works without a running systemd.
        systemctl disable ejabberd >/dev/null 2>&1 || true
    elif [[ -n "$(ls /etc/rc[2-5].d/S*ejabberd 2>/dev/null)" ]]; then
        update-rc.d ejabberd disable >/dev/null 2>&1 || true
    fi
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet ejabberd 2>/dev/null; then
        systemctl stop ejabberd || true
    fi
    # Without systemd (or started by hand with /etc/init.d/ejabberd): the VM whose Mnesia
    # is the system's. Its epmd, if it started one, is left alone: other Erlang programs
    # may use it, and no instance of this script does.
    for pid in $(pgrep -x beam.smp 2>/dev/null || true); do
        if _ejabberd_cmdline "$pid" | grep -q -e '-mnesia dir "/var/lib/ejabberd"' -e "-mnesia dir /var/lib/ejabberd "; then
            _ejabberd_say "stopping the system's ejabberd (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            xmpp_wait_gone "$pid" 150 || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# Where ejabberd's Erlang applications are (ERL_LIBS, as ejabberdctl sets it).
_ejabberd_libs() {
    local libs ebin
    libs=$(sed -n "s/^ERL_LIBS='\(.*\)'$/\1/p" /usr/sbin/ejabberdctl 2>/dev/null | head -n 1)
    if [[ -n "$libs" && -d "$libs" ]]; then
        printf '%s\n' "$libs"
        return 0
    fi
    for ebin in /usr/lib/*/ejabberd-*/ebin; do
        if [[ -d "$ebin" ]]; then
            dirname "$(dirname "$ebin")"
            return 0
        fi
    done
    return 1
}

ejabberd_install() {
    local had_epmd=0
    if [[ -x /usr/bin/epmd ]]; then had_epmd=1; fi
    if ! command -v erl >/dev/null || ! _ejabberd_libs >/dev/null ||
        ! dpkg-query -W -f='${Status}' ejabberd 2>/dev/null | grep -q 'ok installed'; then
        if [[ $EUID -ne 0 ]]; then
            _ejabberd_say "error: ejabberd missing, and installing it needs root (apt-get)"
            return 1
        fi
        _ejabberd_say "installing ejabberd from Debian (apt-get)"
        xmpp_apt_install ejabberd || return 1
        if [[ $had_epmd -eq 0 ]] && command -v systemctl >/dev/null; then
            systemctl disable epmd.socket epmd.service >/dev/null 2>&1 || true
        fi
    fi
    if [[ $EUID -eq 0 ]]; then _ejabberd_quiet_system_service; fi
    return 0
}


# The pid of DIR's VM if it runs (checked against its command line), else nothing.
_ejabberd_pid() {
    local dir=$1 pid node
    pid=$(cat "$dir/server.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    node=$(sed -n 's/^EJABBERD_NODE=//p' "$dir/instance.env" 2>/dev/null)
    [[ -n "$node" ]] || return 0
    if xmpp_alive "$pid" &&
        _ejabberd_cmdline "$pid" | grep -qF -- "-name $node " &&
        _ejabberd_cmdline "$pid" | grep -qF -- "$dir/spool"; then
        printf '%s\n' "$pid"
    fi
}



_ejabberd_write_config() {
    local dir=$1 c2s component dist secret xmpp_host component_host level node
    read -r c2s component dist < <(xmpp_free_ports 3) || return 1
    [[ -n "$dist" ]] || return 1
    secret=${EJABBERD_COMPONENT_SECRET:-$(xmpp_random 16)}
    xmpp_host=${EJABBERD_XMPP_HOST:-xmpp.test}
    component_host=${EJABBERD_COMPONENT_HOST:-example.com}
    level=${EJABBERD_LOG_LEVEL:-debug}
    node="tern-$(xmpp_random 6)@127.0.0.1"
    if [[ "$secret$xmpp_host$component_host$level" == *[\"\\\'$'\n'\ ]* ]]; then
        _ejabberd_say "error: quotes, backslashes, spaces or newlines in the hosts, secret or log level"
        return 1
    fi
    mkdir -p "$dir/spool" "$dir/home" || return 1
    chmod 700 "$dir/home"
    # Erlang refuses a cookie file that others can read.
    (umask 077 && xmpp_random 20 >"$dir/home/.erlang.cookie") || return 1
    chmod 400 "$dir/home/.erlang.cookie"
    cat >"$dir/instance.env" <<EOF
EJABBERD_C2S_PORT=$c2s
EJABBERD_COMPONENT_PORT=$component
EJABBERD_DIST_PORT=$dist
EJABBERD_COMPONENT_SECRET=$secret
EJABBERD_XMPP_HOST=$xmpp_host
EJABBERD_COMPONENT_HOST=$component_host
EJABBERD_NODE=$node
EOF
    cat >"$dir/ejabberd.yml" <<EOF
# Written by tern's scripts/xmpp/ejabberd.sh for one test run; nothing else uses it.
loglevel: $level
log_rotate_count: 0
hide_sensitive_log_data: false
language: en

hosts:
  - "$xmpp_host"

# Loopback only: every listener on 127.0.0.1; no s2s listener and no outgoing s2s, no
# HTTP, no TLS (starttls is not even offered).
listen:
  -
    port: $c2s
    ip: "127.0.0.1"
    module: ejabberd_c2s
    access: c2s
    starttls: false
    starttls_required: false
  -
    port: $component
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "$component_host":
        password: "$secret"

s2s_access: none

# Plain passwords: SCRAM (any hash) and PLAIN both work, over the unencrypted
# loopback stream.
auth_method: internal
auth_password_format: plain

acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"

modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
  mod_offline: {}
  mod_admin_extra: {}

${EJABBERD_EXTRA_CONFIG:-}
EOF
}

_ejabberd_export() {
    local dir=$1 pid=${2:-}
    # shellcheck disable=SC1091
    source "$dir/instance.env" || return 1
    export EJABBERD_C2S_PORT EJABBERD_COMPONENT_PORT EJABBERD_DIST_PORT EJABBERD_COMPONENT_SECRET
    export EJABBERD_XMPP_HOST EJABBERD_COMPONENT_HOST EJABBERD_NODE
    export EJABBERD_DIR="$dir" EJABBERD_CONFIG="$dir/ejabberd.yml" EJABBERD_LOG="$dir/ejabberd.log"
    export EJABBERD_OUT="$dir/ejabberd.out"
    if [[ -n "$pid" ]]; then export EJABBERD_PID="$pid"; fi
}


# The environment and options every erl of DIR's instance runs with.
_ejabberd_erl_env() {
    local dir=$1 libs
    libs=$(_ejabberd_libs) || { _ejabberd_say "error: ejabberd's Erlang libraries not found"; return 1; }
    printf '%s\n' "HOME=$dir/home" "ERL_LIBS=$libs" "ERL_CRASH_DUMP=$dir/erl_crash.dump" \
        "ERL_CRASH_DUMP_BYTES=0" "ERL_EPMD_ADDRESS=127.0.0.1"
}

ejabberd_start() {
    local dir pid i limit mark=0 port env_lines
    dir=$(xmpp_instance_dir "${1:-}") || return 1
    ejabberd_install || return 1
    if [[ ! -f "$dir/ejabberd.yml" || ! -f "$dir/instance.env" ]]; then
        _ejabberd_write_config "$dir" || { _ejabberd_say "error: cannot write the configuration"; return 1; }
    fi
    _ejabberd_export "$dir" || return 1
    pid=$(_ejabberd_pid "$dir")
    if [[ -n "$pid" ]]; then
        export EJABBERD_PID="$pid"
        return 0
    fi
    for port in "$EJABBERD_C2S_PORT" "$EJABBERD_COMPONENT_PORT" "$EJABBERD_DIST_PORT"; do
        if xmpp_port_open "$port"; then
            _ejabberd_say "error: port $port is already taken by another process"
            return 1
        fi
    done
    env_lines=$(_ejabberd_erl_env "$dir") || return 1
    # What this start logs: ejabberd.out from line mark + 1 (see above on ejabberd.log).
    if [[ -f "$dir/ejabberd.out" ]]; then mark=$(wc -l <"$dir/ejabberd.out"); fi
    # `erl` execs erlexec, which execs beam.smp: $! is the VM itself.
    (
        cd "$dir" || exit 1
        mapfile -t vars <<<"$env_lines"
        exec env "${vars[@]}" \
            EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" EJABBERD_LOG_PATH="$dir/ejabberd.log" \
            EJABBERD_PID_PATH="$dir/ejabberd.pid" \
            erl -name "$EJABBERD_NODE" \
            -erl_epmd_port "$EJABBERD_DIST_PORT" -start_epmd false \
            -kernel inet_dist_use_interface '{127,0,0,1}' \
            -mnesia dir "\"$dir/spool\"" \
            -s ejabberd -noinput
    ) </dev/null >>"$dir/ejabberd.out" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/server.pid"
    limit=$((${EJABBERD_START_TIMEOUT:-30} * 10))
    for ((i = 0; i < limit; i++)); do
        if ! xmpp_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            _ejabberd_say "error: ejabberd exited during start; its output:"
            tail -n +"$((mark + 1))" "$dir/ejabberd.out" 2>/dev/null | grep -v '^ ' | tail -n 30 >&2 || true
            rm -f "$dir/server.pid"
            return 1
        fi
        if tail -n +"$((mark + 1))" "$dir/ejabberd.out" 2>/dev/null | grep -q '\[critical\]'; then
            _ejabberd_say "error: ejabberd could not start cleanly:"
            tail -n +"$((mark + 1))" "$dir/ejabberd.out" | grep -e '\[critical\]' -e '\[error\]' >&2 || true
            ejabberd_stop "$dir"
            return 1
        fi
        if tail -n +"$((mark + 1))" "$dir/ejabberd.out" 2>/dev/null | grep -q ' is started in the node ' &&
            xmpp_port_open "$EJABBERD_C2S_PORT" && xmpp_port_open "$EJABBERD_COMPONENT_PORT"; then
            export EJABBERD_PID="$pid"
            return 0
        fi
        sleep 0.1
    done
    _ejabberd_say "error: ejabberd did not start and listen on $EJABBERD_C2S_PORT and $EJABBERD_COMPONENT_PORT within ${EJABBERD_START_TIMEOUT:-30} s"
    tail -n +"$((mark + 1))" "$dir/ejabberd.out" 2>/dev/null | grep -v '^ ' | tail -n 30 >&2 || true
    ejabberd_stop "$dir"
    return 1
}

ejabberd_stop() {
    local dir pid
    [[ -n "${1:-}" && -d "$1" ]] || return 0
    dir=$(cd "$1" && pwd) || return 0
    pid=$(_ejabberd_pid "$dir")
    if [[ -n "$pid" ]]; then
        # The VM takes SIGTERM as init:stop(): ejabberd stops its listeners, closes its
        # streams and Mnesia, then the VM exits (with erl_child_setup, its helper).
        kill -TERM "$pid" 2>/dev/null || true
        if ! xmpp_wait_gone "$pid" 150; then
            _ejabberd_say "ejabberd (pid $pid) did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            xmpp_wait_gone "$pid" 50 || true
        fi
    fi
    rm -f "$dir/server.pid"
    if [[ "${EJABBERD_DIR:-}" == "$dir" ]]; then unset EJABBERD_PID; fi
    return 0
}

ejabberd_restart() {
    ejabberd_stop "${1:-}" && ejabberd_start "${1:-}"
}

# ejabberd_ctl DIR COMMAND [ARG...]: an ejabberdctl command against DIR's running
# instance (a hidden Erlang node that connects to it on its distribution port, as
# ejabberdctl does); its output on stdout, its exit status (0 on success).
ejabberd_ctl() {
    local dir env_lines node port
    dir=$(xmpp_instance_dir "${1:-}") || return 1
    shift
    if [[ ! -f "$dir/instance.env" ]]; then
        _ejabberd_say "error: no instance in $dir (run ejabberd_start first)"
        return 1
    fi
    node=$(sed -n 's/^EJABBERD_NODE=//p' "$dir/instance.env")
    port=$(sed -n 's/^EJABBERD_DIST_PORT=//p' "$dir/instance.env")
    env_lines=$(_ejabberd_erl_env "$dir") || return 1
    (
        cd "$dir" || exit 1
        mapfile -t vars <<<"$env_lines"
        exec env "${vars[@]}" erl -name "ctl-$(xmpp_random 4)@127.0.0.1" \
            -erl_epmd_port "$port" -start_epmd false -dist_listen false \
            -hidden -noinput -s ejabberd_ctl -extra "$node" "$@"
    ) </dev/null
}

# ejabberd_adduser DIR user@host password
ejabberd_adduser() {
    local dir jid=${2:-} password=${3:-} out
    dir=$(xmpp_instance_dir "${1:-}") || return 1
    if [[ "$jid" != ?*@?* || -z "$password" ]]; then
        _ejabberd_say "usage: ejabberd_adduser DIR user@host password"
        return 1
    fi
    if ! out=$(ejabberd_ctl "$dir" register "${jid%%@*}" "${jid#*@}" "$password" 2>&1); then
        _ejabberd_say "error: ejabberdctl register $jid failed: $out"
        return 1
    fi
}

_ejabberd_print_env() {
    local name
    for name in EJABBERD_DIR EJABBERD_CONFIG EJABBERD_LOG EJABBERD_OUT EJABBERD_PID EJABBERD_NODE \
        EJABBERD_DIST_PORT EJABBERD_C2S_PORT EJABBERD_COMPONENT_PORT EJABBERD_COMPONENT_SECRET \
        EJABBERD_XMPP_HOST EJABBERD_COMPONENT_HOST; do
        printf 'export %s=%q\n' "$name" "${!name:-}"
    done
}

_ejabberd_main() {
    local cmd=${1:-} dir
    case "$cmd" in
        install) ejabberd_install ;;
        start | restart)
            [[ $# -eq 2 ]] || { _ejabberd_say "usage: $0 $cmd DIR"; return 2; }
            "ejabberd_$cmd" "$2" || return 1
            _ejabberd_print_env
            ;;
        env)
            [[ $# -eq 2 ]] || { _ejabberd_say "usage: $0 env DIR"; return 2; }
            dir=$(xmpp_instance_dir "$2") || return 1
            [[ -f "$dir/instance.env" ]] || { _ejabberd_say "error: no instance in $dir"; return 1; }
            _ejabberd_export "$dir" "$(_ejabberd_pid "$dir")"
            _ejabberd_print_env
            ;;
        stop)
            [[ $# -eq 2 ]] || { _ejabberd_say "usage: $0 stop DIR"; return 2; }
            ejabberd_stop "$2"
            ;;
        adduser)
            [[ $# -eq 4 ]] || { _ejabberd_say "usage: $0 adduser DIR user@host password"; return 2; }
            ejabberd_adduser "$2" "$3" "$4"
            ;;
        ctl)
            [[ $# -ge 3 ]] || { _ejabberd_say "usage: $0 ctl DIR COMMAND [ARG...]"; return 2; }
            shift
            ejabberd_ctl "$@"
            ;;
        *)
            _ejabberd_say "usage: $0 install | start DIR | restart DIR | env DIR | stop DIR | adduser DIR user@host password | ctl DIR COMMAND [ARG...]"
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    _ejabberd_main "$@"
    exit $?
fi
