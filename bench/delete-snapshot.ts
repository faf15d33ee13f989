import type { InstrumentedExecutor } from "../src/exec/instrumented.js";
import type { SshExecutor } from "../src/exec/ssh.js";
import { PROP } from "../src/volumes/properties.js";
import { SNAPSHOT_PROPS } from "../src/volumes/snapshots.js";
import { zfsGet } from "../src/zfs/argv.js";
import type { ControllerEnv } from "../test/harness/controller.js";
import { median, percentile, report, timeMs } from "./lib.js";

const ITERATIONS = Number(process.env.BENCH_SNAPSHOT_ITERATIONS ?? 20);
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

/**
 * Issue 17, item 4: DeleteSnapshot through gRPC → SSH → zfs against the raw `zfs destroy -d` it
 * wraps, and against the safe floor: the same lookup `zfs get` (there? a CSI snapshot of a zcsi
 * volume? scheduled? already deferred?) and `zfs destroy -d` on an open ssh2 connection.
 * Each iteration takes three CSI-marked snapshots of one zcsi volume (untimed setup, a raw
 * `zfs snapshot -o zcsi:csi-snapshot-name=…`) and deletes one each way, back to back, so the
 * machine's load falls on all three alike; ratios are medians of per-iteration ratios.
 */
export async function benchDeleteSnapshot(env: ControllerEnv, raw: SshExecutor): Promise<void> {
  const must = async (argv: string[]): Promise<void> => {
    const r = await raw.run(argv);
    if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
  };
  const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
  const volume = (await env.client.createVolume({ name: "bench-snapshots", capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] })).volume!;
  const dataset = volume.volumeContext["dataset"]!;
  const snapshot = (name: string): Promise<void> => must(["zfs", "snapshot", "-o", `${PROP.snapshotName}=${name}`, `${dataset}@${name}`]);
  const driver: number[] = [];
  const floor: number[] = [];
  const safe: number[] = [];
  let driverCommands = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    for (const kind of ["drv", "raw", "safe"]) await snapshot(`snapshot-${kind}-${i}`);
    exec.reset();
    driver.push(await timeMs(() => env.client.deleteSnapshot({ snapshotId: `${volume.volumeId}@snapshot-drv-${i}` })));
    driverCommands += exec.count;
    floor.push(await timeMs(() => must(["zfs", "destroy", "-d", `${dataset}@snapshot-raw-${i}`])));
    safe.push(
      await timeMs(async () => {
        await must(zfsGet([dataset, `${dataset}@snapshot-safe-${i}`], SNAPSHOT_PROPS));
        await must(["zfs", "destroy", "-d", `${dataset}@snapshot-safe-${i}`]);
      }),
    );
  }
  const gone = await raw.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset]);
  if (gone.stdout.trim() !== "") throw new Error(`snapshots left after the benchmark: ${gone.stdout.trim()}`);
  await env.client.deleteVolume({ volumeId: volume.volumeId });
  const paired = (a: readonly number[], b: readonly number[]): number[] => a.map((x, i) => x / (b[i] ?? NaN));
  const spread = (r: readonly number[]): string => `${median(r).toFixed(2)}× (${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)})`;
  const toFloor = paired(driver, floor);
  const toSafe = paired(driver, safe);
  report(
    "DeleteSnapshot against the `zfs destroy` it wraps",
    [
      { what: "zcsi DeleteSnapshot (gRPC → SSH → zfs)", median: median(driver), p95: percentile(driver, 95), unit: "ms", ratio: "1.00×", note: `${(driverCommands / ITERATIONS).toFixed(1)} commands per call` },
      { what: "floor: raw `zfs destroy -d` on an open ssh2 connection", median: median(floor), p95: percentile(floor, 95), unit: "ms", ratio: spread(paired(floor, driver)) },
      { what: "safe floor: raw lookup `zfs get` + `zfs destroy -d` on an open ssh2 connection", median: median(safe), p95: percentile(safe, 95), unit: "ms", ratio: spread(paired(safe, driver)) },
    ],
    [
      `${ITERATIONS} iterations; ratios are medians of per-iteration ratios (min–max)`,
      `DeleteSnapshot / raw \`zfs destroy -d\` = ${spread(toFloor)}; DeleteSnapshot / safe floor = ${spread(toSafe)}. The lookup stays: the ZFS CLI has no conditional destroy, and an id can name a snapshot zcsi must refuse (taken by hand, by the schedule, a clone's hidden origin); its cost is the safe floor's excess over the floor`,
    ],
  );
}
