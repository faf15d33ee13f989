import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { failure } from "../harness/csi-client.js";

/**
 * The CSI GroupController on a real pool host (zfs-fuse: `zfs snapshot -r` of the parent and
 * the non-members' snapshots destroyed; OpenZFS: one `zfs snapshot a@g b@g c@g`). Kept lean:
 * it runs in the OpenZFS VM too, where each zfs command costs ~0.3 s.
 */
const MiB = 1024 * 1024;
const mountCap = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

let env: ControllerEnv;
let parent: string;
/** Three volumes on alice (the group), one more on alice (a non-member), one on bob. */
let members: { id: string; dataset: string; mountpoint: string }[];
let bystander: { id: string; dataset: string };
let onBob: { id: string; dataset: string };

async function volume(name: string, poolHost = "alice"): Promise<{ id: string; dataset: string; mountpoint: string }> {
  const r: CreateVolumeRequest = { name, capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost } };
  const v = (await env.client.createVolume(r)).volume!;
  return { id: v.volumeId, dataset: v.volumeContext["dataset"]!, mountpoint: v.volumeContext["mountpoint"]! };
}

async function prop(name: string, property: string): Promise<string> {
  return (await env.zfs("get", "-Hp", "-o", "value", property, name)).stdout.trim();
}

/** Every snapshot of that name anywhere on the host's pool. */
async function snapshotsNamed(name: string, pool = parent.split("/")[0]!): Promise<string[]> {
  const r = await env.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-r", pool);
  return r.stdout.split("\n").filter((l) => l.endsWith(`@${name}`)).sort();
}

function alice(): InstrumentedExecutor {
  return env.poolHosts.get("alice").exec as InstrumentedExecutor;
}

async function code(p: Promise<unknown>): Promise<number> {
  return (await failure(p)).code;
}

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"] });
  parent = env.hosts[0]!.parent;
  members = [];
  for (const n of ["pvc-grp-data", "pvc-grp-wal", "pvc-grp-log"]) members.push(await volume(n));
  bystander = await volume("pvc-grp-other");
  onBob = await volume("pvc-grp-bob", "bob");
});
afterAll(async () => {
  await env?.stop();
});

describe("GroupController service", () => {
  it("is advertised: GROUP_CONTROLLER_SERVICE and CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT", async () => {
    const plugin = await env.client.getPluginCapabilities({});
    expect(plugin.capabilities.map((c) => c.service?.type)).toContain("GROUP_CONTROLLER_SERVICE");
    const group = await env.client.groupControllerGetCapabilities({});
    expect(group.capabilities.map((c) => c.rpc?.type)).toEqual(["CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT"]);
  });
});

