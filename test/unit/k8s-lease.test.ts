import { describe, expect, it } from "vitest";
import type { PoolHostConfig } from "../../src/config.js";
import { unavailable } from "../../src/errors.js";
import type { ExecResult, Executor } from "../../src/exec/executor.js";
import { LeaderElector, leaseFromObject } from "../../src/k8s/lease.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry } from "../../src/metrics.js";
import { startSnapshotter } from "../../src/roles/snapshotter.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { FakeLeaseStore, formatMicroTime, k8sFixture, ManualClock } from "../harness/fake-k8s.js";

const ME = "zcsi-controller-7c9d6b5f4-abcde";
const OTHER = "zcsi-controller-7c9d6b5f4-x2k9p";

function elector(store: FakeLeaseStore, clock: ManualClock, identity = ME): LeaderElector {
  return new LeaderElector({ store, identity, clock, logger: silentLogger });
}

function spec(store: FakeLeaseStore): Record<string, unknown> {
  return (store.object?.spec ?? {}) as Record<string, unknown>;
}

describe("Lease objects", () => {
  it("parse from the API's JSON, MicroTime included", () => {
    const lease = leaseFromObject(k8sFixture("lease-held-by-other"));
    expect(lease).toMatchObject({ name: "zcsi-snapshotter", namespace: "zcsi-system", resourceVersion: "1048213", labels: { "app.kubernetes.io/name": "zcsi" } });
    expect(lease.spec.holderIdentity).toBe(OTHER);
    expect(lease.spec.leaseDurationSeconds).toBe(15);
    expect(lease.spec.leaseTransitions).toBe(3);
    expect(lease.spec.renewTime?.toISOString()).toBe("2026-11-22T01:00:00.402Z");
  });

  it("write MicroTime with six fractional digits", () => {
    expect(formatMicroTime(new Date("2026-11-22T01:00:00.402Z"))).toBe("2026-11-22T01:00:00.402000Z");
  });
});

describe("LeaderElector", () => {
  it("creates a missing Lease and leads", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const e = elector(store, clock);
    expect(await e.tryAcquireOrRenew()).toBe(true);
    expect(e.isLeader()).toBe(true);
    expect(store.writes).toHaveLength(1);
    expect(spec(store)).toEqual({
      holderIdentity: ME,
      leaseDurationSeconds: 15,
      acquireTime: "2026-11-22T01:00:00.000000Z",
      renewTime: "2026-11-22T01:00:00.000000Z",
      leaseTransitions: 0,
    });
  });

  it("waits out a Lease another replica holds, counting from when it last saw it change", async () => {
    const store = new FakeLeaseStore("zcsi-system", "zcsi-snapshotter", k8sFixture("lease-held-by-other"));
    // Our clock is far past the fixture's renewTime: a stale-looking renewTime alone never
    // lets a candidate take over (clock skew); only an unchanged record for leaseDuration does.
    const clock = new ManualClock("2026-11-22T03:00:00Z");
    const e = elector(store, clock);
    expect(await e.tryAcquireOrRenew()).toBe(false);
    clock.advance(10_000);
    expect(await e.tryAcquireOrRenew()).toBe(false);
    // The holder renews: the wait starts again.
    store.put(k8sFixture("lease-held-by-other-renewed"));
    clock.advance(2_000);
    expect(await e.tryAcquireOrRenew()).toBe(false);
    clock.advance(14_000); // 14 s after the renewal was seen: still live
    expect(await e.tryAcquireOrRenew()).toBe(false);
    expect(store.writes).toHaveLength(0);
    clock.advance(1_000); // 15 s without a change: expired
    expect(await e.tryAcquireOrRenew()).toBe(true);
    expect(store.writes).toHaveLength(1);
    expect(spec(store)).toEqual({
      holderIdentity: ME,
      leaseDurationSeconds: 15,
      acquireTime: "2026-11-22T03:00:27.000000Z",
      renewTime: "2026-11-22T03:00:27.000000Z",
      leaseTransitions: 4,
    });
    // A replace keeps the labels another tool put on the Lease.
    expect((store.writes[0]?.metadata as Record<string, unknown>).labels).toEqual({ "app.kubernetes.io/name": "zcsi", "app.kubernetes.io/component": "snapshotter" });
  });

  it("takes a released Lease at once", async () => {
    const store = new FakeLeaseStore("zcsi-system", "zcsi-snapshotter", k8sFixture("lease-released"));
    const e = elector(store, new ManualClock("2026-11-22T01:03:12Z"));
    expect(await e.tryAcquireOrRenew()).toBe(true);
    expect(spec(store)).toMatchObject({ holderIdentity: ME, leaseDurationSeconds: 15, leaseTransitions: 4 });
  });

  it("renews: renewTime moves, acquireTime and transitions stay", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const e = elector(store, clock);
    await e.tryAcquireOrRenew();
    clock.advance(2_000);
    expect(await e.tryAcquireOrRenew()).toBe(true);
    expect(spec(store)).toEqual({
      holderIdentity: ME,
      leaseDurationSeconds: 15,
      acquireTime: "2026-11-22T01:00:00.000000Z",
      renewTime: "2026-11-22T01:00:02.000000Z",
      leaseTransitions: 0,
    });
  });

  it("stops leading at once when it sees another holder", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T02:10:00Z");
    const e = elector(store, clock);
    expect(await e.tryAcquireOrRenew()).toBe(true);
    store.put(k8sFixture("lease-taken-by-other")); // e.g. we were paused past the lease
    clock.advance(2_000);
    expect(await e.tryAcquireOrRenew()).toBe(false);
    expect(e.isLeader()).toBe(false);
    expect(e.observedHolder).toBe(OTHER);
  });

  it("stops leading when it cannot renew within renewDeadline", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const e = elector(store, clock);
    await e.tryAcquireOrRenew();
    store.failure = unavailable("connect ECONNREFUSED");
    clock.advance(9_000);
    expect(await e.tryAcquireOrRenew()).toBe(true);
    clock.advance(1_000);
    expect(await e.tryAcquireOrRenew()).toBe(false);
    store.failure = undefined;
    expect(await e.tryAcquireOrRenew()).toBe(true); // still the holder in the Lease: renews
  });

  it("loses a race on a replace to the API server's conflict check", async () => {
    const store = new FakeLeaseStore("zcsi-system", "zcsi-snapshotter", k8sFixture("lease-released"));
    const clock = new ManualClock("2026-11-22T01:03:12Z");
    const a = elector(store, clock, ME);
    const b = elector(store, clock, OTHER);
    // Both read the released Lease; a writes first; b's replace carries a stale resourceVersion.
    const [ra, rb] = await Promise.all([a.tryAcquireOrRenew(), b.tryAcquireOrRenew()]);
    expect([ra, rb].filter(Boolean)).toHaveLength(1);
    expect(store.writes).toHaveLength(1);
  });

  it("never has two leaders among replicas renewing and failing over", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const replicas = [elector(store, clock, "r-0"), elector(store, clock, "r-1"), elector(store, clock, "r-2")];
    let paused = -1;
    const leaders: string[] = [];
    for (let step = 0; step < 200; step++) {
      // Every 40 steps the current leader is paused for 12 steps (a GC pause, a partition).
      if (step % 40 === 5) paused = replicas.findIndex((r) => r.isLeader());
      if (step % 40 === 17) paused = -1;
      for (const [i, r] of replicas.entries()) if (i !== paused) await r.tryAcquireOrRenew();
      const now = replicas.filter((r) => r.isLeader()).map((r) => r.identity);
      expect(now.length).toBeLessThanOrEqual(1);
      leaders.push(now[0] ?? "-");
      clock.advance(2_000);
    }
    expect(new Set(leaders.filter((l) => l !== "-")).size).toBeGreaterThan(1); // leadership did move
  });

  it("releases on shutdown so the next replica need not wait", async () => {
    const store = new FakeLeaseStore();
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const a = elector(store, clock, ME);
    const b = elector(store, clock, OTHER);
    await a.tryAcquireOrRenew();
    expect(await b.tryAcquireOrRenew()).toBe(false);
    await a.release();
    expect(a.isLeader()).toBe(false);
    expect(spec(store)).toMatchObject({ holderIdentity: "", leaseDurationSeconds: 1 });
    expect(await b.tryAcquireOrRenew()).toBe(true);
  });
});

