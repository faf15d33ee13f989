/**
 * A planned move's vocabulary (pure): the steps in order, the record a rerun resumes from, and
 * the contracts of the parts a move drives but does not own (promotion and the per-volume move
 * lock: promote.ts and move-lock.ts; the pods and attachments: k8s/workloads.ts).
 *
 * The truth stays in ZFS: the attach block is zcsi:moving on the home copy (with the time it
 * began), the home is decided from the copies' roles and epochs (volumes/home.ts). The record
 * only says how far a run got, so a rerun skips what is done and reports the real downtime.
 */

/** In order; a run records each one when it is done. */
export const MOVE_STEPS = ["started", "caught-up", "blocked", "detached", "final-sent", "promoted", "demoted", "done"] as const;
export type MoveStep = (typeof MOVE_STEPS)[number];

export interface CopyRef {
  readonly host: string;
  readonly dataset: string;
}

export interface MoveRecord {
  readonly op: "migrate";
  readonly volumeId: string;
  readonly from: CopyRef;
  readonly to: CopyRef;
  readonly step: MoveStep;
  /** ISO time attaches were blocked (the downtime's start). */
  readonly blockedAt?: string;
  /** Stream bytes of the final increment. */
  readonly finalBytes?: number;
}

export function stepIndex(step: MoveStep): number {
  return MOVE_STEPS.indexOf(step);
}

/** Whether `record` got at least as far as `step`. */
export function reached(record: MoveRecord | undefined, step: MoveStep): boolean {
  return record !== undefined && stepIndex(record.step) >= stepIndex(step);
}

/** The per-volume move lock, held for a whole move; its record survives a killed run. */
export interface MigrateLock {
  /** What an earlier (interrupted) run recorded, if anything. */
  readonly record: MoveRecord | undefined;
  save(record: MoveRecord): Promise<void>;
  /** Ends the move: the lock and its record go. */
  release(): Promise<void>;
  /** Lets go of the lock and keeps the record, so a rerun resumes at once (after a failed step). */
  leave(): Promise<void>;
}

export interface MigrateLocks {
  /** Aborted when another live operation holds the volume's lock. */
  acquire(volumeId: string, op: string): Promise<MigrateLock>;
}

/** Role changes of a volume's copies, at epoch + 1 (promote) and to a replica of the new home (demote). */
export interface Promotions {
  promote(volumeId: string, copy: CopyRef): Promise<{ readonly epoch: number }>;
  demote(volumeId: string, copy: CopyRef, newHome: CopyRef): Promise<void>;
}

/**
 * The new home's zcsi:replicate-to: the old list without the new home, with the old home added,
 * so that replication runs the other way and keeps the other copies. Comma-separated, order kept.
 */
export function replicateToAfterMove(old: string | undefined, from: string, to: string): string {
  const hosts = (old ?? "")
    .split(",")
    .map((h) => h.trim())
    .filter((h) => h !== "" && h !== to);
  if (!hosts.includes(from)) hosts.unshift(from);
  return hosts.join(",");
}

/** Downtime in ms from the block's start to `now`; undefined when the start is unknown. */
export function downtimeMs(blockedAt: string | undefined, now: Date): number | undefined {
  if (blockedAt === undefined) return undefined;
  const t = Date.parse(blockedAt);
  return Number.isNaN(t) ? undefined : Math.max(0, now.getTime() - t);
}

/**
 * Whether to stop catching up and block: the last increment was small enough, or rounds ran out
 * (a volume written faster than it can be sent never converges; the final send then is larger).
 */
export function caughtUp(lastBytes: number, round: number, options: { maxFinalDeltaBytes: number; maxRounds: number }): boolean {
  return lastBytes <= options.maxFinalDeltaBytes || round >= options.maxRounds;
}

/** For drain: a configured host with the most free space, among `candidates` (name → bytes available). */
export function mostFreeSpace(candidates: ReadonlyMap<string, bigint>): string | undefined {
  let best: [string, bigint] | undefined;
  for (const entry of [...candidates].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (best === undefined || entry[1] > best[1]) best = entry;
  }
  return best?.[0];
}
