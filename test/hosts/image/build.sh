#!/usr/bin/env bash
# Builds zcsi's container image from the Dockerfile with buildah, as users build it, on a base
# image made here (the pinned node:20-bookworm-slim cannot be pulled on the test machines).
#
#   bash test/hosts/image/build.sh      (as root; prints the image name last, on stdout)
#
# The base (base.sh) stands in for the pinned node:20-bookworm-slim; then
# `buildah bud --layers --build-arg NODE_IMAGE=<base>` builds the Dockerfile unchanged.
# The Dockerfile's layers stay in the containers storage (/var/lib/containers): a second run
# repeats only the steps whose inputs changed (a change under src/ recompiles; npm ci and
# apt-get install run again only when package-lock.json or the base changes).
# The Dockerfile's `npm ci` and `apt-get install` reach the npm registry and Debian's mirror
# (--network host), as a user's build does.
#
# Env: ZCSI_IMAGE (the tag built; default localhost/zcsi:test); ZCSI_IMAGE_CACHE and
#      ZCSI_DEBIAN_MIRROR (base.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."

CACHE=${ZCSI_IMAGE_CACHE:-/var/cache/zcsi-image}
IMAGE=${ZCSI_IMAGE:-localhost/zcsi:test}

log() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (buildah)"
for tool in buildah runc flock; do
  command -v "$tool" >/dev/null || die "missing $tool (scripts/setup.sh installs buildah, podman and runc)"
done
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -w 1800 9 || die "another build holds $CACHE/lock for more than 30 minutes"

T0=$(date +%s)
BASE=$(bash test/hosts/image/base.sh | tail -1)
T1=$(date +%s)

# runc, not crun: crun refuses cgroup v1 hosts whose cgroup2 hierarchy has a controller
# ("cgroups in hybrid mode not supported"), as the test machines have. Limits no higher than
# ours: without CAP_SYS_RESOURCE (these machines drop it) the runtime cannot raise them.
RUNTIME_FLAGS=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
# Inputs unchanged since the last build (the base and every file the build context holds):
# the image of that build, without even asking buildah (whose layer check alone takes ~10 s).
INPUTS=$( { echo "$BASE"; sha256sum Dockerfile .dockerignore package.json package-lock.json tsconfig.json
  find proto src -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
BUILT=localhost/zcsi-built:$INPUTS
if podman image exists "$BUILT"; then
  podman tag "$BUILT" "$IMAGE"
  log "unchanged inputs: $BUILT"
  echo "$IMAGE"
  exit 0
fi
log "buildah bud --build-arg NODE_IMAGE=$BASE -t $IMAGE ."
buildah bud --quiet --layers --force-rm --network host --pull-never "${RUNTIME_FLAGS[@]}" --build-arg "NODE_IMAGE=$BASE" -t "$IMAGE" . >"$CACHE/bud.log" 2>&1 ||
  { tail -40 "$CACHE/bud.log" >&2; die "buildah bud failed (log: $CACHE/bud.log)"; }
podman images --format '{{.Repository}}:{{.Tag}}' localhost/zcsi-built | grep -vx "$BUILT" | xargs -r podman untag >/dev/null 2>&1 || true
podman tag "$IMAGE" "$BUILT"
log "base $((T1 - T0)) s, image $(($(date +%s) - T1)) s"
echo "$IMAGE"
