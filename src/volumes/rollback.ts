import { AUTO_SNAPSHOT_PREFIX, REPLICATION_SNAPSHOT_PREFIX } from "./properties.js";

/**
 * `zcsi rollback`, decided from one read of the volume's snapshots (pure, so every refusal is
 * a unit test; mobility/rollback.ts reads and acts). zfs-rollback(8): a dataset goes back to a
 * snapshot only when no later snapshot exists, or with `-r`, which destroys the later ones. So
 * the later snapshots are what a rollback destroys, and each is judged:
 * - a CSI snapshot (a local zcsi:csi-snapshot-name, not deferred-destroyed: its
 *   VolumeSnapshot still exists) is never destroyed here: the VolumeSnapshotContent would name
 *   a snapshot that is gone (refused, naming the VolumeSnapshot);
 * - a snapshot with holds other than the replicator's own (zfs-hold(8): a person or another
 *   tool keeps it) is refused; the replicator's holds are released by the rollback, since its
 *   targets follow (replication/follow.ts);
 * - a snapshot with clones is refused (`-R` would destroy the clones; zcsi never uses it);
 * - anything else is destroyed only with `--destroy-newer`, after it was listed.
 */

/** One snapshot of the volume, as read. */
export interface RollbackSnapshot {
  /** After `@`. */
  readonly name: string;
  readonly guid: string;
  readonly createtxg: bigint;
  /** Holds of any tag (`userrefs`). */
  readonly userrefs: number;
  /** Hold tags the replicator placed on it (zcsi-repl-<job>): released by the rollback. */
  readonly replicationHolds: readonly string[];
  /** Datasets cloned from it (`clones`, or `origin` of the datasets beside the volume). */
  readonly clones: readonly string[];
  /** Local zcsi:csi-snapshot-name: a CSI snapshot. */
  readonly csiName?: string;
  /** Local zcsi:volumesnapshot (`<namespace>/<name>`). */
  readonly volumeSnapshot?: string;
  /** defer_destroy=on: its VolumeSnapshot was deleted while clones kept it alive. */
  readonly deferDestroy: boolean;
}

export type SnapshotKind = "csi" | "scheduled" | "replication" | "other";

export interface NewerSnapshot {
  readonly name: string;
  readonly kind: SnapshotKind;
  /** Why this one cannot be destroyed; undefined when `--destroy-newer` may destroy it. */
  readonly blocker?: string;
}

export interface RollbackPlan {
  readonly target: RollbackSnapshot;
  /** Snapshots later than the target, oldest first: what the rollback destroys. */
  readonly newer: readonly NewerSnapshot[];
  /** Replication holds to release before `zfs rollback -r` (snapshot, tag). */
  readonly releases: readonly { readonly snapshot: string; readonly tag: string }[];
}

export function snapshotKind(s: Pick<RollbackSnapshot, "name" | "csiName" | "deferDestroy">): SnapshotKind {
  if (s.csiName !== undefined && !s.deferDestroy) return "csi";
  if (s.name.startsWith(AUTO_SNAPSHOT_PREFIX)) return "scheduled";
  if (s.name.startsWith(REPLICATION_SNAPSHOT_PREFIX)) return "replication";
  return "other";
}

function blockerOf(s: RollbackSnapshot, kind: SnapshotKind): string | undefined {
  if (kind === "csi") return `it backs the VolumeSnapshot ${s.volumeSnapshot ?? s.csiName ?? "?"} (delete the VolumeSnapshot first, or roll back to a later snapshot)`;
  const foreign = s.userrefs - s.replicationHolds.length;
  if (foreign > 0) return `it is held (${foreign} hold(s) besides the replicator's; zfs holds ${s.name})`;
  if (s.clones.length > 0) return `it has clones: ${s.clones.join(", ")}`;
  return undefined;
}

/** What a rollback of `dataset` to `@snapshot` destroys and whether it may. NotFound-style undefined target: the caller reports. */
export function planRollback(snapshots: readonly RollbackSnapshot[], snapshot: string): RollbackPlan | undefined {
  const sorted = [...snapshots].sort((a, b) => (a.createtxg < b.createtxg ? -1 : a.createtxg > b.createtxg ? 1 : 0));
  const target = sorted.find((s) => s.name === snapshot);
  if (target === undefined) return undefined;
  const later = sorted.filter((s) => s.createtxg > target.createtxg);
  const newer = later.map((s): NewerSnapshot => {
    const kind = snapshotKind(s);
    const blocker = blockerOf(s, kind);
    return { name: s.name, kind, ...(blocker !== undefined && { blocker }) };
  });
  const releases = later.flatMap((s) => s.replicationHolds.map((tag) => ({ snapshot: s.name, tag })));
  return { target, newer, releases };
}

/**
 * The operator's request that replicas follow a rollback, recorded on the source dataset
 * (PROP.rollback) as `<generation> <snapshot guid> <snapshot name>`. Each rollback increments
 * the generation; a target that followed records it (PROP.rollbackFollowed), so the replicator
 * rolls each target back once per request, never on its own (docs/replication.md).
 */
export interface RollbackRequest {
  readonly generation: number;
  readonly guid: string;
  readonly snapshot: string;
}

export function formatRollbackRequest(r: RollbackRequest): string {
  return `${r.generation} ${r.guid} ${r.snapshot}`;
}

export function parseRollbackRequest(value: string | undefined): RollbackRequest | undefined {
  const m = /^([1-9][0-9]{0,14}) ([0-9]+) (\S+)$/.exec(value ?? "");
  if (m === null) return undefined;
  return { generation: Number(m[1]), guid: m[2] as string, snapshot: m[3] as string };
}

/** The generation a target followed (PROP.rollbackFollowed), 0 when none. */
export function followedGeneration(value: string | undefined): number {
  return value !== undefined && /^[0-9]{1,15}$/.test(value) ? Number(value) : 0;
}

/** Whether a target that followed `followed` must follow `request` now. */
export function mustFollow(request: RollbackRequest | undefined, followed: number): request is RollbackRequest {
  return request !== undefined && request.generation > followed;
}

/** `<leaf>-zcsi-pre-rollback-20261203T165001Z`: the --keep-current copy beside the volume. */
export const PRE_ROLLBACK_INFIX = "-zcsi-pre-rollback-";
