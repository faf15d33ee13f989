import { pino } from "pino";
import { LISTING_TTL_MS } from "../src/csi/listing-cache.js";
import type { InstrumentedExecutor } from "../src/exec/instrumented.js";
import { SnapshotScheduler } from "../src/snapshots/scheduler.js";
import { PROP } from "../src/volumes/properties.js";
import { VOLUME_PROPS } from "../src/volumes/volume.js";
import { zfsGet, zfsList } from "../src/zfs/argv.js";
import { startControllerEnv } from "../test/harness/controller.js";
import { median, ratio, report, timeMs, type Row, rawExecutor } from "./lib.js";
import { controllerMemory } from "./memory.js";

/**
 * Issue 8, benchmark 3: how the controller's listing calls scale with the number of volumes on
 * a pool host. At each size: ListVolumes walked over every page through real gRPC, GetCapacity,
 * and snapshot-scheduler ticks, each with its time and the zfs invocations the instrumented
 * executor counted; against the raw commands they wrap, run on an already-open ssh2
 * connection. Volumes are made with raw `zfs create` carrying the properties discovery reads
 * (1000 CreateVolume calls would take minutes on zfs-fuse and measure benchmark 1 again).
 */
const SIZES = (process.env.BENCH_SCALE_SIZES ?? "10,100,1000").split(",").map(Number);
const PAGE = Number(process.env.BENCH_SCALE_PAGE ?? 100);
/** Volumes with a snapshot schedule: constant across sizes, so a tick's snapshot work is too. */
const SCHEDULED = 10;
/** The properties VolumeService.list and the scheduler's discovery read (src/volumes/service.ts, src/snapshots/scheduler.ts). */
const DISCOVERY_PROPS = ["type", "createtxg", "guid", "userrefs", "origin", PROP.csiName, PROP.pv, PROP.snapshotSchedule, PROP.replicateTo, PROP.replicatedThrough, PROP.autoSnapshot, PROP.snapshotName];
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

async function repeat(times: number, work: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < times; i++) samples.push(await timeMs(work));
  return samples;
}

/**
 * Medians of `driver` and of the `raw` command it wraps, measured alternately, so load from
 * other users of the machine falls on both alike.
 */
async function paired(times: number, driver: () => Promise<unknown>, raw: () => Promise<unknown>): Promise<[number, number]> {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < times; i++) {
    a.push(await timeMs(driver));
    b.push(await timeMs(raw));
  }
  return [median(a), median(b)];
}

