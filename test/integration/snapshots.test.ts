import { status } from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";
import { VolumeService } from "../../src/volumes/service.js";
import { SnapshotService } from "../../src/volumes/snapshots.js";
import { zfsBackend } from "../harness/backend.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { failure } from "../harness/csi-client.js";
import { times } from "../harness/parallel.js";

const MiB = 1024 * 1024;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let parent: string;
let bobParent: string;

/** Volumes go to alice unless a test says otherwise: two hosts make the cross-host cases real. */
function req(name: string, extra: Partial<CreateVolumeRequest> = {}): CreateVolumeRequest {
  return { name, capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice" }, ...extra };
}

function fromSnapshot(snapshotId: string): Partial<CreateVolumeRequest> {
  return { volumeContentSource: { snapshot: { snapshotId } } };
}

function fromVolume(volumeId: string): Partial<CreateVolumeRequest> {
  return { volumeContentSource: { volume: { volumeId } } };
}

async function code(p: Promise<unknown>): Promise<number> {
  return (await failure(p)).code;
}

/** Every dataset and snapshot below alice's parent (the parent itself excluded). */
async function everything(): Promise<string[]> {
  const r = await env.zfs("list", "-H", "-o", "name", "-t", "all", "-r", parent);
  return r.stdout.split("\n").filter((l) => l !== "" && l !== parent);
}

async function snapshotsOf(dataset: string): Promise<string[]> {
  const r = await env.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset);
  return r.stdout.split("\n").filter((l) => l !== "");
}

async function prop(name: string, property: string): Promise<string> {
  const r = await env.zfs("get", "-Hp", "-o", "value", property, name);
  return r.stdout.trim();
}

function alice(): InstrumentedExecutor {
  return env.poolHosts.get("alice").exec as InstrumentedExecutor;
}

function bob(): InstrumentedExecutor {
  return env.poolHosts.get("bob").exec as InstrumentedExecutor;
}

/**
 * Files are written and checksummed on the pool host through its executor (never this
 * machine's filesystem), so the suite runs unchanged on every backend (test/harness/backend.ts).
 * Volumes here live on alice unless a test says otherwise.
 */
function poolHost(name = "alice"): ControllerEnv["hosts"][number] {
  return env.hosts.find((h) => h.name === name)!;
}

/** Writes `files` (name → content) into a volume's root; returns name → sha256 of what was written. */
async function write(mountpoint: string, files: Record<string, Buffer>, host = "alice"): Promise<Record<string, string>> {
  const sums: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    await poolHost(host).pool.files.write(`${mountpoint}/${name}`, content);
    sums[name] = createHash("sha256").update(content).digest("hex");
  }
  return sums;
}

/** name → sha256 of the files as the pool host reads them now. */
async function sums(mountpoint: string, names: string[], host = "alice"): Promise<Record<string, string>> {
  const r = await poolHost(host).pool.exec.run(["sha256sum", ...names.map((n) => `${mountpoint}/${n}`)]);
  if (r.exitCode !== 0) throw new Error(`sha256sum: ${r.stderr}`);
  const byPath = new Map(r.stdout.trim().split("\n").map((l) => [l.slice(66), l.slice(0, 64)] as const));
  return Object.fromEntries(names.map((n) => [n, byPath.get(`${mountpoint}/${n}`) ?? "missing"]));
}

async function volume(name: string, extra: Partial<CreateVolumeRequest> = {}): Promise<{ id: string; mountpoint: string; dataset: string }> {
  const res = await env.client.createVolume(req(name, extra));
  const v = res.volume!;
  return { id: v.volumeId, mountpoint: v.volumeContext["mountpoint"]!, dataset: v.volumeContext["dataset"]! };
}

async function snapshot(sourceVolumeId: string, name: string): Promise<string> {
  return (await env.client.createSnapshot({ sourceVolumeId, name })).snapshot!.snapshotId;
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], configExtra: { defaultCapacityBytes: String(32 * MiB) } });
  parent = env.hosts[0]!.parent;
  bobParent = env.hosts[1]!.parent;
});
afterAll(async () => {
  await env?.stop();
});

