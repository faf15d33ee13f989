/**
 * deploy/monitoring against the real roles: the controller on two real pool hosts (each
 * behind its own sshd), the snapshotter and the replicator each on their own SSH connections
 * and registry as `zcsi snapshotter` / `zcsi replicator` build them, every one serving
 * /metrics over HTTP. After a little real work (volumes created through CSI, a bad request, a
 * Probe, a snapshot pass, a replication pass with one run that succeeds and one the target
 * refuses), the union of what the three /metrics serve must hold every metric and label each
 * dashboard panel, variable and alert uses.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/log.js";
import { CommandMetrics, createRegistry } from "../../src/metrics.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import { startReplicator, type RunningReplicator } from "../../src/roles/replicator.js";
import { startSnapshotter, type RunningSnapshotter } from "../../src/roles/snapshotter.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import { startControllerEnv, type ControllerEnv, type PoolHostEnv } from "../harness/controller.js";
import { monitoringExpressions } from "../harness/monitoring.js";
import { checkExpression, metricLabels } from "../harness/promql.js";

const MiB = 1024 * 1024;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let alice: PoolHostEnv;
let bob: PoolHostEnv;
const connections: PoolHosts[] = [];
let snapshotter: RunningSnapshotter;
let replicator: RunningReplicator;

/** A role's own pool host connections and registry, as startSnapshotterRole/startReplicatorRole make them. */
function ownConnections(): { hosts: PoolHosts; registry: ReturnType<typeof createRegistry> } {
  const registry = createRegistry();
  const hosts = connectPoolHosts(env.config, silentLogger, { commandMetrics: new CommandMetrics(registry) });
  connections.push(hosts);
  return { hosts, registry };
}

async function scrape(port: number | undefined): Promise<string> {
  expect(port).toBeGreaterThan(0);
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

async function createVolume(name: string, parameters: Record<string, string>): Promise<string> {
  const res = await env.client.createVolume({ name, capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [mountCap], parameters });
  return res.volume!.volumeId;
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], metricsAddress: "127.0.0.1:0" });
  [alice, bob] = env.hosts as [PoolHostEnv, PoolHostEnv];
  const params = { poolHost: "alice", snapshotSchedule: "hourly=2", replicateTo: "bob", replicationInterval: "15m" };
  await createVolume("pvc-mon-ok", params);
  const refusedId = await createVolume("pvc-mon-refused", params);
  // A dataset zcsi did not make where the second volume's replica would go: the engine refuses
  // to receive into it (FailedPrecondition), so a failure is counted with its reason.
  const leaf = refusedId.slice(refusedId.lastIndexOf("/") + 1);
  const foreign = await bob.pool.exec.run(["zfs", "create", `${bob.parent}/${leaf}`]);
  expect(foreign.exitCode, foreign.stderr).toBe(0);
  // A request CreateVolume refuses: its code is counted too.
  await expect(createVolume("pvc-mon-bad", { compression: "nonsense" })).rejects.toMatchObject({ code: 3 });
  expect((await env.client.probe({})).ready?.value).toBe(true);

  const snap = ownConnections();
  snapshotter = await startSnapshotter(env.config, snap.hosts, { logger: silentLogger, registry: snap.registry, metricsAddress: "127.0.0.1:0", autoStart: false });
  await snapshotter.runOnce();
  const repl = ownConnections();
  replicator = await startReplicator(env.config, repl.hosts, createReplicationEngine(repl.hosts, { logger: silentLogger }), {
    logger: silentLogger,
    registry: repl.registry,
    metricsAddress: "127.0.0.1:0",
    autoStart: false,
  });
  await replicator.runOnce();
}, 180_000);

afterAll(async () => {
  await replicator?.close();
  await snapshotter?.close();
  for (const hosts of connections) await hosts.close();
  await env?.stop();
});

describe("deploy/monitoring against the roles' /metrics", () => {
  it("the roles did the work whose metrics the dashboard shows", async () => {
    const controller = await scrape(env.metricsPort);
    expect(controller).toMatch(/^zcsi_pool_health\{host="alice",pool="[^"]+",state="ONLINE"\} 1$/m);
    expect(controller).toMatch(/^zcsi_pool_host_reachable\{host="bob"\} 1$/m);
    expect(controller).toMatch(/^zcsi_csi_operation_duration_seconds_count\{method="CreateVolume",code="INVALID_ARGUMENT"\} 1$/m);
    expect(controller).toMatch(/^zcsi_csi_operation_duration_seconds_count\{method="CreateVolume",code="OK"\} 2$/m);
    const size = Number(/^zcsi_pool_size_bytes\{host="alice",pool="[^"]+"\} (\S+)$/m.exec(controller)?.[1]);
    const allocated = Number(/^zcsi_pool_allocated_bytes\{host="alice",pool="[^"]+"\} (\S+)$/m.exec(controller)?.[1]);
    expect(allocated).toBeGreaterThan(0);
    expect(size).toBeGreaterThan(allocated);
    const snapshots = await scrape(snapshotter.metricsPort);
    expect(snapshots).toMatch(/^zcsi_volumes\{pool_host="alice"\} 2$/m);
    expect(snapshots).toMatch(/^zcsi_volumes\{pool_host="bob"\} 0$/m);
    expect(snapshots).toMatch(/^zcsi_snapshots_taken_total\{pool_host="alice"\} 2$/m);
    expect(snapshots).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="snapshot"\} 0$/m);
    const replication = await scrape(replicator.metricsPort);
    expect(replication).toMatch(/^zcsi_replication_interval_seconds\{job_id="[^"]+",source="alice:[^"]+",target="bob"\} 900$/m);
    expect(replication).toMatch(/^zcsi_replication_runs_total\{[^}]*action="full"\} 1$/m);
    expect(replication).toMatch(/^zcsi_replication_failures_total\{[^}]*reason="FailedPrecondition"\} 1$/m);
    expect(replication).toMatch(/^zcsi_replication_lag_seconds\{[^}]*target="bob"\} /m);
  });

  it("every metric and label a panel, variable or alert uses is served, and each result has the labels its legend or annotations name", async () => {
    const served = metricLabels([await scrape(env.metricsPort), await scrape(snapshotter.metricsPort), await scrape(replicator.metricsPort)].join("\n"));
    const expressions = monitoringExpressions();
    expect(expressions.length).toBeGreaterThan(25);
    const problems = expressions.flatMap((e) => checkExpression(e.expr, served, { resultLabels: e.resultLabels }).map((p) => `${e.where}: ${p}`));
    expect(problems).toEqual([]);
    // The check has teeth against these very metrics: a misspelt label is caught.
    expect(checkExpression('zcsi_pool_health{status="ONLINE"}', served).join()).toMatch(/label status is not there/);
  });
});
