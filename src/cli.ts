#!/usr/bin/env node
import { parseArgs } from "node:util";
import { loadConfig } from "./config.js";
import { errorMessage } from "./errors.js";
import { createLogger } from "./log.js";
import { packageVersion } from "./util/package.js";

const USAGE = `zcsi ${packageVersion}: a CSI driver for ZFS pool hosts reached over SSH

Usage:
  zcsi controller --endpoint unix:///csi/csi.sock --config config.yaml [--private-key-file F] [--driver-name N]
                  [--metrics-address :9811]
  zcsi node --endpoint unix:///csi/csi.sock --node-id NAME --config config.yaml [--private-key-file F]
            [--state-dir /var/lib/zcsi/node] [--max-volumes-per-node 128] [--sshfs-launcher auto|systemd|detached]
            [--metrics-address :29664]
  zcsi snapshotter --config config.yaml [--private-key-file F] [--metrics-address :9809] [--snapshot-interval 60]
                   [--lease-name zcsi-snapshotter] [--lease-namespace NS] [--no-leader-election]
  zcsi replicator --config config.yaml [--private-key-file F] [--metrics-address :9810] [--concurrency 2]
                  [--annotation-interval 15m] [--annotation-bandwidth 50Mi] [--tick-interval 30]
                  [--lease-name zcsi-replicator] [--lease-namespace NS] [--no-leader-election]
  zcsi status --config config.yaml [--private-key-file F] [--output text|json]
  zcsi migrate VOLUME --to HOST --config config.yaml [--max-final-delta 64Mi] [--detach-timeout 10m] [--namespace zcsi]
  zcsi migrate VOLUME --abort --config config.yaml
  zcsi drain HOST --config config.yaml [--to HOST] [--parallel 2] [--max-final-delta 64Mi] [--detach-timeout 10m] [--namespace zcsi]
  zcsi failover VOLUME... | --host HOST  --config config.yaml [--to HOST] [--force] [--resume] [--namespace zcsi]
  zcsi resync VOLUME... --host OLD --config config.yaml [--discard-diverged] [--resume] [--namespace zcsi]
  zcsi resync HOST:DATASET... --config config.yaml [--discard-diverged] [--namespace zcsi]   (node-annotation datasets)
  zcsi adopt DATASET --pvc NAMESPACE/NAME --config config.yaml [--host H] [--read-only] [--storage-class SC] [--dry-run]
             [--snapshot-schedule hourly=24,daily=7] [--replicate-to HOST[,HOST]] [--replication-interval 15m]
  zcsi rollback NAMESPACE/PVC SNAPSHOT [--destroy-newer] [--keep-current] [--force] [--namespace zcsi]   (docs/rollback.md)
  zcsi --version

Environment (used when the flag is absent): CSI_ENDPOINT, ZCSI_CONFIG, ZCSI_PRIVATE_KEY_FILE,
ZCSI_DRIVER_NAME, ZCSI_LOG_LEVEL, ZCSI_METRICS_ADDRESS, POD_NAME, POD_NAMESPACE; for node: NODE_ID or NODE_NAME, ZCSI_STATE_DIR.
failover and resync read KUBECONFIG (or ~/.kube/config); docs/pool-host-lost.md is their runbook.
/metrics is served only when --metrics-address (or ZCSI_METRICS_ADDRESS) is given; for controller and node an
empty value turns it off.`;

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      endpoint: { type: "string" },
      config: { type: "string" },
      "private-key-file": { type: "string" },
      "driver-name": { type: "string" },
      "log-level": { type: "string" },
      "node-id": { type: "string" },
      output: { type: "string", short: "o" },
      "metrics-address": { type: "string" },
      "lease-name": { type: "string" },
      "lease-namespace": { type: "string" },
      "no-leader-election": { type: "boolean" },
      "snapshot-interval": { type: "string" },
      concurrency: { type: "string" },
      "annotation-interval": { type: "string" },
      "annotation-bandwidth": { type: "string" },
      "tick-interval": { type: "string" },
      "state-dir": { type: "string" },
      "max-volumes-per-node": { type: "string" },
      "sshfs-launcher": { type: "string" },
      to: { type: "string" },
      abort: { type: "boolean" },
      parallel: { type: "string" },
      "max-final-delta": { type: "string" },
      "detach-timeout": { type: "string" },
      host: { type: "string" },
      force: { type: "boolean" },
      resume: { type: "boolean" },
      namespace: { type: "string" },
      "discard-diverged": { type: "boolean" },
      pvc: { type: "string" },
      "read-only": { type: "boolean" },
      "dry-run": { type: "boolean" },
      "storage-class": { type: "string" },
      "snapshot-schedule": { type: "string" },
      "replicate-to": { type: "string" },
      "replication-interval": { type: "string" },
      "destroy-newer": { type: "boolean" },
      "keep-current": { type: "boolean" },
      version: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.version) {
    console.log(packageVersion);
    return;
  }
  const role = positionals[0];
  if (values.help || role === undefined) {
    console.log(USAGE);
    if (role === undefined && !values.help) process.exitCode = 2;
    return;
  }
  const logger = createLogger({ level: values["log-level"], name: `zcsi-${role}`, fd: role === "migrate" || role === "drain" || role === "adopt" || role === "rollback" ? 2 : 1 });
  const endpoint = values.endpoint ?? process.env.CSI_ENDPOINT ?? "unix:///csi/csi.sock";
  const configPath = values.config ?? process.env.ZCSI_CONFIG;
  if (!configPath) throw new Error("--config (or ZCSI_CONFIG) is required");
  const privateKeyFile = values["private-key-file"] ?? process.env.ZCSI_PRIVATE_KEY_FILE;
  const driverName = values["driver-name"] ?? process.env.ZCSI_DRIVER_NAME;
  const config = loadConfig(configPath, { ...(privateKeyFile && { privateKeyFile }), ...(driverName && { driverName }) });
  // Controller and node: absent or empty → no metrics server (the off-switch when the environment sets one).
  const metricsAddress = (values["metrics-address"] ?? process.env.ZCSI_METRICS_ADDRESS) || undefined;
  switch (role) {
    // Each role loads only its own modules: the node role never loads the SSH client.
    case "controller": {
      const { connectPoolHosts } = await import("./roles/pool-hosts.js");
      const { startController } = await import("./roles/controller.js");
      const { CommandMetrics, createRegistry } = await import("./metrics.js");
      const registry = createRegistry();
      const hosts = connectPoolHosts(config, logger, { commandMetrics: new CommandMetrics(registry) });
      // In a pod (the ServiceAccount) or with $KUBECONFIG: Events on PVs (a fenced stale copy).
      const events = process.env.KUBERNETES_SERVICE_HOST || process.env.KUBECONFIG ? (await import("./roles/controller-events.js")).controllerEvents(logger) : undefined;
      const server = await startController(config, hosts, endpoint, logger, { ...(metricsAddress && { metricsAddress, registry }), ...(events && { events }) });
      stopOnSignal(logger, "stopping", async () => {
        await server.close();
        await hosts.close();
      });
      return;
    }
    case "node": {
      const nodeId = values["node-id"] ?? process.env.NODE_ID ?? process.env.NODE_NAME;
      if (!nodeId) throw new Error("--node-id (or NODE_ID / NODE_NAME) is required");
      const maxVolumes = values["max-volumes-per-node"];
      if (maxVolumes !== undefined && !/^[0-9]{1,6}$/.test(maxVolumes)) throw new Error("--max-volumes-per-node must be a number (0: no limit)");
      const launcher = values["sshfs-launcher"];
      if (launcher !== undefined && launcher !== "auto" && launcher !== "systemd" && launcher !== "detached") throw new Error("--sshfs-launcher must be auto, systemd or detached");
      const { startNode } = await import("./roles/node.js");
      const stateDir = values["state-dir"] ?? process.env.ZCSI_STATE_DIR;
      const server = await startNode(config, nodeId, endpoint, logger, {
        ...(stateDir && { stateDir }),
        ...(maxVolumes !== undefined && { maxVolumesPerNode: Number(maxVolumes) }),
        ...(launcher !== undefined && { launcher }),
        ...(metricsAddress && { metricsAddress }),
      });
      // Stopping serves no more calls and touches no mount: pods keep their data (docs/node.md).
      stopOnSignal(logger, "stopping; mounts stay in place", () => server.close());
      return;
    }
    case "snapshotter": {
      const { startSnapshotterRole } = await import("./roles/snapshotter.js");
      const snapshotter = await startSnapshotterRole(config, logger, {
        metricsAddress: values["metrics-address"] ?? process.env.ZCSI_METRICS_ADDRESS,
        leaseName: values["lease-name"],
        leaseNamespace: values["lease-namespace"] ?? process.env.POD_NAMESPACE,
        leaderElection: !values["no-leader-election"],
        tickIntervalSeconds: values["snapshot-interval"],
        identity: process.env.POD_NAME,
      });
      // On SIGTERM the Lease is released, so the other replica takes over at once.
      stopOnSignal(logger, "stopping; releasing the snapshotter Lease", () => snapshotter.close());
      return;
    }
    case "replicator": {
      const { startReplicatorRole } = await import("./roles/replicator.js");
      const replicator = await startReplicatorRole(config, logger, {
        metricsAddress: values["metrics-address"] ?? process.env.ZCSI_METRICS_ADDRESS,
        leaseName: values["lease-name"],
        leaseNamespace: values["lease-namespace"] ?? process.env.POD_NAMESPACE,
        leaderElection: !values["no-leader-election"],
        concurrency: values.concurrency,
        annotationInterval: values["annotation-interval"],
        annotationBandwidth: values["annotation-bandwidth"],
        tickIntervalSeconds: values["tick-interval"],
        identity: process.env.POD_NAME,
      });
      // On SIGTERM runs stop (a cut transfer resumes on the next leader) and the Lease is released.
      stopOnSignal(logger, "stopping; releasing the replicator Lease", () => replicator.close());
      return;
    }
    case "status": {
      // stdout is the report; per-host failures are in it (roles/status.ts).
      const output = values.output ?? "text";
      if (output !== "text" && output !== "json") throw new Error("--output must be text or json");
      const { runStatusRole } = await import("./roles/status.js");
      process.exitCode = await runStatusRole(config, output, (text) => process.stdout.write(text));
      return;
    }
    case "migrate":
    case "drain": {
      // stdout is the outcome (downtime, bytes of the final increment); logs go to stderr.
      const { runMoveRole } = await import("./roles/migrate.js");
      process.exitCode = await runMoveRole(role, positionals[1], config, {
        to: values.to,
        abort: values.abort,
        parallel: values.parallel,
        maxFinalDelta: values["max-final-delta"],
        detachTimeout: values["detach-timeout"],
        namespace: values.namespace ?? process.env.POD_NAMESPACE,
        identity: process.env.POD_NAME,
      }, logger, (text) => process.stdout.write(text));
      return;
    }
    case "failover":
    case "resync": {
      const { runMobilityCommand } = await import("./roles/mobility-cli.js");
      process.exitCode = await runMobilityCommand(role, config, logger, { ...values, volumeIds: positionals.slice(1) }, (text) => process.stdout.write(text));
      return;
    }
    case "adopt": {
      // stdout is the outcome (or, with --dry-run, the PV and PVC as YAML); logs go to stderr.
      const { runAdoptCommand } = await import("./roles/adopt.js");
      const flags = { dataset: positionals[1], pvc: values.pvc, host: values.host, readOnly: values["read-only"], dryRun: values["dry-run"], storageClass: values["storage-class"],
        snapshotSchedule: values["snapshot-schedule"], replicateTo: values["replicate-to"], replicationInterval: values["replication-interval"] };
      process.exitCode = await runAdoptCommand(config, flags, logger, (text) => process.stdout.write(text));
      return;
    }
    case "rollback": {
      // stdout is the outcome; logs go to stderr.
      const [pvc, snapshot] = positionals.slice(1);
      if (pvc === undefined || snapshot === undefined) throw new Error("usage: zcsi rollback NAMESPACE/PVC SNAPSHOT [--destroy-newer] [--keep-current] [--force]");
      const { runRollbackRole } = await import("./roles/rollback.js");
      const args = { pvc, snapshot, force: values.force === true, destroyNewer: values["destroy-newer"] === true, keepCurrent: values["keep-current"] === true };
      process.exitCode = await runRollbackRole(config, args, logger, (text) => process.stdout.write(text), values.namespace ?? process.env.POD_NAMESPACE);
      return;
    }
    default:
      throw new Error(`unknown role ${JSON.stringify(role)}\n\n${USAGE}`);
  }
}

function stopOnSignal(logger: ReturnType<typeof createLogger>, message: string, close: () => Promise<void>): void {
  const stop = async (signal: string): Promise<void> => {
    logger.info({ op: "shutdown", signal }, message);
    await close();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`zcsi: ${errorMessage(err)}`);
  process.exit(1);
});