describe("CreateSnapshot", () => {
  it("takes a marked ZFS snapshot named after the CSI name; handle, size and creation time come from ZFS", async () => {
    const v = await volume("pvc-snap-basic");
    await write(v.mountpoint, { data: randomBytes(3 * MiB) });
    const res = await env.client.createSnapshot({
      sourceVolumeId: v.id,
      name: "snapshot-0b7d4f43",
      parameters: {
        "csi.storage.k8s.io/volumesnapshot/name": "nightly",
        "csi.storage.k8s.io/volumesnapshot/namespace": "db",
        "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-0b7d4f43",
      },
    });
    const zfsName = `${v.dataset}@snapshot-0b7d4f43`;
    expect(res.snapshot).toMatchObject({ snapshotId: `alice:${zfsName}`, sourceVolumeId: v.id, readyToUse: true });
    expect(res.snapshot!.sizeBytes).toBe(await prop(zfsName, "referenced"));
    expect(Number(res.snapshot!.sizeBytes)).toBeGreaterThanOrEqual(3 * MiB);
    expect(res.snapshot!.creationTime).toEqual({ seconds: await prop(zfsName, "creation"), nanos: 0 });
    expect(await prop(zfsName, "zcsi:csi-snapshot-name")).toBe("snapshot-0b7d4f43");
    expect(await prop(zfsName, "zcsi:volumesnapshot")).toBe("db/nightly");
    expect(await prop(zfsName, "zcsi:volumesnapshotcontent")).toBe("snapcontent-0b7d4f43");
  });

  it("returns the same snapshot for the same name and source, taking no new one", async () => {
    const v = await volume("pvc-snap-idem");
    const first = await env.client.createSnapshot({ sourceVolumeId: v.id, name: "snapshot-idem" });
    const snapshotsTaken = alice().counts.get("zfs snapshot") ?? 0;
    const before = alice().count;
    const again = await env.client.createSnapshot({ sourceVolumeId: v.id, name: "snapshot-idem" });
    expect(again.snapshot).toEqual(first.snapshot);
    expect(alice().counts.get("zfs snapshot") ?? 0).toBe(snapshotsTaken);
    expect(alice().count - before).toBe(1); // one batched lookup, nothing else
    expect(await snapshotsOf(v.dataset)).toEqual([`${v.dataset}@snapshot-idem`]);
  });

  it("takes a new snapshot in three commands: one batched lookup, zfs snapshot, one zfs get", async () => {
    const v = await volume("pvc-snap-cost");
    const before = alice().count;
    await snapshot(v.id, "snapshot-cost");
    expect(alice().count - before).toBe(3);
  });

  it("returns ALREADY_EXISTS for a name already used on another volume of the host, touching neither", async () => {
    const a = await volume("pvc-snap-owner");
    const b = await volume("pvc-snap-other");
    await snapshot(a.id, "snapshot-shared");
    const err = await failure(env.client.createSnapshot({ sourceVolumeId: b.id, name: "snapshot-shared" }));
    expect(err.code).toBe(status.ALREADY_EXISTS);
    expect(err.details).toContain(`${a.dataset}@snapshot-shared`);
    expect(await snapshotsOf(b.dataset)).toEqual([]);
  });

  it("returns ALREADY_EXISTS when a snapshot zcsi did not take has the name", async () => {
    const v = await volume("pvc-snap-byhand");
    await env.zfs("snapshot", `${v.dataset}@snapshot-byhand`);
    expect(await code(env.client.createSnapshot({ sourceVolumeId: v.id, name: "snapshot-byhand" }))).toBe(status.ALREADY_EXISTS);
    expect(await prop(`${v.dataset}@snapshot-byhand`, "zcsi:csi-snapshot-name")).toBe("-");
  });

  it("returns NOT_FOUND for a source volume that does not exist", async () => {
    for (const sourceVolumeId of [`alice:${parent}/pvc-nope`, "nobody:tank/k8s/pvc-1", `alice:${parent}/../x`, `alice:${parent}`]) {
      expect(await code(env.client.createSnapshot({ sourceVolumeId, name: "snapshot-orphan" }))).toBe(status.NOT_FOUND);
    }
    expect((await everything()).some((n) => n.endsWith("@snapshot-orphan"))).toBe(false);
  });

  it("lets one of several concurrent requests for a name run and ABORTs the others", async () => {
    const v = await volume("pvc-snap-race");
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => env.client.createSnapshot({ sourceVolumeId: v.id, name: "snapshot-race" })));
    const codes = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as { code: number }).code] : []));
    expect(results.some((r) => r.status === "fulfilled")).toBe(true);
    expect(codes.length).toBeGreaterThanOrEqual(1);
    expect(new Set(codes)).toEqual(new Set([status.ABORTED]));
    expect(await snapshotsOf(v.dataset)).toEqual([`${v.dataset}@snapshot-race`]);
  });

  describe("hostile input", () => {
    let source: string;
    beforeAll(async () => {
      source = (await volume("pvc-snap-hostile")).id;
    });
    const names = [
      "", "-r", "--help", ".", "..", "a/b", "../x", "a@b", "a b", "a\nb", "a;id", "$(reboot)", "`id`", "a|b", "a'b", 'a"b', "a\\b", "a#b", "a%b",
      "a,b", "a=b", "x".repeat(300), "卷", "a\u0000b", "zcsi-auto-hourly", "zcsi-clone-pvc-1", "zcsi-x",
    ];
    it.each(names)("name %j is INVALID_ARGUMENT and runs no command", async (name) => {
      const before = alice().count;
      expect(await code(env.client.createSnapshot({ sourceVolumeId: source, name }))).toBe(status.INVALID_ARGUMENT);
      expect(alice().count).toBe(before);
    });

    it.each<Record<string, string>>([{ retention: "7" }, { "zcsi:csi-snapshot-name": "x" }, { "": "x" }])("VolumeSnapshotClass parameters %j are INVALID_ARGUMENT", async (parameters) => {
      const before = alice().count;
      expect(await code(env.client.createSnapshot({ sourceVolumeId: source, name: "snapshot-params", parameters }))).toBe(status.INVALID_ARGUMENT);
      expect(alice().count).toBe(before);
    });

    it("requires a source volume id", async () => {
      expect(await code(env.client.createSnapshot({ sourceVolumeId: "", name: "snapshot-nosource" }))).toBe(status.INVALID_ARGUMENT);
    });
  });
});

