# syntax=docker/dockerfile:1
#
# zcsi: one image for every role (`zcsi controller | node | snapshotter | replicator | status`).
# The demo (scripts/demo.ts) drives the test harness and is not in the image.
#
#   docker build -t REGISTRY/zcsi:0.1.0 .       (or `podman build`, `buildah bud`: the same)
#
# CI builds it with buildah and runs the image (test/hosts/image/build.sh, test/integration/image.test.ts).
# The tag is package.json's version; `images` in deploy/base/kustomization.yaml points at it.
#
# The base image is pinned by version and digest: Node.js 20 on Debian 12 (bookworm), the
# same Node major and Debian release the code and its tests run on. To move to a newer
# patch release, change both (`docker buildx imagetools inspect node:20.x.y-bookworm-slim`
# prints the digest).
ARG NODE_IMAGE=node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0

# ---- build: compile TypeScript -------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no install script is needed at run time (ssh2's optional native crypto
# binding falls back to pure JS), and none should run during a build.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
RUN npx tsc -p tsconfig.json

# ---- runtime dependencies only: a stage of its own, so that a change under src/ reuses it from
# the layer cache (the install runs again only when package-lock.json changes) -----------------
FROM ${NODE_IMAGE} AS modules
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts

# ---- runtime ------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
# What the roles run besides Node.js, and nothing else:
#   sshfs, fuse3      node: mounts volumes of other pool hosts (sshfs pulls in fuse3)
#   openssh-client    node: the ssh that sshfs starts (the controller's SSH is in-process, ssh2)
#   systemd           node: systemd-run, to start sshfs in a scope of the host's systemd so
#                     mounts survive a restart of the container (docs/node.md)
#   mount             node: mount/umount for bind mounts (util-linux's; already in the base
#                     image, named so the dependency is explicit)
#   tini              init: reaps the sshfs processes that detach and are re-parented to it
#                     (-s: as a child subreaper, since under hostPID it is not PID 1)
# stat (coreutils), also used by the node, is part of every Debian image.
# Package versions are not pinned: Debian serves only the current (security-patched)
# version of each package in bookworm, so a pin would break the build at the next update.
RUN apt-get update \
 && apt-get install -y --no-install-recommends sshfs fuse3 openssh-client mount systemd tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=modules /app/node_modules ./node_modules
COPY --from=build /app/proto ./proto
COPY --from=build /app/dist/src ./dist/src
RUN chmod 0755 /app/dist/src/cli.js \
 && ln -s /app/dist/src/cli.js /usr/local/bin/zcsi
ENV NODE_ENV=production
# The image's `node` user. The controller, snapshotter and replicator run as it
# (deploy/base/controller.yaml); only the node plugin overrides it with root and privileged,
# because it mounts filesystems (deploy/base/node.yaml).
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "zcsi"]
CMD ["--help"]
