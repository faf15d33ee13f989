import { pino, type Logger } from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { aborted, failedPrecondition, unavailable } from "../../src/errors.js";
import type { ExecResult, Executor } from "../../src/exec/executor.js";
import type { EventRecorder, NodeEvent, PvEvent } from "../../src/k8s/events.js";
import { LeaderElector } from "../../src/k8s/lease.js";
import { nodeFromObject, type NodeInfo, type NodeSource } from "../../src/k8s/nodes.js";
import { replicaAnnotationKey, type AnnotationPatch, type PvAnnotator } from "../../src/k8s/pv.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry, MoveMetrics, ReplicationMetrics } from "../../src/metrics.js";
import type { DatasetRef, ReplicationEngine, ReplicationJob, ReplicationResult } from "../../src/replication/types.js";
import { replicaAnnotationValue, Replicator } from "../../src/replication/scheduler.js";
import { parseReplicatorFlags, startReplicator } from "../../src/roles/replicator.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { FakeLeaseStore, k8sFixture, ManualClock } from "../harness/fake-k8s.js";

/**
 * The replicator loop against a test double of the engine (it records calls and answers as
 * each test says: the engine itself has its own tests on real pools), pool hosts that answer
 * the one discovery `zfs get`, recorded-shape Node objects, and a fake clock.
 */

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gQ0PnCqYcZ6m6gZ1vIjxbnT4LkQm2R2wqkz9E5S9y";
const config = parseConfig({
  privateKeyFile: "/etc/zcsi/ssh/id_ed25519",
  poolHosts: ["pool-1", "pool-2", "pool-3"].map((name) => ({ name, address: `${name}.example`, parentDataset: "tank/k8s", mountRoot: "/tank/k8s", hostKey: KEY })),
});
const T0 = "2026-11-22T01:00:00Z";
const MIN = 60_000;

