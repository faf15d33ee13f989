/**
 * Copies that serve (issue 14): the promotion primitive on real pools, with the real controller
 * over gRPC. A volume replicated alice → bob, bob's copy promoted: ControllerPublish returns
 * bob, ControllerGetVolume / Expand / CreateSnapshot / DeleteVolume act on bob's copy under the
 * same volume id, and alice's copy, demoted, is a readonly replica that bob replicates into.
 * Every step is checked on the pools (`zfs get`, files), not only in replies.
 *
 * Both backends (files are written and checksummed on the pool hosts through their executors).
 * On the OpenZFS VM (two VMs, alice and bob, TCG-slow) only what OpenZFS changes runs: the
 * failover with alice's sshd down, its fence and resync (clone, promote, incremental receive),
 * and a move whose sends are cut and resumed with `zfs send -t`; the promotion primitive, the
 * forced failover's --discard-diverged and the snapshotter's fence run on zfs-fuse only.
 */
import { status } from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { isZcsiError } from "../../src/errors.js";
import { SshExecutor } from "../../src/exec/ssh.js";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { KubeNamedLeases, KubeVolumeWorkloads } from "../../src/k8s/kube-mobility.js";
import { failover, FAILOVER_ANNOTATION } from "../../src/mobility/failover.js";
import { MoveLocks } from "../../src/mobility/move-lock.js";
import { Migrator } from "../../src/mobility/migrate.js";
import { demoteCopy, promoteCopy } from "../../src/mobility/promote.js";
import type { MoveStep } from "../../src/mobility/steps.js";
import { moveWiring } from "../../src/roles/move-wiring.js";
import { mobilityContext, runFailover, runResync, type MobilityContext } from "../../src/roles/mobility.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import type { ReplicationEngine, ReplicationJob } from "../../src/replication/types.js";
import { collectStatus, renderStatus } from "../../src/status/status.js";
import type { PvEvent } from "../../src/k8s/events.js";
import { fenceEvents } from "../../src/roles/fence-events.js";
import { SnapshotScheduler } from "../../src/snapshots/scheduler.js";
import { systemClock } from "../../src/util/clock.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { zfsBackend } from "../harness/backend.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { CuttingExecutor } from "../harness/cutting-executor.js";
import { k8sFixture, ManualClock, startFakeApiServer, type FakeApiServer, type WireObject } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const onVm = zfsBackend() === "openzfs-vm";
const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });
const mountCap = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let bob: PoolHostEnv;
let engine: ReplicationEngine;
let homes: VolumeHomes;
let api: FakeApiServer;
let ctx: MobilityContext;
/** The same pool hosts over connections of their own whose executors log and can cut streams. */
let cutting: { hosts: PoolHosts; exec(name: string): CuttingExecutor };

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], poolSizeMiB: 256 });
  [alice, bob] = env.hosts as [PoolHostEnv, PoolHostEnv];
  engine = createReplicationEngine(env.poolHosts, { logger });
  homes = new VolumeHomes(env.poolHosts, logger);
  api = await startFakeApiServer();
  ctx = await mobilityContext(env.config, kubeConfigFor(api.url, { token: "t", skipTLSVerify: true }), "zcsi", logger, env.poolHosts);
  const privateKey = await readFile(env.config.privateKeyFile);
  const execs = new Map(
    env.config.poolHosts.map((h) => [
      h.name,
      new CuttingExecutor(new SshExecutor({ host: h.name, address: h.address, port: h.port, user: h.user, privateKey, hostKeys: h.hostKeys, sudo: h.sudo, defaultTimeoutMs: 60_000, logger })),
    ]),
  );
  cutting = {
    hosts: new PoolHosts(env.config.poolHosts.map((config) => ({ config, exec: execs.get(config.name)! })), { timeoutMs: 60_000 }),
    exec: (name) => execs.get(name)!,
  };
}, 600_000);

afterAll(async () => {
  await cutting?.hosts.close();
  await ctx?.close();
  await api?.close();
  await env?.stop();
});

function req(name: string, parameters: Record<string, string>): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(32 * MiB) }, volumeCapabilities: [mountCap], parameters };
}

