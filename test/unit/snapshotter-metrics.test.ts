import { describe, expect, it } from "vitest";
import { LeaderElector } from "../../src/k8s/lease.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry } from "../../src/metrics.js";
import { startSnapshotter } from "../../src/roles/snapshotter.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { FakeLeaseStore, k8sFixture, ManualClock } from "../harness/fake-k8s.js";
import { FakePoolHost, TWO_POOL_HOSTS } from "../harness/fake-pool-host.js";

/** The snapshotter role's metrics that deploy/monitoring's dashboard and alerts read. */
describe("snapshotter metrics", () => {
  it("counts the volumes each host serves while leading, none for a host it cannot list, and forgets them when the Lease is lost; failure counters start at zero", async () => {
    const alice = new FakePoolHost(
      "alice",
      new Map([
        ["tank/k8s", new Map()],
        ["tank/k8s/pvc-a", new Map([["zcsi:csi-name", "pvc-a"]])],
        ["tank/k8s/pvc-b", new Map([["zcsi:csi-name", "pvc-b"]])],
        // A replica kept here is not a volume this host serves; a dataset without zcsi:csi-name is not zcsi's.
        ["tank/k8s/pvc-c", new Map([["zcsi:csi-name", "pvc-c"], ["zcsi:replica-of", "bob:pool2/k8s/pvc-c"]])],
        ["tank/k8s/other", new Map()],
      ]),
    );
    const bob = new FakePoolHost("bob");
    bob.down = true;
    const hosts = new PoolHosts(TWO_POOL_HOSTS.poolHosts.map((config) => ({ config, exec: config.name === "alice" ? alice : bob })));
    const clock = new ManualClock("2026-11-22T01:00:01Z");
    const store = new FakeLeaseStore("zcsi", "zcsi-snapshotter", k8sFixture("lease-released"));
    const lease = new LeaderElector({ store, identity: "me", clock, logger: silentLogger });
    const registry = createRegistry({ processMetrics: false });
    const running = await startSnapshotter(TWO_POOL_HOSTS, hosts, { logger: silentLogger, clock, lease, registry, autoStart: false });
    try {
      let text = await registry.metrics();
      expect(text).toMatch(/^zcsi_snapshot_failures_total\{pool_host="bob",operation="snapshot"\} 0$/m);
      expect(text).toMatch(/^zcsi_snapshots_taken_total\{pool_host="alice"\} 0$/m);
      expect(text).not.toMatch(/^zcsi_volumes\{/m);
      await running.runOnce();
      text = await registry.metrics();
      expect(text).toMatch(/^zcsi_volumes\{pool_host="alice"\} 2$/m);
      expect(text).not.toMatch(/^zcsi_volumes\{pool_host="bob"\}/m);
      expect(text).toMatch(/^zcsi_snapshot_failures_total\{pool_host="bob",operation="discover"\} 1$/m);
      store.put(k8sFixture("lease-held-by-other"));
      expect(await running.runOnce()).toBeUndefined();
      expect(await registry.metrics()).not.toMatch(/^zcsi_volumes\{/m);
    } finally {
      await running.close();
    }
  });
});