/** `zfs get -Hp -o name,property,value,source -d 1 ... tank/k8s` of one pool host, rewritable by the test. */
class PoolHostDouble implements Executor {
  volumes: { leaf: string; replicateTo?: string; interval?: string; pv?: string; lastMove?: string; fenced?: string; role?: string }[] = [];
  failing: string | undefined;
  constructor(readonly host: string) {}
  async run(argv: readonly string[]): Promise<ExecResult> {
    if (argv[1] !== "get") return { stdout: "", stderr: "", exitCode: 0 };
    if (this.failing) return { stdout: "", stderr: this.failing, exitCode: 1 };
    const rows = [["tank/k8s", "zcsi:csi-name", "-", "-"]];
    for (const v of this.volumes) {
      const d = `tank/k8s/${v.leaf}`;
      rows.push([d, "zcsi:csi-name", v.leaf, "local"], [d, "zcsi:pv", v.pv ?? v.leaf, "local"]);
      if (v.replicateTo) rows.push([d, "zcsi:replicate-to", v.replicateTo, "local"]);
      if (v.interval) rows.push([d, "zcsi:replication-interval", v.interval, "local"]);
      if (v.lastMove) rows.push([d, "zcsi:last-move", v.lastMove, "local"]);
      if (v.fenced) rows.push([d, "zcsi:fenced", v.fenced, "local"]);
      if (v.role) rows.push([d, "zcsi:role", v.role, "local"]);
    }
    return { stdout: rows.map((r) => r.join("\t")).join("\n") + "\n", stderr: "", exitCode: 0 };
  }
  stream(): never {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

interface Deferred {
  resolve(r?: Partial<ReplicationResult>): void;
  reject(err: Error): void;
}

/** Records every call; answers at once (default) or when the test settles the run. */
class RecordingEngine implements ReplicationEngine {
  readonly calls: ReplicationJob[] = [];
  readonly releases: { source: DatasetRef; jobId: string | undefined }[] = [];
  readonly pending = new Map<string, Deferred>();
  readonly signals = new Map<string, AbortSignal>();
  manual = false;
  failWith: Error | undefined;
  snapshotCreatedAt = Date.parse(T0) / 1000 - 42;
  /** The source's epoch the result reports (an engine that does not say: undefined). */
  epoch: number | undefined;

  async replicate(job: ReplicationJob, signal?: AbortSignal): Promise<ReplicationResult> {
    this.calls.push(job);
    if (signal) this.signals.set(job.id, signal);
    const ok = (r: Partial<ReplicationResult> = {}): ReplicationResult => ({
      jobId: job.id,
      action: "incremental",
      snapshot: "zcsi-repl-2026-11-22T005918Z",
      guid: "123",
      snapshotCreatedAt: this.snapshotCreatedAt,
      bytes: 4096,
      durationMs: 1500,
      ...(this.epoch !== undefined && { epoch: this.epoch }),
      ...r,
    });
    if (this.failWith) throw this.failWith;
    if (!this.manual) return ok();
    return new Promise<ReplicationResult>((resolve, reject) => {
      this.pending.set(job.id, { resolve: (r) => resolve(ok(r)), reject });
      signal?.addEventListener("abort", () => reject(new Error("aborted")));
    });
  }

  async releaseHolds(source: DatasetRef, jobId?: string): Promise<void> {
    this.releases.push({ source, jobId });
  }

  inFlight(): string[] {
    return [...this.pending.keys()];
  }

  settle(jobId: string, r?: Partial<ReplicationResult>): void {
    this.pending.get(jobId)?.resolve(r);
    this.pending.delete(jobId);
  }
}

class Nodes implements NodeSource {
  nodes: NodeInfo[] = [];
  failing = false;
  async listNodes(): Promise<NodeInfo[]> {
    if (this.failing) throw unavailable("listing Nodes: HTTP 503");
    return this.nodes;
  }
}

class Pvs implements PvAnnotator {
  readonly annotations = new Map<string, Record<string, string>>();
  readonly patches: { pv: string; patch: AnnotationPatch }[] = [];
  async annotate(pv: string, patch: AnnotationPatch): Promise<boolean> {
    this.patches.push({ pv, patch });
    const current = this.annotations.get(pv) ?? {};
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete current[k];
      else current[k] = v;
    }
    this.annotations.set(pv, current);
    return true;
  }
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

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

function setup(options: { concurrency?: number; annotationIntervalSeconds?: number; logger?: Logger } = {}) {
  const doubles = new Map(config.poolHosts.map((h) => [h.name, new PoolHostDouble(h.name)]));
  const hosts = new PoolHosts(config.poolHosts.map((h) => ({ config: h, exec: doubles.get(h.name)! })));
  const clock = new ManualClock(T0);
  const engine = new RecordingEngine();
  const nodes = new Nodes();
  const pvs = new Pvs();
  const events = new Events();
  const registry = createRegistry({ processMetrics: false });
  const metrics = new ReplicationMetrics(registry);
  const moveMetrics = new MoveMetrics(registry);
  const replicator = new Replicator(hosts, engine, { clock, logger: silentLogger, nodes, pvs, events, metrics, moveMetrics, ...options });
  return { host: (name: string) => doubles.get(name)!, clock, engine, nodes, pvs, events, registry, replicator };
}

const targets = (calls: readonly ReplicationJob[]): string[] => calls.map((j) => `${j.source.dataset} -> ${j.target.host}:${j.target.dataset}`);

describe("Replicator: volume jobs and their schedule", () => {
  it("runs a new volume job at once, then again only when its interval has passed since the last start", async () => {
    const t = setup();
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2", interval: "15m" }];
    await t.replicator.tick();
    await t.replicator.idle();
    expect(targets(t.engine.calls)).toEqual(["tank/k8s/pvc-1 -> pool-2:tank/k8s/pvc-1"]);
    expect(t.engine.calls[0]?.origin).toEqual({ kind: "volume", volumeId: "pool-1:tank/k8s/pvc-1" });
    t.clock.advance(14 * MIN);
    await t.replicator.tick();
    expect(t.engine.calls).toHaveLength(1);
    t.clock.advance(1 * MIN);
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.engine.calls).toHaveLength(2);
  });

  it("runs each target of a volume as its own job, each on the volume's interval", async () => {
    const t = setup();
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2,pool-3", interval: "1h" }];
    const report = await t.replicator.tick();
    await t.replicator.idle();
    expect(report.jobs).toHaveLength(2);
    expect(targets(t.engine.calls).sort()).toEqual(["tank/k8s/pvc-1 -> pool-2:tank/k8s/pvc-1", "tank/k8s/pvc-1 -> pool-3:tank/k8s/pvc-1"]);
    t.clock.advance(59 * MIN);
    await t.replicator.tick();
    expect(t.engine.calls).toHaveLength(2);
    t.clock.advance(MIN);
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.engine.calls).toHaveLength(4);
  });

  it("never runs more than the concurrency limit at once; queued jobs start as runs finish, oldest first", async () => {
    const t = setup({ concurrency: 2 });
    t.engine.manual = true;
    t.host("pool-1").volumes = ["pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"].map((leaf) => ({ leaf, replicateTo: "pool-2" }));
    const report = await t.replicator.tick();
    expect(report.started).toHaveLength(2);
    expect(t.engine.inFlight()).toHaveLength(2);
    let maxInFlight = 2;
    const order = [...t.engine.inFlight()];
    while (t.engine.pending.size > 0) {
      t.engine.settle(t.engine.inFlight()[0]!);
      await flush();
      maxInFlight = Math.max(maxInFlight, t.engine.pending.size);
      for (const id of t.engine.inFlight()) if (!order.includes(id)) order.push(id);
      // A tick while runs are going on starts nothing beyond the limit either.
      await t.replicator.tick();
      maxInFlight = Math.max(maxInFlight, t.engine.pending.size);
    }
    expect(maxInFlight).toBe(2);
    expect(t.engine.calls).toHaveLength(5);
    expect(order).toEqual([...report.jobs]);
  });

  it("does not start a job again while its previous run is still going, however late it is", async () => {
    const t = setup();
    t.engine.manual = true;
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2", interval: "15m" }];
    await t.replicator.tick();
    t.clock.advance(45 * MIN);
    await t.replicator.tick();
    expect(t.engine.calls).toHaveLength(1);
    t.engine.settle(t.engine.inFlight()[0]!);
    await t.replicator.idle();
    // The interval counts from the start of the last run, 45 minutes ago: due again now.
    await t.replicator.tick();
    expect(t.engine.calls).toHaveLength(2);
  });
});

