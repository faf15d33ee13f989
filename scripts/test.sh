#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): set up, type-check, then every test
# suite against the real zfs-fuse, sshd, SSHFS and network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit -p .
exec npx vitest run "$@"
