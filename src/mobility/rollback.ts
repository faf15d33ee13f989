import { failedPrecondition, invalidArgument, notFound } from "../errors.js";
import type { ClaimLookups } from "../k8s/claims.js";
import type { EventRecorder } from "../k8s/events.js";
import type { ClaimRef, VolumeWorkloads } from "../k8s/workloads.js";
import type { Logger } from "../log.js";
import type { MoveLocks } from "./move-lock.js";
import { holdTag } from "../replication/bookkeeping.js";
import { jobStates, userProperties } from "../replication/sides.js";
import { systemClock, type Clock } from "../util/clock.js";
import { copyName } from "../volumes/home.js";
import { AdoptedVolumes, isAdoptedId, parseAdoptedId } from "../volumes/adopted.js";
import type { VolumeHomes } from "../volumes/homes.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { PROP, REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import { formatRollbackRequest, parseRollbackRequest, planRollback, PRE_ROLLBACK_INFIX, type RollbackPlan, type RollbackSnapshot } from "../volumes/rollback.js";
import { parentOf } from "../zfs/names.js";
import { ownUserPropertyValue, PropertyView } from "../zfs/parse.js";
import { stamp } from "./resync.js";
import { pushTo } from "../util/multimap.js";

/**
 * `zcsi rollback NAMESPACE/PVC SNAPSHOT`: the volume bound to the PVC goes back, in place on
 * its home, to a snapshot: a VolumeSnapshot of the PVC's namespace (its content's
 * snapshotHandle), or a snapshot of the dataset by name (a scheduled `zcsi-auto-*` one, or
 * one taken by hand). Refuses, changing nothing, while pods or VolumeAttachments use the volume
 * (unless `force`), and when it would destroy later snapshots (volumes/rollback.ts decides
 * which never go, and the rest only with `destroyNewer`). `keepCurrent` first copies the
 * current data beside the volume. Replicas follow at the replicator's next run
 * (replication/follow.ts). docs/rollback.md is the runbook.
 */

export interface RollbackDeps {
  readonly hosts: PoolHosts;
  readonly homes: VolumeHomes;
  readonly driverName: string;
  readonly claims: ClaimLookups;
  readonly workloads: VolumeWorkloads;
  readonly events?: EventRecorder;
  /** The volume's move Lease (move-lock.ts): a rollback and a move of one volume never run together. */
  readonly locks: MoveLocks;
  readonly clock?: Clock;
  readonly logger: Logger;
}

export interface RollbackArgs {
  /** `NAMESPACE/NAME` of the PVC. */
  readonly pvc: string;
  readonly snapshot: string;
  readonly force?: boolean;
  readonly destroyNewer?: boolean;
  readonly keepCurrent?: boolean;
}

export interface RollbackResult {
  readonly volumeId: string;
  readonly pv: string;
  readonly host: string;
  readonly dataset: string;
  /** After `@`. */
  readonly snapshot: string;
  /** The VolumeSnapshot it was named by (`namespace/name`), when it was. */
  readonly volumeSnapshot?: string;
  /** Snapshots the rollback destroyed, oldest first. */
  readonly destroyed: readonly string[];
  /** The --keep-current copy (`<dataset>@<snapshot>` of the data before the rollback). */
  readonly kept?: { readonly dataset: string; readonly snapshot: string };
  /** The request replicas follow (zcsi:rollback generation). */
  readonly generation: number;
  /** Pods and VolumeAttachments that used the volume (only with --force). */
  readonly inUse: readonly string[];
}

/** Kubernetes object names (DNS-1123 subdomain): anything else cannot be a VolumeSnapshot. */
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** A ZFS snapshot component zcsi accepts from an operator: no path, no option, no shell syntax. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$/;

export function parseClaim(text: string): ClaimRef {
  const [namespace, name, ...rest] = text.split("/");
  if (namespace === undefined || name === undefined || rest.length > 0 || !K8S_NAME.test(namespace) || !K8S_NAME.test(name)) {
    throw invalidArgument(`${JSON.stringify(text)} is not a PVC: expected NAMESPACE/NAME`);
  }
  return { namespace, name };
}