describe("Replicator: what users see", () => {
  it("annotates the PV with the home and its epoch, and each replica's time, lag, snapshot and epoch; exports bytes, lag and runs", async () => {
    const t = setup();
    t.engine.epoch = 2;
    t.host("pool-1").volumes = [{ leaf: "pvc-1", pv: "pvc-3f6b1c2e", replicateTo: "pool-2" }];
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.pvs.annotations.get("pvc-3f6b1c2e")).toEqual({
      "zcsi.dev/home": "pool-1:tank/k8s/pvc-1 epoch=2",
      "zcsi.dev/replica.pool-2": "2026-11-22T01:00:00Z lag=42s snapshot=zcsi-repl-2026-11-22T005918Z epoch=2",
    });
    const text = await t.registry.metrics();
    const id = t.engine.calls[0]!.id;
    const labels = `job_id="${id}",source="pool-1:tank/k8s/pvc-1",target="pool-2"`;
    expect(text).toContain(`zcsi_replication_sent_bytes_total{${labels}} 4096`);
    expect(text).toContain(`zcsi_replication_lag_seconds{${labels}} 42`);
    expect(text).toContain(`zcsi_replication_runs_total{${labels},action="incremental"} 1`);
    expect(text).toContain(`zcsi_replication_duration_seconds_count{${labels}} 1`);
    // Lag keeps growing between runs (the gauge is refreshed every pass).
    t.clock.advance(5 * MIN);
    await t.replicator.tick();
    expect(await t.registry.metrics()).toContain(`zcsi_replication_lag_seconds{${labels}} 342`);
  });

  it("on failure: a Warning Event on the PV, the error in the annotation with the last good state, and a failure count", async () => {
    const t = setup();
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2", interval: "15m" }];
    await t.replicator.tick();
    await t.replicator.idle();
    t.engine.failWith = failedPrecondition("target pool-2:tank/k8s/pvc-1 has changes after zcsi-repl-2026-11-22T005918Z that the source lacks;\nnothing was destroyed");
    t.clock.advance(15 * MIN);
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.events.events).toEqual([
      {
        pvName: "pvc-1",
        type: "Warning",
        reason: "ReplicationRefused",
        message: "replication to pool-2 (tank/k8s/pvc-1) failed: target pool-2:tank/k8s/pvc-1 has changes after zcsi-repl-2026-11-22T005918Z that the source lacks; nothing was destroyed",
      },
    ]);
    expect(t.pvs.annotations.get("pvc-1")?.["zcsi.dev/replica.pool-2"]).toBe(
      "2026-11-22T01:15:00Z lag=15m42s snapshot=zcsi-repl-2026-11-22T005918Z error=target pool-2:tank/k8s/pvc-1 has changes after zcsi-repl-2026-11-22T005918Z that the source lacks; nothing was destroyed",
    );
    expect(await t.registry.metrics()).toMatch(/zcsi_replication_failures_total\{[^}]*reason="FailedPrecondition"\} 1/);
    t.engine.failWith = unavailable("ssh pool-2: connect ECONNREFUSED");
    t.clock.advance(15 * MIN);
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.events.events.at(-1)?.reason).toBe("ReplicationFailed");
  });

  it("puts the Warning Event of a failed annotation job on the replica's Node (it has no PV)", async () => {
    const t = setup();
    t.nodes.nodes = [nodeFromObject(k8sFixture("node-pool-1-source")), nodeFromObject(k8sFixture("node-pool-2-replica-changed"))];
    t.engine.failWith = unavailable("ssh pool-1: connect ECONNREFUSED");
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.events.events).toEqual([]);
    expect(t.pvs.patches).toEqual([]);
    expect(t.events.nodeEvents).toEqual([
      { nodeName: "pool-2", type: "Warning", reason: "ReplicationFailed", message: "replication of pool-1:tank/k8s/apps/db to tank/k8s/apps/db failed: ssh pool-1: connect ECONNREFUSED" },
    ]);
  });

  it("says only `error=` when no run has succeeded yet, and keeps the message to one short line", () => {
    const v = replicaAnnotationValue(new Date("2026-11-22T01:00:00.123Z"), undefined, `a\n${"x".repeat(500)}`);
    expect(v.startsWith("2026-11-22T01:00:00Z error=a x")).toBe(true);
    expect(v.length).toBeLessThan(240);
    expect(replicaAnnotationValue(new Date(T0), { snapshot: "s", createdAt: Date.parse(T0) / 1000 - 7200 })).toBe("2026-11-22T01:00:00Z lag=2h snapshot=s");
  });

  it("treats a run already in flight elsewhere (ABORTED) as no failure", async () => {
    const t = setup();
    t.engine.failWith = aborted("replication job x is already running");
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    await t.replicator.tick();
    await t.replicator.idle();
    expect(t.events.events).toEqual([]);
    expect(t.pvs.patches).toEqual([]);
    expect(await t.registry.metrics()).not.toMatch(/zcsi_replication_failures_total\{/);
  });

  it("keys annotations by target host, shortening names too long for a Kubernetes key", () => {
    expect(replicaAnnotationKey("pool-2")).toBe("zcsi.dev/replica.pool-2");
    const long = replicaAnnotationKey(`node-${"a".repeat(80)}.example.com`);
    expect(long).toMatch(/^zcsi\.dev\/replica\.node-a+-[0-9a-f]{8}$/);
    expect(long.split("/")[1]!.length).toBeLessThanOrEqual(63);
    expect(long).not.toBe(replicaAnnotationKey(`node-${"a".repeat(80)}.example.org`));
  });
});

