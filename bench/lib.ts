import { status as grpcStatus } from "@grpc/grpc-js";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, writeFileSync, appendFileSync, existsSync, renameSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { SshExecutor } from "../src/exec/ssh.js";
import { packageRoot } from "../src/util/package.js";
import type { ControllerEnv, PoolHostEnv } from "../test/harness/controller.js";

/**
 * Benchmarks are not tests: they print medians and ratios against a baseline measured in the
 * same run, and say where a target is missed. Nothing here asserts on time.
 */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? NaN;
}

export const median = (samples: readonly number[]): number => percentile(samples, 50);

export async function timeMs(work: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export function machineInfo(zfsOverride?: string): string {
  const zfs = zfsOverride ?? (() => {
    try {
      execFileSync("zfs", ["version"], { stdio: "pipe" });
      return "OpenZFS";
    } catch {
      return existsSync("/usr/sbin/zfs-fuse") ? "zfs-fuse 0.7 (pool v23, FUSE)" : "unknown";
    }
  })();
  return `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ZFS: ${zfs}, SSH on loopback`;
}

export interface Row {
  readonly what: string;
  readonly median: number;
  readonly p95?: number;
  readonly unit: string;
  readonly ratio?: string;
  readonly note?: string;
}

/**
 * Prints a markdown table and appends it to this run's results file (resultsFile()).
 *
 * A verdict that judges a target names it ("(target ≥ 0.8×)" or "(target)") and ends its
 * judgement with `met`, `MISSED`, `held` or `EXCEEDED`, followed on a miss by the measured
 * reason: targets.ts collects exactly those lines into the run's summary and the README.
 */
export function report(title: string, rows: readonly Row[], verdicts: readonly string[], opts: { zfs?: string } = {}): void {
  const fmt = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? "" : n >= 100 ? n.toFixed(0) : n.toFixed(2));
  const lines = [
    `## ${title}`,
    "",
    `Machine: ${machineInfo(opts.zfs)}`,
    "",
    "| what | median | p95 | unit | ratio | note |",
    "|---|---:|---:|---|---:|---|",
    ...rows.map((r) => `| ${r.what} | ${fmt(r.median)} | ${fmt(r.p95)} | ${r.unit} | ${r.ratio ?? ""} | ${r.note ?? ""} |`),
    "",
    ...verdicts.map((v) => `- ${v}`),
    "",
  ];
  const text = lines.join("\n");
  console.log(text);
  appendFileSync(resultsFile(), text + "\n");
}

export function appendResults(text: string): void {
  appendFileSync(resultsFile(), text + "\n");
}

export const LATEST_RESULTS = join(packageRoot, "bench", "results", "latest.md");

/**
 * Where this run writes: BENCH_RESULTS_FILE when set; a subset run (BENCH_ONLY) writes
 * bench/results/subset-<names>.md (not kept in git); a complete run writes latest.md.tmp,
 * which finishResults() renames to latest.md once every benchmark has run, so latest.md is
 * always one complete run and never spliced from several.
 */
export function resultsFile(): string {
  const only = process.env.BENCH_ONLY;
  const file =
    process.env.BENCH_RESULTS_FILE ??
    (only !== undefined && only !== ""
      ? join(packageRoot, "bench", "results", `subset-${only.split(",").map((s) => s.trim()).join("-")}.md`)
      : `${LATEST_RESULTS}.tmp`);
  mkdirSync(dirname(file), { recursive: true });
  return file;
}

export function startResults(what: string): void {
  writeFileSync(resultsFile(), `# zcsi benchmark results\n\nRun ${new Date().toISOString()} by \`npm run bench\` (${what}); ${loadLine()} at the start.\n\n`);
}

/** The machine's load averages: ratios are paired, but a busy machine widens their spread. */
export function loadLine(): string {
  return `load average ${loadavg().map((l) => l.toFixed(2)).join(", ")} (1, 5, 15 min; ${cpus().length} cores)`;
}

/** A complete run's file becomes latest.md; other runs keep theirs. Returns the file kept. */
export function finishResults(): string {
  const file = resultsFile();
  if (file !== `${LATEST_RESULTS}.tmp`) return file;
  renameSync(file, LATEST_RESULTS);
  return LATEST_RESULTS;
}

export const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;

/**
 * The physical floor: a bare ssh2 connection to the pool host's sshd, no driver; commands
 * under sudo as the driver runs them (the OpenZFS VM's driver-facing user is root: no sudo).
 */
