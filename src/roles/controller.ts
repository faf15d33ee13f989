import type { Config } from "../config.js";
import { ControllerService } from "../csi/controller.js";
import { identityHandlers } from "../csi/identity.js";
import { startCsiServer, type RunningServer } from "../csi/server.js";
import type { Logger } from "../log.js";
import { createReplicationEngine } from "../replication/engine.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { VolumeService } from "../volumes/service.js";
import { SnapshotService } from "../volumes/snapshots.js";

/** The controller role: Identity + Controller services over the pool hosts. */
export async function startController(config: Config, hosts: PoolHosts, endpoint: string, logger: Logger): Promise<RunningServer> {
  // DeleteVolume releases the replicator's holds on a replicated volume before destroying it.
  const volumes = new VolumeService(hosts, logger, createReplicationEngine(hosts, { logger }));
  const snapshots = new SnapshotService(hosts, logger);
  const controller = new ControllerService(config, volumes, snapshots, logger);
  const identity = identityHandlers(
    {
      driverName: config.driverName,
      controller: true,
      // Ready while at least one pool host can be served (health per host: VolumeService.readiness).
      readiness: () => volumes.readiness(),
    },
    logger,
  );
  return startCsiServer(endpoint, { identity, controller: controller.handlers() }, logger);
}