describe("restoring a snapshot (CreateVolume from a snapshot)", () => {
  let source: { id: string; mountpoint: string; dataset: string };
  let snapshotId: string;
  let old: Record<string, string>;
  let now: Record<string, string>;
  beforeAll(async () => {
    source = await volume("pvc-restore-src");
    old = await write(source.mountpoint, { a: randomBytes(2 * MiB), b: Buffer.from("version 1\n") });
    snapshotId = await snapshot(source.id, "snapshot-restore");
    now = await write(source.mountpoint, { a: randomBytes(2 * MiB), b: Buffer.from("version 2\n") });
  });

  it("gives the new volume the snapshot's content while the source keeps the new one", async () => {
    const res = await env.client.createVolume(req("pvc-restored", { capacityRange: { requiredBytes: String(24 * MiB) }, ...fromSnapshot(snapshotId) }));
    const v = res.volume!;
    expect(v.contentSource?.snapshot?.snapshotId).toBe(snapshotId);
    expect(v.capacityBytes).toBe(String(24 * MiB));
    const dataset = `${parent}/pvc-restored`;
    expect(await prop(dataset, "refquota")).toBe(String(24 * MiB));
    expect(await prop(dataset, "origin")).toBe(`${source.dataset}@snapshot-restore`); // default mode: a clone
    expect(await sums(v.volumeContext["mountpoint"]!, ["a", "b"])).toEqual(old);
    expect(await sums(source.mountpoint, ["a", "b"])).toEqual(now);
    expect(old).not.toEqual(now);
  });

  it("returns the same volume on a retry, and ALREADY_EXISTS for the name with another source", async () => {
    const first = (await env.client.createVolume(req("pvc-restored", { capacityRange: { requiredBytes: String(24 * MiB) }, ...fromSnapshot(snapshotId) }))).volume;
    const again = (await env.client.createVolume(req("pvc-restored", { capacityRange: { requiredBytes: String(24 * MiB) }, ...fromSnapshot(snapshotId) }))).volume;
    expect(again).toEqual(first);
    expect(await code(env.client.createVolume(req("pvc-restored", { capacityRange: { requiredBytes: String(24 * MiB) }, ...fromVolume(source.id) })))).toBe(status.ALREADY_EXISTS);
    expect(await code(env.client.createVolume(req("pvc-restored", { capacityRange: { requiredBytes: String(24 * MiB) } })))).toBe(status.ALREADY_EXISTS);
  });

  it("returns OUT_OF_RANGE when asked for less than the snapshot holds, and creates nothing", async () => {
    const size = BigInt((await env.client.getSnapshot({ snapshotId })).snapshot!.sizeBytes);
    const small = String(size - 1n);
    expect(await code(env.client.createVolume(req("pvc-restore-small", { capacityRange: { requiredBytes: small }, ...fromSnapshot(snapshotId) })))).toBe(status.OUT_OF_RANGE);
    expect(await code(env.client.createVolume(req("pvc-restore-small", { capacityRange: { limitBytes: small }, ...fromSnapshot(snapshotId) })))).toBe(status.OUT_OF_RANGE);
    expect((await everything()).some((n) => n.includes("pvc-restore-small"))).toBe(false);
  });

  it("without a capacity range sizes the volume to hold the snapshot", async () => {
    const res = await env.client.createVolume(req("pvc-restore-nosize", { capacityRange: null, ...fromSnapshot(snapshotId) }));
    expect(BigInt(res.volume!.capacityBytes)).toBeGreaterThanOrEqual(32n * BigInt(MiB));
  });

  it("returns NOT_FOUND for a snapshot that does not exist or is not a CSI snapshot", async () => {
    await env.zfs("snapshot", `${source.dataset}@byhand`);
    for (const id of [`alice:${source.dataset}@snapshot-nope`, `alice:${source.dataset}@byhand`, "nobody:tank/x@y", `alice:${source.dataset}`]) {
      expect(await code(env.client.createVolume(req("pvc-restore-missing", fromSnapshot(id))))).toBe(status.NOT_FOUND);
    }
    await env.zfs("destroy", `${source.dataset}@byhand`);
    expect((await everything()).some((n) => n.includes("pvc-restore-missing"))).toBe(false);
  });

  it("returns INVALID_ARGUMENT naming both hosts when the StorageClass asks for another pool host", async () => {
    const err = await failure(env.client.createVolume(req("pvc-restore-bob", { parameters: { poolHost: "bob" }, ...fromSnapshot(snapshotId) })));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/alice.*bob/);
    expect((await env.zfs("list", "-H", "-o", "name", "-r", bobParent)).stdout.trim()).toBe(bobParent);
  });

  it("copy mode makes an independent volume: the snapshot can be deleted at once and the data stays", async () => {
    const copyParams = { poolHost: "alice", restoreMode: "copy" };
    const res = await env.client.createVolume(req("pvc-restore-copy", { parameters: copyParams, capacityRange: { requiredBytes: String(20 * MiB) }, ...fromSnapshot(snapshotId) }));
    const dataset = `${parent}/pvc-restore-copy`;
    const mountpoint = res.volume!.volumeContext["mountpoint"]!;
    expect(res.volume!.contentSource?.snapshot?.snapshotId).toBe(snapshotId);
    expect(await prop(dataset, "origin")).toBe("-");
    expect(await prop(dataset, "mounted")).toBe("yes");
    expect(await prop(dataset, "refquota")).toBe(String(20 * MiB));
    expect(await prop(dataset, "zcsi:state")).toBe("ready");
    expect(await snapshotsOf(dataset)).toEqual([]);
    expect((await everything()).some((n) => n.includes("zcsi-recv-"))).toBe(false);
    expect(await sums(mountpoint, ["a", "b"])).toEqual(old);

    // A snapshot only copies were made from goes at once (no defer_destroy), data untouched.
    const copySnap = await snapshot(source.id, "snapshot-copied");
    await env.client.createVolume(req("pvc-restore-copy2", { parameters: copyParams, ...fromSnapshot(copySnap) }));
    await env.client.deleteSnapshot({ snapshotId: copySnap });
    expect(await snapshotsOf(source.dataset)).not.toContain(`${source.dataset}@snapshot-copied`);
    expect(await sums(`${env.hosts[0]!.mountRoot}/pvc-restore-copy2`, ["a", "b"])).toEqual(now);

    const again = await env.client.createVolume(req("pvc-restore-copy", { parameters: copyParams, capacityRange: { requiredBytes: String(20 * MiB) }, ...fromSnapshot(snapshotId) }));
    expect(again.volume).toEqual(res.volume);
  });
});

