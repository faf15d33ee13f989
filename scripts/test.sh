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
if [ "$ZCSI_ZFS_BACKEND" != "openzfs-vm" ]; then
  # The container image from the Dockerfile (cached: seconds when nothing changed), for
  # test/integration/image.test.ts.
  t0=$(date +%s)
  ZCSI_IMAGE=$(bash test/hosts/image/build.sh | tail -1)
  export ZCSI_IMAGE
  echo "test: image $ZCSI_IMAGE ready in $(($(date +%s) - t0)) s"
fi
# The OpenZFS VM image (test/hosts/openzfs-vm/build.sh; a cold build takes about ten minutes)
# is found or built by the VM project's globalSetup, in the background while the zfs-fuse
# project runs; it prints "openzfs-vm: image ... ready in N s".
exec npx vitest run "$@"
