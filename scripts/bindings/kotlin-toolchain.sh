#!/usr/bin/env bash
# The Kotlin/JVM toolchain for testing tern's Kotlin bindings on this host.
#
# Installs, only where missing:
#   - kotlinc (the npm package `kotlin-compiler`, pinned below) into a cache outside the
#     repository, with `npm install --prefix`; the package also ships the jars the
#     bindings need at run time: lib/kotlin-stdlib.jar and lib/kotlinx-coroutines-core-jvm.jar;
#   - JNA from Debian (`libjna-java`: /usr/share/java/jna.jar, with its native part
#     libjnidispatch.system.so from `libjna-jni`, which Debian's JNA loads by itself);
#   - a Java runtime (Debian's openjdk-17) if there is no `java` at all.
#
# Usage:
#   kotlin-toolchain.sh [setup]   install what is missing (idempotent; a few seconds the
#                                 first time, instant afterwards)
#   kotlin-toolchain.sh env       setup, then print shell assignments to `eval`:
#                                 KOTLINC, KOTLIN_HOME, KOTLIN_STDLIB_JAR,
#                                 KOTLINX_COROUTINES_JAR, JNA_JAR, JAVA
#   kotlin-toolchain.sh facts     setup, then print the versions and paths (one per line)
#
# Environment:
#   TERN_KOTLIN_CACHE   npm prefix of the compiler (default /var/cache/tern/kotlin)
#
# Output: one timing line per step on stderr, nothing else; the tools' own output goes to
# "$TERN_KOTLIN_CACHE.log" and its tail is printed if a step fails.
set -euo pipefail

KOTLIN_VERSION=2.4.20
CACHE=${TERN_KOTLIN_CACHE:-/var/cache/tern/kotlin}
CACHE=${CACHE%/}
KOTLIN_HOME="$CACHE/node_modules/kotlin-compiler"
# Written once the compiler was installed and checked; holds what was checked.
MARKER="$CACHE/.tern-kotlin-ready"
STAMP="tern-kotlin v1 kotlin-compiler=$KOTLIN_VERSION"
LOG="$CACHE.log"
LOCK="$CACHE.lock"
JNA_JAR=/usr/share/java/jna.jar
SELF=$(readlink -f "${BASH_SOURCE[0]}")

SCRIPT_NAME=kotlin-toolchain
# shellcheck source=scripts/bindings/common.sh
source "$(dirname "$SELF")/common.sh"