export async function benchScale(): Promise<void> {
  const env = await startControllerEnv({ poolSizeMiB: 2048 });
  const host = env.hosts[0]!;
  const raw = rawExecutor(host);
  const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
  const rawRun = async (argv: string[]): Promise<string> => {
    const r = await raw.run(argv);
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
  const perSize: { n: number; list: number; listCalls: number; pages: number; rawGet: number; tick: number; tickCalls: number; rawTick: number; cap: number; capCalls: number }[] = [];
  try {
    await rawRun(["zfs", "version"]).catch(() => rawRun(["zpool", "list", "-H", "-o", "name"]));
    // An hourly schedule; each size gets its own hour so its first tick has the same work to do.
    const base = Date.UTC(2026, 0, 5, 0, 0, 0);
    const silent = pino({ level: "silent" });
    let created = 0;
    let createMs = 0;
    for (const [k, n] of SIZES.entries()) {
      // Grow the parent to n volumes: raw `zfs create` with zcsi's user properties, 4 at a time.
      // canmount=noauto: a thousand FUSE mounts would load every other user of this shared
      // machine; ListVolumes then reports them not mounted, which costs it the same.
      createMs += await timeMs(async () => {
        const todo = Array.from({ length: n - created }, (_, i) => created + i);
        const worker = async (): Promise<void> => {
          for (let i = todo.shift(); i !== undefined; i = todo.shift()) {
            const leaf = `pvc-${String(i).padStart(5, "0")}`;
            const props: Record<string, string> = {
              refquota: String(64 << 20),
              mountpoint: `${host.mountRoot}/${leaf}`,
              canmount: "noauto",
              [PROP.csiName]: leaf,
              [PROP.parameters]: "{}",
              [PROP.state]: "ready",
              ...(i < SCHEDULED && { [PROP.snapshotSchedule]: "hourly=24" }),
            };
            const argv = ["zfs", "create", ...Object.entries(props).flatMap(([key, v]) => ["-o", `${key}=${v}`]), `${host.parent}/${leaf}`];
            const r = await host.pool.exec.run(argv, { timeoutMs: 60_000 });
            if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
          }
        };
        await Promise.all([worker(), worker(), worker(), worker()]);
      });
      created = n;
      const reps = n >= 1000 ? 3 : 5;

      // ListVolumes, every page.
      let pages = 0;
      let seen = 0;
      const walk = async (): Promise<void> => {
        pages = 0;
        seen = 0;
        let token = "";
        do {
          const res = await env.client.listVolumes({ maxEntries: PAGE, startingToken: token });
          pages++;
          seen += res.entries.length;
          token = res.nextToken;
        } while (token !== "");
      };
      const listCalls = await counted(walk);
      if (seen !== n) throw new Error(`ListVolumes saw ${seen} volumes, expected ${n}`);
      const rawGetArgv = zfsGet([host.parent], VOLUME_PROPS, { depth: 1 });
      const [list, rawGet] = await paired(reps, walk, () => rawRun(rawGetArgv));
      const rawList = median(await repeat(reps, () => rawRun(zfsList(host.parent, { props: ["used", "refquota", "mountpoint"], depth: 1 }))));

      // GetCapacity.
      const capCalls = await counted(() => env.client.getCapacity({ volumeCapabilities: [CAP], parameters: {} }));
      const [cap, rawCap] = await paired(5, () => env.client.getCapacity({ volumeCapabilities: [CAP], parameters: {} }), () => rawRun(zfsGet([host.parent], ["available"])));

      // Scheduler ticks at a fixed clock: the first takes one snapshot on each scheduled volume,
      // the second (same hour) finds nothing due: discovery alone.
      const at = new Date(base + k * 3600_000);
      const scheduler = new SnapshotScheduler(env.poolHosts, { clock: { now: () => at }, logger: silent });
      let firstCalls = 0;
      const first = await timeMs(async () => (firstCalls = await counted(() => scheduler.tick())));
      let tickCalls = 0;
      tickCalls = await counted(() => scheduler.tick());
      const [tickMedian, rawTick] = await paired(reps, () => scheduler.tick(), () => rawRun(zfsGet([host.parent], DISCOVERY_PROPS, { depth: 2 })));

      perSize.push({ n, list, listCalls, pages, rawGet, tick: tickMedian, tickCalls, rawTick, cap, capCalls });
      rows.push(
        { what: `${n} volumes: ListVolumes, all ${pages} page(s) of ${PAGE} via gRPC`, median: list, unit: "ms", ratio: ratio(list, rawGet), note: `${listCalls} zfs/zpool invocations for the whole walk, ${(list / pages).toFixed(0)} ms per page; ratio to one raw \`zfs get -d 1\`` },
        { what: `${n} volumes: raw \`zfs get -Hp -d 1\` of the listed properties (open ssh2)`, median: rawGet, unit: "ms", note: "what ListVolumes wraps" },
        { what: `${n} volumes: raw \`zfs list -H -d 1\` (open ssh2)`, median: rawList, unit: "ms", note: "for scale" },
        { what: `${n} volumes: GetCapacity via gRPC`, median: cap, unit: "ms", ratio: ratio(cap, rawCap), note: `${capCalls} invocation(s); ratio to raw \`zfs get available\` (${rawCap.toFixed(1)} ms)` },
        { what: `${n} volumes: scheduler tick, ${SCHEDULED} snapshots due`, median: first, unit: "ms", note: `${firstCalls} invocations` },
        { what: `${n} volumes: scheduler tick, nothing due`, median: tickMedian, unit: "ms", ratio: ratio(tickMedian, rawTick), note: `${tickCalls} invocation(s); ratio to raw \`zfs get -d 2\` (${rawTick.toFixed(0)} ms)` },
      );
    }
    const firstSize = perSize[0];
    const lastSize = perSize[perSize.length - 1];
    if (firstSize && lastSize && lastSize !== firstSize) {
      const growth = (a: number, b: number): string => `${(b / a).toFixed(1)}×`;
      const tickConstant = perSize.every((s) => s.tickCalls === firstSize.tickCalls);
      // A walk lists once (the later pages come from the first page's listing), so its
      // invocations are constant per walk, whatever the number of pages.
      const listConstant = perSize.every((s) => s.listCalls === firstSize.listCalls);
      const walkWithin = perSize.every((s) => s.list <= 1.5 * s.rawGet);
      verdicts.push(
        `invocations constant per walk/tick (target): ListVolumes ${perSize.map((s) => `${s.listCalls} per walk of ${s.pages} page(s)`).join(" / ")} at ${SIZES.join(" / ")} volumes, tick ${perSize.map((s) => s.tickCalls).join(" / ")}, GetCapacity ${perSize.map((s) => s.capCalls).join(" / ")}: ${listConstant && tickConstant ? "met" : "MISSED"}`,
        `time growth ${firstSize.n} → ${lastSize.n} volumes: ListVolumes full walk ${growth(firstSize.list, lastSize.list)} vs raw \`zfs get -d 1\` ${growth(firstSize.rawGet, lastSize.rawGet)}; tick ${growth(firstSize.tick, lastSize.tick)} vs raw \`zfs get -d 2\` ${growth(firstSize.rawTick, lastSize.rawTick)}; GetCapacity ${growth(firstSize.cap, lastSize.cap)}`,
        `tick grows no worse than the raw get it wraps (target): ${
          lastSize.tick <= 1.2 * lastSize.rawTick ? "met" : "MISSED"
        }: a tick with nothing due costs ${perSize.map((s) => ratio(s.tick, s.rawTick)).join(" / ")} its one \`zfs get -d 2\` at ${SIZES.join(" / ")} volumes (the growth ratios above are noisy at 10 volumes, where both take tens of ms)`,
        `ListVolumes full walk within 1.5× the one raw \`zfs get -d 1\` it wraps (target): ${walkWithin ? "met" : "MISSED"}: ${perSize
          .map((s) => `${ratio(s.list, s.rawGet)} at ${s.n} volumes (${s.pages} page(s))`)
          .join(" / ")}; the first page lists each host once (with the hosts' health checked in parallel) and the later pages are cut from that listing, held ${
          LISTING_TTL_MS / 1000
        } s (src/csi/listing-cache.ts)${
          walkWithin
            ? ""
            : `; above the raw get: ${perSize.map((s) => `${((s.list - s.rawGet) / s.pages).toFixed(1)} ms`).join(" / ")} per page: gRPC and message building on every page, and on the first the hosts' health check (\`zpool list\`, \`zfs get\` ×2, alongside the listing on the same host), which weighs most where the listing itself takes only tens of ms`
        }`,
      );
    }
    verdicts.push(
      `volumes were created with raw \`zfs create -o zcsi:csi-name=… -o zcsi:state=ready -o zcsi:parameters={} -o refquota=… -o mountpoint=… -o canmount=noauto\` (${created} in ${(createMs / 1000).toFixed(1)} s, 4 in parallel), not CreateVolume; unmounted so that ${created} FUSE mounts do not load the shared machine. ${SCHEDULED} of them carry zcsi:snapshot-schedule=hourly=24.`,
    );
    report(`Scaling with volume count (${SIZES.join(", ")} volumes)`, rows, verdicts);
    // Benchmark 6's controller half needs these volumes: a separate controller process on the same pool host.
    await controllerMemory(host, created);
  } finally {
    await raw.close();
    await env.stop();
  }
}
