import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { silentLogger } from "../../src/log.js";
import { SnapshotScheduler } from "../../src/snapshots/scheduler.js";
import { zfsBackend } from "../harness/backend.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { ManualClock } from "../harness/fake-k8s.js";
import { failure } from "../harness/csi-client.js";

/**
 * ControllerModifyVolume (a PVC switching VolumeAttributesClass) and CreateVolume's
 * mutable_parameters, through the CSI client against a real pool over SSH, checked with
 * `zfs get` on the pool host.
 */

const MiB = 1024 * 1024;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

function req(name: string, parameters: Record<string, string> = {}, mutableParameters: Record<string, string> = {}): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(8 * MiB) }, volumeCapabilities: [mountCap], parameters: { "csi.storage.k8s.io/pv/name": name, ...parameters }, mutableParameters };
}

let env: ControllerEnv;
let parent: string;

/** `zfs get` on the pool host: property → value (with its source, so a local value is told from a default). */
async function props(dataset: string, ...names: string[]): Promise<Record<string, string>> {
  const r = await env.zfs("get", "-Hp", "-o", "property,value,source", names.join(","), dataset);
  if (r.exitCode !== 0) throw new Error(`zfs get ${dataset}: ${r.stderr}`);
  return Object.fromEntries(r.stdout.trim().split("\n").map((l) => { const [p, v, s] = l.split("\t"); return [p!, `${v}${s === "local" ? "" : ` (${s})`}`]; }));
}

/** The dataset of a volume id (`alice:<pool>/k8s/pvc-1`): the pool names the host env.zfs runs on. */
function datasetOf(volumeId: string | undefined): string {
  return (volumeId ?? "").slice((volumeId ?? "").indexOf(":") + 1);
}

function zfsSets(): number {
  return (env.poolHosts.get("alice").exec as InstrumentedExecutor).counts.get("zfs set") ?? 0;
}

const WATCHED = ["compression", "recordsize", "atime", "zcsi:snapshot-schedule", "zcsi:replicate-to", "zcsi:replication-interval", "zcsi:parameters"];

beforeAll(async () => {
  // Two hosts: replicateTo needs another one to name.
  env = await startControllerEnv({ hostNames: ["alice", "bob"], poolSizeMiB: 256 });
  parent = env.hosts[0]!.parent;
});
afterAll(async () => {
  await env?.stop();
});

