import { pino, type Logger } from "pino";
import { describe, expect, it } from "vitest";
import type { PoolHostConfig } from "../../src/config.js";
import type { ExecResult, Executor } from "../../src/exec/executor.js";
import type { EventRecorder, NodeEvent, PvEvent } from "../../src/k8s/events.js";
import { createRegistry, parseListenAddress, SnapshotMetrics, startMetricsServer } from "../../src/metrics.js";
import { silentLogger } from "../../src/log.js";
import { discoverVolumes, replicationGuard, SnapshotScheduler, type ManagedVolume, type SnapshotInfo } from "../../src/snapshots/scheduler.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { parseGet } from "../../src/zfs/parse.js";
import { ManualClock } from "../harness/fake-k8s.js";

/** `zfs get -Hp -o name,property,value,source -d 2 ...` as zfs-fuse prints it (abridged to what matters). */
const rows = (lines: string[][]): string => lines.map((l) => l.join("\t")).join("\n") + "\n";
const P = "tank/k8s";
const OUTPUT = rows([
  [P, "type", "filesystem", "-"],
  [`${P}@before-upgrade`, "type", "snapshot", "-"],
  [`${P}/pvc-a`, "type", "filesystem", "-"],
  [`${P}/pvc-a`, "zcsi:csi-name", "pvc-a", "local"],
  [`${P}/pvc-a`, "zcsi:pv", "pvc-a", "local"],
  [`${P}/pvc-a`, "zcsi:snapshot-schedule", "hourly=24", "local"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "type", "snapshot", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "guid", "111", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "createtxg", "50", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "userrefs", "0", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "zcsi:csi-name", "pvc-a", `inherited from ${P}/pvc-a`],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "zcsi:snapshot-schedule", "hourly=24", `inherited from ${P}/pvc-a`],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0100Z`, "zcsi:auto-snapshot", "hourly=24", "local"],
  // Our name but no local mark (taken by hand with our prefix): not ours to prune.
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0200Z`, "type", "snapshot", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0200Z`, "userrefs", "0", "-"],
  // Marked, but also a CSI snapshot: never automatic.
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0300Z`, "type", "snapshot", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0300Z`, "zcsi:auto-snapshot", "hourly=24", "local"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0300Z`, "zcsi:csi-snapshot-name", "snapshot-1", "local"],
  // Held and cloned automatic snapshots.
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0400Z`, "type", "snapshot", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0400Z`, "userrefs", "2", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0400Z`, "zcsi:auto-snapshot", "hourly=24", "local"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0500Z`, "type", "snapshot", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0500Z`, "userrefs", "0", "-"],
  [`${P}/pvc-a@zcsi-auto-2026-11-22T0500Z`, "zcsi:auto-snapshot", "hourly=24", "local"],
  [`${P}/pvc-a@snapshot-6f1c`, "type", "snapshot", "-"],
  [`${P}/pvc-a@snapshot-6f1c`, "zcsi:csi-snapshot-name", "snapshot-6f1c", "local"],
  [`${P}/pvc-a/nested`, "type", "filesystem", "-"],
  [`${P}/pvc-a/nested`, "zcsi:csi-name", "nested", "local"],
  [`${P}/pvc-restored`, "type", "filesystem", "-"],
  [`${P}/pvc-restored`, "origin", `${P}/pvc-a@zcsi-auto-2026-11-22T0500Z`, "-"],
  [`${P}/pvc-restored`, "zcsi:csi-name", "pvc-restored", "local"],
  [`${P}/not-ours`, "type", "filesystem", "-"],
  [`${P}/not-ours`, "zcsi:snapshot-schedule", "hourly=1", "local"],
  [`${P}/pvc-b`, "type", "filesystem", "-"],
  [`${P}/pvc-b`, "zcsi:csi-name", "pvc-b", "local"],
  [`${P}/pvc-b`, "zcsi:snapshot-schedule", "-", "-"],
]);

describe("discoverVolumes", () => {
  const volumes = discoverVolumes(P, parseGet(OUTPUT));
  const a = volumes.find((v) => v.dataset === `${P}/pvc-a`);
  const snap = (name: string): SnapshotInfo | undefined => a?.snapshots.find((s) => s.name === name);

  it("finds the zcsi volumes directly below the parent, with their local schedule", () => {
    expect(volumes.map((v) => [v.dataset, v.schedule ?? null])).toEqual([
      [`${P}/pvc-a`, "hourly=24"],
      [`${P}/pvc-restored`, null],
      [`${P}/pvc-b`, null],
    ]);
    expect(a?.pv).toBe("pvc-a");
  });

  it("counts as automatic only our name with our local mark and no CSI mark", () => {
    expect(snap("zcsi-auto-2026-11-22T0100Z")?.autoTime).toBe(Date.parse("2026-11-22T01:00:00Z"));
    expect(snap("zcsi-auto-2026-11-22T0200Z")?.autoTime).toBeUndefined();
    expect(snap("zcsi-auto-2026-11-22T0300Z")?.autoTime).toBeUndefined();
    expect(snap("snapshot-6f1c")?.autoTime).toBeUndefined();
  });

  it("sees holds and clones", () => {
    expect(snap("zcsi-auto-2026-11-22T0400Z")?.userrefs).toBe(2);
    expect(snap("zcsi-auto-2026-11-22T0500Z")?.hasClones).toBe(true);
    expect(snap("zcsi-auto-2026-11-22T0100Z")).toMatchObject({ hasClones: false, userrefs: 0, guid: "111", createtxg: 50n });
  });
});

describe("replicationGuard", () => {
  const s = (name: string, guid: string, createtxg: bigint): SnapshotInfo => ({ name, guid, createtxg, userrefs: 0, hasClones: false });
  const snapshots = [s("zcsi-auto-2026-11-22T0100Z", "11", 10n), s("zcsi-auto-2026-11-22T0200Z", "22", 20n), s("zcsi-auto-2026-11-22T0300Z", "33", 30n)];
  const volume = (extra: Partial<ManagedVolume>): ManagedVolume => ({ dataset: `${P}/pvc-a`, snapshots, ...extra });
  const verdicts = (v: ManagedVolume): (string | undefined)[] => snapshots.map(replicationGuard(v));

  it("does not apply without replication targets", () => {
    expect(verdicts(volume({ replicatedThrough: "22" }))).toEqual([undefined, undefined, undefined]);
  });
  it("keeps everything until something was replicated", () => {
    expect(verdicts(volume({ replicateTo: "bob:tank/backup" })).every((r) => /not replicated yet/.test(r ?? ""))).toBe(true);
  });
  it("keeps the replicated snapshot and everything newer (by createtxg), by guid or by name", () => {
    const byGuid = verdicts(volume({ replicateTo: "bob:tank/backup", replicatedThrough: "22" }));
    expect(byGuid[0]).toBeUndefined();
    expect(byGuid[1]).toMatch(/not older than the replicated snapshot zcsi-auto-2026-11-22T0200Z/);
    expect(byGuid[2]).toMatch(/not older/);
    expect(verdicts(volume({ replicateTo: "bob:tank/backup", replicatedThrough: "zcsi-auto-2026-11-22T0200Z" }))).toEqual(byGuid);
  });
  it("keeps everything when the replicated snapshot is gone", () => {
    expect(verdicts(volume({ replicateTo: "bob:tank/backup", replicatedThrough: "99" })).every((r) => /names no snapshot/.test(r ?? ""))).toBe(true);
  });
});

describe("metrics", () => {
  it("parses listen addresses", () => {
    expect(parseListenAddress(":9808")).toEqual({ port: 9808 });
    expect(parseListenAddress("127.0.0.1:0")).toEqual({ host: "127.0.0.1", port: 0 });
    expect(parseListenAddress("[::1]:9808")).toEqual({ host: "::1", port: 9808 });
    expect(() => parseListenAddress("9808")).toThrow(/metrics-address/);
    expect(() => parseListenAddress(":99999")).toThrow(/metrics-address/);
  });

  it("serves the snapshot metrics on /metrics, dropping a deleted volume's sample", async () => {
    const registry = createRegistry();
    const metrics = new SnapshotMetrics(registry);
    metrics.taken.inc({ pool_host: "alice" }, 3);
    metrics.failed.inc({ pool_host: "alice", operation: "prune" });
    metrics.setLastSuccess("alice", new Map([["alice:tank/k8s/pvc-a", Date.parse("2026-11-22T01:00:00Z")], ["alice:tank/k8s/pvc-b", 0]]));
    metrics.setLastSuccess("alice", new Map([["alice:tank/k8s/pvc-a", Date.parse("2026-11-22T02:00:00Z")]]));
    const server = await startMetricsServer("127.0.0.1:0", registry, silentLogger);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toMatch(/^zcsi_snapshots_taken_total\{pool_host="alice"\} 3$/m);
      expect(text).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="prune"\} 1$/m);
      expect(text).toMatch(/^zcsi_snapshot_last_success_timestamp_seconds\{volume_id="alice:tank\/k8s\/pvc-a"\} 1795312800$/m);
      expect(text).not.toMatch(/pvc-b/);
      expect(text).toMatch(/^zcsi_process_cpu_user_seconds_total /m);
      expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

/** An OpenZFS pool host answering from a script: discovery output and per-command results. */
class ScriptedHost implements Executor {
  readonly host = "alice";
  readonly argvs: string[][] = [];
  constructor(
    public discovery: string,
    private readonly results: Record<string, ExecResult>,
  ) {}
  async run(argv: readonly string[]): Promise<ExecResult> {
    this.argvs.push([...argv]);
    if (argv[1] === "version") return { stdout: "zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n", stderr: "", exitCode: 0 };
    if (argv[1] === "get") return { stdout: this.discovery, stderr: "", exitCode: 0 };
    return this.results[argv[1] ?? ""] ?? { stdout: "", stderr: "", exitCode: 0 };
  }
  stream(): never {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

class Events implements EventRecorder {
  readonly events: PvEvent[] = [];
  readonly nodeEvents: NodeEvent[] = [];
  async record(e: PvEvent): Promise<void> {
    this.events.push(e);
  }
  async recordOnNode(e: NodeEvent): Promise<void> {
    this.nodeEvents.push(e);
  }
}

const HOST: PoolHostConfig = { name: "alice", address: "127.0.0.1", port: 22, user: "root", parentDataset: P, mountRoot: "/tank/k8s", hostKeys: ["ssh-ed25519 AAAA"], sudo: false };
const V = `${P}/pvc-x`;
const ONE_VOLUME = rows([
  [V, "type", "filesystem", "-"],
  [V, "zcsi:csi-name", "pvc-x", "local"],
  [V, "zcsi:pv", "pvc-x", "local"],
  [V, "zcsi:snapshot-schedule", "hourly=1", "local"],
  [`${V}@zcsi-auto-2026-11-22T0000Z`, "type", "snapshot", "-"],
  [`${V}@zcsi-auto-2026-11-22T0000Z`, "userrefs", "0", "-"],
  [`${V}@zcsi-auto-2026-11-22T0000Z`, "clones", "", "-"],
  [`${V}@zcsi-auto-2026-11-22T0000Z`, "zcsi:auto-snapshot", "hourly=1", "local"],
]);

describe("SnapshotScheduler failures", () => {
  async function run(results: Record<string, ExecResult>) {
    const exec = new ScriptedHost(ONE_VOLUME, results);
    const events = new Events();
    const registry = createRegistry({ processMetrics: false });
    const scheduler = new SnapshotScheduler(new PoolHosts([{ config: HOST, exec }], {}), {
      clock: new ManualClock("2026-11-22T01:00:20Z"),
      logger: silentLogger,
      events,
      metrics: new SnapshotMetrics(registry),
    });
    const report = await scheduler.tick();
    return { exec, events, report, metrics: await registry.metrics() };
  }

  it("asks OpenZFS for clones, and prunes nothing when the snapshot cannot be taken: Event on the PV, failure counted", async () => {
    const { exec, events, report, metrics } = await run({
      snapshot: { stdout: "", stderr: `cannot create snapshot '${V}@zcsi-auto-2026-11-22T0100Z': out of space\n`, exitCode: 1 },
    });
    expect(exec.argvs.find((a) => a[1] === "get")?.join(" ")).toContain(",clones");
    expect(exec.argvs.map((a) => a[1])).toEqual(["version", "get", "snapshot"]);
    expect(report.hosts[0]?.volumes[0]?.failures).toEqual([{ operation: "snapshot", error: expect.stringMatching(/out of space/) }]);
    expect(events.events).toEqual([{ pvName: "pvc-x", type: "Warning", reason: "AutoSnapshotFailed", message: expect.stringMatching(/zcsi-auto-2026-11-22T0100Z failed: .*out of space/) }]);
    expect(metrics).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="snapshot"\} 1$/m);
  });

  it("reports a failed prune on the PV, and treats 'has dependent clones' as a protection, not a failure", async () => {
    const failed = await run({ destroy: { stdout: "", stderr: `cannot destroy '${V}@zcsi-auto-2026-11-22T0000Z': I/O error\n`, exitCode: 1 } });
    expect(failed.report.hosts[0]?.volumes[0]).toMatchObject({ taken: "zcsi-auto-2026-11-22T0100Z", pruned: [] });
    expect(failed.events.events.map((e) => e.reason)).toEqual(["AutoSnapshotPruneFailed"]);
    expect(failed.metrics).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="prune"\} 1$/m);

    const cloned = await run({ destroy: { stdout: "", stderr: `cannot destroy '${V}@zcsi-auto-2026-11-22T0000Z': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\ntank/elsewhere/copy\n`, exitCode: 1 } });
    expect(cloned.report.hosts[0]?.volumes[0]).toMatchObject({ pruned: [], protected: [{ name: "zcsi-auto-2026-11-22T0000Z", reason: "has clones (outside the parent dataset)" }], failures: [] });
    expect(cloned.events.events).toEqual([]);
  });

  it("reports a host it cannot list and goes on with the others", async () => {
    const exec = new ScriptedHost("", {});
    exec.run = async () => ({ stdout: "", stderr: "ssh: connect to host alice port 22: Connection refused", exitCode: 255 });
    const registry = createRegistry({ processMetrics: false });
    const scheduler = new SnapshotScheduler(new PoolHosts([{ config: HOST, exec }]), { clock: new ManualClock(0), logger: silentLogger, metrics: new SnapshotMetrics(registry) });
    const report = await scheduler.tick();
    expect(report.hosts[0]?.error).toBeDefined();
    expect(await registry.metrics()).toMatch(/operation="discover"\} 1$/m);
  });
});

/** A logger that keeps every line (as parsed JSON) for the test to read. */
function recordingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

describe("a condition that persists across ticks", () => {
  const BROKEN = rows([
    [V, "type", "filesystem", "-"],
    [V, "zcsi:csi-name", "pvc-x", "local"],
    [V, "zcsi:pv", "pvc-x", "local"],
    [V, "zcsi:snapshot-schedule", "hourly=banana", "local"],
  ]);

  it("logs an unreadable schedule when it starts, hourly while it lasts, and when it ends; the Event and count still come every tick", async () => {
    const exec = new ScriptedHost(BROKEN, {});
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const { logger, lines } = recordingLogger();
    const events = new Events();
    const registry = createRegistry({ processMetrics: false });
    const scheduler = new SnapshotScheduler(new PoolHosts([{ config: HOST, exec }], {}), { clock, logger, events, metrics: new SnapshotMetrics(registry) });
    const warnings = (): Record<string, unknown>[] => lines.filter((l) => l["level"] === 40);

    // 23 ticks in 4 minutes (what a real snapshotter did): one warning, not 23.
    for (let i = 0; i < 23; i++) {
      const report = await scheduler.tick();
      expect(report.hosts[0]?.volumes[0]?.failures.map((f) => f.operation)).toEqual(["policy"]);
      clock.advance(10_000);
    }
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ volumeId: `alice:${V}`, operation: "policy", condition: "started" });
    expect(events.events).toHaveLength(23);
    expect(await registry.metrics()).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="policy"\} 23$/m);

    // Still broken an hour after it was first logged: logged once more.
    clock.set("2026-11-22T02:00:00Z");
    await scheduler.tick();
    await scheduler.tick();
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]).toMatchObject({ condition: "persists" });

    // A different mistake is a change: logged at once.
    exec.discovery = BROKEN.replace("hourly=banana", "weekly=x");
    await scheduler.tick();
    expect(warnings()).toHaveLength(3);
    expect(warnings()[2]).toMatchObject({ condition: "changed" });

    // Fixed: one line says so, and nothing more is logged about it.
    exec.discovery = BROKEN.replace("hourly=banana", "hourly=1");
    await scheduler.tick();
    await scheduler.tick();
    expect(warnings()).toHaveLength(3);
    expect(lines.filter((l) => l["condition"] === "ended")).toEqual([expect.objectContaining({ key: `policy:alice:${V}`, level: 30 })]);
  });

  it("logs a pool host it cannot list once, not every tick, and says when listing works again", async () => {
    const exec = new ScriptedHost(ONE_VOLUME, {});
    const reachable = exec.run.bind(exec);
    let down = true;
    exec.run = async (argv) => (down ? { stdout: "", stderr: "ssh: connect to host alice port 22: Connection refused", exitCode: 255 } : reachable(argv));
    const clock = new ManualClock("2026-11-22T01:00:20Z");
    const { logger, lines } = recordingLogger();
    const events = new Events();
    const scheduler = new SnapshotScheduler(new PoolHosts([{ config: HOST, exec }]), { clock, logger, events });
    for (let i = 0; i < 5; i++) {
      expect((await scheduler.tick()).hosts[0]?.error).toBeDefined();
      clock.advance(60_000);
    }
    expect(lines.filter((l) => l["level"] === 40)).toHaveLength(1);
    // One Warning Event on the pool host's Node, not one per tick.
    expect(events.nodeEvents).toEqual([{ nodeName: "alice", type: "Warning", reason: "PoolHostUnreachable", message: expect.stringMatching(/Connection refused/) }]);
    down = false;
    expect((await scheduler.tick()).hosts[0]?.error).toBeUndefined();
    expect(lines.filter((l) => l["condition"] === "ended")).toHaveLength(1);
    expect(events.nodeEvents.map((e) => [e.type, e.reason])).toEqual([
      ["Warning", "PoolHostUnreachable"],
      ["Normal", "PoolHostReachable"],
    ]);
  });
});
