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
});
