import { describe, expect, it } from "vitest";
import { describeDivergence, isUnmarkedReplica, plan, type SnapshotEntry } from "../../src/replication/plan.js";
import { planRun, type Side } from "../../src/replication/sides.js";

/** A snapshot whose guid is derived from `id`, so equal ids on both sides mean "received". */
function snap(name: string, txg: number, guid = `g-${name}`): SnapshotEntry {
  return { name, guid, createtxg: BigInt(txg), creation: 1_800_000_000 + txg };
}

const s1 = snap("zcsi-repl-1", 10);
const s2 = snap("zcsi-repl-2", 20);
const s3 = snap("zcsi-repl-3", 30);
/** The same snapshots as received on the target: same guids, the target's own txgs. */
const t = (s: SnapshotEntry, txg: number): SnapshotEntry => ({ ...s, createtxg: BigInt(txg) });

describe("plan", () => {
  it("sends the newest source snapshot whole when the target does not exist", () => {
    expect(plan({ source: [s1, s3, s2], target: undefined })).toEqual({ kind: "full", snapshot: s3 });
  });

  it("has nothing to send from a source without snapshots", () => {
    expect(plan({ source: [], target: undefined })).toEqual({ kind: "no-source-snapshot" });
  });

  it("sends the increment from the newest common snapshot to the newest source snapshot", () => {
    expect(plan({ source: [s1, s2, s3], target: [t(s1, 5), t(s2, 7)] })).toEqual({ kind: "incremental", from: s2, to: s3 });
  });

  it("matches by guid, not by name: a same-named snapshot with another guid is not common", () => {
    const impostor = snap("zcsi-repl-2", 7, "g-other");
    expect(plan({ source: [s1, s2, s3], target: [t(s1, 5), impostor] })).toMatchObject({
      kind: "refuse",
      divergence: { reason: "target-snapshots", common: s1, snapshots: ["zcsi-repl-2"] },
    });
  });

  it("matches by guid even when the target renamed the snapshot", () => {
    const renamed = { ...t(s2, 7), name: "kept-by-hand" };
    expect(plan({ source: [s1, s2, s3], target: [t(s1, 5), renamed] })).toEqual({ kind: "incremental", from: s2, to: s3 });
  });

  it("orders by createtxg, not by list order or name", () => {
    const early = snap("zzz", 1);
    const late = snap("aaa", 99);
    expect(plan({ source: [late, early], target: [t(early, 3)] })).toEqual({ kind: "incremental", from: early, to: late });
  });

  it("uses an older common snapshot when the source pruned newer ones the target has not got", () => {
    // Source lost s2 (pruned); the target still has s1 and s2: s2 is not on the source, so it
    // is a target snapshot after the newest common (s1) that the source lacks.
    expect(plan({ source: [s1, s3], target: [t(s1, 5), t(s2, 7)] })).toMatchObject({
      kind: "refuse",
      divergence: { reason: "target-snapshots", common: s1, snapshots: ["zcsi-repl-2"] },
    });
  });

  it("is fine with the target missing older source snapshots (pruned there or never sent with -i)", () => {
    expect(plan({ source: [s1, s2, s3], target: [t(s2, 4)] })).toEqual({ kind: "incremental", from: s2, to: s3 });
  });

  it("has nothing to do when the target's newest is the source's newest", () => {
    expect(plan({ source: [s1, s2], target: [t(s1, 5), t(s2, 6)], targetWrittenBytes: 0n })).toEqual({ kind: "none", snapshot: s2 });
  });

  it("refuses, naming them, when the target has snapshots after the common one", () => {
    const extra = snap("by-hand", 9, "g-target-only");
    const p = plan({ source: [s1, s2, s3], target: [t(s1, 5), t(s2, 6), extra] });
    expect(p).toEqual({ kind: "refuse", divergence: { reason: "target-snapshots", common: s2, snapshots: ["by-hand"] } });
    if (p.kind !== "refuse") throw new Error("unreachable");
    expect(describeDivergence("bob:tank/k8s/v", p.divergence)).toMatch(/bob:tank\/k8s\/v .*after the newest common snapshot zcsi-repl-2 .*by-hand/);
  });

  it("refuses when the target was written after its newest (common) snapshot", () => {
    const p = plan({ source: [s1, s2, s3], target: [t(s1, 5), t(s2, 6)], targetWrittenBytes: 4096n });
    expect(p).toEqual({ kind: "refuse", divergence: { reason: "target-written", common: s2, bytes: 4096n } });
    if (p.kind !== "refuse") throw new Error("unreachable");
    expect(describeDivergence("bob:tank/k8s/v", p.divergence)).toContain("4096 bytes");
  });

  it("refuses writes even when the source has nothing new (no silent 'none' over a diverged target)", () => {
    expect(plan({ source: [s1, s2], target: [t(s1, 5), t(s2, 6)], targetWrittenBytes: 1n }).kind).toBe("refuse");
  });

  it("does not treat unknown `written` (zfs-fuse) as a divergence", () => {
    expect(plan({ source: [s1, s2, s3], target: [t(s2, 6)] })).toEqual({ kind: "incremental", from: s2, to: s3 });
  });

  it("refuses a target that shares no snapshot with the source", () => {
    const foreign = snap("daily", 3, "g-foreign");
    expect(plan({ source: [s1, s2], target: [foreign] })).toEqual({
      kind: "refuse",
      divergence: { reason: "no-common-snapshot", snapshots: ["daily"] },
    });
  });

  it("refuses an existing target without any snapshot (a full receive would need -F)", () => {
    const p = plan({ source: [s1], target: [] });
    expect(p).toEqual({ kind: "refuse", divergence: { reason: "no-common-snapshot", snapshots: [] } });
    if (p.kind !== "refuse") throw new Error("unreachable");
    expect(describeDivergence("bob:tank/k8s/v", p.divergence)).toContain("no snapshots");
  });

  it("resumes an interrupted receive before anything else, even over a target that looks diverged", () => {
    expect(plan({ source: [s1, s2, s3], target: [t(s1, 5)], targetResumeToken: "1-ab-c0-789c" })).toEqual({ kind: "resume", token: "1-ab-c0-789c" });
    expect(plan({ source: [s1], target: [], targetResumeToken: "1-ab-c0-789c", targetWrittenBytes: 10n })).toEqual({ kind: "resume", token: "1-ab-c0-789c" });
  });

  it("ignores an empty resume token (zfs prints `-` or nothing when there is none)", () => {
    expect(plan({ source: [s1, s2], target: [t(s1, 5)], targetResumeToken: "" })).toEqual({ kind: "incremental", from: s1, to: s2 });
  });
});

