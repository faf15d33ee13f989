import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import type { EventRecorder, PvEvent } from "../../src/k8s/events.js";
import { silentLogger } from "../../src/log.js";
import { createRegistry, SnapshotMetrics } from "../../src/metrics.js";
import { startSnapshotterRole } from "../../src/roles/snapshotter.js";
import { SnapshotScheduler, type TickReport, type VolumeTick } from "../../src/snapshots/scheduler.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { zfsBackend } from "../harness/backend.js";
import { times } from "../harness/parallel.js";
import { ManualClock } from "../harness/fake-k8s.js";

const MiB = 1024 * 1024;
const HOUR = 3_600_000;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

function req(name: string, parameters: Record<string, string>): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(8 * MiB) }, volumeCapabilities: [mountCap], parameters: { "csi.storage.k8s.io/pv/name": name, ...parameters } };
}

class RecordingEvents implements EventRecorder {
  readonly events: PvEvent[] = [];
  async record(event: PvEvent): Promise<void> {
    this.events.push(event);
  }
}

async function zfsOk(env: ControllerEnv, ...args: string[]): Promise<string> {
  const r = await env.zfs(...args);
  if (r.exitCode !== 0) throw new Error(`zfs ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Snapshot names (after the @) of one dataset, sorted. */
async function snapshotsOf(env: ControllerEnv, dataset: string): Promise<string[]> {
  const out = await zfsOk(env, "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset);
  return out
    .split("\n")
    .filter((l) => l.startsWith(`${dataset}@`))
    .map((l) => l.slice(dataset.length + 1))
    .sort();
}

function executor(env: ControllerEnv): InstrumentedExecutor {
  return env.poolHosts.get("alice").exec as InstrumentedExecutor;
}

/** Runs one tick at `iso` and returns its report and the commands it ran on the pool host. */
async function tickAt(env: ControllerEnv, scheduler: SnapshotScheduler, clock: ManualClock, at: number | string): Promise<{ report: TickReport; commands: number; gets: number }> {
  clock.set(typeof at === "number" ? new Date(at).toISOString() : at);
  const exec = executor(env);
  const before = exec.count;
  const getsBefore = exec.counts.get("zfs get") ?? 0;
  const report = await scheduler.tick();
  return { report, commands: exec.count - before, gets: (exec.counts.get("zfs get") ?? 0) - getsBefore };
}

function volumeTicks(report: TickReport): VolumeTick[] {
  return report.hosts.flatMap((h) => h.volumes);
}

describe("the snapshotter on a real pool (zfs-fuse over SSH), a fake clock through days", () => {
  let env: ControllerEnv;
  let parent: string;
  beforeAll(async () => {
    env = await startControllerEnv();
    parent = env.hosts[0]!.parent;
  });
  afterAll(async () => {
    await env?.stop();
  });

  it("refuses a bad schedule at CreateVolume, naming the bad part", async () => {
    const err = await env.client.createVolume(req("pvc-snap-bad", { snapshotSchedule: "hourly=3,dayly=2" })).catch((e: unknown) => e as { code: number; details: string });
    expect(err).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect((err as { details: string }).details).toMatch(/snapshotSchedule="hourly=3,dayly=2": unknown bucket "dayly"/);
    expect((await env.zfs("list", `${parent}/pvc-snap-bad`)).exitCode).not.toBe(0);
  });

  it("takes and prunes exactly as the schedule says, and never touches what is not its own", async () => {
    const a = `${parent}/pvc-snap-a`;
    const b = `${parent}/pvc-snap-b`;
    const c = `${parent}/pvc-snap-c`;
    const d = `${parent}/pvc-snap-d`;
    await env.client.createVolume(req("pvc-snap-a", { snapshotSchedule: "daily=2, hourly=3" }));
    await env.client.createVolume(req("pvc-snap-b", {}));
    await env.client.createVolume(req("pvc-snap-c", { snapshotSchedule: "hourly=2" }));
    await env.client.createVolume(req("pvc-snap-d", { snapshotSchedule: "hourly=1" }));
    // The schedule is stored on the dataset, normalised, as a local property.
    expect((await zfsOk(env, "get", "-H", "-o", "value,source", "zcsi:snapshot-schedule", a)).trim()).toBe("hourly=3,daily=2\tlocal");
    expect((await zfsOk(env, "get", "-H", "-o", "value,source", "zcsi:snapshot-schedule", b)).trim()).toBe("-\t-");

    // What is not ours: a CSI snapshot, a PVC-clone source, a user's snapshot, and a user's
    // snapshot that happens to use our prefix (no zcsi:auto-snapshot mark).
    await zfsOk(env, "snapshot", "-o", "zcsi:csi-snapshot-name=snapshot-6f1c2d", `${a}@snapshot-6f1c2d`);
    await zfsOk(env, "snapshot", `${a}@zcsi-clone-pvc-other`);
    await zfsOk(env, "snapshot", `${a}@before-upgrade`);
    await zfsOk(env, "snapshot", `${a}@zcsi-auto-2026-03-01T0000Z`);
    await zfsOk(env, "snapshot", `${b}@before-upgrade`);
    // A volume whose schedule someone broke by hand: reported on its PV, left alone.
    await zfsOk(env, "set", "zcsi:snapshot-schedule=hourly=banana", d);

    const clock = new ManualClock("2026-03-02T00:10:00Z");
    const events = new RecordingEvents();
    const registry = createRegistry({ processMetrics: false });
    const scheduler = new SnapshotScheduler(env.poolHosts, { clock, logger: silentLogger, events, metrics: new SnapshotMetrics(registry) });

    // Hourly ticks at :10 from Monday 2 March 00:10 to Wednesday 4 March 03:10 UTC, with the
    // snapshotter down from Tuesday 06:10 to 20:10.
    const outage = [Date.parse("2026-03-03T06:10:00Z"), Date.parse("2026-03-03T20:10:00Z")];
    let ticks = 0;
    for (let at = Date.parse("2026-03-02T00:10:00Z"); at <= Date.parse("2026-03-04T03:10:00Z"); at += HOUR) {
      if (at >= outage[0]! && at <= outage[1]!) continue;
      const iso = new Date(at).toISOString();
      if (iso === "2026-03-03T00:10:00.000Z") await zfsOk(env, "set", "zcsi:snapshot-schedule=daily=1", c); // how a volume's schedule is changed
      const { report, commands, gets } = await tickAt(env, scheduler, clock, at);
      ticks++;
      const vols = volumeTicks(report);
      expect(report.hosts[0]?.error).toBeUndefined();
      expect(vols.flatMap((v) => v.failures.filter((f) => f.operation !== "policy"))).toEqual([]);
      if (ticks > 1) {
        // One discovery command, then exactly one command per snapshot taken or pruned.
        expect(gets).toBe(1);
        expect(commands).toBe(1 + vols.filter((v) => v.taken !== undefined).length + vols.reduce((n, v) => n + v.pruned.length, 0));
      }
      const va = vols.find((v) => v.dataset === a);
      expect(va?.taken).toBe(`zcsi-auto-${iso.slice(0, 13)}10Z`); // every hour, and exactly one right after the outage
      if (iso === "2026-03-02T05:10:00.000Z") await zfsOk(env, "clone", `${a}@zcsi-auto-2026-03-02T0510Z`, `${parent}/restored-by-hand`);
      if (iso === "2026-03-02T10:10:00.000Z") await zfsOk(env, "hold", "keep", `${a}@zcsi-auto-2026-03-02T1010Z`);
      if (iso === "2026-03-02T08:10:00.000Z") expect(va?.protected).toEqual([{ name: "zcsi-auto-2026-03-02T0510Z", reason: "has clones" }]);
      if (iso === "2026-03-02T13:10:00.000Z") expect(va?.protected).toContainEqual({ name: "zcsi-auto-2026-03-02T1010Z", reason: "held (userrefs 1)" });
      if (iso === "2026-03-03T21:10:00.000Z") expect(vols.filter((v) => v.taken !== undefined).map((v) => v.dataset)).toEqual([a]);
    }
    expect(ticks).toBe(37);

    expect(await snapshotsOf(env, a)).toEqual([
      "before-upgrade",
      "snapshot-6f1c2d",
      "zcsi-auto-2026-03-01T0000Z", // ours by name only: not touched
      "zcsi-auto-2026-03-02T0510Z", // expired, but a clone depends on it
      "zcsi-auto-2026-03-02T1010Z", // expired, but held
      "zcsi-auto-2026-03-03T2310Z", // daily: Tuesday's newest
      "zcsi-auto-2026-03-04T0110Z", // hourly
      "zcsi-auto-2026-03-04T0210Z", // hourly
      "zcsi-auto-2026-03-04T0310Z", // hourly and daily (Wednesday's newest)
      "zcsi-clone-pvc-other",
    ]);
    expect(await snapshotsOf(env, b)).toEqual(["before-upgrade"]);
    expect(await snapshotsOf(env, c)).toEqual(["zcsi-auto-2026-03-04T0010Z"]);
    expect(await snapshotsOf(env, d)).toEqual([]);
    // Automatic snapshots carry their mark locally; the CSI snapshot's own mark is untouched.
    expect((await zfsOk(env, "get", "-H", "-o", "value,source", "zcsi:auto-snapshot", `${a}@zcsi-auto-2026-03-04T0310Z`)).trim()).toBe("hourly=3,daily=2\tlocal");
    expect((await zfsOk(env, "get", "-H", "-o", "value,source", "zcsi:csi-snapshot-name", `${a}@snapshot-6f1c2d`)).trim()).toBe("snapshot-6f1c2d\tlocal");

    // The broken schedule became one Event per tick on its PV (the recorder de-duplicates in a cluster).
    expect(events.events).toHaveLength(ticks);
    expect(events.events[0]).toMatchObject({ pvName: "pvc-snap-d", type: "Warning", reason: "AutoSnapshotPolicyInvalid" });
    expect(events.events[0]?.message).toMatch(/unknown bucket "hourly\/banana"|count "banana"/);

    // A: 37 taken, 6 kept; C: 24 hourly + 2 daily taken, 1 kept.
    const text = await registry.metrics();
    expect(text).toMatch(/^zcsi_snapshots_taken_total\{pool_host="alice"\} 63$/m);
    expect(text).toMatch(/^zcsi_snapshots_pruned_total\{pool_host="alice"\} 56$/m);
    expect(text).toMatch(/^zcsi_snapshot_failures_total\{pool_host="alice",operation="policy"\} 37$/m);
    expect(text).toContain(`zcsi_snapshot_last_success_timestamp_seconds{volume_id="alice:${a}"} ${Date.parse("2026-03-04T03:10:00Z") / 1000}`);
  });
});

describe("the snapshotter's cost per tick does not grow with the number of volumes", () => {
  let env: ControllerEnv;
  let parent: string;
  beforeAll(async () => {
    env = await startControllerEnv();
    parent = env.hosts[0]!.parent;
  });
  afterAll(async () => {
    await env?.stop();
  });

  it("starts and stops as the zcsi snapshotter command does (no leader election, metrics on)", async () => {
    const role = await startSnapshotterRole(env.config, silentLogger, { leaderElection: false, metricsAddress: "127.0.0.1:0", tickIntervalSeconds: "3600" });
    await role.close();
    await expect(startSnapshotterRole(env.config, silentLogger, { leaderElection: false, tickIntervalSeconds: "0" })).rejects.toThrow(/--snapshot-interval/);
  });

  async function createVolumes(from: number, to: number): Promise<void> {
    // Straight through zfs (not CreateVolume): only the properties the snapshotter reads matter here.
    await times(to - from, 4, (k) => zfsOk(env, "create", "-o", "canmount=off", "-o", `zcsi:csi-name=vol-${from + k}`, "-o", "zcsi:snapshot-schedule=hourly=1", `${parent}/vol-${from + k}`));
  }

  // ~800 zfs commands at 200 volumes: seconds on zfs-fuse, minutes under the VM's emulated CPU
  // (~0.3 s a command). 40 still shows a per-tick cost that does not grow with the count.
  const many = zfsBackend() === "openzfs-vm" ? 40 : 200;

  it(`runs one discovery command for 5 volumes and for ${many}, plus one command per snapshot taken or pruned`, async () => {
    const clock = new ManualClock("2026-03-02T00:00:30Z");
    const scheduler = new SnapshotScheduler(env.poolHosts, { clock, logger: silentLogger });
    await createVolumes(0, 5);
    await tickAt(env, scheduler, clock, "2026-03-02T00:00:30Z"); // first snapshots (and the one-time capability probe)
    const steady5 = await tickAt(env, scheduler, clock, "2026-03-02T00:01:30Z");
    const due5 = await tickAt(env, scheduler, clock, "2026-03-02T01:00:30Z");

    await createVolumes(5, many);
    await tickAt(env, scheduler, clock, "2026-03-02T01:01:30Z"); // the new volumes' first snapshots
    const steadyMany = await tickAt(env, scheduler, clock, "2026-03-02T01:02:30Z");
    const dueMany = await tickAt(env, scheduler, clock, "2026-03-02T02:00:30Z");

    expect(steady5.commands).toBe(1);
    expect(steadyMany.commands).toBe(steady5.commands);
    expect(steadyMany.gets).toBe(1);
    expect(due5.gets).toBe(1);
    expect(dueMany.gets).toBe(1);
    // hourly=1: each due volume gets one snapshot and loses the previous one.
    expect(due5.commands).toBe(1 + 5 + 5);
    expect(dueMany.commands).toBe(1 + many + many);
    const vols = volumeTicks(dueMany.report);
    expect(vols).toHaveLength(many);
    expect(vols.every((v) => v.taken === "zcsi-auto-2026-03-02T0200Z" && v.pruned.length === 1)).toBe(true);
    expect(await snapshotsOf(env, `${parent}/vol-${many - 1}`)).toEqual(["zcsi-auto-2026-03-02T0200Z"]);
  });
});