describe("ControllerModifyVolume", () => {
  it("is advertised as MODIFY_VOLUME", async () => {
    const caps = await env.client.controllerGetCapabilities({});
    expect(caps.capabilities.map((c) => c.rpc?.type)).toContain("MODIFY_VOLUME");
  });

  it("changes every mutable parameter of a live volume, in one zfs set where the host takes several, and the stored parameters follow", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-all", { poolHost: "alice", compression: "lzjb", atime: "on" }));
    const dataset = `${parent}/pvc-mod-all`;
    const before = zfsSets();
    await env.client.controllerModifyVolume({
      volumeId: volume!.volumeId,
      mutableParameters: { compression: "gzip-9", recordsize: "32K", atime: "off", snapshotSchedule: "daily=7, hourly=24", replicateTo: "bob", replicationBandwidth: "1Mi", "csi.storage.k8s.io/pvc/name": "data" },
    });
    expect(await props(dataset, ...WATCHED, "zcsi:replication-bandwidth")).toEqual({
      compression: "gzip-9",
      recordsize: "32768",
      atime: "off",
      "zcsi:snapshot-schedule": "hourly=24,daily=7",
      "zcsi:replicate-to": "bob",
      "zcsi:replication-interval": "15m",
      "zcsi:replication-bandwidth": "1048576",
      "zcsi:parameters": '{"atime":"off","compression":"gzip-9","poolHost":"alice","recordsize":"32768","replicateTo":"bob","replicationBandwidth":"1048576","snapshotSchedule":"hourly=24,daily=7"}',
    });
    // 8 properties: one command on OpenZFS; zfs-fuse's `zfs set` takes one assignment per call.
    const caps = await env.poolHosts.get("alice").zfs.capabilities();
    expect(zfsSets() - before).toBe(caps.multiPropertySet ? 1 : 8);

    // Only the keys given change; the others keep their values.
    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { replicateTo: "bob", replicationInterval: "1h" } });
    expect(await props(dataset, "compression", "zcsi:replicate-to", "zcsi:replication-interval", "zcsi:snapshot-schedule")).toEqual({
      compression: "gzip-9",
      "zcsi:replicate-to": "bob",
      "zcsi:replication-interval": "1h",
      "zcsi:snapshot-schedule": "hourly=24,daily=7",
    });
  });

  it("compresses what is written after the change with the new setting: the compression ratio grows", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-ratio", { poolHost: "alice", compression: "off" }, {}));
    const dataset = datasetOf(volume?.volumeId);
    const files = env.hosts[0]!.pool.files;
    const mountpoint = volume!.volumeContext["mountpoint"]!;
    const text = Buffer.from("zcsi modify volume ".repeat(1 << 16)); // ~1.2 MiB, compresses well
    const ratio = async (): Promise<number> => {
      await files.sync();
      return Number.parseFloat((await env.zfs("get", "-H", "-o", "value", "compressratio", dataset)).stdout);
    };
    await files.write(`${mountpoint}/before`, text);
    expect(await ratio()).toBe(1);
    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { compression: "gzip" } });
    await files.write(`${mountpoint}/after`, text);
    // The ratio is accounted when the transaction group commits: wait for it (bounded).
    let seen = 1;
    for (let i = 0; i < 30 && seen <= 1; i++) seen = await ratio();
    expect(seen).toBeGreaterThan(1.5);
    expect(await files.read(`${mountpoint}/before`)).toBe(text.toString());
  });

  it("is idempotent: the same request again answers OK and leaves the same properties", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-again"));
    const dataset = datasetOf(volume?.volumeId);
    const change = { volumeId: volume!.volumeId, mutableParameters: { compression: "gzip", snapshotSchedule: "hourly=3" } };
    await env.client.controllerModifyVolume(change);
    const once = await props(dataset, ...WATCHED);
    await env.client.controllerModifyVolume(change);
    expect(await props(dataset, ...WATCHED)).toEqual(once);
    expect(once).toMatchObject({ compression: "gzip", "zcsi:snapshot-schedule": "hourly=3", "zcsi:parameters": '{"compression":"gzip","snapshotSchedule":"hourly=3"}' });
    // Only sidecar keys: nothing to change, OK.
    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { "csi.storage.k8s.io/pvc/name": "data" } });
    expect(await props(dataset, ...WATCHED)).toEqual(once);
  });

  it("answers INVALID_ARGUMENT without a volume_id, NOT_FOUND for a volume that does not exist", async () => {
    expect(await failure(env.client.controllerModifyVolume({ volumeId: "", mutableParameters: { compression: "gzip" } }))).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/volume_id is required/) });
    expect(await failure(env.client.controllerModifyVolume({ volumeId: `alice:${parent}/pvc-never-made`, mutableParameters: { compression: "gzip" } }))).toMatchObject({ code: status.NOT_FOUND });
    expect(await failure(env.client.controllerModifyVolume({ volumeId: `nobody:${parent}/pvc-1`, mutableParameters: { compression: "gzip" } }))).toMatchObject({ code: status.NOT_FOUND });
    expect((await env.zfs("list", `${parent}/pvc-never-made`)).exitCode).not.toBe(0);
  });

  it("refuses what cannot change, and bad values, with INVALID_ARGUMENT and nothing changed", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-bad", { poolHost: "alice", compression: "lzjb", snapshotSchedule: "hourly=1" }));
    const dataset = `${parent}/pvc-mod-bad`;
    const before = await props(dataset, ...WATCHED);
    const sets = zfsSets();
    const cases: [Record<string, string>, RegExp][] = [
      [{ compression: "gzip", poolHost: "bob" }, /poolHost is fixed when a volume is created/],
      [{ compression: "gzip", uid: "1000" }, /uid is fixed/],
      [{ compression: "gzip", compresion: "lz4" }, /unknown parameter "compresion"/],
      [{ compression: "gzip", recordsize: "100K" }, /recordsize="100K": must be a power of two/],
      [{ compression: "gzip", snapshotSchedule: "hourly=3,dayly=2" }, /unknown bucket "dayly"/],
      [{ compression: "gzip", replicateTo: "alice" }, /names the volume's own pool host alice/],
      [{ compression: "gzip", replicateTo: "dave" }, /no such pool host in the config: dave/],
      [{ compression: "gzip", replicationInterval: "1h" }, /needs replicateTo/],
    ];
    for (const [mutableParameters, message] of cases) {
      expect(await failure(env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters })), JSON.stringify(mutableParameters)).toMatchObject({
        code: status.INVALID_ARGUMENT,
        details: expect.stringMatching(message),
      });
    }
    expect(await props(dataset, ...WATCHED)).toEqual(before);
    expect(zfsSets()).toBe(sets);
  });

  it.runIf(zfsBackend() === "zfs-fuse")("refuses a value the pool host cannot take (zfs-fuse has no lz4), naming the host, with nothing changed", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-host", { poolHost: "alice" }));
    const dataset = `${parent}/pvc-mod-host`;
    const before = await props(dataset, ...WATCHED);
    const refused: Record<string, string>[] = [{ atime: "off", compression: "lz4" }, { atime: "off", recordsize: "1M" }];
    for (const mutableParameters of refused) {
      expect(await failure(env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters }))).toMatchObject({
        code: status.INVALID_ARGUMENT,
        details: expect.stringMatching(/pool host alice runs zfs-fuse/),
      });
    }
    expect(await props(dataset, ...WATCHED)).toEqual(before);
  });
});

