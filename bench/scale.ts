import { pino } from "pino";
import { LISTING_TTL_MS } from "../src/csi/listing-cache.js";
import { HEALTH_REUSE_MS } from "../src/volumes/hosts.js";
import type { InstrumentedExecutor } from "../src/exec/instrumented.js";
import { createReplicationEngine } from "../src/replication/engine.js";
import { VOLUME_DISCOVERY_PROPS } from "../src/replication/jobs.js";
import { Replicator } from "../src/replication/scheduler.js";
import { SnapshotScheduler } from "../src/snapshots/scheduler.js";
import { PROP } from "../src/volumes/properties.js";
import { SNAPSHOT_PROPS } from "../src/volumes/snapshots.js";
import { VOLUME_PROPS } from "../src/volumes/volume.js";
import { zfsGet } from "../src/zfs/argv.js";
import { startControllerEnv, type PoolHostEnv } from "../test/harness/controller.js";
import { median, report, timeMs, type Row, rawExecutor } from "./lib.js";
import { controllerMemory, RUNTIMES } from "./memory.js";
import { sidecarMemory } from "./sidecar-memory.js";

/**
 * Issues 8 (benchmark 3) and 17 (item 5): how the controller's listing calls and the sidecars'
 * ticks scale with the number of volumes on a pool host, up to 10,000. At each size: ListVolumes
 * and ListSnapshots walked over every page through real gRPC, GetCapacity, snapshot-scheduler
 * and replicator ticks, each with the zfs invocations the instrumented executor counted, and
 * paired with the raw command it wraps on an already-open ssh2 connection. Volumes are made
 * with raw `zfs create` on the pool host itself, a few long-running commands each creating
 * hundreds (createVolumes), carrying the properties discovery reads (10,000 CreateVolume calls
 * would take long on zfs-fuse and measure benchmark 1 again).
 */
const ASKED_SIZES = (process.env.BENCH_SCALE_SIZES ?? "10,100,1000").split(",").map(Number);
/**
 * "Invocations stay constant whatever the volume count" needs two counts to compare: a run of
 * large sizes alone (BENCH_SCALE_SIZES=10000) measures REFERENCE_SIZE first (seconds).
 */
const REFERENCE_SIZE = 10;
const SIZES = [...new Set([...(Math.min(...ASKED_SIZES) > REFERENCE_SIZE ? [REFERENCE_SIZE] : []), ...ASKED_SIZES])].sort((a, b) => a - b);
const PAGE = Number(process.env.BENCH_SCALE_PAGE ?? 100);
/**
 * BENCH_SCALE_MEMORY_ONLY=1: make the volumes as usual and measure only the processes' memory
 * (memory.ts, sidecar-memory.ts), none of the timings: at 10,000 volumes the timings take ~15
 * minutes of the ~25, the setup ~7.
 */
const MEMORY_ONLY = process.env.BENCH_SCALE_MEMORY_ONLY === "1";
/** Pairs per ratio (issue 17: a median of at least 5). */
const REPS = Math.max(5, Number(process.env.BENCH_SCALE_REPS ?? 5));
/** Setup commands at once on the pool host: the default per-host command bound (zfs-fuse wedges under many concurrent commands). */
const CREATE_CONCURRENCY = 4;
/** Datasets one setup command creates (one `sh` looping over its arguments). */
const CREATE_BATCH = 500;
/** Volumes with a snapshot schedule: constant across sizes, so a tick's snapshot work is too. */
const SCHEDULED = 10;
/** The properties VolumeService.list and the scheduler's discovery read (src/volumes/service.ts, src/snapshots/scheduler.ts). */
const DISCOVERY_PROPS = ["type", "createtxg", "guid", "userrefs", "origin", PROP.csiName, PROP.pv, PROP.snapshotSchedule, PROP.replicateTo, PROP.replicatedThrough, PROP.autoSnapshot, PROP.snapshotName];
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

