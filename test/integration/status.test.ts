import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { collectStatus, renderStatus, STATUS_COMMANDS_PER_HOST, type PoolHostStatus } from "../../src/status/status.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";

/**
 * `zcsi status` against real pool hosts: two zfs-fuse pools behind their own sshd, volumes
 * made by the real controller over CSI, snapshots made behind its back with `zfs snapshot`.
 * Every number the status reports is checked against `zfs get` on the pool itself.
 */

const MiB = 1024 * 1024;
const cap = { mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" as const } };

function req(name: string, mib: number, parameters: Record<string, string> = {}): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(mib * MiB) }, volumeCapabilities: [cap], parameters };
}

let env: ControllerEnv;

async function exactProp(dataset: string, property: string): Promise<bigint> {
  const r = await env.zfs("get", "-Hp", "-o", "value", property, dataset);
  return BigInt(r.stdout.trim());
}

/** Commands each pool host's executor ran since the last reset. */
function commandsRun(): Record<string, number> {
  return Object.fromEntries(env.poolHosts.all().map((h) => [h.config.name, (h.exec as InstrumentedExecutor).count]));
}

function resetCounts(): void {
  for (const h of env.poolHosts.all()) (h.exec as InstrumentedExecutor).reset();
}

function host(hosts: readonly PoolHostStatus[], name: string): PoolHostStatus {
  const found = hosts.find((h) => h.name === name);
  if (!found) throw new Error(`no host ${name} in status`);
  return found;
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"] });
});
afterAll(async () => {
  await env?.stop();
});

describe("zcsi status on real pool hosts", () => {
  it("reports health, capacity and an empty parent before any volume exists", async () => {
    resetCounts();
    const status = await collectStatus(env.poolHosts);
    expect(commandsRun()).toEqual({ alice: STATUS_COMMANDS_PER_HOST, bob: STATUS_COMMANDS_PER_HOST });
    for (const name of ["alice", "bob"]) {
      const h = host(status.hosts, name);
      const envHost = env.hosts.find((e) => e.name === name)!;
      expect(h.errors).toEqual([]);
      expect(h.health).toBe("ONLINE");
      expect(h.pool).toBe(envHost.pool.pool);
      expect(h.parentDataset).toBe(envHost.parent);
      expect(h.availableBytes).toBe(await exactProp(envHost.parent, "available"));
      expect(h.poolSizeBytes).toBe((await exactProp(envHost.pool.pool, "used")) + (await exactProp(envHost.pool.pool, "available")));
      expect(h.volumes).toEqual([]);
    }
    expect(renderStatus(status, "text")).toContain("No volumes.");
  });

  it("lists the volumes the controller made, with size, usage, PVC and snapshot counts, in the same number of commands", async () => {
    const alice = env.hosts.find((h) => h.name === "alice")!;
    const bob = env.hosts.find((h) => h.name === "bob")!;
    const pvcMeta = { "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "shop", "csi.storage.k8s.io/pv/name": "pvc-st-1" };
    await env.client.createVolume(req("pvc-st-1", 32, { poolHost: "alice", ...pvcMeta }));
    await env.client.createVolume(req("pvc-st-2", 16, { poolHost: "alice" }));
    await env.client.createVolume(req("pvc-st-3", 8, { poolHost: "bob" }));
    // Data in one volume (uncompressed, so `referenced` grows by all of it), and snapshots
    // taken by hand, in the scheduler's name form, and of the parent itself.
    const r = await env.zfs("set", "compression=off", `${alice.parent}/pvc-st-1`);
    expect(r.exitCode).toBe(0);
    await alice.pool.files.write(`${alice.mountRoot}/pvc-st-1/blob`, Buffer.alloc(3 * MiB, 7));
    for (const snap of [`${alice.parent}/pvc-st-1@by-hand`, `${alice.parent}/pvc-st-1@zcsi-auto-20260101T0000Z`, `${alice.parent}@parent-snap`]) {
      expect((await env.zfs("snapshot", snap)).exitCode).toBe(0);
    }
    // A dataset under the parent that zcsi did not make is not a volume.
    expect((await env.zfs("create", `${bob.parent}/not-ours`)).exitCode).toBe(0);
    // `referenced` counts the 3 MiB once the transaction group holding them has synced
    // (seconds on zfs-fuse); wait for that, so the numbers compared below are settled.
    const deadline = Date.now() + 30_000;
    while ((await exactProp(`${alice.parent}/pvc-st-1`, "referenced")) < BigInt(3 * MiB) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }

    resetCounts();
    const status = await collectStatus(env.poolHosts);
    expect(commandsRun()).toEqual({ alice: STATUS_COMMANDS_PER_HOST, bob: STATUS_COMMANDS_PER_HOST });

    const a = host(status.hosts, "alice");
    expect(a.volumes.map((v) => v.csiName)).toEqual(["pvc-st-1", "pvc-st-2"]);
    const v1 = a.volumes[0]!;
    expect(v1).toMatchObject({
      id: `alice:${alice.parent}/pvc-st-1`,
      dataset: `${alice.parent}/pvc-st-1`,
      pvc: "shop/data",
      pv: "pvc-st-1",
      state: "ready",
      mounted: true,
      mountpoint: `${alice.mountRoot}/pvc-st-1`,
      sizeBytes: BigInt(32 * MiB),
      snapshots: { total: 2, scheduled: 1 },
    });
    expect(v1.usedBytes).toBe(await exactProp(v1.dataset, "referenced"));
    expect(v1.usedWithSnapshotsBytes).toBe(await exactProp(v1.dataset, "used"));
    expect(a.volumes[1]).toMatchObject({ sizeBytes: BigInt(16 * MiB), snapshots: { total: 0, scheduled: 0 } });
    expect(a.volumes[1]?.pvc).toBeUndefined();

    const b = host(status.hosts, "bob");
    expect(b.volumes.map((v) => v.id)).toEqual([`bob:${bob.parent}/pvc-st-3`]);

    const text = renderStatus(status, "text");
    expect(text).toMatch(/^alice +pvc-st-1 +shop\/data +primary@1 +32 MiB +\S+ \S+ +\S+ +2 \(1 scheduled\) +ready +\S+\/pvc-st-1$/m);
    expect(text).toMatch(/^bob +pvc-st-3 +- +primary@1 +8 MiB /m);
    const json = JSON.parse(renderStatus(status, "json")) as { hosts: Array<{ name: string; volumes: Array<{ sizeBytes: number }> }> };
    expect(json.hosts.find((h) => h.name === "bob")?.volumes[0]?.sizeBytes).toBe(8 * MiB);
  });

  it("reports a pool host whose sshd is down and still reports the other one", async () => {
    await env.hosts.find((h) => h.name === "bob")!.sshd.kill();
    const status = await collectStatus(env.poolHosts);
    const b = host(status.hosts, "bob");
    expect(b.health).toBeUndefined();
    expect(b.errors.length).toBeGreaterThan(0);
    expect(b.errors.join("\n")).toMatch(/bob/);
    expect(host(status.hosts, "alice").volumes).toHaveLength(2);
    expect(renderStatus(status, "text")).toMatch(/^bob +\S+ +\S+ +UNREACHABLE/m);
  });
});
