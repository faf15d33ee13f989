import { parseJsonObject } from "../util/json.js";

/**
 * The zcsi:failed-over record (volumes/properties.ts) that a failover leaves on the copy it
 * promoted: written by mobility/failover.ts (volumes) and replication/annotation-failover.ts
 * (node-annotation datasets), read by the replicator (moved-home.ts, annotation-failover.ts) and
 * shown by `zcsi status`.
 */
export interface FailedOver {
  /** The old home(s) as `<host>:<dataset>`, or host names joined by commas when unknown. */
  readonly from?: string;
  /** When the copy was promoted, in seconds since the epoch. */
  readonly at?: number;
}

/** The property's value for a promotion at `at` from `from` to `epoch`, with the newest snapshot the new home had. */
export function failedOverValue(from: string | undefined, epoch: number, at: string, newest: { readonly name: string; readonly createdAt: Date } | undefined): string {
  return JSON.stringify({ from, epoch, at, lastSnapshot: newest?.name, lastSnapshotAt: newest?.createdAt.toISOString() });
}

/** The record's `from` and `at` (each left out when unreadable); undefined when there is no readable record. */
export function readFailedOver(value: string | undefined): FailedOver | undefined {
  const parsed = parseJsonObject(value);
  if (parsed === undefined) return undefined;
  const { from, at } = parsed;
  const seconds = typeof at === "string" ? Date.parse(at) / 1000 : NaN;
  return { ...(typeof from === "string" && { from }), ...(!Number.isNaN(seconds) && { at: seconds }) };
}
