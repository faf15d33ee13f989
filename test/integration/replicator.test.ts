/**
 * The replicator role end to end: two real pool hosts (each behind its own sshd), volumes made
 * through the real CSI controller, the real replication engine, and a loopback Kubernetes API
 * (test/harness/fake-k8s.ts) holding the PersistentVolumes, Nodes and Events the role reads
 * and writes. The role is driven with runOnce() and a fake clock for its schedule; the data is
 * checked on the target pool, the replica state on the PV object in the fake API.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubeConfigFor, KubeEventSink, KubeNodeSource, KubePvAnnotator } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry } from "../../src/metrics.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import { startReplicator, type RunningReplicator } from "../../src/roles/replicator.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { k8sFixture, ManualClock, startFakeApiServer, type FakeApiServer, type WireObject } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const MIN = 60_000;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let api: FakeApiServer;
let clock: ManualClock;
let running: RunningReplicator;
let alice: PoolHostEnv;
let bob: PoolHostEnv;

async function must(host: PoolHostEnv, argv: string[]): Promise<string> {
  const r = await host.pool.exec.run(argv);
  if (r.exitCode !== 0) throw new Error(`${host.name}: ${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}
const zfs = (host: PoolHostEnv, ...args: string[]): Promise<string> => must(host, ["zfs", ...args]);
const prop = async (host: PoolHostEnv, name: string, property: string): Promise<string> => (await zfs(host, "get", "-H", "-o", "value", property, name)).trim();
const exists = async (host: PoolHostEnv, name: string): Promise<boolean> => (await host.pool.exec.run(["zfs", "list", "-H", "-o", "name", name])).exitCode === 0;

/** name → userrefs of every snapshot of a dataset. */
async function holds(host: PoolHostEnv, dataset: string): Promise<Record<string, number>> {
  const out = await zfs(host, "list", "-H", "-o", "name,userrefs", "-t", "snapshot", "-r", dataset);
  const entries = out
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t"))
    .filter(([name]) => name!.startsWith(`${dataset}@`))
    .map(([name, refs]) => [name!.slice(dataset.length + 1), Number(refs)] as const);
  return Object.fromEntries(entries);
}

/** The replica's file: mounted for the look (it is received unmounted), then unmounted again. */
async function replicaFile(dataset: string, file: string): Promise<string> {
  await zfs(bob, "mount", dataset);
  try {
    return await bob.pool.files.read(`${await prop(bob, dataset, "mountpoint")}/${file}`);
  } finally {
    await zfs(bob, "unmount", dataset);
  }
}

function pvObject(name: string, volumeId: string): WireObject {
  const pv = k8sFixture("pv");
  pv.metadata = { ...pv.metadata, name, uid: `9d2e4c6a-1b3f-4e5d-8a7c-${randomBytes(6).toString("hex")}` };
  (pv.spec as { csi: { volumeHandle: string } }).csi.volumeHandle = volumeId;
  return pv;
}

const annotation = (pv: string): string | undefined => (api.pvs.get(pv)?.metadata.annotations as Record<string, string> | undefined)?.["zcsi.dev/replica.bob"];

function node(fixture: string, name: string, annotations: Record<string, string>): WireObject {
  const n = k8sFixture(fixture);
  const kept = Object.fromEntries(Object.entries(n.metadata.annotations as Record<string, string>).filter(([k]) => !k.startsWith("zcsi.dev/")));
  n.metadata = { ...n.metadata, name, labels: { ...(n.metadata.labels as object), "kubernetes.io/hostname": name }, annotations: { ...kept, ...annotations } };
  return n;
}

async function createVolume(name: string, parameters: Record<string, string>): Promise<string> {
  const res = await env.client.createVolume({
    name,
    capacityRange: { requiredBytes: String(32 * MiB) },
    volumeCapabilities: [mountCap],
    parameters: { ...parameters, "csi.storage.k8s.io/pv/name": name, "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "default" },
  });
  const volumeId = res.volume!.volumeId;
  api.pvs.set(name, pvObject(name, volumeId));
  return volumeId;
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], configExtra: { defaultCapacityBytes: String(64 * MiB) } });
  [alice, bob] = env.hosts as [PoolHostEnv, PoolHostEnv];
  api = await startFakeApiServer();
  const kc = kubeConfigFor(api.url, { skipTLSVerify: true });
  clock = new ManualClock(Date.now());
  running = await startReplicator(env.config, env.poolHosts, createReplicationEngine(env.poolHosts, { logger: silentLogger }), {
    logger: silentLogger,
    clock,
    autoStart: false,
    registry: createRegistry({ processMetrics: false }),
    nodes: new KubeNodeSource(kc),
    pvs: new KubePvAnnotator(kc),
    events: new KubeEventRecorder(new KubeEventSink(kc), { clock, logger: silentLogger, component: "zcsi-replicator", instance: "test" }),
    annotationIntervalSeconds: 900,
  });
}, 120_000);

