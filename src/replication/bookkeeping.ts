/**
 * The replicator's bookkeeping after a snapshot reached the target, decided from the two
 * sides' snapshot lists and the jobs' recorded state alone: which hold moves, what is pruned on
 * the source and on the target, what `zcsi:replicated-through` becomes. Pure functions (like
 * plan.ts), so every case is a unit test; engine.ts runs the commands they name.
 *
 * Holds: the job's base on the source (its newest snapshot confirmed on the target) carries the
 * tag `zcsi-repl-<jobId>`, so no prune (ours, the snapshot scheduler's, or a human's
 * `zfs destroy`) removes the snapshot the next increment needs. The new base is held before the
 * old one is released, and the old one only once the new one's guid is confirmed on the target.
 */

import { createHash } from "node:crypto";
import { REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import type { SnapshotEntry } from "./plan.js";
import type { DatasetRef } from "./types.js";

/** A snapshot as the bookkeeping sees it: plan's entry plus its hold count. */
export interface HeldSnapshot extends SnapshotEntry {
  /** `userrefs`: holds of any tag, by any job or person (zfs-hold(8)). */
  readonly userrefs: number;
}

/** One job's record on its source dataset: the guid of its base, and the exact job id. */
export interface JobState {
  readonly jobId: string;
  readonly guid: string;
}

export const DEFAULT_TARGET_KEEP = 3;
export const JOB_STATE_PREFIX = "zcsi:repl.";

/** `zcsi-repl-2026-11-22T063251Z` (UTC, to the second: runs of one job are minutes apart). */
export function replicationSnapshotName(at: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, "0");
  return (
    `${REPLICATION_SNAPSHOT_PREFIX}${p(at.getUTCFullYear(), 4)}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())}` +
    `T${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}Z`
  );
}

/** The hold tag of a job on its source snapshots. */
export function holdTag(jobId: string): string {
  return `${REPLICATION_SNAPSHOT_PREFIX}${jobId}`;
}

/**
 * The per-job user property on the source dataset that records the guid of the job's newest
 * common snapshot (its base): `zcsi:repl.<jobId>`. User property names are lowercase only
 * (zfsprops(7)), so an id with capitals gets a short hash of the exact id appended to keep
 * `Job-1` and `job-1` apart.
 */
export function jobStateProperty(jobId: string): string {
  const lower = jobId.toLowerCase();
  return lower === jobId ? `${JOB_STATE_PREFIX}${jobId}` : `${JOB_STATE_PREFIX}${lower}.${createHash("sha256").update(jobId).digest("hex").slice(0, 8)}`;
}

/** The value of zcsi:replica-of that marks a target as the replica of `source`. */
export function replicaMark(source: DatasetRef): string {
  return `${source.host}:${source.dataset}`;
}

/** The value of a job's state property: `<base guid> <job id>`. */
export function formatJobState(state: JobState): string {
  return `${state.guid} ${state.jobId}`;
}

/**
 * The per-job base records among a source dataset's own user properties (name → value set
 * locally): property → state. Values that do not parse are not ours and are ignored.
 */
export function parseJobStates(own: Iterable<readonly [string, string | undefined]>): Map<string, JobState> {
  const states = new Map<string, JobState>();
  for (const [name, value] of own) {
    if (!name.startsWith(JOB_STATE_PREFIX)) continue;
    const m = /^([0-9]+) ([A-Za-z0-9._-]+)$/.exec(value ?? "");
    if (m === null) continue;
    states.set(name, { guid: m[1] as string, jobId: m[2] as string });
  }
  return states;
}

const isOurs = (s: { readonly name: string }): boolean => s.name.startsWith(REPLICATION_SNAPSHOT_PREFIX);

/**
 * Whether `to` (confirmed on the target) still needs the job's hold: not when this run placed
 * it (it held the snapshot before sending it), nor when the job's record already names `to` as
 * its base and `to` is held (the run that recorded it held it first; releaseHolds drops the
 * record with the hold). Holding again would only fail with "tag already exists".
 */
export function needsHold(input: { readonly to: SnapshotEntry; readonly heldByThisRun: boolean; readonly recorded: JobState | undefined; readonly source: readonly HeldSnapshot[] }): boolean {
  if (input.heldByThisRun) return false;
  const onSource = input.source.find((s) => s.guid === input.to.guid);
  return !(input.recorded?.guid === input.to.guid && onSource !== undefined && onSource.userrefs > 0);
}

