/**
 * StorageClass sizeMode on a real pool: the ZFS properties each mode sets, what `df` shows
 * in a volume mounted on the pool host (bind) and on another node (SSHFS), expansion, reserved
 * space running out, and restores taking the mode of their own StorageClass.
 */
import { status } from "@grpc/grpc-js";
import { rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { failure } from "../harness/csi-client.js";
import { RWX, startNodeEnv, uniqueName, type NodeEnv, type NodeHandle, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;

let env: NodeEnv;
let alice: NodeHandle;
let bob: RemoteNode;

beforeAll(async () => {
  env = await startNodeEnv({ poolSizeMiB: 256 });
  alice = env.local;
  bob = await env.startRemoteNode("bob");
});

afterAll(async () => {
  await env?.stop();
});

/** `zfs get -Hp` values of one dataset, by property. */
async function props(dataset: string, names: string[]): Promise<Record<string, string>> {
  const out = await env.zfs("get", "-Hp", "-o", "property,value", names.join(","), dataset);
  return Object.fromEntries(out.trim().split("\n").map((l) => l.split("\t") as [string, string]));
}

const SIZE_PROPS = ["refquota", "quota", "refreservation", "reservation", "zcsi:requested-size"];

async function available(dataset: string): Promise<number> {
  return Number((await props(dataset, ["available"])).available);
}

async function datasets(): Promise<string[]> {
  return (await env.zfs("list", "-H", "-o", "name", "-r", env.parent)).split("\n").filter((l) => l !== "");
}

function create(name: string, bytes: number, parameters: Record<string, string>, extra: Record<string, unknown> = {}) {
  return env.controller.createVolume({ name, capacityRange: { requiredBytes: String(bytes) }, volumeCapabilities: [RWX], parameters, ...extra });
}

/** Stage + publish on a node, as kubelet does for a pod; returns the paths. */
async function attach(node: NodeHandle, volume: TestVolume, pod: string): Promise<{ staging: string; target: string }> {
  const staging = await node.stagingPath(`${volume.dataset.split("/").pop()}-${pod}`);
  const common = { volumeId: volume.volumeId, volumeCapability: RWX, volumeContext: volume.volumeContext };
  await node.client.nodeStageVolume({ ...common, stagingTargetPath: staging });
  const target = await node.targetPath(pod);
  await node.client.nodePublishVolume({ ...common, stagingTargetPath: staging, targetPath: target, readonly: false });
  return { staging, target };
}

async function detach(node: NodeHandle, volume: TestVolume, paths: { staging: string; target: string }): Promise<void> {
  await node.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: paths.target });
  await node.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging });
}

/** What `df` in the pod shows: statfs of the target, in bytes. */
async function df(path: string): Promise<{ total: number; available: number }> {
  const s = await statfs(path);
  return { total: s.blocks * s.bsize, available: s.bavail * s.bsize };
}

/** NodeGetVolumeStats' byte usage for a published path. */
async function stats(node: NodeHandle, volume: TestVolume, path: string): Promise<{ total: number; available: number }> {
  const res = await node.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: path });
  expect(res.volumeCondition).toEqual({ abnormal: false, message: "" });
  const bytes = res.usage.find((u) => u.unit === "BYTES");
  return { total: Number(bytes?.total), available: Number(bytes?.available) };
}

/**
 * Ends the pool's open txg: ZFS accounts written and freed space only when a txg syncs (every
 * 30 s on zfs-fuse when idle), and a snapshot is a sync task that waits for one.
 */
async function syncTxg(): Promise<void> {
  const snapshot = `${env.pool.pool}@${uniqueName("txg")}`;
  await env.zfs("snapshot", snapshot);
  await env.zfs("destroy", snapshot);
}

/** Syncs a txg and reads until `done` holds of the value (a freed file may take two txgs). */
async function waitUntil(what: string, read: () => Promise<number>, done: (value: number) => boolean): Promise<number> {
  let value = await read();
  for (let i = 0; i < 20 && !done(value); i++) {
    await syncTxg();
    value = await read();
  }
  if (!done(value)) throw new Error(`${what}: still ${value}`);
  return value;
}

