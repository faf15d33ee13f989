import type { Registry } from "prom-client";
import type { Config } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import { fenceEvents } from "./fence-events.js";
import type { LeaderElector } from "../k8s/lease.js";
import type { NodeSource } from "../k8s/nodes.js";
import type { PvAnnotator } from "../k8s/pv.js";
import type { Logger } from "../log.js";
import { CommandMetrics, createRegistry, MoveMetrics, ReplicationMetrics } from "../metrics.js";
import { Replicator, type ReplicatorCoreOptions, type TickReport } from "../replication/scheduler.js";
import type { ReplicationEngine } from "../replication/types.js";
import { systemClock, type Clock } from "../util/clock.js";
import { durationSeconds } from "../util/units.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { MIN_REPLICATION_INTERVAL_SECONDS, parseBandwidth } from "../volumes/parameters.js";
import { sidecarKube, startSidecar, type SidecarKubeFlags } from "./sidecar.js";

/**
 * The replicator role (`zcsi replicator`, a sidecar in the controller pod): flags, the pool
 * hosts, the engine and the Kubernetes clients, wired to the replication scheduler
 * (replication/scheduler.ts) inside the leader-elected sidecar loop (sidecar.ts). Only the Lease
 * holder acts; losing the Lease aborts running runs (the engine resumes them on the next leader
 * where the hosts support resumable receive).
 */

export interface ReplicatorOptions extends Omit<ReplicatorCoreOptions, "clock" | "metrics"> {
  readonly clock?: Clock;
  /** Leader election; absent → this process always acts. */
  readonly lease?: LeaderElector;
  /** `host:port` to serve /metrics on; absent → no metrics server. */
  readonly metricsAddress?: string;
  /** Time between ticks. Default 30 s: a due job starts within 30 s of its time. */
  readonly tickIntervalMs?: number;
  /** Start the timers (default). Tests pass false and drive runOnce(). */
  readonly autoStart?: boolean;
  readonly registry?: Registry;
}

export interface RunningReplicator {
  readonly replicator: Replicator;
  readonly metrics: ReplicationMetrics;
  readonly metricsPort?: number;
  /** One Lease round, then (if leading) one tick and every run it started; undefined when not leading. */
  runOnce(): Promise<TickReport | undefined>;
  /** Stops the timers, stops runs, gives up the Lease, stops serving metrics. */
  close(): Promise<void>;
}

export async function startReplicator(config: Config, hosts: PoolHosts, engine: ReplicationEngine, options: ReplicatorOptions): Promise<RunningReplicator> {
  const logger = options.logger;
  const lease = options.lease;
  const registry = options.registry ?? createRegistry();
  const metrics = new ReplicationMetrics(registry);
  const moveMetrics = new MoveMetrics(registry);
  const replicator = new Replicator(hosts, engine, {
    clock: options.clock ?? systemClock,
    logger,
    metrics,
    moveMetrics,
    ...(options.events && { events: options.events }),
    ...(options.nodes && { nodes: options.nodes }),
    ...(options.pvs && { pvs: options.pvs }),
    ...(options.concurrency !== undefined && { concurrency: options.concurrency }),
    ...(options.annotationIntervalSeconds !== undefined && { annotationIntervalSeconds: options.annotationIntervalSeconds }),
    ...(options.annotationBandwidthBytesPerSec !== undefined && { annotationBandwidthBytesPerSec: options.annotationBandwidthBytesPerSec }),
  });
  const sidecar = await startSidecar<TickReport>({
    name: "replicator",
    logger,
    lease,
    leaderGauge: metrics.leader,
    // A tick never waits for the runs it starts (they outlive ticks).
    tick: (leading) => replicator.tick(leading),
    onLeadershipLost: () => {
      logger.warn({ op: "replicator" }, "lost the replicator Lease; stopping runs");
      replicator.stop("lost the replicator Lease");
    },
    tickIntervalMs: options.tickIntervalMs ?? 30_000,
    autoStart: options.autoStart,
    metricsAddress: options.metricsAddress,
    registry,
  });
  logger.info(
    {
      op: "replicator",
      driver: config.driverName,
      poolHosts: hosts.names,
      leaderElection: lease !== undefined,
      identity: lease?.identity,
      nodeAnnotations: options.nodes !== undefined,
      concurrency: options.concurrency ?? 2,
    },
    "replicator started",
  );

  return {
    replicator,
    metrics,
    ...(sidecar.metricsPort !== undefined && { metricsPort: sidecar.metricsPort }),
    runOnce: async () => {
      const report = await sidecar.runOnce();
      if (report !== undefined) await replicator.idle();
      return report;
    },
    close: () =>
      sidecar.close(async () => {
        // An interrupted transfer is resumed by the next leader (receive -s), or restarted.
        replicator.stop("shutting down");
        await replicator.idle();
      }),
  };
}