/** Medians of a driver call and of the raw command it wraps, and the median of their per-pair ratios with its spread. */
interface Pairs {
  readonly driver: number;
  readonly raw: number;
  readonly ratio: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

/**
 * `times` pairs of `driver` and the `raw` command it wraps, measured alternately, so load from
 * other users of the machine falls on both alike; the ratio is the median of the per-pair
 * ratios (each pair shares the machine's load of its moment), printed with its spread.
 */
async function paired(times: number, driver: () => Promise<unknown>, raw: () => Promise<unknown>): Promise<Pairs> {
  const a: number[] = [];
  const b: number[] = [];
  const r: number[] = [];
  for (let i = 0; i < times; i++) {
    a.push(await timeMs(driver));
    b.push(await timeMs(raw));
    r.push(a[i]! / b[i]!);
  }
  return { driver: median(a), raw: median(b), ratio: median(r), min: Math.min(...r), max: Math.max(...r), n: times };
}

const spread = (p: Pairs): string => `${p.ratio.toFixed(2)}× (${p.min.toFixed(2)}–${p.max.toFixed(2)}, ${p.n} pairs)`;

/** A paged walk through every page of a listing call; `pages` and `seen` describe the last walk. */
function walker(call: (startingToken: string) => Promise<{ entries: unknown[]; nextToken: string }>) {
  const state = {
    pages: 0,
    seen: 0,
    walk: async (): Promise<void> => {
      state.pages = 0;
      state.seen = 0;
      let token = "";
      do {
        const res = await call(token);
        state.pages++;
        state.seen += res.entries.length;
        token = res.nextToken;
      } while (token !== "");
    },
  };
  return state;
}

interface SizeFigures {
  readonly n: number;
  readonly snapshots: number;
  readonly pages: number;
  /** A walk whose first page checks the host (its last check suspect, as after a failure or HEALTH_REUSE_MS). */
  readonly listCalls: number;
  readonly listCold: Pairs;
  /** Walks back to back: the first page reuses the host's check while it is under HEALTH_REUSE_MS old. */
  readonly listWarmCalls: number;
  readonly list: Pairs;
  readonly snapPages: number;
  readonly snapCalls: number;
  readonly snapList: Pairs;
  readonly cap: Pairs;
  readonly capCalls: number;
  readonly tick: Pairs;
  readonly tickCalls: number;
  readonly repl: Pairs;
  readonly replCalls: number;
}

/**
 * Volumes `from`..`to`-1 under the host's parent, made on the pool host itself (its local
 * executor: no ssh), each a raw `zfs create` with zcsi's user properties. Few commands: each is
 * one `sh` that loops over up to CREATE_BATCH leaf names given as arguments (the script is a
 * constant; names, sizes and paths reach it only as argv), CREATE_CONCURRENCY of them at a time.
 * canmount=noauto: nothing is mounted (10,000 FUSE mounts would load every other user of this
 * shared machine, and zfs-fuse would spend the setup mounting); ListVolumes then reports them
 * not mounted, which costs it the same. The first SCHEDULED volumes carry an hourly schedule.
 */
async function createVolumes(host: PoolHostEnv, from: number, to: number): Promise<void> {
  const leaves = Array.from({ length: to - from }, (_, i) => `pvc-${String(from + i).padStart(5, "0")}`);
  const script = [
    'quota=$1 root=$2 parent=$3 extra=$4; shift 4',
    'for leaf do',
    `  zfs create -o "refquota=$quota" -o "mountpoint=$root/$leaf" -o canmount=noauto -o "${PROP.csiName}=$leaf" -o "${PROP.parameters}={}" -o "${PROP.state}=ready" $extra "$parent/$leaf" || exit 1`,
    "done",
  ].join("\n");
  const run = async (batch: string[], extra: string): Promise<void> => {
    const argv = ["sh", "-c", script, "sh", String(64 << 20), host.mountRoot, host.parent, extra, ...batch];
    const r = await host.pool.exec.run(argv, { timeoutMs: 30 * 60_000 });
    if (r.exitCode !== 0) throw new Error(`creating ${batch[0]}..${batch[batch.length - 1]}: ${r.stderr}`);
  };
  const scheduled = Math.max(0, Math.min(SCHEDULED - from, leaves.length));
  // $extra is unquoted in the script so that "" adds nothing; it is a constant, never a name.
  if (scheduled > 0) await run(leaves.slice(0, scheduled), `-o ${PROP.snapshotSchedule}=hourly=24`);
  const batches: string[][] = [];
  for (let i = scheduled; i < leaves.length; i += CREATE_BATCH) batches.push(leaves.slice(i, i + CREATE_BATCH));
  const worker = async (): Promise<void> => {
    for (let b = batches.shift(); b !== undefined; b = batches.shift()) await run(b, "");
  };
  await Promise.all(Array.from({ length: CREATE_CONCURRENCY }, worker));
}

export async function benchScale(): Promise<void> {
  // The product's default timeouts, not the test harness's 20 s: 60 s per command and, for the
  // listings that grow with the volume count, listingTimeoutMs (5 min, growing with what the
  // host was seen to need: src/zfs/listing-timeout.ts).
  const env = await startControllerEnv({ poolSizeMiB: Number(process.env.BENCH_SCALE_POOL_MIB ?? 4096), configExtra: { commandTimeoutMs: 60_000 } });
  const host = env.hosts[0]!;
  const raw = rawExecutor(host);
  const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
  const rawRun = async (argv: string[]): Promise<string> => {
    const r = await raw.run(argv, { timeoutMs: 600_000 });
    if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  // Counts the zfs invocations of one piece of work (nothing else runs through this executor meanwhile).
  const counted = async (work: () => Promise<unknown>): Promise<number> => {
    exec.reset();
    await work();
    return exec.count;
  };
  const rows: Row[] = [];
  const verdicts: string[] = [];
  const perSize: SizeFigures[] = [];
  const setup: string[] = [];
  try {
    await rawRun(["zfs", "version"]).catch(() => rawRun(["zpool", "list", "-H", "-o", "name"]));
    // An hourly schedule; each size gets its own hour so its first tick has the same work to do.
    const base = Date.UTC(2026, 0, 5, 0, 0, 0);
    const silent = pino({ level: "silent" });
    // No replication target: a replicator tick is then its discovery alone, which is what grows with n.
    const replicator = new Replicator(env.poolHosts, createReplicationEngine(env.poolHosts, { logger: silent }), { clock: { now: () => new Date(base) }, logger: silent });
    let created = 0;
    let snapshots = 0;
    for (const [k, n] of SIZES.entries()) {
      // Grow the parent to n volumes on the pool host itself (see createVolumes).
      const adding = n - created;
      const createMs = await timeMs(() => createVolumes(host, created, n));
      created = n;
      // One CSI snapshot of each of the first size's volumes, in one recursive command (the
      // parent's own snapshot is not a volume's and is not listed). Only at the first size: the
      // snapshot count stays constant while the volume count grows, so the `-d 2` listings
      // measure the volumes (on zfs-fuse, snapshots of every volume at every size made a
      // 1000-volume `zfs get -d 2` take 8.5 s under load).
      const snapMs =
        k > 0
          ? 0
          : await timeMs(async () => {
              const argv = ["zfs", "snapshot", "-r", "-o", `${PROP.snapshotName}=bench-${n}`, `${host.parent}@bench-${n}`];
              const r = await host.pool.exec.run(argv, { timeoutMs: 600_000 });
              if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
              snapshots += n;
            });
      setup.push(`${adding} volumes in ${(createMs / 1000).toFixed(1)} s (${(createMs / adding).toFixed(1)} ms each)${k === 0 ? `, ${n} snapshots in one \`zfs snapshot -r\` in ${(snapMs / 1000).toFixed(1)} s` : ""}`);
      if (MEMORY_ONLY) continue;

      // ListVolumes and ListSnapshots, every page.
      const volumeWalk = walker((startingToken) => env.client.listVolumes({ maxEntries: PAGE, startingToken }));
      // Cold: the host's last check is made suspect first, so the first page checks it beside
      // the listing (what a walk meets after a failure, or HEALTH_REUSE_MS after the last check).
      // Warm: walks back to back, as a walker repeating its walk; each first page reuses the
      // check while it is under HEALTH_REUSE_MS old (src/volumes/hosts.ts).
      const rawList = () => rawRun(zfsGet([host.parent], VOLUME_PROPS, { depth: 1 }));
      const coldWalk = () => (env.poolHosts.health.suspect("alice"), volumeWalk.walk());
      const listCalls = await counted(coldWalk);
      if (volumeWalk.seen !== n) throw new Error(`ListVolumes saw ${volumeWalk.seen} volumes, expected ${n}`);
      const listWarmCalls = await counted(volumeWalk.walk);
      const listCold = await paired(REPS, coldWalk, rawList);
      const list = await paired(REPS, volumeWalk.walk, rawList);
      const pages = volumeWalk.pages;
      const snapshotWalk = walker((startingToken) => env.client.listSnapshots({ maxEntries: PAGE, startingToken }));
      const snapCalls = await counted(snapshotWalk.walk);
      if (snapshotWalk.seen !== snapshots) throw new Error(`ListSnapshots saw ${snapshotWalk.seen} snapshots, expected ${snapshots}`);
      const snapList = await paired(REPS, snapshotWalk.walk, () => rawRun(zfsGet([host.parent], SNAPSHOT_PROPS, { depth: 2 })));
      const snapPages = snapshotWalk.pages;

      // GetCapacity.
      const capCalls = await counted(() => env.client.getCapacity({ volumeCapabilities: [CAP], parameters: {} }));
      const cap = await paired(REPS, () => env.client.getCapacity({ volumeCapabilities: [CAP], parameters: {} }), () => rawRun(zfsGet([host.parent], ["available"])));

      // Scheduler ticks at a fixed clock: the first takes one snapshot on each scheduled volume,
      // the second (same hour) finds nothing due: discovery alone.
      const at = new Date(base + k * 3600_000);
      const scheduler = new SnapshotScheduler(env.poolHosts, { clock: { now: () => at }, logger: silent });
      let firstCalls = 0;
      const first = await timeMs(async () => (firstCalls = await counted(() => scheduler.tick())));
      const tickCalls = await counted(() => scheduler.tick());
      const tick = await paired(REPS, () => scheduler.tick(), () => rawRun(zfsGet([host.parent], DISCOVERY_PROPS, { depth: 2 })));

      // Replicator ticks: discovery of the replicated volumes (none), one `zfs get -d 1` per host.
      const replCalls = await counted(() => replicator.tick());
      const repl = await paired(REPS, () => replicator.tick(), () => rawRun(zfsGet([host.parent], [...VOLUME_DISCOVERY_PROPS], { depth: 1 })));

      perSize.push({ n, snapshots, pages, listCalls, listCold, listWarmCalls, list, snapPages, snapCalls, snapList, cap, capCalls, tick, tickCalls, repl, replCalls });
      // Each size's figures as soon as they are known: a later size that fails (a timeout at 10,000) keeps them.
      console.log(`scale progress: ${JSON.stringify({ ...perSize[perSize.length - 1], first, firstCalls, setup: setup[setup.length - 1] })}`);
      rows.push(
        { what: `${n} volumes: ListVolumes, all ${pages} page(s) of ${PAGE} via gRPC, walks back to back`, median: list.driver, unit: "ms", ratio: spread(list), note: `${listWarmCalls} zfs/zpool invocation(s) for the whole walk (the host's check reused while under ${HEALTH_REUSE_MS / 1000} s old); ratio to one raw \`zfs get -Hp -d 1\` of the listed properties (${list.raw.toFixed(0)} ms, open ssh2)` },
        { what: `${n} volumes: ListVolumes, all ${pages} page(s), the host checked anew`, median: listCold.driver, unit: "ms", ratio: spread(listCold), note: `${listCalls} zfs/zpool invocations for the whole walk: the listing, and beside it \`zpool list\` and two \`zfs get\`s (the host's check); same raw command (${listCold.raw.toFixed(0)} ms)` },
        { what: `${n} volumes, ${snapshots} CSI snapshots: ListSnapshots, all ${snapPages} page(s) of ${PAGE} via gRPC`, median: snapList.driver, unit: "ms", ratio: spread(snapList), note: `${snapCalls} invocation(s) for the whole walk; ratio to one raw \`zfs get -Hp -d 2\` (${snapList.raw.toFixed(0)} ms)` },
        { what: `${n} volumes: GetCapacity via gRPC`, median: cap.driver, unit: "ms", ratio: spread(cap), note: `${capCalls} invocation(s); ratio to raw \`zfs get available\` (${cap.raw.toFixed(1)} ms)` },
        { what: `${n} volumes: snapshotter tick, ${SCHEDULED} snapshots due`, median: first, unit: "ms", note: `${firstCalls} invocations (one sample)` },
        { what: `${n} volumes: snapshotter tick, nothing due`, median: tick.driver, unit: "ms", ratio: spread(tick), note: `${tickCalls} invocation(s); ratio to raw \`zfs get -d 2\` (${tick.raw.toFixed(0)} ms)` },
        { what: `${n} volumes: replicator tick, no job due`, median: repl.driver, unit: "ms", ratio: spread(repl), note: `${replCalls} invocation(s); ratio to raw \`zfs get -d 1\` (${repl.raw.toFixed(0)} ms)` },
      );
    }
    // The ratios are judged at the sizes asked for; a reference size added only for the invocation counts is shown, not judged.
    const judged = perSize.filter((s) => ASKED_SIZES.includes(s.n));
    const within = (p: Pairs): boolean => p.ratio <= 1.5;
    const all = (pick: (s: SizeFigures) => string): string => perSize.map((s) => `${pick(s)} at ${s.n}`).join(" / ");
    const constant = (pick: (s: SizeFigures) => number): boolean => perSize.every((s) => pick(s) === pick(perSize[0]!));
    const verdict = (ok: boolean): string => (ok ? "met" : "MISSED");
    verdicts.push(
      `zfs invocations constant whatever the volume count (target): ListVolumes ${all((s) => `${s.listCalls} per walk of ${s.pages} page(s) checking the host, ${s.listWarmCalls} reusing its check`)}; ListSnapshots ${all((s) => `${s.snapCalls} per walk of ${s.snapPages}`)}; GetCapacity ${all((s) => String(s.capCalls))}; snapshotter tick ${all((s) => String(s.tickCalls))}; replicator tick ${all((s) => String(s.replCalls))}: ${verdict(
        constant((s) => s.listCalls) && constant((s) => s.listWarmCalls) && constant((s) => s.snapCalls) && constant((s) => s.capCalls) && constant((s) => s.tickCalls) && constant((s) => s.replCalls),
      )}`,
      `ListVolumes full walk within 1.5× the one raw \`zfs get -d 1\` it wraps (target), walks back to back: ${verdict(judged.every((s) => within(s.list)))}: ${all((s) => spread(s.list))}; the first page lists each host once and the later pages are cut from that listing, held ${LISTING_TTL_MS / 1000} s (src/csi/listing-cache.ts); the first page checks a host's health beside its listing only when its last check is ${HEALTH_REUSE_MS / 1000} s old or more, found it down, or a listing of it failed since (src/volumes/hosts.ts): a walk that checks is ${all((s) => spread(s.listCold))}, the check's three commands on top of the listing`,
      `ListSnapshots full walk within 1.5× the one raw \`zfs get -d 2\` it wraps (target): ${verdict(judged.every((s) => within(s.snapList)))}: ${all((s) => spread(s.snapList))}`,
      `snapshotter tick (nothing due) within 1.5× its raw \`zfs get -d 2\` (target): ${verdict(judged.every((s) => within(s.tick)))}: ${all((s) => spread(s.tick))}`,
      `replicator tick (no job due) within 1.5× its raw \`zfs get -d 1\` (target): ${verdict(judged.every((s) => within(s.repl)))}: ${all((s) => spread(s.repl))}`,
      `where a ratio at 10 or 100 volumes is above the rest, the fixed cost of a call (gRPC; for ListVolumes checking a host, the check's \`zpool list\` and two \`zfs get\`s beside the listing) weighs against a raw command of a few ms; ratios are medians of per-pair ratios, spread min–max`,
      `setup, on the pool host's own shell (no ssh), ${CREATE_CONCURRENCY} commands at a time, each one \`sh\` looping \`zfs create -o zcsi:csi-name=… -o zcsi:state=ready -o zcsi:parameters={} -o refquota=… -o mountpoint=… -o canmount=noauto\` over up to ${CREATE_BATCH} names given as arguments: ${setup.join("; ")}. ${SCHEDULED} volumes carry zcsi:snapshot-schedule=hourly=24.${SIZES[0] === REFERENCE_SIZE && !ASKED_SIZES.includes(REFERENCE_SIZE) ? ` ${REFERENCE_SIZE} volumes were measured first as the reference for the invocation counts (their ratios are shown, not judged).` : ""}`,
    );
    if (MEMORY_ONLY) console.log(`scale: BENCH_SCALE_MEMORY_ONLY=1, timings not measured; setup: ${setup.join("; ")}`);
    else report(`Scaling with volume count (${SIZES.join(", ")} volumes)`, rows, verdicts);
    // Benchmark 6's controller half, and the sidecars', need these volumes: separate processes on the same pool host.
    for (const runtime of RUNTIMES) {
      await controllerMemory(host, created, runtime);
      await sidecarMemory(host, created, runtime);
    }
  } finally {
    await raw.close();
    // Teardown is one `zpool destroy -f` of the bench's own pool (test/harness/zfs-pool.ts), not a destroy per volume.
    const teardownMs = await timeMs(() => env.stop());
    console.log(`scale teardown: ${(teardownMs / 1000).toFixed(1)} s for the pool with ${SIZES[SIZES.length - 1]} volumes`);
  }
}
