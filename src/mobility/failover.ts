import { errorMessage, failedPrecondition, isZcsiError } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import { HOME_ANNOTATION, homeAnnotationValue, type PvAnnotator } from "../k8s/pv.js";
import type { VolumeWorkloads } from "../k8s/workloads.js";
import type { Logger } from "../log.js";
import { failedOverValue } from "../volumes/failed-over.js";
import { copyName, type Copy } from "../volumes/home.js";
import { newestSnapshot, type VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { lastMoveProperty } from "../volumes/moves.js";
import { PROP } from "../volumes/properties.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import type { MoveLock, MoveLocks } from "./move-lock.js";
import { promoteCopy } from "./promote.js";

/**
 * Unplanned failover (issue 14, item 4): the home of a volume is gone, so the replica with the
 * newest replicated snapshot becomes the home (promote.ts, epoch + 1). Refused while the old
 * home answers, unless forced. What was written on the old home after that snapshot is not on
 * the new one: the data-loss window, printed, recorded in an Event and an annotation on the PV.
 * The volume's VolumeAttachments are removed and the pods using it deleted, so they attach again
 * through ControllerPublish, which now answers the new home. The old home, when it returns, is
 * fenced by the first zcsi lookup that reaches it (VolumeHomes), and kept until `zcsi resync`.
 */

/** The PV annotation recording the last failover (JSON). */
export const FAILOVER_ANNOTATION = "zcsi.dev/failover";

export interface FailoverDeps {
  readonly hosts: PoolHosts;
  readonly homes: VolumeHomes;
  readonly locks: MoveLocks;
  /** The CSI driver name: the attacher of the volume's VolumeAttachments. */
  readonly driverName: string;
  readonly logger: Logger;
  readonly workloads?: VolumeWorkloads;
  readonly events?: EventRecorder;
  readonly pvs?: PvAnnotator;
}

export interface FailoverRequest {
  readonly volumeId: string;
  readonly to?: string;
  /** Promote even though the old home answers (it is fenced at once). */
  readonly force?: boolean;
  /** Take over the move lock of an interrupted failover of this volume. */
  readonly resume?: boolean;
}

export interface FailoverResult {
  readonly volumeId: string;
  readonly from?: string;
  readonly to: string;
  readonly epoch: number;
  /** The new home was the home already (a rerun): nothing promoted. */
  readonly already: boolean;
  /** The newest snapshot the new home has: data written on the old home after it is not there. */
  readonly lastSnapshot?: { readonly name: string; readonly createdAt: Date };
  readonly pv?: string;
  readonly removedAttachments: readonly string[];
  readonly deletedPods: readonly string[];
}

/** The replica to promote: the one named, else the one with the newest snapshot (all reachable replicas asked). */
async function pickTarget(hosts: PoolHosts, replicas: readonly Copy[], to: string | undefined, volumeId: string): Promise<string> {
  if (to !== undefined) return to;
  let best: { host: string; at: number } | undefined;
  for (const r of replicas) {
    const newest = await newestSnapshot(hosts, r).catch(() => undefined);
    const at = newest?.createdAt.getTime() ?? -1;
    if (!best || at > best.at) best = { host: r.host, at };
  }
  if (!best) throw failedPrecondition(`volume ${volumeId} has no reachable replica to fail over to; nothing changed`);
  return best.host;
}

/** Volume ids whose copies on the reachable hosts are replicas of a dataset on `home` (`zcsi failover --host`). */
export async function volumesHomedOn(hosts: PoolHosts, home: string): Promise<string[]> {
  const found = new Set<string>();
  for (const host of hosts.all().filter((h) => h.config.name !== home)) {
    let all;
    try {
      all = await host.zfs.get([host.config.parentDataset], [PROP.volume, PROP.role, PROP.replicaOf], { depth: 1 });
    } catch {
      continue; // that host's replicas are unknown; the others still answer
    }
    for (const props of all.values()) {
      const volume = ownUserPropertyValue(props.get(PROP.volume));
      const of = ownUserPropertyValue(props.get(PROP.replicaOf));
      if (volume !== undefined && ownUserPropertyValue(props.get(PROP.role)) !== "primary" && of?.startsWith(`${home}:`)) found.add(volume);
    }
  }
  return [...found].sort();
}

export async function failover(deps: FailoverDeps, req: FailoverRequest): Promise<FailoverResult> {
  const { hosts, homes, volumeId } = { ...deps, volumeId: req.volumeId };
  const log = deps.logger.child({ op: "failover", volumeId });
  const before = await homes.find(volumeId, "failover");
  if (before.home && req.to !== undefined && before.home.host === req.to) {
    log.info({ to: req.to, epoch: before.home.epoch }, "already the home; nothing to fail over");
    return { volumeId, to: req.to, epoch: before.home.epoch, already: true, removedAttachments: [], deletedPods: [] };
  }
  if (before.home && !req.force) {
    throw failedPrecondition(
      `volume ${volumeId}: its home ${copyName(before.home)} (epoch ${before.home.epoch}) answers; a failover would leave writes on it behind. ` +
        `Use zcsi migrate for a planned move, or --force to promote anyway (the old home is fenced); nothing changed`,
    );
  }
  const to = await pickTarget(hosts, before.replicas, req.to, volumeId);
  const from = before.home?.host ?? (before.unknown.map((u) => u.host).join(",") || undefined);
  let lock: MoveLock | undefined;
  try {
    lock = await deps.locks.acquire({ op: "failover", volumeId, ...(from !== undefined && { from }), to });
  } catch (err) {
    if (!req.resume || !isZcsiError(err, "FailedPrecondition")) throw err;
    lock = await deps.locks.takeOver(volumeId, "failover");
    if (!lock) throw err;
  }
  try {
    const promotion = await promoteCopy(hosts, homes, volumeId, to, log);
    await lock.step("promoted", { epoch: promotion.epoch });
    const lastSnapshot = await newestSnapshot(hosts, promotion);
    if (!promotion.already) {
      const at = new Date().toISOString();
      const end = lastMoveProperty({ kind: "failover", outcome: "done", at, ...(from !== undefined && { from }), to, epoch: promotion.epoch });
      await hosts.get(to).zfs.set(promotion.dataset, { [PROP.failedOver]: failedOverValue(from, promotion.epoch, at, lastSnapshot), ...end });
    }
    const result = await restartWorkloads(deps, { volumeId, ...(from !== undefined && { from }), to, epoch: promotion.epoch, already: promotion.already, ...(lastSnapshot && { lastSnapshot }) }, promotion);
    await lock.step("workloads-restarted");
    await lock.release();
    log.warn({ from, to, epoch: result.epoch, lastSnapshot: lastSnapshot?.name, lastSnapshotAt: lastSnapshot?.createdAt.toISOString() }, "failed over");
    return result;
  } catch (err) {
    // The lock stays: its record says how far this got; a rerun with --resume continues.
    log.error({ err: errorMessage(err), step: lock.record.step }, "failover interrupted; rerun it with --resume to continue");
    throw err;
  }
}

type Partial = Omit<FailoverResult, "removedAttachments" | "deletedPods" | "pv">;

/** Records the failover on the PV and makes its pods attach again (to the new home). */
async function restartWorkloads(deps: FailoverDeps, partial: Partial, promotion: { host: string; dataset: string }): Promise<FailoverResult> {
  const props = (await deps.hosts.get(promotion.host).zfs.get([promotion.dataset], [PROP.pv, PROP.csiName])).get(promotion.dataset);
  const pv = ownUserPropertyValue(props?.get(PROP.pv)) ?? ownUserPropertyValue(props?.get(PROP.csiName));
  const removedAttachments: string[] = [];
  const deletedPods: string[] = [];
  if (pv === undefined) return { ...partial, removedAttachments, deletedPods };
  const window = partial.lastSnapshot ? `data written after ${partial.lastSnapshot.createdAt.toISOString()} (snapshot ${partial.lastSnapshot.name}) is not on ${partial.to}` : `${partial.to} has no snapshot of the volume`;
  if (!partial.already) {
    await deps.events?.record({ pvName: pv, type: "Warning", reason: "FailedOver", message: `volume failed over from ${partial.from ?? "?"} to ${partial.to} (epoch ${partial.epoch}); ${window}` });
    await deps.pvs?.annotate(pv, {
      [HOME_ANNOTATION]: homeAnnotationValue(promotion, partial.epoch),
      [FAILOVER_ANNOTATION]: JSON.stringify({ from: partial.from, to: partial.to, epoch: partial.epoch, lastSnapshot: partial.lastSnapshot?.name, lastSnapshotAt: partial.lastSnapshot?.createdAt.toISOString() }),
    });
  }
  const workloads = deps.workloads;
  if (workloads) {
    for (const name of await workloads.attachments(pv, deps.driverName)) if (await workloads.deleteAttachment(name)) removedAttachments.push(name);
    const claim = await workloads.pvClaim(pv);
    if (claim) for (const pod of await workloads.podsUsing(claim)) if (await workloads.deletePod(claim.namespace, pod)) deletedPods.push(`${claim.namespace}/${pod}`);
  }
  return { ...partial, pv, removedAttachments, deletedPods };
}
