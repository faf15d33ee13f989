/**
 * Faults around SSHFS mounts: the pool host's sshd dying and coming back, the node plugin
 * being killed and restarted, and the sshfs process itself dying (what start-up repair is
 * for). Each test checks what a pod reading its target path would see.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSshfsMount, mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { RWX, uniqueName, startNodeEnv, type NodeEnv, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;

let env: NodeEnv;
let bob: RemoteNode;

beforeAll(async () => {
  env = await startNodeEnv();
  bob = await env.startRemoteNode("bob");
});

afterAll(async () => {
  await env?.stop();
});

async function attach(volume: TestVolume, pod: string) {
  const staging = await bob.stagingPath(`${pod}-staging`);
  await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext: volume.volumeContext });
  const target = await bob.targetPath(pod);
  await bob.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, targetPath: target, volumeCapability: RWX, readonly: false });
  return { staging, target };
}

async function detach(volume: TestVolume, paths: { staging: string; target: string }) {
  await bob.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: paths.target });
  await bob.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging });
}

async function condition(volume: TestVolume, path: string) {
  return (await bob.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: path })).volumeCondition;
}

/** The pid of the sshfs process serving the mount at `mountPoint` (from /proc/<pid>/cmdline). */
async function sshfsPid(mountPoint: string): Promise<number> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0]?.endsWith("sshfs") && argv.includes(mountPoint)) return Number(entry);
  }
  throw new Error(`no sshfs process for ${mountPoint}`);
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

describe("the pool host's sshd", () => {
  it("dies: NodeGetVolumeStats reports the volume abnormal; comes back: the mount works again without unpublish", async () => {
    const volume = await env.createVolume(uniqueName("pvc-sshd"), 32 * MiB);
    const paths = await attach(volume, "pod-sshd");
    await writeFile(join(paths.target, "before.txt"), "before\n");
    expect(await condition(volume, paths.target)).toEqual({ abnormal: false, message: "" });

    await env.sshd.kill();
    const down = await condition(volume, paths.target);
    expect(down?.abnormal).toBe(true);
    expect(down?.message).toMatch(/Input\/output error|Transport endpoint|did not answer/);
    expect(await errnoOf(readFile(join(paths.target, "before.txt")))).not.toBe("OK");

    await env.sshd.restart();
    // sshfs reconnects on the next request (`reconnect`): same mount, same target.
    expect(await readFile(join(paths.target, "before.txt"), "utf8")).toBe("before\n");
    expect(await condition(volume, paths.target)).toEqual({ abnormal: false, message: "" });
    await writeFile(join(paths.target, "after.txt"), "after\n");
    expect(await readFile(join(volume.mountpoint, "after.txt"), "utf8")).toBe("after\n");
    await detach(volume, paths);
  });
});

describe("the node plugin", () => {
  it("killed while a volume is published over SSHFS: the pod's target keeps serving, and the restarted plugin unpublishes cleanly", async () => {
    const volume = await env.createVolume(uniqueName("pvc-restart"), 32 * MiB);
    const paths = await attach(volume, "pod-restart");
    await writeFile(join(paths.target, "data.txt"), "survives\n");
    const sshfs = await sshfsPid(paths.staging);

    await bob.kill();
    // The FUSE server is not the plugin's child: it lives on, and so does the pod's view.
    expect(() => process.kill(sshfs, 0)).not.toThrow();
    expect(await readFile(join(paths.target, "data.txt"), "utf8")).toBe("survives\n");
    await writeFile(join(paths.target, "while-down.txt"), "written while the plugin was down\n");
    expect(await readFile(join(volume.mountpoint, "while-down.txt"), "utf8")).toBe("written while the plugin was down\n");

    await bob.restart();
    expect(await sshfsPid(paths.staging)).toBe(sshfs);
    expect(await condition(volume, paths.target)).toEqual({ abnormal: false, message: "" });
    const scan = (await bob.logs()).filter((l) => l.op === "repair" && typeof l.checked === "number").pop();
    expect(scan).toMatchObject({ repaired: [], failed: [] });
    expect(scan?.checked).toBeGreaterThanOrEqual(1);
    await detach(volume, paths);
    expect(mountAt(await readMountInfo(), paths.staging)).toBeUndefined();
  });

  it("restarted after its sshfs died: start-up repair mounts staging again and re-binds the pod's target", async () => {
    const volume = await env.createVolume(uniqueName("pvc-repair"), 32 * MiB);
    const paths = await attach(volume, "pod-repair");
    const ro = await bob.targetPath("pod-repair-ro");
    await bob.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging, targetPath: ro, volumeCapability: RWX, readonly: true });
    await writeFile(join(paths.target, "data.txt"), "repaired\n");

    await bob.kill();
    process.kill(await sshfsPid(paths.staging), "SIGKILL");
    // What a pod sees while nobody repairs: "Software caused connection abort" on the first
    // access after the FUSE server died, "Transport endpoint is not connected" after that.
    expect(["ECONNABORTED", "ENOTCONN"]).toContain(await errnoOf(readFile(join(paths.target, "data.txt"))));
    expect(await errnoOf(readFile(join(paths.target, "data.txt")))).toBe("ENOTCONN");

    await bob.restart();
    const scan = (await bob.logs()).filter((l) => l.op === "repair" && typeof l.checked === "number").pop();
    expect(scan?.repaired).toEqual([volume.volumeId]);
    const mounts = await readMountInfo();
    const staging = mountAt(mounts, paths.staging);
    expect(staging && isSshfsMount(staging)).toBe(true);
    expect(mountAt(mounts, paths.target)?.device).toBe(staging?.device);
    expect(mountAt(mounts, ro)?.device).toBe(staging?.device);
    expect(mountAt(mounts, ro)?.options).toContain("ro");
    expect(await readFile(join(paths.target, "data.txt"), "utf8")).toBe("repaired\n");
    expect(await readFile(join(ro, "data.txt"), "utf8")).toBe("repaired\n");
    expect(await errnoOf(writeFile(join(ro, "x"), "x"))).toBe("EROFS");
    expect(await condition(volume, paths.target)).toEqual({ abnormal: false, message: "" });

    await bob.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: ro });
    await detach(volume, paths);
  });

  it("a dead staging mount is reported abnormal, and a repeated NodeStageVolume mounts it again", async () => {
    const volume = await env.createVolume(uniqueName("pvc-restage"), 32 * MiB);
    const paths = await attach(volume, "pod-restage");
    await writeFile(join(paths.target, "data.txt"), "again\n");
    process.kill(await sshfsPid(paths.staging), "SIGKILL");

    const dead = await condition(volume, paths.target);
    expect(dead?.abnormal).toBe(true);
    expect(dead?.message).toMatch(/Transport endpoint is not connected|Software caused connection abort/);

    await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    expect(await readFile(join(paths.target, "data.txt"), "utf8")).toBe("again\n");
    expect(mountAt(await readMountInfo(), paths.staging)).toBeDefined();
    await detach(volume, paths);
  });
});
