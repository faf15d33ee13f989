import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { SnapshotScheduler } from "../../src/snapshots/scheduler.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { failure } from "../harness/csi-client.js";
import { ManualClock } from "../harness/fake-k8s.js";

/**
 * Scheduled snapshot groups (StorageClass snapshotGroup) on a real pool host, with a fake
 * clock: the members of a group on one host get one atomic snapshot per period and are pruned
 * as one; a group spread over two hosts is snapshotted per host and says so once.
 */
const MiB = 1024 * 1024;
const HOUR = 3_600_000;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let parent: string;
const logs: Record<string, unknown>[] = [];
const logger = pino({ level: "debug", base: undefined }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });

function req(name: string, parameters: Record<string, string>): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(8 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice", ...parameters } };
}

async function zfsOk(...args: string[]): Promise<string> {
  const r = await env.zfs(...args);
  if (r.exitCode !== 0) throw new Error(`zfs ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function autos(dataset: string): Promise<string[]> {
  const out = await zfsOk("list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset);
  return out.split("\n").filter((l) => l.startsWith(`${dataset}@zcsi-auto-`)).map((l) => l.slice(dataset.length + 1)).sort();
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"] });
  parent = env.hosts[0]!.parent;
});
afterAll(async () => {
  await env?.stop();
});

describe("snapshotGroup (StorageClass parameter)", () => {
  it("is validated like the other parameters: a bad name, or no schedule, is INVALID_ARGUMENT and creates nothing", async () => {
    const cases: Record<string, string>[] = [{ snapshotSchedule: "hourly=2", snapshotGroup: "Bad_Name" }, { snapshotGroup: "db" }, { snapshotSchedule: "hourly=2", snapshotGroup: "-db" }];
    for (const params of cases) {
      const err = await failure(env.client.createVolume(req("pvc-sg-bad", params)));
      expect(err.code, JSON.stringify(params)).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toMatch(/snapshotGroup/);
    }
    expect((await env.zfs("list", `${parent}/pvc-sg-bad`)).exitCode).not.toBe(0);
  });

  it("cannot be changed by ControllerModifyVolume (it is not a mutable parameter)", async () => {
    const v = (await env.client.createVolume(req("pvc-sg-immutable", { snapshotSchedule: "hourly=1" }))).volume!;
    expect(await failure(env.client.controllerModifyVolume({ volumeId: v.volumeId, mutableParameters: { snapshotGroup: "db" } }))).toMatchObject({ code: status.INVALID_ARGUMENT });
    await env.client.deleteVolume({ volumeId: v.volumeId });
  });
});

describe("the scheduler with a snapshot group", () => {
  const members = ["pvc-sg-data", "pvc-sg-wal", "pvc-sg-log"];
  let datasets: string[];
  let loner: string;
  let bobMember: string;
  let scheduler: SnapshotScheduler;
  const clock = new ManualClock("2026-03-02T00:10:00Z");

  beforeAll(async () => {
    datasets = [];
    for (const name of members) datasets.push((await env.client.createVolume(req(name, { snapshotSchedule: "hourly=2", snapshotGroup: "db" }))).volume!.volumeContext["dataset"]!);
    // Same schedule, no group: snapshotted alone, never part of the group's snapshot.
    loner = (await env.client.createVolume(req("pvc-sg-loner", { snapshotSchedule: "hourly=2" }))).volume!.volumeContext["dataset"]!;
    // The group's name on another pool host: one snapshot per host, logged once.
    bobMember = (await env.client.createVolume(req("pvc-sg-bob", { poolHost: "bob", snapshotSchedule: "hourly=2", snapshotGroup: "db" }))).volume!.volumeContext["dataset"]!;
    // Ticks an hour apart here: a persisting condition is re-logged hourly by default, so once a day.
    scheduler = new SnapshotScheduler(env.poolHosts, { clock, logger, conditionRepeatMs: 24 * HOUR });
  });

  it("takes one atomic snapshot of the members per period (one createtxg), besides the loner's own", async () => {
    const report = await scheduler.tick();
    const first = "zcsi-auto-2026-03-02T0010Z";
    for (const d of datasets) expect(await autos(d)).toEqual([first]);
    const txgs = await Promise.all(datasets.map(async (d) => (await zfsOk("get", "-Hp", "-o", "value", "createtxg", `${d}@${first}`)).trim()));
    expect(new Set(txgs).size).toBe(1);
    for (const d of datasets) expect((await zfsOk("get", "-H", "-o", "value", "zcsi:group-members", `${d}@${first}`)).trim()).toBe("pvc-sg-data,pvc-sg-log,pvc-sg-wal");
    // The loner has its own snapshot of the minute, not the group's (zfs-fuse's recursive form
    // destroyed the group's copy on it before the loner's own was taken).
    expect(await autos(loner)).toEqual([first]);
    expect((await zfsOk("get", "-H", "-o", "value", "zcsi:group-members", `${loner}@${first}`)).trim()).toBe("-");
    expect(await autos(bobMember)).toEqual([first]);
    const alice = report.hosts.find((h) => h.poolHost === "alice")!;
    expect(alice.volumes.filter((v) => v.taken === first).map((v) => v.dataset).sort()).toEqual([...datasets, loner].sort());
    expect(alice.volumes.flatMap((v) => v.failures)).toEqual([]);
    // Nothing else below the parent kept the group's snapshot (the parent itself included).
    const all = (await zfsOk("list", "-H", "-o", "name", "-t", "snapshot", "-r", parent)).split("\n").filter((l) => l.endsWith(`@${first}`));
    expect(all.sort()).toEqual([...datasets, loner].map((d) => `${d}@${first}`).sort());
  });

  it("logs a group spread over two pool hosts once, not every tick", async () => {
    clock.advance(HOUR);
    await scheduler.tick();
    const spread = logs.filter((l) => l["snapshotGroup"] === "db" && typeof l["msg"] === "string" && (l["msg"] as string).includes("pool hosts alice, bob"));
    expect(spread).toHaveLength(1);
    expect(spread[0]).toMatchObject({ level: 40, condition: "started" });
  });

  it("prunes the members as one, and keeps all of a group snapshot while one member's copy is held", async () => {
    // Now two per member (00:10, 01:10); hourly=2 drops 00:10 at the 02:10 tick. Hold data's copy.
    const oldest = "zcsi-auto-2026-03-02T0010Z";
    await zfsOk("hold", "keep", `${datasets[0]}@${oldest}`);
    clock.advance(HOUR);
    const report = await scheduler.tick();
    for (const d of datasets) expect(await autos(d)).toEqual([oldest, "zcsi-auto-2026-03-02T0110Z", "zcsi-auto-2026-03-02T0210Z"]);
    const kept = report.hosts.find((h) => h.poolHost === "alice")!.volumes.filter((v) => datasets.includes(v.dataset)).map((v) => v.protected.map((p) => p.name));
    expect(kept).toEqual([[oldest], [oldest], [oldest]]);
    // The loner, alone, pruned its own.
    expect(await autos(loner)).toEqual(["zcsi-auto-2026-03-02T0110Z", "zcsi-auto-2026-03-02T0210Z"]);
    // Released: the next tick drops it from every member at once.
    await zfsOk("release", "keep", `${datasets[0]}@${oldest}`);
    clock.advance(HOUR);
    await scheduler.tick();
    for (const d of datasets) expect(await autos(d)).toEqual(["zcsi-auto-2026-03-02T0210Z", "zcsi-auto-2026-03-02T0310Z"]);
  });

  it("snapshots members alone while their schedules disagree, and says so once", async () => {
    await zfsOk("set", "zcsi:snapshot-schedule=hourly=3", datasets[2]!);
    clock.advance(HOUR);
    await scheduler.tick();
    clock.advance(HOUR);
    await scheduler.tick();
    const taken = "zcsi-auto-2026-03-02T0510Z";
    // Each member has the period's snapshot, taken alone (no group mark).
    for (const d of datasets) expect((await zfsOk("get", "-H", "-o", "value", "zcsi:group-members", `${d}@${taken}`)).trim()).toBe("-");
    const disagree = logs.filter((l) => typeof l["msg"] === "string" && (l["msg"] as string).includes("members have different or unreadable schedules"));
    expect(disagree).toHaveLength(1);
  });
});
