import { readFileSync } from "node:fs";
import { getHeapStatistics } from "node:v8";
import { pino } from "pino";
import { parseConfig } from "../src/config.js";
import { ControllerService } from "../src/csi/controller.js";
import { controllerDefinition, loadCsiProto } from "../src/csi/proto.js";
import type { ExecResult, ExecStream, Executor } from "../src/exec/executor.js";
import { DISCOVERY_PROPS, SnapshotScheduler } from "../src/snapshots/scheduler.js";
import { VOLUME_PROPS } from "../src/volumes/volume.js";
import { PoolHosts } from "../src/volumes/hosts.js";
import { VolumeService } from "../src/volumes/service.js";
import { SnapshotService } from "../src/volumes/snapshots.js";
import { FAKE_HOST_KEY } from "../test/harness/fake-pool-host.js";

/**
 * Synthetic reproduction of the 10,000-volume memory peaks (issue 17, item 5) without a pool:
 * an executor that answers `zfs get -Hp … -d 1|2 <parent>` with N volumes' worth of output in
 * the shape zfs-fuse prints for the scale benchmark's volumes (bench/scale.ts createVolumes),
 * generated once beforehand and held as 32 KiB Buffer chunks (~10 MB each, in every figure),
 * joined and decoded as the SSH executor does. Runs the
 * product's own code: an unpaged ListVolumes (with the reply serialized as grpc-js would), or
 * snapshotter ticks. Run with `node --expose-gc --import tsx bench/listing-memory.ts
 * controller|snapshotter [volumes]`; prints VmHWM, VmRSS and the V8 heap after each step
 * (after a forced GC; NO_GC=1 leaves the collector alone, as in a real process).
 */
const role = process.argv[2] ?? "controller";
const N = Number(process.argv[3] ?? 10_000);
const PARENT = "zcsi-bench-1a2b3c/k8s";
const MOUNT_ROOT = "/tmp/zcsi-bench-1a2b3c/mnt";

const gc = process.env.NO_GC === "1" ? () => undefined : ((globalThis as { gc?: () => void }).gc ?? (() => undefined));
function mem(step: string): void {
  gc();
  const status = readFileSync("/proc/self/status", "utf8");
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) / 1024;
  const h = getHeapStatistics();
  const m = process.memoryUsage();
  console.log(
    `${step.padEnd(48)} peak ${kib("VmHWM").toFixed(0).padStart(4)} MiB  rss ${kib("VmRSS").toFixed(0).padStart(4)}  heapUsed ${(h.used_heap_size / 2 ** 20).toFixed(1).padStart(6)}  heapTotal ${(h.total_heap_size / 2 ** 20).toFixed(1).padStart(6)}  external ${(m.external / 2 ** 20).toFixed(1).padStart(5)}`,
  );
}

/** One dataset's value and source for `prop`, as zfs-fuse prints a bench volume's. */
function valueOf(leaf: string, prop: string, scheduled: boolean): [string, string] {
  switch (prop) {
    case "zcsi:csi-name":
      return [leaf, "local"];
    case "zcsi:state":
      return ["ready", "local"];
    case "zcsi:parameters":
      return ["{}", "local"];
    case "zcsi:snapshot-schedule":
      return scheduled ? ["hourly=24", "local"] : ["-", "-"];
    case "refquota":
      return [String(64 << 20), "local"];
    case "quota":
    case "refreservation":
    case "reservation":
      return ["0", "default"];
    case "referenced":
      return ["19456", "-"];
    case "mountpoint":
      return [`${MOUNT_ROOT}/${leaf}`, "local"];
    case "mounted":
      return ["no", "-"];
    case "type":
      return ["filesystem", "-"];
    case "createtxg":
      return [String(1000 + leaf.length * 7), "-"];
    case "guid":
      return ["12345678901234567890", "-"];
    default:
      return ["-", "-"];
  }
}

