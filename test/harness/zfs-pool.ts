/**
 * Test pools on zfs-fuse: a sparse file-backed image per pool, a unique pool name, and a
 * cleanup that leaves no pool, mount, file or process behind.
 *
 * The zfs-fuse daemon is shared: if one already runs we use it and never stop it; if none runs
 * we start it, count users in this process, and the last user's destroy() stops it — unless
 * other pools (not ours) are imported by then, which means someone else started using it.
 * At the start of a run (holdZfsFuseDaemon), test/harness/zfs-fuse-daemon.ts recovers from what
 * a killed earlier run left: its stale pools, or a wedged daemon.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Executor } from "../../src/exec/executor.js";
import { LocalExecutor } from "../../src/exec/local.js";
import {
  daemonAnswers,
  localZfsFuseHost,
  recoverZfsFuse,
  startZfsFuse,
  waitForSocket as waitForZfsFuse,
  writeOwner,
  zfsFuseDaemons,
  type StartedDaemon,
} from "./zfs-fuse-daemon.js";
import { pidAlive } from "./process.js";

export interface TestPool {
  /** Unique pool name, `zt` + 10 hex digits. */
  readonly pool: string;
  readonly exec: Executor;
  /** Mountpoint of the pool's root dataset; children mount below it. */
  readonly mountRoot: string;
  /** The temp dir holding the image and the mount root. */
  readonly dir: string;
  /** Idempotent: destroys the pool, removes the image and dir, stops the daemon if we started it. */
  destroy(): Promise<void>;
}

export interface TestPoolOptions {
  /** Image size; sparse, so only written blocks take disk space. Default 512 MiB. */
  readonly sizeMiB?: number;
  /** Pool name prefix (letters only), default `zt`. */
  readonly prefix?: string;
}

const SOCKET_DIR = "/var/run/zfs";
/**
 * Pool creation and destruction are serialised, in this process (a promise chain) and across
 * processes (`flock` on a file next to the daemon's socket). Why: on the shared, long-running
 * daemon, two concurrent `zpool create` were followed by a `zfs create` hung in stat(2) on a
 * FUSE mount that never answered, then by every FUSE request of that daemon hanging (all pools,
 * including other users'). A fresh daemon did not reproduce it in 9 rounds, so the cause is not
 * proven; serialising costs milliseconds. Also measured: `zpool destroy -f` right after a
 * `zfs create` in the pool answers "pool is busy" (the same settle quirk), hence the retries.
 */
const POOL_LOCK_FILE = `${SOCKET_DIR}/zcsi-test-pools.lock`;
const POOL_LOCK_WAIT_S = "300";
const local = new LocalExecutor();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await local.run(argv, { timeoutMs: 60_000 });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

// ---- the shared daemon -------------------------------------------------------------------

interface DaemonState {
  refs: number;
  /** Set when this process started the daemon: its pid and pidfile. */
  started?: StartedDaemon;
}
const daemon: DaemonState = { refs: 0 };
/** Serialises start/stop so two pools created concurrently do not both start a daemon. */
let daemonLock: Promise<unknown> = Promise.resolve();
function locked<T>(fn: () => Promise<T>): Promise<T> {
  const next = daemonLock.then(fn, fn);
  daemonLock = next.catch(() => undefined);
  return next;
}

function daemonRunning(): boolean {
  return zfsFuseDaemons(localZfsFuseHost).length > 0;
}

const waitForSocket = (timeoutMs: number): Promise<void> => waitForZfsFuse(localZfsFuseHost, timeoutMs);

async function startDaemon(): Promise<void> {
  // One we started and that died since: forget its pidfile dir before starting another.
  if (daemon.started) await rm(daemon.started.dir, { recursive: true, force: true });
  daemon.started = undefined;
  daemon.started = await startZfsFuse(localZfsFuseHost);
}

async function acquireDaemon(): Promise<void> {
  await locked(async () => {
    if (!daemonRunning()) await startDaemon();
    try {
      await waitForSocket(15_000);
    } catch (err) {
      // A daemon another process was stopping when we looked has gone since: start our own.
      if (daemonRunning()) throw err;
      await startDaemon();
      await waitForSocket(15_000);
    }
    daemon.refs++;
  });
}

/**
 * Holds the daemon for the whole of a test run (vitest globalSetup, test/harness/zfs-fuse-setup.ts):
 * every worker then finds it running and none starts or stops it, so no file waits on a daemon
 * the previous file is shutting down. Returns the release.
 */
export async function holdZfsFuseDaemon(): Promise<() => Promise<void>> {
  installExitHook();
  await locked(async () => {
    const report = await recoverZfsFuse(localZfsFuseHost);
    // A daemon recovery started, or one a dead run started: ours to stop at the end.
    if (report.daemon) daemon.started = report.daemon;
    if (report.failed.length > 0) console.warn(`zfs-fuse: stale pools left in place: ${report.failed.join("; ")}`);
    if (report.wedged || report.destroyed.length > 0 || report.unmounted.length > 0) {
      console.log(
        `zfs-fuse: recovered from an earlier run: ${report.wedged ? `killed wedged daemon ${report.killed.join(",")}, ` : ""}` +
          `destroyed stale pools [${report.destroyed.join(" ")}], detached ${report.unmounted.length} dead mounts`,
      );
    }
  });
  await acquireDaemon();
  return releaseDaemon;
}

/** How long the daemon may take to answer before a new pool counts it as wedged (then recovery probes twice more). */
const WEDGE_PROBE_MS = 15_000;

/**
 * A daemon that wedged during this run (every FUSE call hanging, after a file's burst of
 * commands) would hang every later file on it: each new pool first checks that the daemon
 * answers and, when it does not, recovery (zfs-fuse-daemon.ts) kills it and starts a fresh
 * one, which this process then owns and stops with its last pool.
 */
