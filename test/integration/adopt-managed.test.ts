/**
 * Adopted datasets managed like volumes once the operator asks (issue 16 item 2): `zcsi adopt
 * --snapshot-schedule --replicate-to`, ControllerModifyVolume, restores of a VolumeSnapshot of
 * an adopted PVC, and `zcsi rollback`, on real pools (two pool hosts, the real controller over
 * gRPC, the real snapshot scheduler and replicator; Kubernetes through the API fake). Files are
 * written and read on the pool hosts themselves, so the file runs on either backend.
 */
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubeConfigFor, KubeEventSink } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { KubeAdoptionApi } from "../../src/k8s/kube-adopt.js";
import { KubeClaimLookups } from "../../src/k8s/kube-claims.js";
import { KubeNamedLeases, KubeVolumeWorkloads } from "../../src/k8s/kube-mobility.js";
import { MoveLocks } from "../../src/mobility/move-lock.js";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import { createRegistry } from "../../src/metrics.js";
import { rollback } from "../../src/mobility/rollback.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import { adopt, type AdoptFlags } from "../../src/roles/adopt.js";
import { startReplicator, type RunningReplicator } from "../../src/roles/replicator.js";
import { SnapshotScheduler } from "../../src/snapshots/scheduler.js";
import { systemClock } from "../../src/util/clock.js";
import { adoptedReplicaLeaf } from "../../src/volumes/adopted-ids.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { grpcCode } from "../harness/csi-client.js";
import { ManualClock, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });
const mountCap = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let bob: PoolHostEnv;
let api: FakeApiServer;
let dataset: string;
let mountpoint: string;
let volumeId: string;
let replicator: RunningReplicator;
const clock = new ManualClock("2026-12-01T10:30:00Z");

async function must(host: PoolHostEnv, argv: string[]): Promise<string> {
  const r = await host.pool.exec.run(argv);
  if (r.exitCode !== 0) throw new Error(`${host.name}: ${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}
const zfs = (host: PoolHostEnv, ...args: string[]): Promise<string> => must(host, ["zfs", ...args]);
const prop = (host: PoolHostEnv, name: string, property: string): Promise<string> => zfs(host, "get", "-H", "-o", "value", property, name);
async function snapshots(host: PoolHostEnv, of: string): Promise<string[]> {
  const out = await zfs(host, "list", "-H", "-o", "name", "-t", "snapshot", "-r", of);
  return out.split("\n").filter((l) => l.startsWith(`${of}@`)).map((l) => l.slice(of.length + 1));
}
const code = grpcCode;

function runAdopt(flags: AdoptFlags): Promise<number> {
  return adopt(env.config, flags, { hosts: env.poolHosts, api: new KubeAdoptionApi(kubeConfigFor(api.url, { skipTLSVerify: true })), logger }, () => undefined);
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], poolSizeMiB: 256, adoptRoots: (pool) => [`${pool}/apps`] });
  [alice, bob] = env.hosts as [PoolHostEnv, PoolHostEnv];
  api = await startFakeApiServer();
  // What the operator had before zcsi: a dataset with data, and its own nightly snapshots,
  // one of them named like zcsi's scheduled ones (it carries no zcsi mark: it is still the operator's).
  dataset = `${alice.pool.pool}/apps/mysql`;
  await zfs(alice, "create", `${alice.pool.pool}/apps`);
  await zfs(alice, "create", dataset);
  await zfs(alice, "create", `${alice.pool.pool}/apps/shared`);
  mountpoint = await prop(alice, dataset, "mountpoint");
  await alice.pool.files.write(`${mountpoint}/ibdata1`, "rows v1\n");
  await zfs(alice, "snapshot", `${dataset}@nightly-1`);
  await zfs(alice, "snapshot", `${dataset}@zcsi-auto-2026-11-30T0000Z`);
  volumeId = `alice:${dataset}#adopted`;
  const kc = kubeConfigFor(api.url, { skipTLSVerify: true });
  replicator = await startReplicator(env.config, env.poolHosts, createReplicationEngine(env.poolHosts, { logger }), {
    logger,
    clock,
    autoStart: false,
    registry: createRegistry({ processMetrics: false }),
    events: new KubeEventRecorder(new KubeEventSink(kc), { clock, logger, component: "zcsi-replicator", instance: "test" }),
  });
}, 600_000);

afterAll(async () => {
  await replicator?.close();
  await api?.close();
  await env?.stop();
});

