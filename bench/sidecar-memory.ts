import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../src/util/package.js";
import type { PoolHostEnv } from "../test/harness/controller.js";
import { report, type Row } from "./lib.js";
import { floorRow, memoryOf, roleCommand, stopChild as stop, writeHostConfig, type Runtime } from "./memory.js";

/**
 * Issue 17, item 5: peak RSS (VmHWM) of real `zcsi snapshotter` and `zcsi replicator`
 * processes (`--no-leader-election`: no Kubernetes API here, so no Lease, Events or Node
 * annotations) over a pool host whose parent already holds `volumes` volumes, after
 * `TICKS` ticks each, run as the image runs them (memory.ts RUNTIMES). Called by the scaling
 * benchmark, which made the volumes.
 */
const TICKS = 3;
const TARGET_MIB = 200;

/** Discovery commands a sidecar has finished: each tick runs exactly one `zfs get -d …` per host. */
function discoveries(logPath: string): number {
  return readFileSync(logPath, "utf8")
    .split("\n")
    .filter((l) => l.includes('"msg":"exec"') && l.includes('"argv":["zfs","get"') && l.includes('"-d"')).length;
}

export async function sidecarMemory(host: PoolHostEnv, volumes: number, runtime: Runtime = "compiled"): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "zcsi-bench-sidecar-"));
  const children: ChildProcess[] = [];
  try {
    const configPath = await writeHostConfig(dir, host);
    const rows: Row[] = [await floorRow(runtime)];
    const roles: [string, string[]][] = [
      ["snapshotter", ["--snapshot-interval", "1"]],
      ["replicator", ["--tick-interval", "1"]],
    ];
    // One after the other: two sidecars' discoveries at once would measure zfs-fuse's contention, not the sidecars.
    for (const [role, flags] of roles) {
      const logPath = join(dir, `${role}.log`);
      const command = await roleCommand(runtime, role, ["--config", configPath, "--no-leader-election", "--log-level", "debug", ...flags]);
      const log = await open(logPath, "w");
      const child = spawn(process.execPath, command.argv, { cwd: packageRoot, env: command.env, stdio: ["ignore", log.fd, log.fd] });
      children.push(child);
      await log.close();
      const started = Date.now();
      while (discoveries(logPath) < TICKS) {
        if (child.exitCode !== null) throw new Error(`zcsi ${role} exited ${child.exitCode}: ${readFileSync(logPath, "utf8").slice(-2000)}`);
        if (Date.now() - started > 30 * 60_000) throw new Error(`zcsi ${role} did not finish ${TICKS} ticks in 30 minutes`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const m = memoryOf(child.pid!);
      rows.push({ what: `zcsi ${role}, after ${TICKS} ticks over ${volumes} volumes`, median: m.peak, unit: "MiB peak RSS", note: `RSS now ${m.rss.toFixed(0)} MiB; ${((Date.now() - started) / 1000).toFixed(1)} s from start to the ${TICKS}rd tick's discovery` });
      await stop(child);
    }
    const peaks = rows.slice(1).map((r) => r.median);
    report(`Memory: sidecar processes${runtime === "tsx" ? " (through tsx)" : ""}`, rows, [
      `peak RSS of the sidecars with ${volumes} volumes under ${TARGET_MIB} MiB (target): ${peaks.every((p) => p < TARGET_MIB) ? "met" : "MISSED"}: snapshotter ${peaks[0]?.toFixed(0)} MiB, replicator ${peaks[1]?.toFixed(0)} MiB (each includes node${runtime === "tsx" ? " and tsx" : "; compiled JS, as the image runs them"})`,
    ]);
  } finally {
    for (const child of children) await stop(child);
    await rm(dir, { recursive: true, force: true });
  }
}
