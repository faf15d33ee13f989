/**
 * Where a volume lives, on real pools: roles and epochs written by CreateVolume and by the
 * replicator, the home resolved from them, a stale primary fenced (and kept), and replication
 * refused from it. Two pool hosts on the selected backend; commands run on each host's own
 * executor, which a test can take down (every command fails as over a dead connection).
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { unavailable } from "../../src/errors.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import type { ReplicationEngine, ReplicationJob } from "../../src/replication/types.js";
import { collectStatus, renderStatus } from "../../src/status/status.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";
import { VolumeService } from "../../src/volumes/service.js";
import { createPoolHost, type PoolHost } from "../harness/backend.js";
import { zcsiRejection as rejection } from "../harness/fake-pool-host.js";

const MiB = 1024 * 1024;

/** A pool host's executor that can be taken down: then every command fails, as over a dead connection. */
class SwitchableExecutor implements Executor {
  down = false;
  constructor(
    readonly host: string,
    private readonly inner: Executor,
  ) {}
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    if (this.down) return Promise.reject(unavailable(`${this.host}: connection refused`));
    return this.inner.run(argv, options);
  }
  stream(argv: readonly string[]): Promise<ExecStream> {
    if (this.down) return Promise.reject(unavailable(`${this.host}: connection refused`));
    return this.inner.stream(argv);
  }
  async close(): Promise<void> {}
}

interface Host {
  readonly name: string;
  readonly pool: PoolHost;
  readonly parent: string;
  readonly exec: SwitchableExecutor;
}

let alice: Host;
let bob: Host;
let service: VolumeService;
let hosts: PoolHosts;
let engine: ReplicationEngine;
const cleanups: (() => Promise<unknown>)[] = [];

