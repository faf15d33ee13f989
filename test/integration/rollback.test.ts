/**
 * `zcsi rollback` (issue 16) on real pools, with the real controller over gRPC making the
 * volumes and CSI snapshots, and the Kubernetes side (PVC, PV, VolumeSnapshot and content,
 * pods, VolumeAttachments, Events) served by the fake API server from fixtures shaped like
 * recorded objects. Files are written and read on the pool host itself (as a pod bound there
 * does), so the file runs on either backend. Every outcome is checked on the pools.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { kubeConfigFor, KubeEventSink } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { KubeClaimLookups } from "../../src/k8s/kube-claims.js";
import { KubeNamedLeases, KubeVolumeWorkloads } from "../../src/k8s/kube-mobility.js";
import { leaseMoveLocks } from "../../src/mobility/migrate-lock.js";
import { MoveLocks } from "../../src/mobility/move-lock.js";
import { rollback, type RollbackArgs, type RollbackDeps } from "../../src/mobility/rollback.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import type { ReplicationEngine } from "../../src/replication/types.js";
import { systemClock } from "../../src/util/clock.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { k8sFixture, startFakeApiServer, type FakeApiServer, type WireObject } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const DRIVER = "zfs.zcsi.dev";
const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });
const mountCap = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let bob: PoolHostEnv;
let api: FakeApiServer;
let deps: RollbackDeps;
let engine: ReplicationEngine;

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], poolSizeMiB: 256 });
  [alice, bob] = env.hosts as [PoolHostEnv, PoolHostEnv];
  api = await startFakeApiServer();
  const kc = kubeConfigFor(api.url, { token: "t", skipTLSVerify: true });
  deps = {
    hosts: env.poolHosts,
    homes: new VolumeHomes(env.poolHosts, logger),
    driverName: DRIVER,
    claims: new KubeClaimLookups(kc),
    workloads: new KubeVolumeWorkloads(kc),
    events: new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-rollback", instance: "test" }),
    locks: new MoveLocks(new KubeNamedLeases(kc, "zcsi"), "ops-rollback/1", logger),
    logger,
  };
  engine = createReplicationEngine(env.poolHosts, { logger });
}, 600_000);

afterAll(async () => {
  await api?.close();
  await env?.stop();
});

interface TestVolume {
  readonly leaf: string;
  readonly id: string;
  readonly dataset: string;
  readonly mountpoint: string;
  readonly pvc: string;
}

/** A volume on alice with its PV and bound PVC `db/data-<leaf>` in the API. */
async function volume(leaf: string, parameters: Record<string, string> = {}): Promise<TestVolume> {
  const created = await env.client.createVolume({ name: leaf, capacityRange: { requiredBytes: String(32 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice", ...parameters } });
  const id = created.volume!.volumeId;
  const pv = k8sFixture("pv");
  const spec = pv.spec as { csi: { volumeHandle: string }; claimRef: { name: string; namespace: string } };
  pv.metadata.name = leaf;
  spec.csi.volumeHandle = id;
  spec.claimRef.name = `data-${leaf}`;
  api.pvs.set(leaf, pv);
  const pvc = k8sFixture("pvc-bound");
  pvc.metadata.name = `data-${leaf}`;
  (pvc.spec as { volumeName: string }).volumeName = leaf;
  api.pvcs.set(`db/data-${leaf}`, pvc);
  return { leaf, id, dataset: `${alice.parent}/${leaf}`, mountpoint: created.volume!.volumeContext["mountpoint"]!, pvc: `db/data-${leaf}` };
}

/** A CSI snapshot through the controller, and its VolumeSnapshot `db/<name>` bound to a content with its handle. */
async function volumeSnapshot(v: TestVolume, name: string): Promise<string> {
  const csiName = `snapshot-${name}`;
  const parameters = { "csi.storage.k8s.io/volumesnapshot/name": name, "csi.storage.k8s.io/volumesnapshot/namespace": "db", "csi.storage.k8s.io/volumesnapshotcontent/name": `snapcontent-${name}` };
  const id = (await env.client.createSnapshot({ sourceVolumeId: v.id, name: csiName, parameters })).snapshot!.snapshotId;
  const vs = k8sFixture("volumesnapshot");
  vs.metadata.name = name;
  (vs.status as { boundVolumeSnapshotContentName: string }).boundVolumeSnapshotContentName = `snapcontent-${name}`;
  api.volumeSnapshots.set(`db/${name}`, vs);
  const content = k8sFixture("volumesnapshotcontent");
  content.metadata.name = `snapcontent-${name}`;
  (content.status as { snapshotHandle: string }).snapshotHandle = id;
  api.volumeSnapshotContents.set(`snapcontent-${name}`, content);
  return csiName;
}

async function run(host: PoolHostEnv, ...argv: string[]): Promise<string> {
  const r = await host.pool.exec.run(argv);
  if (r.exitCode !== 0) throw new Error(`${host.name}: ${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** New random content in `<dir>/data.bin`; resolves to its sha256. */
async function write(dir: string): Promise<string> {
  await run(alice, "dd", "if=/dev/urandom", `of=${dir}/data.bin`, "bs=64k", "count=8", "conv=fsync");
  return sha(alice, dir);
}

async function sha(host: PoolHostEnv, dir: string): Promise<string> {
  return (await run(host, "sha256sum", `${dir}/data.bin`)).split(" ")[0]!;
}

async function snapshots(host: PoolHostEnv, dataset: string): Promise<string[]> {
  return (await run(host, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset)).split("\n").filter((l) => l !== "").map((l) => l.slice(l.indexOf("@") + 1));
}

async function prop(host: PoolHostEnv, dataset: string, property: string): Promise<string> {
  return run(host, "zfs", "get", "-Hp", "-o", "value", property, dataset);
}

async function refused(args: RollbackArgs): Promise<string> {
  try {
    await rollback(deps, args);
  } catch (err) {
    if (isZcsiError(err, "FailedPrecondition")) return err.message;
    throw err;
  }
  throw new Error("the rollback was not refused");
}

describe("refusals change nothing", () => {
  it("refuses while a migrate of the volume holds its move Lease, naming it; a migrate is refused while a rollback holds it", async () => {
    const v = await volume("pvc-rb-lease");
    const before = await write(v.mountpoint);
    const snap = await volumeSnapshot(v, "rb-lease");
    const after = await write(v.mountpoint);
    expect(after).not.toBe(before);
    const kc = kubeConfigFor(api.url, { token: "t", skipTLSVerify: true });
    const migrateLocks = leaseMoveLocks(new MoveLocks(new KubeNamedLeases(kc, "zcsi"), "ops-migrate/7", logger));
    const migrating = await migrateLocks.acquire(v.id, "migrate");
    try {
      expect(await refused({ pvc: v.pvc, snapshot: snap })).toMatch(/being moved: migrate .* by ops-migrate\/7, since .*refusing to start rollback/);
      expect(await sha(alice, v.mountpoint)).toBe(after);
    } finally {
      await migrating.release();
    }

    // The other way round: a rollback in progress (its Lease, as rollback() takes it) refuses a migrate, named.
    const rollbackLocks = new MoveLocks(new KubeNamedLeases(kc, "zcsi"), "ops-rollback/2", logger);
    const rollingBack = await rollbackLocks.acquire({ op: "rollback", volumeId: v.id, snapshot: snap });
    try {
      const err = await migrateLocks.acquire(v.id, "migrate").then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isZcsiError(err, "FailedPrecondition")).toBe(true);
      expect((err as Error).message).toMatch(/being rolled back to @snapshot-rb-lease by ops-rollback\/2, since .*not a migrate/);
    } finally {
      await rollingBack.release();
    }

    // Free again: the rollback runs and lets the Lease go.
    await rollback(deps, { pvc: v.pvc, snapshot: snap });
    expect(await sha(alice, v.mountpoint)).toBe(before);
    expect(api.leases.size).toBe(0);
  });

  it("refuses while a pod or a VolumeAttachment uses the volume, naming them; --force rolls back under them", async () => {
    const v = await volume("pvc-rb-inuse");
    const before = await write(v.mountpoint);
    await run(alice, "zfs", "snapshot", `${v.dataset}@before`);
    const after = await write(v.mountpoint);
    const pod = k8sFixture("pod-using-pvc");
    for (const vol of (pod.spec as { volumes: { persistentVolumeClaim?: { claimName: string } }[] }).volumes) if (vol.persistentVolumeClaim) vol.persistentVolumeClaim.claimName = `data-${v.leaf}`;
    api.pods.set("db/postgres-0", pod);
    const va = k8sFixture("volumeattachment");
    va.metadata.name = "csi-rb-inuse";
    (va.spec as { source: { persistentVolumeName: string } }).source.persistentVolumeName = v.leaf;
    api.volumeAttachments.set("csi-rb-inuse", va);
    try {
      const message = await refused({ pvc: v.pvc, snapshot: "before" });
      expect(message).toContain("pod db/postgres-0");
      expect(message).toContain("VolumeAttachment csi-rb-inuse");
      expect(await sha(alice, v.mountpoint)).toBe(after);
      const result = await rollback(deps, { pvc: v.pvc, snapshot: "before", force: true });
      expect(result.inUse).toEqual(["pod db/postgres-0", "VolumeAttachment csi-rb-inuse"]);
      expect(await sha(alice, v.mountpoint)).toBe(before);
    } finally {
      api.pods.delete("db/postgres-0");
      api.volumeAttachments.delete("csi-rb-inuse");
    }
  });

  it("refuses outright, naming it, a later snapshot that backs a VolumeSnapshot, is held, or has clones", async () => {
    const cases: Array<[string, (v: TestVolume) => Promise<string>, RegExp]> = [
      ["csi", (v) => volumeSnapshot(v, "rb-newer"), /@snapshot-rb-newer: it backs the VolumeSnapshot db\/rb-newer/],
      ["held", async (v) => (await run(alice, "zfs", "snapshot", `${v.dataset}@kept`), await run(alice, "zfs", "hold", "backup", `${v.dataset}@kept`), "kept"), /@kept: it is held/],
      ["cloned", async (v) => (await run(alice, "zfs", "snapshot", `${v.dataset}@cloned`), await run(alice, "zfs", "clone", `${v.dataset}@cloned`, `${alice.parent}/rb-clone`), "cloned"), /@cloned: it has clones: .*\/k8s\/rb-clone/],
    ];
    for (const [kind, later, expected] of cases) {
      const v = await volume(`pvc-rb-${kind}`);
      await write(v.mountpoint);
      await run(alice, "zfs", "snapshot", `${v.dataset}@base`);
      const current = await write(v.mountpoint);
      await later(v);
      const list = await snapshots(alice, v.dataset);
      // Even with --destroy-newer: these are never destroyed by a rollback.
      expect(await refused({ pvc: v.pvc, snapshot: "base", destroyNewer: true }), kind).toMatch(expected);
      expect(await snapshots(alice, v.dataset)).toEqual(list);
      expect(await sha(alice, v.mountpoint)).toBe(current);
    }
    await run(alice, "zfs", "release", "backup", `${alice.parent}/pvc-rb-held@kept`);
    // Tidying up through the driver's own client: zfs-fuse answers "dataset is busy" for a moment
    // after a mount or a read, which its destroy retries (src/zfs/client.ts).
    await env.poolHosts.get("alice").zfs.destroy(`${alice.parent}/rb-clone`);
  });
});

describe("rolling back", () => {
  it("to a VolumeSnapshot: refused without --destroy-newer, listing what it destroys; with it the data is the snapshot's, the later snapshots gone, an Event on the PV", async () => {
    const v = await volume("pvc-rb-destroy");
    const old = await write(v.mountpoint);
    const snap = await volumeSnapshot(v, "rb-good");
    await write(v.mountpoint);
    await run(alice, "zfs", "snapshot", "-o", "zcsi:auto-snapshot=hourly=24", `${v.dataset}@zcsi-auto-2026-12-03T1900Z`);
    await write(v.mountpoint);
    await run(alice, "zfs", "snapshot", `${v.dataset}@by-hand`);
    expect(await refused({ pvc: v.pvc, snapshot: "rb-good" })).toMatch(/destroys 2 later snapshot\(s\): @zcsi-auto-2026-12-03T1900Z \(scheduled\), @by-hand \(other\); pass --destroy-newer/);
    expect(await snapshots(alice, v.dataset)).toEqual([snap, "zcsi-auto-2026-12-03T1900Z", "by-hand"]);

    const result = await rollback(deps, { pvc: v.pvc, snapshot: "rb-good", destroyNewer: true });
    expect(result).toMatchObject({ volumeId: v.id, host: "alice", snapshot: snap, volumeSnapshot: "db/rb-good", destroyed: ["zcsi-auto-2026-12-03T1900Z", "by-hand"], generation: 1 });
    expect(await sha(alice, v.mountpoint)).toBe(old);
    expect(await snapshots(alice, v.dataset)).toEqual([snap]);
    // The request replicas follow: generation 1, the snapshot's guid and name.
    expect(await prop(alice, v.dataset, "zcsi:rollback")).toBe(`1 ${await prop(alice, `${v.dataset}@${snap}`, "guid")} ${snap}`);
    const events = api.requests.filter((r) => r.method === "POST" && r.path === "/api/v1/namespaces/default/events").map((r) => r.body as { reason: string; involvedObject: { name: string } });
    expect(events.find((e) => e.involvedObject.name === v.leaf)).toMatchObject({ reason: "RolledBack", type: "Normal", involvedObject: { kind: "PersistentVolume" } });

    // A scheduled snapshot by name; NotFound for one the volume does not have.
    await expect(rollback(deps, { pvc: v.pvc, snapshot: "zcsi-auto-2026-12-03T1900Z" })).rejects.toMatchObject({ kind: "NotFound" });
  });

  it("--keep-current copies the data before the rollback beside the volume, which zcsi never destroys", async () => {
    const v = await volume("pvc-rb-keep");
    const old = await write(v.mountpoint);
    await run(alice, "zfs", "snapshot", `${v.dataset}@old`);
    const current = await write(v.mountpoint);
    const result = await rollback(deps, { pvc: v.pvc, snapshot: "old", keepCurrent: true });
    expect(result.kept?.dataset).toMatch(new RegExp(`^${v.dataset}-zcsi-pre-rollback-[0-9]{8}T[0-9]{6}Z$`));
    const copy = result.kept!.dataset;
    expect(await sha(alice, v.mountpoint)).toBe(old);
    // The volume keeps only its own snapshots: the copy's snapshot went with the copy.
    expect(await snapshots(alice, v.dataset)).toEqual(["old"]);
    expect(JSON.parse(await prop(alice, copy, "zcsi:pre-rollback"))).toMatchObject({ volume: v.id, snapshot: "old" });
    await run(alice, "zfs", "mount", copy);
    expect(await sha(alice, await prop(alice, copy, "mountpoint"))).toBe(current);
    await env.poolHosts.get("alice").zfs.destroy(copy, { recursive: true });
  });
});

describe("replicas follow", () => {
  it("the replica on bob follows the rollback at the replicator's next run, once, and incremental replication goes on", async () => {
    const v = await volume("pvc-rb-repl", { replicateTo: "bob" });
    const replica = `${bob.parent}/${v.leaf}`;
    const job = { id: `${v.leaf}.alice-bob`, origin: { kind: "volume" as const, volumeId: v.id }, source: { host: "alice", dataset: v.dataset }, target: { host: "bob", dataset: replica } };
    const good = await write(v.mountpoint);
    await run(alice, "zfs", "snapshot", `${v.dataset}@nightly`);
    expect((await engine.replicate(job)).action).toBe("full");
    await write(v.mountpoint);
    expect((await engine.replicate(job)).action).toBe("incremental");

    // The replicator's hold on its base does not block the rollback: it is released, and the replica follows.
    const result = await rollback(deps, { pvc: v.pvc, snapshot: "nightly", destroyNewer: true });
    expect(result.destroyed.some((s) => s.startsWith("zcsi-repl-"))).toBe(true);
    expect(await sha(alice, v.mountpoint)).toBe(good);

    const followed = await engine.replicate(job);
    expect(["full", "incremental"]).toContain(followed.action);
    expect(await prop(bob, replica, "zcsi:rollback-followed")).toBe("1");
    await run(bob, "zfs", "mount", replica);
    expect(await sha(bob, await prop(bob, replica, "mountpoint"))).toBe(good);
    await run(bob, "zfs", "unmount", replica);

    // Later runs are plain increments: the request was followed once.
    const later = await write(v.mountpoint);
    const next = await engine.replicate(job);
    expect(next.action).toBe("incremental");
    await run(bob, "zfs", "mount", replica);
    expect(await sha(bob, await prop(bob, replica, "mountpoint"))).toBe(later);
    await run(bob, "zfs", "unmount", replica);
  });
});
