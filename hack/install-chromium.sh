#!/usr/bin/env bash
# Installs Chromium from the machine's Debian packages (once) for the browser test of the web page
# (tests/userapi/test_web_page.py), and prints the browser's path. No browser download from a CDN
# (Playwright's and Puppeteer's do not work here): `apt-get install chromium`, without recommends.
#
# CHROMIUM=/path/to/chromium skips all of it. Exits non-zero with a reason when it cannot install
# (not root and no sudo, no apt-get, the package not found); the test then skips saying so.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }
die() { echo "install-chromium: ERROR: $*" >&2; exit 1; }

if [[ -n "${CHROMIUM:-}" ]]; then
  [[ -x "$CHROMIUM" ]] || die "CHROMIUM=$CHROMIUM is not an executable"
  echo "$CHROMIUM"; exit 0
fi
found() { command -v chromium || command -v chromium-browser || true; }
path=$(found)
if [[ -n "$path" ]]; then echo "$path"; exit 0; fi

command -v apt-get >/dev/null || die "no chromium on PATH and no apt-get to install it (set CHROMIUM=)"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  die "no chromium on PATH, and installing it needs root (or passwordless sudo)"
fi
export DEBIAN_FRONTEND=noninteractive
log "installing chromium from the Debian packages (once)"
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >&2; then
  log "apt-get install failed: updating the package lists and trying again"
  "${as_root[@]}" apt-get update -q >&2 || die "apt-get update failed"
  "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >&2 || die "apt-get install chromium failed"
fi
path=$(found)
[[ -n "$path" ]] || die "chromium was installed but is not on PATH"
echo "$path"