/**
 * The source snapshots whose hold of this job's tag is to be released once `to` is the base:
 * every held one but `to`. Holds of other tags (other jobs, people) are not touched by releasing
 * our tag, so trying a snapshot we never held is harmless (the release says "no such tag").
 */
export function holdsToRelease(source: readonly HeldSnapshot[], to: SnapshotEntry): string[] {
  return source.filter((s) => s.guid !== to.guid && s.userrefs > 0).map((s) => s.name);
}

/**
 * Source snapshots to destroy after the releases: the replicator's own (`zcsi-repl-*`) older
 * than the base that nobody holds any more (`userrefs` as read, minus the hold this job just
 * released on it). Snapshots of others (scheduled, CSI, by hand) are never pruned here; held
 * ones (another job's base, a person's hold) stay.
 */
export function sourcePrune(source: readonly HeldSnapshot[], to: SnapshotEntry, released: ReadonlySet<string>): string[] {
  return source
    .filter((s) => isOurs(s) && s.createtxg < to.createtxg && s.userrefs - (released.has(s.name) ? 1 : 0) <= 0)
    .map((s) => s.name);
}

/**
 * Target snapshots to destroy: of the replicator's own, all but the newest `targetKeep`, the base
 * always kept (it is what the next increment starts from), and so is every snapshot that is a
 * sibling job's base on the source (`siblingBases`): the snapshot this replica shares with the
 * volume's other replicas, from which one of them continues the other after a move. Others on
 * the target are never touched (plan.ts refuses a target with foreign snapshots newer than the
 * base anyway).
 */
export function targetPrune(target: readonly SnapshotEntry[], to: SnapshotEntry, targetKeep: number | undefined, siblingBases?: ReadonlySet<string>): string[] {
  const keep = Math.max(1, targetKeep ?? DEFAULT_TARGET_KEEP);
  const ours = [...target].filter((s) => isOurs(s) && s.guid !== to.guid && !(siblingBases?.has(s.guid) ?? false)).sort((a, b) => (a.createtxg < b.createtxg ? -1 : a.createtxg > b.createtxg ? 1 : 0));
  return ours.slice(0, Math.max(0, ours.length - (keep - 1))).map((s) => s.name);
}

export type ReplicatedThroughChange = { readonly kind: "set"; readonly guid: string } | { readonly kind: "clear" } | { readonly kind: "unchanged" };

/**
 * zcsi:replicated-through on the source = guid of the newest snapshot EVERY target has: the
 * oldest of the jobs' bases (by createtxg). The snapshot scheduler prunes only automatic
 * snapshots strictly older than it (snapshots/scheduler.ts replicationGuard). A job whose base
 * no longer exists protects nothing and is skipped; with no job state left the property goes.
 */
export function replicatedThrough(source: readonly SnapshotEntry[], states: Iterable<JobState>, current: string | undefined): ReplicatedThroughChange {
  const byGuid = new Map(source.map((s) => [s.guid, s]));
  let through: SnapshotEntry | undefined;
  for (const state of states) {
    const base = byGuid.get(state.guid);
    if (base !== undefined && (through === undefined || base.createtxg < through.createtxg)) through = base;
  }
  if (through === undefined) return current === undefined ? { kind: "unchanged" } : { kind: "clear" };
  return current === through.guid ? { kind: "unchanged" } : { kind: "set", guid: through.guid };
}

/**
 * Which hold tags releaseHolds tries: the job's, or (all jobs of a source) the tag of every job
 * that recorded state there. A job that never completed a run may hold its in-flight snapshot
 * without a record; on OpenZFS `zfs holds` names those (engine.ts).
 */
export function tagsToRelease(states: ReadonlyMap<string, JobState>, jobId: string | undefined): string[] {
  return jobId !== undefined ? [holdTag(jobId)] : [...new Set([...states.values()].map((s) => holdTag(s.jobId)))];
}

/** The state properties releaseHolds removes: the job's (by property or recorded id), or all. */
export function statesToDrop(states: ReadonlyMap<string, JobState>, jobId: string | undefined): string[] {
  return [...states].filter(([property, state]) => jobId === undefined || state.jobId === jobId || property === jobStateProperty(jobId)).map(([property]) => property);
}

/** What is left after dropping `properties` and setting `set` (property → state). */
export function statesAfter(states: ReadonlyMap<string, JobState>, change: { readonly drop?: readonly string[]; readonly set?: readonly [string, JobState] }): JobState[] {
  const next = new Map(states);
  for (const p of change.drop ?? []) next.delete(p);
  if (change.set !== undefined) next.set(change.set[0], change.set[1]);
  return [...next.values()];
}
