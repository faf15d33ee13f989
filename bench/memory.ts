import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CsiClient } from "../test/harness/csi-client.js";
import { packageRoot } from "../src/util/package.js";
import type { PoolHostEnv } from "../test/harness/controller.js";
import { RWX, startNodeEnv } from "../test/harness/node-env.js";
import { failureSummary, report, type Row } from "./lib.js";

/**
 * Issue 8, benchmark 6: peak RSS (VmHWM) of a real `zcsi controller` process serving a pool
 * host with 1000 volumes, and of a real `zcsi node` process with 50 published SSHFS volumes.
 * The controller (and the sidecars, sidecar-memory.ts) run as the image runs them (Dockerfile:
 * `node dist/src/cli.js`, compiled by `tsc -p tsconfig.json`, NODE_ENV=production);
 * BENCH_MEMORY_RUNTIME=tsx runs them as `node --import tsx src/cli.ts …` instead (tsx,compiled: both), as the test
 * harness does, which adds tsx's loader (~32 MiB) to every figure. The node plugin runs through
 * the harness, so with tsx. The floor row (node alone, or node and tsx) and the idle baseline
 * are reported next to each peak so the difference is what the volumes cost.
 */
/** Issue 17's bound on a role's peak RSS, for 10,000 volumes (issue 8 flagged ~150 MB at 1000). */
const TARGET_MIB = 200;
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

/** VmHWM and VmRSS of a process, in MiB. */
export function memoryOf(pid: number): { peak: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { peak: kib("VmHWM") / 1024, rss: kib("VmRSS") / 1024 };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await gone;
  clearTimeout(timer);
}

/** Peak RSS of `node --import tsx` that loads nothing: the floor under both processes. */
export function bareTsxPeak(): Promise<number> {
  return barePeak(["--import", "tsx"]);
}

/** Peak RSS of `node <flags>` that loads nothing. */
async function barePeak(flags: readonly string[]): Promise<number> {
  const probe = "const s = require('node:fs').readFileSync('/proc/self/status', 'utf8'); console.log(/^VmHWM:\\s+(\\d+)/m.exec(s)[1]);";
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, "--eval", probe], { cwd: packageRoot, stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    child.stdout?.on("data", (c: Buffer) => (text += c.toString()));
    child.once("error", reject);
    child.once("exit", () => resolve(text));
  });
  return Number(out.trim()) / 1024;
}

export type Runtime = "compiled" | "tsx";
/**
 * How the benchmark starts a role: as the image does (compiled JS, the default) or through tsx;
 * BENCH_MEMORY_RUNTIME=tsx,compiled measures both, one after the other.
 */
export const RUNTIMES: readonly Runtime[] = (process.env.BENCH_MEMORY_RUNTIME ?? "compiled").split(",").map((r) => (r.trim() === "tsx" ? "tsx" : "compiled"));

let built: Promise<void> | undefined;

/** `zcsi <role> <args…>` as `runtime` says: argv for `process.execPath`, and the environment. Compiles once per run for "compiled". */
export async function roleCommand(runtime: Runtime, role: string, args: readonly string[]): Promise<{ argv: string[]; env: NodeJS.ProcessEnv }> {
  if (runtime === "tsx") return { argv: ["--import", "tsx", join(packageRoot, "src", "cli.ts"), role, ...args], env: process.env };
  // The Dockerfile's build step; always, so that a stale dist/ is never measured.
  built ??= new Promise<void>((resolve, reject) => {
    const tsc = spawn(process.execPath, [join(packageRoot, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: packageRoot, stdio: ["ignore", "inherit", "inherit"] });
    tsc.once("error", reject);
    tsc.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`tsc -p tsconfig.json exited ${code}`))));
  });
  await built;
  return { argv: [join(packageRoot, "dist", "src", "cli.js"), role, ...args], env: { ...process.env, NODE_ENV: "production" } };
}

