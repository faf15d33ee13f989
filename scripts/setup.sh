#!/usr/bin/env bash
# Installs what zcsi's demo and tests need on a Debian machine, as root, and builds the code.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the tests mount filesystems, start sshd and create network namespaces)" >&2
  exit 1
fi

# Debian packages: zfs-fuse (real ZFS in user space), sshd/ssh, sshfs over FUSE 3, sudo (the
# pool-host user runs zfs through `sudo -n`), iproute2 (network namespaces), util-linux (mount, nsenter).
packages=(zfs-fuse openssh-server openssh-client sshfs fuse3 sudo iproute2 util-linux procps)
# The container image test (test/hosts/image/build.sh): buildah builds the Dockerfile on a base
# debootstrap makes, podman runs it (with runc: see build.sh).
packages+=(buildah podman runc debootstrap)
# The OpenZFS backend (test/hosts/openzfs-vm): qemu boots a VM whose image debootstrap builds.
# Not needed when only zfs-fuse is asked for (ZCSI_ZFS_BACKEND=zfs-fuse).
if [ "${ZCSI_ZFS_BACKEND:-both}" != "zfs-fuse" ]; then
  packages+=(qemu-system-x86 debootstrap cpio zstd xz-utils)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Package scripts must not start services here: the test harness starts its own zfs-fuse and sshd.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p /run/sshd /var/run/zfs

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # The committed lock lists every platform build of rollup (vitest's bundler), as npm 11's
  # `npm ci` insists; so `npm ci` installs exactly it and never rewrites it.
  npm ci --no-audit --no-fund
fi
npm run --silent build