export interface ReplicatorFlags extends SidecarKubeFlags {
  readonly metricsAddress?: string | undefined;
  /** False with `--no-leader-election`: one replica, no Kubernetes API (no Lease, Events, Nodes, PV annotations). */
  readonly leaderElection: boolean;
  /** `--concurrency`, default 2. */
  readonly concurrency?: string | undefined;
  /** `--annotation-interval` (a duration: 15m, 1h), default 15m. */
  readonly annotationInterval?: string | undefined;
  /** `--annotation-bandwidth` (bytes per second, a quantity: 50Mi), default unlimited. */
  readonly annotationBandwidth?: string | undefined;
  /** `--tick-interval` in seconds, default 30. */
  readonly tickIntervalSeconds?: string | undefined;
}

/** Validates the flags before anything connects (a bad flag stops zcsi at start, clearly). */
export function parseReplicatorFlags(flags: ReplicatorFlags): {
  concurrency: number;
  annotationIntervalSeconds: number;
  annotationBandwidthBytesPerSec?: number;
  tickIntervalMs?: number;
} {
  const concurrency = flags.concurrency === undefined ? 2 : Number(flags.concurrency);
  if (!/^[1-9][0-9]{0,2}$/.test(flags.concurrency ?? "2")) throw invalidArgument("--concurrency must be a whole number from 1 to 999");
  const interval = flags.annotationInterval === undefined ? 900 : durationSeconds(flags.annotationInterval);
  if (interval === undefined || interval < MIN_REPLICATION_INTERVAL_SECONDS) throw invalidArgument("--annotation-interval must be a duration of at least 1m, such as 15m or 1h");
  const tick = flags.tickIntervalSeconds;
  if (tick !== undefined && !/^[1-9][0-9]{0,5}$/.test(tick)) throw invalidArgument("--tick-interval must be a whole number of seconds");
  const bandwidth = flags.annotationBandwidth === undefined ? undefined : parseBandwidth(flags.annotationBandwidth, "--annotation-bandwidth");
  return {
    concurrency,
    annotationIntervalSeconds: interval,
    ...(bandwidth !== undefined && { annotationBandwidthBytesPerSec: bandwidth }),
    ...(tick !== undefined && { tickIntervalMs: Number(tick) * 1000 }),
  };
}

/**
 * The `zcsi replicator` command: SSH to the pool hosts, the engine, and (unless leader
 * election is off) the Kubernetes Lease, Events, Node annotations and PV annotations.
 */
export async function startReplicatorRole(config: Config, logger: Logger, flags: ReplicatorFlags): Promise<{ close(): Promise<void> }> {
  const parsed = parseReplicatorFlags(flags);
  const { connectPoolHosts } = await import("./pool-hosts.js");
  const { createReplicationEngine } = await import("../replication/engine.js");
  let lease: LeaderElector | undefined;
  let events: EventRecorder | undefined;
  let nodes: NodeSource | undefined;
  let pvs: PvAnnotator | undefined;
  if (flags.leaderElection) {
    const kube = await sidecarKube(flags, "zcsi-replicator", logger);
    ({ lease, events } = kube);
    nodes = new kube.k8s.KubeNodeSource(kube.kc);
    pvs = new kube.k8s.KubePvAnnotator(kube.kc);
  }
  // One registry for the role: its own metrics and every pool-host command it runs.
  const registry = createRegistry();
  const hosts = connectPoolHosts(config, logger, { commandMetrics: new CommandMetrics(registry) });
  try {
    const onFence = fenceEvents(events);
    const engine = createReplicationEngine(hosts, { logger, clock: systemClock, ...(onFence && { onFence }) });
    const running = await startReplicator(config, hosts, engine, {
      logger,
      registry,
      concurrency: parsed.concurrency,
      annotationIntervalSeconds: parsed.annotationIntervalSeconds,
      ...(parsed.annotationBandwidthBytesPerSec !== undefined && { annotationBandwidthBytesPerSec: parsed.annotationBandwidthBytesPerSec }),
      ...(parsed.tickIntervalMs !== undefined && { tickIntervalMs: parsed.tickIntervalMs }),
      ...(lease && { lease }),
      ...(events && { events }),
      ...(nodes && { nodes }),
      ...(pvs && { pvs }),
      ...(flags.metricsAddress && { metricsAddress: flags.metricsAddress }),
    });
    return {
      close: async () => {
        await running.close();
        await hosts.close();
      },
    };
  } catch (err) {
    await hosts.close();
    throw err;
  }
}