afterAll(async () => {
  await running?.close();
  await api?.close();
  await env?.stop();
});

describe("zcsi replicator with two pool hosts", () => {
  it("copies a volume created with replicateTo to its target and shows the replica's state on the PV", async () => {
    await createVolume("pvc-repl-1", { poolHost: "alice", replicateTo: "bob", replicationInterval: "15m" });
    const source = `${alice.parent}/pvc-repl-1`;
    const target = `${bob.parent}/pvc-repl-1`;
    const first = randomBytes(64 * 1024).toString("base64");
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-1/a.txt`, first);

    const report = await running.runOnce();
    expect(report?.jobs).toHaveLength(1);
    const outcome = running.replicator.outcomes.at(-1);
    expect(outcome && "result" in outcome ? outcome.result.action : outcome).toBe("full");
    expect(await prop(bob, target, "zcsi:replica-of")).toBe(`alice:${source}`);
    expect(await replicaFile(target, "a.txt")).toBe(first);
    const value = annotation("pvc-repl-1");
    expect(value).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ lag=[0-9hms]+ snapshot=zcsi-repl-\S+ epoch=1$/);
    // The PV names the home the run sent from, and its epoch.
    expect((api.pvs.get("pvc-repl-1")?.metadata.annotations as Record<string, string>)["zcsi.dev/home"]).toBe(`alice:${source} epoch=1`);
    const snapshot = /snapshot=(\S+)/.exec(value ?? "")![1]!;
    expect(await exists(bob, `${target}@${snapshot}`)).toBe(true);
    // The provisioner's annotations are still there: only zcsi's key was patched.
    expect(api.pvs.get("pvc-repl-1")?.metadata.annotations).toMatchObject({ "pv.kubernetes.io/provisioned-by": "zfs.zcsi.dev" });

    // The replica is not a volume: a retried CreateVolume still answers with the source, and
    // ListVolumes does not show the copy.
    const retried = await env.client.createVolume({
      name: "pvc-repl-1",
      capacityRange: { requiredBytes: String(32 * MiB) },
      volumeCapabilities: [mountCap],
      parameters: { poolHost: "alice", replicateTo: "bob", replicationInterval: "15m", "csi.storage.k8s.io/pv/name": "pvc-repl-1", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "default" },
    });
    expect(retried.volume?.volumeId).toBe(`alice:${source}`);
    expect((await env.client.listVolumes({})).entries.map((e) => e.volume?.volumeId)).toEqual([`alice:${source}`]);

    // Not due again yet: nothing runs.
    const runs = running.replicator.outcomes.length;
    clock.advance(MIN);
    await running.runOnce();
    expect(running.replicator.outcomes.length).toBe(runs);

    // After the interval: an increment carries the new file.
    const second = randomBytes(32 * 1024).toString("base64");
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-1/b.txt`, second);
    clock.advance(15 * MIN);
    await running.runOnce();
    const next = running.replicator.outcomes.at(-1);
    expect(next && "result" in next ? next.result.action : next).toBe("incremental");
    expect(await replicaFile(target, "b.txt")).toBe(second);
    expect(annotation("pvc-repl-1")).not.toBe(value);
  });

  it("on a diverged target: refuses, destroys nothing, records a Warning Event and error= on the PV", async () => {
    await createVolume("pvc-repl-div", { poolHost: "alice", replicateTo: "bob", replicationInterval: "15m" });
    const target = `${bob.parent}/pvc-repl-div`;
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-div/a.txt`, "one");
    clock.advance(15 * MIN);
    await running.runOnce();
    expect(await exists(bob, target)).toBe(true);
    // Someone writes into the replica behind zcsi's back.
    await zfs(bob, "set", "readonly=off", target);
    await zfs(bob, "mount", target);
    await bob.pool.files.write(`${await prop(bob, target, "mountpoint")}/intruder.txt`, "changed on the target");
    await bob.pool.files.sync();
    await zfs(bob, "unmount", target);
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-div/a.txt`, "two");
    clock.advance(15 * MIN);
    await running.runOnce();

    expect(annotation("pvc-repl-div")).toMatch(/ error=\S/);
    const events = api.requests.filter((r) => r.method === "POST" && r.path === "/api/v1/namespaces/default/events").map((r) => r.body as { reason: string; involvedObject: { name: string } });
    expect(events).toContainEqual(expect.objectContaining({ reason: "ReplicationRefused", involvedObject: expect.objectContaining({ name: "pvc-repl-div" }) }));
    // Nothing destroyed: the intruder's file is still on the target.
    await zfs(bob, "mount", target);
    expect(await bob.pool.files.read(`${await prop(bob, target, "mountpoint")}/intruder.txt`)).toBe("changed on the target");
    await zfs(bob, "unmount", target);
  });

  it("runs jobs from Node annotations, and releases their holds when the annotation is removed", async () => {
    const source = `${alice.parent}/apps/db`;
    const target = `${bob.parent}/replicas/db`;
    await zfs(alice, "create", "-p", source);
    await zfs(bob, "create", `${bob.parent}/replicas`);
    await alice.pool.files.write(`${await prop(alice, source, "mountpoint")}/dump.sql`, "CREATE TABLE t (x int);");
    api.nodes = [
      node("node-pool-1-source", "alice", { "zcsi.dev/replication-source": source }),
      node("node-pool-2-replica", "bob", { "zcsi.dev/replication-replica": `${source}=${target}` }),
      node("node-worker-unlabelled", "worker-1", { "zcsi.dev/replication-replica": source }),
    ];
    clock.advance(MIN);
    const report = await running.runOnce();
    const annotationJobs = running.replicator.currentJobs.filter((s) => s.job.origin.kind === "annotation");
    // worker-1 is not labelled: only alice -> bob.
    expect(annotationJobs.map((s) => [s.job.source, s.job.target])).toEqual([[{ host: "alice", dataset: source }, { host: "bob", dataset: target }]]);
    const id = annotationJobs[0]!.job.id;
    expect(report?.jobs).toContain(id);
    expect(await replicaFile(target, "dump.sql")).toBe("CREATE TABLE t (x int);");
    expect(Object.values(await holds(alice, source))).toContain(1);

    // The replica annotation goes: the job goes, its holds are released, the replica stays.
    api.nodes = [node("node-pool-1-source", "alice", { "zcsi.dev/replication-source": source }), node("node-pool-2-replica", "bob", {})];
    clock.advance(MIN);
    const after = await running.runOnce();
    expect(after?.released).toEqual([id]);
    expect(after?.jobs).not.toContain(id);
    expect(Object.values(await holds(alice, source)).every((n) => n === 0)).toBe(true);
    expect(await exists(bob, target)).toBe(true);
  });

  it("DeleteVolume of a replicated volume releases the holds, destroys the source and keeps the replica", async () => {
    const source = `${alice.parent}/pvc-repl-1`;
    const target = `${bob.parent}/pvc-repl-1`;
    expect(Object.values(await holds(alice, source))).toContain(1);
    await env.client.deleteVolume({ volumeId: `alice:${source}` });
    expect(await exists(alice, source)).toBe(false);
    expect(await exists(bob, target)).toBe(true);
    expect(await replicaFile(target, "a.txt")).not.toBe("");
    // The replicator sees the job gone at its next pass and removes the PV annotation.
    clock.advance(MIN);
    const report = await running.runOnce();
    expect(report?.released.length).toBeGreaterThan(0);
    expect(annotation("pvc-repl-1")).toBeUndefined();
  });
  it("follows a ModifyVolume at its next pass: replication started on a live volume, then its interval changed", async () => {
    const volumeId = await createVolume("pvc-repl-mod", { poolHost: "alice" });
    const source = `${alice.parent}/pvc-repl-mod`;
    const target = `${bob.parent}/pvc-repl-mod`;
    const jobOf = () => running.replicator.currentJobs.find((s) => s.job.source.dataset === source);
    const runsOf = (id: string | undefined) => running.replicator.outcomes.filter((o) => o.jobId === id).length;
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-mod/a.txt`, "written before replication");
    clock.advance(MIN);
    await running.runOnce();
    expect(jobOf()).toBeUndefined();

    await env.client.controllerModifyVolume({ volumeId, mutableParameters: { replicateTo: "bob" } });
    clock.advance(MIN);
    await running.runOnce();
    expect(jobOf()?.intervalSeconds).toBe(15 * 60);
    expect(await replicaFile(target, "a.txt")).toBe("written before replication");

    await env.client.controllerModifyVolume({ volumeId, mutableParameters: { replicationInterval: "1h" } });
    await alice.pool.files.write(`${alice.mountRoot}/pvc-repl-mod/b.txt`, "written after the change");
    const id = jobOf()?.job.id;
    const runs = runsOf(id);
    clock.advance(16 * MIN); // due under the old 15m interval, not under the new 1h
    await running.runOnce();
    expect(jobOf()?.intervalSeconds).toBe(60 * 60);
    expect(runsOf(id)).toBe(runs);
    clock.advance(45 * MIN);
    await running.runOnce();
    expect(runsOf(id)).toBe(runs + 1);
    expect(await replicaFile(target, "b.txt")).toBe("written after the change");
  });
});
