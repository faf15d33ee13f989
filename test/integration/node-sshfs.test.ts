/**
 * A node that is not the pool host stages a volume over SSHFS, against the pool host of either
 * backend. On openzfs-vm that is OpenZFS in a VM, where sshfs's remote end is the documented
 * one: the node key's forced command (deploy/pool-host/zcsi-sftp) starting
 * `sudo -n /usr/lib/openssh/sftp-server`. node.test.ts covers the node in depth on zfs-fuse;
 * this is the same SSHFS path on a real OpenZFS pool host.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { startNode, type RunningNode } from "../../src/roles/node.js";
import { packageRoot } from "../../src/util/package.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { CsiClient } from "../harness/csi-client.js";

const MiB = 1024 * 1024;
const run = promisify(execFile);
const RWX = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let dir: string;
let node: RunningNode | undefined;
let bob: CsiClient | undefined;

beforeAll(async () => {
  env = await startControllerEnv();
  alice = env.hosts[0]!;
  dir = await mkdtemp(join(tmpdir(), "zcsi-sshfs-node-"));
  // The forced command goes on the pool host (on zfs-fuse, this machine: in our dir, which the
  // local sshd's user must traverse to run it).
  await chmod(dir, 0o755);
  const wrapper = alice.pool.vm ? "/usr/local/libexec/zcsi-sftp" : join(dir, "zcsi-sftp");
  await alice.pool.exec.run(["mkdir", "-p", join(wrapper, "..")]);
  await alice.pool.files.write(wrapper, await readFile(join(packageRoot, "deploy", "pool-host", "zcsi-sftp")));
  await alice.pool.exec.run(["chmod", "755", wrapper]);
  const nodeKeyPath = join(dir, "node_key");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "zcsi-node", "-f", nodeKeyPath]);
  await alice.sshd.authorize((await readFile(`${nodeKeyPath}.pub`, "utf8")).trim(), { keyOptions: `restrict,command="${wrapper}"` });
  const nodeConfig = parseConfig({
    privateKeyFile: nodeKeyPath,
    poolHosts: [
      {
        name: alice.name,
        address: alice.sshd.address,
        port: alice.sshd.port,
        user: alice.sshd.user,
        parentDataset: alice.parent,
        mountRoot: alice.mountRoot,
        hostKey: alice.sshd.hostKeyLine,
        sudo: alice.sshd.user !== "root",
      },
    ],
  });
  const endpoint = `unix://${join(dir, "bob.sock")}`;
  const logger = pino({ level: "debug", base: undefined }, pino.destination({ dest: join(dir, "bob.log"), sync: true }));
  node = await startNode(nodeConfig, "bob", endpoint, logger, { stateDir: join(dir, "bob-state") });
  bob = new CsiClient(endpoint);
});

afterAll(async () => {
  bob?.close();
  await node?.close();
  // A failed test may leave the SSHFS mount: detach it before removing the dir.
  for (const m of (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${dir}/`)).reverse()) {
    await run("umount", ["-l", m.mountPoint]).catch(() => undefined);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
  await env?.stop();
});

describe(`a node that is not the pool host (SSHFS)`, () => {
  it("stages over SSHFS through sudo and sftp-server on the pool host; files cross both ways; unstage unmounts", async () => {
    const created = await env.client.createVolume({ name: "pvc-sshfs", capacityRange: { requiredBytes: String(32 * MiB) }, volumeCapabilities: [RWX] });
    const volumeId = created.volume!.volumeId;
    const volumeContext = created.volume!.volumeContext;
    const mountpoint = volumeContext["mountpoint"]!;
    expect(mountpoint).toBe(join(alice.mountRoot, "pvc-sshfs"));
    const staging = join(dir, "staging");
    await mkdir(staging);

    await bob!.nodeStageVolume({ volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext });
    const mount = mountAt(await readMountInfo(), staging);
    expect(mount).toMatchObject({ fsType: "fuse.sshfs", source: `${alice.sshd.user}@${alice.sshd.address}:${mountpoint}` });

    await writeFile(join(staging, "from-bob.txt"), "written on bob\n");
    expect(await alice.pool.files.read(`${mountpoint}/from-bob.txt`)).toBe("written on bob\n");
    await alice.pool.files.write(`${mountpoint}/from-alice.txt`, "written on the pool host\n");
    expect(await readFile(join(staging, "from-alice.txt"), "utf8")).toBe("written on the pool host\n");

    await bob!.nodeUnstageVolume({ volumeId, stagingTargetPath: staging });
    expect(mountAt(await readMountInfo(), staging)).toBeUndefined();
    // The data stays on the dataset.
    expect(await alice.pool.files.read(`${mountpoint}/from-bob.txt`)).toBe("written on bob\n");
  });
  it("on a full volume, write() is accepted and close() fails with EIO (the default asynchronous writes); nothing lands on the dataset", async () => {
    const created = await env.client.createVolume({ name: "pvc-sshfs-full", capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [RWX] });
    const volumeId = created.volume!.volumeId;
    const volumeContext = created.volume!.volumeContext;
    const mountpoint = volumeContext["mountpoint"]!;
    const staging = join(dir, "staging-full");
    await mkdir(staging);
    await bob!.nodeStageVolume({ volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext });
    // Fill it on the pool host until even 16 KiB is refused right after a sync (ZFS reserves
    // pending writes pessimistically, so the first refusal can leave room once written).
    // late.bin exists before: on a full volume even creating a file is refused.
    await alice.pool.files.write(`${mountpoint}/late.bin`, "");
    let full = false;
    for (let pass = 0; pass < 8 && !full; pass++) {
      const file = `${mountpoint}/fill-${pass}`;
      await alice.pool.exec.run(["dd", "if=/dev/urandom", `of=${file}`, pass === 0 ? "bs=1M" : "bs=16k"]); // ends refused: its exit code is expected to be 1
      await alice.pool.files.sync();
      // dd makes the file even when no block fits; no file at all means not even that fitted.
      const size = await alice.pool.exec.run(["stat", "-c", "%s", file]);
      full = size.exitCode !== 0 || size.stdout.trim() === "0";
    }
    expect(full).toBe(true);

    const fh = await open(join(staging, "late.bin"), "r+");
    const write = await fh.write(randomBytes(64 * 1024)).then(
      () => "OK",
      (e: NodeJS.ErrnoException) => e.code,
    );
    const close = await fh.close().then(
      () => "OK",
      (e: NodeJS.ErrnoException) => e.code,
    );
    // SFTP v3 has no "disk full" status: sftp-server answers SSH_FX_FAILURE, sshfs reports EIO.
    expect({ write, close }).toEqual({ write: "OK", close: "EIO" });
    expect((await alice.pool.exec.run(["stat", "-c", "%s", `${mountpoint}/late.bin`])).stdout.trim()).toBe("0");
    await bob!.nodeUnstageVolume({ volumeId, stagingTargetPath: staging });
  });
  it("keeps the SSHFS mount up through a ControllerModifyVolume, and what is written through it afterwards gets the new compression", async () => {
    const created = await env.client.createVolume({ name: "pvc-sshfs-mod", capacityRange: { requiredBytes: String(32 * MiB) }, volumeCapabilities: [RWX], parameters: { compression: "off" } });
    const volumeId = created.volume!.volumeId;
    const volumeContext = created.volume!.volumeContext;
    const dataset = volumeContext["dataset"]!;
    const staging = join(dir, "staging-mod");
    await mkdir(staging);
    await bob!.nodeStageVolume({ volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext });
    const before = mountAt(await readMountInfo(), staging);
    expect(before?.fsType).toBe("fuse.sshfs");
    const text = "zcsi modify over sshfs ".repeat(1 << 16); // ~1.4 MiB, compresses well
    const ratio = async (): Promise<number> => {
      await alice.pool.files.sync();
      const r = await alice.pool.exec.run(["zfs", "get", "-H", "-o", "value", "compressratio", dataset]);
      return Number.parseFloat(r.stdout);
    };
    await writeFile(join(staging, "before.txt"), text);
    expect(await ratio()).toBe(1);

    await env.client.controllerModifyVolume({ volumeId, mutableParameters: { compression: "gzip" } });
    // The same mount (same id), still serving: nothing was unmounted or remounted.
    expect(mountAt(await readMountInfo(), staging)?.id).toBe(before?.id);
    await writeFile(join(staging, "after.txt"), text);
    expect(await readFile(join(staging, "before.txt"), "utf8")).toBe(text);
    // The ratio is accounted when the transaction group commits: wait for it (bounded).
    let seen = 1;
    for (let i = 0; i < 30 && seen <= 1; i++) seen = await ratio();
    expect(seen).toBeGreaterThan(1.5);

    await bob!.nodeUnstageVolume({ volumeId, stagingTargetPath: staging });
    expect(mountAt(await readMountInfo(), staging)).toBeUndefined();
  });
});
