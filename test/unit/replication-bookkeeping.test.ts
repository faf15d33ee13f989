import { describe, expect, it } from "vitest";
import {
  DEFAULT_TARGET_KEEP,
  formatJobState,
  holdsToRelease,
  holdTag,
  jobStateProperty,
  needsHold,
  parseJobStates,
  replicatedThrough,
  sourcePrune,
  statesAfter,
  statesToDrop,
  tagsToRelease,
  targetPrune,
  type HeldSnapshot,
  type JobState,
} from "../../src/replication/bookkeeping.js";
import { plan, type SnapshotEntry } from "../../src/replication/plan.js";
import { sendFlags } from "../../src/replication/transfer.js";
import type { Capabilities } from "../../src/zfs/capabilities.js";

/**
 * What the replicator does after a snapshot reached the target (bookkeeping.ts), as plain
 * functions of the two snapshot lists and the jobs' records. The engine's integration tests
 * (test/integration/replication.test.ts) check the same outcomes on real pools; here every
 * case, including the ones a real pool makes hard to set up.
 */

let txg = 100n;
/** A snapshot with the next createtxg (so a list built in order is oldest first). */
function snap(name: string, userrefs = 0, guid = `g-${name}`): HeldSnapshot {
  txg += 10n;
  return { name, guid, createtxg: txg, creation: Number(txg), userrefs };
}
const repl = (n: number): string => `zcsi-repl-2026-01-01T0000${String(n).padStart(2, "0")}Z`;
const names = (list: readonly { name: string }[]): string[] => list.map((s) => s.name);

describe("the hold on the new base", () => {
  const to = snap(repl(2), 1);
  it("is not placed again when this run held the snapshot before sending it (one hold per snapshot)", () => {
    expect(needsHold({ to, heldByThisRun: true, recorded: undefined, source: [to] })).toBe(false);
  });
  it("is not placed again when the job's record already names it and it is held (an idle run)", () => {
    expect(needsHold({ to, heldByThisRun: false, recorded: { jobId: "j", guid: to.guid }, source: [to] })).toBe(false);
  });
  it("is placed when the record names an older base (a resumed receive the previous run held)", () => {
    expect(needsHold({ to, heldByThisRun: false, recorded: { jobId: "j", guid: "older" }, source: [to] })).toBe(true);
  });
  it("is placed when there is no record (a first run finishing on an existing replica, or after releaseHolds)", () => {
    expect(needsHold({ to, heldByThisRun: false, recorded: undefined, source: [to] })).toBe(true);
  });
  it("is placed when the record names it but nothing holds it any more (released by hand)", () => {
    const unheld = { ...to, userrefs: 0 };
    expect(needsHold({ to: unheld, heldByThisRun: false, recorded: { jobId: "j", guid: to.guid }, source: [unheld] })).toBe(true);
  });
});

describe("releasing the old base and pruning the source", () => {
  it("first full send: nothing to release, nothing to prune", () => {
    const to = snap(repl(1), 1);
    expect(holdsToRelease([to], to)).toEqual([]);
    expect(sourcePrune([to], to, new Set())).toEqual([]);
  });

  it("incremental: releases the previous base and prunes it once nobody else holds it", () => {
    const base = snap(repl(1), 1);
    const to = snap(repl(2), 1);
    expect(holdsToRelease([base, to], to)).toEqual([base.name]);
    expect(sourcePrune([base, to], to, new Set([base.name]))).toEqual([base.name]);
  });

  it("keeps an old base whose release found no tag of ours and that is still held (another job's base)", () => {
    const other = snap(repl(1), 1);
    const to = snap(repl(2), 1);
    expect(holdsToRelease([other, to], to)).toEqual([other.name]); // tried: harmless "no such tag"
    expect(sourcePrune([other, to], to, new Set())).toEqual([]);
  });

  it("keeps a snapshot two jobs held after only ours is released (refs still > 0)", () => {
    const shared = snap(repl(1), 2);
    const to = snap(repl(2), 1);
    expect(sourcePrune([shared, to], to, new Set([shared.name]))).toEqual([]);
  });

  it("prunes an old, unheld snapshot of ours (a leftover of a failed run) without trying to release it", () => {
    const leftover = snap(repl(1), 0);
    const to = snap(repl(2), 1);
    expect(holdsToRelease([leftover, to], to)).toEqual([]);
    expect(sourcePrune([leftover, to], to, new Set())).toEqual([leftover.name]);
  });

  it("never prunes snapshots that are not the replicator's (scheduled, CSI, by hand), held or not", () => {
    const auto = snap("zcsi-auto-2026-01-01T0000Z", 0);
    const csi = snap("snapshot-1234", 0);
    const hand = snap("before-upgrade", 1);
    const to = snap(repl(2), 1);
    expect(holdsToRelease([auto, csi, hand, to], to)).toEqual([hand.name]);
    expect(sourcePrune([auto, csi, hand, to], to, new Set([hand.name]))).toEqual([]);
  });

  it("never prunes the base itself, nor snapshots of ours newer than it (another job's in-flight one)", () => {
    const to = snap(repl(2), 1);
    const newer = snap(repl(3), 0);
    expect(sourcePrune([to, newer], to, new Set())).toEqual([]);
    expect(holdsToRelease([to, newer], to)).toEqual([]);
  });

  it("never releases the new base even when it carries other holds", () => {
    const to = snap(repl(2), 3);
    expect(holdsToRelease([to], to)).toEqual([]);
  });
});

