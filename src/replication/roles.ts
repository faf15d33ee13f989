import { copyName, type HomeDecision } from "../volumes/home.js";
import { CARRIED_PROPS, FIRST_EPOCH, PROP } from "../volumes/properties.js";
import { parseRollbackRequest } from "../volumes/rollback.js";
import { ownUserPropertyValue, type DatasetProperties } from "../zfs/parse.js";
import { replicaMark } from "./bookkeeping.js";
import type { ReplicationJob } from "./types.js";

/**
 * Roles and epochs on the two sides of a job (volumes/home.ts decides homes; this file only
 * reads what a job's two datasets say). Pure.
 *
 * A replica carries what its source carried when it was sent: the volume's identity, role
 * `replica` and the source's epoch, so that each copy still describes itself when the source
 * is gone. A job may only send from the home: never from a replica, a fenced copy, or a
 * primary that a newer epoch has superseded.
 */

/** The zcsi properties both sides are read with (in the same `zfs get` as their snapshots). */
export const ROLE_PROPS = [PROP.volume, PROP.role, PROP.epoch, PROP.fenced, PROP.replicaOf, PROP.meta, PROP.rollback, PROP.rollbackFollowed, ...CARRIED_PROPS];

/**
 * The volume's metadata a replica carries in zcsi:meta (the source's own CARRIED_PROPS, as
 * JSON, keys sorted), so a promotion can make it the volume with its old home gone; undefined
 * for a source that has none (a node-annotation dataset).
 */
export function carriedMeta(source: DatasetProperties | undefined): string | undefined {
  const entries = CARRIED_PROPS.flatMap((name) => {
    const v = own(source, name);
    return v === undefined ? [] : [[name, v] as const];
  });
  return entries.length === 0 ? undefined : JSON.stringify(Object.fromEntries(entries));
}

function own(props: DatasetProperties | undefined, name: string): string | undefined {
  const v = ownUserPropertyValue(props?.get(name));
  return v === undefined || v === "-" || v === "" ? undefined : v;
}

/** What a side says of itself; a copy with no role is a replica when it has zcsi:replica-of, else a primary; no epoch is epoch 1. */
export function sideRole(props: DatasetProperties | undefined): { role: string; epoch: number; fenced?: string; volume?: string } {
  const role = own(props, PROP.role) ?? (own(props, PROP.replicaOf) !== undefined ? "replica" : "primary");
  const text = own(props, PROP.epoch);
  const epoch = text !== undefined && /^[0-9]+$/.test(text) ? Number(text) : FIRST_EPOCH;
  const fenced = own(props, PROP.fenced);
  const volume = own(props, PROP.volume);
  return { role, epoch, ...(fenced !== undefined && { fenced }), ...(volume !== undefined && { volume }) };
}

/**
 * The identity a replica of this job's source carries: the source's zcsi:volume, else the
 * job's volume id, else (a node-annotation dataset) the source's `<host>:<dataset>`.
 */
export function identityOf(job: ReplicationJob, source: DatasetProperties | undefined): string {
  return own(source, PROP.volume) ?? (job.origin.kind === "volume" ? job.origin.volumeId : replicaMark(job.source));
}

/** The properties that make the target a replica of this source at the source's epoch (with readonly=on). */
export function replicaProperties(job: ReplicationJob, source: DatasetProperties | undefined): Record<string, string> {
  const meta = carriedMeta(source);
  // A target that received from a source rolled back by an operator has followed that rollback (replication/follow.ts).
  const rollback = parseRollbackRequest(own(source, PROP.rollback));
  return {
    [PROP.replicaOf]: replicaMark(job.source),
    [PROP.volume]: identityOf(job, source),
    [PROP.role]: "replica",
    [PROP.epoch]: String(sideRole(source).epoch),
    ...(meta !== undefined && { [PROP.meta]: meta }),
    ...(rollback !== undefined && { [PROP.rollbackFollowed]: String(rollback.generation) }),
    readonly: "on",
  };
}

/**
 * Whether a target marked as the replica of ANOTHER copy may be re-pointed to this job's
 * source: after a move (migrate, failover) the volume's other replicas still name the old home
 * in zcsi:replica-of, and the new home continues them from the newest snapshot they share
 * (the marks follow at the end of that run: replicaProperties). Only a copy that says of
 * itself that it is a replica (zcsi:role=replica, not fenced) of the same volume (zcsi:volume,
 * the identity this source sends), at an epoch not newer than the source's, from a source
 * that is a primary; the engine then still requires the source to be the volume's home
 * (notHomeReason). Anything else is not ours to receive into.
 */
export function isRepointableReplica(job: ReplicationJob, source: DatasetProperties | undefined, target: DatasetProperties | undefined): boolean {
  const src = sideRole(source);
  const tgt = sideRole(target);
  return (
    own(target, PROP.replicaOf) !== undefined &&
    own(target, PROP.role) === "replica" &&
    tgt.fenced === undefined &&
    tgt.volume !== undefined &&
    tgt.volume === identityOf(job, source) &&
    src.role === "primary" &&
    src.fenced === undefined &&
    tgt.epoch <= src.epoch
  );
}

/** Whether the target already carries every replica property (then no `zfs set` is needed). */
export function isMarkedReplica(target: DatasetProperties | undefined, wanted: Readonly<Record<string, string>>): boolean {
  return Object.entries(wanted).every(([name, v]) => (name === "readonly" ? target?.get(name)?.value === v : own(target, name) === v));
}

/**
 * Why this job must not send, or undefined when it may. From the two sides alone: the source
 * is a replica or fenced; the target is a primary (receiving would overwrite a home) or carries
 * a newer epoch than the source (a promotion happened elsewhere). With the volume's home
 * decision (volume jobs), also: the home is another copy, or there is none.
 */
export function notHomeReason(job: ReplicationJob, source: DatasetProperties | undefined, target: DatasetProperties | undefined, decision?: HomeDecision): string | undefined {
  const src = sideRole(source);
  const from = replicaMark(job.source);
  if (src.role !== "primary") return `source ${from} is a ${src.role}, not the volume's home`;
  if (src.fenced !== undefined) return `source ${from} is fenced (${src.fenced})`;
  if (target !== undefined) {
    const tgt = sideRole(target);
    if (own(target, PROP.role) === "primary") return `target ${replicaMark(job.target)} is a primary (epoch ${tgt.epoch}); receiving would overwrite a home`;
    if (tgt.epoch > src.epoch) return `target ${replicaMark(job.target)} carries epoch ${tgt.epoch}, newer than the source's ${src.epoch}: the source is stale`;
  }
  // Without a decision (node-annotation jobs), or for a source that is no copy of the volume (a
  // dataset without zcsi's marks), the two sides alone judge.
  if (decision === undefined) return undefined;
  const stale = decision.stale.find((s) => s.host === job.source.host && s.dataset === job.source.dataset);
  if (stale) return `source ${from} is stale (${stale.reason})`;
  const isSource = (c: { host: string; dataset: string }): boolean => c.host === job.source.host && c.dataset === job.source.dataset;
  // A live primary that is not the home: split brain, or a copy elsewhere whose role cannot be read.
  if (!decision.home && decision.live.some(isSource)) return `source ${from} is not known to be the home: ${decision.problems.join("; ")}`;
  if (decision.home && !isSource(decision.home)) return `the volume's home is ${copyName(decision.home)} (epoch ${decision.home.epoch}), not ${from}`;
  return undefined;
}