describe("Replicator: move metrics from the copies' zcsi:last-move", () => {
  const move = (r: Record<string, unknown>): string => JSON.stringify(r);

  it("counts each move that ended since it started once, by kind and outcome, with a migrate's downtime; not older moves", async () => {
    const t = setup();
    t.host("pool-2").volumes = [
      { leaf: "pvc-1", lastMove: move({ kind: "migrate", outcome: "done", at: "2026-11-22T01:00:05Z", from: "pool-1", to: "pool-2", epoch: 2, downtimeSeconds: 4.2 }) },
      // Ended before this replicator started: its predecessor counted it.
      { leaf: "pvc-2", lastMove: move({ kind: "failover", outcome: "done", at: "2026-11-22T00:10:00Z", to: "pool-2", epoch: 3 }) },
      { leaf: "pvc-3", lastMove: "not json" },
    ];
    await t.replicator.tick();
    await t.replicator.tick(); // the same records again: not counted twice
    let text = await t.registry.metrics();
    expect(text).toContain('zcsi_volume_moves_total{kind="migrate",outcome="done"} 1');
    expect(text).not.toContain('kind="failover"');
    expect(text).toContain('zcsi_volume_move_downtime_seconds_bucket{le="5",kind="migrate"} 1');
    expect(text).toContain('zcsi_volume_move_downtime_seconds_bucket{le="2",kind="migrate"} 0');

    t.clock.advance(MIN);
    t.host("pool-3").volumes = [{ leaf: "pvc-2", lastMove: move({ kind: "failover", outcome: "done", at: "2026-11-22T01:00:30Z", from: "pool-1", to: "pool-3", epoch: 4 }) }];
    t.host("pool-1").volumes = [{ leaf: "pvc-4", lastMove: move({ kind: "migrate", outcome: "undone", at: "2026-11-22T01:00:40Z", from: "pool-1", to: "pool-2" }) }];
    await t.replicator.tick();
    text = await t.registry.metrics();
    expect(text).toContain('zcsi_volume_moves_total{kind="failover",outcome="done"} 1');
    expect(text).toContain('zcsi_volume_moves_total{kind="migrate",outcome="undone"} 1');
    expect(text).toContain('zcsi_volume_move_downtime_seconds_count{kind="migrate"} 1');
  });

  it("exports the fenced stale primaries per pool host (replicas and unfenced copies are not stale)", async () => {
    const t = setup();
    t.host("pool-1").volumes = [
      { leaf: "pvc-1", fenced: "superseded by epoch 2 on pool-2:tank/k8s/pvc-1" },
      { leaf: "pvc-2", fenced: "superseded by epoch 3 on pool-3:tank/k8s/pvc-2", role: "primary" },
      { leaf: "pvc-3", role: "replica" },
    ];
    await t.replicator.tick();
    const text = await t.registry.metrics();
    expect(text).toContain('zcsi_volume_stale_copies{pool_host="pool-1"} 2');
    expect(text).toContain('zcsi_volume_stale_copies{pool_host="pool-2"} 0');
  });
});

