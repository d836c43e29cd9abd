#!/usr/bin/env bash
# Makes sure the system's Python 3 (/usr/bin/python3, which Debian's
# packages serve, whatever other python3 comes first on PATH) can import
# psycopg2, the driver the PostgreSQL front door's tests connect with
# (pgwire/). On a fresh Debian or Ubuntu machine it installs the
# distribution's python3-psycopg2 (as root, or with sudo); elsewhere it says
# what to do.
set -euo pipefail

have() { /usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1; }

have && exit 0

echo "python3-psycopg2 not found; installing it." >&2
. "$(dirname "$0")/apt-install.sh"
apt_install python3-psycopg2
have || { echo "installed python3-psycopg2, but /usr/bin/python3 still cannot import psycopg2" >&2; exit 1; }
