#!/usr/bin/env bash
# The README's demo command: set up (packages, npm ci, build), then walk a volume's life
# through the real driver on a throwaway zfs-fuse pool host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/scripts/demo.js "$@"
