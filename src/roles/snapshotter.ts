import type { Registry } from "prom-client";
import type { Config } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import { fenceEvents } from "./fence-events.js";
import type { LeaderElector } from "../k8s/lease.js";
import type { Logger } from "../log.js";
import { CommandMetrics, createRegistry, SnapshotMetrics } from "../metrics.js";
import { SnapshotScheduler, type TickReport } from "../snapshots/scheduler.js";
import { systemClock, type Clock } from "../util/clock.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { sidecarKube, startSidecar, type SidecarKubeFlags } from "./sidecar.js";

/**
 * The snapshotter role (`zcsi snapshotter`, a sidecar in the controller pod): every tick, the
 * Lease holder runs the snapshot scheduler (snapshots/scheduler.ts) over all pool hosts, inside
 * the leader-elected sidecar loop (sidecar.ts). Without a LeaderElector (no Kubernetes, one
 * replica) it always acts.
 */

export interface SnapshotterOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Leader election; absent → this process always acts. */
  readonly lease?: LeaderElector;
  /** `host:port` to serve /metrics on; absent → no metrics server. */
  readonly metricsAddress?: string;
  readonly events?: EventRecorder;
  /** Time between ticks. Default 60 s: a snapshot is taken within a minute of its period starting. */
  readonly tickIntervalMs?: number;
  /** Start the timers (default). Tests pass false and drive runOnce(). */
  readonly autoStart?: boolean;
  readonly registry?: Registry;
}

export interface RunningSnapshotter {
  readonly scheduler: SnapshotScheduler;
  readonly metrics: SnapshotMetrics;
  /** The bound metrics port (useful with port 0), when serving. */
  readonly metricsPort?: number;
  /** One Lease round, then one tick if leading; undefined when not leading. */
  runOnce(): Promise<TickReport | undefined>;
  /** Stops the timers, waits for a running tick, gives up the Lease, stops serving metrics. */
  close(): Promise<void>;
}

export async function startSnapshotter(config: Config, hosts: PoolHosts, options: SnapshotterOptions): Promise<RunningSnapshotter> {
  const logger = options.logger;
  const lease = options.lease;
  const registry = options.registry ?? createRegistry();
  const metrics = new SnapshotMetrics(registry);
  metrics.initialize(hosts.names);
  const onFence = fenceEvents(options.events);
  const scheduler = new SnapshotScheduler(hosts, { clock: options.clock ?? systemClock, logger, metrics, ...(options.events && { events: options.events }), ...(onFence && { onFence }) });
  const sidecar = await startSidecar<TickReport>({
    name: "snapshotter",
    logger,
    lease,
    leaderGauge: metrics.leader,
    // The new leader counts the volumes now; a stale count here would be summed with its.
    onLeadershipLost: () => metrics.volumes.reset(),
    tick: async (leading) => {
      const report = await scheduler.tick(leading);
      const taken = report.hosts.reduce((n, h) => n + h.volumes.filter((v) => v.taken !== undefined).length, 0);
      const pruned = report.hosts.reduce((n, h) => n + h.volumes.reduce((m, v) => m + v.pruned.length, 0), 0);
      logger.debug({ op: "snapshotter", at: report.at.toISOString(), taken, pruned }, "tick done");
      return report;
    },
    tickIntervalMs: options.tickIntervalMs ?? 60_000,
    autoStart: options.autoStart,
    metricsAddress: options.metricsAddress,
    registry,
  });
  logger.info(
    { op: "snapshotter", driver: config.driverName, poolHosts: hosts.names, leaderElection: lease !== undefined, identity: lease?.identity },
    "snapshotter started",
  );

  return {
    scheduler,
    metrics,
    ...(sidecar.metricsPort !== undefined && { metricsPort: sidecar.metricsPort }),
    runOnce: () => sidecar.runOnce(),
    close: () => sidecar.close(),
  };
}

export interface SnapshotterFlags extends SidecarKubeFlags {
  /** `--metrics-address host:port`. */
  readonly metricsAddress?: string | undefined;
  /** False with `--no-leader-election`: one replica, no Kubernetes API (no Lease, no Events). */
  readonly leaderElection: boolean;
  /** `--snapshot-interval` in seconds (text as given), default 60. */
  readonly tickIntervalSeconds?: string | undefined;
}

/**
 * The `zcsi snapshotter` command: SSH to the pool hosts, the Kubernetes Lease and Event
 * recorder (unless leader election is off), metrics, and the loop. Returns the close function
 * to call on SIGTERM (gives the Lease up so the other replica takes over at once).
 */
export async function startSnapshotterRole(config: Config, logger: Logger, flags: SnapshotterFlags): Promise<{ close(): Promise<void> }> {
  const interval = flags.tickIntervalSeconds;
  if (interval !== undefined && !/^[1-9][0-9]{0,5}$/.test(interval)) throw invalidArgument("--snapshot-interval must be a whole number of seconds");
  const { connectPoolHosts } = await import("./pool-hosts.js");
  let lease: LeaderElector | undefined;
  let events: EventRecorder | undefined;
  if (flags.leaderElection) ({ lease, events } = await sidecarKube(flags, "zcsi-snapshotter", logger));
  // One registry for the role: its own metrics and every pool-host command it runs.
  const registry = createRegistry();
  const hosts = connectPoolHosts(config, logger, { commandMetrics: new CommandMetrics(registry) });
  try {
    const running = await startSnapshotter(config, hosts, {
      logger,
      registry,
      ...(lease && { lease }),
      ...(events && { events }),
      ...(flags.metricsAddress && { metricsAddress: flags.metricsAddress }),
      ...(interval !== undefined && { tickIntervalMs: Number(interval) * 1000 }),
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
