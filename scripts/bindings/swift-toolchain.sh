#!/usr/bin/env bash
# A Swift toolchain for testing tern's Swift bindings on a Debian 12 (bookworm) host.
#
# Bookworm ships no Swift compiler; Debian 13 (trixie) ships `swiftlang` (Swift 6.0.3,
# with Foundation, XCTest, Swift Testing and SwiftPM). This script keeps a minimal trixie
# chroot with it at a cache path outside the repository (~2.6 GB; ~530 MB downloaded)
# and runs commands inside it. A library built on the host against bookworm's glibc
# loads inside the chroot, whose glibc is newer.
#
# Usage (as root):
#   swift-toolchain.sh [setup]                 create the chroot unless it is already
#                                              complete (idempotent: 1-3 min the first
#                                              time, network-bound; instant afterwards)
#   swift-toolchain.sh run HOSTDIR -- CMD...   run CMD inside the chroot with HOSTDIR
#                                              bind-mounted read-write at /work and /work
#                                              as the working directory; exits with CMD's
#                                              status. Sets up first if needed. CMD gets a
#                                              clean environment (PATH, HOME=/root,
#                                              LANG=C.UTF-8, TERM); pass more with env:
#                                                run "$D" -- env LD_LIBRARY_PATH=/work/lib ./app
#                                              Files CMD writes under /work belong to root.
#   swift-toolchain.sh path                    print the chroot's path
#   swift-toolchain.sh remove                  delete the chroot
#
# Example: a host-built libdemo.so in $D/lib, its header and module.modulemap in
# $D/include, tests written against XCTest with XCTMain([testCase(T.allTests)]):
#   swift-toolchain.sh run "$D" -- swiftc -I include -L lib -ldemo tests.swift -o tests
#   swift-toolchain.sh run "$D" -- env LD_LIBRARY_PATH=/work/lib ./tests
# (`swift test` on a SwiftPM package under /work works too, offline.)
#
# Environment:
#   TERN_SWIFT_CHROOT   chroot path (default /var/cache/tern/swift-trixie)
#   TERN_DEBIAN_MIRROR  Debian mirror for trixie (default: the host's apt mirror for
#                       its own release, else debootstrap's default)
#
# swiftc needs /proc (it finds its libraries through /proc/self/exe). /proc, /dev and
# /sys are mounted, and HOSTDIR bound, in a private mount namespace (unshare) that the
# kernel discards when CMD ends, so nothing stays mounted even if this script is killed;
# an EXIT trap unmounts too. Without unshare the mounts are made in the host's namespace,
# one run at a time (a lock), and the trap undoes them.
#
# Output: one timing line per step on stderr, nothing else; the tools' own output goes
# to "$TERN_SWIFT_CHROOT.log" and its tail is printed if a step fails.
set -euo pipefail

CHROOT=${TERN_SWIFT_CHROOT:-/var/cache/tern/swift-trixie}
CHROOT=${CHROOT%/}
SUITE=trixie
# swiftlang brings its own clang and lld, Foundation, XCTest, Swift Testing and SwiftPM,
# and depends on gcc and binutils; linking needs libc6-dev (crt1.o, libc.so), which gcc
# only recommends.
PACKAGES=(swiftlang libc6-dev)
# Changing what the chroot should hold changes this stamp, which forces an update.
STAMP="tern-swift v1 suite=$SUITE packages=${PACKAGES[*]}"
MARKER="$CHROOT/.tern-swift-ready"
LOG="$CHROOT.log"
LOCK="$CHROOT.lock"
SELF=$(readlink -f "${BASH_SOURCE[0]}")

SCRIPT_NAME=swift-toolchain
# shellcheck source=scripts/bindings/common.sh
source "$(dirname "$SELF")/common.sh"


# Runs CMD as a child that keeps our stdin, passes INT/TERM/HUP on to it as TERM (so our
# EXIT trap runs as soon as it ends, not after it), and returns its status.
forward() {
  local pid status=0
  "$@" 0<&0 &
  pid=$!
  trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
  wait "$pid" || status=$?
  # wait returns early when a signal arrives: wait for the child itself to end.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
  trap - INT TERM HUP
  return "$status"
}

have_unshare() {
  command -v unshare >/dev/null && unshare --mount --propagation private true 2>/dev/null
}

# Mount points at or below $1 in this mount namespace (deepest first).
mounts_below() {
  awk -v p="$1" '{ gsub(/\\040/, " ", $5); if ($5 == p || index($5, p "/") == 1) print $5 }' \
    /proc/self/mountinfo | sort -r
}

# Deletes the chroot directory, never through a mount point (a bound HOSTDIR).
remove_chroot() {
  [[ -e "$CHROOT" ]] || return 0
  local m
  for m in $(mounts_below "$CHROOT"); do umount -l "$m" 2>/dev/null || true; done
  [[ -z "$(mounts_below "$CHROOT")" ]] || die "still mounted below $CHROOT; not deleting it"
  rm -rf --one-file-system "$CHROOT"
}

# Debian mirror: $TERN_DEBIAN_MIRROR, else the host's apt source for its release.
mirror() {
  if [[ -n "${TERN_DEBIAN_MIRROR:-}" ]]; then echo "$TERN_DEBIAN_MIRROR"; return; fi
  local codename
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n "$codename" ]] || return 0
  {
    # deb822 (.sources): the first stanza whose Suites include the codename itself.
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | awk -v c="$codename" '
      /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
      tolower($1) == "uris:" { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
      END { if (u != "" && s) print u }'
    # one-line format: deb [options] URI SUITE COMPONENTS...
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } | awk -v c="$codename" '
      $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == c) print $i }'
  } | head -n 1 || true
}

