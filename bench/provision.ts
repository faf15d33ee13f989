import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { commandName, type InstrumentedExecutor } from "../src/exec/instrumented.js";
import { VOLUME_PROPS } from "../src/volumes/volume.js";
import { zfsGet } from "../src/zfs/argv.js";
import { startControllerEnv } from "../test/harness/controller.js";
import { benchDeleteSnapshot } from "./delete-snapshot.js";
import { failureSummary, median, percentile, ratio, report, timeMs, rawExecutor } from "./lib.js";

/**
 * Issue 8, benchmarks 1 and 2: CreateVolume+DeleteVolume through gRPC → SSH → zfs, against
 * (a) the same `zfs create`/`zfs destroy` on an already-open ssh2 connection (the floor), and
 * (b) a fresh `ssh host zfs ...` per call (how a shell script does it); then 100 parallel
 * CreateVolumes against 100 sequential raw creates on one connection; and DeleteSnapshot against
 * the `zfs destroy` it wraps (delete-snapshot.ts).
 */
const run = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 50);
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };
/** What VolumeService reads before a create (with `available`) and before a destroy. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function benchProvision(): Promise<void> {
  const env = await startControllerEnv({ poolSizeMiB: 1024 });
  const host = env.hosts[0]!;
  const raw = rawExecutor(host);
  const freshSsh = (args: string[]) =>
    run("ssh", ["-i", host.sshd.privateKeyPath, "-o", `UserKnownHostsFile=${host.sshd.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", String(host.sshd.port), `${host.sshd.user}@${host.sshd.address}`, ...args]);
  const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
  /** `zfs destroy` with the same busy retry the driver does (zfs-fuse answers "busy" right after create). */
  const rawDestroys = { floor: 0, safe: 0, asDriver: 0 };
  const rawDestroy = async (ds: string, phase: keyof typeof rawDestroys, unmountBeforeRetry = false): Promise<void> => {
    for (let t = 0, delay = 50; ; t++, delay = Math.min(delay * 2, 1000)) {
      rawDestroys[phase]++;
      const d = await raw.run(["zfs", "destroy", ds]);
      if (d.exitCode === 0) return;
      if (t > 20 || !/busy/.test(d.stderr)) throw new Error(d.stderr);
      await sleep(delay);
      // What Zfs.destroy does before each retry (src/zfs/client.ts).
      if (unmountBeforeRetry) await raw.run(["zfs", "unmount", ds]);
    }
  };
  /** The four commands a driver that keeps its checks must run; `asDriver`: with the driver's unmount before a busy retry. */
  const safePair = async (ds: string, phase: "safe" | "asDriver"): Promise<void> => {
    let found = { exitCode: null as number | null };
    safeGets.push(await timeMs(async () => (found = await raw.run(zfsGet([host.parent, ds], [...VOLUME_PROPS, "available"])))));
    if (found.exitCode !== 1) throw new Error(`lookup of ${ds}: expected "does not exist", got exit ${found.exitCode}`);
    await rawCreate(ds);
    let mine = { exitCode: null as number | null, stderr: "" };
    safeGets.push(await timeMs(async () => (mine = await raw.run(zfsGet([ds], VOLUME_PROPS)))));
    if (mine.exitCode !== 0) throw new Error(mine.stderr);
    await rawDestroy(ds, phase, phase === "asDriver");
  };
  const safeGets: number[] = [];
  const rawCreate = async (ds: string): Promise<void> => {
    const c = await raw.run(["zfs", "create", "-o", `refquota=${8 << 20}`, ds]);
    if (c.exitCode !== 0) throw new Error(c.stderr);
  };
  try {
    await raw.run(["true"]);
    const driver: number[] = [];
    const floor: number[] = [];
    const safe: number[] = [];
    const asDriver: number[] = [];
    const logStart = (await env.logs()).length;
    const fresh: number[] = [];
    exec.reset();
    for (let i = 0; i < ITERATIONS; i++) {
      driver.push(
        await timeMs(async () => {
          const res = await env.client.createVolume({ name: `bench-${i}`, capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] });
          await env.client.deleteVolume({ volumeId: res.volume!.volumeId });
        }),
      );
      const ds = `${host.parent}/raw-${i}`;
      floor.push(
        await timeMs(async () => {
          await rawCreate(ds);
          await rawDestroy(ds, "floor");
        }),
      );
      // The least a driver that keeps the idempotency and ownership checks can do: the same
      // four commands the driver runs (lookup get, create, ownership get, destroy).
      safe.push(await timeMs(() => safePair(`${host.parent}/safe-${i}`, "safe")));
      asDriver.push(await timeMs(() => safePair(`${host.parent}/asdrv-${i}`, "asDriver")));
      if (i < Math.min(ITERATIONS, 20)) {
        const fds = `${host.parent}/fresh-${i}`;
        fresh.push(
          await timeMs(async () => {
            await freshSsh(["sudo", "-n", "zfs", "create", "-o", `refquota=${8 << 20}`, fds]);
            for (let t = 0; ; t++) {
              const ok = await freshSsh(["sudo", "-n", "zfs", "destroy", fds]).then(() => true, () => false);
              if (ok) break;
              if (t > 100) throw new Error("fresh destroy kept failing");
              await new Promise((r) => setTimeout(r, 50));
            }
          }),
        );
      }
    }
    const perPair = exec.count / ITERATIONS;
    const commands = [...exec.counts.entries()].map(([k, v]) => `${k}×${(v / ITERATIONS).toFixed(1)}`).join(", ");
    // Where the driver's time goes: the executor logs every command's duration.
    const inCommands = new Map<string, number>();
    for (const line of (await env.logs()).slice(logStart)) {
      if (line.op !== "exec" || !Array.isArray(line.argv) || typeof line.durationMs !== "number") continue;
      const name = commandName(line.argv as string[]);
      inCommands.set(name, (inCommands.get(name) ?? 0) + line.durationMs);
    }
    const commandMs = [...inCommands.values()].reduce((a, b) => a + b, 0) / ITERATIONS;
    const breakdown = [...inCommands.entries()].map(([k, v]) => `${k} ${(v / ITERATIONS).toFixed(1)}`).join(", ");
    const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const m = { driver: median(driver), floor: median(floor), safe: median(safe), asDriver: median(asDriver), fresh: median(fresh), get: median(safeGets) };
    const driverRetries = (exec.counts.get("zfs destroy") ?? 0) / ITERATIONS - 1;
    const backoffMs = 50 * driverRetries;
    const getShare = (2 * m.get) / m.floor;
    /**
     * Median of per-iteration ratios a[i]/b[i]: each iteration runs every variant back to back,
     * so load from other users of the machine falls on both sides of each ratio alike.
     */
    const pairedRatio = (a: readonly number[], b: readonly number[]): number => median(a.slice(0, b.length).map((x, i) => x / (b[i] ?? NaN)));
    const pr = { floor: pairedRatio(driver, floor), safe: pairedRatio(driver, safe), asDriver: pairedRatio(driver, asDriver), fresh: pairedRatio(driver, fresh) };
    const unmountCost = median(asDriver.map((x, i) => x - (safe[i] ?? NaN)));
    const x = (r: number): string => `${r.toFixed(2)}×`;
    report(
      "Provisioning overhead: CreateVolume + DeleteVolume",
      [
        { what: "zcsi CreateVolume+DeleteVolume (gRPC → SSH → zfs)", median: m.driver, p95: percentile(driver, 95), unit: "ms", ratio: "1.00×", note: `${perPair.toFixed(1)} commands per pair: ${commands}` },
        { what: "… of which inside zfs commands (mean, from the executor's log)", median: commandMs, unit: "ms", note: `per pair: ${breakdown}; the rest: ${backoffMs.toFixed(0)} ms busy backoff (50 ms × ${driverRetries.toFixed(1)} retries) and ${(mean(driver) - commandMs - backoffMs).toFixed(1)} ms gRPC, locks, parsing, logging (means)` },
        { what: "floor: zfs create + destroy on an open ssh2 connection", median: m.floor, p95: percentile(floor, 95), unit: "ms", ratio: x(1 / pr.floor), note: `${(rawDestroys.floor / ITERATIONS + 1).toFixed(1)} commands per pair (busy retries as the driver does them)` },
        { what: "safe floor: zfs get + create + get + destroy on an open ssh2 connection", median: m.safe, p95: percentile(safe, 95), unit: "ms", ratio: x(1 / pr.safe), note: `the driver's own checks without the driver; ${(rawDestroys.safe / ITERATIONS + 3).toFixed(1)} commands per pair` },
        { what: "as the driver: the same + `zfs unmount` before each busy retry", median: m.asDriver, p95: percentile(asDriver, 95), unit: "ms", ratio: x(1 / pr.asDriver), note: `the driver's exact command sequence; ${((rawDestroys.asDriver / ITERATIONS) * 2 + 2).toFixed(1)} commands per pair` },
        { what: "one `zfs get` of a volume's properties on an open connection", median: m.get, p95: percentile(safeGets, 95), unit: "ms", note: `${safeGets.length} samples` },
        { what: "fresh `ssh host sudo zfs ...` per call", median: m.fresh, p95: percentile(fresh, 95), unit: "ms", ratio: x(1 / pr.fresh), note: `${fresh.length} iterations` },
      ],
      [
        `ratios are medians of per-iteration ratios (every variant runs back to back in each iteration); ${ITERATIONS} iterations`,
        `driver / floor = ${x(pr.floor)} (target ≤ 1.1×): ${
          pr.floor <= 1.1
            ? "met"
            : `MISSED. Measured reason: the driver needs 4 zfs round trips per create+delete where the floor has 2 — a \`zfs get\` before the create (does the name exist already? is there room?: CreateVolume idempotency and the capacity promise) and one before the destroy (is this dataset zcsi's?: never destroy what we did not create). Each such get costs ${m.get.toFixed(1)} ms here, ${(getShare * 100).toFixed(0)}% of the floor, so no driver that keeps those checks can get below ${(1 + getShare).toFixed(2)}× the floor; ZFS's CLI has no conditional create/destroy that would fold them in. Against the same four commands on an open connection the driver is ${x(pr.safe)} (next line)`
        }`,
        `driver / safe floor = ${x(pr.safe)} (the ≤ 1.1× target applied to the commands the driver must run): ${pr.safe <= 1.1 ? "met" : "MISSED"}; driver / its exact command sequence = ${x(pr.asDriver)}: the executor's log puts ${(mean(driver) - commandMs - backoffMs).toFixed(1)} ms (mean) outside commands and backoff (gRPC, locks, parsing, logging); the rest is the same commands taking longer when the driver issues them, from the CPU the driver's own work takes on 2 shared cores; the \`zfs unmount\` before a busy retry costs ${unmountCost.toFixed(0)} ms per pair (median of as-driver − safe floor per iteration) on zfs-fuse, where a plain retry after 50 ms succeeds (${(rawDestroys.safe / ITERATIONS).toFixed(1)} destroys per pair without it)`,
        `driver / fresh ssh = ${x(pr.fresh)} (target ≤ 0.3×): ${pr.fresh <= 0.3 ? "met" : "MISSED"}`,
      ],
    );

    await benchDeleteSnapshot(env, raw);

    // Concurrency: 100 parallel creates vs 100 sequential raw creates on one connection, in
    // alternating rounds (one round is a few seconds: long enough for the machine's load to swing).
    const N = 100;
    const ROUNDS = 3;
    const seqs: number[] = [];
    const pars: number[] = [];
    let failures = 0;
    const failed: PromiseSettledResult<unknown>[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      seqs.push(
        await timeMs(async () => {
          for (let i = 0; i < N; i++) await rawCreate(`${host.parent}/seq-${round}-${i}`);
        }),
      );
      pars.push(
        await timeMs(async () => {
          const results = await Promise.allSettled(
            Array.from({ length: N }, (_, i) => env.client.createVolume({ name: `par-${round}-${i}`, capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] })),
          );
          failures += results.filter((r) => r.status === "rejected").length;
          failed.push(...results.filter((r) => r.status === "rejected"));
        }),
      );
    }
    const perRound = pars.map((p, i) => p / (seqs[i] ?? NaN));
    const parRatio = median(perRound);
    report(
      "Concurrency: 100 CreateVolume in parallel",
      [
        { what: "zcsi: 100 parallel CreateVolume (distinct names)", median: median(pars), unit: "ms total", ratio: "1.00×", note: `${ROUNDS} rounds: ${pars.map((p) => p.toFixed(0)).join(", ")} ms; ${failures} failed` },
        { what: "raw: 100 sequential zfs create on one connection", median: median(seqs), unit: "ms total", ratio: x(1 / parRatio), note: `${seqs.map((q) => q.toFixed(0)).join(", ")} ms` },
      ],
      [
        `parallel / sequential raw = ${x(parRatio)} (median of per-round ratios ${perRound.map((r) => r.toFixed(2)).join(", ")}; target ≤ 1.0×): ${parRatio <= 1 ? "met" : "MISSED"}; failed calls: ${failures === 0 ? "none" : failures}`,
        ...failureSummary(failed).map((line) => `failed: ${line}`),
      ],
    );
  } finally {
    await raw.close();
    await env.stop();
  }
}