describe("CreateVolume with mutable_parameters", () => {
  it("applies them over the parameters, and a retry compares against what the volume has now", async () => {
    const first = req("pvc-mut-create", { compression: "lzjb", atime: "off" }, { compression: "gzip-2" });
    const { volume } = await env.client.createVolume(first);
    const dataset = datasetOf(volume?.volumeId);
    expect(await props(dataset, "compression", "atime", "zcsi:parameters")).toEqual({ compression: "gzip-2", atime: "off", "zcsi:parameters": '{"atime":"off","compression":"gzip-2"}' });
    // The same request again: the same volume. Other mutable values: ALREADY_EXISTS.
    expect((await env.client.createVolume(first)).volume?.volumeId).toBe(volume!.volumeId);
    expect(await failure(env.client.createVolume(req("pvc-mut-create", { compression: "lzjb", atime: "off" }, { compression: "gzip-3" })))).toMatchObject({ code: status.ALREADY_EXISTS });

    // After a modification the stored parameters are the new ones: a request carrying them
    // matches, the original no longer does.
    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { compression: "gzip-5" } });
    expect((await env.client.createVolume(req("pvc-mut-create", { compression: "lzjb", atime: "off" }, { compression: "gzip-5" }))).volume?.volumeId).toBe(volume!.volumeId);
    expect(await failure(env.client.createVolume(first))).toMatchObject({ code: status.ALREADY_EXISTS });
    const checked = await env.client.validateVolumeCapabilities({ volumeId: volume!.volumeId, volumeCapabilities: [mountCap], parameters: { atime: "off", compression: "lzjb" }, mutableParameters: { compression: "gzip-5" } });
    expect(checked.confirmed).toBeTruthy();
  });

  it("refuses a key that is not mutable among mutable_parameters, creating nothing", async () => {
    expect(await failure(env.client.createVolume(req("pvc-mut-bad", {}, { poolHost: "alice" })))).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/poolHost is fixed/) });
    for (const host of env.hosts) expect((await env.zfs("list", `${host.parent}/pvc-mut-bad`)).exitCode).not.toBe(0);
  });
});

describe("the snapshotter after a ModifyVolume", () => {
  it("takes and stops taking snapshots at its next tick as the new schedule says", async () => {
    const { volume } = await env.client.createVolume(req("pvc-mod-sched", { poolHost: "alice" }));
    const dataset = `${parent}/pvc-mod-sched`;
    const autos = async (): Promise<string[]> => {
      const r = await env.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset);
      return r.stdout.split("\n").filter((l) => l.startsWith(`${dataset}@zcsi-auto-`)).map((l) => l.slice(dataset.length + 1));
    };
    const clock = new ManualClock("2026-05-04T10:05:00Z");
    const scheduler = new SnapshotScheduler(env.poolHosts, { clock, logger: silentLogger });
    await scheduler.tick();
    expect(await autos()).toEqual([]); // no schedule: none taken

    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { snapshotSchedule: "hourly=2" } });
    clock.set("2026-05-04T11:05:00Z");
    await scheduler.tick();
    expect(await autos()).toEqual(["zcsi-auto-2026-05-04T1105Z"]);

    await env.client.controllerModifyVolume({ volumeId: volume!.volumeId, mutableParameters: { snapshotSchedule: "off" } });
    clock.set("2026-05-04T12:05:00Z");
    await scheduler.tick();
    // Off: nothing taken, and nothing pruned either (what exists stays until someone decides).
    expect(await autos()).toEqual(["zcsi-auto-2026-05-04T1105Z"]);
  });
});