describe("Replicator: jobs follow node annotations and volumes, without a restart", () => {
  const node = (name: string): NodeInfo => nodeFromObject(k8sFixture(name));

  it("adds annotation jobs, and releases the holds of one whose annotation was removed", async () => {
    const t = setup({ annotationIntervalSeconds: 3600 });
    t.nodes.nodes = [node("node-pool-1-source"), node("node-pool-2-replica")];
    const first = await t.replicator.tick();
    await t.replicator.idle();
    expect(targets(t.engine.calls).sort()).toEqual(["tank/k8s/apps/db -> pool-2:tank/k8s/apps/db", "tank/k8s/apps/www -> pool-2:tank/k8s/replicas/www"]);
    const www = t.engine.calls.find((j) => j.source.dataset === "tank/k8s/apps/www")!;
    expect(t.engine.releases).toEqual([]);

    t.nodes.nodes = [node("node-pool-1-source"), node("node-pool-2-replica-changed")];
    t.clock.advance(MIN);
    const second = await t.replicator.tick();
    expect(second.jobs).toEqual(first.jobs.filter((id) => id !== www.id));
    expect(second.released).toEqual([www.id]);
    expect(t.engine.releases).toEqual([{ source: { host: "pool-1", dataset: "tank/k8s/apps/www" }, jobId: www.id }]);
    // Not due yet (interval 1 h): the change itself runs nothing.
    expect(t.engine.calls).toHaveLength(2);

    t.nodes.nodes = [node("node-pool-1-source"), node("node-pool-2-replica")];
    t.clock.advance(MIN);
    await t.replicator.tick();
    await t.replicator.idle();
    // Back again: a new job to the replicator's eyes, so it runs at once, under the same id.
    expect(t.engine.calls.at(-1)?.id).toBe(www.id);
  });

  it("reports configuration problems and runs the rest", async () => {
    const t = setup();
    t.nodes.nodes = [node("node-pool-1-source"), node("node-pool-2-replica"), node("node-pool-3-second-master")];
    const report = await t.replicator.tick();
    await t.replicator.idle();
    expect(report.problems.map((p) => p.where)).toContain("dataset tank/k8s/apps/db");
    expect(targets(t.engine.calls).sort()).toEqual(["tank/k8s/apps/www -> pool-2:tank/k8s/replicas/www", "tank/k8s/apps/www -> pool-3:tank/k8s/apps/www"]);
    expect(await t.registry.metrics()).toMatch(/zcsi_replication_config_problems 1/);
  });

  it("releases the holds of a deleted volume's jobs and removes its PV annotation", async () => {
    const t = setup();
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    await t.replicator.tick();
    await t.replicator.idle();
    expect(Object.keys(t.pvs.annotations.get("pvc-1") ?? {}).sort()).toEqual(["zcsi.dev/home", "zcsi.dev/replica.pool-2"]);
    t.host("pool-1").volumes = [];
    const report = await t.replicator.tick();
    expect(report.released).toEqual([t.engine.calls[0]!.id]);
    expect(t.engine.releases).toEqual([{ source: { host: "pool-1", dataset: "tank/k8s/pvc-1" }, jobId: t.engine.calls[0]!.id }]);
    expect(t.pvs.annotations.get("pvc-1")).toEqual({});
    expect(await t.registry.metrics()).not.toContain(`job_id="${t.engine.calls[0]!.id}"`);
  });

  it("stops a removed job's run, then releases its holds", async () => {
    const t = setup();
    t.engine.manual = true;
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    await t.replicator.tick();
    const id = t.engine.inFlight()[0]!;
    t.host("pool-1").volumes = [];
    const during = await t.replicator.tick();
    expect(t.engine.signals.get(id)?.aborted).toBe(true);
    expect(during.released).toEqual([]);
    await t.replicator.idle();
    expect((await t.replicator.tick()).released).toEqual([id]);
  });

  it("keeps the jobs of a pool host it cannot list, and annotation jobs while Nodes cannot be read: an outage is not a deletion", async () => {
    const t = setup();
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    t.nodes.nodes = [node("node-pool-1-source"), node("node-pool-2-replica")];
    const before = await t.replicator.tick();
    await t.replicator.idle();
    t.host("pool-1").failing = "ssh: connect to host pool-1 port 22: Connection refused";
    t.nodes.failing = true;
    const during = await t.replicator.tick();
    expect(during.jobs).toEqual(before.jobs);
    expect(t.engine.releases).toEqual([]);
  });

  it("logs a pool host or the Node list it cannot read when that starts and ends, not on every tick", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const t = setup({ logger });
    t.host("pool-1").volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    t.host("pool-1").failing = "ssh: connect to host pool-1 port 22: Connection refused";
    t.nodes.failing = true;
    for (let i = 0; i < 10; i++) {
      await t.replicator.tick();
      t.clock.advance(30_000);
    }
    expect(lines.filter((l) => l["level"] === 40).map((l) => l["msg"])).toEqual([
      "listing replicated volumes failed; keeping this host's jobs as they were",
      "listing Nodes failed; keeping the annotation jobs as they were",
    ]);
    t.host("pool-1").failing = undefined;
    t.nodes.failing = false;
    await t.replicator.tick();
    await t.replicator.tick();
    expect(lines.filter((l) => l["condition"] === "ended").map((l) => l["msg"])).toEqual(["listing replicated volumes works again", "listing Nodes works again"]);
  });
});

