#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for enclave: system packages, then npm dependencies,
# the native addon and the build. Idempotent and quick when everything is already there.
# Run as root (it installs packages and the tests/demo need CAP_NET_ADMIN).
# `scripts/setup.sh --bench` also installs nebula, the bench's second stock comparator (the tests do
# not need it; without it `npm run bench` skips nebula with a message).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iptables conntrack iputils-ping wireguard-go wireguard-tools iperf3 procps kmod python3 make g++)
if [ "${1:-}" = "--bench" ]; then PKGS+=(nebula); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run this script as root (sudo $0)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The TUN device node (containers sometimes lack it).
if [ ! -c /dev/net/tun ] && [ "$(id -u)" -eq 0 ]; then
  mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f native/build/Release/enclave_io.node ]; then
  echo "setup: npm ci (dependencies, native addon, TypeScript build)"
  npm ci --no-audit --no-fund
fi
