import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseConfig, type Config } from "../../src/config.js";
import { CsiClient } from "../../src/csi/client.js";
import type { RunningServer } from "../../src/csi/server.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { startController } from "../../src/roles/controller.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import { startSshd, type Sshd } from "./sshd.js";
import { createTestPool, type TestPool } from "./zfs-pool.js";

/** What the controller needs on the pool host through sudo: zfs, and `install -d` for ownership. */
export const POOL_HOST_SUDO = ["/usr/sbin/zfs", "/usr/sbin/zpool", "/usr/bin/install"];

export interface PoolHostEnv {
  readonly name: string;
  readonly pool: TestPool;
  readonly sshd: Sshd;
  /** `<pool>/k8s`: the configured parentDataset. */
  readonly parent: string;
  readonly mountRoot: string;
}

export interface ControllerEnv {
  readonly hosts: PoolHostEnv[];
  readonly config: Config;
  readonly poolHosts: PoolHosts;
  readonly client: CsiClient;
  readonly endpoint: string;
  /** Runs `zfs`/`zpool` on this machine directly, to check the pool behind the driver's back. */
  zfs(...args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number | null }>;
  /** Every JSON log line the driver wrote so far. */
  logs(): Promise<Record<string, unknown>[]>;
  stop(): Promise<void>;
}

const local = new LocalExecutor();

/** Pool host(s) with their own zfs-fuse pool and sshd, and the controller on a temp unix socket. */
export interface ControllerEnvOptions {
  hostNames?: string[];
  poolSizeMiB?: number;
  configExtra?: Record<string, unknown>;
  /** Pin this host key instead of the sshd's real one (to test a mismatch). */
  pinnedHostKey?: string;
}

export async function startControllerEnv(options: ControllerEnvOptions = {}): Promise<ControllerEnv> {
  const dir = await mkdtemp(join(tmpdir(), "zcsi-ctl-"));
  const hosts: PoolHostEnv[] = [];
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  let server: RunningServer | undefined;
  let poolHosts: PoolHosts | undefined;
  let client: CsiClient | undefined;
  const stop = async (): Promise<void> => {
    client?.close();
    await server?.close();
    await poolHosts?.close();
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    for (const name of options.hostNames ?? ["alice"]) {
      const pool = await createTestPool({ sizeMiB: options.poolSizeMiB ?? 512 });
      cleanups.push(() => pool.destroy());
      const sshd = await startSshd({ sudoCommands: POOL_HOST_SUDO });
      cleanups.push(() => sshd.stop());
      const parent = `${pool.pool}/k8s`;
      const mountRoot = join(pool.mountRoot, "k8s");
      const r = await local.run(["zfs", "create", parent]);
      if (r.exitCode !== 0) throw new Error(`zfs create ${parent}: ${r.stderr}`);
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
        sudo: true,
      })),
      commandTimeoutMs: 20_000,
      ...options.configExtra,
    });
    const logPath = join(dir, "zcsi.log");
    const logger = pino({ level: "debug", base: undefined }, pino.destination({ dest: logPath, sync: true }));
    // Each pool host has its own key pair in the harness; the controller reads one key file,
    // so all sshds trust the first host's user key too.
    for (const h of hosts.slice(1)) await h.sshd.authorize(first.sshd.publicKeyLine);
    poolHosts = connectPoolHosts(config, logger);
    const endpoint = `unix://${join(dir, "csi.sock")}`;
    server = await startController(config, poolHosts, endpoint, logger);
    client = new CsiClient(endpoint);
    return {
      hosts,
      config,
      poolHosts,
      client,
      endpoint,
      zfs: async (...args) => {
        const res = await local.run(args[0] === "zpool" ? args : ["zfs", ...args]);
        return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode };
      },
      logs: async () =>
        (await readFile(logPath, "utf8"))
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
