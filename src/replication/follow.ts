import { failedPrecondition } from "../errors.js";
import { PROP, REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import { followedGeneration, mustFollow, parseRollbackRequest, type RollbackRequest } from "../volumes/rollback.js";
import { ownUserPropertyValue, type DatasetProperties } from "../zfs/parse.js";
import { replicaMark } from "./bookkeeping.js";
import { plan } from "./plan.js";
import { planInput, type Side } from "./sides.js";
import type { TransferContext } from "./transfer.js";

/**
 * Replicas follow an operator's rollback (`zcsi rollback`, docs/rollback.md): the one time the
 * replicator rolls a target back. The rollback records its request on the source
 * (zcsi:rollback = `<generation> <guid> <snapshot>`); the next run of each job whose target has
 * not followed that generation (zcsi:rollback-followed, set with the replica's marks after the
 * next receive) undoes on the target what the source no longer has, and only that, so the
 * usual increment (or a full send) can follow:
 * - the target has the newest snapshot both still share (by guid): `zfs rollback -r` to it,
 *   destroying the target's later snapshots (the ones the rollback destroyed on the source);
 * - none is shared (the source kept only snapshots the target never received, the usual case:
 *   the target holds only `zcsi-repl-*` snapshots): the target is destroyed and sent again in
 *   full.
 * Only a target whose later snapshots are all the replicator's own (`zcsi-repl-*`) is touched;
 * a snapshot someone took on the target is refused, named, like any divergence. A target that
 * does not diverge (the rollback went to a snapshot after the last replicated one) is left
 * as it is. Once per request: a request already followed, or none, changes nothing here.
 */

/** The request on the source that this target has not followed yet; undefined: nothing to follow. */
export function pendingRollback(source: DatasetProperties | undefined, target: DatasetProperties | undefined): RollbackRequest | undefined {
  const request = parseRollbackRequest(ownUserPropertyValue(source?.get(PROP.rollback)));
  const followed = followedGeneration(ownUserPropertyValue(target?.get(PROP.rollbackFollowed)));
  return mustFollow(request, followed) ? request : undefined;
}

/** Undoes on the target what a requested rollback removed from the source. True when it changed the target. */
export async function followRollback(ctx: TransferContext, source: Side, target: Side): Promise<boolean> {
  if (!target.exists) return false;
  const request = pendingRollback(source.props, target.props);
  if (request === undefined) return false;
  const next = plan(planInput(source, target));
  if (next.kind !== "refuse") return false;
  const targetName = replicaMark(ctx.job.target);
  const log = ctx.log.child({ op: "follow-rollback", generation: request.generation, rolledBackTo: request.snapshot });
  const divergence = next.divergence;
  const doomed = divergence.reason === "target-written" ? [] : divergence.snapshots;
  const foreign = doomed.filter((name) => !name.startsWith(REPLICATION_SNAPSHOT_PREFIX));
  if (foreign.length > 0) {
    throw failedPrecondition(
      `${targetName} must follow the rollback of ${replicaMark(ctx.job.source)} to @${request.snapshot} (generation ${request.generation}), ` +
        `but it has snapshots the replicator did not make: ${foreign.join(", ")}; destroy or keep them by hand (zfs rename) first`,
    );
  }
  if (divergence.reason === "no-common-snapshot") {
    log.warn({ target: targetName, destroyed: doomed }, "following the operator's rollback: the target shares no snapshot with the source any more; destroying it to send it again in full");
    await ctx.tgt.zfs.destroy(ctx.job.target.dataset, { recursive: true });
    return true;
  }
  log.warn({ target: targetName, to: divergence.common.name, destroyed: doomed }, "following the operator's rollback: rolling the target back to the newest snapshot it shares with the source");
  await ctx.tgt.zfs.rollback(`${ctx.job.target.dataset}@${divergence.common.name}`, { destroyNewer: true });
  return true;
}
