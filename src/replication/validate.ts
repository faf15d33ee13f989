import { invalidArgument } from "../errors.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { isBelow, validateDataset } from "../zfs/names.js";
import { adoptionProblem, isAdoptedId, parseAdoptedId } from "../volumes/adopted-ids.js";
import type { ReplicationJob } from "./types.js";

/** What a job must be before any command runs for it: InvalidArgument otherwise. */

export const JOB_ID = /^[A-Za-z0-9._-]{1,128}$/;

export function validateJobId(jobId: string): void {
  if (typeof jobId !== "string" || !JOB_ID.test(jobId)) {
    throw invalidArgument(`invalid replication job id ${JSON.stringify(jobId)}: 1-128 of A-Z a-z 0-9 . _ -`);
  }
}

export function validateJob(job: ReplicationJob, hosts: PoolHosts): void {
  validateJobId(job.id);
  validateDataset(job.source.dataset);
  validateDataset(job.target.dataset);
  const src = hosts.get(job.source.host);
  const tgt = hosts.get(job.target.host);
  if (job.origin.kind === "volume" && isAdoptedId(job.origin.volumeId)) checkAdoptedSource(job, src);
  else checkBelowParent(src, job.source.dataset, "source");
  checkBelowParent(tgt, job.target.dataset, "target");
  if (job.source.host === job.target.host) {
    const [a, b] = [job.source.dataset, job.target.dataset];
    if (a === b || isBelow(a, b) || isBelow(b, a)) throw invalidArgument(`replication job ${job.id}: source ${a} and target ${b} overlap on ${job.source.host}`);
  }
  if (job.bandwidthBytesPerSec !== undefined && !(Number.isFinite(job.bandwidthBytesPerSec) && job.bandwidthBytesPerSec > 0)) {
    throw invalidArgument(`replication job ${job.id}: bandwidthBytesPerSec must be a positive number, got ${job.bandwidthBytesPerSec}`);
  }
  if (job.targetKeep !== undefined && !(Number.isSafeInteger(job.targetKeep) && job.targetKeep >= 1)) {
    throw invalidArgument(`replication job ${job.id}: targetKeep must be an integer >= 1, got ${job.targetKeep}`);
  }
}

/** zcsi touches only datasets below a configured parentDataset (ARCHITECTURE: standards). */
export function checkBelowParent(host: PoolHost, dataset: string, what: string): void {
  const parent = host.config.parentDataset;
  if (!isBelow(parent, dataset)) {
    throw invalidArgument(`replication ${what} ${host.config.name}:${dataset} is not below the host's parentDataset ${parent}`);
  }
}

/**
 * The one source outside a parentDataset: an adopted dataset (`zcsi adopt --replicate-to`),
 * whose read-write adoption id names exactly the job's source, below the host's adoptRoots.
 * (Its replica, the target, is below the target's parentDataset like any other.)
 */
function checkAdoptedSource(job: ReplicationJob, src: PoolHost): void {
  const volumeId = job.origin.kind === "volume" ? job.origin.volumeId : "";
  let ok = false;
  try {
    const ref = parseAdoptedId(volumeId, [src.config]);
    ok = !ref.readOnly && ref.poolHost === job.source.host && ref.dataset === job.source.dataset;
  } catch {
    ok = false;
  }
  if (!ok) throw invalidArgument(`replication source ${src.config.name}:${job.source.dataset} is not below the host's parentDataset ${src.config.parentDataset}, nor the read-write adopted dataset ${volumeId} names`);
}

/** A source whose holds may be released: below parentDataset, or a dataset the config allows adopting (only zcsi's own tags go). */
export function checkHoldSource(host: PoolHost, dataset: string): void {
  if (adoptionProblem(host.config, dataset) !== undefined) checkBelowParent(host, dataset, "source");
}
