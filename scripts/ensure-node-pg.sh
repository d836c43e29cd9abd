#!/usr/bin/env bash
# Makes sure Node.js and node-postgres (the pg package, pinned) are here:
# the PostgreSQL front door's tests drive an application on them
# (pgwire/testdata/node_pg_client.js). Node.js comes from the distribution
# if missing (Debian's nodejs and npm); pg from the npm registry, into
# ~/.cache/tpcd/node-pg, where the test looks for it.
set -euo pipefail

version=8.23.1
dir="${XDG_CACHE_HOME:-$HOME/.cache}/tpcd/node-pg"

have_pg() { grep -qs "\"version\": \"$version\"" "$dir/node_modules/pg/package.json"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node or npm not found; installing them." >&2
  . "$(dirname "$0")/apt-install.sh"
  apt_install nodejs npm
fi
have_pg && exit 0
echo "node-postgres $version not in $dir; installing it from npm." >&2
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "pg@$version" >/dev/null
have_pg || { echo "npm ran, but $dir/node_modules/pg is not version $version" >&2; exit 1; }
