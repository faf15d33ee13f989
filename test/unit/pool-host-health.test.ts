import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { registerPoolHostMetrics } from "../../src/util/pool-host-metrics.js";
import { PoolHostHealth } from "../../src/volumes/hosts.js";

describe("pool host health", () => {
  it("reports a change only when a problem starts, changes or ends", () => {
    let now = 1000;
    const health = new PoolHostHealth(["alice", "bob"], () => now);
    expect(health.isUp("alice")).toBeUndefined();
    expect(health.record("alice", undefined)).toEqual({ up: true, since: 1000 });
    now = 2000;
    expect(health.record("alice", undefined)).toBeUndefined();
    expect(health.record("alice", "ssh: connection refused")).toEqual({ up: false, problem: "ssh: connection refused", since: 2000 });
    expect(health.record("alice", "ssh: connection refused")).toBeUndefined();
    expect(health.record("alice", "pool tank is FAULTED")?.problem).toBe("pool tank is FAULTED");
    expect(health.record("alice", undefined)?.up).toBe(true);
  });

  it("feeds zcsi_pool_host_up{host}: 1 up, 0 down, no sample before the first check", async () => {
    const health = new PoolHostHealth(["alice", "bob", "carol"]);
    const registry = new Registry();
    registerPoolHostMetrics(registry, health);
    health.record("alice", undefined);
    health.record("bob", "unreachable");
    const text = await registry.metrics();
    expect(text).toContain('zcsi_pool_host_up{host="alice"} 1');
    expect(text).toContain('zcsi_pool_host_up{host="bob"} 0');
    expect(text).not.toContain('host="carol"');
    health.record("bob", undefined);
    expect(await registry.metrics()).toContain('zcsi_pool_host_up{host="bob"} 1');
  });

  it("feeds the pool gauges from what the last check saw: reachability, health state, size, free and allocated bytes", async () => {
    const health = new PoolHostHealth(["alice", "bob", "carol"]);
    const registry = new Registry();
    registerPoolHostMetrics(registry, health);
    const pool = { name: "tank", health: "DEGRADED", sizeBytes: 1000n, freeBytes: 100n, allocatedBytes: 900n };
    health.record("alice", "pool tank on alice is DEGRADED", { reachable: true, pool });
    health.record("bob", "bob: connection refused", { reachable: false });
    let text = await registry.metrics();
    expect(text).toContain('zcsi_pool_host_reachable{host="alice"} 1');
    expect(text).toContain('zcsi_pool_host_reachable{host="bob"} 0');
    expect(text).toContain('zcsi_pool_health{host="alice",pool="tank",state="DEGRADED"} 1');
    expect(text).toContain('zcsi_pool_health{host="alice",pool="tank",state="ONLINE"} 0');
    expect(text).toContain('zcsi_pool_size_bytes{host="alice",pool="tank"} 1000');
    expect(text).toContain('zcsi_pool_free_bytes{host="alice",pool="tank"} 100');
    expect(text).toContain('zcsi_pool_allocated_bytes{host="alice",pool="tank"} 900');
    // Nothing is known of bob's pool (it did not answer) nor of carol (never checked).
    expect(text).not.toMatch(/zcsi_pool_(health|size_bytes)\{host="(bob|carol)"/);
    expect(text).not.toContain('host="carol"');
    // A state zpool(8) may grow later still shows, with the known ones at 0.
    health.record("alice", "pool tank on alice is SPLIT", { reachable: true, pool: { ...pool, health: "SPLIT" } });
    text = await registry.metrics();
    expect(text).toContain('zcsi_pool_health{host="alice",pool="tank",state="SPLIT"} 1');
    expect(text).toContain('zcsi_pool_health{host="alice",pool="tank",state="DEGRADED"} 0');
    // The host goes away: its pool samples go with it, its last state is not reported as current.
    health.record("alice", "alice: timed out", { reachable: false });
    text = await registry.metrics();
    expect(text).toContain('zcsi_pool_host_reachable{host="alice"} 0');
    expect(text).not.toContain("zcsi_pool_health{");
  });
});