describe("DeleteSnapshot", () => {
  it("defers a snapshot a restored volume depends on: the clone keeps working, and deleting it lets the snapshot go", async () => {
    const src = await volume("pvc-defer-src");
    const old = await write(src.mountpoint, { data: randomBytes(MiB) });
    const snap = await snapshot(src.id, "snapshot-defer");
    const restored = await volume("pvc-defer-clone", fromSnapshot(snap));
    const zfsName = `${src.dataset}@snapshot-defer`;

    await env.client.deleteSnapshot({ snapshotId: snap });
    expect(await prop(zfsName, "defer_destroy")).toBe("on"); // kept by ZFS for the clone
    expect(await sums(restored.mountpoint, ["data"])).toEqual(old);
    const more = await write(restored.mountpoint, { more: Buffer.from("still writable\n") });
    expect(await sums(restored.mountpoint, ["more"])).toEqual(more);

    // Gone for CSI: not listed, not gettable, not restorable, and a second delete is OK.
    expect((await env.client.listSnapshots({ sourceVolumeId: src.id })).entries).toEqual([]);
    expect(await code(env.client.getSnapshot({ snapshotId: snap }))).toBe(status.NOT_FOUND);
    expect(await code(env.client.createVolume(req("pvc-defer-again", fromSnapshot(snap))))).toBe(status.NOT_FOUND);
    await env.client.deleteSnapshot({ snapshotId: snap });
    // Its name stays taken until ZFS frees it.
    expect(await code(env.client.createSnapshot({ sourceVolumeId: src.id, name: "snapshot-defer" }))).toBe(status.ALREADY_EXISTS);

    await env.client.deleteVolume({ volumeId: restored.id });
    expect(await snapshotsOf(src.dataset)).toEqual([]);
    await env.client.deleteVolume({ volumeId: src.id });
    expect((await everything()).filter((n) => n.includes("pvc-defer"))).toEqual([]);
  });

  it("destroys a snapshot without clones at once: one command on OpenZFS (a channel program checks and destroys), two on zfs-fuse (zfs get, zfs destroy)", async () => {
    const v = await volume("pvc-del-snap");
    const snap = await snapshot(v.id, "snapshot-plain");
    const openzfs = (await env.poolHosts.get("alice").zfs.capabilities()).channelPrograms;
    expect(openzfs).toBe(env.backend === "openzfs-vm");
    const counts = (): Record<string, number> => ({ all: alice().count, get: alice().counts.get("zfs get") ?? 0, destroy: alice().counts.get("zfs destroy") ?? 0, program: alice().counts.get("zfs program") ?? 0 });
    const delta = (before: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(counts()).map(([k, n]) => [k, n - before[k]!]));
    const before = counts();
    await env.client.deleteSnapshot({ snapshotId: snap });
    expect(delta(before)).toEqual(openzfs ? { all: 1, get: 0, destroy: 0, program: 1 } : { all: 2, get: 1, destroy: 1, program: 0 });
    expect(await snapshotsOf(v.dataset)).toEqual([]);
    // A retry finds nothing and destroys nothing: one command.
    const retry = counts();
    await env.client.deleteSnapshot({ snapshotId: snap });
    expect(delta(retry)).toEqual(openzfs ? { all: 1, get: 0, destroy: 0, program: 1 } : { all: 1, get: 1, destroy: 0, program: 0 });
  });

  it("defers a snapshot with a user hold: OK at once, gone for CSI, and ZFS frees it when the hold is released", async () => {
    const v = await volume("pvc-del-held");
    const snap = await snapshot(v.id, "snapshot-held");
    const zfsName = `${v.dataset}@snapshot-held`;
    expect((await env.zfs("hold", "backup-tool", zfsName)).exitCode).toBe(0);
    await env.client.deleteSnapshot({ snapshotId: snap });
    expect(await prop(zfsName, "defer_destroy")).toBe("on");
    expect(await snapshotsOf(v.dataset)).toEqual([zfsName]);
    expect(await code(env.client.getSnapshot({ snapshotId: snap }))).toBe(status.NOT_FOUND);
    await env.client.deleteSnapshot({ snapshotId: snap }); // already deleted: OK
    expect((await env.zfs("release", "backup-tool", zfsName)).exitCode).toBe(0);
    expect(await snapshotsOf(v.dataset)).toEqual([]);
  });

  it("is OK for a snapshot that does not exist or cannot be ours, and runs nothing for the latter", async () => {
    await env.client.deleteSnapshot({ snapshotId: `alice:${parent}/pvc-nope@snapshot-nope` });
    const before = alice().count;
    for (const snapshotId of ["nobody:tank/k8s/a@b", `alice:${parent}/../etc@x`, "garbage", `alice:${parent}/pvc-1@a;b`]) {
      await env.client.deleteSnapshot({ snapshotId });
    }
    expect(alice().count).toBe(before);
    expect(await code(env.client.deleteSnapshot({ snapshotId: "" }))).toBe(status.INVALID_ARGUMENT);
  });

  it("refuses a snapshot zcsi did not take for CSI, leaving it alone", async () => {
    const v = await volume("pvc-del-byhand");
    await env.zfs("snapshot", `${v.dataset}@mine`);
    expect(await code(env.client.deleteSnapshot({ snapshotId: `alice:${v.dataset}@mine` }))).toBe(status.FAILED_PRECONDITION);
    expect(await snapshotsOf(v.dataset)).toEqual([`${v.dataset}@mine`]);
    await env.zfs("destroy", `${v.dataset}@mine`);
  });

  it("refuses a snapshot whose CSI mark is only inherited, or whose dataset is not a zcsi volume, leaving both", async () => {
    // The mark set on the volume itself: its snapshots show it "inherited", which never counts.
    const v = await volume("pvc-del-inherit");
    expect((await env.zfs("set", "zcsi:csi-snapshot-name=snapshot-inherited", v.dataset)).exitCode).toBe(0);
    expect((await env.zfs("snapshot", `${v.dataset}@snapshot-inherited`)).exitCode).toBe(0);
    const inherited = await failure(env.client.deleteSnapshot({ snapshotId: `alice:${v.dataset}@snapshot-inherited` }));
    expect(inherited.code).toBe(status.FAILED_PRECONDITION);
    expect(inherited.details).toContain(`${v.dataset}@snapshot-inherited`);
    expect(await snapshotsOf(v.dataset)).toEqual([`${v.dataset}@snapshot-inherited`]);
    // A dataset under the parent that zcsi did not create, with a snapshot marked like a CSI one.
    const foreign = `${parent}/pvc-del-foreign`;
    expect((await env.zfs("create", foreign)).exitCode).toBe(0);
    expect((await env.zfs("snapshot", "-o", "zcsi:csi-snapshot-name=snapshot-f", `${foreign}@snapshot-f`)).exitCode).toBe(0);
    expect(await code(env.client.deleteSnapshot({ snapshotId: `alice:${foreign}@snapshot-f` }))).toBe(status.FAILED_PRECONDITION);
    expect(await snapshotsOf(foreign)).toEqual([`${foreign}@snapshot-f`]);
    await env.zfs("destroy", "-r", foreign);
    await env.zfs("destroy", `${v.dataset}@snapshot-inherited`);
    await env.zfs("inherit", "zcsi:csi-snapshot-name", v.dataset);
  });

  it.runIf(zfsBackend() === "openzfs-vm")("destroys a snapshot someone is browsing under .zfs/snapshot (the channel program cannot unmount it; zfs destroy -d does)", async () => {
    const v = await volume("pvc-del-browsed");
    await write(v.mountpoint, { "a.txt": Buffer.from("seen through .zfs\n") });
    const snap = await snapshot(v.id, "snapshot-browsed");
    // Reading a file under .zfs/snapshot mounts the snapshot (automount).
    expect((await poolHost().pool.files.read(`${v.mountpoint}/.zfs/snapshot/snapshot-browsed/a.txt`)).trim()).toBe("seen through .zfs");
    const programs = alice().counts.get("zfs program") ?? 0;
    const destroys = alice().counts.get("zfs destroy") ?? 0;
    await env.client.deleteSnapshot({ snapshotId: snap });
    expect(await snapshotsOf(v.dataset)).toEqual([]);
    expect((alice().counts.get("zfs program") ?? 0) - programs).toBe(1);
    expect((alice().counts.get("zfs destroy") ?? 0) - destroys).toBe(1);
  });
});