describe("pruning the target", () => {
  it(`keeps the newest ${DEFAULT_TARGET_KEEP} of the replicator's snapshots by default, the base included`, () => {
    const list = [1, 2, 3, 4, 5].map((n) => snap(repl(n), 0));
    const to = list[4]!;
    expect(targetPrune(list, to, undefined)).toEqual([repl(1), repl(2)]);
  });

  it("keeps the base with targetKeep 1 and everything with a keep larger than what is there", () => {
    const list = [1, 2, 3].map((n) => snap(repl(n), 0));
    expect(targetPrune(list, list[2]!, 1)).toEqual([repl(1), repl(2)]);
    expect(targetPrune(list, list[2]!, 10)).toEqual([]);
  });

  it("keeps the other replicas' bases, without counting them, so the replicas keep a snapshot in common", () => {
    const list = [1, 2, 3, 4, 5].map((n) => snap(repl(n), 0));
    const to = list[4]!;
    // repl(1) is another job's base on the source: the replica another target continues from after a move.
    expect(targetPrune(list, to, undefined, new Set([list[0]!.guid]))).toEqual([repl(2)]);
  });

  it("treats a targetKeep below 1 as 1: the base is never pruned", () => {
    const list = [1, 2].map((n) => snap(repl(n), 0));
    expect(targetPrune(list, list[1]!, 0)).toEqual([repl(1)]);
  });

  it("leaves the target's foreign snapshots (taken there by hand) alone and does not count them", () => {
    const a = snap(repl(1), 0);
    const hand = snap("by-hand", 0);
    const b = snap(repl(2), 0);
    const to = snap(repl(3), 0);
    expect(targetPrune([a, hand, b, to], to, 2)).toEqual([repl(1)]);
  });

  it("decides by age (createtxg), whatever order the list comes in", () => {
    const list = [1, 2, 3, 4].map((n) => snap(repl(n), 0));
    expect(targetPrune([...list].reverse(), list[3]!, 2)).toEqual([repl(1), repl(2)]);
  });

  it("first full send: the target has the base only; nothing is pruned", () => {
    const to = snap(repl(1), 0);
    expect(targetPrune([to], to, undefined)).toEqual([]);
  });
});

describe("zcsi:replicated-through", () => {
  const a = snap(repl(1));
  const b = snap(repl(2));
  const c = snap(repl(3));
  const state = (jobId: string, s: SnapshotEntry): JobState => ({ jobId, guid: s.guid });

  it("is the base of the only job, set when it changes", () => {
    expect(replicatedThrough([a, b], [state("j", b)], a.guid)).toEqual({ kind: "set", guid: b.guid });
    expect(replicatedThrough([a, b], [state("j", b)], undefined)).toEqual({ kind: "set", guid: b.guid });
  });
  it("is left as it is when it already names the right snapshot", () => {
    expect(replicatedThrough([a, b], [state("j", b)], b.guid)).toEqual({ kind: "unchanged" });
  });
  it("is the OLDEST base among several jobs (what every target has)", () => {
    expect(replicatedThrough([a, b, c], [state("to-bob", c), state("to-carol", a)], undefined)).toEqual({ kind: "set", guid: a.guid });
  });
  it("skips a job whose base no longer exists on the source", () => {
    expect(replicatedThrough([b, c], [state("gone", a), state("j", c)], undefined)).toEqual({ kind: "set", guid: c.guid });
  });
  it("is cleared when no job state is left (releaseHolds), and left unset when it was unset", () => {
    expect(replicatedThrough([a], [], a.guid)).toEqual({ kind: "clear" });
    expect(replicatedThrough([a], [state("gone", snap("x"))], a.guid)).toEqual({ kind: "clear" });
    expect(replicatedThrough([a], [], undefined)).toEqual({ kind: "unchanged" });
  });
});