export async function rollback(deps: RollbackDeps, args: RollbackArgs): Promise<RollbackResult> {
  const claim = parseClaim(args.pvc);
  if (!SNAPSHOT_NAME.test(args.snapshot)) throw invalidArgument(`${JSON.stringify(args.snapshot)} is not a snapshot name`);
  const bound = await deps.claims.claimVolume(claim);
  if (bound === undefined) throw notFound(`PersistentVolumeClaim ${claim.namespace}/${claim.name} does not exist or is not bound`);
  if (bound.driver !== deps.driverName || bound.volumeHandle === undefined) throw failedPrecondition(`PersistentVolume ${bound.pvName} of ${claim.namespace}/${claim.name} is not a ${deps.driverName} volume`);
  const volumeId = bound.volumeHandle;
  // Taken before the home is looked up, so no move can change it under the rollback; held
  // until the rollback ends, either way: it is one `zfs rollback`, with nothing to resume.
  const lock = await deps.locks.acquire({ op: "rollback", volumeId, snapshot: args.snapshot });
  try {
    return await rollbackLocked(deps, args, claim, bound, volumeId);
  } finally {
    await lock.release();
  }
}

async function rollbackLocked(deps: RollbackDeps, args: RollbackArgs, claim: ClaimRef, bound: { readonly pvName: string }, volumeId: string): Promise<RollbackResult> {
  const home = isAdoptedId(volumeId) ? await adoptedHome(deps, volumeId) : await deps.homes.resolve(volumeId, "rollback");
  const host = deps.hosts.get(home.host);
  if (!isAdoptedId(volumeId) && parentOf(home.dataset) !== host.config.parentDataset) {
    throw failedPrecondition(`volume ${volumeId}: ${copyName(home)} is not directly below ${host.config.parentDataset}; zcsi rolls back only its own datasets and read-write adopted ones`);
  }
  const log = deps.logger.child({ op: "rollback", volumeId, poolHost: home.host, dataset: home.dataset });
  const { snapshot, volumeSnapshot } = await resolveSnapshot(deps, claim, args.snapshot, volumeId, home);

  const users = [
    ...(await deps.workloads.podsUsing(claim)).map((p) => `pod ${claim.namespace}/${p}`),
    ...(await deps.workloads.attachments(bound.pvName, deps.driverName)).map((a) => `VolumeAttachment ${a}`),
  ];
  if (users.length > 0 && !args.force) {
    throw failedPrecondition(`volume ${volumeId} (PVC ${claim.namespace}/${claim.name}) is in use by ${users.join(", ")}; stop them first, or pass --force to roll back under them. Nothing was changed`);
  }

  const { plan, props } = await readPlan(host, home.dataset, snapshot);
  if (plan === undefined) throw notFound(`snapshot ${home.dataset}@${snapshot} does not exist on ${home.host} (the volume's home)`);
  const blocked = plan.newer.filter((s) => s.blocker !== undefined);
  if (blocked.length > 0) {
    throw failedPrecondition(`rolling ${volumeId} back to @${snapshot} would destroy snapshots that must stay: ${blocked.map((s) => `@${s.name}: ${s.blocker}`).join("; ")}. Nothing was changed`);
  }
  const destroyed = plan.newer.map((s) => s.name);
  if (destroyed.length > 0 && !args.destroyNewer) {
    throw failedPrecondition(
      `rolling ${volumeId} back to @${snapshot} destroys ${destroyed.length} later snapshot(s): ${plan.newer.map((s) => `@${s.name} (${s.kind})`).join(", ")}; pass --destroy-newer to destroy them. Nothing was changed`,
    );
  }

  const now = (deps.clock ?? systemClock).now();
  const kept = args.keepCurrent ? await keepCurrent(host, home.dataset, volumeId, snapshot, now, log) : undefined;
  for (const r of plan.releases) await host.zfs.release(r.tag, `${home.dataset}@${r.snapshot}`);
  // Recorded before the rollback: a request whose rollback then failed changes nothing on a
  // target (it follows only what the source lost), while a rollback without its request
  // would leave every replica diverged.
  const generation = (parseRollbackRequest(ownUserPropertyValue(props?.get(PROP.rollback)))?.generation ?? 0) + 1;
  await host.zfs.set(home.dataset, { [PROP.rollback]: formatRollbackRequest({ generation, guid: plan.target.guid, snapshot }) });
  log.warn({ snapshot, destroyed, kept: kept?.dataset, force: users.length > 0, inUse: users, generation }, "rolling the volume back");
  await host.zfs.rollback(`${home.dataset}@${snapshot}`, { destroyNewer: destroyed.length > 0 });
  log.info({ snapshot, destroyed, generation }, "rolled back");

  const message = `rolled back to @${snapshot}${volumeSnapshot ? ` (VolumeSnapshot ${volumeSnapshot})` : ""} on ${home.host}${destroyed.length > 0 ? `; destroyed ${destroyed.join(", ")}` : ""}${kept ? `; data before kept in ${kept.dataset}` : ""}`;
  await deps.events?.record({ pvName: bound.pvName, type: "Normal", reason: "RolledBack", message });
  return { volumeId, pv: bound.pvName, host: home.host, dataset: home.dataset, snapshot, ...(volumeSnapshot && { volumeSnapshot }), destroyed, ...(kept && { kept }), generation, inUse: users };
}