/** Answers every command with empty success and counts them. */
class CountingExecutor implements Executor {
  readonly host = "alice";
  count = 0;
  async run(): Promise<ExecResult> {
    this.count++;
    return { stdout: "", stderr: "", exitCode: 0 };
  }
  stream(): never {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

const HOST: PoolHostConfig = {
  name: "alice",
  address: "127.0.0.1",
  port: 22,
  user: "root",
  parentDataset: "tank/k8s",
  mountRoot: "/tank/k8s",
  hostKeys: ["ssh-ed25519 AAAA"],
  sudo: false,
};

describe("the snapshotter role under leader election", () => {
  it("touches no pool host while another replica leads, and takes over when the Lease expires", async () => {
    const exec = new CountingExecutor();
    const hosts = new PoolHosts([{ config: HOST, exec }]);
    const store = new FakeLeaseStore("zcsi-system", "zcsi-snapshotter", k8sFixture("lease-held-by-other"));
    const clock = new ManualClock("2026-11-22T01:00:01Z");
    const registry = createRegistry({ processMetrics: false });
    const config = { driverName: "zfs.zcsi.dev", poolHosts: [HOST], privateKeyFile: "/dev/null", defaultCapacityBytes: 1n, commandTimeoutMs: 1000 };
    const snapshotter = await startSnapshotter(config, hosts, { logger: silentLogger, clock, lease: elector(store, clock), autoStart: false, registry });
    try {
      expect(await snapshotter.runOnce()).toBeUndefined();
      clock.advance(10_000);
      expect(await snapshotter.runOnce()).toBeUndefined();
      expect(exec.count).toBe(0);
      expect(await registry.getSingleMetricAsString("zcsi_snapshotter_leader")).toMatch(/^zcsi_snapshotter_leader 0$/m);
      clock.advance(6_000);
      const report = await snapshotter.runOnce();
      expect(report?.hosts.map((h) => h.poolHost)).toEqual(["alice"]);
      expect(exec.count).toBeGreaterThan(0);
      expect(await registry.getSingleMetricAsString("zcsi_snapshotter_leader")).toMatch(/^zcsi_snapshotter_leader 1$/m);
      // The other replica comes back and takes the Lease: we stop at once.
      store.put(k8sFixture("lease-taken-by-other"));
      const before = exec.count;
      clock.advance(2_000);
      expect(await snapshotter.runOnce()).toBeUndefined();
      expect(exec.count).toBe(before);
    } finally {
      await snapshotter.close();
    }
  });
});
