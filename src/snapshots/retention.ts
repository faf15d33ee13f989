import { AUTO_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import { DEFAULT_FREQUENT_MINUTES, type Bucket, type BucketName, type RetentionPolicy } from "../volumes/schedule.js";

/**
 * Pure retention math: given a policy, the time now and a volume's automatic snapshots, which
 * snapshot to take and which to prune. No I/O: scheduler.ts feeds it what one `zfs get` saw.
 *
 * The rule (docs/snapshots.md says the same to users):
 *
 * - Every bucket divides time into UTC periods (policy.ts). A snapshot belongs to one period
 *   of each bucket.
 * - Taking: a snapshot is due when the current period of the finest bucket holds no automatic
 *   snapshot yet. Only the current period is ever filled, so after any downtime exactly one
 *   catch-up snapshot is taken, never one per missed period.
 * - Keeping: for each bucket with count N, walk the snapshots newest first and keep the newest
 *   snapshot of each period, until N periods are kept. Periods without a snapshot (an outage)
 *   do not use up the count, so an outage never makes older snapshots expire sooner. The
 *   current, unfinished period counts as one of the N. A snapshot kept by any bucket is kept.
 * - Pruning: every other automatic snapshot dated at or before now. Snapshots dated after now
 *   (the clock was stepped back) are kept and ignored until time catches up with them.
 *
 * What must never be pruned whatever this says (holds, clones, unreplicated snapshots) is the
 * scheduler's concern: protection keeps a snapshot but does not change which ones count here.
 */

/** Prefix of every automatic snapshot; nothing else may use it (CSI snapshots are `snapshot-<uid>`). */
export const AUTO_PREFIX = AUTO_SNAPSHOT_PREFIX;
const AUTO_NAME = new RegExp(`^${AUTO_PREFIX}([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})([0-9]{2})Z$`);

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export interface AutoSnapshot {
  /** The snapshot part of `dataset@name`. */
  readonly name: string;
  /** The time in its name (ms since the epoch). */
  readonly time: number;
}

export interface RetentionPlan {
  /** Name of the snapshot to take now, when one is due. */
  readonly take?: string;
  /** Snapshots to keep (including `take`), oldest first, with the buckets that keep each. */
  readonly keep: readonly { readonly name: string; readonly buckets: readonly BucketName[] }[];
  /** Snapshots whose periods have all expired, oldest first. */
  readonly prune: readonly string[];
}

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

/** `zcsi-auto-2026-11-22T0100Z`: UTC, to the minute (the seconds are dropped). */
export function autoSnapshotName(at: Date): string {
  return `${AUTO_PREFIX}${pad(at.getUTCFullYear(), 4)}-${pad(at.getUTCMonth() + 1)}-${pad(at.getUTCDate())}T${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}Z`;
}

/** The time an automatic snapshot name stands for, or undefined when the name is not exactly one. */
export function parseAutoSnapshotName(name: string): number | undefined {
  const m = AUTO_NAME.exec(name);
  if (!m) return undefined;
  const [, y, mo, d, h, mi] = m.map(Number) as [number, number, number, number, number, number];
  const time = Date.UTC(y, mo - 1, d, h, mi);
  // Date.UTC rolls 2026-02-30 over into March: a name is valid only if it formats back to itself.
  return autoSnapshotName(new Date(time)) === name ? time : undefined;
}

/** Start (ms, UTC) of the period of `bucket` that contains `time`. */
export function periodStart(bucket: Pick<Bucket, "name" | "intervalMinutes">, time: number): number {
  const floorTo = (unit: number): number => Math.floor(time / unit) * unit;
  switch (bucket.name) {
    case "frequent":
      return floorTo((bucket.intervalMinutes ?? DEFAULT_FREQUENT_MINUTES) * MINUTE);
    case "hourly":
      return floorTo(HOUR);
    case "daily":
      return floorTo(DAY);
    case "weekly": {
      // ISO weeks start on Monday; 1970-01-01 was a Thursday (Monday-based index 3).
      const day = Math.floor(time / DAY);
      const sinceMonday = (((day + 3) % 7) + 7) % 7;
      return (day - sinceMonday) * DAY;
    }
    case "monthly": {
      const d = new Date(time);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    }
    case "yearly":
      return Date.UTC(new Date(time).getUTCFullYear(), 0, 1);
  }
}

const newestFirst = (a: AutoSnapshot, b: AutoSnapshot): number => b.time - a.time || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0);

/** Whether a snapshot is due now: the finest bucket's current period holds none (see the rule above). */
export function isDue(policy: RetentionPolicy, now: Date, existing: readonly AutoSnapshot[]): boolean {
  const finest = policy.buckets[0];
  if (finest === undefined) return false;
  const nowMs = now.getTime();
  const current = periodStart(finest, nowMs);
  return !existing.some((s) => s.time <= nowMs && periodStart(finest, s.time) === current);
}

/** Which snapshots the buckets keep, with the buckets keeping each (see the rule above). */
export function keptBy(policy: RetentionPolicy, snapshots: readonly AutoSnapshot[]): Map<string, BucketName[]> {
  const series = [...snapshots].sort(newestFirst);
  const kept = new Map<string, BucketName[]>();
  for (const bucket of policy.buckets) {
    const periods = new Set<number>();
    for (const s of series) {
      const period = periodStart(bucket, s.time);
      if (periods.has(period)) continue;
      if (periods.size >= bucket.keep) break;
      periods.add(period);
      kept.set(s.name, [...(kept.get(s.name) ?? []), bucket.name]);
    }
  }
  return kept;
}

/**
 * The plan for one volume at `now`. With the `off` policy nothing is taken or pruned.
 * Duplicate names in `existing` are the caller's bug; they are treated as one snapshot.
 */
export function planRetention(policy: RetentionPolicy, now: Date, existing: readonly AutoSnapshot[]): RetentionPlan {
  const nowMs = now.getTime();
  const unique = [...new Map(existing.map((s) => [s.name, s])).values()];
  const oldestFirst = (a: AutoSnapshot, b: AutoSnapshot): number => -newestFirst(a, b);
  if (policy.buckets.length === 0) {
    return { keep: unique.sort(oldestFirst).map((s) => ({ name: s.name, buckets: [] })), prune: [] };
  }
  const past = unique.filter((s) => s.time <= nowMs);
  const future = unique.filter((s) => s.time > nowMs);
  const take = isDue(policy, now, past) ? autoSnapshotName(now) : undefined;
  const series = take === undefined ? past : [...past, { name: take, time: Math.floor(nowMs / MINUTE) * MINUTE }];
  const kept = keptBy(policy, series);
  const keep = [...series.filter((s) => kept.has(s.name)), ...future]
    .sort(oldestFirst)
    .map((s) => ({ name: s.name, buckets: kept.get(s.name) ?? [] }));
  const prune = past
    .filter((s) => !kept.has(s.name))
    .sort(oldestFirst)
    .map((s) => s.name);
  return { ...(take !== undefined && { take }), keep, prune };
}
