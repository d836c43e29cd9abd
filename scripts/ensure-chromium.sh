#!/usr/bin/env bash
# Installs Debian's chromium if no headless-capable Chromium is on PATH. The
# status page test drives a real browser; CI machines start without one.
set -euo pipefail

for b in chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then
		exit 0
	fi
done

echo "ensure-chromium: no chromium found; installing Debian's chromium" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "ensure-chromium: not root and no sudo: install chromium by hand (apt-get install chromium)" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
echo "ensure-chromium: installed $(chromium --version 2>/dev/null)" >&2
