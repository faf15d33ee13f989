/**
 * What a moved home (a copy promoted by migrate or failover) keeps of its replication snapshots,
 * so that its replicas, and a failed-over old home once resynced, can continue from it.
 */
import type { PoolHostConfig } from "../config.js";
import { readFailedOver } from "../volumes/failed-over.js";
import { PROP } from "../volumes/properties.js";
import { ownProperty as local, type DatasetProperties } from "../zfs/parse.js";
import { jobStateProperty, sourcePrune, type HeldSnapshot } from "./bookkeeping.js";
import { replicationJobId } from "./jobs.js";
import type { SnapshotEntry } from "./plan.js";
import type { ReplicationJob } from "./types.js";


/**
 * The targets in a volume copy's zcsi:replicate-to that have no job record on it yet: they never
 * received from this copy. After a move (the copy promoted, epoch > 1) its received snapshots
 * are the only ones those replicas can share with it, so the source keeps them (no source
 * pruning) until each such target has run once. A birth copy (epoch 1) prunes as always.
 */
export function unstartedTargets(source: { host: string; dataset: string }, props: DatasetProperties | undefined, hosts: readonly PoolHostConfig[], recorded: ReadonlySet<string>): string[] {
  const epoch = Number(local(props, PROP.epoch) ?? "1");
  const list = local(props, PROP.replicateTo);
  if (!(epoch > 1)) return [];
  return (list ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter((name) => receivedFrom(source, name, hosts, recorded) === false);
}

/** Whether the volume job from `source` to pool host `name` has a record on the source; undefined for no such other host. */
function receivedFrom(source: { host: string; dataset: string }, name: string, hosts: readonly PoolHostConfig[], recorded: ReadonlySet<string>): boolean | undefined {
  const target = hosts.find((h) => h.name === name);
  if (target === undefined || name === source.host) return undefined;
  const leaf = source.dataset.slice(source.dataset.lastIndexOf("/") + 1);
  return recorded.has(jobStateProperty(replicationJobId(source, { host: name, dataset: `${target.parentDataset}/${leaf}` }, `${leaf}.${name}`)));
}

/**
 * After a failover the old home, once resynced, continues from the newest snapshot it shares
 * with the new home, one received before the promotion: so until a job from this copy to that
 * host has run, the copy keeps its replication snapshots created up to the failover (`before`,
 * seconds), and only those (the ones it takes itself are pruned as always). Undefined: nothing
 * to keep for a failed-over-from host.
 */
export function keptForOldHome(source: { host: string; dataset: string }, props: DatasetProperties | undefined, hosts: readonly PoolHostConfig[], recorded: ReadonlySet<string>): { readonly host: string; readonly before: number } | undefined {
  const record = failedOverRecord(props);
  if (record?.from === undefined) return undefined;
  const host = record.from.split(",").find((name) => receivedFrom(source, name, hosts, recorded) === false);
  return host === undefined ? undefined : { host, before: record.at };
}

/**
 * bookkeeping.sourcePrune, except that a moved home keeps the snapshots its replicas continue
 * from: all of its replication snapshots while a replicate-to target has not received from it
 * (unstartedTargets), and those up to the failover while the old home has not (keptForOldHome).
 */
export function sourcePruneOfCopy(job: ReplicationJob, snapshots: readonly HeldSnapshot[], to: SnapshotEntry, released: ReadonlySet<string>, props: DatasetProperties | undefined, hosts: readonly PoolHostConfig[], recorded: ReadonlySet<string>): string[] {
  const prunable = sourcePrune(snapshots, to, released);
  if (job.origin.kind !== "volume") {
    // A node-annotation master promoted by moving its source annotation (annotation-failover.ts)
    // keeps the snapshots it received up to the failover: the old master's `zcsi resync` continues
    // from the newest of them, incrementally. Only those, and they stay while the record does.
    const at = failedOverRecord(props)?.at;
    if (at === undefined) return prunable;
    const created = new Map(snapshots.map((s) => [s.name, s.creation]));
    return prunable.filter((name) => (created.get(name) ?? 0) > at);
  }
  if (unstartedTargets(job.source, props, hosts, recorded).length > 0) return [];
  const oldHome = keptForOldHome(job.source, props, hosts, recorded);
  if (oldHome === undefined) return prunable;
  const created = new Map(snapshots.map((s) => [s.name, s.creation]));
  return prunable.filter((name) => (created.get(name) ?? 0) > oldHome.before);
}

/** The copy's zcsi:failed-over record: whom it took over from, and when (seconds); undefined without a readable time. */
function failedOverRecord(props: DatasetProperties | undefined): { readonly from?: string; readonly at: number } | undefined {
  const { from, at } = readFailedOver(local(props, PROP.failedOver)) ?? {};
  if (at === undefined) return undefined;
  return from === undefined ? { at } : { from, at };
}