/**
 * An adopted volume's one copy, its dataset (adopted-ids.ts): rolled back like a volume when
 * it is the dataset's read-write adoption (the operator asked for zcsi to manage it); never a
 * read-only one, which changes nothing on the dataset. NotFound when it is no longer adopted.
 */
async function adoptedHome(deps: RollbackDeps, volumeId: string): Promise<{ host: string; dataset: string }> {
  const ref = parseAdoptedId(volumeId, deps.hosts.configs);
  if (ref.readOnly) throw failedPrecondition(`volume ${volumeId} is a read-only adoption of ${ref.poolHost}:${ref.dataset}; zcsi never rolls it back (roll back its read-write adoption, or on the pool host). Nothing was changed`);
  if (!(await new AdoptedVolumes(deps.hosts).get(ref))) throw notFound(`volume ${volumeId}: dataset ${ref.dataset} on ${ref.poolHost} does not exist or is no longer adopted read-write`);
  return { host: ref.poolHost, dataset: ref.dataset };
}

/** A VolumeSnapshot of the PVC's namespace by that name, else a snapshot of the dataset by name. */
async function resolveSnapshot(deps: RollbackDeps, claim: ClaimRef, name: string, volumeId: string, home: { host: string; dataset: string }): Promise<{ snapshot: string; volumeSnapshot?: string }> {
  const vs = K8S_NAME.test(name) ? await deps.claims.snapshotHandle(claim.namespace, name) : undefined;
  if (vs === undefined) return { snapshot: name };
  const what = `VolumeSnapshot ${claim.namespace}/${name}`;
  if (vs.handle === undefined) throw failedPrecondition(`${what} is not ready (no bound VolumeSnapshotContent with a snapshotHandle yet)`);
  if (vs.driver !== undefined && vs.driver !== deps.driverName) throw failedPrecondition(`${what} belongs to driver ${vs.driver}, not ${deps.driverName}`);
  const at = vs.handle.lastIndexOf("@");
  const of = vs.handle.slice(0, at);
  if (at < 0 || (of !== volumeId && of !== copyName(home))) throw failedPrecondition(`${what} is a snapshot of ${of || vs.handle}, not of volume ${volumeId}`);
  return { snapshot: vs.handle.slice(at + 1), volumeSnapshot: `${claim.namespace}/${name}` };
}

/**
 * The dataset's snapshots with what decides their fate, in three reads: one `zfs get -d 1`
 * (their marks and counts; `clones` on OpenZFS), one of the datasets beside the volume (their
 * `origin`: clones zfs-fuse cannot list), and the volume's own properties (the replicator's
 * per-job records, whose hold tags are the only ones zfs-fuse cannot name otherwise); on
 * OpenZFS, `zfs holds` names the tags of held snapshots.
 */