async function recoverIfWedged(): Promise<void> {
  await locked(async () => {
    if (!daemonRunning() || (await daemonAnswers(localZfsFuseHost, WEDGE_PROBE_MS))) return;
    const report = await recoverZfsFuse(localZfsFuseHost);
    if (!report.wedged) return;
    if (report.daemon) daemon.started = report.daemon;
    console.warn(`zfs-fuse: wedged during the run: killed ${report.killed.join(",")}, started ${report.daemon?.pid ?? "none"}, destroyed [${report.destroyed.join(" ")}]`);
  });
}

async function releaseDaemon(): Promise<void> {
  await locked(async () => {
    daemon.refs = Math.max(0, daemon.refs - 1);
    const started = daemon.started;
    if (daemon.refs > 0 || !started) return;
    // Someone else imported a pool on "our" daemon: leave it running for them.
    const pools = await run(["zpool", "list", "-H", "-o", "name"]);
    if (pools.code === 0 && pools.stdout.trim() !== "") return;
    daemon.started = undefined;
    if (pidAlive(started.pid)) {
      process.kill(started.pid, "SIGTERM");
      for (let i = 0; i < 200 && pidAlive(started.pid); i++) await sleep(50);
      if (pidAlive(started.pid)) process.kill(started.pid, "SIGKILL");
      // Gone before we return: the next acquire must not find a dying daemon and wait on it.
      for (let i = 0; i < 100 && pidAlive(started.pid); i++) await sleep(50);
    }
    await rm(started.dir, { recursive: true, force: true });
  });
}

// ---- pools -------------------------------------------------------------------------------

let poolLock: Promise<unknown> = Promise.resolve();
/** Runs a zpool command alone: one at a time in this process, and under flock across processes. */
function zpoolExclusive(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const next = poolLock.then(() => run(["flock", "-w", POOL_LOCK_WAIT_S, POOL_LOCK_FILE, "zpool", ...args]));
  poolLock = next.catch(() => undefined);
  return next;
}

/** Pools this process created and has not destroyed yet: the exit hook's last resort. */
const livePools = new Map<string, { dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // afterAll is the normal path; this catches a worker that exits without running it.
  process.once("exit", () => {
    for (const [pool, { dir }] of livePools) {
      spawnSync("zpool", ["destroy", "-f", pool], { stdio: "ignore", timeout: 20_000 });
      spawnSync("rm", ["-rf", "--", dir], { stdio: "ignore" });
    }
    if (daemon.started && pidAlive(daemon.started.pid)) {
      const pools = spawnSync("zpool", ["list", "-H", "-o", "name"], { encoding: "utf8" });
      if (pools.status === 0 && pools.stdout.trim() === "") process.kill(daemon.started.pid, "SIGTERM");
    }
  });
}

function mountsUnder(dir: string): string[] {
  // /proc/self/mountinfo field 5 is the mount point (octal escapes for spaces; our dirs have none).
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

async function destroyPool(pool: string, dir: string): Promise<void> {
  // `zpool destroy -f` unmounts every dataset; retry briefly when a mount is still settling.
  for (let attempt = 0; ; attempt++) {
    const r = await zpoolExclusive(["destroy", "-f", pool]);
    if (r.code === 0 || /no such pool/.test(r.stderr)) break;
    if (attempt >= 20) throw new Error(`zpool destroy -f ${pool}: ${r.stderr.trim()}`);
    await sleep(250);
  }
  for (const m of mountsUnder(dir).reverse()) await run(["umount", "-l", m]);
  await rm(dir, { recursive: true, force: true });
}

export async function createTestPool(opts: TestPoolOptions = {}): Promise<TestPool> {
  const prefix = opts.prefix ?? "zt";
  if (!/^[a-z]+$/.test(prefix)) throw new Error(`pool prefix must be lowercase letters, got ${prefix}`);
  const sizeMiB = opts.sizeMiB ?? 512;
  installExitHook();
  await recoverIfWedged();
  await acquireDaemon();
  const pool = `${prefix}${randomBytes(5).toString("hex")}`;
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), `zcsi-${pool}-`));
    // Names this process, so a later run can tell the pool was left by a killed run.
    writeOwner(dir);
    const image = join(dir, "pool.img");
    const mountRoot = join(dir, "mnt");
    const fh = await open(image, "w");
    await fh.truncate(sizeMiB * 1024 * 1024); // sparse, like `truncate -s`
    await fh.close();
    livePools.set(pool, { dir });
    const r = await zpoolExclusive(["create", "-m", mountRoot, pool, image]);
    if (r.code !== 0) throw new Error(`zpool create ${pool}: ${r.stderr.trim()}`);
    // The root dataset's FUSE mount appears a moment after `zpool create` returns.
    // Bounded generously: a loaded machine is slow, and the bound only turns a hang into an error.
    for (const until = Date.now() + 30_000; !mountsUnder(mountRoot).includes(mountRoot) && Date.now() < until; ) await sleep(50);
    if (!mountsUnder(mountRoot).includes(mountRoot)) throw new Error(`pool ${pool} did not mount at ${mountRoot}`);
    const poolDir = dir;
    let destroyed: Promise<void> | undefined;
    return {
      pool,
      exec: new LocalExecutor(),
      mountRoot,
      dir: poolDir,
      destroy: () => {
        destroyed ??= (async () => {
          try {
            await destroyPool(pool, poolDir);
            livePools.delete(pool);
          } finally {
            await releaseDaemon();
          }
        })();
        return destroyed;
      },
    };
  } catch (err) {
    if (dir !== undefined) {
      await destroyPool(pool, dir).catch(() => undefined);
      livePools.delete(pool);
    }
    await releaseDaemon();
    throw err;
  }
}