host_setup() {
  if ! command -v debootstrap >/dev/null; then
    local t; t=$(now)
    quietly env DEBIAN_FRONTEND=noninteractive apt-get update
    quietly env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends debootstrap
    say "installed debootstrap on the host ($(elapsed "$t"))"
  fi
}

# Inside a private mount namespace (or the host's, under the lock): mounts /proc, /dev,
# /sys and, if given, HOSTDIR at /work, then chroots and runs the command.
#   in_chroot HOSTDIR|"" CMD...
MOUNTED=()
# shellcheck disable=SC2317  # called by the EXIT trap
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
  done
}

in_chroot() {
  local hostdir=$1; shift
  trap unmount_all EXIT
  # A failed mount exits (set -e) and the trap undoes the ones made before it.
  mount -t proc proc "$CHROOT/proc"
  MOUNTED+=("$CHROOT/proc")
  mount --bind /dev "$CHROOT/dev"
  MOUNTED+=("$CHROOT/dev")
  # /sys is optional (swiftc does not need it); a container may refuse it.
  if mount -t sysfs -o ro sysfs "$CHROOT/sys" 2>/dev/null; then MOUNTED+=("$CHROOT/sys"); fi
  if [[ -n "$hostdir" ]]; then
    mkdir -p "$CHROOT/work"
    mount --bind "$hostdir" "$CHROOT/work"
    MOUNTED+=("$CHROOT/work")
  fi
  local status=0 workdir=/
  [[ -z "$hostdir" ]] || workdir=/work
  # shellcheck disable=SC2016  # expanded by the chroot's sh
  forward env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive \
    chroot "$CHROOT" /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@" \
    || status=$?
  exit "$status"
}

# Runs in_chroot in a fresh process: in its own mount namespace when possible.
enter() {
  if have_unshare; then
    forward unshare --mount --propagation private "$SELF" _in_chroot "$@"
  else
    # Mounts in the host's namespace are shared by concurrent runs: one at a time.
    local status=0
    exec 8>"$LOCK.mounts"
    flock 8
    forward "$SELF" _in_chroot "$@" || status=$?
    exec 8>&-
    return "$status"
  fi
}

build_chroot() {
  local t mirror_url
  # Anything present without the marker is a half-made chroot: start again.
  remove_chroot
  mkdir -p "$(dirname "$CHROOT")"
  : >"$LOG"
  mirror_url=$(mirror)
  t=$(now)
  local ns=()
  have_unshare && ns=(unshare --mount --propagation private)
  quietly forward "${ns[@]}" debootstrap --variant=minbase "$SUITE" "$CHROOT" ${mirror_url:+"$mirror_url"}
  say "debootstrap $SUITE ($(elapsed "$t"))"
  # Leave out documentation and translations; keep the chroot's services from starting.
  cat >"$CHROOT/etc/dpkg/dpkg.cfg.d/01-tern-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
EOF
  printf '#!/bin/sh\nexit 101\n' >"$CHROOT/usr/sbin/policy-rc.d"
  chmod +x "$CHROOT/usr/sbin/policy-rc.d"
  install_packages
}

install_packages() {
  local t; t=$(now)
  quietly enter "" apt-get update
  quietly enter "" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  quietly enter "" apt-get clean
  quietly enter "" swiftc --version
  printf '%s\n' "$STAMP" >"$MARKER"
  say "installed ${PACKAGES[*]} in the chroot ($(elapsed "$t"); $(du -sh --one-file-system "$CHROOT" | cut -f1) at $CHROOT)"
}

setup() {
  [[ $EUID -eq 0 ]] || die "must run as root (debootstrap, mount, chroot)"
  # Fast path: complete and current.
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then return 0; fi
  mkdir -p "$(dirname "$CHROOT")"
  exec 9>"$LOCK"
  flock 9
  # Another run may have finished while we waited for the lock.
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then exec 9>&-; return 0; fi
  local t; t=$(now)
  host_setup
  if [[ -f "$MARKER" ]]; then
    # Complete but for an older package set: update it in place.
    rm -f "$MARKER"
    : >"$LOG"
    install_packages
  else
    build_chroot
  fi
  exec 9>&-
  say "chroot ready at $CHROOT ($(elapsed "$t"))"
}

main() {
  local cmd=${1:-setup}
  [[ $# -eq 0 ]] || shift
  case "$cmd" in
    setup)
      local t; t=$(now)
      if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then
        say "chroot ready at $CHROOT (cached, $(elapsed "$t"))"
      else
        setup
      fi
      ;;
    run)
      [[ $# -ge 2 && "$2" == "--" ]] || die "usage: $0 run HOSTDIR -- CMD..."
      local hostdir
      hostdir=$(readlink -f "$1") || die "no such directory: $1"
      [[ -d "$hostdir" ]] || die "not a directory: $1"
      shift 2
      [[ $# -gt 0 ]] || die "usage: $0 run HOSTDIR -- CMD..."
      setup
      local t status=0; t=$(now)
      enter "$hostdir" "$@" || status=$?
      say "ran $1 in the chroot ($(elapsed "$t"), exit $status)"
      exit "$status"
      ;;
    path) echo "$CHROOT" ;;
    remove)
      [[ $EUID -eq 0 ]] || die "must run as root"
      exec 9>"$LOCK"
      flock 9
      remove_chroot
      rm -f "$LOG"
      ;;
    _in_chroot) in_chroot "$@" ;;
    -h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF" ;;
    *) die "unknown command '$cmd' (try --help)" ;;
  esac
}

main "$@"