/** The floor row under every role's figures: what node (and tsx, when the runtime is tsx) take loading nothing. */
export async function floorRow(runtime: Runtime): Promise<Row> {
  if (runtime === "tsx") return { what: "floor: `node --import tsx` loading nothing", median: await bareTsxPeak(), unit: "MiB peak RSS", note: "what node and the tsx loader take before any zcsi code" };
  return { what: "floor: `node` loading nothing", median: await barePeak([]), unit: "MiB peak RSS", note: "what node takes before any zcsi code; the roles run as the image runs them, `node dist/src/cli.js` (BENCH_MEMORY_RUNTIME=tsx: through tsx, ~32 MiB more)" };
}

const mb = (n: number): string => `${n.toFixed(0)} MiB`;
const flag = (peak: number): string => `(target < ${TARGET_MIB} MiB): ${peak < TARGET_MIB ? "met" : "MISSED"}`;

/** A zcsi config file in `dir` for the one pool host `host`; returns its path. */
export async function writeHostConfig(dir: string, host: PoolHostEnv): Promise<string> {
  const configPath = join(dir, "config.json");
  const poolHost = { name: host.name, address: host.sshd.address, port: host.sshd.port, user: host.sshd.user, parentDataset: host.parent, mountRoot: host.mountRoot, hostKey: host.sshd.hostKeyLine, sudo: true };
  await writeFile(configPath, JSON.stringify({ privateKeyFile: host.sshd.privateKeyPath, poolHosts: [poolHost] }));
  return configPath;
}

/**
 * A `zcsi controller` process for `host`, whose parent already holds `volumes` volumes: peak RSS
 * idle, after ListVolumes over all of them (paged by 100, and unpaged), after 100 parallel
 * CreateVolumes, and after DeleteVolume of those. Called by the scaling benchmark, which has
 * made the 1000 volumes already.
 */
export async function controllerMemory(host: PoolHostEnv, volumes: number, runtime: Runtime = "compiled"): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "zcsi-bench-mem-"));
  let child: ChildProcess | undefined;
  let client: CsiClient | undefined;
  try {
    const configPath = await writeHostConfig(dir, host);
    const socket = join(dir, "csi.sock");
    const command = await roleCommand(runtime, "controller", ["--endpoint", `unix://${socket}`, "--config", configPath, "--log-level", "info"]);
    const log = await open(join(dir, "controller.log"), "w");
    child = spawn(process.execPath, command.argv, { cwd: packageRoot, env: command.env, stdio: ["ignore", log.fd, log.fd] });
    await log.close();
    const pid = child.pid!;
    client = new CsiClient(`unix://${socket}`);
    const c = client;
    await waitFor("the controller to serve", async () => existsSync(socket) && (await c.probe({})).ready?.value === true);
    const rows: Row[] = [];
    const at = (what: string): void => {
      const m = memoryOf(pid);
      rows.push({ what, median: m.peak, unit: "MiB peak RSS", note: `RSS now ${mb(m.rss)}` });
    };
    rows.push(await floorRow(runtime));
    at(`controller, started (idle; includes node${runtime === "tsx" ? " and tsx" : ", compiled JS as in the image"})`);
    let token = "";
    do {
      const res = await c.listVolumes({ maxEntries: 100, startingToken: token });
      token = res.nextToken;
    } while (token !== "");
    at(`controller, after a full ListVolumes walk over ${volumes} volumes (pages of 100)`);
    const all = await c.listVolumes({ maxEntries: 0, startingToken: "" });
    if (all.entries.length !== volumes) throw new Error(`unpaged ListVolumes returned ${all.entries.length}, expected ${volumes}`);
    at(`controller, after one unpaged ListVolumes (${volumes} entries in one reply)`);
    const settled = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => c.createVolume({ name: `mem-${i}`, capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] })));
    const created = settled.flatMap((r) => (r.status === "fulfilled" && r.value.volume ? [r.value.volume.volumeId] : []));
    const createFailures = failureSummary(settled);
    for (const line of createFailures) console.error(`memory: CreateVolume failed: ${line}`);
    at(`controller, after 100 parallel CreateVolume (${100 - created.length} failed${createFailures.length > 0 ? `: ${createFailures.slice(0, 3).join("; ")}` : ""})`);
    await Promise.allSettled(created.map((volumeId) => c.deleteVolume({ volumeId })));
    at("controller, after 100 parallel DeleteVolume");
    const peak = Math.max(...rows.slice(1).map((r) => r.median));
    report(`Memory: controller process${runtime === "tsx" ? " (through tsx)" : ""}`, rows, [
      `peak RSS of the controller with ${volumes} volumes: ${mb(peak)}, ${(peak - rows[1]!.median).toFixed(0)} MiB above idle, ${(peak - rows[0]!.median).toFixed(0)} MiB above bare ${runtime === "tsx" ? "node+tsx" : "node"}: ${flag(peak)}; under 200 MiB (issue 17 target): ${peak < 200 ? "met" : "MISSED"}`,
    ]);
  } finally {
    client?.close();
    if (child) await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  }
}

