# shellcheck shell=bash
# A throw-away tern gateway for the bindings' tests. Meant to be sourced:
#
#   source scripts/bindings/gateway.sh
#   tern_gateway_start            # needs target/debug/tern-gateway (scripts/bindings/build.sh)
#   trap tern_gateway_stop EXIT
#
# tern_gateway_start starts `tern-gateway serve` on 127.0.0.1 with a free port (the
# gateway binds port 0 and prints the port it got) and a fresh temporary data directory,
# serving the domain example.com; adds alice@example.com and bob@example.com
# (`tern-gateway user add`); waits until it listens; and exports
#
#   TERN_GATEWAY       host:port of the gateway (127.0.0.1:PORT)
#   TERN_CA            its self-signed certificate (cert.pem in the data directory),
#                      valid for example.com, localhost and 127.0.0.1
#   TERN_ALICE_TOKEN   alice@example.com's access token
#   TERN_BOB_TOKEN     bob@example.com's access token
#   TERN_DATA_DIR      the data directory (with gateway.toml and the log, gateway.log)
#   TERN_GATEWAY_PID   the gateway's process id
#
# tern_gateway_stop stops it (SIGTERM, then SIGKILL after 5 s) and deletes the data
# directory unless TERN_KEEP_DATA=1; it does nothing when no gateway was started, so it
# is safe in an EXIT trap. Environment: TERN_GATEWAY_BIN (default
# $CARGO_TARGET_DIR/debug/tern-gateway, or target/debug/tern-gateway of this checkout),
# RUST_LOG for the gateway's log (default warn).

_tern_gateway_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

tern_gateway_start() {
    local target="${CARGO_TARGET_DIR:-$_tern_gateway_root/target}"
    case "$target" in /*) ;; *) target="$_tern_gateway_root/$target" ;; esac
    local bin="${TERN_GATEWAY_BIN:-$target/debug/tern-gateway}"
    if [[ ! -x "$bin" ]]; then
        echo "tern_gateway_start: no gateway at $bin (run scripts/bindings/build.sh)" >&2
        return 1
    fi

    TERN_DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tern-gateway.XXXXXX")"
    export TERN_DATA_DIR
    local config="$TERN_DATA_DIR/gateway.toml" log="$TERN_DATA_DIR/gateway.log"
    local out="$TERN_DATA_DIR/stdout"
    cat >"$config" <<EOF
listen = "127.0.0.1:0"
data_dir = "$TERN_DATA_DIR"
domains = ["example.com"]
EOF

    # The user commands open the database directly (created on first use).
    if ! TERN_ALICE_TOKEN="$("$bin" user add alice@example.com --config "$config" 2>>"$log")" ||
        ! TERN_BOB_TOKEN="$("$bin" user add bob@example.com --config "$config" 2>>"$log")"; then
        echo "tern_gateway_start: cannot add the users:" >&2
        cat "$log" >&2
        return 1
    fi
    export TERN_ALICE_TOKEN TERN_BOB_TOKEN

    RUST_LOG="${RUST_LOG:-warn}" "$bin" serve --config "$config" >"$out" 2>>"$log" &
    TERN_GATEWAY_PID=$!
    export TERN_GATEWAY_PID

    # Once listening it prints one line on stdout:
    #   tern-gateway listening on 127.0.0.1:PORT for example.com (cert: DIR/cert.pem)
    local addr="" i
    for ((i = 0; i < 300; i++)); do
        addr="$(sed -n 's/^tern-gateway listening on \([^ ]*\) for .*/\1/p' "$out" 2>/dev/null || true)"
        [[ -n "$addr" ]] && break
        if ! kill -0 "$TERN_GATEWAY_PID" 2>/dev/null; then
            echo "tern_gateway_start: the gateway exited:" >&2
            cat "$log" >&2
            unset TERN_GATEWAY_PID
            return 1
        fi
        sleep 0.1
    done
    if [[ -z "$addr" ]]; then
        echo "tern_gateway_start: the gateway did not listen within 30 s:" >&2
        cat "$log" >&2
        tern_gateway_stop
        return 1
    fi
    export TERN_GATEWAY="$addr"
    export TERN_CA="$TERN_DATA_DIR/cert.pem"
    echo "gateway: $TERN_GATEWAY (pid $TERN_GATEWAY_PID, data $TERN_DATA_DIR)"
}

tern_gateway_stop() {
    if [[ -n "${TERN_GATEWAY_PID:-}" ]]; then
        kill -TERM "$TERN_GATEWAY_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$TERN_GATEWAY_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$TERN_GATEWAY_PID" 2>/dev/null || true
        wait "$TERN_GATEWAY_PID" 2>/dev/null || true
        unset TERN_GATEWAY_PID
    fi
    if [[ -n "${TERN_DATA_DIR:-}" && "${TERN_KEEP_DATA:-0}" != 1 ]]; then
        rm -rf "$TERN_DATA_DIR"
        unset TERN_DATA_DIR
    fi
}