describe("cloning a volume (CreateVolume from a volume)", () => {
  it("gives the clone the source's content; afterwards both diverge independently", async () => {
    const src = await volume("pvc-cl-src");
    const initial = await write(src.mountpoint, { a: randomBytes(MiB), b: Buffer.from("shared\n") });
    const res = await env.client.createVolume(req("pvc-cl-copy", fromVolume(src.id)));
    const clone = res.volume!;
    const cloneMount = clone.volumeContext["mountpoint"]!;
    expect(clone.contentSource?.volume?.volumeId).toBe(src.id);
    expect(clone.capacityBytes).toBe(String(16 * MiB));
    expect(await sums(cloneMount, ["a", "b"])).toEqual(initial);

    const srcNew = await write(src.mountpoint, { b: Buffer.from("source changed\n") });
    const cloneNew = await write(cloneMount, { b: Buffer.from("clone changed\n"), c: Buffer.from("only in clone\n") });
    expect(await sums(src.mountpoint, ["a", "b"])).toEqual({ a: initial.a, b: srcNew.b });
    expect(await sums(cloneMount, ["a", "b", "c"])).toEqual({ a: initial.a, ...cloneNew });

    // The clone's source snapshot is hidden: marked for deferred destroy, never listed.
    const hidden = `${src.dataset}@zcsi-clone-pvc-cl-copy`;
    expect(await prop(hidden, "defer_destroy")).toBe("on");
    expect((await env.client.listSnapshots({})).entries.map((e) => e.snapshot!.snapshotId)).not.toContain(`alice:${hidden}`);
    expect(await code(env.client.deleteSnapshot({ snapshotId: `alice:${hidden}` }))).toBe(status.FAILED_PRECONDITION);

    const again = await env.client.createVolume(req("pvc-cl-copy", fromVolume(src.id)));
    expect(again.volume).toEqual(clone);
  });

  it("lets the source be deleted first: the clone is promoted and keeps its data, nothing is left behind", async () => {
    const src = await volume("pvc-cl2-src");
    const initial = await write(src.mountpoint, { a: randomBytes(MiB) });
    const clone = await volume("pvc-cl2-clone", fromVolume(src.id));
    await env.client.deleteVolume({ volumeId: src.id });
    expect((await everything()).filter((n) => n.includes("pvc-cl2-src"))).toEqual([]);
    expect(await prop(clone.dataset, "origin")).toBe("-");
    expect(await snapshotsOf(clone.dataset)).toEqual([]); // the moved hidden snapshot went with its last clone
    expect(await sums(clone.mountpoint, ["a"])).toEqual(initial);
    await env.client.deleteVolume({ volumeId: clone.id });
    expect((await everything()).filter((n) => n.includes("pvc-cl2"))).toEqual([]);
  });

  it("releases the hidden snapshot when the clone is deleted", async () => {
    const src = await volume("pvc-cl3-src");
    const clone = await volume("pvc-cl3-clone", fromVolume(src.id));
    await env.client.deleteVolume({ volumeId: clone.id });
    expect(await snapshotsOf(src.dataset)).toEqual([]);
  });

  it("in copy mode leaves no snapshot and no dependency", async () => {
    const src = await volume("pvc-cl4-src");
    const initial = await write(src.mountpoint, { a: randomBytes(MiB) });
    const clone = await volume("pvc-cl4-copy", { parameters: { poolHost: "alice", restoreMode: "copy" }, ...fromVolume(src.id) });
    expect(await prop(clone.dataset, "origin")).toBe("-");
    expect(await snapshotsOf(src.dataset)).toEqual([]);
    expect(await snapshotsOf(clone.dataset)).toEqual([]);
    expect(await sums(clone.mountpoint, ["a"])).toEqual(initial);
  });

  it("returns NOT_FOUND for an unknown source, INVALID_ARGUMENT for another pool host, OUT_OF_RANGE below the source's data", async () => {
    const src = await volume("pvc-cl5-src");
    await write(src.mountpoint, { a: randomBytes(2 * MiB) });
    await env.zfs("snapshot", `${src.dataset}@sync`); // settles `referenced` on zfs-fuse
    await env.zfs("destroy", `${src.dataset}@sync`);
    expect(await code(env.client.createVolume(req("pvc-cl5-x", fromVolume(`alice:${parent}/pvc-nope`))))).toBe(status.NOT_FOUND);
    expect(await code(env.client.createVolume(req("pvc-cl5-x", { parameters: { poolHost: "bob" }, ...fromVolume(src.id) })))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolume(req("pvc-cl5-x", { capacityRange: { requiredBytes: String(MiB) }, ...fromVolume(src.id) })))).toBe(status.OUT_OF_RANGE);
    expect(await code(env.client.createVolume(req("pvc-cl5-x", { volumeContentSource: {} })))).toBe(status.INVALID_ARGUMENT);
    expect((await everything()).filter((n) => n.includes("pvc-cl5-x"))).toEqual([]);
  });
});

