import { hostname } from "node:os";
import type { Registry } from "prom-client";
import type { Config } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import type { LeaderElector } from "../k8s/lease.js";
import type { Logger } from "../log.js";
import { createRegistry, SnapshotMetrics, startMetricsServer, type MetricsServer } from "../metrics.js";
import { SnapshotScheduler, type TickReport } from "../snapshots/scheduler.js";
import { systemClock, type Clock } from "../util/clock.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { PeriodicTasks } from "../util/periodic.js";

/**
 * The snapshotter role (`zcsi snapshotter`, a sidecar in the controller pod): every tick, the
 * Lease holder runs the scheduler over all pool hosts. Without a LeaderElector (no Kubernetes,
 * one replica) it always acts.
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
  const clock = options.clock ?? systemClock;
  const lease = options.lease;
  const registry = options.registry ?? createRegistry();
  const metrics = new SnapshotMetrics(registry);
  const scheduler = new SnapshotScheduler(hosts, { clock, logger, metrics, ...(options.events && { events: options.events }) });
  let server: MetricsServer | undefined;
  if (options.metricsAddress !== undefined) server = await startMetricsServer(options.metricsAddress, registry, logger);

  const leading = (): boolean => lease === undefined || lease.isLeader();
  const renew = async (): Promise<boolean> => {
    const leader = lease === undefined ? true : await lease.tryAcquireOrRenew();
    metrics.leader.set(leader ? 1 : 0);
    return leader;
  };
  let running: Promise<TickReport | undefined> | undefined;
  const tickIfLeading = (): Promise<TickReport | undefined> => {
    // Ticks never overlap: a slow tick delays the next instead of racing it.
    if (running !== undefined) return running;
    const tick = (async () => {
      if (!leading()) return undefined;
      const report = await scheduler.tick(leading);
      const taken = report.hosts.reduce((n, h) => n + h.volumes.filter((v) => v.taken !== undefined).length, 0);
      const pruned = report.hosts.reduce((n, h) => n + h.volumes.reduce((m, v) => m + v.pruned.length, 0), 0);
      logger.debug({ op: "snapshotter", at: report.at.toISOString(), taken, pruned }, "tick done");
      return report;
    })();
    running = tick;
    tick.then(
      () => (running = running === tick ? undefined : running),
      () => (running = running === tick ? undefined : running),
    );
    return tick;
  };

  const tasks = new PeriodicTasks(logger, "snapshotter");
  const every = (ms: number, work: () => Promise<unknown>): void => tasks.every(ms, work);
  if (options.autoStart ?? true) {
    if (lease !== undefined) {
      void renew();
      every(lease.retryPeriodSeconds * 1000, renew);
    } else {
      metrics.leader.set(1);
    }
    every(options.tickIntervalMs ?? 60_000, tickIfLeading);
  }
  logger.info(
    { op: "snapshotter", driver: config.driverName, poolHosts: hosts.names, leaderElection: lease !== undefined, identity: lease?.identity },
    "snapshotter started",
  );

  return {
    scheduler,
    metrics,
    ...(server && { metricsPort: server.port }),
    runOnce: async () => {
      if (!(await renew())) return undefined;
      return tickIfLeading();
    },
    close: async () => {
      tasks.stop();
      await running?.catch(() => undefined);
      await lease?.release();
      metrics.leader.set(0);
      await server?.close();
    },
  };
}

export interface SnapshotterFlags {
  /** `--metrics-address host:port`. */
  readonly metricsAddress?: string | undefined;
  /** `--lease-name`, default `zcsi-snapshotter`. */
  readonly leaseName?: string | undefined;
  /** `--lease-namespace`, default the pod's namespace (POD_NAMESPACE or the service account's). */
  readonly leaseNamespace?: string | undefined;
  /** False with `--no-leader-election`: one replica, no Kubernetes API (no Lease, no Events). */
  readonly leaderElection: boolean;
  /** `--snapshot-interval` in seconds (text as given), default 60. */
  readonly tickIntervalSeconds?: string | undefined;
  /** This replica's name in the Lease: POD_NAME in a pod. */
  readonly identity?: string | undefined;
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
  const identity = flags.identity || `${hostname()}-${process.pid}`;
  let lease: LeaderElector | undefined;
  let events: EventRecorder | undefined;
  if (flags.leaderElection) {
    // Loaded only here: the other roles never load the Kubernetes client.
    const { KubeEventSink, KubeLeaseStore, loadKubeConfig, podNamespace } = await import("../k8s/client.js");
    const { LeaderElector } = await import("../k8s/lease.js");
    const { KubeEventRecorder } = await import("../k8s/events.js");
    const kc = loadKubeConfig();
    const namespace = flags.leaseNamespace || podNamespace() || "default";
    lease = new LeaderElector({ store: new KubeLeaseStore(kc, namespace, flags.leaseName || "zcsi-snapshotter"), identity, clock: systemClock, logger });
    events = new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-snapshotter", instance: identity });
  }
  const hosts = connectPoolHosts(config, logger);
  try {
    const running = await startSnapshotter(config, hosts, {
      logger,
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
