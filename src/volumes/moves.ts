import { PROP } from "./properties.js";
import { parseJsonObject } from "../util/json.js";

/**
 * How a move of a volume ended, recorded on the copy it ended on (zcsi:last-move), so that a
 * long-running component (the replicator, which lists every copy on every pass) can count moves
 * and their downtime in its metrics: `zcsi migrate`, `failover` and `resync` are one-shot
 * commands that nothing scrapes. Pure: format and parse.
 */

export const MOVE_KINDS = ["migrate", "failover", "resync"] as const;
export type MoveKind = (typeof MOVE_KINDS)[number];
/** `done`: the move finished; `undone`: a migrate gave up before its promotion and the old home serves again. */
export type MoveEnd = "done" | "undone";

export interface MoveOutcome {
  readonly kind: MoveKind;
  readonly outcome: MoveEnd;
  /** ISO time the move ended. */
  readonly at: string;
  readonly from?: string;
  readonly to?: string;
  readonly epoch?: number;
  /** A migrate's attaches blocked → released. */
  readonly downtimeSeconds?: number;
}

/** The `zfs set` that records `outcome` on a copy. */
export function lastMoveProperty(outcome: MoveOutcome): Record<string, string> {
  return { [PROP.lastMove]: JSON.stringify(outcome) };
}

/** The record a zcsi:last-move value holds; undefined for anything else (hand-edited, from a newer zcsi). */
export function parseLastMove(text: string | undefined): MoveOutcome | undefined {
  const r = parseJsonObject(text);
  if (r === undefined) return undefined;
  const kind = MOVE_KINDS.find((k) => k === r.kind);
  const outcome = r.outcome === "done" || r.outcome === "undone" ? r.outcome : undefined;
  if (kind === undefined || outcome === undefined || typeof r.at !== "string" || Number.isNaN(Date.parse(r.at))) return undefined;
  const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
  const num = (x: unknown): number | undefined => (typeof x === "number" && Number.isFinite(x) && x >= 0 ? x : undefined);
  const from = str(r.from);
  const to = str(r.to);
  const epoch = num(r.epoch);
  const downtimeSeconds = num(r.downtimeSeconds);
  return {
    kind,
    outcome,
    at: r.at,
    ...(from !== undefined && { from }),
    ...(to !== undefined && { to }),
    ...(epoch !== undefined && { epoch }),
    ...(downtimeSeconds !== undefined && { downtimeSeconds }),
  };
}