describe("isUnmarkedReplica", () => {
  it("recognises a target whose snapshots are all zcsi-repl-* snapshots of the source, by guid", () => {
    expect(isUnmarkedReplica([s1, s2], [t(s1, 4)])).toBe(true);
    expect(isUnmarkedReplica([s1, s2], [t(s1, 4), t(s2, 5)])).toBe(true);
  });
  it("does not adopt an empty dataset, one with a snapshot of its own, or one named like ours with another guid", () => {
    expect(isUnmarkedReplica([s1], [])).toBe(false);
    expect(isUnmarkedReplica([s1], [t(s1, 4), snap("mine", 5)])).toBe(false);
    expect(isUnmarkedReplica([s1], [snap("zcsi-repl-1", 4, "g-other")])).toBe(false);
    // A source snapshot that is not the replicator's (e.g. a CSI snapshot) does not prove it either.
    const csi = snap("snapshot-1", 3);
    expect(isUnmarkedReplica([csi], [t(csi, 2)])).toBe(false);
  });
});

describe("planRun: a target whose head moved past its newest snapshot", () => {
  const side = (snapshots: SnapshotEntry[], written?: string): Side => ({
    exists: true,
    props: new Map(written === undefined ? [] : [["written", { value: written, source: "-" }]]),
    snapshots: snapshots.map((s) => ({ ...s, userrefs: 0 })),
  });

  it("leaves `written` alone to the receive when it is the only divergence (OpenZFS: a rollback or clone rewrote the objset block)", () => {
    expect(planRun(side([s1, s2, s3]), side([t(s1, 5), t(s2, 6)], "1024"))).toMatchObject({ plan: { kind: "incremental", from: s2, to: s3 }, ignoreWritten: true });
  });

  it("still refuses any other divergence, and plans as plan() does without one", () => {
    const extra = snap("mine", 7, "g-mine");
    expect(planRun(side([s1, s2, s3]), side([t(s1, 5), t(s2, 6), extra], "1024")).plan).toMatchObject({ kind: "refuse", divergence: { reason: "target-snapshots" } });
    expect(planRun(side([s1, s2, s3]), side([t(s1, 5), t(s2, 6)], "0"))).toMatchObject({ plan: { kind: "incremental", from: s2, to: s3 }, ignoreWritten: false });
  });
});

describe("plan: every replica of a volume shares a snapshot with the others", () => {
  const s4 = snap("zcsi-repl-4", 40);
  const other = snap("snapshot-csi", 25);

  it("passes through the other jobs' bases newer than the common snapshot, oldest first", () => {
    // s2 and s3 are the other replicas' bases (held on the source); this target has s1 only.
    expect(plan({ source: [s1, s2, s3, s4], target: [t(s1, 5)], siblingBases: new Set([s3.guid, s2.guid]) })).toEqual({ kind: "incremental", from: s1, to: s4, via: [s2, s3] });
  });

  it("leaves out bases the target has passed already and snapshots that are no base", () => {
    expect(plan({ source: [s1, s2, other, s3, s4], target: [t(s1, 5), t(s2, 6)], siblingBases: new Set([s1.guid, s2.guid]) })).toEqual({ kind: "incremental", from: s2, to: s4 });
  });

  it("never passes through the snapshot it sends to", () => {
    expect(plan({ source: [s1, s2], target: [t(s1, 5)], siblingBases: new Set([s2.guid]) })).toEqual({ kind: "incremental", from: s1, to: s2 });
  });
});