async function zfs(host: Host, ...args: string[]): Promise<string> {
  const r = await host.pool.exec.run(["zfs", ...args]);
  if (r.exitCode !== 0) throw new Error(`${host.name}: zfs ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}
const prop = async (host: Host, dataset: string, property: string): Promise<string> => (await zfs(host, "get", "-Hp", "-o", "value", property, dataset)).trim();
async function props(host: Host, dataset: string, names: string[]): Promise<Record<string, string>> {
  return Object.fromEntries(await Promise.all(names.map(async (n) => [n, await prop(host, dataset, n)] as const)));
}
const snapshots = async (host: Host, dataset: string): Promise<string[]> =>
  (await zfs(host, "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset)).split("\n").filter((l) => l !== "");


async function createVolume(leaf: string): Promise<{ id: string; dataset: string; mountpoint: string }> {
  const volume = await service.create({ csiName: leaf, leaf, capacityBytes: 64n * BigInt(MiB), params: parseVolumeParameters({ poolHost: "alice" }, ["alice", "bob"]) });
  return { id: volume.id, dataset: volume.ref.dataset, mountpoint: volume.mountpoint };
}

const jobFor = (id: string, from: Host, to: Host, leaf: string, fromDataset: string): ReplicationJob => ({
  id: `${leaf}.${to.name}`,
  origin: { kind: "volume", volumeId: id },
  source: { host: from.name, dataset: fromDataset },
  target: { host: to.name, dataset: `${to.parent}/${leaf}` },
});

beforeAll(async () => {
  const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
  const made: Host[] = [];
  for (const name of ["alice", "bob"]) {
    const pool = await createPoolHost({ sizeMiB: 256, name: `home-${name}` });
    cleanups.push(() => pool.destroy());
    const parent = `${pool.pool}/k8s`;
    const r = await pool.exec.run(["zfs", "create", parent]);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    made.push({ name, pool, parent, exec: new SwitchableExecutor(name, pool.exec) });
  }
  [alice, bob] = made as [Host, Host];
  const config = parseConfig({
    privateKeyFile: "/nonexistent",
    poolHosts: made.map((h) => ({ name: h.name, address: "127.0.0.1", port: 22, user: "root", parentDataset: h.parent, mountRoot: `${h.pool.mountRoot}/k8s`, hostKey: key })),
  });
  hosts = new PoolHosts(
    config.poolHosts.map((c, i) => ({ config: c, exec: made[i]!.exec })),
    { timeoutMs: 60_000 },
  );
  service = new VolumeService(hosts, logger);
  engine = createReplicationEngine(hosts, { logger });
}, 600_000);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const ROLE = ["zcsi:volume", "zcsi:role", "zcsi:epoch"];

describe("the home of a volume, recorded on its copies", () => {
  it("marks the volume primary and its replica replica; after a failover serves the new primary, fences the old one and refuses to replicate from it", async () => {
    alice.exec.down = bob.exec.down = false;
    const v = await createVolume("pvc-home");
    expect(await props(alice, v.dataset, ROLE)).toEqual({ "zcsi:volume": v.id, "zcsi:role": "primary", "zcsi:epoch": "1" });
    await alice.pool.files.write(`${v.mountpoint}/data`, "written on alice\n");
    await alice.pool.files.sync();

    const job = jobFor(v.id, alice, bob, "pvc-home", v.dataset);
    expect((await engine.replicate(job)).action).toBe("full");
    const replica = job.target.dataset;
    expect(await props(bob, replica, [...ROLE, "zcsi:replica-of", "readonly"])).toEqual({
      "zcsi:volume": v.id,
      "zcsi:role": "replica",
      "zcsi:epoch": "1",
      "zcsi:replica-of": `alice:${v.dataset}`,
      readonly: "on",
    });
    expect(await service.resolveHome(v.id)).toEqual({ host: "alice", dataset: v.dataset, mountpoint: v.mountpoint, epoch: 1 });
    // A replica never sends, even to its own source.
    const back = await rejection(engine.replicate({ ...jobFor(v.id, bob, alice, "pvc-home-back", replica) }));
    expect(back).toMatchObject({ kind: "FailedPrecondition", message: expect.stringMatching(/is a replica/) });

    // The failover, by hand as `zcsi failover` will do it: promote the replica to epoch 2.
    await zfs(bob, "set", "zcsi:role=primary", replica);
    await zfs(bob, "set", "zcsi:epoch=2", replica);
    await zfs(bob, "set", "readonly=off", replica);

    const home = await service.resolveHome(v.id);
    expect(home).toEqual({ host: "bob", dataset: replica, mountpoint: await prop(bob, replica, "mountpoint"), epoch: 2 });
    // The old primary is fenced (readonly set, and writes refused), and kept with its data.
    expect(await props(alice, v.dataset, ["zcsi:fenced", "zcsi:role", "zcsi:epoch"])).toEqual({
      "zcsi:fenced": `superseded by epoch 2 on bob:${replica}`,
      "zcsi:role": "primary",
      "zcsi:epoch": "1",
    });
    // The setting itself; a mounted dataset on zfs-fuse reads back `off temporary` (its mount is not redone).
    expect((await zfs(alice, "get", "-H", "-o", "value,source", "readonly", v.dataset)).trim()).toMatch(/^on\tlocal$|^off\ttemporary$/);
    await expect(alice.pool.files.write(`${v.mountpoint}/after-fence`, "late write\n")).rejects.toThrow();
    expect(await alice.pool.files.read(`${v.mountpoint}/data`)).toBe("written on alice\n");

    // Replication from the stale copy is refused before it takes a snapshot.
    const before = await snapshots(alice, v.dataset);
    const refused = await rejection(engine.replicate(job));
    expect(refused.kind).toBe("FailedPrecondition");
    expect(refused.message).toMatch(/refusing to send from alice:.*pvc-home/);
    expect(await snapshots(alice, v.dataset)).toEqual(before);
    expect(await prop(bob, replica, "zcsi:role")).toBe("primary");

    // zcsi status shows both copies' roles and lists the stale one under Problems.
    const status = await collectStatus(hosts);
    expect(status.hosts.flatMap((h) => h.volumes).filter((c) => c.dataset.endsWith("/pvc-home")).map((c) => [c.poolHost, c.role, c.epoch])).toEqual([
      ["alice", "primary", 1],
      ["bob", "primary", 2],
    ]);
    expect(renderStatus(status, "text")).toContain(`${v.id}: STALE copy alice:${v.dataset} (primary at epoch 1; fenced: superseded by epoch 2 on bob:${replica})`);

    // The old host down: the new home still answers. The new home down: the fenced copy is never served.
    alice.exec.down = true;
    expect(await service.resolveHome(v.id)).toMatchObject({ host: "bob", epoch: 2 });
    alice.exec.down = false;
    bob.exec.down = true;
    const down = await rejection(service.resolveHome(v.id));
    expect(down).toMatchObject({ kind: "Unavailable", message: expect.stringMatching(/not reachable: bob/) });
    bob.exec.down = false;
  });

  it("serves a volume made before roles existed from its birth host, and marks its replica from it", async () => {
    const dataset = `${alice.parent}/pvc-old`;
    await zfs(alice, "create", "-o", "zcsi:csi-name=pvc-old", "-o", "zcsi:state=ready", dataset);
    const id = `alice:${dataset}`;
    expect(await service.resolveHome(id)).toMatchObject({ host: "alice", dataset, epoch: 1 });
    await engine.replicate(jobFor(id, alice, bob, "pvc-old", dataset));
    expect(await props(bob, `${bob.parent}/pvc-old`, ROLE)).toEqual({ "zcsi:volume": id, "zcsi:role": "replica", "zcsi:epoch": "1" });
    expect(await service.resolveHome(id)).toMatchObject({ host: "alice", dataset, epoch: 1 });
    expect(await prop(alice, dataset, "readonly")).toBe("off");
  });

  it("answers NOT_FOUND for a volume with no copy and FAILED_PRECONDITION for two primaries at one epoch", async () => {
    expect((await rejection(service.resolveHome(`alice:${alice.parent}/pvc-none`))).kind).toBe("NotFound");
    const v = await createVolume("pvc-split");
    await zfs(bob, "create", "-o", "zcsi:csi-name=pvc-split", "-o", `zcsi:volume=${v.id}`, "-o", "zcsi:role=primary", "-o", "zcsi:epoch=1", `${bob.parent}/pvc-split`);
    const split = await rejection(service.resolveHome(v.id));
    expect(split).toMatchObject({ kind: "FailedPrecondition", message: expect.stringMatching(/split brain/) });
    expect(await prop(alice, v.dataset, "readonly")).toBe("off");
    expect(await prop(bob, `${bob.parent}/pvc-split`, "readonly")).toBe("off");
  });
});
