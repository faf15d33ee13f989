import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseConfig, type Config } from "../../src/config.js";
import { CsiClient } from "./csi-client.js";
import { CommandMetrics, createRegistry } from "../../src/metrics.js";
import type { EventRecorder } from "../../src/k8s/events.js";
import { startController, type RunningController } from "../../src/roles/controller.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import type { OpenZfsVm } from "../hosts/openzfs-vm/vm.js";
import { createPoolHost, zfsBackend, type PoolHost, type ZfsBackendName } from "./backend.js";
import { startSshd, type Sshd } from "./sshd.js";

/** What the controller needs on the pool host through sudo: zfs, `install -d` for ownership, `rmdir` for a deleted volume's mountpoint. */
export const POOL_HOST_SUDO = ["/usr/sbin/zfs", "/usr/sbin/zpool", "/usr/bin/install", "/usr/bin/rmdir"];

export interface PoolHostEnv {
  readonly name: string;
  /** The pool, and `exec`/`files` to look at the pool host behind the driver's back. */
  readonly pool: PoolHost;
  /** The sshd the driver logs in to (zfs-fuse: a local sshd; openzfs-vm: the guest's port 2222). */
  readonly sshd: Sshd;
  /** `<pool>/k8s`: the configured parentDataset. */
  readonly parent: string;
  readonly mountRoot: string;
}

