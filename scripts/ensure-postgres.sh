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
. "$(dirname "$0")/apt-install.sh"
apt_install postgresql
# Debian's package starts a cluster of its own; tpcd does not use it.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO service postgresql stop >/dev/null 2>&1 || true
have || { echo "installed postgresql, but initdb is still not found" >&2; exit 1; }
