/**
 * The zfs-fuse daemon as the harness sees it: find it, start it, probe it, and recover from what
 * a killed earlier run left behind.
 *
 * Why recovery: zfs-fuse keeps /var/lib/zfs/zpool.cache, so a daemon killed with test pools
 * imported re-imports them on its next start even when their image files are gone (they come
 * back FAULTED, with FUSE mounts that never answer); the harness then never stops that daemon
 * ("other pools are imported"). And a daemon that wedged (every FUSE call hanging, processes in
 * D state) blocks every later run. So each run starts with recoverZfsFuse().
 *
 * Safety on a shared machine: a pool is destroyed only when its every vdev is the harness's own
 * image, `<tmpdir>/zcsi-<that pool's name>-XXXXXX/pool.img`, and that image is gone or the
 * process that made it is dead (its pid is in `owner` next to the image). Nothing else is ever
 * destroyed, whatever its state. A daemon is found by its mount namespace, so a test that runs
 * a daemon in a namespace of its own (test/integration/zfs-fuse-recovery.test.ts) and the
 * machine's daemon never see each other.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { isZcsiError } from "../../src/errors.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { pidAlive } from "./process.js";

/** Where a zfs-fuse daemon lives: commands run with `prefix` (e.g. nsenter) see its socket and mounts. */
export interface ZfsFuseHost {
  /** Prepended to every command (empty: this process's own mount namespace). */
  readonly prefix: readonly string[];
  /** The mount namespace the daemon serves, as readlink(/proc/<pid>/ns/mnt) names it. */
  readonly mountNamespace: string;
  /** Directory of the harness's pool dirs and daemon pidfile dirs. */
  readonly tempRoot: string;
}

export const localZfsFuseHost: ZfsFuseHost = {
  prefix: [],
  mountNamespace: readlinkSync("/proc/self/ns/mnt"),
  tempRoot: tmpdir(),
};

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The command did not finish within its time and was killed. */
  timedOut: boolean;
}

const local = new LocalExecutor();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runOn(host: ZfsFuseHost, argv: readonly string[], timeoutMs = 60_000): Promise<CmdResult> {
  try {
    const r = await local.run([...host.prefix, ...argv], { timeoutMs });
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr, timedOut: false };
  } catch (err) {
    if (isZcsiError(err, "DeadlineExceeded")) {
      return { code: null, stdout: "", stderr: String(err), timedOut: true };
    }
    throw err;
  }
}

/** The file that names the process that made a pool dir or started a daemon. */
export const OWNER_FILE = "owner";
export function writeOwner(dir: string): void {
  writeFileSync(join(dir, OWNER_FILE), `${process.pid}\n`);
}

/** The owner recorded in `dir` is dead (false when none is recorded: we cannot tell). */
function ownerDead(dir: string): boolean {
  try {
    const pid = Number.parseInt(readFileSync(join(dir, OWNER_FILE), "utf8").trim(), 10);
    return Number.isInteger(pid) && pid > 0 && !pidAlive(pid);
  } catch {
    return false;
  }
}

function procState(pid: number): string | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces, so read after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/**
 * Where a process is in its life. A SIGKILLed zfs-fuse does not vanish at once: until its
 * threads have run their exit it still shows S/R/D with SIGKILL pending, and then its leader
 * shows Z while other threads still hold its files (the zfs_lock a new daemon needs, the
 * listening socket, /dev/fuse). Only a zombie with no thread left (or no /proc entry) is gone.
 */
function procLife(pid: number): "live" | "dying" | "gone" {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return "gone";
  }
  const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(status)?.[1] ?? "";
  const state = procState(pid) ?? field("State");
  if (state === "Z" || state === "X") return Number(field("Threads")) > 1 ? "dying" : "gone";
  // SigPnd/ShdPnd: hex masks of pending signals, bit (signo - 1); SIGKILL is 9.
  const killPending = ["SigPnd", "ShdPnd"].some((f) => (BigInt(`0x${field(f) || "0"}`) & (1n << 8n)) !== 0n);
  return killPending ? "dying" : "live";
}