export interface ControllerEnv {
  readonly backend: ZfsBackendName;
  readonly hosts: PoolHostEnv[];
  readonly config: Config;
  readonly poolHosts: PoolHosts;
  readonly client: CsiClient;
  readonly endpoint: string;
  /** The port /metrics is served on, when `metricsAddress` was given. */
  readonly metricsPort?: number;
  /**
   * Runs `zfs ...` (or `zpool ...` when the first argument is "zpool") on the pool host directly,
   * to check the pool behind the driver's back: on the host whose pool an argument names
   * (`<pool>`, `<pool>/...`, `<pool>@...`), else on the first host.
   */
  zfs(...args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number | null }>;
  /** Every JSON log line the driver wrote so far. */
  logs(): Promise<Record<string, unknown>[]>;
  /**
   * Stops the driver alone (the gRPC server, then the pool-host connections, which let the
   * commands still running on a host finish) and keeps the pools: a cleanup that works on a
   * pool behind the driver's back runs this first, so it never races the driver's commands.
   */
  stopController(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Pool host(s) with their own pool and sshd, and the controller on a temp unix socket. The
 * backend (ZCSI_ZFS_BACKEND) decides what a pool host is: a zfs-fuse pool behind a local sshd,
 * or an OpenZFS VM (one per host name) whose sshd on guest port 2222 the controller uses.
 */
export interface ControllerEnvOptions {
  hostNames?: string[];
  poolSizeMiB?: number;
  configExtra?: Record<string, unknown>;
  /** Pin this host key instead of the sshd's real one (to test a mismatch). */
  pinnedHostKey?: string;
  /** Serve /metrics here (e.g. `127.0.0.1:0`), as `zcsi controller --metrics-address` does. */
  metricsAddress?: string;
  /** The ZFS backend of the pool hosts; default ZCSI_ZFS_BACKEND (a benchmark measures both). */
  backend?: ZfsBackendName;
  /** Each host's adoptRoots, from its pool's name (created by the test). */
  adoptRoots?: (pool: string, host: string) => string[];
  /** The controller's Event recorder (as `zcsi controller` in a pod has), e.g. against the API fake. */
  events?: EventRecorder;
}

export async function startControllerEnv(options: ControllerEnvOptions = {}): Promise<ControllerEnv> {
  const dir = await mkdtemp(join(tmpdir(), "zcsi-ctl-"));
  const hosts: PoolHostEnv[] = [];
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  let server: RunningController | undefined;
  let poolHosts: PoolHosts | undefined;
  let client: CsiClient | undefined;
  const stopController = async (): Promise<void> => {
    client?.close();
    await server?.close();
    await poolHosts?.close();
  };
  const stop = async (): Promise<void> => {
    await stopController();
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    for (const name of options.hostNames ?? ["alice"]) {
      const pool = await createPoolHost({ sizeMiB: options.poolSizeMiB ?? 512, name }, options.backend ?? zfsBackend());
      cleanups.push(() => pool.destroy());
      let sshd: Sshd;
      if (pool.vm) {
        sshd = await vmServiceSshd(pool.vm);
      } else {
        // sftp-server too: a node that is not the pool host mounts over SSHFS through it.
        const local = await startSshd({ sudoCommands: [...POOL_HOST_SUDO, "/usr/lib/openssh/sftp-server"] });
        cleanups.push(() => local.stop());
        sshd = local;
      }
      const parent = `${pool.pool}/k8s`;
      const mountRoot = join(pool.mountRoot, "k8s");
      const r = await pool.exec.run(["zfs", "create", parent]);
      if (r.exitCode !== 0) throw new Error(`zfs create ${parent}: ${r.stderr}`);
      // OpenZFS writes the pool's command history in a later txg: until it syncs, `available`
      // drops by a few KiB between two reads (status.test.ts compares two). Settle it here.
      if (pool.vm) await pool.exec.run(["zpool", "sync", pool.pool]);
      hosts.push({ name, pool, sshd, parent, mountRoot });
    }
    const first = hosts[0];
    if (!first) throw new Error("no hosts");
    const config = parseConfig({
      privateKeyFile: first.sshd.privateKeyPath,
      poolHosts: hosts.map((h) => ({
        name: h.name,
        address: h.sshd.address,
        port: h.sshd.port,
        user: h.sshd.user,
        parentDataset: h.parent,
        mountRoot: h.mountRoot,
        hostKey: options.pinnedHostKey ?? h.sshd.hostKeyLine,
        // The VM's driver-facing user is root (sudo is there, for the node's sftp-server, but
        // root needs none); the local sshd's is a plain user with sudo, the documented setup.
        sudo: h.sshd.user !== "root",
        ...(options.adoptRoots && { adoptRoots: options.adoptRoots(h.pool.pool, h.name) }),
      })),
      commandTimeoutMs: 20_000,
      ...options.configExtra,
    });
    const logPath = join(dir, "zcsi.log");
    const logger = pino({ level: "debug", base: undefined }, pino.destination({ dest: logPath, sync: true }));
    // Each pool host has its own key pair in the harness; the controller reads one key file,
    // so all sshds trust the first host's user key too.
    for (const h of hosts.slice(1)) await h.sshd.authorize(first.sshd.publicKeyLine);
    const registry = createRegistry();
    poolHosts = connectPoolHosts(config, logger, { commandMetrics: new CommandMetrics(registry) });
    const endpoint = `unix://${join(dir, "csi.sock")}`;
    const metricsAddress = options.metricsAddress;
    server = await startController(config, poolHosts, endpoint, logger, { ...(metricsAddress !== undefined && { metricsAddress, registry }), ...(options.events && { events: options.events }) });
    client = new CsiClient(endpoint);
    const hostFor = (args: readonly string[]): PoolHostEnv => {
      const named = hosts.find((h) => args.some((a) => a === h.pool.pool || a.startsWith(`${h.pool.pool}/`) || a.startsWith(`${h.pool.pool}@`)));
      return named ?? first;
    };
    return {
      backend: first.pool.backend,
      hosts,
      config,
      poolHosts,
      client,
      endpoint,
      ...(server.metricsPort !== undefined && { metricsPort: server.metricsPort }),
      zfs: async (...args) => {
        const res = await hostFor(args).pool.exec.run(args[0] === "zpool" ? args : ["zfs", ...args]);
        return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode };
      },
      logs: async () =>
        (await readFile(logPath, "utf8"))
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      stopController,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The VM's driver-facing sshd as an `Sshd`, so suites kill and restart it the same way on both
 * backends. It lives as long as the VM; stop() leaves it to the VM's own stop.
 */
async function vmServiceSshd(vm: OpenZfsVm): Promise<Sshd> {
  const publicKeyLine = (await readFile(`${vm.privateKeyPath}.pub`, "utf8")).trim();
  const knownHostsLine = (): string => `[${vm.address}]:${vm.servicePort} ${vm.hostKeyLine}`;
  return {
    address: vm.address,
    port: vm.servicePort,
    user: vm.user,
    hostKeyLine: vm.hostKeyLine,
    privateKey: vm.privateKey,
    privateKeyPath: vm.privateKeyPath,
    publicKeyLine,
    knownHostsPath: vm.knownHostsPath,
    startMs: 0,
    knownHostsLine,
    authorize: async (line, { keyOptions } = {}) => vm.authorize(keyOptions === undefined ? line : `${keyOptions} ${line}`),
    kill: () => vm.killServiceSshd(),
    restart: async () => {
      await vm.killServiceSshd();
      await vm.startServiceSshd();
    },
    stop: async () => undefined,
  };
}
