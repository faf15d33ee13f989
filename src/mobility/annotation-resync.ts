import { failedPrecondition, invalidArgument } from "../errors.js";
import type { PoolHostConfig } from "../config.js";
import type { NodeSource } from "../k8s/nodes.js";
import { ANNOTATION_COPY_PROPS, classifyAnnotated, splitName } from "../replication/annotation-failover.js";
import { annotationJobs, REPLICATION_NODE_SELECTOR } from "../replication/jobs.js";
import { copyName, type Copy } from "../volumes/home.js";
import { copyFacts } from "../volumes/homes.js";
import { isBelow } from "../zfs/names.js";
import { demoteStale, type ResyncDeps, type ResyncResult } from "./resync.js";

/**
 * `zcsi resync HOST:DATASET` for a node-annotation dataset (issue 14, item 6): the same fail
 * back as a volume's (resync.ts), for a master the annotations replaced (replication/
 * annotation-failover.ts fenced it), or for a replica of the old master (it shares no snapshot
 * with the new one: each job sends its own, so its job is refused). The annotations say where its data now comes from: the
 * node annotated `zcsi.dev/replication-replica` for that dataset names the source, and that
 * source must be the live primary of the same data at a newer epoch. Then, under the data's move
 * lock: the stale copy's state is snapshotted and renamed aside (kept; with --discard-diverged
 * rolled back to the newest common snapshot instead), the common state cloned back under its name
 * and marked a replica, and the annotation job runs once (the replicator's own job: same id,
 * same holds). An operator command, not an automatic step, because which writes to keep is the
 * operator's decision, as for volumes.
 */

export interface AnnotatedResyncDeps extends ResyncDeps {
  /** The Nodes and their replication annotations. */
  readonly nodes?: NodeSource;
}

/** `<host>:<dataset>` naming a dataset at least two levels below the host's parentDataset (where annotation datasets live), else undefined. */
export function annotationCopyName(id: string, hosts: readonly PoolHostConfig[]): { host: string; dataset: string } | undefined {
  const ref = splitName(id);
  const host = ref && hosts.find((h) => h.name === ref.host);
  if (!ref || !host || !isBelow(host.parentDataset, ref.dataset)) return undefined;
  return ref.dataset.slice(host.parentDataset.length + 1).includes("/") ? ref : undefined;
}

export async function resyncAnnotated(deps: AnnotatedResyncDeps, req: { copy: string; host?: string; discardDiverged?: boolean }): Promise<ResyncResult> {
  const ref = annotationCopyName(req.copy, deps.hosts.configs);
  if (ref === undefined) throw invalidArgument(`${JSON.stringify(req.copy)} is not HOST:DATASET of a node-annotation dataset (two or more levels below the host's parentDataset)`);
  if (req.host !== undefined && req.host !== ref.host) throw invalidArgument(`--host ${req.host} does not match ${req.copy}`);
  if (deps.nodes === undefined) throw failedPrecondition("resyncing a node-annotation dataset reads the Nodes' replication annotations; no Kubernetes API");
  const log = deps.logger.child({ op: "resync", copy: req.copy });
  const host = deps.hosts.get(ref.host);
  const set = annotationJobs(await deps.nodes.listNodes(REPLICATION_NODE_SELECTOR), deps.hosts.configs, 900);
  const job = set.jobs.find((j) => j.job.target.host === ref.host && j.job.target.dataset === ref.dataset)?.job;
  if (job === undefined) {
    throw failedPrecondition(`no labelled node's zcsi.dev/replication-replica annotation makes ${req.copy} a replica of a source: annotate ${ref.host} first (source=${ref.dataset}), so the resync knows where its data now comes from; nothing changed`);
  }
  const [stalePropsMap, sourcePropsMap] = await Promise.all([
    host.zfs.get([ref.dataset], ANNOTATION_COPY_PROPS, { missingOk: true }),
    deps.hosts.get(job.source.host).zfs.get([job.source.dataset], ANNOTATION_COPY_PROPS, { missingOk: true }),
  ]);
  const staleProps = stalePropsMap.get(ref.dataset);
  const sourceProps = sourcePropsMap.get(job.source.dataset);
  if (staleProps === undefined) throw failedPrecondition(`${req.copy} does not exist; nothing to resync (the replicator sends it in full); nothing changed`);
  if (sourceProps === undefined) throw failedPrecondition(`the source ${copyName(job.source)} does not exist; nothing changed`);
  const sourceFacts = copyFacts(job.source.host, job.source.dataset, sourceProps);
  const identity = sourceFacts.volume ?? copyName(job.source);
  const home = classifyAnnotated(identity, sourceFacts);
  const stale = classifyAnnotated(identity, copyFacts(ref.host, ref.dataset, staleProps));
  if (home === undefined || "problem" in home || home.role !== "primary" || home.fenced !== undefined) {
    throw failedPrecondition(`the source ${copyName(job.source)} is not the live master of ${identity}${home && !("problem" in home) ? ` (${home.role}${home.fenced !== undefined ? ", fenced" : ""})` : ""}; nothing changed`);
  }
  // Stale: a fenced master, or a replica from before the failover (each job sends its own
  // snapshots, so another replica of the old master shares none with the new one, and is refused).
  const isStale = (c: Copy): boolean => (c.role === "primary" ? c.fenced !== undefined || c.epoch < home.epoch : c.epoch < home.epoch);
  if (stale === undefined || "problem" in stale || !isStale(stale)) {
    const what = stale === undefined ? "not a copy of the same data" : "problem" in stale ? stale.problem : stale.role === "replica" ? `a replica (epoch ${stale.epoch}), not stale` : `the master at epoch ${stale.epoch}`;
    throw failedPrecondition(`${req.copy} is ${what}; resync turns a stale copy (a fenced master, or a replica of an older epoch) into a replica; nothing changed`);
  }
  const lock = await deps.locks.acquire({ op: "resync", volumeId: identity, from: home.host, to: ref.host });
  const { common, kept } = await demoteStale(deps, { host, stale, home, identity, discardDiverged: req.discardDiverged === true, lock, log });
  const replication = await deps.engine.replicate(job);
  await lock.step("replicated", { snapshot: replication.snapshot });
  await lock.release();
  log.info({ home: copyName(home), common: common?.name, kept: kept?.dataset, action: replication.action, bytes: replication.bytes }, "resynced: the old master is a replica of the annotated source");
  const what = kept ? `diverged data kept in ${ref.host}:${kept.dataset}` : req.discardDiverged ? "diverged data discarded (--discard-diverged)" : "nothing diverged";
  await deps.events?.recordOnNode?.({ nodeName: ref.host, type: "Normal", reason: "Resynced", message: `${req.copy} is a replica of ${copyName(home)} (epoch ${home.epoch}) again; ${what}` });
  return { volumeId: identity, host: ref.host, home: home.host, epoch: home.epoch, ...(common && { common: common.name }), ...(kept && { kept }), discarded: req.discardDiverged === true, replication };
}
