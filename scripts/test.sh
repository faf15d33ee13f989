#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): set up, type-check, then every test
# suite against the real zfs-fuse, sshd, SSHFS and network namespaces, and the ZFS suites
# again against OpenZFS 2.x in a VM.
#
#   bash scripts/test.sh                                 both backends (the default; CI)
#   ZCSI_ZFS_BACKEND=zfs-fuse bash scripts/test.sh       zfs-fuse only: fast, no VM
#   ZCSI_ZFS_BACKEND=openzfs-vm bash scripts/test.sh     the OpenZFS VM suites only
#
# Extra arguments go to vitest (e.g. one file: test/integration/controller.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
export ZCSI_ZFS_BACKEND="${ZCSI_ZFS_BACKEND:-both}"
case "$ZCSI_ZFS_BACKEND" in
  zfs-fuse | openzfs-vm | both) ;;
  *) echo "test: ZCSI_ZFS_BACKEND must be zfs-fuse, openzfs-vm or both, not $ZCSI_ZFS_BACKEND" >&2; exit 2 ;;
esac
# setup.sh's build type-checks everything tsconfig.json includes (tests and benchmarks too);
# it is incremental, so a second setup (CI runs one before this script) costs seconds.
bash scripts/setup.sh
# The container image from the Dockerfile, for test/integration/image.test.ts: built by the
# zfs-fuse project's globalSetup in the background (test/hosts/image/background.ts; cached:
# seconds when nothing changed, minutes cold), while the other files run; image.test.ts runs
# last in its project and waits for it.
export ZCSI_IMAGE_BACKGROUND=1
# The OpenZFS VM image (test/hosts/openzfs-vm/build.sh; a cold build takes about ten minutes)
# is found or built by the VM project's globalSetup, in the background while the zfs-fuse
# project runs; it prints "openzfs-vm: image ... ready in N s".
exec npx vitest run "$@"