describe("job records and releaseHolds", () => {
  it("records `<guid> <job id>` and reads back only well-formed zcsi:repl.* values", () => {
    const own = [
      [jobStateProperty("vol-1.bob"), formatJobState({ guid: "123", jobId: "vol-1.bob" })],
      [jobStateProperty("Vol-1"), formatJobState({ guid: "456", jobId: "Vol-1" })],
      ["zcsi:repl.garbled", "not a record"],
      ["zcsi:repl.unset", undefined],
      ["zcsi:replicated-through", "123"],
      ["compression", "lz4"],
    ] as const;
    expect([...parseJobStates(own)]).toEqual([
      ["zcsi:repl.vol-1.bob", { guid: "123", jobId: "vol-1.bob" }],
      [jobStateProperty("Vol-1"), { guid: "456", jobId: "Vol-1" }],
    ]);
  });

  const states = new Map<string, JobState>([
    [jobStateProperty("a"), { guid: "1", jobId: "a" }],
    [jobStateProperty("B"), { guid: "2", jobId: "B" }],
  ]);

  it("releases one job's tag, or the tag of every job with a record", () => {
    expect(tagsToRelease(states, "a")).toEqual([holdTag("a")]);
    expect(tagsToRelease(states, "never-ran")).toEqual([holdTag("never-ran")]);
    expect(tagsToRelease(states, undefined)).toEqual([holdTag("a"), holdTag("B")]);
    expect(tagsToRelease(new Map(), undefined)).toEqual([]);
  });

  it("drops one job's record (found by property or by recorded id), or all of them", () => {
    expect(statesToDrop(states, "B")).toEqual([jobStateProperty("B")]);
    expect(statesToDrop(states, "other")).toEqual([]);
    expect(statesToDrop(states, undefined)).toEqual([jobStateProperty("a"), jobStateProperty("B")]);
  });

  it("computes the records left after a drop or a set, for replicated-through", () => {
    expect(statesAfter(states, { drop: [jobStateProperty("a")] })).toEqual([{ guid: "2", jobId: "B" }]);
    expect(statesAfter(states, { set: [jobStateProperty("a"), { guid: "9", jobId: "a" }] })).toEqual([
      { guid: "9", jobId: "a" },
      { guid: "2", jobId: "B" },
    ]);
  });
});

describe("a job's life, run by run (the engine's bookkeeping, simulated on plain lists)", () => {
  /** The two sides as the engine would leave them, applying exactly what bookkeeping decides. */
  function run(world: { source: HeldSnapshot[]; target: HeldSnapshot[]; record?: JobState }, name: string, jobId = "j", keep?: number): void {
    const taken = snap(name, 1); // taken and held once, before the send
    world.source.push(taken);
    const p = plan({ source: world.source, target: world.target.length > 0 ? world.target : undefined });
    expect(p.kind === "full" ? p.snapshot : p.kind === "incremental" ? p.to : undefined).toBe(taken);
    world.target.push({ ...taken, userrefs: 0 });
    expect(needsHold({ to: taken, heldByThisRun: true, recorded: world.record, source: world.source })).toBe(false);
    const released = new Set(holdsToRelease(world.source, taken));
    world.source = world.source.map((s) => (released.has(s.name) ? { ...s, userrefs: s.userrefs - 1 } : s));
    const prune = new Set(sourcePrune(world.source, taken, new Set()));
    world.source = world.source.filter((s) => !prune.has(s.name));
    const pruneTarget = new Set(targetPrune(world.target, taken, keep));
    world.target = world.target.filter((s) => !pruneTarget.has(s.name));
    world.record = { jobId, guid: taken.guid };
  }

  it("full, then three increments: the source keeps only the held base, the target the newest three", () => {
    const auto = snap("zcsi-auto-2026-01-01T0000Z");
    const world: { source: HeldSnapshot[]; target: HeldSnapshot[]; record?: JobState } = { source: [auto], target: [] };
    for (let n = 1; n <= 4; n++) run(world, repl(n));
    expect(names(world.source)).toEqual([auto.name, repl(4)]);
    expect(world.source.find((s) => s.name === repl(4))?.userrefs).toBe(1);
    expect(names(world.target)).toEqual([repl(2), repl(3), repl(4)]);
    expect(replicatedThrough(world.source, [world.record!], undefined)).toEqual({ kind: "set", guid: world.source[1]!.guid });
  });

  it("a source with no common snapshot on an existing target is refused before any bookkeeping", () => {
    const p = plan({ source: [snap(repl(1))], target: [snap("theirs")] });
    expect(p).toMatchObject({ kind: "refuse", divergence: { reason: "no-common-snapshot" } });
  });
});

describe("send flags", () => {
  const caps = (implementation: "openzfs" | "zfs-fuse"): Capabilities => ({ implementation }) as Capabilities;
  it("sends plain streams unless both ends are OpenZFS", () => {
    expect(sendFlags(caps("zfs-fuse"), caps("openzfs"), undefined)).toEqual({});
    expect(sendFlags(caps("openzfs"), caps("zfs-fuse"), "aes-256-gcm")).toEqual({});
  });
  it("between OpenZFS hosts: large, embedded and compressed blocks, and raw for an encrypted source", () => {
    expect(sendFlags(caps("openzfs"), caps("openzfs"), undefined)).toEqual({ largeBlocks: true, embedded: true, compressed: true });
    expect(sendFlags(caps("openzfs"), caps("openzfs"), "off")).toEqual({ largeBlocks: true, embedded: true, compressed: true });
    expect(sendFlags(caps("openzfs"), caps("openzfs"), "aes-256-gcm")).toEqual({ largeBlocks: true, embedded: true, compressed: true, raw: true });
  });
});
