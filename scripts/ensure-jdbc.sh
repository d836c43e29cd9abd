#!/usr/bin/env bash
# Makes sure a Java that runs a single source file (a JDK: the source
# launcher needs the compiler module) and the PostgreSQL JDBC driver are
# here: the PostgreSQL front door's tests drive a Java application on them
# (pgwire/testdata/JdbcClient.java). On a fresh Debian or Ubuntu machine it
# installs default-jdk-headless and libpostgresql-jdbc-java.
set -euo pipefail

driver=/usr/share/java/postgresql.jar
have_java() { command -v java >/dev/null 2>&1 && java --list-modules 2>/dev/null | grep -q '^jdk.compiler@'; }

pkgs=()
have_java || pkgs+=(default-jdk-headless)
[ -f "$driver" ] || pkgs+=(libpostgresql-jdbc-java)
[ ${#pkgs[@]} -eq 0 ] && exit 0

echo "installing ${pkgs[*]} for the JDBC test." >&2
. "$(dirname "$0")/apt-install.sh"
apt_install "${pkgs[@]}"
have_java && [ -f "$driver" ] || { echo "installed ${pkgs[*]}, but java with its compiler or $driver is still missing" >&2; exit 1; }
