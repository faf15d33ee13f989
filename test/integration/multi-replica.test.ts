/**
 * A volume with two replicas (issue 14): alice replicating to bob and carol, three zfs-fuse
 * pools behind their own sshd, the real controller over gRPC (with its Event recorder against
 * the API fake), the replicator's jobs as the scheduler builds them from the pools. After a
 * move to bob, carol's replica follows bob: continued incrementally from the snapshot it shares
 * with bob (its dataset never recreated), re-marked as bob's replica at bob's epoch, never
 * promoted; one primary throughout. A stale old home is no replication target until it is
 * resynced; the controller fences it with one CopyFenced Event on the PV. Every check is on the
 * pools (`zfs get`, guids, file checksums through a mount of the replica).
 */
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { kubeConfigFor, KubeEventSink } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { failover } from "../../src/mobility/failover.js";
import { Migrator } from "../../src/mobility/migrate.js";
import { resync } from "../../src/mobility/resync.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import { VOLUME_DISCOVERY_PROPS, volumeJobs } from "../../src/replication/jobs.js";
import type { ReplicationEngine, ReplicationJob } from "../../src/replication/types.js";
import { mobilityContext, type MobilityContext } from "../../src/roles/mobility.js";
import { moveWiring } from "../../src/roles/move-wiring.js";
import { systemClock } from "../../src/util/clock.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { k8sFixture, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });
const mountCap = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let bob: PoolHostEnv;
let carol: PoolHostEnv;
let api: FakeApiServer;
let engine: ReplicationEngine;
let ctx: MobilityContext;

beforeAll(async () => {
  api = await startFakeApiServer();
  const kc = kubeConfigFor(api.url, { token: "t", skipTLSVerify: true });
  const events = new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-controller", instance: "test" });
  env = await startControllerEnv({ hostNames: ["alice", "bob", "carol"], poolSizeMiB: 256, events });
  [alice, bob, carol] = env.hosts as [PoolHostEnv, PoolHostEnv, PoolHostEnv];
  engine = createReplicationEngine(env.poolHosts, { logger });
  ctx = await mobilityContext(env.config, kc, "zcsi", logger, env.poolHosts);
}, 600_000);

afterAll(async () => {
  await ctx?.close();
  await api?.close();
  await env?.stop();
});

const sha = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

function req(name: string): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(48 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice", replicateTo: "bob,carol" } };
}

