/**
 * What one replication run must do, decided from the two sides' snapshot lists alone: a pure
 * function (zrepl's split of `logic` from `driver`), so every case is a unit test.
 *
 * Snapshots are matched by GUID, never by name: a received snapshot keeps its source's guid
 * (zfs-send(8)), while a name can be reused for different data on either side (a snapshot
 * destroyed and retaken under the same name, or one taken by hand on the target).
 */

import { REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";

export interface SnapshotEntry {
  /** Short name, after `@`. */
  readonly name: string;
  readonly guid: string;
  /** Transaction group that created it: orders snapshots of one dataset exactly, clock-free. */
  readonly createtxg: bigint;
  /** Seconds since the epoch. */
  readonly creation: number;
}

export interface PlanInput {
  /** The source dataset's snapshots (any order). */
  readonly source: readonly SnapshotEntry[];
  /** The target dataset's snapshots; undefined when the target dataset does not exist. */
  readonly target: readonly SnapshotEntry[] | undefined;
  /** The target's receive_resume_token, when an interrupted resumable receive left one. */
  readonly targetResumeToken?: string;
  /**
   * Bytes written to the target after its newest snapshot (`written`, OpenZFS); undefined where
   * the host cannot say (zfs-fuse). There an incremental receive still refuses by itself
   * ("has been modified since most recent snapshot"), so the divergence is caught one step later.
   */
  readonly targetWrittenBytes?: bigint;
  /**
   * Guids of source snapshots the other jobs of this source hold as their bases (their
   * replicas have them). An increment passes through those newer than the common snapshot, so
   * every replica of a volume also holds its siblings' bases, and any two replicas share a
   * snapshot: after a move, a replica re-pointed to the new home continues incrementally.
   */
  readonly siblingBases?: ReadonlySet<string>;
}

export type Divergence =
  /** The target has snapshots newer than the common one that the source does not have. */
  | { readonly reason: "target-snapshots"; readonly common: SnapshotEntry; readonly snapshots: readonly string[] }
  /** The target was written after its newest snapshot (the common one). */
  | { readonly reason: "target-written"; readonly common: SnapshotEntry; readonly bytes: bigint }
  /** The target exists but shares no snapshot with the source (by guid). */
  | { readonly reason: "no-common-snapshot"; readonly snapshots: readonly string[] };

export type Plan =
  /** The target does not exist: send `snapshot` whole; the receive creates the target. */
  | { readonly kind: "full"; readonly snapshot: SnapshotEntry }
  /**
   * Send the increment from `from` (the newest common snapshot, source side) to `to`; when
   * `via` is there, as a chain of `-i` increments through those snapshots (oldest first).
   */
  | { readonly kind: "incremental"; readonly from: SnapshotEntry; readonly to: SnapshotEntry; readonly via?: readonly SnapshotEntry[] }
  /** Finish an interrupted receive with `zfs send -t <token>`. */
  | { readonly kind: "resume"; readonly token: string }
  /** The source's newest snapshot is already the target's newest: nothing to send. */
  | { readonly kind: "none"; readonly snapshot: SnapshotEntry }
  /** The target has diverged: nothing may be sent without destroying something. */
  | { readonly kind: "refuse"; readonly divergence: Divergence }
  /** The source has no snapshot yet. */
  | { readonly kind: "no-source-snapshot" };

const byTxg = (a: SnapshotEntry, b: SnapshotEntry): number => (a.createtxg < b.createtxg ? -1 : a.createtxg > b.createtxg ? 1 : 0);

/** Newest first. */
function newestFirst(list: readonly SnapshotEntry[]): SnapshotEntry[] {
  return [...list].sort(byTxg).reverse();
}

export function plan(input: PlanInput): Plan {
  // An interrupted receive comes first: its partial state blocks any other receive into the
  // target, and finishing it is cheaper than starting over. If the token turns out stale, the
  // engine aborts it and plans again without it.
  if (input.targetResumeToken !== undefined && input.targetResumeToken !== "") {
    return { kind: "resume", token: input.targetResumeToken };
  }
  const source = newestFirst(input.source);
  const newestSource = source[0];
  if (newestSource === undefined) return { kind: "no-source-snapshot" };
  if (input.target === undefined) return { kind: "full", snapshot: newestSource };

  const target = newestFirst(input.target);
  const sourceByGuid = new Map(source.map((s) => [s.guid, s]));
  const commonIndex = target.findIndex((t) => sourceByGuid.has(t.guid));
  if (commonIndex < 0) {
    return { kind: "refuse", divergence: { reason: "no-common-snapshot", snapshots: target.map((t) => t.name).reverse() } };
  }
  const common = sourceByGuid.get((target[commonIndex] as SnapshotEntry).guid) as SnapshotEntry;
  // Everything on the target newer than the common snapshot: by definition of "newest common",
  // none of it is on the source, and receiving an increment on top would need `-F` (rollback).
  const newer = target.slice(0, commonIndex);
  if (newer.length > 0) {
    return { kind: "refuse", divergence: { reason: "target-snapshots", common, snapshots: newer.map((t) => t.name).reverse() } };
  }
  if (input.targetWrittenBytes !== undefined && input.targetWrittenBytes > 0n) {
    return { kind: "refuse", divergence: { reason: "target-written", common, bytes: input.targetWrittenBytes } };
  }
  if (common.guid === newestSource.guid) return { kind: "none", snapshot: common };
  const via = siblingHops(source, common, newestSource, input.siblingBases);
  return { kind: "incremental", from: common, to: newestSource, ...(via.length > 0 && { via }) };
}

/** The siblings' bases strictly between `from` and `to` (by createtxg), oldest first. */
function siblingHops(newestFirstSource: readonly SnapshotEntry[], from: SnapshotEntry, to: SnapshotEntry, bases: ReadonlySet<string> | undefined): SnapshotEntry[] {
  if (bases === undefined || bases.size === 0) return [];
  return newestFirstSource.filter((s) => bases.has(s.guid) && s.createtxg > from.createtxg && s.createtxg < to.createtxg).reverse();
}

/** A sentence for errors and logs: what differs, and what a user can do about it. */
export function describeDivergence(target: string, d: Divergence): string {
  switch (d.reason) {
    case "target-snapshots":
      return (
        `${target} has snapshots after the newest common snapshot ${d.common.name} (guid ${d.common.guid}) that the source lacks: ` +
        `${d.snapshots.join(", ")}; replication refuses to roll them back (destroy them by hand to continue)`
      );
    case "target-written":
      return (
        `${target} was written after the newest common snapshot ${d.common.name} (guid ${d.common.guid}): ${d.bytes} bytes; ` +
        `replication refuses to roll the writes back (roll back to @${d.common.name} by hand to continue)`
      );
    case "no-common-snapshot":
      return (
        `${target} exists but has no snapshot in common with the source (by guid)` +
        `${d.snapshots.length > 0 ? `; its snapshots: ${d.snapshots.join(", ")}` : ", and no snapshots"}; replication refuses to overwrite it`
      );
  }
}


/**
 * True when a target that lacks zcsi:replica-of is nevertheless provably a replica this
 * replicator made from this source: it has snapshots, every one of them is a `zcsi-repl-*`
 * snapshot, and every one has the guid of a snapshot of the source. Guids are 64-bit random
 * (zfs-send(8) keeps them across send/receive), so only a receive from this source produces
 * that. This is how a run recovers when it received a first full stream but was cut before it
 * could mark the target (zfs-fuse has no `receive -o`, so the mark is a second command there).
 */
export function isUnmarkedReplica(source: readonly SnapshotEntry[], target: readonly SnapshotEntry[]): boolean {
  const guids = new Set(source.map((s) => s.guid));
  return target.length > 0 && target.every((t) => t.name.startsWith(REPLICATION_SNAPSHOT_PREFIX) && guids.has(t.guid));
}
