# Shared by the SDK scripts in scripts/bindings and by scripts/xmpp/slixmpp.sh: `source`
# it after setting SCRIPT_NAME.
# Messages go to stderr prefixed with the script's name; `elapsed START` prints the
# seconds since `now` returned START; `quietly CMD...` sends CMD's output to $LOG and,
# if CMD fails, prints the log's tail and exits.
# shellcheck shell=bash

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

quietly() {
  if ! "$@" >>"$LOG" 2>&1; then
    say "failed: $*"
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}
