import { describe, expect, it } from "vitest";
import { LeaderElector } from "../../src/k8s/lease.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry } from "../../src/metrics.js";
import { startSidecar } from "../../src/roles/sidecar.js";
import { FakeLeaseStore, k8sFixture, ManualClock } from "../harness/fake-k8s.js";

/** The leader-elected shell of the snapshotter and replicator roles, driven through runOnce(). */
describe("the sidecar loop", () => {
  function setup() {
    const clock = new ManualClock("2026-11-22T01:00:01Z");
    const store = new FakeLeaseStore("zcsi-system", "zcsi-test", k8sFixture("lease-held-by-other"));
    const lease = new LeaderElector({ store, identity: "me", clock, logger: silentLogger });
    const gauge: number[] = [];
    const calls = { ticks: 0, lost: 0 };
    let release: (() => void) | undefined;
    return { clock, store, lease, gauge, calls, hold: () => new Promise<void>((r) => (release = r)), unhold: () => release?.() };
  }

  it("ticks only while holding the Lease, reports leadership on the gauge, and says when it is lost", async () => {
    const t = setup();
    const sidecar = await startSidecar({
      name: "test",
      logger: silentLogger,
      lease: t.lease,
      leaderGauge: { set: (v) => t.gauge.push(v) },
      tick: async () => ++t.calls.ticks,
      onLeadershipLost: () => t.calls.lost++,
      tickIntervalMs: 1000,
      autoStart: false,
      registry: createRegistry({ processMetrics: false }),
    });
    expect(await sidecar.runOnce()).toBeUndefined();
    expect(t.calls.ticks).toBe(0);
    t.store.put(k8sFixture("lease-released"));
    expect(await sidecar.runOnce()).toBe(1);
    expect(await sidecar.runOnce()).toBe(2);
    expect(t.calls.lost).toBe(0);
    t.store.put(k8sFixture("lease-held-by-other"));
    expect(await sidecar.runOnce()).toBeUndefined();
    expect(t.calls.lost).toBe(1);
    expect(t.gauge).toEqual([0, 1, 1, 0]);
    await sidecar.close();
    expect(t.gauge.at(-1)).toBe(0);
  });

  it("never runs two ticks at once, and on close waits for the tick, then runs beforeRelease, then gives the Lease up", async () => {
    const t = setup();
    t.store.put(k8sFixture("lease-released"));
    const order: string[] = [];
    const sidecar = await startSidecar({
      name: "test",
      logger: silentLogger,
      lease: t.lease,
      leaderGauge: { set: () => undefined },
      tick: async () => {
        t.calls.ticks++;
        await t.hold();
        order.push("tick done");
        return t.calls.ticks;
      },
      tickIntervalMs: 1000,
      autoStart: false,
      registry: createRegistry({ processMetrics: false }),
    });
    const first = sidecar.runOnce();
    const second = sidecar.runOnce();
    await new Promise((r) => setImmediate(r));
    expect(t.calls.ticks).toBe(1);
    const closed = sidecar.close(async () => {
      order.push(`before release (holder ${String((t.store.object?.spec as { holderIdentity?: string } | undefined)?.holderIdentity)})`);
    });
    t.unhold();
    expect(await first).toBe(1);
    expect(await second).toBe(1);
    await closed;
    expect(order).toEqual(["tick done", "before release (holder me)"]);
    expect(t.store.object?.spec).toMatchObject({ holderIdentity: "" });
  });
});