describe("an adopted dataset managed like a volume", () => {
  it("zcsi adopt --snapshot-schedule records the schedule on the dataset; a bad one or a read-only adoption changes nothing", async () => {
    await expect(runAdopt({ dataset, pvc: "db/mysql", snapshotSchedule: "sometimes" })).rejects.toMatchObject({ kind: "InvalidArgument" });
    await expect(runAdopt({ dataset, pvc: "team-a/mysql", readOnly: true, snapshotSchedule: "hourly=1" })).rejects.toMatchObject({ kind: "InvalidArgument" });
    expect(await prop(alice, dataset, "zcsi:adopted")).toBe("-");
    expect(await runAdopt({ dataset, pvc: "db/mysql", snapshotSchedule: "hourly=1" })).toBe(0);
    expect(await prop(alice, dataset, "zcsi:adopted")).toBe("read-write");
    expect(await prop(alice, dataset, "zcsi:snapshot-schedule")).toBe("hourly=1");
  });

  it("the snapshotter takes and prunes its own snapshots there with one extra listing per adoptRoot, and never the operator's", async () => {
    const scheduler = new SnapshotScheduler(env.poolHosts, { clock, logger });
    const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
    const gets = (): number => exec.counts.get("zfs get") ?? 0;
    const before = gets();
    clock.set("2026-12-01T10:30:00Z");
    const first = await scheduler.tick();
    // alice: its parent and its one adoptRoot (bob lists only its parent, on its own executor).
    expect(gets() - before).toBe(2);
    const tick = first.hosts.find((h) => h.poolHost === "alice")?.volumes.find((v) => v.volumeId === volumeId);
    expect(tick?.taken).toBe("zcsi-auto-2026-12-01T1030Z");
    clock.set("2026-12-01T12:30:00Z");
    const second = (await scheduler.tick()).hosts.find((h) => h.poolHost === "alice")?.volumes.find((v) => v.volumeId === volumeId);
    expect(second?.taken).toBe("zcsi-auto-2026-12-01T1230Z");
    expect(second?.pruned).toEqual(["zcsi-auto-2026-12-01T1030Z"]);
    expect(await snapshots(alice, dataset)).toEqual(["nightly-1", "zcsi-auto-2026-11-30T0000Z", "zcsi-auto-2026-12-01T1230Z"]);
  });

  it("ControllerModifyVolume adds replication; the replicator copies the dataset under bob's parent, apart from any volume's name", async () => {
    expect(await code(env.client.controllerModifyVolume({ volumeId: `alice:${dataset}#adopted-ro-team-a`, mutableParameters: { replicateTo: "bob" } }))).toBe(status.INVALID_ARGUMENT);
    expect(await prop(alice, dataset, "zcsi:replicate-to")).toBe("-");
    await env.client.controllerModifyVolume({ volumeId, mutableParameters: { replicateTo: "bob" } });
    expect(await prop(alice, dataset, "zcsi:replicate-to")).toBe("bob");
    const report = await replicator.runOnce();
    expect(report?.jobs).toHaveLength(1);
    const outcome = replicator.replicator.outcomes.at(-1);
    expect(outcome && "result" in outcome ? outcome.result.action : outcome).toBe("full");
    const target = `${bob.parent}/${adoptedReplicaLeaf("alice", dataset)}`;
    expect(await prop(bob, target, "zcsi:replica-of")).toBe(`alice:${dataset}`);
    expect(await prop(bob, target, "zcsi:volume")).toBe(volumeId);
    await zfs(bob, "mount", target);
    try {
      expect(await bob.pool.files.read(`${await prop(bob, target, "mountpoint")}/ibdata1`)).toBe("rows v1\n");
    } finally {
      await zfs(bob, "unmount", target);
    }
    // The operator's snapshots stay where they are; only zcsi's replication snapshot was added.
    expect((await snapshots(alice, dataset)).filter((s) => !s.startsWith("zcsi-repl-"))).toEqual(["nightly-1", "zcsi-auto-2026-11-30T0000Z", "zcsi-auto-2026-12-01T1230Z"]);
  });

  it("a VolumeSnapshot of the adopted PVC restores into a new volume with the snapshot's data", async () => {
    const snap = await env.client.createSnapshot({ sourceVolumeId: volumeId, name: "snapshot-mysql-1", parameters: {} });
    const snapshotId = snap.snapshot!.snapshotId;
    expect(snapshotId).toBe(`${volumeId}@snapshot-mysql-1`);
    await alice.pool.files.write(`${mountpoint}/ibdata1`, "rows v2\n");
    const restored = await env.client.createVolume({
      name: "pvc-restored-mysql",
      capacityRange: { requiredBytes: String(32 * MiB) },
      volumeCapabilities: [mountCap],
      parameters: {},
      volumeContentSource: { snapshot: { snapshotId } },
    });
    const v = restored.volume!;
    expect(v.contentSource?.snapshot?.snapshotId).toBe(snapshotId);
    expect(v.volumeId).toBe(`alice:${alice.parent}/pvc-restored-mysql`);
    // Same pool: a clone of the operator's dataset's snapshot.
    expect(await prop(alice, `${alice.parent}/pvc-restored-mysql`, "origin")).toBe(`${dataset}@snapshot-mysql-1`);
    expect(await alice.pool.files.read(`${v.volumeContext["mountpoint"]}/ibdata1`)).toBe("rows v1\n");
    await env.client.deleteVolume({ volumeId: v.volumeId });
    await env.client.deleteSnapshot({ snapshotId });
    expect(await snapshots(alice, dataset)).not.toContain("snapshot-mysql-1");
  });

  it("zcsi rollback rolls the adopted dataset back in place (never a read-only adoption), and the replica follows", async () => {
    const kc = kubeConfigFor(api.url, { token: "t", skipTLSVerify: true });
    const deps = { hosts: env.poolHosts, homes: new VolumeHomes(env.poolHosts, logger), driverName: env.config.driverName, claims: new KubeClaimLookups(kc), workloads: new KubeVolumeWorkloads(kc), events: new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-rollback", instance: "test" }), locks: new MoveLocks(new KubeNamedLeases(kc, "zcsi"), "ops-rollback/1", logger), logger };
    await alice.pool.files.write(`${mountpoint}/ibdata1`, "rows v3\n");
    await zfs(alice, "snapshot", `${dataset}@before-upgrade`);
    await alice.pool.files.write(`${mountpoint}/ibdata1`, "rows v4, broken\n");
    // The broken state reaches the replica before anyone notices.
    clock.advance(16 * 60_000);
    await replicator.runOnce();
    // A read-only adoption is never rolled back.
    const shared = `${alice.pool.pool}/apps/shared`;
    await zfs(alice, "snapshot", `${shared}@mine`);
    expect(await runAdopt({ dataset: shared, pvc: "team-a/shared", readOnly: true })).toBe(0);
    await expect(rollback(deps, { pvc: "team-a/shared", snapshot: "mine", destroyNewer: true })).rejects.toMatchObject({ kind: "FailedPrecondition", message: expect.stringMatching(/read-only adoption/) });
    expect(await prop(alice, shared, "zcsi:rollback")).toBe("-");

    // Without --destroy-newer: refused, naming the replication snapshot it would destroy.
    await expect(rollback(deps, { pvc: "db/mysql", snapshot: "before-upgrade" })).rejects.toMatchObject({ kind: "FailedPrecondition", message: expect.stringMatching(/@zcsi-repl-\S+ \(replication\).*--destroy-newer/) });
    expect(await alice.pool.files.read(`${mountpoint}/ibdata1`)).toBe("rows v4, broken\n");
    const result = await rollback(deps, { pvc: "db/mysql", snapshot: "before-upgrade", destroyNewer: true });
    expect(result).toMatchObject({ volumeId, dataset, snapshot: "before-upgrade" });
    expect(result.destroyed).toHaveLength(1);
    expect(result.destroyed[0]).toMatch(/^zcsi-repl-/);
    expect(await alice.pool.files.read(`${mountpoint}/ibdata1`)).toBe("rows v3\n");
    // The operator's older snapshots are untouched.
    expect(await snapshots(alice, dataset)).toEqual(expect.arrayContaining(["nightly-1", "zcsi-auto-2026-11-30T0000Z", "before-upgrade"]));
    // The replica follows the rollback at the next run, then receives again.
    clock.advance(16 * 60_000);
    await replicator.runOnce();
    const outcome = replicator.replicator.outcomes.at(-1);
    expect(outcome && "result" in outcome ? outcome.result.action : outcome).not.toBeUndefined();
    expect(outcome && "error" in outcome ? outcome.error : undefined).toBeUndefined();
    const target = `${bob.parent}/${adoptedReplicaLeaf("alice", dataset)}`;
    await zfs(bob, "mount", target);
    try {
      expect(await bob.pool.files.read(`${await prop(bob, target, "mountpoint")}/ibdata1`)).toBe("rows v3\n");
    } finally {
      await zfs(bob, "unmount", target);
    }
  });

  it("DeleteVolume of the adopted volume still destroys nothing", async () => {
    await env.client.deleteVolume({ volumeId });
    expect(await prop(alice, dataset, "zcsi:adopted")).toBe("read-write");
    expect(await alice.pool.files.read(`${mountpoint}/ibdata1`)).toBe("rows v3\n");
  });
});
