import { deadlineExceeded, errorMessage } from "../errors.js";
import type { VolumeWorkloads } from "../k8s/workloads.js";
import type { Logger } from "../log.js";
import type { Clock } from "../util/clock.js";
import type { PoolHost } from "../volumes/hosts.js";
import { formatMoving } from "../volumes/moving.js";
import { PROP } from "../volumes/properties.js";
import { readPublications } from "../volumes/publications.js";
import type { CopyRef } from "./steps.js";

/**
 * The downtime half of a planned move: block new attaches of the volume (zcsi:moving on the
 * home copy, which ControllerPublishVolume answers with UNAVAILABLE), restart the pods that use
 * it, wait until no node has it, and release the block at the end (or when the move is undone).
 *
 * "No node has it" is read where it is true: the publication record on the home dataset
 * (volumes/publications.ts) is empty, which happens when the external-attacher has called
 * ControllerUnpublishVolume for every node; kubelet unstages before the attacher detaches. With
 * Kubernetes at hand, the PV's VolumeAttachments must also be gone.
 */

export interface DetachContext {
  readonly volumeId: string;
  /** The PV the volume is bound to (zcsi:pv, else the CSI name); undefined: no Kubernetes side. */
  readonly pvName: string | undefined;
  readonly workloads: VolumeWorkloads | undefined;
  /** The CSI driver name: the attacher of the PV's VolumeAttachments. */
  readonly driverName: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly sleep: (ms: number) => Promise<void>;
  readonly pollMs: number;
  readonly timeoutMs: number;
}

/** Sets zcsi:moving on the home copy; returns the value (with the block's start time). */
export async function blockAttaches(home: PoolHost, copy: CopyRef, target: string, now: Date): Promise<string> {
  const value = formatMoving(target, now);
  await home.zfs.set(copy.dataset, { [PROP.moving]: value });
  return value;
}

/** Removes zcsi:moving from every copy given that exists (a copy promoted with the volume's metadata may carry it too). */
export async function releaseAttaches(copies: readonly { host: PoolHost; copy: CopyRef }[], logger: Logger, volumeId: string): Promise<void> {
  for (const { host, copy } of copies) {
    if (!(await host.zfs.exists(copy.dataset))) continue;
    await host.zfs.inherit(copy.dataset, PROP.moving);
    logger.debug({ op: "migrate", volumeId, poolHost: host.config.name, dataset: copy.dataset }, "attach block cleared");
  }
}

/** Deletes the pods that use the volume's claim (their controllers recreate them; they wait for the attach). Returns their names. */
export async function restartPods(ctx: DetachContext): Promise<string[]> {
  if (ctx.workloads === undefined || ctx.pvName === undefined) return [];
  const claim = await ctx.workloads.pvClaim(ctx.pvName);
  if (claim === undefined) {
    ctx.logger.info({ op: "migrate", volumeId: ctx.volumeId, pv: ctx.pvName }, "no bound PersistentVolume: no pods to restart");
    return [];
  }
  const deleted: string[] = [];
  for (const pod of await ctx.workloads.podsUsing(claim)) {
    if (await ctx.workloads.deletePod(claim.namespace, pod)) deleted.push(`${claim.namespace}/${pod}`);
  }
  ctx.logger.info({ op: "migrate", volumeId: ctx.volumeId, pv: ctx.pvName, claim: `${claim.namespace}/${claim.name}`, pods: deleted }, "deleted the pods that use the volume");
  return deleted;
}

/** What still holds the volume: nodes in the publication record, the PV's VolumeAttachments. Empty: detached. */
export async function holders(home: PoolHost, copy: CopyRef, ctx: DetachContext): Promise<string[]> {
  const record = await readPublications(home, copy.dataset);
  const held = [...record.publications.map((p) => `published to node ${p.node}`), ...record.unreadable.map((u) => `unreadable publication ${u}`)];
  if (ctx.workloads !== undefined && ctx.pvName !== undefined) {
    // The attacher removes a VolumeAttachment once ControllerUnpublishVolume succeeded for it.
    for (const name of await ctx.workloads.attachments(ctx.pvName, ctx.driverName)) held.push(`VolumeAttachment ${name}`);
  }
  return held;
}

/** Waits until nothing holds the volume; DeadlineExceeded (naming what still does) after timeoutMs. */
export async function waitDetached(home: PoolHost, copy: CopyRef, ctx: DetachContext): Promise<void> {
  const start = ctx.clock.now().getTime();
  let last: string[] = [];
  for (;;) {
    try {
      last = await holders(home, copy, ctx);
      if (last.length === 0) return;
    } catch (err) {
      last = [`cannot tell: ${errorMessage(err)}`];
    }
    if (ctx.clock.now().getTime() - start >= ctx.timeoutMs) {
      throw deadlineExceeded(`volume ${ctx.volumeId} is still in use after ${Math.round(ctx.timeoutMs / 1000)} s: ${last.join("; ")}`);
    }
    await ctx.sleep(ctx.pollMs);
  }
}
