import { hostname } from "node:os";
import type { Registry } from "prom-client";
import type { EventRecorder } from "../k8s/events.js";
import type { LeaderElector } from "../k8s/lease.js";
import type { Logger } from "../log.js";
import { startMetricsServer, type MetricsServer } from "../metrics.js";
import { systemClock } from "../util/clock.js";
import { PeriodicTasks } from "../util/periodic.js";

/**
 * The shell both sidecar roles (snapshotter, replicator) run their loop in: renew the Lease
 * every retry period, tick every interval while holding it, serve /metrics, and on close stop
 * the timers, wait for the running tick, give the Lease up (so the other replica takes over at
 * once) and stop serving. Without a LeaderElector (no Kubernetes, one replica) it always leads.
 * What a tick does is the domain loop's (snapshots/scheduler.ts, replication/scheduler.ts).
 */

export interface SidecarOptions<R> {
  /** `snapshotter` or `replicator`: the `op` of its log lines. */
  readonly name: string;
  readonly logger: Logger;
  /** Leader election; absent → this process always acts. */
  readonly lease?: LeaderElector | undefined;
  /** The role's `zcsi_<role>_leader` gauge. */
  readonly leaderGauge: { set(value: number): void };
  /** One pass of the domain loop; called only while leading, never overlapping itself. */
  readonly tick: (leading: () => boolean) => Promise<R>;
  /** Called when a renewal finds the Lease lost (it was held at the previous renewal). */
  readonly onLeadershipLost?: () => void;
  readonly tickIntervalMs: number;
  /** Start the timers (default). Tests pass false and drive runOnce(). */
  readonly autoStart?: boolean | undefined;
  /** `host:port` to serve /metrics from `registry` on; absent → no metrics server. */
  readonly metricsAddress?: string | undefined;
  readonly registry: Registry;
}

export interface Sidecar<R> {
  /** The bound metrics port (useful with port 0), when serving. */
  readonly metricsPort?: number;
  /** One Lease round, then one tick if leading; undefined when not leading. */
  runOnce(): Promise<R | undefined>;
  /** Stops the timers, waits for a running tick, runs `beforeRelease`, gives up the Lease, stops serving metrics. */
  close(beforeRelease?: () => Promise<void>): Promise<void>;
}

export async function startSidecar<R>(options: SidecarOptions<R>): Promise<Sidecar<R>> {
  const { lease, leaderGauge, logger, name } = options;
  let server: MetricsServer | undefined;
  if (options.metricsAddress !== undefined) server = await startMetricsServer(options.metricsAddress, options.registry, logger);

  const leading = (): boolean => lease === undefined || lease.isLeader();
  let wasLeader = false;
  const renew = async (): Promise<boolean> => {
    const leader = lease === undefined ? true : await lease.tryAcquireOrRenew();
    leaderGauge.set(leader ? 1 : 0);
    if (wasLeader && !leader) options.onLeadershipLost?.();
    wasLeader = leader;
    return leader;
  };
  let ticking: Promise<R | undefined> | undefined;
  const tickIfLeading = (): Promise<R | undefined> => {
    // Ticks never overlap: a slow tick delays the next instead of racing it.
    if (ticking !== undefined) return ticking;
    const tick = (async () => (leading() ? options.tick(leading) : undefined))();
    ticking = tick;
    const clear = (): void => {
      if (ticking === tick) ticking = undefined;
    };
    tick.then(clear, clear);
    return tick;
  };

  const tasks = new PeriodicTasks(logger, name);
  if (options.autoStart ?? true) {
    if (lease !== undefined) {
      void renew();
      tasks.every(lease.retryPeriodSeconds * 1000, renew);
    } else {
      leaderGauge.set(1);
    }
    tasks.every(options.tickIntervalMs, tickIfLeading);
  }

  return {
    ...(server && { metricsPort: server.port }),
    runOnce: async () => {
      if (!(await renew())) return undefined;
      return tickIfLeading();
    },
    close: async (beforeRelease) => {
      tasks.stop();
      await ticking?.catch(() => undefined);
      await beforeRelease?.();
      await lease?.release();
      leaderGauge.set(0);
      await server?.close();
    },
  };
}

/** The Kubernetes flags every sidecar role takes. */
export interface SidecarKubeFlags {
  /** `--lease-name`, default per role. */
  readonly leaseName?: string | undefined;
  /** `--lease-namespace`, default the pod's namespace (POD_NAMESPACE or the service account's). */
  readonly leaseNamespace?: string | undefined;
  /** This replica's name in the Lease: POD_NAME in a pod. */
  readonly identity?: string | undefined;
}

/**
 * The Lease and Event recorder of a sidecar role (`component` is `zcsi-snapshotter` or
 * `zcsi-replicator`, also the default Lease name), and the loaded Kubernetes client for what
 * else the role needs. Loaded only here: the other roles never load the Kubernetes client.
 */
export async function sidecarKube(flags: SidecarKubeFlags, component: string, logger: Logger) {
  const k8s = await import("../k8s/client.js");
  const { LeaderElector } = await import("../k8s/lease.js");
  const { KubeEventRecorder } = await import("../k8s/events.js");
  const identity = sidecarIdentity(flags);
  const kc = k8s.loadKubeConfig();
  const namespace = flags.leaseNamespace || k8s.podNamespace() || "default";
  const lease: LeaderElector = new LeaderElector({ store: new k8s.KubeLeaseStore(kc, namespace, flags.leaseName || component), identity, clock: systemClock, logger });
  const events: EventRecorder = new KubeEventRecorder(new k8s.KubeEventSink(kc), { clock: systemClock, logger, component, instance: identity });
  return { lease, events, k8s, kc };
}

/** `--identity`, or `<hostname>-<pid>`. */
export function sidecarIdentity(flags: SidecarKubeFlags): string {
  return flags.identity || `${hostname()}-${process.pid}`;
}