/** sshfs processes whose mount point lies below `dir`: their total RSS in MiB and how many. */
function sshfsBelow(dir: string): { count: number; rss: number } {
  let count = 0;
  let rss = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (!(argv[0] ?? "").endsWith("sshfs") || !argv.some((a) => a.startsWith(`${dir}/`))) continue;
      count++;
      rss += memoryOf(Number(entry)).rss;
    } catch {
      // exited meanwhile
    }
  }
  return { count, rss };
}

/** A remote `zcsi node` process staging and publishing `count` volumes over SSHFS. */
export async function benchMemory(): Promise<void> {
  const COUNT = Number(process.env.BENCH_NODE_VOLUMES ?? 50);
  const env = await startNodeEnv({ poolSizeMiB: 1024 });
  try {
    const bob = await env.startRemoteNode("bob");
    const rows: Row[] = [];
    const at = (what: string, note = ""): void => {
      const m = memoryOf(bob.pid);
      rows.push({ what, median: m.peak, unit: "MiB peak RSS", note: `RSS now ${mb(m.rss)}${note}` });
    };
    rows.push(await floorRow("tsx"));
    at("node plugin, started (idle; includes node and tsx)");
    const published: { volumeId: string; staging: string; target: string }[] = [];
    const t0 = Date.now();
    for (let i = 0; i < COUNT; i++) {
      const volume = await env.createVolume(`mem-${i}`, 16 << 20);
      const staging = await bob.stagingPath(`mem-${i}`);
      await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext: volume.volumeContext });
      const target = await bob.targetPath(`pod-${i}`);
      await bob.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, targetPath: target, volumeCapability: RWX, readonly: false });
      published.push({ volumeId: volume.volumeId, staging, target });
    }
    const seconds = (Date.now() - t0) / 1000;
    const sshfs = sshfsBelow(env.dir);
    at(`node plugin, ${COUNT} volumes staged (SSHFS) and published`, `; ${sshfs.count} sshfs processes hold ${mb(sshfs.rss)} RSS together (${(sshfs.rss / Math.max(1, sshfs.count)).toFixed(1)} MiB each), not counted above`);
    for (let round = 0; round < 3; round++) await Promise.all(published.map((p) => bob.client.nodeGetVolumeStats({ volumeId: p.volumeId, volumePath: p.target, stagingTargetPath: p.staging })));
    at(`node plugin, after 3 rounds of NodeGetVolumeStats on all ${COUNT}`);
    for (const p of published) {
      await bob.client.nodeUnpublishVolume({ volumeId: p.volumeId, targetPath: p.target });
      await bob.client.nodeUnstageVolume({ volumeId: p.volumeId, stagingTargetPath: p.staging });
    }
    at(`node plugin, after unpublishing and unstaging all ${COUNT}`);
    const peak = Math.max(...rows.slice(1).map((r) => r.median));
    report("Memory: node plugin process", rows, [
      `peak RSS of the node plugin with ${COUNT} published SSHFS volumes: ${mb(peak)}, ${(peak - rows[1]!.median).toFixed(0)} MiB above idle, ${(peak - rows[0]!.median).toFixed(0)} MiB above bare node+tsx: ${flag(peak)}; each SSHFS volume also costs one sshfs process (${(sshfs.rss / Math.max(1, sshfs.count)).toFixed(1)} MiB RSS)`,
      `staging and publishing ${COUNT} volumes (CreateVolume, NodeStageVolume over SSHFS, NodePublishVolume, one after another) took ${seconds.toFixed(1)} s`,
    ]);
  } finally {
    await env.stop();
  }
}