function pgrepZfsFuse(host: ZfsFuseHost): number[] {
  const r = spawnSync("pgrep", ["-x", "zfs-fuse"], { encoding: "utf8" });
  return (r.stdout ?? "")
    .split("\n")
    .filter((l) => /^\d+$/.test(l))
    .map(Number)
    .filter((pid) => mountNamespaceOf(pid) === host.mountNamespace);
}

/**
 * The mount namespace of a process, read from any of its threads. A killed daemon's leader
 * thread can finish first: its own ns link is gone (a zombie's reads ENOENT) while its other
 * threads still hold the files, zfs_lock among them. The kernel drops a thread's files before
 * its namespaces, so a process none of whose threads shows a namespace holds no file either.
 */
function mountNamespaceOf(pid: number): string | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  for (const tid of [String(pid), ...tasks.filter((t) => t !== String(pid))]) {
    try {
      return readlinkSync(`/proc/${pid}/task/${tid}/ns/mnt`);
    } catch {
      // this thread has exited its namespaces; another may not have
    }
  }
  return undefined;
}

/** zfs-fuse processes that serve `host`'s mount namespace: alive, not zombies, not dying of a SIGKILL. */
export function zfsFuseDaemons(host: ZfsFuseHost): number[] {
  return pgrepZfsFuse(host).filter((pid) => procLife(pid) === "live");
}

/**
 * Waits (bounded) until no zfs-fuse of `host` is dying: a daemon started while a killed one
 * still holds zfs_lock exits 1, and a dying one must not be mistaken for a running one.
 */
async function awaitDyingDaemons(host: ZfsFuseHost): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const dying = pgrepZfsFuse(host).filter((pid) => procLife(pid) === "dying");
    if (dying.length === 0) return;
    if (i === 199) throw new Error(`zfs-fuse ${dying.join(",")} still exiting after SIGKILL`);
    await sleep(50);
  }
}

export interface StartedDaemon {
  pid: number;
  pidfile: string;
  /** The temp dir holding the pidfile and the owner file. */
  dir: string;
}

/** Starts a daemon for `host` and waits until its socket answers. */
export async function startZfsFuse(host: ZfsFuseHost): Promise<StartedDaemon> {
  await runOn(host, ["mkdir", "-p", "/var/run/zfs"]);
  const dir = await mkdtemp(join(host.tempRoot, "zcsi-zfsfuse-"));
  writeOwner(dir);
  const pidfile = join(dir, "zfs-fuse.pid");
  // zfs-fuse daemonises itself; the pidfile names the daemon, not the parent we spawned.
  const [command, ...args] = [...host.prefix, "zfs-fuse", "--no-kstat-mount", "-p", pidfile];
  const child = spawn(command!, args, { stdio: "ignore" });
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", resolve);
  });
  if (exitCode !== 0) throw new Error(`zfs-fuse exited ${exitCode} at start`);
  let pid = NaN;
  for (let i = 0; i < 100 && !Number.isInteger(pid); i++) {
    if (existsSync(pidfile)) pid = Number.parseInt(readFileSync(pidfile, "utf8").trim(), 10);
    if (!Number.isInteger(pid)) await sleep(100);
  }
  if (!Number.isInteger(pid)) throw new Error("zfs-fuse started but wrote no pidfile");
  const started = { pid, pidfile, dir };
  await waitForSocket(host, 15_000);
  return started;
}

/** zfs-fuse takes a moment after start before its socket answers: poll `zpool list` (bounded). */
export async function waitForSocket(host: ZfsFuseHost, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const r = await runOn(host, ["zpool", "list", "-H", "-o", "name"], timeoutMs);
    if (r.code === 0) return;
    last = r.stderr.trim();
    await sleep(100);
  }
  throw new Error(`zfs-fuse did not answer within ${timeoutMs} ms: ${last}`);
}

