#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, postgres) exist where tpcd
# looks for them: PATH, then /usr/lib/postgresql/*/bin. On a fresh Debian or
# Ubuntu machine it installs the distribution's package (as root, or with
# sudo); elsewhere it says what to do.
set -euo pipefail

have() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null 2>&1
}

have && exit 0

echo "PostgreSQL server binaries not found; installing them." >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "No apt-get here: install PostgreSQL (initdb, postgres) yourself, or pass --pg-bin." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq postgresql >/dev/null
# Debian's package starts a cluster of its own; tpcd does not use it.
$SUDO service postgresql stop >/dev/null 2>&1 || true
have || { echo "installed postgresql, but initdb is still not found" >&2; exit 1; }
