/**
 * The harness's start-up recovery (test/harness/zfs-fuse-daemon.ts) against a real zfs-fuse:
 * a killed run's pools come back from zpool.cache after their images are gone, and a wedged
 * daemon answers nothing; the next run must clean both up and touch nothing else.
 *
 * Safe on a shared machine: the daemon under test runs in a mount namespace of its own, with
 * private /var/run/zfs, /var/lib/zfs (its zpool.cache) and /var/lock/zfs, so the machine's
 * daemon, its pools and its cache are never seen, let alone killed or destroyed.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readlinkSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, open, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OWNER_FILE, recoverZfsFuse, runOn, writeOwner, zfsFuseDaemons, zfsFuseMounts, type ZfsFuseHost } from "../harness/zfs-fuse-daemon.js";

let holder: ChildProcess;
let host: ZfsFuseHost;

/** A mount namespace with private zfs-fuse state dirs, kept alive by a sleeping process. */
async function privateNamespace(): Promise<ChildProcess> {
  const script =
    "for d in /var/run/zfs /var/lib/zfs /var/lock/zfs; do mkdir -p $d && mount -t tmpfs zcsi-test $d || exit 1; done; echo ready; exec sleep 3600";
  const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`namespace holder exited ${code}`)));
    child.stdout!.on("data", (b: Buffer) => {
      if (b.toString().includes("ready")) resolve();
    });
  });
  return child;
}

async function must(argv: string[]): Promise<string> {
  const r = await runOn(host, argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}
const poolNames = async (): Promise<string[]> => (await must(["zpool", "list", "-H", "-o", "name"])).split("\n").filter((p) => p !== "");

/** A pool laid out as the harness lays its own: `<tempRoot>/zcsi-<pool>-XXXXXX/pool.img`. */
async function harnessPool(owner: "this process" | number): Promise<{ pool: string; dir: string; image: string }> {
  const pool = `zr${randomBytes(5).toString("hex")}`;
  const dir = await mkdtemp(join(host.tempRoot, `zcsi-${pool}-`));
  if (owner === "this process") writeOwner(dir);
  else writeFileSync(join(dir, OWNER_FILE), `${owner}\n`);
  const image = join(dir, "pool.img");
  await makePool(pool, image, join(dir, "mnt"));
  return { pool, dir, image };
}

async function makePool(pool: string, image: string, mountRoot: string): Promise<void> {
  const fh = await open(image, "w");
  await fh.truncate(64 * 1024 * 1024);
  await fh.close();
  await must(["zpool", "create", "-m", mountRoot, pool, image]);
  await must(["zfs", "create", `${pool}/data`]);
}

/** A pid that is certainly dead: a child that has exited. */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

beforeAll(async () => {
  holder = await privateNamespace();
  host = {
    prefix: ["nsenter", `--mount=/proc/${holder.pid}/ns/mnt`, "--"],
    mountNamespace: readlinkSync(`/proc/${holder.pid}/ns/mnt`),
    tempRoot: await mkdtemp(join(tmpdir(), "zcsi-recovery-")),
  };
});

afterAll(async () => {
  if (!host) return;
  // Everything lives in the namespace: its daemon dies, the holder dies, the mounts go with it.
  for (const pid of zfsFuseDaemons(host)) process.kill(pid, "SIGKILL");
  holder.kill("SIGKILL");
  for (let i = 0; i < 100 && zfsFuseDaemons(host).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  await rm(host.tempRoot, { recursive: true, force: true });
});

describe("zfs-fuse recovery at harness start", () => {
  it("removes a killed run's pools, keeps every other pool, and leaves a usable daemon", async () => {
    const first = await recoverZfsFuse(host);
    expect(first.daemon).toBeDefined();
    expect(zfsFuseDaemons(host)).toEqual([first.daemon!.pid]);

    const stale = await harnessPool("this process"); // its image will be deleted
    const orphan = await harnessPool(deadPid()); // image kept, but the run that made it is dead
    const live = await harnessPool("this process"); // a concurrent run's pool: must survive
    // Not the harness's: an image elsewhere, deleted too. Never destroyed, whatever its state.
    const foreign = `zr${randomBytes(5).toString("hex")}`;
    const foreignDir = join(host.tempRoot, `other-${foreign}`);
    await mkdir(foreignDir);
    await makePool(foreign, join(foreignDir, "disk.img"), join(foreignDir, "mnt"));
    expect(await poolNames()).toEqual(expect.arrayContaining([stale.pool, orphan.pool, live.pool, foreign]));

    // The killed run: the daemon dies with the pools imported, then the images go.
    process.kill(first.daemon!.pid, "SIGKILL");
    await unlink(stale.image);
    await unlink(join(foreignDir, "disk.img"));

    const report = await recoverZfsFuse(host);
    expect(report.wedged).toBe(false);
    expect(report.daemon).toBeDefined();
    expect(report.destroyed.sort()).toEqual([stale.pool, orphan.pool].sort());
    expect(report.failed).toEqual([]);
    const pools = await poolNames();
    expect(pools).not.toContain(stale.pool);
    expect(pools).not.toContain(orphan.pool);
    expect(pools).toEqual(expect.arrayContaining([live.pool, foreign]));
    expect(existsSync(stale.dir)).toBe(false);
    expect(existsSync(orphan.dir)).toBe(false);
    expect(existsSync(live.image)).toBe(true);
    // No dead mount of the destroyed pools is left to shadow anything.
    const mounts = await zfsFuseMounts(host);
    expect(mounts.filter((m) => m.startsWith(stale.dir) || m.startsWith(orphan.dir))).toEqual([]);
    // The daemon is usable: a new dataset mounts in the surviving pool.
    await must(["zfs", "create", `${live.pool}/after`]);
    expect(await must(["zfs", "get", "-H", "-o", "value", "mounted", `${live.pool}/after`])).toBe("yes\n");
  });

  it("kills a wedged daemon, detaches its mounts and starts one that answers", async () => {
    const [wedged] = zfsFuseDaemons(host);
    expect(wedged).toBeDefined();
    const live = await harnessPool("this process");
    // A daemon that answers nothing: every zpool call and every FUSE request on it hangs.
    process.kill(wedged!, "SIGSTOP");
    expect((await runOn(host, ["zpool", "list"], 2_000)).timedOut).toBe(true);

    const report = await recoverZfsFuse(host, { probeTimeoutMs: 2_000 });
    expect(report.wedged).toBe(true);
    expect(report.killed).toEqual([wedged]);
    expect(report.unmounted).toEqual(expect.arrayContaining([join(live.dir, "mnt"), join(live.dir, "mnt/data")]));
    expect(zfsFuseDaemons(host)).toEqual([report.daemon!.pid]);
    expect(report.daemon!.pid).not.toBe(wedged);
    // The new daemon answers, and brought back the pool of the (live) run from its cache.
    expect(await poolNames()).toContain(live.pool);
    await must(["zfs", "create", `${live.pool}/after`]);
    expect(await must(["zfs", "get", "-H", "-o", "value", "mounted", `${live.pool}/after`])).toBe("yes\n");
  });
});
