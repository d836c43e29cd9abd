#!/usr/bin/env bash
# Makes sure the ip command (iproute2) is here when this runs as root: the
# test that puts every node in a network namespace of its own (test/netns)
# drives it. Without root that test is skipped anyway, so nothing is done.
set -euo pipefail

command -v ip >/dev/null 2>&1 && exit 0
[ "$(id -u)" -eq 0 ] || exit 0

echo "ip (iproute2) not found; installing it." >&2
. "$(dirname "$0")/apt-install.sh"
apt_install iproute2
command -v ip >/dev/null 2>&1 || { echo "installed iproute2, but there is still no ip command" >&2; exit 1; }
