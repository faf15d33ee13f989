/**
 * What a pod can rely on over SSHFS with zcsi's default options (docs/node.md, "What SSHFS
 * promises"): a write to a full volume fails with an error the application sees, and exactly
 * where; a file another node wrote and closed reads the same here. Remote nodes are real
 * `zcsi node` processes in a network namespace (test/harness/node-env.ts), each with its own
 * SSHFS mount and kernel caches, as two Kubernetes nodes would have.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { open, readFile, rm, writeFile } from "node:fs/promises";
import { constants } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { errnoOf, RWX, startNodeEnv, uniqueName, type NodeEnv, type NodeHandle, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;
const run = promisify(execFile);

let env: NodeEnv;
let bob: RemoteNode;
let carol: RemoteNode;

beforeAll(async () => {
  env = await startNodeEnv();
  [bob, carol] = await Promise.all([env.startRemoteNode("bob"), env.startRemoteNode("carol")]);
});

afterAll(async () => {
  await env?.stop();
});

/** Stage (with `mountFlags`, a StorageClass's mountOptions) and publish on a node; returns the pod's target. */
async function attach(node: NodeHandle, volume: TestVolume, pod: string, mountFlags: string[] = []): Promise<string> {
  const volumeCapability = { ...RWX, mount: { fsType: "", mountFlags } };
  const staging = await node.stagingPath(`${volume.dataset.split("/").pop()}-${pod}`);
  await node.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability, volumeContext: volume.volumeContext });
  const target = await node.targetPath(pod);
  await node.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, targetPath: target, volumeCapability, readonly: false, volumeContext: volume.volumeContext });
  expect(mountAt(await readMountInfo(), staging)?.fsType).toBe("fuse.sshfs");
  return target;
}

/**
 * Creates the empty file `late.bin` (on a full volume even creating a file is refused), then
 * fills the volume on the pool host with incompressible data until ZFS refuses even 16 KiB
 * right after a sync: ZFS reserves pending writes pessimistically, so the first refusal can
 * leave room once the transaction group is written.
 */
async function fillUp(volume: TestVolume): Promise<void> {
  await writeFile(join(volume.mountpoint, "late.bin"), "");
  for (let pass = 0; pass < 8; pass++) {
    const chunk = randomBytes(pass === 0 ? MiB : 16 * 1024);
    const fh = await open(join(volume.mountpoint, `fill-${pass}`), "w").catch((err: NodeJS.ErrnoException) => {
      if (err.errno === -constants.errno.EDQUOT || err.code === "ENOSPC") return undefined;
      throw err;
    });
    if (!fh) return; // not even a new file fits
    let wrote = 0;
    try {
      while ((await errnoOf(fh.write(chunk))) === "OK") wrote++;
    } finally {
      await fh.close().catch(() => undefined);
    }
    await run("sync", ["-f", volume.mountpoint]);
    if (wrote === 0) return;
  }
  throw new Error(`${volume.dataset} still takes writes after 8 passes`);
}

/** Opens the existing empty `file` on a full volume and writes 64 KiB to it: what each call answered. */
async function writeToFullVolume(file: string, end: "close" | "fsync"): Promise<{ write: string; fsync?: string; close: string }> {
  const fh = await open(file, "r+");
  const write = await errnoOf(fh.write(randomBytes(64 * 1024)));
  const fsync = end === "fsync" ? await errnoOf(fh.sync()) : undefined;
  const close = await errnoOf(fh.close());
  return { write, ...(fsync !== undefined && { fsync }), close };
}

