/**
 * A pool host and nodes around it, all real:
 * - pool host "alice": a zfs-fuse pool, its sshd listening on the host side of a veth pair,
 *   the controller (in this process) creating volumes through that sshd;
 * - node "alice" (the pool host itself): `startNode` in this process, bind mounts;
 * - remote nodes ("bob", ...): real `zcsi node` processes (`node --import tsx src/cli.ts`)
 *   inside a network namespace, reaching the pool host over SSHFS with their own SFTP-only
 *   key (authorized_keys forced command: deploy/pool-host/zcsi-sftp).
 *
 * stop() (and an exit hook, if a test run dies) unmounts everything below the env's temp
 * dir, kills the node processes, and removes the sudoers drop-in, sshd, pool and namespace.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseConfig, type Config } from "../../src/config.js";
import { CsiClient } from "./csi-client.js";
import type { RunningServer } from "../../src/csi/server.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { parseMountInfo } from "../../src/mount/mountinfo.js";
import { startController } from "../../src/roles/controller.js";
import { startNode, type RunningNode } from "../../src/roles/node.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import { packageRoot } from "../../src/util/package.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import { POOL_HOST_SUDO } from "./controller.js";
import { createNetNs, type NetNs } from "./netns.js";
import { startSshd, type Sshd } from "./sshd.js";
import { createTestPool, type TestPool } from "./zfs-pool.js";
import { pidAlive } from "./process.js";

export const POOL_HOST = "alice";
export const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
export const RWX = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" as const } };

export interface TestVolume {
  readonly volumeId: string;
  readonly volumeContext: Record<string, string>;
  readonly dataset: string;
  /** The dataset's real mountpoint on the pool host. */
  readonly mountpoint: string;
}

export interface NodeHandle {
  readonly name: string;
  readonly client: CsiClient;
  readonly stateDir: string;
  /** A fresh staging dir for a volume on this node (created, as kubelet does). */
  stagingPath(volume: string): Promise<string>;
  /** A pod target path (not created: the plugin creates it); its parent exists. */
  targetPath(pod: string): Promise<string>;
  /** The node's JSON log lines so far. */
  logs(): Promise<Record<string, unknown>[]>;
}

export interface RemoteNode extends NodeHandle {
  readonly pid: number;
  /** SIGKILL, as an OOM kill or a crash would; mounts it made stay. */
  kill(): Promise<void>;
  /** Starts the process again with the same flags and state dir. */
  restart(): Promise<void>;
}

/** Another pool host beside alice (startNodeEnv's `morePoolHosts`): its own pool and sshd on the veth address. */
export interface ExtraPoolHost {
  readonly name: string;
  readonly pool: TestPool;
  readonly sshd: Sshd;
  readonly parent: string;
  readonly mountRoot: string;
}