async function run(host: PoolHostEnv, ...argv: string[]): Promise<string> {
  const r = await host.pool.exec.run(argv);
  if (r.exitCode !== 0) throw new Error(`${host.name}: ${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

const get = (host: PoolHostEnv, dataset: string, property: string): Promise<string> => run(host, "zfs", "get", "-Hp", "-o", "value", property, dataset);

/** The replication jobs of `leaf` the scheduler builds from `from`'s pool (its zcsi:replicate-to), by target host. */
async function jobsFrom(from: PoolHostEnv, leaf: string): Promise<Map<string, ReplicationJob>> {
  const all = await env.poolHosts.get(from.name).zfs.get([from.parent], VOLUME_DISCOVERY_PROPS, { depth: 1 });
  const set = volumeJobs(env.poolHosts.get(from.name).config, all, env.poolHosts.configs);
  return new Map(set.jobs.filter((j) => j.job.source.dataset === `${from.parent}/${leaf}`).map((j) => [j.job.target.host, j.job]));
}

async function replicate(from: PoolHostEnv, to: PoolHostEnv, leaf: string) {
  const job = (await jobsFrom(from, leaf)).get(to.name);
  if (job === undefined) throw new Error(`no job ${from.name} → ${to.name} for ${leaf}`);
  return engine.replicate(job);
}

/** A new file on the home (its mountpoint on the pool host, as a pod bound there writes); its checksum. */
async function write(home: PoolHostEnv, leaf: string, file: string, files: Map<string, string>, bytes = MiB): Promise<void> {
  // Random: incompressible, so stream sizes tell an increment from a full send.
  const data = randomBytes(bytes);
  await writeFile(join(home.mountRoot, leaf, file), data);
  await run(home, "sync");
  files.set(file, sha(data));
}

/** Every file's checksum as the replica on `host` holds it: mounted (it is readonly) for the read, unmounted again. */
async function replicaChecksums(host: PoolHostEnv, dataset: string, files: ReadonlyMap<string, string>): Promise<Map<string, string>> {
  await run(host, "zfs", "mount", dataset);
  try {
    const at = await get(host, dataset, "mountpoint");
    return new Map(await Promise.all([...files.keys()].map(async (f) => [f, sha(await readFile(join(at, f)))] as const)));
  } finally {
    // zfs-fuse may answer "busy" for a moment after the last read (ARCHITECTURE: zfs-fuse quirks).
    for (let attempt = 0; ; attempt++) {
      const r = await host.pool.exec.run(["zfs", "unmount", dataset]);
      if (r.exitCode === 0) break;
      if (attempt >= 20 || !/busy/i.test(r.stderr)) throw new Error(`${host.name}: zfs unmount ${dataset}: ${r.stderr.trim()}`);
      await new Promise((res) => setTimeout(res, 250));
    }
  }
}

/** Interleaved runs, as the scheduler makes them, with bob's job running more often than carol's. */
async function replicateInterleaved(leaf: string, files: Map<string, string>): Promise<void> {
  await write(alice, leaf, "a.bin", files, 3 * MiB);
  expect((await replicate(alice, bob, leaf)).action).toBe("full");
  expect((await replicate(alice, carol, leaf)).action).toBe("full");
  await write(alice, leaf, "b.bin", files);
  expect((await replicate(alice, carol, leaf)).action).toBe("incremental");
  // More bob runs than bob keeps snapshots (3): carol's base stays on bob all the same.
  for (const n of [1, 2, 3, 4]) {
    await write(alice, leaf, `c${n}.bin`, files, 256 * 1024);
    expect((await replicate(alice, bob, leaf)).action).toBe("incremental");
  }
}

async function pvFor(leaf: string, volumeId: string): Promise<void> {
  const pv = k8sFixture("pv");
  pv.metadata.name = leaf;
  (pv.spec as { csi: { volumeHandle: string } }).csi.volumeHandle = volumeId;
  api.pvs.set(leaf, pv);
}

describe("three copies, migrate alice → bob", () => {
  it("carol follows bob incrementally from the snapshot they share, with identical data; one primary, carol never promoted", async () => {
    const leaf = "pvc-multi-mig";
    const volumeId = (await env.client.createVolume(req(leaf))).volume!.volumeId;
    await pvFor(leaf, volumeId);
    const files = new Map<string, string>();
    await replicateInterleaved(leaf, files);
    const onCarol = `${carol.parent}/${leaf}`;
    const carolGuid = await get(carol, onCarol, "guid");

    const homes = new VolumeHomes(env.poolHosts, logger);
    const migrator = new Migrator({
      hosts: env.poolHosts,
      homes,
      engine,
      ...moveWiring(kubeConfigFor(api.url, { token: "t", skipTLSVerify: true }), "zcsi", "multi-test", env.poolHosts, logger),
      driverName: env.config.driverName,
      clock: systemClock,
      logger,
    });
    const moved = await migrator.migrate(volumeId, "bob", { maxCatchUpRounds: 3 });
    expect(moved).toMatchObject({ epoch: 2, to: `bob:${bob.parent}/${leaf}` });
    // The new home replicates to carol and to the demoted old home; carol still names alice until bob's first run.
    expect((await get(bob, `${bob.parent}/${leaf}`, "zcsi:replicate-to")).split(",").sort()).toEqual(["alice", "carol"]);
    expect(await get(carol, onCarol, "zcsi:replica-of")).toBe(`alice:${alice.parent}/${leaf}`);

    await write(bob, leaf, "after-move.bin", files);
    const followed = await replicate(bob, carol, leaf);
    expect(followed.action).toBe("incremental");
    expect(followed.epoch).toBe(2);
    // Far less than the volume's data (6 MiB): only what carol lacked (about 2 MiB), not a full resend.
    expect(followed.bytes).toBeLessThan(4 * MiB);
    expect(await get(carol, onCarol, "guid")).toBe(carolGuid);
    for (const [p, v] of Object.entries({ "zcsi:replica-of": `bob:${bob.parent}/${leaf}`, "zcsi:role": "replica", "zcsi:epoch": "2", "zcsi:volume": volumeId })) {
      expect(await get(carol, onCarol, p), p).toBe(v);
    }
    expect(await replicaChecksums(carol, onCarol, files)).toEqual(files);
    // The demoted old home follows bob too, incrementally.
    expect((await replicate(bob, alice, leaf)).action).toBe("incremental");
    expect(await replicaChecksums(alice, `${alice.parent}/${leaf}`, files)).toEqual(files);

    // A second run is an ordinary increment; exactly one primary; carol never a primary.
    await write(bob, leaf, "later.bin", files);
    expect((await replicate(bob, carol, leaf)).action).toBe("incremental");
    const copies = await homes.find(volumeId, "test");
    expect(copies.live.map((c) => c.host)).toEqual(["bob"]);
    expect(copies.home).toMatchObject({ host: "bob", epoch: 2 });
    expect(copies.replicas.map((c) => c.host).sort()).toEqual(["alice", "carol"]);
    expect(await replicaChecksums(carol, onCarol, files)).toEqual(files);
  });
});

describe("three copies, alice lost: failover to bob", () => {
  const leaf = "pvc-multi-fo";
  let volumeId = "";
  const files = new Map<string, string>();

  it("carol follows the promoted bob incrementally; alice, gone, is no replication target", async () => {
    volumeId = (await env.client.createVolume(req(leaf))).volume!.volumeId;
    await pvFor(leaf, volumeId);
    await replicateInterleaved(leaf, files);
    const onCarol = `${carol.parent}/${leaf}`;
    const carolGuid = await get(carol, onCarol, "guid");

    await alice.sshd.kill();
    const result = await failover(ctx.deps, { volumeId, to: "bob" });
    expect(result).toMatchObject({ to: "bob", epoch: 2, already: false });
    // Bob's targets: carol only. Alice's copy is stale (a primary at epoch 1): neither a target nor a source.
    expect(await get(bob, `${bob.parent}/${leaf}`, "zcsi:replicate-to")).toBe("carol");
    expect([...(await jobsFrom(bob, leaf)).keys()]).toEqual(["carol"]);

    await write(bob, leaf, "after-failover.bin", files);
    const followed = await replicate(bob, carol, leaf);
    expect(followed.action).toBe("incremental");
    expect(followed.bytes).toBeLessThan(4 * MiB);
    expect(await get(carol, onCarol, "guid")).toBe(carolGuid);
    expect(await get(carol, onCarol, "zcsi:replica-of")).toBe(`bob:${bob.parent}/${leaf}`);
    expect(await get(carol, onCarol, "zcsi:epoch")).toBe("2");
    expect(await get(carol, onCarol, "zcsi:role")).toBe("replica");
    expect(await replicaChecksums(carol, onCarol, files)).toEqual(files);
  });

  it("when alice returns, ControllerPublishVolume fences its copy with one CopyFenced Event on the PV, however often it publishes; resync makes it a target again", async () => {
    await alice.sshd.restart();
    for (let attempt = 0; ; attempt++) {
      try {
        await env.poolHosts.get("alice").zfs.get([alice.parent], ["type"]);
        break;
      } catch (err) {
        if (attempt > 120) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    const onAlice = `${alice.parent}/${leaf}`;
    const fencedEvents = () =>
      api.requests
        .filter((r) => r.method === "POST" && r.path === "/api/v1/namespaces/default/events")
        .map((r) => r.body as { reason: string; type: string; message: string; involvedObject: { name: string; kind: string } })
        .filter((e) => e.reason === "CopyFenced" && e.involvedObject.name === leaf);
    for (let i = 0; i < 3; i++) {
      const published = await env.client.controllerPublishVolume({ volumeId, nodeId: "node-x", volumeCapability: mountCap, readonly: false, volumeContext: {} });
      expect(published.publishContext).toMatchObject({ poolHost: "bob", epoch: "2" });
    }
    expect(await get(alice, onAlice, "zcsi:fenced")).toMatch(/superseded by epoch 2 on bob/);
    const events = fencedEvents();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: "Warning", involvedObject: { kind: "PersistentVolume", name: leaf } });
    expect(events[0]!.message).toContain(`stale copy alice:${onAlice}`);
    // Still no target while stale.
    expect([...(await jobsFrom(bob, leaf)).keys()]).toEqual(["carol"]);

    const resynced = await resync(ctx.deps, { volumeId, host: "alice" });
    expect(resynced.replication.action).toBe("incremental");
    expect((await get(bob, `${bob.parent}/${leaf}`, "zcsi:replicate-to")).split(",").sort()).toEqual(["alice", "carol"]);
    expect([...(await jobsFrom(bob, leaf)).keys()].sort()).toEqual(["alice", "carol"]);
    expect(await replicaChecksums(alice, onAlice, files)).toEqual(files);
    expect(fencedEvents()).toHaveLength(1);
  });
});
