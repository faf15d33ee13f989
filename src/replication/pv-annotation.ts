/** The replica annotation on a PV (`zcsi.dev/replica.<host>`): what `kubectl describe pv` shows of each replica. */
import { formatDuration } from "../util/units.js";

const MAX_ERROR = 200;

/** RFC 3339 to the second: what the PV annotation shows. */
function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.[0-9]{3}Z$/, "Z");
}

/** One line, bounded: annotation values and Event messages are read by people in `kubectl describe`. */
export function shortError(message: string): string {
  const line = message.replace(/\s+/g, " ").trim();
  return line.length > MAX_ERROR ? `${line.slice(0, MAX_ERROR - 1)}…` : line;
}

/** The PV annotation value after a run: when, the replica's lag, its newest snapshot and the epoch it carries. */
export function replicaAnnotationValue(at: Date, good: { snapshot: string; createdAt: number; epoch?: number } | undefined, error?: string): string {
  const parts = [isoSeconds(at)];
  if (good !== undefined) parts.push(`lag=${formatDuration(at.getTime() / 1000 - good.createdAt)}`, `snapshot=${good.snapshot}`);
  if (good?.epoch !== undefined) parts.push(`epoch=${good.epoch}`);
  if (error !== undefined) parts.push(`error=${shortError(error)}`);
  return parts.join(" ");
}