describe("DeleteVolume of a volume with snapshots", () => {
  it("refuses while a CSI snapshot exists, even one with a clone: FAILED_PRECONDITION naming it, nothing destroyed", async () => {
    const src = await volume("pvc-dv-src");
    const snap = await snapshot(src.id, "snapshot-dv");
    const restored = await volume("pvc-dv-restored", fromSnapshot(snap));
    const before = await everything();
    const err = await failure(env.client.deleteVolume({ volumeId: src.id }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(snap);
    expect(await everything()).toEqual(before);
    await env.client.deleteVolume({ volumeId: restored.id });
    await env.client.deleteSnapshot({ snapshotId: snap });
    await env.client.deleteVolume({ volumeId: src.id });
    expect((await everything()).filter((n) => n.includes("pvc-dv"))).toEqual([]);
  });

  it("deletes a source whose deleted snapshot still feeds a restored volume: the restore is promoted and keeps its data", async () => {
    const src = await volume("pvc-dv2-src");
    const old = await write(src.mountpoint, { a: randomBytes(MiB) });
    const snap = await snapshot(src.id, "snapshot-dv2");
    await write(src.mountpoint, { a: randomBytes(MiB) });
    const restored = await volume("pvc-dv2-restored", fromSnapshot(snap));
    await env.client.deleteSnapshot({ snapshotId: snap });
    await env.client.deleteVolume({ volumeId: src.id });
    expect((await everything()).filter((n) => n.includes("pvc-dv2"))).toEqual([restored.dataset]);
    expect(await prop(restored.dataset, "origin")).toBe("-");
    expect(await sums(restored.mountpoint, ["a"])).toEqual(old);
  });

  it("refuses a volume with a snapshot zcsi did not make, and leaves it", async () => {
    const v = await volume("pvc-dv3");
    await env.zfs("snapshot", `${v.dataset}@backup`);
    const err = await failure(env.client.deleteVolume({ volumeId: v.id }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(`${v.dataset}@backup`);
    expect(await snapshotsOf(v.dataset)).toEqual([`${v.dataset}@backup`]);
    await env.zfs("destroy", `${v.dataset}@backup`);
    await env.client.deleteVolume({ volumeId: v.id });
  });
});

describe("ListSnapshots and GetSnapshot", () => {
  const made: string[] = [];
  let volumes: { id: string; dataset: string }[];
  beforeAll(async () => {
    volumes = [await volume("pvc-ls-a"), await volume("pvc-ls-b"), await volume("pvc-ls-c", { parameters: { poolHost: "bob" } })];
    made.push(...(await times(30, 4, (i) => snapshot(volumes[i % 3]!.id, `snapshot-ls-${String(i).padStart(2, "0")}`))));
    // Neither of these is a CSI snapshot: one by hand, one the scheduler's.
    await env.zfs("snapshot", `${volumes[0]!.dataset}@byhand`);
    await env.zfs("snapshot", `${volumes[0]!.dataset}@zcsi-auto-hourly-1`);
  });

  it("pages over 30+ snapshots in id order, no gaps or repeats, one zfs command per host for the whole walk", async () => {
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    const before = { alice: alice().count, bob: bob().count };
    do {
      const res = await env.client.listSnapshots({ maxEntries: 7, startingToken: token });
      expect(res.entries.length).toBeLessThanOrEqual(7);
      for (const e of res.entries) {
        expect(e.snapshot!.readyToUse).toBe(true);
        seen.push(e.snapshot!.snapshotId);
      }
      token = res.nextToken;
      pages++;
    } while (token !== "" && pages < 50);
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of made) expect(seen).toContain(id);
    expect(seen.some((id) => id.endsWith("@byhand") || id.includes("@zcsi-"))).toBe(false);
    expect(pages).toBeGreaterThanOrEqual(5);
    // The first page lists each host once; the later pages are cut from that listing.
    expect({ alice: alice().count - before.alice, bob: bob().count - before.bob }).toEqual({ alice: 1, bob: 1 });
    expect(alice().counts.get("zfs get")).toBeGreaterThan(0);
  });

  it("a filtered walk lists only the one volume, once; its token is ABORTED with another filter", async () => {
    const before = { alice: alice().count, bob: bob().count };
    const first = await env.client.listSnapshots({ sourceVolumeId: volumes[0]!.id, maxEntries: 4 });
    const second = await env.client.listSnapshots({ sourceVolumeId: volumes[0]!.id, maxEntries: 4, startingToken: first.nextToken });
    const ids = [...first.entries, ...second.entries].map((e) => e.snapshot!.snapshotId);
    expect(ids).toEqual(made.filter((_, i) => i % 3 === 0).sort().slice(0, 8));
    expect({ alice: alice().count - before.alice, bob: bob().count - before.bob }).toEqual({ alice: 1, bob: 0 });
    expect(await code(env.client.listSnapshots({ sourceVolumeId: volumes[1]!.id, maxEntries: 4, startingToken: second.nextToken }))).toBe(status.ABORTED);
    expect(await code(env.client.listSnapshots({ maxEntries: 4, startingToken: second.nextToken }))).toBe(status.ABORTED);
  });

  it("filters by source volume and by snapshot id; ids that cannot exist give empty lists", async () => {
    const ofB = await env.client.listSnapshots({ sourceVolumeId: volumes[1]!.id });
    expect(ofB.entries.map((e) => e.snapshot!.snapshotId)).toEqual(made.filter((_, i) => i % 3 === 1).sort());
    const onBob = await env.client.listSnapshots({ sourceVolumeId: volumes[2]!.id, maxEntries: 4 });
    expect(onBob.entries).toHaveLength(4);
    expect(onBob.entries.every((e) => e.snapshot!.snapshotId.startsWith(`bob:${bobParent}/`))).toBe(true);
    const one = await env.client.listSnapshots({ snapshotId: made[4]! });
    expect(one.entries.map((e) => e.snapshot!.snapshotId)).toEqual([made[4]]);
    expect((await env.client.listSnapshots({ snapshotId: made[4]!, sourceVolumeId: volumes[0]!.id })).entries).toEqual([]);
    for (const snapshotId of [`alice:${parent}/pvc-ls-a@nope`, "garbage", `alice:${volumes[0]!.dataset}@byhand`]) {
      expect((await env.client.listSnapshots({ snapshotId })).entries).toEqual([]);
    }
    expect((await env.client.listSnapshots({ sourceVolumeId: `alice:${parent}/pvc-nope` })).entries).toEqual([]);
    expect((await env.client.listSnapshots({ sourceVolumeId: "garbage" })).entries).toEqual([]);
  });

  it("returns ABORTED for a token it did not issue, including a ListVolumes token", async () => {
    const volumesToken = (await env.client.listVolumes({ maxEntries: 1 })).nextToken;
    expect(volumesToken).not.toBe("");
    for (const startingToken of ["bogus!", "eA", volumesToken]) {
      expect(await code(env.client.listSnapshots({ maxEntries: 1, startingToken }))).toBe(status.ABORTED);
    }
    expect(await code(env.client.listSnapshots({ maxEntries: -1 }))).toBe(status.INVALID_ARGUMENT);
  });

  it("GetSnapshot returns what ListSnapshots does, NOT_FOUND otherwise", async () => {
    const listed = (await env.client.listSnapshots({ snapshotId: made[7]! })).entries[0]!.snapshot;
    expect((await env.client.getSnapshot({ snapshotId: made[7]! })).snapshot).toEqual(listed);
    expect(await code(env.client.getSnapshot({ snapshotId: `alice:${volumes[0]!.dataset}@byhand` }))).toBe(status.NOT_FOUND);
    expect(await code(env.client.getSnapshot({ snapshotId: "" }))).toBe(status.INVALID_ARGUMENT);
  });
});

/**
 * The pool host's own executor, except that `zfs send` is replaced by a stand-in, so a copy can
 * be made to fail in the ways a pipeline fails, against the real pool.
 */
class FaultyExecutor implements Executor {
  readonly host = "alice";
  constructor(
    private readonly local: Executor,
    private readonly fault: "send-fails-after-full-stream" | "stream-truncated",
  ) {}
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    return this.local.run(argv, options);
  }
  stream(argv: readonly string[]): Promise<ExecStream> {
    if (argv[0] === "zfs" && argv[1] === "send") {
      const snap = argv[2]!;
      // Test-only stand-ins; the snapshot name is passed as $1, never spliced into the script.
      const script = this.fault === "send-fails-after-full-stream" ? 'zfs send "$1"; exit 1' : 'zfs send "$1" | head -c 65536; exit 0';
      return this.local.stream(["sh", "-c", script, "sh", snap]);
    }
    return this.local.stream(argv);
  }
  close(): Promise<void> {
    return Promise.resolve(); // the pool host's executor belongs to the harness
  }
}

describe("a copy that fails", () => {
  it.each(["send-fails-after-full-stream", "stream-truncated"] as const)("(%s) is an error and leaves no dataset behind", async (fault) => {
    const src = await volume(`pvc-cf-${fault.slice(0, 6)}`);
    await write(src.mountpoint, { a: randomBytes(2 * MiB) });
    const snap = await snapshot(src.id, `snapshot-cf-${fault.slice(0, 6)}`);
    const logger = pino({ level: "silent" });
    // The host's own executor runs as a user that needs no sudo (root on both backends).
    const hosts = new PoolHosts([{ config: { ...env.config.poolHosts[0]!, sudo: false }, exec: new FaultyExecutor(poolHost().pool.exec, fault) }]);
    const volumes = new VolumeService(hosts, logger);
    const snapshots = new SnapshotService(hosts, logger);
    const source = await snapshots.get({ poolHost: "alice", dataset: src.dataset, snapshot: `snapshot-cf-${fault.slice(0, 6)}` });
    expect(source?.id).toBe(snap);
    const params = parseVolumeParameters({ restoreMode: "copy" }, ["alice"]);
    const leaf = `pvc-cf-target-${fault.slice(0, 6)}`;
    await expect(volumes.create({ csiName: leaf, leaf, capacityBytes: BigInt(16 * MiB), params, source: { kind: "snapshot", snapshot: source! } })).rejects.toThrow();
    expect((await everything()).filter((n) => n.includes(leaf) || n.includes("zcsi-recv-"))).toEqual([]);
    await hosts.close(); // closes nothing of the pool host's: FaultyExecutor.close is a no-op
  });
});

describe("a scheduled snapshot named by a pre-provisioned VolumeSnapshotContent", () => {
  it("is found by its handle and restores, is not listed, and DeleteSnapshot leaves it to retention", async () => {
    const source = await volume("pvc-sched-src");
    const before = await write(source.mountpoint, { "a.txt": Buffer.from("as the schedule saw it\n") });
    // What the snapshotter takes (src/snapshots/scheduler.ts): our prefix, marked by zcsi:auto-snapshot.
    const name = `${source.dataset}@zcsi-auto-2026-11-22T0100Z`;
    const made = await env.zfs("snapshot", "-o", "zcsi:auto-snapshot=hourly", name);
    expect(made.exitCode, made.stderr).toBe(0);
    await write(source.mountpoint, { "a.txt": Buffer.from("changed later\n") });
    const handle = `alice:${name}`;

    const got = await env.client.getSnapshot({ snapshotId: handle });
    expect(got.snapshot).toMatchObject({ snapshotId: handle, sourceVolumeId: source.id, readyToUse: true });
    expect((await env.client.listSnapshots({ snapshotId: handle })).entries.map((e) => e.snapshot?.snapshotId)).toEqual([handle]);
    expect((await env.client.listSnapshots({})).entries.map((e) => e.snapshot?.snapshotId)).not.toContain(handle);

    const restored = await volume("pvc-sched-restored", fromSnapshot(handle));
    expect(await sums(restored.mountpoint, ["a.txt"])).toEqual(before);

    await env.client.deleteSnapshot({ snapshotId: handle });
    expect(await snapshotsOf(source.dataset)).toContain(name);
  });
});