export function rawExecutor(host: PoolHostEnv): SshExecutor {
  return new SshExecutor({
    host: "raw",
    address: host.sshd.address,
    port: host.sshd.port,
    user: host.sshd.user,
    privateKey: host.sshd.privateKey,
    hostKeys: [host.sshd.hostKeyLine],
    sudo: host.sshd.user !== "root",
  });
}

/**
 * What went wrong in a batch of calls, grouped: `12× UNAVAILABLE: alice … not started …`, most
 * frequent first. A benchmark that counts failures prints this too, so a failure count
 * always comes with its reasons.
 */
export function failureSummary(results: readonly PromiseSettledResult<unknown>[]): string[] {
  const counts = new Map<string, number>();
  for (const r of results) {
    if (r.status !== "rejected") continue;
    const err = r.reason as { code?: unknown; details?: unknown; message?: unknown };
    const code = typeof err.code === "number" ? (grpcStatus[err.code] ?? `code ${err.code}`) : "error";
    const text = String(typeof err.details === "string" && err.details !== "" ? err.details : (err.message ?? err)).slice(0, 300);
    const key = `${code}: ${text}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${n}× ${key}`);
}

/** `ssh USER@HOST ARGV...` to pool host i of env, with its known host key (checked). */
function sshTo(env: ControllerEnv, i: number, argv: string[]) {
  const h = env.hosts[i]!.sshd;
  return spawn(
    "ssh",
    ["-i", h.privateKeyPath, "-o", `UserKnownHostsFile=${h.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", String(h.port), `${h.user}@${h.address}`, ...argv],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
}

/**
 * What rawPipe pays before any byte moves: two fresh ssh connections made side by side (`ssh
 * alice true` and `ssh bob true`). The engine relays over connections it already holds, so a
 * fair raw baseline subtracts this, measured in the same round.
 */
export async function rawHandshakes(env: ControllerEnv): Promise<number> {
  return timeMs(() =>
    Promise.all(
      [0, 1].map(
        (i) =>
          new Promise<void>((resolve, reject) => {
            const p = sshTo(env, i, ["true"]);
            p.stdin.end();
            p.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`ssh to host ${i}: exit ${code}`))));
          }),
      ),
    ),
  );
}

/** `ssh alice sudo zfs send ... | ssh bob sudo zfs recv ...`, relayed through this process's pipes. */
export async function rawPipe(env: ControllerEnv, sendArgv: string[], recvArgv: string[]): Promise<void> {
  const recv = sshTo(env, 1, ["sudo", "-n", ...recvArgv]);
  const send = sshTo(env, 0, ["sudo", "-n", ...sendArgv]);
  send.stdin.end();
  send.stdout.pipe(recv.stdin);
  let errors = "";
  send.stderr.on("data", (d: Buffer) => (errors += d.toString()));
  recv.stderr.on("data", (d: Buffer) => (errors += d.toString()));
  const exit = (p: ReturnType<typeof spawn>): Promise<number | null> => new Promise((resolve) => p.once("close", resolve));
  const [s, r] = await Promise.all([exit(send), exit(recv)]);
  if (s !== 0 || r !== 0) throw new Error(`raw send|recv failed (send ${s}, recv ${r}): ${errors.trim()}`);
}

/**
 * How the commands of a stretch of the controller's log (its exec lines: end time and
 * duration) ran. A round is the commands started side by side: a command joins the current
 * round when it started before any of that round's commands had ended; one that started only
 * after (it waited on an answer) opens the next round. `rounds` is then how many times the
 * work waited on a command before starting the next (a floor of round trips, whatever each
 * costs); `busyMs` the time some command ran.
 */
export function commandRounds(lines: readonly Record<string, unknown>[]): { commands: number; rounds: number; busyMs: number } {
  const spans = lines
    .filter((l) => l.op === "exec" && typeof l.time === "number" && typeof l.durationMs === "number")
    .map((l) => [(l.time as number) - (l.durationMs as number), l.time as number] as const)
    .sort((a, b) => a[0] - b[0]);
  let rounds = 0;
  let firstEnd = -Infinity;
  let busyMs = 0;
  let coveredTo = -Infinity;
  for (const [start, end] of spans) {
    // The log's clock is in whole milliseconds: a start within 1 ms of an end did wait on it.
    if (start >= firstEnd - 1) {
      rounds += 1;
      firstEnd = end;
    } else firstEnd = Math.min(firstEnd, end);
    busyMs += Math.max(0, end - Math.max(start, coveredTo));
    coveredTo = Math.max(coveredTo, end);
  }
  return { commands: spans.length, rounds, busyMs };
}