describe("CreateVolumeGroupSnapshot", () => {
  it("snapshots three volumes at one point of a writer's sequence; each member restores to that point", async () => {
    const host = env.hosts[0]!.pool;
    const stop = `${env.hosts[0]!.mountRoot}/stop-writer`;
    const files = members.map((m) => `${m.mountpoint}/seq`);
    // One writer appends 1, 2, 3, ... to the three volumes in turn (data, wal, log): any single
    // instant of its history has last(data) >= last(wal) >= last(log) >= last(data) - 1.
    const script = 'i=0; while [ ! -e "$1" ]; do i=$((i+1)); echo $i >>"$2"; echo $i >>"$3"; echo $i >>"$4"; done';
    const writer = host.exec.run(["sh", "-c", script, "writer", stop, ...files]);
    for (;;) {
      const r = await host.exec.run(["sh", "-c", 'wc -l <"$1"', "count", files[2]!]);
      if (Number(r.stdout.trim()) >= 50) break;
    }
    const res = await env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-seq", sourceVolumeIds: members.map((m) => m.id) });
    await host.files.write(stop, "");
    expect((await writer).exitCode).toBe(0);
    const group = res.groupSnapshot!;
    expect(group.groupSnapshotId).toBe(`alice:${parent}@groupsnapshot-seq`);
    expect(group.readyToUse).toBe(true);
    expect(group.snapshots.map((s) => s.sourceVolumeId).sort()).toEqual(members.map((m) => m.id).sort());
    for (const s of group.snapshots) expect(s).toMatchObject({ groupSnapshotId: group.groupSnapshotId, readyToUse: true });
    // Atomic: one txg for all three.
    const txgs = await Promise.all(members.map((m) => prop(`${m.dataset}@groupsnapshot-seq`, "createtxg")));
    expect(new Set(txgs).size).toBe(1);
    // Only the members carry the snapshot (zfs-fuse's recursive form destroyed the others').
    expect(await snapshotsNamed("groupsnapshot-seq")).toEqual(members.map((m) => `${m.dataset}@groupsnapshot-seq`).sort());

    const last: number[] = [];
    for (const [i, m] of members.entries()) {
      const snap = group.snapshots.find((s) => s.sourceVolumeId === m.id)!;
      const restored = (await env.client.createVolume({ name: `pvc-grp-restored-${i}`, capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice" }, volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } } })).volume!;
      const lines = (await host.files.read(`${restored.volumeContext["mountpoint"]}/seq`)).trim().split("\n");
      last.push(Number(lines[lines.length - 1]));
    }
    const [data, wal, log] = last as [number, number, number];
    expect(log).toBeGreaterThanOrEqual(50);
    expect(data).toBeGreaterThanOrEqual(wal);
    expect(wal).toBeGreaterThanOrEqual(log);
    expect(data - log).toBeLessThanOrEqual(1); // one cut of the writer's sequence, not three
  });

  it("returns the same group for the same name and volumes, taking no snapshot; other volumes → ALREADY_EXISTS", async () => {
    const ids = members.map((m) => m.id);
    const first = await env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-idem", sourceVolumeIds: ids });
    const taken = alice().counts.get("zfs snapshot") ?? 0;
    const again = await env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-idem", sourceVolumeIds: [...ids].reverse() });
    expect(again.groupSnapshot).toEqual(first.groupSnapshot);
    expect(alice().counts.get("zfs snapshot") ?? 0).toBe(taken);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-idem", sourceVolumeIds: ids.slice(0, 2) }))).toBe(status.ALREADY_EXISTS);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-idem", sourceVolumeIds: [...ids, bystander.id] }))).toBe(status.ALREADY_EXISTS);
    // A single CSI snapshot cannot take the name either (names are unique per pool host).
    expect(await code(env.client.createSnapshot({ name: "groupsnapshot-idem", sourceVolumeId: bystander.id }))).toBe(status.ALREADY_EXISTS);
  });

  it("refuses volumes on two pool hosts with FAILED_PRECONDITION naming each volume and its host, changing nothing", async () => {
    const err = await failure(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-cross", sourceVolumeIds: [members[0]!.id, onBob.id] }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(`${members[0]!.id} on pool host alice`);
    expect(err.details).toContain(`${onBob.id} on pool host bob`);
    expect(await snapshotsNamed("groupsnapshot-cross")).toEqual([]);
    expect(await snapshotsNamed("groupsnapshot-cross", env.hosts[1]!.parent.split("/")[0]!)).toEqual([]);
  });

  it("refuses a name a snapshot zcsi did not take already has, and leaves that snapshot alone", async () => {
    await env.zfs("snapshot", `${bystander.dataset}@groupsnapshot-byhand`);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-byhand", sourceVolumeIds: members.map((m) => m.id) }))).toBe(status.ALREADY_EXISTS);
    expect(await snapshotsNamed("groupsnapshot-byhand")).toEqual([`${bystander.dataset}@groupsnapshot-byhand`]);
  });

  it("checks its arguments: INVALID_ARGUMENT for a bad name, no or repeated volumes, unknown parameters; NOT_FOUND for an unknown volume", async () => {
    const ids = members.map((m) => m.id);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "", sourceVolumeIds: ids }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "zcsi-auto-x", sourceVolumeIds: ids }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-args", sourceVolumeIds: [] }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-args", sourceVolumeIds: [ids[0]!, ids[0]!] }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-args", sourceVolumeIds: ids, parameters: { compression: "on" } }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-args", sourceVolumeIds: [...ids, `alice:${parent}/pvc-nope`] }))).toBe(status.NOT_FOUND);
    expect(await snapshotsNamed("groupsnapshot-args")).toEqual([]);
  });
});

