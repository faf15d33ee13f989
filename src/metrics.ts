import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { invalidArgument } from "./errors.js";
import type { Logger } from "./log.js";

/**
 * Prometheus metrics. Each role builds its own Registry (never prom-client's global one), so
 * tests and several roles in one process do not share counters. Every metric is documented in
 * docs/monitoring.md (deploy/monitoring's dashboard and alerts read them).
 */
export function createRegistry(options: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "zcsi_" });
  return registry;
}

export type SnapshotOperation = "discover" | "policy" | "snapshot" | "prune";

/** What the snapshotter reports. */
export class SnapshotMetrics {
  readonly taken: Counter<"pool_host">;
  readonly pruned: Counter<"pool_host">;
  readonly failed: Counter<"pool_host" | "operation">;
  /** Time (in the snapshot's name, UTC) of the newest automatic snapshot of each volume. */
  readonly lastSuccess: Gauge<"volume_id">;
  readonly leader: Gauge;
  readonly ticks: Counter;
  /** Volumes served from each pool host (replicas and fenced copies not counted), as the last tick listed them. */
  readonly volumes: Gauge<"pool_host">;
  /** Volumes with a last-success sample, per host: removed when a volume disappears. */
  private readonly volumesByHost = new Map<string, Set<string>>();

  constructor(readonly registry: Registry) {
    this.taken = new Counter({ name: "zcsi_snapshots_taken_total", help: "Automatic snapshots taken.", labelNames: ["pool_host"], registers: [registry] });
    this.pruned = new Counter({ name: "zcsi_snapshots_pruned_total", help: "Automatic snapshots destroyed by retention.", labelNames: ["pool_host"], registers: [registry] });
    this.failed = new Counter({
      name: "zcsi_snapshot_failures_total",
      help: "Failed snapshotter operations (discover: listing a pool host; policy: an unreadable schedule; snapshot; prune).",
      labelNames: ["pool_host", "operation"],
      registers: [registry],
    });
    this.lastSuccess = new Gauge({
      name: "zcsi_snapshot_last_success_timestamp_seconds",
      help: "Time of the newest automatic snapshot of a volume (seconds since the epoch); alert when it lags the schedule.",
      labelNames: ["volume_id"],
      registers: [registry],
    });
    this.leader = new Gauge({ name: "zcsi_snapshotter_leader", help: "1 while this replica holds the snapshotter Lease.", registers: [registry] });
    this.ticks = new Counter({ name: "zcsi_snapshotter_ticks_total", help: "Scheduler passes run (by the leader).", registers: [registry] });
    this.volumes = new Gauge({
      name: "zcsi_volumes",
      help: "Volumes served from each pool host (replicas and fenced copies not counted), as the snapshotter's last pass listed them (leader only).",
      labelNames: ["pool_host"],
      registers: [registry],
    });
  }

  /**
   * Zero failure counts for every host and operation, so the first failure is an increase that
   * rate()/increase() see (a series born at 1 shows none) and alerts have a series to read.
   */
  initialize(poolHosts: readonly string[]): void {
    const operations: SnapshotOperation[] = ["discover", "policy", "snapshot", "prune"];
    for (const poolHost of poolHosts) {
      this.taken.inc({ pool_host: poolHost }, 0);
      this.pruned.inc({ pool_host: poolHost }, 0);
      for (const operation of operations) this.failed.inc({ pool_host: poolHost, operation }, 0);
    }
  }

  /** Replaces the last-success samples of one host's volumes (a deleted volume's sample goes away). */
  setLastSuccess(poolHost: string, samples: ReadonlyMap<string, number>): void {
    const before = this.volumesByHost.get(poolHost) ?? new Set<string>();
    for (const volumeId of before) if (!samples.has(volumeId)) this.lastSuccess.remove(volumeId);
    for (const [volumeId, ms] of samples) this.lastSuccess.set({ volume_id: volumeId }, ms / 1000);
    this.volumesByHost.set(poolHost, new Set(samples.keys()));
  }
}

/** Labels of one replication job: its id, its source (`<host>:<dataset>`, a volume id for volume jobs), the target host. */
export type ReplicationLabels = "job_id" | "source" | "target";