describe("startReplicator: leader election", () => {
  it("runs nothing while another replica holds the Lease, and runs once it has it", async () => {
    const clock = new ManualClock("2026-11-22T01:00:01Z");
    const store = new FakeLeaseStore("zcsi-system", "zcsi-replicator", k8sFixture("lease-held-by-other"));
    const lease = new LeaderElector({ store, identity: "zcsi-controller-7c9d6b5f4-abcde", clock, logger: silentLogger });
    const doubles = config.poolHosts.map((h) => ({ config: h, exec: new PoolHostDouble(h.name) }));
    doubles[0]!.exec.volumes = [{ leaf: "pvc-1", replicateTo: "pool-2" }];
    const engine = new RecordingEngine();
    const running = await startReplicator(config, new PoolHosts(doubles), engine, { logger: silentLogger, clock, lease, autoStart: false, registry: createRegistry({ processMetrics: false }) });
    expect(await running.runOnce()).toBeUndefined();
    expect(engine.calls).toEqual([]);
    store.put(k8sFixture("lease-released"));
    const report = await running.runOnce();
    expect(report?.jobs).toHaveLength(1);
    expect(engine.calls).toHaveLength(1);
    await running.close();
    expect(store.object?.spec).toMatchObject({ holderIdentity: "" });
  });
});