APT_UPDATED=
apt_install() {
  [[ $EUID -eq 0 ]] || die "must run as root to install $* (apt-get)"
  # A fresh machine's package lists may be missing or old: update once, then install.
  if [[ -z "$APT_UPDATED" ]]; then
    quietly env DEBIAN_FRONTEND=noninteractive apt-get update
    APT_UPDATED=1
  fi
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

compiler_ready() {
  [[ -f "$MARKER" && "$(head -n 1 "$MARKER")" == "$STAMP" ]] &&
    [[ -x "$KOTLIN_HOME/bin/kotlinc" && -f "$KOTLIN_HOME/lib/kotlin-stdlib.jar" &&
       -f "$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar" ]]
}

# `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15'.
java_major() {
  java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

jar_manifest() { # JAR KEY
  unzip -p "$1" META-INF/MANIFEST.MF 2>/dev/null | tr -d '\r' | awk -F': ' -v k="$2" '$1 == k { print $2; exit }'
}

install_java() {
  if command -v java >/dev/null && [[ "$(java_major)" -ge 11 ]]; then return 0; fi
  local t; t=$(now)
  apt_install openjdk-17-jre-headless
  say "installed openjdk-17-jre-headless ($(elapsed "$t"))"
}

install_jna() {
  if [[ -f "$JNA_JAR" ]] && compgen -G '/usr/lib/*/jni/libjnidispatch.system.so' >/dev/null; then
    return 0
  fi
  local t; t=$(now)
  apt_install libjna-java libjna-jni
  [[ -f "$JNA_JAR" ]] || die "libjna-java is installed but $JNA_JAR is missing"
  say "installed libjna-java $(dpkg-query -W -f='${Version}' libjna-java) ($(elapsed "$t"))"
}

install_compiler() {
  compiler_ready && return 0
  local t; t=$(now)
  if ! command -v npm >/dev/null; then
    apt_install nodejs npm
    say "installed nodejs and npm ($(elapsed "$t"))"
    t=$(now)
  fi
  rm -f "$MARKER"
  quietly npm install --prefix "$CACHE" --no-audit --no-fund --no-update-notifier \
    "kotlin-compiler@$KOTLIN_VERSION"
  say "installed kotlin-compiler $KOTLIN_VERSION from npm ($(elapsed "$t"))"
  # Check what the package shipped before trusting it.
  local build stdlib coroutines kversion
  build=$(tr -d '[:space:]' <"$KOTLIN_HOME/build.txt" 2>/dev/null || true)
  [[ "$build" == "$KOTLIN_VERSION" ]] || die "kotlin-compiler's build.txt says '$build', not $KOTLIN_VERSION"
  for jar in kotlin-stdlib.jar kotlinx-coroutines-core-jvm.jar kotlin-compiler.jar; do
    [[ -f "$KOTLIN_HOME/lib/$jar" ]] || die "kotlin-compiler $KOTLIN_VERSION does not ship lib/$jar"
  done
  chmod +x "$KOTLIN_HOME"/bin/kotlin* 2>/dev/null || true
  stdlib=$(jar_manifest "$KOTLIN_HOME/lib/kotlin-stdlib.jar" Implementation-Version)
  coroutines=$(unzip -p "$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar" \
    META-INF/kotlinx_coroutines_core.version 2>/dev/null | tr -d '[:space:]' || true)
  [[ -n "$coroutines" ]] || die "cannot read the version of kotlinx-coroutines-core-jvm.jar"
  t=$(now)
  kversion=$("$KOTLIN_HOME/bin/kotlinc" -version 2>&1 | tail -n 1)
  [[ "$kversion" == *"kotlinc-jvm $KOTLIN_VERSION"* ]] || die "kotlinc -version printed: $kversion"
  say "checked kotlinc ($(elapsed "$t"))"
  {
    printf '%s\n' "$STAMP"
    printf 'kotlinc: %s\n' "${kversion#info: }"
    printf 'kotlin-stdlib: %s\n' "$stdlib"
    printf 'kotlinx-coroutines-core-jvm: %s\n' "$coroutines"
  } >"$MARKER"
}

setup() {
  local t; t=$(now)
  # Fast path: everything present.
  if compiler_ready && [[ -f "$JNA_JAR" ]] && command -v java >/dev/null; then
    say "ready (cached, $(elapsed "$t"))"
    return 0
  fi
  mkdir -p "$CACHE"
  exec 9>"$LOCK"
  flock 9
  : >"$LOG"
  install_java
  install_jna
  install_compiler
  exec 9>&-
  say "ready at $KOTLIN_HOME ($(elapsed "$t"))"
}

main() {
  local cmd=${1:-setup}
  case "$cmd" in
    setup) setup ;;
    env)
      setup
      printf 'KOTLIN_HOME=%q\n' "$KOTLIN_HOME"
      printf 'KOTLINC=%q\n' "$KOTLIN_HOME/bin/kotlinc"
      printf 'KOTLIN_STDLIB_JAR=%q\n' "$KOTLIN_HOME/lib/kotlin-stdlib.jar"
      printf 'KOTLINX_COROUTINES_JAR=%q\n' "$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar"
      printf 'JNA_JAR=%q\n' "$(readlink -f "$JNA_JAR")"
      printf 'JAVA=%q\n' "$(command -v java)"
      ;;
    facts)
      setup
      tail -n +2 "$MARKER"
      printf 'kotlinc path: %s\n' "$KOTLIN_HOME/bin/kotlinc"
      printf 'kotlin-stdlib path: %s\n' "$KOTLIN_HOME/lib/kotlin-stdlib.jar"
      printf 'kotlinx-coroutines-core-jvm path: %s\n' "$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar"
      printf 'jna: %s (%s)\n' "$(dpkg-query -W -f='${Version}' libjna-java 2>/dev/null || echo '?')" \
        "$(readlink -f "$JNA_JAR")"
      printf 'jnidispatch: %s\n' "$(compgen -G '/usr/lib/*/jni/libjnidispatch.system.so' | head -n 1)"
      printf 'java: %s\n' "$(java -version 2>&1 | head -n 1)"
      ;;
    -h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF" ;;
    *) die "unknown command '$cmd' (try --help)" ;;
  esac
}

main "$@"
