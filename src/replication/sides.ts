import { errorMessage, failedPrecondition, internal, isZcsiError } from "../errors.js";
import type { HomeDecision } from "../volumes/home.js";
import type { VolumeHomes } from "../volumes/homes.js";
import type { PoolHost } from "../volumes/hosts.js";
import { PROP, REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import { isAdoptedId } from "../volumes/adopted-ids.js";
import { isBelow, parentOf } from "../zfs/names.js";
import { ownUserPropertyValue, PropertyView, userPropertyValue, type DatasetProperties } from "../zfs/parse.js";
import { parseJobStates, replicaMark, replicationSnapshotName, type HeldSnapshot, type JobState } from "./bookkeeping.js";
import { isUnmarkedReplica, plan, type Plan, type PlanInput, type SnapshotEntry } from "./plan.js";
import { isRepointableReplica, notHomeReason } from "./roles.js";
import type { TransferContext } from "./transfer.js";

/**
 * The two sides of a replication job: reading one (its dataset and snapshots) in one `zfs get`
 * into the plain values plan.ts and bookkeeping.ts decide on, and preparing them for a send
 * (ownership check, the target's parents, the source's new snapshot).
 */

export interface Snapshot extends HeldSnapshot {
  /** Bytes written between the previous snapshot and this one (OpenZFS `written`); undefined where unknown. */
  readonly written?: bigint;
}

export interface Side {
  readonly exists: boolean;
  readonly props: DatasetProperties | undefined;
  /** Oldest first. */
  readonly snapshots: readonly Snapshot[];
}

/** A property's value, undefined for zfs's "none" (`-`) and empty. */
export function value(props: DatasetProperties | undefined, name: string): string | undefined {
  return userPropertyValue(props?.get(name));
}

/** A property's value as a whole number; absent, `-` or `none`: undefined; garbled: Internal naming `dataset`. */
export function integer(props: DatasetProperties | undefined, name: string, dataset?: string): bigint | undefined {
  return new PropertyView(dataset ?? "(dataset)", props).optionalInteger(name);
}

/** The dataset and its snapshots in one `zfs get -Hp -d 1` (missing dataset: exists false). */
export async function readSide(host: PoolHost, dataset: string, extra: readonly string[]): Promise<Side> {
  const props = ["type", "guid", "createtxg", "creation", "userrefs", ...extra];
  const all = await host.zfs.get([dataset], props, { depth: 1, missingOk: true });
  const own = all.get(dataset);
  const snapshots: Snapshot[] = [];
  const prefix = `${dataset}@`;
  for (const [name, p] of all) {
    if (!name.startsWith(prefix)) continue;
    const guid = value(p, "guid");
    const createtxg = integer(p, "createtxg");
    if (guid === undefined || createtxg === undefined) continue;
    const written = integer(p, "written");
    snapshots.push({
      name: name.slice(prefix.length),
      guid,
      createtxg,
      creation: Number(integer(p, "creation") ?? 0n),
      userrefs: Number(integer(p, "userrefs") ?? 0n),
      ...(written !== undefined && { written }),
    });
  }
  snapshots.sort((a, b) => (a.createtxg < b.createtxg ? -1 : a.createtxg > b.createtxg ? 1 : 0));
  return { exists: own !== undefined, props: own, snapshots };
}

/**
 * The target after `zfs receive` exited 0 for each of `received` (oldest first): what a read
 * would show of its snapshots, without the read. Their target createtxg is not known, only
 * that they follow the target's newest in order, which is all that orders them (bookkeeping).
 */
export function withReceived(target: Side, received: readonly SnapshotEntry[]): Side {
  const newest = target.snapshots[target.snapshots.length - 1]?.createtxg ?? 0n;
  const arrived = received.map((s, i) => ({ name: s.name, guid: s.guid, createtxg: newest + BigInt(i + 1), creation: s.creation, userrefs: 0 }));
  return { ...target, exists: true, snapshots: [...target.snapshots, ...arrived] };
}

/**
 * Every property of the dataset itself (`zfs get all`), to find the per-job `zcsi:repl.*`
 * records, whose names are not known in advance. (zfs-fuse's `all` lacks guid and createtxg,
 * so snapshots are read by readSide.) Undefined when the dataset does not exist.
 */
export async function userProperties(host: PoolHost, dataset: string): Promise<DatasetProperties | undefined> {
  return (await host.zfs.get([dataset], ["all"], { missingOk: true })).get(dataset);
}

/** The per-job base records among a dataset's properties (set locally): property → state. */
export function jobStates(props: DatasetProperties | undefined): Map<string, JobState> {
  return parseJobStates([...(props ?? [])].map(([name, entry]) => [name, ownUserPropertyValue(entry)] as const));
}

/**
 * plan() at the start of a run. A target whose only divergence is `written` > 0 is not refused
 * here: on OpenZFS a rollback or a clone resets the head's ZIL, which rewrites its objset block
 * (`written` 1024 with nothing written: e.g. a copy `zcsi resync` rolled or cloned back to the
 * common snapshot), and `zfs receive` rightly ignores that (dsl_dataset_modified_since_snap
 * compares the data, not the ZIL). Such a run plans without `written` (ignoreWritten), and the
 * receive refuses a really modified target (targetModified; the run's snapshot is dropped).
 */
export function planRun(source: Side, target: Side): { plan: Plan; ignoreWritten: boolean } {
  const judged = plan(planInput(source, target));
  if (judged.kind !== "refuse" || judged.divergence.reason !== "target-written") return { plan: judged, ignoreWritten: false };
  return { plan: plan(planInput(source, target, { ignoreWritten: true })), ignoreWritten: true };
}

/**
 * Guids of the source's held `zcsi-repl-*` snapshots: the replicator holds exactly the base of
 * each job (and a run's new snapshot until it is sent), and releases and prunes the rest. A
 * run passes through them (plan.ts) and its target keeps them (bookkeeping.targetPrune).
 */
export function siblingBases(source: Side): Set<string> {
  return new Set(source.snapshots.filter((s) => s.userrefs > 0 && s.name.startsWith(REPLICATION_SNAPSHOT_PREFIX)).map((s) => s.guid));
}

/**
 * What plan() needs of the two sides. `ignoreWritten`: leave the target's `written` out, so
 * that `zfs receive` judges whether the target was modified (engine.ts says when).
 */
export function planInput(source: Side, target: Side, options: { ignoreWritten?: boolean } = {}): PlanInput {
  const token = value(target.props, "receive_resume_token");
  const written = integer(target.props, "written");
  const bases = siblingBases(source);
  return {
    source: source.snapshots,
    ...(bases.size > 0 && { siblingBases: bases }),
    target: target.exists ? target.snapshots : undefined,
    ...(token !== undefined && { targetResumeToken: token }),
    // `written` of a target with no snapshot yet (an interrupted first receive) means nothing.
    ...(written !== undefined && target.snapshots.length > 0 && options.ignoreWritten !== true && { targetWrittenBytes: written }),
  };
}

/**
 * Refuses a target that exists and is not zcsi's replica of this source (FailedPrecondition),
 * except one provably made by this replicator from this source (plan.isUnmarkedReplica): marked;
 * and a replica of another copy of the same volume, after a move (roles.isRepointableReplica):
 * continued from this source, re-marked when the run's snapshot arrived (engine finish).
 */
export async function checkOwnership(ctx: TransferContext, source: Side, target: Side): Promise<void> {
  if (!target.exists) return;
  const expected = replicaMark(ctx.job.source);
  const mark = ownUserPropertyValue(target.props?.get(PROP.replicaOf));
  const fenced = ownUserPropertyValue(target.props?.get(PROP.fenced));
  if (fenced !== undefined) {
    throw failedPrecondition(
      `replication target ${replicaMark(ctx.job.target)} is a fenced stale copy (${fenced}): it keeps its data and is never received into; ` +
        `zcsi resync makes it a replica (its diverged data kept); nothing changed`,
    );
  }
  if (mark === expected) return;
  // A replica of another copy of the same data (its home before a move, or an annotation
  // dataset's master before its source annotation moved): continued from this source; the plan
  // still refuses it when it diverged, and the run re-marks it as this source's replica.
  if (mark !== undefined && isRepointableReplica(ctx.job, source.props, target.props)) {
    ctx.log.info({ target: replicaMark(ctx.job.target), was: mark }, "target is a replica of another copy of this data (its home moved); continuing it from this source");
    return;
  }
  if (mark === undefined && isUnmarkedReplica(source.snapshots, target.snapshots)) {
    ctx.log.info({ target: replicaMark(ctx.job.target) }, "target is an unmarked replica of this source (every snapshot ours, by guid); marking it");
    await ctx.tgt.zfs.set(ctx.job.target.dataset, { [PROP.replicaOf]: expected, readonly: "on" });
    return;
  }
  throw failedPrecondition(
    `replication target ${replicaMark(ctx.job.target)} exists and is not zcsi's replica of ${expected}` +
      `${mark === undefined ? ` (no ${PROP.replicaOf})` : ` (${PROP.replicaOf}=${mark})`}; refusing to receive into it`,
  );
}

/**
 * The volume's home as every host sees it (volumes/home.ts), for requireHomeSource: a volume job
 * asks every host about the volume's copies (one `zfs get` each), which fences any stale copy
 * it meets; a node-annotation job, and an adopted dataset (one copy that can serve, its own: no
 * promotion, no failover), are judged by their two sides alone (undefined). A failed lookup is
 * logged and judged by the two sides too. Started beside the reads of the two sides (engine.ts).
 */
export async function lookupHome(ctx: TransferContext, homes: VolumeHomes): Promise<HomeDecision | undefined> {
  const { job } = ctx;
  if (job.origin.kind !== "volume" || isAdoptedId(job.origin.volumeId)) return undefined;
  try {
    return await homes.find(job.origin.volumeId, "replicate");
  } catch (err) {
    ctx.log.warn({ err: errorMessage(err) }, "could not look up the volume's copies; judging the source by the two sides alone");
    return undefined;
  }
}

/**
 * Only the home sends (volumes/home.ts): FailedPrecondition, logged, before anything is
 * created, when the source is a replica, fenced or stale (roles.notHomeReason), judged on the
 * two sides and lookupHome's decision.
 */
export function requireHomeSource(ctx: TransferContext, decision: HomeDecision | undefined, source: Side, target: Side): void {
  const { job } = ctx;
  const reason = notHomeReason(job, source.props, target.exists ? target.props : undefined, decision);
  if (reason === undefined) return;
  ctx.log.warn({ source: replicaMark(job.source), reason }, "refusing to replicate from a copy that is not the volume's home");
  throw failedPrecondition(`replication ${job.id}: refusing to send from ${replicaMark(job.source)}: ${reason}`);
}

/**
 * A full receive creates the target but not its parents. A target deeper than one level
 * below the target host's parentDataset (a node-annotation job's `tank/k8s/apps/db`) gets
 * the missing datasets in between created, and only those: never the parentDataset itself,
 * which is the operator's.
 */
export async function ensureTargetParent(ctx: TransferContext): Promise<void> {
  const parent = parentOf(ctx.job.target.dataset);
  const root = ctx.tgt.config.parentDataset;
  if (parent === undefined || parent === root || !isBelow(root, parent)) return;
  if (await ctx.tgt.zfs.exists(parent)) return;
  ctx.log.info({ dataset: parent }, "creating the target's parent datasets");
  await ctx.tgt.zfs.create(parent, {}, { parents: true });
}

/**
 * `zfs snapshot <source>@zcsi-repl-<UTC second>`; when that name is taken (a second run, or
 * another job of the same source, within the same second) `-2`, `-3`, ... is appended. Never
 * reuse the existing one: it may predate writes this run must carry.
 */
export async function takeSnapshot(ctx: TransferContext, target: Side, now: Date): Promise<string> {
  const base = replicationSnapshotName(now);
  // Not a name the target still has either: the source may have pruned an older snapshot of
  // that name (runs seconds apart), and the receive would then refuse ("destination already exists").
  const onTarget = new Set(target.snapshots.map((s) => s.name));
  for (let n = 1; ; n++) {
    if (n > 50) throw internal(`replication ${ctx.job.id}: no free snapshot name after ${base}-50`);
    const name = n === 1 ? base : `${base}-${n}`;
    if (onTarget.has(name)) continue;
    const snapshot = `${ctx.job.source.dataset}@${name}`;
    try {
      await ctx.src.zfs.snapshot(snapshot);
      return snapshot;
    } catch (err) {
      if (!isZcsiError(err, "AlreadyExists")) throw err;
    }
  }
}