describe("parseReplicatorFlags", () => {
  it("defaults to 2 runs at once and 15 minutes for annotation jobs", () => {
    expect(parseReplicatorFlags({ leaderElection: true })).toEqual({ concurrency: 2, annotationIntervalSeconds: 900 });
    expect(parseReplicatorFlags({ leaderElection: true, concurrency: "4", annotationInterval: "1h", tickIntervalSeconds: "10" })).toEqual({ concurrency: 4, annotationIntervalSeconds: 3600, tickIntervalMs: 10_000 });
    expect(parseReplicatorFlags({ leaderElection: true, annotationBandwidth: "8Mi" })).toEqual({ concurrency: 2, annotationIntervalSeconds: 900, annotationBandwidthBytesPerSec: 8 * 2 ** 20 });
  });
  it.each([
    [{ concurrency: "0" }, /--concurrency/],
    [{ concurrency: "two" }, /--concurrency/],
    [{ annotationInterval: "30s" }, /--annotation-interval/],
    [{ annotationBandwidth: "lots" }, /--annotation-bandwidth/],
    [{ annotationBandwidth: "1k" }, /--annotation-bandwidth.*at least 64Ki/],
    [{ annotationInterval: "soon" }, /--annotation-interval/],
    [{ tickIntervalSeconds: "0" }, /--tick-interval/],
  ])("refuses %j", (flags, message) => {
    expect(() => parseReplicatorFlags({ leaderElection: true, ...flags })).toThrow(message);
  });
});
