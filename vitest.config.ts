import { defineConfig } from "vitest/config";
import LastWaitersSequencer from "./test/harness/sequencer.js";

/**
 * ZFS backends (see test/harness/backend.ts): ZCSI_ZFS_BACKEND=zfs-fuse (the default: fast,
 * for local iteration), openzfs-vm, or both (what scripts/test.sh and CI run). Each backend is
 * a vitest project that sets ZCSI_ZFS_BACKEND for its workers; the zfs-fuse project also runs
 * every suite that does not touch ZFS, so those run once.
 */
const requested = process.env["ZCSI_ZFS_BACKEND"] || "zfs-fuse";
if (!["zfs-fuse", "openzfs-vm", "both"].includes(requested)) {
  throw new Error(`ZCSI_ZFS_BACKEND=${requested}: expected zfs-fuse, openzfs-vm or both`);
}

/**
 * The integration suites that run against the OpenZFS VM too: those whose pool host comes from
 * test/harness/backend.ts (createPoolHost, or startControllerEnv) and that touch the pool host
 * only through its executor. Not here:
 * - node.test.ts, node-faults.test.ts: the node stages by bind mount from a pool on this very
 *   machine, and its SSHFS path runs from a network namespace to a local sshd (node-env.ts
 *   makes zfs-fuse pools itself); node-sshfs.test.ts runs the SSHFS path against the VM;
 * - zfs-harness.test.ts (the zfs-fuse harness itself), ssh-executor.test.ts (no ZFS).
 */
const OPENZFS_VM_SUITES = [
  "test/integration/zfs-client.test.ts",
  "test/integration/controller.test.ts",
  "test/integration/controller-faults.test.ts",
  "test/integration/snapshots.test.ts",
  "test/integration/snapshotter.test.ts",
  "test/integration/status.test.ts",
  "test/integration/status-describe-pv.test.ts",
  "test/integration/replication.test.ts",
  "test/integration/replicator.test.ts",
  "test/integration/node-sshfs.test.ts",
  "test/integration/modify-volume.test.ts",
  "test/integration/group-snapshots.test.ts",
  "test/integration/size-modes.test.ts",
  "test/integration/size-modes-full-pool.test.ts",
  "test/integration/rollback.test.ts",
  "test/integration/adopt-managed.test.ts",
  "test/integration/mobility.test.ts",
];

const zfsFuse = {
  extends: true as const,
  test: {
    name: "zfs-fuse",
    include: ["test/**/*.test.ts"],
    env: { ZCSI_ZFS_BACKEND: "zfs-fuse" },
    globalSetup: ["test/harness/zfs-fuse-setup.ts"],
    sequence: { groupOrder: 0 },
  },
};
const openZfsVm = {
  extends: true as const,
  test: {
    name: "openzfs-vm",
    include: OPENZFS_VM_SUITES,
    env: { ZCSI_ZFS_BACKEND: "openzfs-vm" },
    // Finds or builds the VM image and boots the run's shared VMs (test/hosts/openzfs-vm/shared.ts),
    // lent to one file at a time, in the background while the zfs-fuse project runs.
    globalSetup: ["test/hosts/openzfs-vm/global-setup.ts"],
    // Waits for the image that globalSetup finds or builds in the background (image-ready.ts).
    setupFiles: ["test/hosts/openzfs-vm/image-ready.ts"],
    // After the zfs-fuse project by default. ZCSI_PARALLEL_BACKENDS=1 runs them beside it (vitest
    // runs each pool type's files in a queue of its own; this project uses threads). On 2 cores
    // that is no faster: the VM files, CPU-bound under TCG, take 2-3.5x as long beside the
    // zfs-fuse files (snapshots.test.ts 487 s against 137 s), and the VM queue sets the wall time
    // (a warm side-by-side .ci/run took 28+ min on 2026-12-04, the sequential ones 21-27).
    // Side by side once wedged zfs-fuse too; since then a timed-out command keeps its slot on the
    // host until it exits, controller-load's cleanup waits for the driver, and a wedged daemon is
    // replaced before the next pool (test/harness/zfs-pool.ts).
    pool: "threads" as const,
    sequence: { groupOrder: process.env["ZCSI_PARALLEL_BACKENDS"] === "1" ? 0 : 1 },
    // TCG is 5-20x slower than the host for CPU-bound work (a zfs command is ~0.3 s in the VM).
    testTimeout: 180_000,
    hookTimeout: 300_000,
  },
};

export default defineConfig({
  test: {
    // No `include` here: projects that extend this config would add their own to it, not
    // replace it (vitest concatenates arrays), and the VM project would run every file.
    // Integration suites share one zfs-fuse daemon and mount real filesystems; running
    // files in parallel on a 2-core machine only adds contention and flakiness.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["./test/harness/summary-reporter.ts", "default"],
    // Files that wait for a background build (the container image) run last in their project.
    sequence: { sequencer: LastWaitersSequencer },
    projects: requested === "both" ? [zfsFuse, openZfsVm] : requested === "openzfs-vm" ? [openZfsVm] : [zfsFuse],
  },
});