export interface NodeEnv {
  readonly dir: string;
  /** The pool hosts after alice, in the order asked. */
  readonly morePoolHosts: readonly ExtraPoolHost[];
  readonly pool: TestPool;
  readonly sshd: Sshd;
  readonly netns: NetNs;
  readonly parent: string;
  readonly mountRoot: string;
  readonly controller: CsiClient;
  readonly controllerConfig: Config;
  readonly nodeConfig: Config;
  /** The SFTP-only key the nodes use. */
  readonly nodeKeyPath: string;
  readonly local: NodeHandle & { readonly server: RunningNode };
  startRemoteNode(name: string): Promise<RemoteNode>;
  createVolume(name: string, bytes: number, parameters?: Record<string, string>): Promise<TestVolume>;
  zfs(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

const local = new LocalExecutor();
/**
 * One sudoers drop-in per test process, so two runs at once neither overwrite nor remove each
 * other's (sudo ignores drop-in names with a dot: none here).
 */
const SUDOERS_DIR = "/etc/sudoers.d";
const SUDOERS_PREFIX = "zcsi-node-harness-";
const SUDOERS = `${SUDOERS_DIR}/${SUDOERS_PREFIX}${process.pid}`;
const OWNER_COMMENT = "zcsi test owner";

/** Whether another live process runs a node env (has a drop-in); drop-ins of dead processes are removed. */
function otherNodeEnvsLive(): boolean {
  let live = false;
  for (const name of existsSync(SUDOERS_DIR) ? readdirSync(SUDOERS_DIR) : []) {
    if (!name.startsWith(SUDOERS_PREFIX)) continue;
    const pid = Number(name.slice(SUDOERS_PREFIX.length));
    if (pid === process.pid) continue;
    if (pidAlive(pid)) live = true;
    else rmSync(join(SUDOERS_DIR, name), { force: true });
  }
  return live;
}
/**
 * A volume owner with an account on the pool host (sftp-server refuses to run as a uid
 * without one), and one without.
 */
export const OWNER = { uid: 1234, gid: 2345, user: "zcsi-test-owner" } as const;
export const UNKNOWN_OWNER = { uid: 4321, gid: 4321 } as const;

function uidTaken(uid: number): boolean {
  return readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .some((line) => line.split(":")[2] === String(uid));
}

async function run(argv: string[]): Promise<string> {
  const r = await local.run(argv, { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Every mount point below `dir`, deepest (latest) first. */
function mountsBelow(dir: string): string[] {
  return parseMountInfo(readFileSync("/proc/self/mountinfo", "utf8"))
    .map((m) => m.mountPoint)
    .filter((p) => p.startsWith(`${dir}/`))
    .reverse();
}

function unmountAllSync(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const mounts = mountsBelow(dir);
    if (mounts.length === 0) return;
    for (const m of mounts) {
      try {
        execFileSync("umount", ["-l", "--", m], { stdio: "ignore", timeout: 10_000 });
      } catch {
        // unmounted by a lower one already, or busy: next round
      }
    }
  }
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readLog(path: string): () => Promise<Record<string, unknown>[]> {
  return async () =>
    (await readFile(path, "utf8").catch(() => ""))
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export async function startNodeEnv(options: { poolSizeMiB?: number; morePoolHosts?: readonly string[]; adoptRoots?: (pool: string) => string[] } = {}): Promise<NodeEnv> {
  const dir = await mkdtemp(join(tmpdir(), "zcsi-node-"));
  await chmod(dir, 0o755);
  const children = new Set<ChildProcess>();
  const cleanups: (() => Promise<unknown>)[] = [];
  let stopped = false;
  let ownerCreated = false;
  const removeOwner = (): void => {
    if (!ownerCreated) return;
    ownerCreated = false;
    // A run beside this one may be using the account: the last one out removes it.
    if (otherNodeEnvsLive()) return;
    try {
      execFileSync("userdel", [OWNER.user], { stdio: "ignore" });
    } catch {
      // a process of the user still runs; the next run reuses the account
    }
  };
  const onExit = (): void => {
    for (const c of children) c.kill("SIGKILL");
    unmountAllSync(dir);
    rmSync(SUDOERS, { force: true });
    removeOwner();
  };
  process.once("exit", onExit);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const c of children) c.kill("SIGKILL");
    // Mounts first: binds of the datasets keep the pool busy, SSHFS mounts keep sshd sessions.
    unmountAllSync(dir);
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    rmSync(SUDOERS, { force: true });
    removeOwner();
    await rm(dir, { recursive: true, force: true });
    process.removeListener("exit", onExit);
  };
  try {
    const netns = await createNetNs();
    cleanups.push(() => netns.destroy());
    const pool = await createTestPool({ sizeMiB: options.poolSizeMiB ?? 512 });
    cleanups.push(() => pool.destroy());
    // sftp-server running as a volume's owner must traverse the pool's temp dir (mkdtemp: 0700).
    await chmod(pool.dir, 0o711);
    const parent = `${pool.pool}/k8s`;
    const mountRoot = join(pool.mountRoot, "k8s");
    await run(["zfs", "create", parent]);
    const sshd = await startSshd({ address: netns.hostAddress, sudoCommands: POOL_HOST_SUDO });
    cleanups.push(() => sshd.stop());
    // The node key may only start sftp-server (as root or a numeric uid:gid) through sudo.
    const draft = join(dir, "sudoers");
    await writeFile(draft, `Defaults:${sshd.user} runas_allow_unknown_id\n${sshd.user} ALL=(ALL:ALL) NOPASSWD: ${SFTP_SERVER}\n`, { mode: 0o440 });
    await run(["visudo", "-cf", draft]);
    await copyFile(draft, SUDOERS);
    await chmod(SUDOERS, 0o440);
    if (!uidTaken(OWNER.uid)) {
      await run(["useradd", "--system", "--uid", String(OWNER.uid), "--no-create-home", "--home-dir", "/", "--shell", "/usr/sbin/nologin", "--comment", OWNER_COMMENT, OWNER.user]);
      ownerCreated = true;
    } else {
      // Made by a harness (a concurrent run, or one that died): ours to remove as well, when last.
      ownerCreated = readFileSync("/etc/passwd", "utf8")
        .split("\n")
        .some((line) => line.startsWith(`${OWNER.user}:`) && line.split(":")[2] === String(OWNER.uid) && line.split(":")[4] === OWNER_COMMENT);
    }
    if (uidTaken(UNKNOWN_OWNER.uid)) throw new Error(`uid ${UNKNOWN_OWNER.uid} exists here; the tests need it unused`);
    const wrapper = join(dir, "zcsi-sftp");
    await copyFile(join(packageRoot, "deploy", "pool-host", "zcsi-sftp"), wrapper);
    await chmod(wrapper, 0o755);
    const nodeKeyPath = join(dir, "node_key");
    await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zcsi-node", "-f", nodeKeyPath]);
    await sshd.authorize(await readFile(`${nodeKeyPath}.pub`, "utf8"), { keyOptions: `restrict,command="${wrapper}"` });

    const host = {
      name: POOL_HOST,
      address: netns.hostAddress,
      port: sshd.port,
      user: sshd.user,
      parentDataset: parent,
      mountRoot,
      hostKey: sshd.hostKeyLine,
      sudo: true,
      ...(options.adoptRoots && { adoptRoots: options.adoptRoots(pool.pool) }),
    };
    // More pool hosts: each its own pool and sshd on the same veth address (another port), the
    // nodes' SFTP-only key and the controller's key (alice's) authorized there too.
    const morePoolHosts: ExtraPoolHost[] = [];
    for (const name of options.morePoolHosts ?? []) {
      const extraPool = await createTestPool({ sizeMiB: options.poolSizeMiB ?? 512 });
      cleanups.push(() => extraPool.destroy());
      await chmod(extraPool.dir, 0o711);
      const extraParent = `${extraPool.pool}/k8s`;
      await run(["zfs", "create", extraParent]);
      const extraSshd = await startSshd({ address: netns.hostAddress, sudoCommands: POOL_HOST_SUDO });
      cleanups.push(() => extraSshd.stop());
      await extraSshd.authorize(await readFile(`${nodeKeyPath}.pub`, "utf8"), { keyOptions: `restrict,command="${wrapper}"` });
      await extraSshd.authorize(sshd.publicKeyLine);
      morePoolHosts.push({ name, pool: extraPool, sshd: extraSshd, parent: extraParent, mountRoot: join(extraPool.mountRoot, "k8s") });
    }
    const hostsConfig = [
      host,
      ...morePoolHosts.map((h) => ({ name: h.name, address: netns.hostAddress, port: h.sshd.port, user: h.sshd.user, parentDataset: h.parent, mountRoot: h.mountRoot, hostKey: h.sshd.hostKeyLine, sudo: true })),
    ];
    const controllerConfig = parseConfig({ privateKeyFile: sshd.privateKeyPath, poolHosts: hostsConfig, commandTimeoutMs: 20_000 });
    const nodeConfig = parseConfig({ privateKeyFile: nodeKeyPath, poolHosts: hostsConfig });
    const nodeConfigPath = join(dir, "node-config.json");
    await writeFile(nodeConfigPath, JSON.stringify({ privateKeyFile: nodeKeyPath, poolHosts: hostsConfig }));

    const controllerLog = pino({ level: "debug", base: undefined }, pino.destination({ dest: join(dir, "controller.log"), sync: true }));
    const poolHosts: PoolHosts = connectPoolHosts(controllerConfig, controllerLog);
    cleanups.push(() => poolHosts.close());
    const controllerEndpoint = `unix://${join(dir, "controller.sock")}`;
    const controllerServer: RunningServer = await startController(controllerConfig, poolHosts, controllerEndpoint, controllerLog);
    cleanups.push(() => controllerServer.close());
    const controller = new CsiClient(controllerEndpoint);
    cleanups.push(async () => controller.close());

    const handle = (name: string, client: CsiClient, stateDir: string, logPath: string): NodeHandle => ({
      name,
      client,
      stateDir,
      async stagingPath(volume) {
        const path = join(dir, name, "plugins", volume, "globalmount");
        await mkdir(path, { recursive: true });
        return path;
      },
      async targetPath(pod) {
        const parentDir = join(dir, name, "pods", pod);
        await mkdir(parentDir, { recursive: true });
        return join(parentDir, "mount");
      },
      logs: readLog(logPath),
    });

    const localLogPath = join(dir, "alice-node.log");
    const localStateDir = join(dir, "alice-state");
    const localServer = await startNode(
      nodeConfig,
      POOL_HOST,
      `unix://${join(dir, "alice-node.sock")}`,
      pino({ level: "debug", base: undefined }, pino.destination({ dest: localLogPath, sync: true })),
      // Serves /metrics on a free loopback port (server.metricsPort), as --metrics-address does.
      { stateDir: localStateDir, metricsAddress: "127.0.0.1:0" },
    );
    cleanups.push(() => localServer.close());
    const localClient = new CsiClient(`unix://${join(dir, "alice-node.sock")}`);
    cleanups.push(async () => localClient.close());

    const startRemoteNode = async (name: string): Promise<RemoteNode> => {
      const endpoint = `unix://${join(dir, `${name}-node.sock`)}`;
      const stateDir = join(dir, `${name}-state`);
      const logPath = join(dir, `${name}-node.log`);
      const argv = netns.enter([
        process.execPath,
        "--import",
        "tsx",
        join(packageRoot, "src", "cli.ts"),
        "node",
        "--endpoint",
        endpoint,
        "--node-id",
        name,
        "--config",
        nodeConfigPath,
        "--state-dir",
        stateDir,
        "--log-level",
        "debug",
      ]);
      let child: ChildProcess | undefined;
      const launch = async (): Promise<void> => {
        const log = await open(logPath, "a");
        const [command, ...args] = argv as [string, ...string[]];
        const proc = spawn(command, args, { cwd: packageRoot, stdio: ["ignore", log.fd, log.fd], env: { ...process.env, ZCSI_LOG_LEVEL: "debug" } });
        await log.close();
        children.add(proc);
        proc.once("exit", () => children.delete(proc));
        child = proc;
        const exited = new Promise<never>((_, reject) =>
          proc.once("exit", (code, signal) => reject(new Error(`zcsi node ${name} exited (${code ?? signal}) at start; log: ${logPath}`))),
        );
        const probe = new CsiClient(endpoint);
        try {
          await Promise.race([waitFor(`zcsi node ${name} to serve ${endpoint}`, async () => existsSync(endpoint.slice(7)) && (await probe.probe({})).ready?.value === true), exited]);
        } finally {
          probe.close();
        }
      };
      await launch();
      const client = new CsiClient(endpoint);
      cleanups.push(async () => client.close());
      const kill = async (): Promise<void> => {
        const proc = child;
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
        const gone = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGKILL");
        await gone;
      };
      return {
        ...handle(name, client, stateDir, logPath),
        get pid() {
          return child?.pid ?? -1;
        },
        kill,
        async restart() {
          await kill();
          await launch();
        },
      };
    };

    return {
      dir,
      morePoolHosts,
      pool,
      sshd,
      netns,
      parent,
      mountRoot,
      controller,
      controllerConfig,
      nodeConfig,
      nodeKeyPath,
      local: { ...handle(POOL_HOST, localClient, localStateDir, localLogPath), server: localServer },
      startRemoteNode,
      async createVolume(name, bytes, parameters = {}) {
        const res = await controller.createVolume({ name, capacityRange: { requiredBytes: String(bytes) }, volumeCapabilities: [RWX], parameters });
        const volume = res.volume;
        if (!volume) throw new Error("CreateVolume returned no volume");
        return { volumeId: volume.volumeId, volumeContext: volume.volumeContext, dataset: `${parent}/${name}`, mountpoint: join(mountRoot, name) };
      },
      zfs: (...args) => run(["zfs", ...args]),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A name unique to this run, for volumes and pods. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString("hex")}`;
}

/** "OK" or the errno name (libuv has no name for some, such as EDQUOT: looked up by number). */
export async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code?.startsWith("E")) return e.code;
    const name = Object.entries(constants.errno).find(([, n]) => n === -(e.errno ?? 0))?.[0];
    return name ?? e.code ?? String(err);
  }
}