/** What the replicator reports (docs/replication.md lists them). */
export class ReplicationMetrics {
  readonly bytes: Counter<ReplicationLabels>;
  readonly duration: Histogram<ReplicationLabels>;
  /** Seconds between now and the creation of the newest snapshot the target has. */
  readonly lag: Gauge<ReplicationLabels>;
  readonly failures: Counter<ReplicationLabels | "reason">;
  readonly runs: Counter<ReplicationLabels | "action">;
  /** A job's interval: the lag alert compares the lag with it. */
  readonly interval: Gauge<ReplicationLabels>;
  readonly jobs: Gauge<"origin">;
  readonly configProblems: Gauge;
  readonly leader: Gauge;

  constructor(readonly registry: Registry) {
    const labelNames: ReplicationLabels[] = ["job_id", "source", "target"];
    this.bytes = new Counter({ name: "zcsi_replication_sent_bytes_total", help: "Stream bytes relayed from source to target.", labelNames, registers: [registry] });
    this.duration = new Histogram({
      name: "zcsi_replication_duration_seconds",
      help: "Duration of replication runs (successful or not).",
      labelNames,
      // From an incremental with nothing new (a second) to a first full send of a large volume (hours).
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
      registers: [registry],
    });
    this.lag = new Gauge({
      name: "zcsi_replication_lag_seconds",
      help: "Age of the newest snapshot the target has received (now minus its creation on the source); grows while runs fail. Alert when it exceeds a few intervals.",
      labelNames,
      registers: [registry],
    });
    this.interval = new Gauge({
      name: "zcsi_replication_interval_seconds",
      help: "Time between the runs of a replication job (replicationInterval, or --annotation-interval); a lag over twice this means runs are failing or too slow.",
      labelNames,
      registers: [registry],
    });
    this.failures = new Counter({
      name: "zcsi_replication_failures_total",
      help: "Failed replication runs, by reason (FailedPrecondition: divergence or a foreign target; Unavailable; Internal; ...).",
      labelNames: [...labelNames, "reason"],
      registers: [registry],
    });
    this.runs = new Counter({ name: "zcsi_replication_runs_total", help: "Successful replication runs, by action (full, incremental, resume, none).", labelNames: [...labelNames, "action"], registers: [registry] });
    this.jobs = new Gauge({ name: "zcsi_replication_jobs", help: "Replication jobs known, by origin (volume, annotation).", labelNames: ["origin"], registers: [registry] });
    this.configProblems = new Gauge({ name: "zcsi_replication_config_problems", help: "Replication configuration problems found in the last pass (see the replicator's log).", registers: [registry] });
    this.leader = new Gauge({ name: "zcsi_replicator_leader", help: "1 while this replica holds the replicator Lease.", registers: [registry] });
  }

  /** Counts a failed run (and remembers the reason, so forget() can drop its series). */
  failed(labels: Record<ReplicationLabels, string>, reason: string): void {
    this.failures.inc({ ...labels, reason });
    this.remember(labels.job_id, `reason\u0000${reason}`);
  }

  /** Counts a successful run by action. */
  succeeded(labels: Record<ReplicationLabels, string>, action: string): void {
    this.runs.inc({ ...labels, action });
    this.remember(labels.job_id, `action\u0000${action}`);
  }

  /** Drops every series of a job that no longer exists, so dashboards do not show it forever. */
  forget(labels: Record<ReplicationLabels, string>): void {
    this.lag.remove(labels);
    this.interval.remove(labels);
    this.duration.remove(labels);
    this.bytes.remove(labels);
    for (const entry of this.extraLabels.get(labels.job_id) ?? []) {
      const [name, value] = entry.split("\u0000") as [string, string];
      if (name === "reason") this.failures.remove({ ...labels, reason: value });
      else this.runs.remove({ ...labels, action: value });
    }
    this.extraLabels.delete(labels.job_id);
  }

  private readonly extraLabels = new Map<string, Set<string>>();

  private remember(jobId: string, entry: string): void {
    const set = this.extraLabels.get(jobId) ?? new Set<string>();
    set.add(entry);
    this.extraLabels.set(jobId, set);
  }
}

/**
 * Moves of volumes between pool hosts (zcsi migrate, failover, resync), counted by the
 * replicator from the zcsi:last-move record each move leaves on its copy (volumes/moves.ts),
 * and the fenced stale copies it sees. docs/pool-host-maintenance.md lists them.
 */