describe("GetVolumeGroupSnapshot, ListSnapshots and DeleteVolumeGroupSnapshot", () => {
  let groupId: string;
  let snapshotIds: string[];

  beforeAll(async () => {
    const g = (await env.client.createVolumeGroupSnapshot({ name: "groupsnapshot-life", sourceVolumeIds: members.map((m) => m.id) })).groupSnapshot!;
    groupId = g.groupSnapshotId;
    snapshotIds = g.snapshots.map((s) => s.snapshotId);
  });

  it("gets the group by id; NOT_FOUND for an unknown one; INVALID_ARGUMENT for a missing id or mismatched snapshot_ids", async () => {
    const got = (await env.client.getVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds })).groupSnapshot!;
    expect(got.snapshots.map((s) => s.snapshotId)).toEqual([...snapshotIds].sort());
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: `alice:${parent}@groupsnapshot-none`, snapshotIds }))).toBe(status.NOT_FOUND);
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: "nohost:x@y", snapshotIds }))).toBe(status.NOT_FOUND);
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: "", snapshotIds }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds: [] }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds: snapshotIds.slice(1) }))).toBe(status.INVALID_ARGUMENT);
  });

  it("lists each member as an ordinary CSI snapshot carrying the group id", async () => {
    const listed = (await env.client.listSnapshots({ sourceVolumeId: members[1]!.id })).entries.map((e) => e.snapshot!);
    expect(listed.find((s) => s.snapshotId === `${members[1]!.id}@groupsnapshot-life`)).toMatchObject({ groupSnapshotId: groupId, readyToUse: true });
  });

  it("deletes every member (one a restored volume still depends on is deferred, the clone keeps working); retries and unknown ids are OK", async () => {
    const origin = snapshotIds.find((id) => id.startsWith(members[0]!.id))!;
    const clone = (await env.client.createVolume({ name: "pvc-grp-clone", capacityRange: { requiredBytes: String(16 * MiB) }, volumeCapabilities: [mountCap], parameters: { poolHost: "alice" }, volumeContentSource: { snapshot: { snapshotId: origin } } })).volume!;
    expect(await code(env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds: [snapshotIds[0]!, bystander.id + "@x"] }))).toBe(status.INVALID_ARGUMENT);
    expect(await snapshotsNamed("groupsnapshot-life")).toHaveLength(3); // a refused delete deletes nothing
    await env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds });
    expect(await snapshotsNamed("groupsnapshot-life")).toEqual([origin.slice("alice:".length)]);
    expect(await prop(origin.slice("alice:".length), "defer_destroy")).toBe("on");
    expect(await env.zfs("get", "-H", "-o", "value", "mounted", clone.volumeContext["dataset"]!)).toMatchObject({ stdout: "yes\n" });
    expect(await code(env.client.getVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds }))).toBe(status.NOT_FOUND);
    await env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: groupId, snapshotIds });
    await env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: `alice:${parent}@groupsnapshot-never`, snapshotIds: ["alice:x@y"] });
    await env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: "not-a-group", snapshotIds: ["alice:x@y"] });
    expect(await code(env.client.deleteVolumeGroupSnapshot({ groupSnapshotId: "", snapshotIds }))).toBe(status.INVALID_ARGUMENT);
    // The clone goes, and ZFS frees the deferred member with it.
    await env.client.deleteVolume({ volumeId: clone.volumeId });
    expect(await snapshotsNamed("groupsnapshot-life")).toEqual([]);
  });
});