async function get(host: PoolHostEnv, dataset: string, property: string, columns = "value"): Promise<string> {
  if (property === "readonly" && columns === "value") return readonlyOf(host, dataset);
  const r = await host.pool.exec.run(["zfs", "get", "-Hp", "-o", columns, property, dataset]);
  if (r.exitCode !== 0) throw new Error(`${host.name}: zfs get ${property} ${dataset}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** The stored readonly setting: zfs-fuse reports a mounted dataset's live mount option (source `temporary`) instead. */
async function readonlyOf(host: PoolHostEnv, dataset: string): Promise<string> {
  const [value, source] = (await get(host, dataset, "readonly", "value,source")).split("\t");
  return source === "temporary" ? (value === "on" ? "off" : "on") : (value ?? "");
}

async function snapshotsOf(host: PoolHostEnv, dataset: string): Promise<string[]> {
  const r = await host.pool.exec.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset]);
  return r.stdout.split("\n").filter((l) => l !== "");
}

const sha = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

/** A file of a volume's copy, by its path on the pool host. */
const at = (host: PoolHostEnv, leaf: string, file: string): string => `${host.mountRoot}/${leaf}/${file}`;

/** Writes a file on the pool host, through its executor (the same on both backends), and syncs it. */
async function put(host: PoolHostEnv, path: string, data: Buffer): Promise<void> {
  await host.pool.files.write(path, data);
  await host.pool.files.sync();
}

/** sha256 of a file on the pool host; undefined when there is no such file. */
async function shaOn(host: PoolHostEnv, path: string): Promise<string | undefined> {
  const r = await host.pool.exec.run(["sha256sum", path]);
  if (r.exitCode === 0) return r.stdout.slice(0, 64);
  if (!(await host.pool.files.exists(path))) return undefined;
  throw new Error(`${host.name}: sha256sum ${path}: ${r.stderr.trim()}`);
}

export function job(volumeId: string, from: PoolHostEnv, to: PoolHostEnv, leaf: string): ReplicationJob {
  const dataset = (h: PoolHostEnv): string => `${h.parent}/${leaf}`;
  return { id: `${leaf}.${from.name}-${to.name}`, origin: { kind: "volume", volumeId }, source: { host: from.name, dataset: dataset(from) }, target: { host: to.name, dataset: dataset(to) } };
}

/** `zcsi migrate` as the CLI wires it, on `hosts`; `afterStep` throws to stand for a killed CLI or arms a cut. */
function movesWith(hosts: PoolHosts, afterStep?: (step: MoveStep) => Promise<void>): Migrator {
  const kc = kubeConfigFor(api.url, { token: "t", skipTLSVerify: true });
  return new Migrator({
    hosts,
    homes: new VolumeHomes(hosts, logger),
    engine: createReplicationEngine(hosts, { logger }),
    ...moveWiring(kc, "zcsi", "mobility-test", hosts, logger),
    workloads: new KubeVolumeWorkloads(kc),
    driverName: env.config.driverName,
    clock: systemClock,
    logger,
    ...(afterStep && { afterStep }),
  });
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    if (isZcsiError(err)) return err.kind;
    throw err;
  }
}

describe.skipIf(onVm)("promoting a replica", () => {
  it("makes bob's copy the volume for every controller call, under the same id, and alice's copy a replica of it", async () => {
    const leaf = "pvc-promote-1";
    const created = await env.client.createVolume(req(leaf, { poolHost: "alice", replicateTo: "bob" }));
    const volumeId = created.volume!.volumeId;
    const onAlice = `${alice.parent}/${leaf}`;
    const onBob = `${bob.parent}/${leaf}`;
    const payload = Buffer.alloc(3 * MiB, 7);
    await put(alice, at(alice, leaf, "data.bin"), payload);
    await engine.replicate(job(volumeId, alice, bob, leaf));
    expect(await get(bob, onBob, "zcsi:role")).toBe("replica");
    // The replica carries the volume's metadata for a promotion with its home gone.
    expect(JSON.parse(await get(bob, onBob, "zcsi:meta"))).toMatchObject({ "zcsi:csi-name": leaf, refquota: String(32 * MiB), "zcsi:replicate-to": "bob" });

    // Refused, nothing changed: a host with no copy, a copy that is not there.
    expect(await kindOf(promoteCopy(env.poolHosts, homes, `alice:${alice.parent}/pvc-none`, "bob", logger))).toBe("FailedPrecondition");
    const other = await env.client.createVolume(req("pvc-promote-solo", { poolHost: "alice" }));
    expect(await kindOf(promoteCopy(env.poolHosts, homes, other.volume!.volumeId, "bob", logger))).toBe("FailedPrecondition");
    expect(await get(bob, onBob, "zcsi:role")).toBe("replica");

    const promoted = await promoteCopy(env.poolHosts, homes, volumeId, "bob", logger);
    expect(promoted).toMatchObject({ host: "bob", dataset: onBob, epoch: 2, already: false });
    expect(promoted.previousHome?.host).toBe("alice");
    // Rerun: the home already, nothing changed.
    expect((await promoteCopy(env.poolHosts, homes, volumeId, "bob", logger)).already).toBe(true);
    for (const [p, v] of Object.entries({ "zcsi:role": "primary", "zcsi:epoch": "2", readonly: "off", "zcsi:replica-of": "-", "zcsi:volume": volumeId, "zcsi:csi-name": leaf, "zcsi:state": "ready", refquota: String(32 * MiB), "zcsi:replicate-to": "-", mounted: "yes" })) {
      expect(await get(bob, onBob, p), p).toBe(v);
    }
    expect(await shaOn(bob, at(bob, leaf, "data.bin"))).toBe(sha(payload));

    // ControllerPublish names bob; alice's copy, a primary at epoch 1, was fenced by that lookup.
    const published = await env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: created.volume!.volumeContext });
    expect(published.publishContext).toMatchObject({ poolHost: "bob", dataset: onBob, epoch: "2" });
    expect(await get(alice, onAlice, "readonly")).toBe("on");
    expect(await get(alice, onAlice, "zcsi:fenced")).toMatch(/superseded by epoch 2/);

    // ControllerGetVolume: the same id and volume_context (the PV's), bob's capacity.
    const got = await env.client.controllerGetVolume({ volumeId });
    expect(got.volume?.volumeId).toBe(volumeId);
    expect(got.volume?.volumeContext).toEqual(created.volume!.volumeContext);
    expect(got.status?.volumeCondition?.abnormal).toBe(false);

    // Expand acts on bob's copy; alice's fenced copy keeps its size.
    const expanded = await env.client.controllerExpandVolume({ volumeId, capacityRange: { requiredBytes: String(48 * MiB) } });
    expect(expanded.capacityBytes).toBe(String(48 * MiB));
    expect(await get(bob, onBob, "refquota")).toBe(String(48 * MiB));
    expect(await get(alice, onAlice, "refquota")).toBe(String(32 * MiB));

    // CreateSnapshot of the volume: taken on bob, belonging to the volume's id.
    const snap = await env.client.createSnapshot({ name: "snapshot-promote-1", sourceVolumeId: volumeId, parameters: {} });
    expect(snap.snapshot?.snapshotId).toBe(`bob:${onBob}@snapshot-promote-1`);
    expect(snap.snapshot?.sourceVolumeId).toBe(volumeId);
    expect(await snapshotsOf(bob, onBob)).toContain(`${onBob}@snapshot-promote-1`);
    expect(await snapshotsOf(alice, onAlice)).not.toContain(`${onAlice}@snapshot-promote-1`);

    // ListVolumes: the volume once, served by bob.
    const listed = (await env.client.listVolumes({})).entries.filter((e) => e.volume?.volumeId === volumeId);
    expect(listed).toHaveLength(1);

    // Demote alice: a readonly replica of bob at epoch 2; bob replicates into it.
    await demoteCopy(env.poolHosts, homes, volumeId, "alice", logger);
    for (const [p, v] of Object.entries({ "zcsi:role": "replica", "zcsi:epoch": "2", readonly: "on", "zcsi:replica-of": `bob:${onBob}`, "zcsi:fenced": "-" })) {
      expect(await get(alice, onAlice, p), p).toBe(v);
    }
    // Stale, alice was no replication target of bob; a replica now, it is one.
    expect(await get(bob, onBob, "zcsi:replicate-to")).toBe("alice");
    expect(await kindOf(demoteCopy(env.poolHosts, homes, volumeId, "bob", logger))).toBe("FailedPrecondition"); // the home
    await put(bob, at(bob, leaf, "after.bin"), Buffer.alloc(MiB, 9));
    const back = await engine.replicate(job(volumeId, bob, alice, leaf));
    expect(back.action).toBe("incremental");
    // Replication never runs from the demoted copy.
    expect(await kindOf(engine.replicate(job(volumeId, alice, bob, leaf)))).toBe("FailedPrecondition");

    // DeleteVolume destroys the home (bob) and keeps the replica (alice); its snapshots go first.
    await expect(env.client.deleteVolume({ volumeId })).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
    await env.client.deleteSnapshot({ snapshotId: snap.snapshot!.snapshotId });
    await env.client.deleteVolume({ volumeId });
    expect((await bob.pool.exec.run(["zfs", "list", onBob])).exitCode).not.toBe(0);
    expect(await get(alice, onAlice, "zcsi:role")).toBe("replica");
    // Gone: the retry is OK, and ControllerGetVolume is NOT_FOUND.
    await env.client.deleteVolume({ volumeId });
    await expect(env.client.controllerGetVolume({ volumeId })).rejects.toMatchObject({ code: status.NOT_FOUND });
  });
});

async function exists(host: PoolHostEnv, name: string): Promise<boolean> {
  return (await host.pool.exec.run(["zfs", "list", "-H", "-o", "name", name])).exitCode === 0;
}

/**
 * Until the driver's connection to `host` answers again after an sshd restart (it backs off).
 * Asks for the parent dataset only, never the volume: a lookup of the volume would fence.
 */
async function untilReachable(host: string, parent: string): Promise<void> {
  for (let attempt = 0; attempt < 120; attempt++) {
    try {
      await env.poolHosts.get(host).zfs.get([parent], ["type"]);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`pool host ${host} did not answer again`);
}

describe("failover with the home's pool host gone", () => {
  const leaf = "pvc-failover-1";
  const onAlice = (): string => `${alice.parent}/${leaf}`;
  const onBob = (): string => `${bob.parent}/${leaf}`;
  let volumeId = "";
  const replicated = Buffer.alloc(2 * MiB, 3);
  const late = Buffer.alloc(MiB, 5);

  it("refuses while the home answers (no --force), changing nothing", async () => {
    const created = await env.client.createVolume(req(leaf, { poolHost: "alice", replicateTo: "bob" }));
    volumeId = created.volume!.volumeId;
    await put(alice, at(alice, leaf, "replicated.bin"), replicated);
    await engine.replicate(job(volumeId, alice, bob, leaf));
    // Written after the last replicated snapshot: the data-loss window.
    await put(alice, at(alice, leaf, "late.bin"), late);
    const pv = k8sFixture("pv");
    pv.metadata.name = leaf;
    (pv.spec as { csi: { volumeHandle: string } }).csi.volumeHandle = volumeId;
    api.pvs.set(leaf, pv);
    const va = k8sFixture("volumeattachment");
    (va.spec as { attacher: string; source: { persistentVolumeName: string } }).attacher = env.config.driverName;
    (va.spec as { source: { persistentVolumeName: string } }).source.persistentVolumeName = leaf;
    api.volumeAttachments.set(String(va.metadata.name), va);
    const unrelated = structuredClone(va);
    unrelated.metadata.name = "csi-unrelated";
    (unrelated.spec as { source: { persistentVolumeName: string } }).source.persistentVolumeName = "pvc-other";
    api.volumeAttachments.set("csi-unrelated", unrelated);
    const pod = k8sFixture("pod-using-pvc");
    api.pods.set("db/postgres-0", pod);
    const bystander = structuredClone(pod);
    bystander.metadata.name = "web-0";
    (bystander.spec as { volumes: unknown[] }).volumes = [{ name: "data", persistentVolumeClaim: { claimName: "www" } }];
    api.pods.set("db/web-0", bystander);

    const out: string[] = [];
    expect(await runFailover(ctx, { volumeIds: [volumeId] }, (t) => out.push(t))).toBe(1);
    expect(out.join("")).toMatch(/not failed over: .*home alice:.* answers.*--force.*nothing changed/);
    expect(await get(bob, onBob(), "zcsi:role")).toBe("replica");
    expect(await get(alice, onAlice(), "zcsi:role")).toBe("primary");
    expect(api.leases.size).toBe(0);
    expect(api.volumeAttachments.size).toBe(2);
    expect(api.pods.size).toBe(2);
  });

  it("with alice's sshd down, two racing failovers: exactly one promotes bob (epoch 2) with the replicated data, and pods re-attach to bob", async () => {
    await alice.sshd.kill();
    const leases = new KubeNamedLeases(kubeConfigFor(api.url, { token: "t", skipTLSVerify: true }), "zcsi");
    const other = { ...ctx.deps, locks: new MoveLocks(leases, "ops-2/222", logger) };
    const out: string[] = [];
    const [cli, direct] = await Promise.allSettled([runFailover(ctx, { volumeIds: [volumeId] }, (t) => out.push(t)), failover(other, { volumeId })]);
    const directWon = direct.status === "fulfilled" && !direct.value.already;
    const cliWon = cli.status === "fulfilled" && cli.value === 0;
    expect([cliWon, directWon].filter(Boolean)).toHaveLength(1);
    if (!directWon) expect(direct.status === "rejected" && isZcsiError(direct.reason, "FailedPrecondition")).toBe(true);
    else expect(out.join("")).toMatch(/not failed over/);
    // One promotion: epoch 2, not 3.
    expect(await get(bob, onBob(), "zcsi:epoch")).toBe("2");
    expect(await get(bob, onBob(), "zcsi:role")).toBe("primary");
    expect(await readonlyOf(bob, onBob())).toBe("off");
    expect(await shaOn(bob, at(bob, leaf, "replicated.bin"))).toBe(sha(replicated));
    expect(await shaOn(bob, at(bob, leaf, "late.bin"))).toBeUndefined();
    if (cliWon) expect(out.join("")).toMatch(/failed over from alice to bob, epoch 2\n  data-loss window: writes on alice after \S+ \(last replicated snapshot zcsi-repl-/);
    // Recorded on the PV: an Event and an annotation; the attachment and the pod of this PV are gone, the others kept.
    const events = api.requests.filter((r) => r.method === "POST" && r.path.endsWith("/events")).map((r) => r.body as { reason: string; message: string; involvedObject: { name: string } });
    expect(events.find((e) => e.reason === "FailedOver")).toMatchObject({ involvedObject: { name: leaf }, message: expect.stringMatching(/from alice to bob \(epoch 2\); data written after .* is not on bob/) as unknown });
    const annotations = api.pvs.get(leaf)?.metadata.annotations as Record<string, string>;
    expect(JSON.parse(annotations[FAILOVER_ANNOTATION]!)).toMatchObject({ from: "alice", to: "bob", epoch: 2 });
    expect(annotations["zcsi.dev/home"]).toBe(`bob:${bob.parent}/${leaf} epoch=2`);
    expect([...api.volumeAttachments.keys()]).toEqual(["csi-unrelated"]);
    expect([...api.pods.keys()]).toEqual(["db/web-0"]);
    expect(api.leases.size).toBe(0);
    // ControllerPublish names bob while alice is down.
    const published = await env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: {} });
    expect(published.publishContext).toMatchObject({ poolHost: "bob", dataset: onBob(), epoch: "2" });
  });

  it("when alice returns, its copy is fenced (readonly, zcsi:fenced) at the first lookup, nothing destroyed, and never published", async () => {
    await alice.sshd.restart();
    await untilReachable("alice", alice.parent);
    // Any controller call finds bob's copy and fences alice's, not only ControllerPublish:
    // alice's copy still says primary, and must never be read, grown or destroyed as the volume.
    const got = await env.client.controllerGetVolume({ volumeId });
    expect(got.volume?.volumeId).toBe(volumeId);
    expect(await readonlyOf(alice, onAlice())).toBe("on");
    const published = await env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: {} });
    expect(published.publishContext).toMatchObject({ poolHost: "bob" });
    expect(await readonlyOf(alice, onAlice())).toBe("on");
    expect(await get(alice, onAlice(), "zcsi:fenced")).toMatch(/superseded by epoch 2 on bob/);
    expect(await get(alice, onAlice(), "zcsi:role")).toBe("primary");
    expect(await exists(alice, onAlice())).toBe(true);
    expect(await shaOn(alice, at(alice, leaf, "late.bin"))).toBe(sha(late));
    // A second failover to bob: already there, nothing changes.
    const again = await failover(ctx.deps, { volumeId, to: "bob" });
    expect(again).toMatchObject({ already: true, epoch: 2 });
  });

  it("resync refuses the home's copy, then makes alice a replica of bob keeping the diverged data aside, and refuses a second time", async () => {
    const out: string[] = [];
    expect(await runResync(ctx, { volumeIds: [volumeId], host: "bob" }, (t) => out.push(t))).toBe(1);
    expect(out.join("")).toMatch(/is the home of .*nothing changed/);
    const leftBefore = await snapshotsOf(alice, onAlice());
    out.length = 0;
    const code = await runResync(ctx, { volumeIds: [volumeId], host: "alice" }, (t) => out.push(t));
    expect(code, out.join("")).toBe(0); // what was printed shows why, should it fail
    const text = out.join("");
    expect(text).toMatch(/the copy on alice is a replica of bob \(epoch 2\); replication incremental to zcsi-repl-\S+ from zcsi-repl-/);
    const kept = /diverged data kept: alice:(\S+) \(snapshot @(zcsi-diverged-\S+)\)/.exec(text);
    expect(kept).not.toBeNull();
    const [, keptDataset, keptSnapshot] = kept as unknown as [string, string, string];
    expect(keptDataset).toMatch(new RegExp(`^${alice.parent}/${leaf}-diverged-[0-9]{8}T[0-9]{6}Z$`));
    // The diverged data: kept, readonly, marked, with the write bob never got.
    expect(JSON.parse(await get(alice, keptDataset, "zcsi:diverged"))).toMatchObject({ volume: volumeId, epoch: 1, home: `bob:${onBob()}` });
    expect(await readonlyOf(alice, keptDataset)).toBe("on");
    expect(await snapshotsOf(alice, keptDataset)).toContain(`${keptDataset}@${keptSnapshot}`);
    const keptAt = await get(alice, keptDataset, "mountpoint");
    expect(await shaOn(alice, `${keptAt}/late.bin`)).toBe(sha(late));
    expect(await shaOn(alice, `${keptAt}/replicated.bin`)).toBe(sha(replicated));
    // alice's copy: a replica of bob at epoch 2, holding bob's newest snapshot, with the older ones it had.
    for (const [p, v] of Object.entries({ "zcsi:role": "replica", "zcsi:epoch": "2", "zcsi:replica-of": `bob:${onBob()}`, "zcsi:fenced": "-", readonly: "on" })) {
      expect(await get(alice, onAlice(), p), p).toBe(v);
    }
    const newestGuid = async (h: PoolHostEnv, ds: string): Promise<string> => {
      const names = (await snapshotsOf(h, ds)).filter((n) => n.includes("@zcsi-repl-"));
      return get(h, names[names.length - 1]!, "guid");
    };
    expect(await newestGuid(alice, onAlice())).toBe(await newestGuid(bob, onBob()));
    expect(leftBefore.length).toBeGreaterThan(0);
    // Replication runs bob → alice from now on: another write on bob arrives incrementally.
    await put(bob, at(bob, leaf, "after-resync.bin"), Buffer.alloc(MiB, 1));
    expect((await engine.replicate(job(volumeId, bob, alice, leaf))).action).toBe("incremental");
    expect(await newestGuid(alice, onAlice())).toBe(await newestGuid(bob, onBob()));
    // Not stale any more: refused, nothing changed.
    out.length = 0;
    const snapsBefore = await snapshotsOf(alice, onAlice());
    expect(await runResync(ctx, { volumeIds: [volumeId], host: "alice" }, (t) => out.push(t))).toBe(1);
    expect(out.join("")).toMatch(/is a replica \(epoch 2\), not stale.*nothing changed/);
    expect(await snapshotsOf(alice, onAlice())).toEqual(snapsBefore);
    expect(await exists(alice, keptDataset)).toBe(true);
    expect(api.leases.size).toBe(0);
    // zcsi status: the home, its replica, the failover's data-loss window, and the kept diverged data.
    const report = renderStatus(await collectStatus(env.poolHosts), "text");
    expect(report).toMatch(new RegExp(`^  ${volumeId}: home bob:${onBob()} \\(epoch 2\\); replicas: alice:${onAlice()}; failed over from alice at \\S+, writes after \\S+ \\(zcsi-repl-\\S+\\) not here; last move: failover done at \\S+$`, "m"));
    expect(report).toMatch(new RegExp(`^Kept diverged data:\\n  alice:${keptDataset}: writes of ${volumeId} at epoch 1 that bob:${onBob()} never got`, "m"));
    expect(report).toMatch(new RegExp(`^alice +${leaf} +- +diverged `, "m"));
    expect(report).not.toMatch(/STALE/);
  });
});

describe.skipIf(onVm)("failover --force with the home up, then resync --discard-diverged", () => {
  it("promotes bob although alice answers, fences alice, and the resync rolls alice back instead of keeping its writes", async () => {
    const leaf = "pvc-failover-2";
    const created = await env.client.createVolume(req(leaf, { poolHost: "alice", replicateTo: "bob" }));
    const volumeId = created.volume!.volumeId;
    const onAlice = `${alice.parent}/${leaf}`;
    const onBob = `${bob.parent}/${leaf}`;
    await put(alice, at(alice, leaf, "kept.bin"), Buffer.alloc(MiB, 2));
    await engine.replicate(job(volumeId, alice, bob, leaf));
    await put(alice, at(alice, leaf, "lost.bin"), Buffer.alloc(MiB, 4));
    const forced = await failover(ctx.deps, { volumeId, force: true });
    expect(forced).toMatchObject({ from: "alice", to: "bob", epoch: 2, already: false });
    // The next lookup fences alice's copy (it answers, so it is fenced at once).
    await homes.find(volumeId);
    expect(await get(alice, onAlice, "zcsi:fenced")).toMatch(/superseded by epoch 2/);
    const out: string[] = [];
    const code = await runResync(ctx, { volumeIds: [volumeId], host: "alice", discardDiverged: true }, (t) => out.push(t));
    expect(code, out.join("")).toBe(0);
    // Nothing was written on bob since the common snapshot: OpenZFS tells (`written` 0: none sent), zfs-fuse sends an empty increment.
    expect(out.join("")).toMatch(/replica of bob \(epoch 2\); replication (incremental|none) .*\n  diverged data discarded \(--discard-diverged\)/);
    // Nothing kept aside; alice's copy is a replica holding bob's newest snapshot, without the lost write.
    const children = (await alice.pool.exec.run(["zfs", "list", "-H", "-o", "name", "-r", alice.parent])).stdout;
    expect(children).not.toContain(`${leaf}-diverged-`);
    expect(await get(alice, onAlice, "zcsi:role")).toBe("replica");
    const newest = async (h: PoolHostEnv, ds: string): Promise<string> => {
      const names = (await snapshotsOf(h, ds)).filter((n) => n.includes("@zcsi-repl-"));
      return get(h, names[names.length - 1]!, "guid");
    };
    expect(await newest(alice, onAlice)).toBe(await newest(bob, onBob));
    expect(await shaOn(bob, at(bob, leaf, "lost.bin"))).toBeUndefined();
  });
});

describe.skipIf(onVm)("a stale copy before anything fenced it", () => {
  it("is neither snapshotted nor pruned by the snapshotter, which fences it (a CopyFenced Event), and is never a replication source", async () => {
    const leaf = "pvc-stale-snap";
    const created = await env.client.createVolume(req(leaf, { poolHost: "alice", replicateTo: "bob", snapshotSchedule: "hourly=2" }));
    const volumeId = created.volume!.volumeId;
    const onAlice = `${alice.parent}/${leaf}`;
    const onBob = `${bob.parent}/${leaf}`;
    await put(alice, at(alice, leaf, "a.bin"), Buffer.alloc(MiB, 5));
    await engine.replicate(job(volumeId, alice, bob, leaf));
    // A forced failover: bob is the home at epoch 2; alice answers and still says primary, unfenced.
    expect(await failover(ctx.deps, { volumeId, force: true })).toMatchObject({ to: "bob", epoch: 2 });
    expect(await get(alice, onAlice, "zcsi:fenced")).toBe("-");
    expect(JSON.parse(await get(bob, onBob, "zcsi:last-move"))).toMatchObject({ kind: "failover", outcome: "done", to: "bob", epoch: 2 });
    const aliceBefore = await snapshotsOf(alice, onAlice);

    const events: PvEvent[] = [];
    const recorder = { record: async (e: PvEvent) => void events.push(e) };
    const onFence = fenceEvents(recorder);
    const scheduler = new SnapshotScheduler(env.poolHosts, { clock: new ManualClock(Date.now()), logger, events: recorder, ...(onFence && { onFence }) });
    const report = await scheduler.tick();
    const ticked = report.hosts.flatMap((h) => h.volumes.map((v) => `${h.poolHost}:${v.dataset}`));
    expect(ticked).toContain(`bob:${onBob}`);
    expect(ticked).not.toContain(`alice:${onAlice}`);
    expect(await snapshotsOf(alice, onAlice)).toEqual(aliceBefore);
    expect((await snapshotsOf(bob, onBob)).filter((s) => s.includes("@zcsi-auto-"))).toHaveLength(1);
    // Fenced by that tick, with nothing destroyed, and the PV says so.
    expect(await get(alice, onAlice, "zcsi:fenced")).toMatch(/superseded by epoch 2 on bob/);
    expect(await get(alice, onAlice, "readonly")).toBe("on");
    expect(await shaOn(alice, at(alice, leaf, "a.bin"))).toBe(sha(Buffer.alloc(MiB, 5)));
    expect(events.filter((e) => e.reason === "CopyFenced")).toEqual([expect.objectContaining({ pvName: leaf, type: "Warning", message: expect.stringContaining(`stale copy alice:${onAlice}`) })]);
    // Fenced, it is no serving copy any more: the next tick skips it without a word.
    await scheduler.tick();
    expect(events.filter((e) => e.reason === "CopyFenced")).toHaveLength(1);
    expect(await snapshotsOf(alice, onAlice)).toEqual(aliceBefore);
    // The replicator refuses alice as a source: nothing sent, nothing changed on bob.
    const bobNow = await snapshotsOf(bob, onBob);
    expect(await kindOf(engine.replicate(job(volumeId, alice, bob, leaf)))).toBe("FailedPrecondition");
    expect(await snapshotsOf(bob, onBob)).toEqual(bobNow);
  });
});

describe("a move whose sends are cut mid-stream (a dropped connection)", () => {
  it("each rerun resumes the cut send from bob's receive_resume_token (OpenZFS) or sends afresh (zfs-fuse); the move ends with every file identical, one primary, epoch 2", async () => {
    const leaf = "pvc-move-cut";
    const leasesBefore = api.leases.size;
    const created = await env.client.createVolume(req(leaf, { poolHost: "alice", replicateTo: "bob" }));
    const volumeId = created.volume!.volumeId;
    const onAlice = `${alice.parent}/${leaf}`;
    const onBob = `${bob.parent}/${leaf}`;
    const files = new Map<string, string>();
    const write = async (file: string, bytes: number): Promise<void> => {
      const data = randomBytes(bytes); // incompressible: the stream is at least this long
      await put(alice, at(alice, leaf, file), data);
      files.set(file, sha(data));
    };
    await write("seed.bin", 8 * MiB);
    // In use on node-c: published (the record on alice's copy), its PV, pod and VolumeAttachment.
    await env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: created.volume!.volumeContext });
    const pv = k8sFixture("pv");
    api.pvs.set(leaf, { ...pv, metadata: { ...pv.metadata, name: leaf }, spec: { ...(pv.spec as object), csi: { ...(pv.spec as { csi: object }).csi, volumeHandle: volumeId }, claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", name: `data-${leaf}`, namespace: "apps" } } } as WireObject);
    const pod = k8sFixture("pod-using-pvc");
    api.pods.set(`apps/${leaf}-0`, { ...pod, metadata: { ...pod.metadata, name: `${leaf}-0`, namespace: "apps" }, spec: { ...(pod.spec as object), nodeName: "node-c", volumes: [{ name: "data", persistentVolumeClaim: { claimName: `data-${leaf}` } }] } } as WireObject);
    const va = k8sFixture("volumeattachment");
    api.volumeAttachments.set(`csi-${leaf}`, { ...va, metadata: { ...va.metadata, name: `csi-${leaf}` }, spec: { attacher: env.config.driverName, nodeName: "node-c", source: { persistentVolumeName: leaf } } } as WireObject);
    // kubelet and the attacher when the pod goes: its last write (for the final increment), unpublish, the attachment gone.
    api.onPodDeleted = async () => {
      await write("last-write.bin", 6 * MiB);
      await env.client.controllerUnpublishVolume({ volumeId, nodeId: "node-c" });
      api.volumeAttachments.delete(`csi-${leaf}`);
    };
    const resumable = env.backend === "openzfs-vm";
    const token = async (): Promise<string> => get(bob, onBob, "receive_resume_token");
    /** The `zfs send`s on alice since `from` in the command log: argv and the stream bytes read. */
    const sendsSince = (from: number) => cutting.exec("alice").streams.slice(from).filter((s) => s.argv.includes("send"));
    const sendArgs = (argv: readonly string[]): string[] => argv.slice(argv.indexOf("send") + 1);

    // 1. The seeding (full) send is cut after 3 MiB: the move stops before blocking anything.
    cutting.exec("alice").cutNextSendAfter(3 * MiB);
    await expect(movesWith(cutting.hosts).migrate(volumeId, "bob", { pollMs: 100 })).rejects.toThrow();
    expect(cutting.exec("alice").cuts).toBe(1);
    expect(api.pods.has(`apps/${leaf}-0`)).toBe(true);
    expect((await homes.find(volumeId)).live.map((c) => c.host)).toEqual(["alice"]);
    const seedToken = resumable ? await token() : "";
    if (resumable) expect(seedToken).toMatch(/^1-/); // the partial receive is kept for resuming
    else expect(await exists(bob, onBob)).toBe(false); // zfs-fuse: nothing to resume, nothing left

    // 2. The rerun resumes the seed; then the final increment (the pod's last write) is cut after 2 MiB.
    let mark = cutting.exec("alice").streams.length;
    const cutFinal = async (step: MoveStep): Promise<void> => {
      if (step === "detached") cutting.exec("alice").cutNextSendAfter(2 * MiB);
    };
    await expect(movesWith(cutting.hosts, cutFinal).migrate(volumeId, "bob", { pollMs: 100 })).rejects.toThrow();
    expect(cutting.exec("alice").cuts).toBe(2);
    const [seedRerun] = sendsSince(mark);
    if (resumable) {
      expect(sendArgs(seedRerun!.argv)).toEqual(["-t", seedToken]);
      // The rest of the stream only, not the 8 MiB again.
      expect(seedRerun!.bytes).toBeLessThan(8 * MiB - 2 * MiB);
    } else {
      expect(sendArgs(seedRerun!.argv)).not.toContain("-t");
      expect(seedRerun!.bytes).toBeGreaterThan(8 * MiB);
    }
    // Between: the pod was restarted and attaches wait; alice is still the one primary.
    expect(api.pods.has(`apps/${leaf}-0`)).toBe(false);
    expect((await homes.find(volumeId)).live.map((c) => c.host)).toEqual(["alice"]);
    await expect(env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: {} })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    const finalToken = resumable ? await token() : "";
    if (resumable) expect(finalToken).toMatch(/^1-/);
    api.onPodDeleted = undefined;

    // 3. The rerun resumes the final increment and finishes the move.
    mark = cutting.exec("alice").streams.length;
    const result = await movesWith(cutting.hosts).migrate(volumeId, "bob", { pollMs: 100 });
    expect(result).toMatchObject({ to: `bob:${onBob}`, epoch: 2, resumed: true });
    const [finalRerun] = sendsSince(mark);
    if (resumable) {
      expect(sendArgs(finalRerun!.argv)).toEqual(["-t", finalToken]);
      expect(finalRerun!.bytes).toBeLessThan(6 * MiB - 1 * MiB);
      expect(await token()).toBe("-");
    } else {
      expect(sendArgs(finalRerun!.argv)).toContain("-i");
      expect(finalRerun!.bytes).toBeGreaterThan(6 * MiB);
    }
    // One primary (bob, epoch 2: one promotion), alice its replica; every file identical on bob.
    const after = await homes.find(volumeId);
    expect(after.live.map((c) => c.host)).toEqual(["bob"]);
    expect(after.replicas.map((c) => c.host)).toEqual(["alice"]);
    expect(await get(bob, onBob, "zcsi:epoch")).toBe("2");
    expect(await get(alice, onAlice, "zcsi:replica-of")).toBe(`bob:${onBob}`);
    for (const [file, sum] of files) expect(await shaOn(bob, at(bob, leaf, file)), file).toBe(sum);
    expect((await bob.pool.exec.run(["ls", at(bob, leaf, "")])).stdout.split("\n").filter((l) => l !== "").sort()).toEqual([...files.keys()].sort());
    const published = await env.client.controllerPublishVolume({ volumeId, nodeId: "node-c", volumeCapability: mountCap, readonly: false, volumeContext: {} });
    expect(published.publishContext).toMatchObject({ poolHost: "bob", dataset: onBob, epoch: "2" });
    expect(api.leases.size).toBe(leasesBefore); // the move's Lease released
  });
});
