import type { Registry } from "prom-client";
import type { Config } from "../config.js";
import { ControllerService } from "../csi/controller.js";
import { GroupControllerService } from "../csi/group-controller.js";
import { identityHandlers } from "../csi/identity.js";
import { startCsiServer, type RunningServer } from "../csi/server.js";
import type { EventRecorder } from "../k8s/events.js";
import type { Logger } from "../log.js";
import { CsiMetrics, startMetricsServer, type MetricsServer } from "../metrics.js";
import { createReplicationEngine } from "../replication/engine.js";
import { registerPoolHostMetrics } from "../util/pool-host-metrics.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { VolumeService } from "../volumes/service.js";
import { fenceEvents } from "./fence-events.js";
import { SnapshotService } from "../volumes/snapshots.js";
import { GroupSnapshotService } from "../volumes/group-snapshots.js";

export interface ControllerRoleOptions {
  /** `host:port` to serve /metrics on (`registry`'s metrics); absent → no metrics server. */
  readonly metricsAddress?: string;
  /** The registry the pool hosts' CommandMetrics write to (connectPoolHosts). */
  readonly registry?: Registry;
  /**
   * Events on PVs: a `CopyFenced` Warning when ControllerPublishVolume (or any lookup of a
   * volume's home) fences a stale copy, once per fence. Absent (no Kubernetes API): logged only.
   */
  readonly events?: EventRecorder;
}

export interface RunningController extends RunningServer {
  /** The bound metrics port (useful with port 0), when serving. */
  readonly metricsPort?: number;
}

/** The controller role: Identity + Controller services over the pool hosts, and /metrics when asked. */
export async function startController(config: Config, hosts: PoolHosts, endpoint: string, logger: Logger, options: ControllerRoleOptions = {}): Promise<RunningController> {
  // DeleteVolume releases the replicator's holds on a replicated volume before destroying it.
  const onFence = fenceEvents(options.events);
  const volumes = new VolumeService(hosts, logger, createReplicationEngine(hosts, { logger, ...(onFence && { onFence }) }), onFence);
  const snapshots = new SnapshotService(hosts, logger);
  const controller = new ControllerService(config, volumes, snapshots, logger);
  const groupController = new GroupControllerService(new GroupSnapshotService(hosts, volumes, snapshots, logger), logger);
  const identity = identityHandlers(
    {
      driverName: config.driverName,
      controller: true,
      // Ready while at least one pool host can be served (health per host: VolumeService.readiness).
      readiness: () => volumes.readiness(),
    },
    logger,
  );
  let metrics: MetricsServer | undefined;
  let csiMetrics: CsiMetrics | undefined;
  if (options.metricsAddress !== undefined) {
    if (!options.registry) throw new TypeError("startController: metricsAddress needs the registry the pool hosts report to");
    registerPoolHostMetrics(options.registry, hosts.health);
    csiMetrics = new CsiMetrics(options.registry);
    metrics = await startMetricsServer(options.metricsAddress, options.registry, logger);
  }
  try {
    const server = await startCsiServer(endpoint, { identity, controller: controller.handlers(), groupController: groupController.handlers() }, logger, csiMetrics);
    return {
      socketPath: server.socketPath,
      ...(metrics && { metricsPort: metrics.port }),
      close: async () => {
        await server.close();
        await metrics?.close();
      },
    };
  } catch (err) {
    await metrics?.close();
    throw err;
  }
}
