#!/usr/bin/env bash
# The base image for test builds of the Dockerfile (build.sh), standing in for the pinned
# node:20.x-bookworm-slim, which cannot be pulled on the test machines:
# - Debian bookworm from debootstrap (minbase), with the official image's apt sources
#   (bookworm, bookworm-updates, bookworm-security);
# - this machine's Node.js 20 (the same build the tests run): the files of its `nodejs` package
#   and the npm it runs (/usr/lib/node_modules/npm, upgraded in place on these machines), since
#   the official Node.js tarball is not reachable here;
# - the official image's `node` user (uid and gid 1000), which the Dockerfile's USER and
#   deploy/'s runAsUser name;
# - this machine's CA bundle (see below).
#
#   bash test/hosts/image/base.sh      (as root; prints the base image name last, on stdout)
#
# Cached under $ZCSI_IMAGE_CACHE (default /var/cache/zcsi-image): debs/ (the debootstrap's
# downloads), base-<key>.tar (the root filesystem, imported when the image is missing) and
# localhost/zcsi-test-base:<key> in the containers storage.
# key = hash of this script and the versions of nodejs, npm and debootstrap.
set -euo pipefail

CACHE=${ZCSI_IMAGE_CACHE:-/var/cache/zcsi-image}
MIRROR=${ZCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
SELF=$(readlink -f "$0")
log() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot)"
for tool in debootstrap podman node npm dpkg-query sha256sum flock; do
  command -v "$tool" >/dev/null || die "missing $tool (scripts/setup.sh installs podman and debootstrap)"
done
[ "$(node -p 'process.versions.node.split(".")[0]')" = 20 ] || die "the base needs this machine's Node.js to be 20 (the pinned base's major)"
mkdir -p "$CACHE/debs"
exec 9>"$CACHE/base.lock"
flock -w 1800 9 || die "another build holds $CACHE/base.lock for more than 30 minutes"

KEY=$( { sha256sum "$SELF"; dpkg-query -W -f='${Version}\n' nodejs debootstrap; npm --version; } | sha256sum | cut -c1-16)
BASE=localhost/zcsi-test-base:$KEY
TAR=$CACHE/base-$KEY.tar
T0=$(date +%s)

if ! podman image exists "$BASE"; then
  if [ ! -f "$TAR" ]; then
    log "building the base root filesystem $TAR"
    ROOT=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf --one-file-system "$ROOT"' EXIT
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    cat >"$ROOT/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    # Node.js: the files of this machine's nodejs package (directories come with their files).
    { dpkg-query -L nodejs | grep -v '^/usr/lib/node_modules/npm/' | while read -r f; do
        if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\n' "${f#/}"; fi
      done; } | tar -C / --no-recursion -cf - -T - | tar -C "$ROOT" -xf -
    tar -C / -cf - usr/lib/node_modules/npm | tar -C "$ROOT" -xf -
    # This machine's CA bundle, and npm's global config naming it (as on this machine): the test
    # machines reach registries through a proxy with its own CA. A user's build on the real
    # base needs neither.
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    install -d "$ROOT/usr/etc"
    echo "cafile=/etc/ssl/certs/ca-certificates.crt" >"$ROOT/usr/etc/npmrc"
    chroot "$ROOT" /usr/bin/npm --version >/dev/null || die "npm does not run in the base"
    chroot "$ROOT" /usr/bin/node --version >/dev/null || die "node does not run in the base"
    # The official image's user, whose uid the Dockerfile and deploy/ use.
    chroot "$ROOT" groupadd --gid 1000 node
    chroot "$ROOT" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log
    tar -C "$ROOT" --numeric-owner -cf "$TAR.tmp" .
    mv "$TAR.tmp" "$TAR"
    rm -rf --one-file-system "$ROOT"
    trap - EXIT
  fi
  log "importing $TAR as $BASE"
  podman import --quiet --change 'CMD ["node"]' --change 'WORKDIR /' "$TAR" "$BASE" >/dev/null
  # Stale bases (other keys).
  for f in "$CACHE"/base-*.tar; do [ "$f" = "$TAR" ] || rm -f "$f"; done
  podman images --format '{{.Repository}}:{{.Tag}}' localhost/zcsi-test-base | grep -vx "$BASE" | xargs -r podman rmi --force >/dev/null 2>&1 || true
fi
echo "$BASE"