async function readPlan(host: PoolHost, dataset: string, snapshot: string): Promise<{ plan: RollbackPlan | undefined; props: Awaited<ReturnType<typeof userProperties>> }> {
  const openzfs = (await host.zfs.capabilities()).implementation === "openzfs";
  const parent = host.config.parentDataset;
  const [own, siblings, props] = await Promise.all([
    host.zfs.get([dataset], ["type", "guid", "createtxg", "userrefs", "defer_destroy", PROP.snapshotName, PROP.volumeSnapshot, ...(openzfs ? ["clones"] : [])], { depth: 1 }),
    // Clones of an adopted dataset's snapshots: restores below the parent, or the operator's beside the dataset.
    host.zfs.get([...new Set([parent, parentOf(dataset) ?? parent])], ["origin"], { depth: 1 }),
    userProperties(host, dataset),
  ]);
  const clonesOf = new Map<string, string[]>();
  for (const [name, p] of siblings) {
    const origin = p.get("origin")?.value ?? "-";
    if (origin.startsWith(`${dataset}@`)) pushTo(clonesOf, origin, name);
  }
  const states = [...jobStates(props).values()];
  const held = [...own.keys()].filter((n) => n.startsWith(`${dataset}@`) && Number(own.get(n)?.get("userrefs")?.value ?? "0") > 0);
  const tags = new Map<string, string[]>();
  if (openzfs && held.length > 0) {
    for (const h of await host.zfs.holds(held)) if (h.tag.startsWith(REPLICATION_SNAPSHOT_PREFIX)) tags.set(h.snapshot, [...(tags.get(h.snapshot) ?? []), h.tag]);
  }
  const snapshots: RollbackSnapshot[] = [];
  for (const [name, p] of own) {
    if (!name.startsWith(`${dataset}@`)) continue;
    const view = new PropertyView(name, p, host.config.name);
    const guid = view.text("guid") ?? "";
    const listed = (view.text("clones") ?? "").split(",").filter((c) => c !== "");
    const csiName = view.own(PROP.snapshotName);
    const volumeSnapshot = view.own(PROP.volumeSnapshot);
    snapshots.push({
      name: name.slice(dataset.length + 1),
      guid,
      createtxg: view.integer("createtxg"),
      userrefs: Number(view.integer("userrefs")),
      replicationHolds: openzfs ? (tags.get(name) ?? []) : states.filter((s) => s.guid === guid).map((s) => holdTag(s.jobId)),
      clones: [...new Set([...listed, ...(clonesOf.get(name) ?? [])])],
      ...(csiName !== undefined && { csiName }),
      ...(volumeSnapshot !== undefined && { volumeSnapshot }),
      deferDestroy: view.text("defer_destroy") === "on",
    });
  }
  return { plan: planRollback(snapshots, snapshot), props };
}

/**
 * `--keep-current`: the data as it is now, copied beside the volume as
 * `<dataset>-zcsi-pre-rollback-<time>` (with its snapshot of the same name). A copy, not a
 * clone: a clone would keep its origin snapshot, which is later than the rollback's target,
 * and `zfs rollback` cannot pass a snapshot with clones (zfs-rollback(8); `-R` destroys them).
 * The volume's own snapshot of the moment is destroyed once copied.
 */
async function keepCurrent(host: PoolHost, dataset: string, volumeId: string, snapshot: string, now: Date, log: Logger): Promise<{ dataset: string; snapshot: string }> {
  const name = `zcsi-pre-rollback-${stamp(now)}`;
  const copy = `${dataset}${PRE_ROLLBACK_INFIX}${stamp(now)}`;
  await host.zfs.snapshot(`${dataset}@${name}`);
  try {
    log.info({ copy }, "--keep-current: copying the current data beside the volume");
    await host.zfs.sendReceive(`${dataset}@${name}`, copy);
    await host.zfs.set(copy, { [PROP.preRollback]: JSON.stringify({ volume: volumeId, snapshot, at: now.toISOString() }) });
  } finally {
    await host.zfs.destroy(`${dataset}@${name}`);
  }
  return { dataset: copy, snapshot: name };
}
