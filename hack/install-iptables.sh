#!/usr/bin/env bash
# Installs iptables from the machine's Debian packages (once): the node agent of the local cluster
# enforces NetworkPolicy egress with iptables/ip6tables chains per pod (hack/nbkube_testenv/nodeagent/
# firewall.py), and the tests that prove it (tests/operator/test_tenancy.py) fail without them.
#
# Prints the path of iptables-restore. Exits non-zero with a reason when it cannot install (not root and
# no sudo, no apt-get, the package not found).
set -euo pipefail

log() { echo "install-iptables: $*" >&2; }
die() { echo "install-iptables: ERROR: $*" >&2; exit 1; }

found() { if command -v ip6tables-restore >/dev/null; then command -v iptables-restore || true; fi; }
path=$(found)
if [[ -n "$path" ]]; then echo "$path"; exit 0; fi

command -v apt-get >/dev/null || die "no iptables-restore on PATH and no apt-get to install it"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  die "no iptables-restore on PATH, and installing it needs root (or passwordless sudo)"
fi
export DEBIAN_FRONTEND=noninteractive
log "installing iptables from the Debian packages (once)"
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends iptables >&2; then
  log "apt-get install failed: updating the package lists and trying again"
  "${as_root[@]}" apt-get update -q >&2 || die "apt-get update failed"
  "${as_root[@]}" apt-get install -y -q --no-install-recommends iptables >&2 || die "apt-get install iptables failed"
fi
path=$(found)
[[ -n "$path" ]] || die "iptables was installed but iptables-restore is not on PATH"
echo "$path"