class SyntheticHost implements Executor {
  readonly host = "alice";
  private readonly outputs = new Map<string, Buffer[]>();
  async run(argv: readonly string[]): Promise<ExecResult> {
    const args = argv[0] === "sudo" ? argv.slice(2) : argv;
    if (args[0] === "zpool") return ok(`${PARENT.split("/")[0]}\tONLINE\t4294967296\t1000000\t4293967296\n`);
    if (args[1] === "version") return { stdout: "", stderr: "unrecognized command 'version'\n", exitCode: 2 };
    if (args[1] !== "get") return { stdout: "", stderr: `unexpected ${args.join(" ")}`, exitCode: 2 };
    const props = args[args.length - 2]!.split(",");
    if (!args.includes("-d")) return ok(props.map((p) => `${PARENT}\t${p}\t${p === "available" ? "4000000000" : "0"}\t-`).join("\n") + "\n");
    // Generated once, outside what is measured; each run joins the chunks as SshExecutor.run does.
    const key = args[args.length - 2]!;
    let chunks = this.outputs.get(key);
    if (chunks === undefined) {
      chunks = [];
      let text = props.map((p) => `${PARENT}\t${p}\t${valueOf("k8s", p, false).join("\t")}\n`).join("");
      for (let i = 0; i < N; i++) {
        const leaf = `pvc-${String(i).padStart(5, "0")}`;
        for (const p of props) text += `${PARENT}/${leaf}\t${p}\t${valueOf(leaf, p, i < 10).join("\t")}\n`;
        if (text.length > 32_768) {
          chunks.push(Buffer.from(text));
          text = "";
        }
      }
      chunks.push(Buffer.from(text));
      this.outputs.set(key, chunks);
    }
    return ok(Buffer.concat(chunks).toString("utf8"));
  }
  stream(): Promise<ExecStream> {
    return Promise.reject(new Error("no streams"));
  }
  async close(): Promise<void> {}
}

function ok(stdout: string): ExecResult {
  return { stdout, stderr: "", exitCode: 0 };
}

const logger = pino({ level: "silent" });
const config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [{ name: "alice", address: "127.0.0.1", user: "zcsi", parentDataset: PARENT, mountRoot: MOUNT_ROOT, hostKey: FAKE_HOST_KEY }],
});

const executor = new SyntheticHost();
// The outputs first, so that what is measured below is the product's work, not the generator's.
for (const props of [VOLUME_PROPS, DISCOVERY_PROPS]) await executor.run(["zfs", "get", "-d", "1", props.join(","), PARENT]);
const hosts = new PoolHosts([{ config: config.poolHosts[0]!, exec: executor }]);
mem("start");
if (role === "controller") {
  const serialize = controllerDefinition(loadCsiProto()).ListVolumes.responseSerialize;
  const controller = new ControllerService(config, new VolumeService(hosts, logger), new SnapshotService(hosts, logger), logger);
  // As the memory benchmark asks (bench/memory.ts): a paged walk, then unpaged listings, each reply serialized as grpc-js does.
  let token = "";
  let pages = 0;
  do {
    const res = await controller.listVolumes({ maxEntries: 100, startingToken: token });
    serialize(res);
    token = res.nextToken ?? "";
    pages++;
  } while (token !== "");
  mem(`paged walk (${pages} pages)`);
  for (let i = 0; i < 3; i++) {
    const bytes = serialize(await controller.listVolumes({ maxEntries: 0, startingToken: "" }));
    mem(`unpaged ListVolumes ${i + 1} (${(bytes.length / 2 ** 20).toFixed(1)} MiB reply)`);
  }
} else {
  const scheduler = new SnapshotScheduler(hosts, { clock: { now: () => new Date(Date.UTC(2026, 0, 5)) }, logger });
  for (let i = 0; i < 3; i++) {
    await scheduler.tick();
    mem(`snapshotter tick ${i + 1}`);
  }
}