/** fuse.zfs mount points in `host`'s namespace (mountinfo field 5; field after " - " is the type). */
export async function zfsFuseMounts(host: ZfsFuseHost): Promise<string[]> {
  const r = await runOn(host, ["cat", "/proc/self/mountinfo"]);
  return r.stdout
    .split("\n")
    .filter((l) => l.split(" - ")[1]?.startsWith("fuse.zfs "))
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m !== "");
}

async function lazyUnmount(host: ZfsFuseHost, mounts: readonly string[]): Promise<string[]> {
  // Deepest first; -l detaches even a mount whose daemon is dead or hung.
  const sorted = [...mounts].sort((a, b) => b.length - a.length);
  for (const m of sorted) await runOn(host, ["umount", "-l", m], 20_000);
  return sorted;
}

/** The harness's own image for `pool`: `<tempRoot>/zcsi-<pool>-XXXXXX/pool.img`. */
function harnessImageDir(host: ZfsFuseHost, pool: string, vdev: string): string | undefined {
  const dir = dirname(vdev);
  if (dirname(dir) !== host.tempRoot || basename(vdev) !== "pool.img") return undefined;
  return new RegExp(`^zcsi-${pool}-[A-Za-z0-9]{6}$`).test(basename(dir)) ? dir : undefined;
}

/** The file vdevs of a pool, from `zpool status` (zfs-fuse has no `-P`; file vdevs show as paths). */
async function vdevPaths(host: ZfsFuseHost, pool: string, timeoutMs: number): Promise<string[] | undefined> {
  const r = await runOn(host, ["zpool", "status", pool], timeoutMs);
  if (r.code !== 0) return undefined;
  const config = r.stdout.split(/^config:$/m)[1] ?? "";
  return config
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((name) => name.startsWith("/"));
}

/**
 * The daemon answers both of its doors within `timeoutMs`: its socket (`zpool list`) and its
 * FUSE mounts (statfs of the shallowest one). A wedged zfs-fuse may still answer the first
 * while every FUSE call hangs (processes in D state), so `zpool list` alone cannot tell.
 */
export async function daemonAnswers(host: ZfsFuseHost, timeoutMs: number): Promise<boolean> {
  const probe = await runOn(host, ["zpool", "list", "-H", "-o", "name"], timeoutMs);
  // "connect: Connection refused": no daemon behind the socket, which is no answer either.
  if (probe.timedOut || /^connect: /m.test(probe.stderr)) return false;
  const [mount] = (await zfsFuseMounts(host)).sort((a, b) => a.length - b.length);
  // A dead mount (ENOTCONN) fails at once: that is an answer, and recovery detaches it later.
  return mount === undefined || !(await runOn(host, ["stat", "-f", "-c", "%b", mount], timeoutMs)).timedOut;
}

export interface RecoveryReport {
  /** The daemon did not answer the probe and was killed. */
  wedged: boolean;
  /** Daemon pids killed. */
  killed: number[];
  /** Dead FUSE mounts detached. */
  unmounted: string[];
  /** Stale harness pools destroyed. */
  destroyed: string[];
  /** Stale harness pools that would not be destroyed, with zpool's reason. */
  failed: string[];
  /** The daemon now running, when recovery started it or it was started by a harness run that is dead (adopt it). */
  daemon?: StartedDaemon;
}

export interface RecoveryOptions {
  /** How long `zpool list` may take before the daemon counts as wedged (tried twice). Default 15 s. */
  readonly probeTimeoutMs?: number;
}

/** The pidfile dir of a daemon's command line, when a harness started it (`-p <tempRoot>/zcsi-zfsfuse-*\/zfs-fuse.pid`). */
function harnessDaemon(host: ZfsFuseHost, pid: number): StartedDaemon | undefined {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const pidfile = argv[argv.indexOf("-p") + 1] ?? "";
    const dir = dirname(pidfile);
    if (argv.indexOf("-p") < 0 || dirname(dir) !== host.tempRoot || !/^zcsi-zfsfuse-/.test(basename(dir))) return undefined;
    return { pid, pidfile, dir };
  } catch {
    return undefined;
  }
}