async function referenced(dataset: string): Promise<number> {
  return Number((await props(dataset, ["referenced"])).referenced);
}

/**
 * `available` of a dataset as zfs says it, and what `df` at `path` shows, read at one moment:
 * retried until zfs gives the same value before and after the statfs (no txg in between).
 */
async function dfBesideZfs(dataset: string, path: string): Promise<{ zfs: number; seen: { total: number; available: number } }> {
  for (let i = 0; i < 100; i++) {
    const before = await available(dataset);
    const seen = await df(path);
    if ((await available(dataset)) === before) return { zfs: before, seen };
  }
  throw new Error(`available of ${dataset} never held still`);
}

describe("sizeMode properties", () => {
  it.each([
    ["refquota", { refquota: "16777216", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
    ["quota", { refquota: "0", quota: "16777216", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
    ["thin", { refquota: "0", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "16777216" }],
    ["reserved", { refquota: "16777216", quota: "0", refreservation: "16777216", reservation: "19922944", "zcsi:requested-size": "-" }],
  ])("%s sets exactly its own properties, and CSI reports the PVC size as the capacity", async (mode, expected) => {
    const name = uniqueName(`pvc-props-${mode}`);
    const res = await create(name, 16 * MiB, { sizeMode: mode });
    expect(res.volume?.capacityBytes).toBe(String(16 * MiB));
    const dataset = `${env.parent}/${name}`;
    expect(await props(dataset, SIZE_PROPS)).toEqual(expected);
    expect(JSON.parse((await props(dataset, ["zcsi:parameters"]))["zcsi:parameters"]!)).toEqual(mode === "refquota" ? {} : { sizeMode: mode });
    // Read back from the pool (not from the create's own answer).
    expect((await env.controller.controllerGetVolume({ volumeId: res.volume!.volumeId })).volume?.capacityBytes).toBe(String(16 * MiB));
    // A retry is the same volume; the same name in another mode is ALREADY_EXISTS, and changes nothing.
    expect((await create(name, 16 * MiB, { sizeMode: mode })).volume?.volumeId).toBe(res.volume?.volumeId);
    const other = mode === "thin" ? "reserved" : "thin";
    const refused = await failure(create(name, 16 * MiB, { sizeMode: other }));
    expect(refused.code).toBe(status.ALREADY_EXISTS);
    expect(refused.details).toContain(`"sizeMode":"${other}"`);
    expect(await props(dataset, SIZE_PROPS)).toEqual(expected);
  });

  it("treats sizeMode refquota and no sizeMode as the same class on a retry", async () => {
    const name = uniqueName("pvc-default");
    const first = await create(name, 8 * MiB, {});
    expect((await create(name, 8 * MiB, { sizeMode: "refquota" })).volume?.volumeId).toBe(first.volume?.volumeId);
  });

  it.each(["Thin", "refreservation", "none", ""])("rejects sizeMode=%j with INVALID_ARGUMENT naming the modes, and creates nothing", async (value) => {
    const name = uniqueName("pvc-bad-mode");
    const refused = await failure(create(name, 8 * MiB, { sizeMode: value }));
    expect(refused).toMatchObject({ code: status.INVALID_ARGUMENT, details: `parameter sizeMode=${JSON.stringify(value)}: must be one of refquota, quota, thin, reserved` });
    expect(await datasets()).not.toContain(`${env.parent}/${name}`);
    expect((await failure(env.controller.getCapacity({ volumeCapabilities: [RWX], parameters: { sizeMode: value } }))).code).toBe(status.INVALID_ARGUMENT);
  });
});

describe("df in a mounted volume", () => {
  it("refquota and reserved: the size on the pool host and over SSHFS, and NodeGetVolumeStats says the same", async () => {
    for (const mode of ["refquota", "reserved"]) {
      const name = uniqueName(`pvc-df-${mode}`);
      const created = await create(name, 16 * MiB, { sizeMode: mode });
      const volume = { volumeId: created.volume!.volumeId, volumeContext: created.volume!.volumeContext, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) };
      const local = await attach(alice, volume, `pod-${mode}-l`);
      const remote = await attach(bob, volume, `pod-${mode}-r`);
      await writeFile(join(local.target, "blob"), Buffer.alloc(2 * MiB, 3));
      await waitUntil("the blob accounted", () => referenced(volume.dataset), (n) => n >= 2 * MiB);
      for (const [node, paths] of [
        [alice, local],
        [bob, remote],
      ] as const) {
        const { zfs, seen } = await dfBesideZfs(volume.dataset, paths.target);
        expect(seen.total, `${mode} on ${node.name}`).toBe(16 * MiB);
        expect(seen.available).toBe(zfs);
        expect(seen.available).toBeLessThanOrEqual(14 * MiB);
        expect(await stats(node, volume, paths.target)).toEqual(await df(paths.target));
      }
      await detach(alice, volume, local);
      await detach(bob, volume, remote);
    }
  });

  it("quota: snapshots count, so space a snapshot holds is gone from df; refquota gets it back", async () => {
    const seen: Record<string, { total: number; available: number }> = {};
    for (const mode of ["quota", "refquota"]) {
      const name = uniqueName(`pvc-snapdf-${mode}`);
      const created = await create(name, 16 * MiB, { sizeMode: mode });
      const volume = { volumeId: created.volume!.volumeId, volumeContext: created.volume!.volumeContext, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) };
      const paths = await attach(alice, volume, `pod-snap-${mode}`);
      await writeFile(join(paths.target, "blob"), Buffer.alloc(6 * MiB, 5));
      await waitUntil("the blob accounted", () => referenced(volume.dataset), (n) => n >= 6 * MiB);
      await env.controller.createSnapshot({ name: uniqueName(`snap-${mode}`), sourceVolumeId: volume.volumeId, parameters: {} });
      await rm(join(paths.target, "blob"));
      await waitUntil("the blob freed", () => referenced(volume.dataset), (n) => n < MiB);
      const { zfs, seen: now } = await dfBesideZfs(volume.dataset, paths.target);
      seen[mode] = now;
      expect(now.available).toBe(zfs);
      expect(await stats(alice, volume, paths.target)).toEqual(await df(paths.target));
      await detach(alice, volume, paths);
    }
    // quota: the snapshot's 6 MiB still count against the 16 MiB; df's total drops below the size.
    expect(seen.quota!.available).toBeLessThan(11 * MiB);
    expect(seen.quota!.total).toBeLessThan(11 * MiB);
    // refquota: the files are gone, so the room is back, whatever the snapshot holds.
    expect(seen.refquota!.available).toBeGreaterThan(15 * MiB);
    expect(seen.refquota!.total).toBe(16 * MiB);
  });

  it("thin: every thin volume sees the pool's free space, whatever its size, on the pool host and over SSHFS", async () => {
    const volumes: TestVolume[] = [];
    for (const size of [8, 32]) {
      const name = uniqueName(`pvc-thin-${size}`);
      const created = await create(name, size * MiB, { sizeMode: "thin" });
      expect(created.volume?.capacityBytes).toBe(String(size * MiB));
      volumes.push({ volumeId: created.volume!.volumeId, volumeContext: created.volume!.volumeContext, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) });
    }
    const [a, b] = volumes as [TestVolume, TestVolume];
    const aLocal = await attach(alice, a, "pod-thin-a");
    const bRemote = await attach(bob, b, "pod-thin-b");
    let free = 0;
    for (const [node, volume, path] of [
      [alice, a, aLocal.target],
      [bob, b, bRemote.target],
    ] as const) {
      const { zfs, seen } = await dfBesideZfs(env.parent, path);
      expect(seen.available, `${volume.dataset} on ${node.name}`).toBe(zfs);
      expect(seen.total).toBeGreaterThan(100 * MiB);
      expect(await stats(node, volume, path)).toEqual(await df(path));
      free = zfs;
    }
    // What one thin volume writes, the others no longer see: they share the pool.
    await writeFile(join(aLocal.target, "blob"), Buffer.alloc(40 * MiB, 9));
    await waitUntil("the blob accounted", () => referenced(a.dataset), (n) => n >= 40 * MiB);
    const { zfs: after, seen } = await dfBesideZfs(env.parent, bRemote.target);
    expect(free - after).toBeGreaterThanOrEqual(40 * MiB);
    expect(seen.available).toBe(after);
    // The 8 MiB thin volume holds 40 MiB: its size is a request, not a limit.
    expect(await referenced(a.dataset)).toBeGreaterThan(40 * MiB);
    expect((await env.controller.controllerGetVolume({ volumeId: a.volumeId })).volume?.capacityBytes).toBe(String(8 * MiB));
    await rm(join(aLocal.target, "blob"));
    // Freed at a later txg: wait, so the next tests' free-space figures hold still.
    await waitUntil("the blob freed", () => referenced(a.dataset), (n) => n < MiB);
    await detach(alice, a, aLocal);
    await detach(bob, b, bRemote);
  });
});

describe("expansion", () => {
  it.each([
    ["refquota", { refquota: "25165824", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
    ["quota", { refquota: "0", quota: "25165824", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
    ["thin", { refquota: "0", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "25165824" }],
    ["reserved", { refquota: "25165824", quota: "0", refreservation: "25165824", reservation: "28311552", "zcsi:requested-size": "-" }],
  ])("%s grows the properties of its mode, and never shrinks", async (mode, expected) => {
    const name = uniqueName(`pvc-grow-${mode}`);
    const created = await create(name, 16 * MiB, { sizeMode: mode });
    const volumeId = created.volume!.volumeId;
    const grown = await env.controller.controllerExpandVolume({ volumeId, capacityRange: { requiredBytes: String(24 * MiB) } });
    expect(grown).toMatchObject({ capacityBytes: String(24 * MiB), nodeExpansionRequired: false });
    const dataset = `${env.parent}/${name}`;
    expect(await props(dataset, SIZE_PROPS)).toEqual(expected);
    expect((await env.controller.controllerGetVolume({ volumeId })).volume?.capacityBytes).toBe(String(24 * MiB));
    // A smaller request is OK with the current size; nothing shrinks.
    expect((await env.controller.controllerExpandVolume({ volumeId, capacityRange: { requiredBytes: String(8 * MiB) } })).capacityBytes).toBe(String(24 * MiB));
    expect(await props(dataset, SIZE_PROPS)).toEqual(expected);
    if (mode === "refquota" || mode === "reserved") {
      const volume = { volumeId, volumeContext: created.volume!.volumeContext, dataset, mountpoint: join(env.mountRoot, name) };
      const paths = await attach(alice, volume, `pod-grow-${mode}`);
      expect((await df(paths.target)).total).toBe(24 * MiB);
      await detach(alice, volume, paths);
    }
  });
});

describe("reserved space", () => {
  it("is set aside in the pool: the parent's available drops by the size, and GetCapacity with it", async () => {
    const before = await available(env.parent);
    const name = uniqueName("pvc-aside");
    await create(name, 32 * MiB, { sizeMode: "reserved" });
    const after = await available(env.parent);
    expect(before - after).toBeGreaterThanOrEqual(32 * MiB + 3 * MiB);
    for (const mode of ["reserved", "thin", "refquota", "quota"]) {
      const capacity = await env.controller.getCapacity({ volumeCapabilities: [RWX], parameters: { sizeMode: mode } });
      // The same figure (give or take what a txg of metadata moved since), less a reserved
      // volume's headroom (24 records of 128 KiB: size-modes.ts) in `reserved`.
      const expected = mode === "reserved" ? after - 3 * MiB : after;
      expect(Math.abs(Number(capacity.availableCapacity) - expected), mode).toBeLessThan(MiB);
    }
  });

  it("answers RESOURCE_EXHAUSTED when the pool cannot set the size aside, and creates nothing", async () => {
    const free = await available(env.parent);
    const name = uniqueName("pvc-too-big");
    const refused = await failure(create(name, free + MiB, { sizeMode: "reserved" }));
    expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused.details).toContain("sizeMode reserved");
    expect(await datasets()).not.toContain(`${env.parent}/${name}`);
  });

  it("two reservations that fit only one at a time: one volume is made, the other is RESOURCE_EXHAUSTED and nothing is left of it", async () => {
    const free = await available(env.parent);
    const size = Math.floor((free * 0.6) / MiB) * MiB;
    const names = [uniqueName("pvc-race-a"), uniqueName("pvc-race-b")];
    const results = await Promise.all(names.map((n) => failure(create(n, size, { sizeMode: "reserved" }))));
    expect(results.map((r) => r.code).sort()).toEqual([status.OK, status.RESOURCE_EXHAUSTED].sort());
    const all = await datasets();
    expect(names.filter((n) => all.includes(`${env.parent}/${n}`))).toHaveLength(1);
    const made = names[results.findIndex((r) => r.code === status.OK)]!;
    expect((await props(`${env.parent}/${made}`, ["refreservation"])).refreservation).toBe(String(size));
    await env.controller.deleteVolume({ volumeId: `alice:${env.parent}/${made}` });
  });

  it("an expansion the pool cannot reserve is RESOURCE_EXHAUSTED and leaves refquota and refreservation as they were", async () => {
    const name = uniqueName("pvc-grow-too-far");
    const created = await create(name, 8 * MiB, { sizeMode: "reserved" });
    const free = await available(env.parent);
    const dataset = `${env.parent}/${name}`;
    const before = await props(dataset, SIZE_PROPS);
    const refused = await failure(env.controller.controllerExpandVolume({ volumeId: created.volume!.volumeId, capacityRange: { requiredBytes: String(8 * MiB + free + MiB) } }));
    expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(await props(dataset, SIZE_PROPS)).toEqual(before);
    expect((await env.controller.controllerGetVolume({ volumeId: created.volume!.volumeId })).volume?.capacityBytes).toBe(String(8 * MiB));
  });
});

describe("volumes from snapshots and volumes", () => {
  it("take the sizeMode of their own StorageClass, not their source's (clone and copy)", async () => {
    const sourceName = uniqueName("pvc-src");
    const source = await create(sourceName, 16 * MiB, { sizeMode: "reserved" });
    const snapshot = await env.controller.createSnapshot({ name: uniqueName("snap-src"), sourceVolumeId: source.volume!.volumeId, parameters: {} });
    const snapshotSource = { snapshot: { snapshotId: snapshot.snapshot!.snapshotId } };
    const cases = [
      ["thin", { sizeMode: "thin" }, { volumeContentSource: snapshotSource }, { refquota: "0", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "16777216" }],
      ["quota, copied", { sizeMode: "quota", restoreMode: "copy" }, { volumeContentSource: snapshotSource }, { refquota: "0", quota: "16777216", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
      ["reserved, copied", { sizeMode: "reserved", restoreMode: "copy" }, { volumeContentSource: snapshotSource }, { refquota: "16777216", quota: "0", refreservation: "16777216", reservation: "19922944", "zcsi:requested-size": "-" }],
      ["refquota, cloned from the volume", {}, { volumeContentSource: { volume: { volumeId: source.volume!.volumeId } } }, { refquota: "16777216", quota: "0", refreservation: "0", reservation: "0", "zcsi:requested-size": "-" }],
    ] as const;
    for (const [what, parameters, extra, expected] of cases) {
      const name = uniqueName("pvc-restored");
      const res = await create(name, 16 * MiB, { ...parameters }, { ...extra });
      expect(res.volume?.capacityBytes, what).toBe(String(16 * MiB));
      expect(await props(`${env.parent}/${name}`, SIZE_PROPS), what).toEqual(expected);
      expect((await env.controller.controllerGetVolume({ volumeId: res.volume!.volumeId })).volume?.capacityBytes, what).toBe(String(16 * MiB));
    }
  });
});