export class MoveMetrics {
  readonly moves: Counter<"kind" | "outcome">;
  readonly downtime: Histogram<"kind">;
  readonly staleCopies: Gauge<"pool_host">;

  constructor(registry: Registry) {
    this.moves = new Counter({ name: "zcsi_volume_moves_total", help: "Moves of volumes that ended, by kind (migrate, failover, resync) and outcome (done, undone).", labelNames: ["kind", "outcome"], registers: [registry] });
    this.downtime = new Histogram({
      name: "zcsi_volume_move_downtime_seconds",
      help: "Time a planned move held the volume's attaches (blocked -> released), by kind.",
      labelNames: ["kind"],
      // A small final increment takes seconds; pods that are slow to let go take minutes (the detach timeout is 10 minutes).
      buckets: [1, 2, 5, 10, 30, 60, 120, 300, 600],
      registers: [registry],
    });
    this.staleCopies = new Gauge({ name: "zcsi_volume_stale_copies", help: "Fenced stale primaries kept on the pool host (a host back from a failover); zcsi resync makes them replicas.", labelNames: ["pool_host"], registers: [registry] });
  }
}

/** How a command ended: exit 0, another exit (or a signal), its timeout, or it could not run or never started. */
export type CommandOutcome = "ok" | "nonzero" | "timeout" | "error";

/**
 * `zcsi_command_duration_seconds{host,command,outcome}`: every external command (zfs, mount,
 * sshfs, install, ...) as exec/instrumented.ts sees it, from the call to its end, so time spent
 * waiting for a free slot on a busy pool host counts. `command` is `commandName()` of the argv
 * ("zfs create", "mount", "sshfs"): a small, fixed set.
 */
export class CommandMetrics {
  readonly duration: Histogram<"host" | "command" | "outcome">;

  constructor(readonly registry: Registry) {
    this.duration = new Histogram({
      name: "zcsi_command_duration_seconds",
      help: "Duration of external commands (zfs, zpool, mount, sshfs, ...) by host, command and outcome (ok, nonzero, timeout, error), waiting for a slot on the host included.",
      labelNames: ["host", "command", "outcome"],
      // From a local `zfs get` (a few ms) to a slow `zfs destroy` or an sshfs mount (tens of seconds).
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    });
  }

  observe(host: string, command: string, outcome: CommandOutcome, seconds: number): void {
    this.duration.observe({ host, command, outcome }, seconds);
  }
}

/**
 * `zcsi_csi_operation_duration_seconds{method,code}`: every CSI call this process served
 * (CreateVolume, NodeStageVolume, Probe, ...) and the gRPC code it ended with (`OK`,
 * `INVALID_ARGUMENT`, ...). Both label sets are small and fixed: the CSI methods, the gRPC codes.
 */
export class CsiMetrics {
  readonly duration: Histogram<"method" | "code">;

  constructor(readonly registry: Registry) {
    this.duration = new Histogram({
      name: "zcsi_csi_operation_duration_seconds",
      help: "Duration of CSI calls served, by method (CreateVolume, NodeStageVolume, ...) and gRPC code (OK, INVALID_ARGUMENT, UNAVAILABLE, ...).",
      labelNames: ["method", "code"],
      // From an idempotent retry answered from ZFS properties (ms) to a copy restore (minutes).
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    });
  }

  observe(method: string, code: string, seconds: number): void {
    this.duration.observe({ method, code }, seconds);
  }
}

export interface MetricsServer {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** `host:port`, `:port` (every interface) or `[v6]:port` → listen arguments. */
export function parseListenAddress(address: string): { host?: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(address);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw invalidArgument(`--metrics-address ${JSON.stringify(address)}: expected host:port, :port or [v6]:port`);
  const host = m[1] ?? m[2];
  return { ...(host ? { host } : {}), port };
}

/** Serves `GET /metrics` (text exposition format) from `registry`; anything else is 404. */
export async function startMetricsServer(address: string, registry: Registry, logger: Logger): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(address);
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404).end("not found\n");
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { "Content-Type": registry.contentType }).end(body),
      (err: unknown) => {
        logger.warn({ op: "metrics", err: String(err) }, "collecting metrics failed");
        res.writeHead(500).end("error\n");
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const boundPort = typeof bound === "object" && bound !== null ? bound.port : port;
  logger.info({ op: "metrics", address, port: boundPort }, "serving /metrics");
  return {
    address,
    port: boundPort,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