/**
 * Leaves `host` with a daemon that answers and none of the harness's stale pools imported.
 * A daemon that does not answer `zpool list` within the probe time (twice) is killed, its FUSE
 * mounts detached and a new one started; the zpool.cache is then cleared of stale entries by
 * destroying those pools (destroy drops a pool from the cache).
 */
export async function recoverZfsFuse(host: ZfsFuseHost, options: RecoveryOptions = {}): Promise<RecoveryReport> {
  const probeTimeoutMs = options.probeTimeoutMs ?? 15_000;
  const report: RecoveryReport = { wedged: false, killed: [], unmounted: [], destroyed: [], failed: [] };
  // A daemon killed moments ago (a killed run, or a test) is still exiting: it is no daemon,
  // and none can start before it has gone.
  await awaitDyingDaemons(host);
  let pids = zfsFuseDaemons(host);
  if (pids.length > 0) {
    let answered = false;
    for (let attempt = 0; attempt < 2 && !answered; attempt++) answered = await daemonAnswers(host, probeTimeoutMs);
    if (!answered) {
      report.wedged = true;
      for (const pid of pids) process.kill(pid, "SIGKILL");
      report.killed = pids;
      for (let i = 0; i < 100 && zfsFuseDaemons(host).length > 0; i++) await sleep(100);
      if (zfsFuseDaemons(host).length > 0) throw new Error(`zfs-fuse ${pids.join(",")} survived SIGKILL`);
      await awaitDyingDaemons(host);
      pids = [];
    }
  }
  if (pids.length === 0) {
    // No daemon: every fuse.zfs mount left is dead (ENOTCONN) and would shadow the next mount.
    report.unmounted = await lazyUnmount(host, await zfsFuseMounts(host));
    // The new daemon re-imports what zpool.cache lists, stale pools included; cleaned below.
    report.daemon = await startZfsFuse(host);
  } else if (pids.length === 1) {
    const started = harnessDaemon(host, pids[0]!);
    if (started && ownerDead(started.dir)) report.daemon = started;
  }
  const pools = await runOn(host, ["zpool", "list", "-H", "-o", "name"], probeTimeoutMs);
  if (pools.code !== 0) throw new Error(`zfs-fuse does not answer after recovery: ${pools.stderr.trim()}`);
  for (const pool of pools.stdout.split("\n").filter((p) => p !== "")) {
    const vdevs = await vdevPaths(host, pool, probeTimeoutMs);
    if (vdevs === undefined || vdevs.length === 0) continue;
    const dirs = vdevs.map((v) => harnessImageDir(host, pool, v));
    const dir = dirs[0];
    if (dir === undefined || dirs.some((d) => d !== dir)) continue;
    const stale = vdevs.some((v) => !existsSync(v)) || ownerDead(dir);
    if (!stale) continue;
    // "pool is busy" right after a restart's re-import settles within moments: retry briefly.
    // A pool that still will not go is reported and left: it costs memory, not the run.
    let r = await runOn(host, ["zpool", "destroy", "-f", pool], 60_000);
    for (let attempt = 0; attempt < 10 && r.code !== 0 && /busy/.test(r.stderr); attempt++) {
      await sleep(500);
      r = await runOn(host, ["zpool", "destroy", "-f", pool], 60_000);
    }
    if (r.code !== 0) {
      report.failed.push(`${pool}: ${r.stderr.trim() || (r.timedOut ? "timed out" : `exit ${r.code}`)}`);
      continue;
    }
    report.destroyed.push(pool);
    const under = (await zfsFuseMounts(host)).filter((m) => m === dir || m.startsWith(`${dir}/`));
    report.unmounted.push(...(await lazyUnmount(host, under)));
    await rm(dir, { recursive: true, force: true });
  }
  return report;
}
