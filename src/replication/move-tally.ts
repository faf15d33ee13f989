import type { MoveMetrics } from "../metrics.js";
import { parseLastMove, type MoveOutcome } from "../volumes/moves.js";
import { PROP } from "../volumes/properties.js";
import { ownUserPropertyValue, type PropertyMap } from "../zfs/parse.js";

/**
 * Counts the moves the replicator sees in its listings (each copy's zcsi:last-move) into
 * MoveMetrics, each once: a record ended after this process started and not counted yet. A
 * record older than the process was counted by the process before it (or happened while no
 * replicator ran), so a restart never counts a move twice; Prometheus sees the restart as a
 * counter reset, as with any counter.
 */
export class MoveTally {
  private readonly counted = new Set<string>();

  constructor(
    private readonly metrics: MoveMetrics | undefined,
    /** Records that ended before this (ms) are not counted. */
    private readonly sinceMs: number,
  ) {}

  /** Counts the new records in one host's listing (depth 1 below parentDataset) and sets its stale-copy gauge. Returns what it counted. */
  observe(poolHost: string, listing: PropertyMap): MoveOutcome[] {
    const counted: MoveOutcome[] = [];
    let stale = 0;
    for (const [dataset, props] of listing) {
      if (ownUserPropertyValue(props.get(PROP.fenced)) !== undefined && ownUserPropertyValue(props.get(PROP.role)) !== "replica") stale++;
      const move = parseLastMove(ownUserPropertyValue(props.get(PROP.lastMove)));
      if (move === undefined || Date.parse(move.at) < this.sinceMs) continue;
      const key = `${poolHost}:${dataset}\u0000${move.kind}\u0000${move.at}`;
      if (this.counted.has(key)) continue;
      this.counted.add(key);
      counted.push(move);
      this.metrics?.moves.inc({ kind: move.kind, outcome: move.outcome });
      if (move.downtimeSeconds !== undefined) this.metrics?.downtime.observe({ kind: move.kind }, move.downtimeSeconds);
    }
    this.metrics?.staleCopies.set({ pool_host: poolHost }, stale);
    return counted;
  }
}
