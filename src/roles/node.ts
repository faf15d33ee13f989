import { constants, existsSync } from "node:fs";
import { access } from "node:fs/promises";
import { delimiter, join } from "node:path";
import type { Config } from "../config.js";
import { invalidArgument } from "../errors.js";
import { identityHandlers } from "../csi/identity.js";
import { DEFAULT_MAX_VOLUMES_PER_NODE, NodeService } from "../csi/node.js";
import { startCsiServer, type RunningServer } from "../csi/server.js";
import { InstrumentedExecutor } from "../exec/instrumented.js";
import { LocalExecutor } from "../exec/local.js";
import type { Logger } from "../log.js";
import { CommandMetrics, createRegistry, CsiMetrics, startMetricsServer, type MetricsServer } from "../metrics.js";
import { Mounter, type SshfsLauncher } from "../mount/mounter.js";
import { checkRemoteCommandPath } from "../mount/sshfs.js";
import { VolumeMounts, type RepairReport } from "../mount/volume-mounts.js";

export interface NodeRoleOptions {
  /** Stage records, known_hosts and sshfs logs; must survive plugin restarts. */
  readonly stateDir?: string;
  readonly maxVolumesPerNode?: number;
  readonly launcher?: SshfsLauncher;
  /** On the pool hosts. */
  readonly sudoPath?: string;
  readonly sftpServerPath?: string;
  readonly probeTimeoutMs?: number;
  /** `host:port` to serve /metrics on (CSI calls; mount, umount, sshfs, stat durations); absent → none. */
  readonly metricsAddress?: string;
}

export const DEFAULT_STATE_DIR = "/var/lib/zcsi/node";

export interface RunningNode extends RunningServer {
  /** What the start-up scan found and mended. */
  readonly repair: RepairReport;
  /** The bound metrics port (useful with port 0), when serving. */
  readonly metricsPort?: number;
}

const NODE_ID = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$/;

function onPath(binary: string): boolean {
  return (process.env.PATH ?? "/usr/bin:/bin").split(delimiter).some((dir) => dir !== "" && existsSync(join(dir, binary)));
}

/** Why this node cannot serve its volumes yet; empty when it can. */
async function readiness(config: Config, nodeId: string, stateDir: string): Promise<string[]> {
  const problems: string[] = [];
  const remote = config.poolHosts.filter((h) => h.name !== nodeId);
  if (remote.length > 0) {
    // Volumes of every other pool host come over SSHFS.
    if (!existsSync("/dev/fuse")) problems.push("/dev/fuse is missing: SSHFS mounts need the fuse device (mount it into the node plugin's container)");
    if (!onPath("sshfs")) problems.push("the sshfs binary is not on PATH");
    await access(config.privateKeyFile, constants.R_OK).catch(() => problems.push(`the SSH private key ${config.privateKeyFile} is not readable`));
  }
  for (const host of config.poolHosts.filter((h) => h.name === nodeId)) {
    if (!existsSync(host.mountRoot)) problems.push(`this node is pool host ${host.name} but its mountRoot ${host.mountRoot} does not exist`);
  }
  await access(stateDir, constants.W_OK).catch(() => problems.push(`the state directory ${stateDir} is not writable`));
  return problems;
}

/**
 * The node role: Identity + Node services on kubelet's socket. Before serving it mends
 * what a previous run left dead (SSHFS staging mounts whose sshfs died, and the pod
 * targets bound to them), so kubelet's first calls find working mounts.
 */
export async function startNode(config: Config, nodeId: string, endpoint: string, logger: Logger, options: NodeRoleOptions = {}): Promise<RunningNode> {
  if (!NODE_ID.test(nodeId)) throw invalidArgument(`node id ${JSON.stringify(nodeId)} must be the Kubernetes node name (--node-id or NODE_NAME)`);
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  const registry = createRegistry();
  const exec = new InstrumentedExecutor(new LocalExecutor({ host: nodeId }), logger, new CommandMetrics(registry));
  const mounter = new Mounter(exec, logger, { ...(options.launcher && { launcher: options.launcher }) });
  const volumeMounts = new VolumeMounts(
    config.poolHosts,
    mounter,
    {
      nodeId,
      stateDir,
      privateKeyFile: config.privateKeyFile,
      sudoPath: checkRemoteCommandPath(options.sudoPath ?? "/usr/bin/sudo", "sudo path"),
      sftpServerPath: checkRemoteCommandPath(options.sftpServerPath ?? "/usr/lib/openssh/sftp-server", "sftp-server path"),
      probeTimeoutMs: options.probeTimeoutMs ?? 10_000,
    },
    logger,
  );
  await volumeMounts.init();
  const node = new NodeService(config, volumeMounts, { nodeId, maxVolumesPerNode: options.maxVolumesPerNode ?? DEFAULT_MAX_VOLUMES_PER_NODE }, logger);
  const repair = await volumeMounts.repairAll((volumeId, mountpoint, source) => node.resolveServed(volumeId, source ? {} : { mountpoint }, source));
  logger[repair.failed.length > 0 ? "error" : "info"]({ op: "repair", launcher: mounter.launcher, ...repair }, "start-up scan of staged volumes done");
  const identity = identityHandlers({ driverName: config.driverName, controller: false, readiness: () => readiness(config, nodeId, stateDir) }, logger);
  let metrics: MetricsServer | undefined;
  if (options.metricsAddress !== undefined) metrics = await startMetricsServer(options.metricsAddress, registry, logger);
  try {
    const server = await startCsiServer(endpoint, { identity, node: node.handlers() }, logger, metrics && new CsiMetrics(registry));
    const close = async (): Promise<void> => {
      await server.close();
      await metrics?.close();
    };
    return { socketPath: server.socketPath, close, repair, ...(metrics && { metricsPort: metrics.port }) };
  } catch (err) {
    await metrics?.close();
    throw err;
  }
}
