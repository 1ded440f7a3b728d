#!/usr/bin/env bash
# Installs the real peers that end-to-end tests run against, when missing:
# Debian packages qemu-utils, qemu-system-x86, libnbd-bin, nbdkit.
# Installs only as root (apt-get). Under CI=true a peer that is still missing fails the run.
set -euo pipefail

programs=(qemu-img qemu-io qemu-nbd qemu-system-x86_64 nbdinfo nbdcopy nbdkit)
missing=()
for p in "${programs[@]}"; do
  command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: missing ${missing[*]}; installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-utils qemu-system-x86 libnbd-bin nbdkit >/dev/null
  else
    echo "install-peers: missing ${missing[*]} and not root: install qemu-utils qemu-system-x86 libnbd-bin nbdkit" >&2
  fi
fi

still=()
for p in "${programs[@]}"; do
  command -v "$p" >/dev/null 2>&1 || still+=("$p")
done
if [ ${#still[@]} -gt 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "install-peers: CI=true and peers missing: ${still[*]}" >&2
    exit 1
  fi
  echo "install-peers: peers missing (${still[*]}): tests that need them will be skipped" >&2
fi