describe("a full volume over SSHFS", () => {
  it("with the defaults (asynchronous writes), write() is accepted and close() fails with EIO; nothing lands on the dataset", async () => {
    const volume = await env.createVolume(uniqueName("pvc-full-close"), 16 * MiB);
    const target = await attach(bob, volume, "pod-full-close");
    await fillUp(volume);
    // SFTP v3 has no "disk full" status: sftp-server answers SSH_FX_FAILURE, sshfs reports EIO.
    expect(await writeToFullVolume(join(target, "late.bin"), "close")).toEqual({ write: "OK", close: "EIO" });
    expect((await readFile(join(volume.mountpoint, "late.bin"))).length).toBe(0);
    // Creating a file is refused at open(): sshfs maps SSH_FX_FAILURE on open to EPERM.
    expect(await errnoOf(writeFile(join(target, "new.bin"), "x"))).toBe("EPERM");
  });

  it("with the defaults, fsync() fails with EIO, so a program that syncs before closing learns it there", async () => {
    const volume = await env.createVolume(uniqueName("pvc-full-fsync"), 16 * MiB);
    const target = await attach(bob, volume, "pod-full-fsync");
    await fillUp(volume);
    // fsync reported the refusal; close has nothing more to report.
    expect(await writeToFullVolume(join(target, "late.bin"), "fsync")).toEqual({ write: "OK", fsync: "EIO", close: "OK" });
  });

  it("with mountOption sshfs_sync=yes, write() itself fails with EIO", async () => {
    const volume = await env.createVolume(uniqueName("pvc-full-sync"), 16 * MiB);
    const target = await attach(bob, volume, "pod-full-sync", ["sshfs_sync=yes"]);
    await fillUp(volume);
    expect(await writeToFullVolume(join(target, "late.bin"), "close")).toEqual({ write: "EIO", close: "OK" });
  });

  it("a long sequential write past the size fails at a write() once the refusal is back, and close() still reports it", async () => {
    const volume = await env.createVolume(uniqueName("pvc-full-stream"), 16 * MiB);
    const target = await attach(bob, volume, "pod-full-stream");
    const fh = await open(join(target, "big"), "w");
    let failedAt = -1;
    for (let i = 0; i < 64 && failedAt < 0; i++) if ((await errnoOf(fh.write(Buffer.alloc(MiB, i)))) === "EIO") failedAt = i;
    const close = await errnoOf(fh.close());
    // Refused past 16 MiB (ZFS may overshoot a little), and never silently: close() reports it too.
    expect(failedAt).toBeGreaterThanOrEqual(12);
    expect(close).toBe("EIO");
    const referenced = Number((await env.zfs("get", "-Hp", "-o", "value", "referenced", volume.dataset)).trim());
    expect(referenced).toBeLessThanOrEqual(17 * MiB);
    // Room again, and the same mount writes again.
    await rm(join(target, "big"));
    await writeFile(join(target, "after.txt"), "still fine\n");
    expect(await readFile(join(volume.mountpoint, "after.txt"), "utf8")).toBe("still fine\n");
  });
});

describe("ReadWriteMany over SSHFS: two nodes", () => {
  let volume: TestVolume;
  let onBob: string;
  let onCarol: string;

  beforeAll(async () => {
    volume = await env.createVolume(uniqueName("pvc-rwx-close"), 32 * MiB);
    [onBob, onCarol] = await Promise.all([attach(bob, volume, "pod-rwx-bob"), attach(carol, volume, "pod-rwx-carol")]);
  });

  it("a file one node wrote and closed reads whole on the other at once, both ways", async () => {
    const big = Buffer.alloc(3 * MiB + 123, 5);
    await writeFile(join(onBob, "from-bob.bin"), big);
    expect((await readFile(join(onCarol, "from-bob.bin"))).equals(big)).toBe(true);
    await writeFile(join(onCarol, "from-carol.txt"), "carol was here\n");
    expect(await readFile(join(onBob, "from-carol.txt"), "utf8")).toBe("carol was here\n");
  });

  it("a file the other node has read before shows the new content after the writer closed it (within the attribute cache timeout)", async () => {
    const file = "shared.txt";
    await writeFile(join(onBob, file), "version 1\n");
    expect(await readFile(join(onCarol, file), "utf8")).toBe("version 1\n");
    // Rewritten by carol, longer and then the same length: bob, who read it, must see each.
    for (const content of ["version 2, longer\n", "version 3, longer\n"]) {
      await writeFile(join(onCarol, file), content);
      await waitFor(async () => (await readFile(join(onBob, file), "utf8")) === content, `bob to read ${JSON.stringify(content)}`);
    }
    // And appends from the other side.
    const fh = await open(join(onBob, file), "a");
    await fh.write("appended by bob\n");
    await fh.close();
    await waitFor(async () => (await readFile(join(onCarol, file), "utf8")) === "version 3, longer\nappended by bob\n", "carol to read bob's append");
  });
});

/** Polls until `check` holds (bounded: a cache that never expires fails the test). */
async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
