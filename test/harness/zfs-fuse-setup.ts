/**
 * vitest globalSetup of the `zfs-fuse` project: starts the zfs-fuse daemon once for the run (or
 * uses the one already running) and stops it at the end only if it started it and no pool is
 * left on it. Without this, each test file's worker started and stopped the daemon itself, and
 * a file could find the previous file's daemon still shutting down and wait on a dead socket.
 * Also starts the container image build in the background when scripts/test.sh asks for it
 * (test/hosts/image/background.ts).
 */
import { startImageBuild } from "../hosts/image/background.js";
import { holdZfsFuseDaemon } from "./zfs-pool.js";

export default async function setup(): Promise<() => Promise<void>> {
  const stopImageBuild = startImageBuild();
  let releaseDaemon: () => Promise<void>;
  try {
    releaseDaemon = await holdZfsFuseDaemon();
  } catch (err) {
    await stopImageBuild();
    throw err;
  }
  return async () => {
    await stopImageBuild();
    await releaseDaemon();
  };
}
