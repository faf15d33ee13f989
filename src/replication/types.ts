/**
 * The contract between the replication engine (plan.ts, bookkeeping.ts, transfer.ts, engine.ts:
 * one run of one job) and the replication scheduler (jobs.ts, scheduler.ts: which jobs exist,
 * when they run, what users see; roles/replicator.ts wires it). The scheduler never runs a zfs
 * command itself; the engine never talks to Kubernetes.
 */

/** A dataset on a configured pool host. */
export interface DatasetRef {
  /** Pool host name from the config (`poolHosts[].name`). */
  readonly host: string;
  /** Full dataset name on that host. */
  readonly dataset: string;
}

export interface ReplicationJob {
  /**
   * Stable id, unique per (source, target) pair: used in logs, metrics labels, hold tags and
   * the names of the replicator's own snapshots' bookkeeping. Letters, digits, `-`, `_`, `.`.
   */
  readonly id: string;
  /** Where it came from: a volume of a StorageClass with replicateTo, or a node annotation. */
  readonly origin: { readonly kind: "volume"; readonly volumeId: string } | { readonly kind: "annotation"; readonly node: string };
  readonly source: DatasetRef;
  /**
   * Where the copy lives. For a volume: `<target parentDataset>/<volume leaf>`. The engine
   * creates it by the first full receive and marks it as zcsi's (zcsi:replica-of); it refuses
   * to receive into an existing dataset it did not create.
   */
  readonly target: DatasetRef;
  /** Bytes per second through the relay; undefined: unlimited. */
  readonly bandwidthBytesPerSec?: number;
  /** How many of its own `zcsi-repl-*` snapshots the target keeps (default 3). */
  readonly targetKeep?: number;
}

export type ReplicationAction = "full" | "incremental" | "resume" | "none";

export interface ReplicationResult {
  readonly jobId: string;
  readonly action: ReplicationAction;
  /** The snapshot now newest on both sides (short name, after `@`). */
  readonly snapshot: string;
  /** Its guid. */
  readonly guid: string;
  /** Its `creation` time on the source (seconds since the epoch): lag = now - this. */
  readonly snapshotCreatedAt: number;
  /** The source's zcsi:epoch (1 where unset): the epoch the replica carries after this run. */
  readonly epoch?: number;
  /** Stream bytes relayed in this run (0 for "none"). */
  readonly bytes: number;
  readonly durationMs: number;
  /** A stale resume token was aborted (`zfs recv -A`) and the run fell back to a fresh send. */
  readonly abortedStaleToken?: boolean;
}

/**
 * Failures the engine reports with a ZcsiError (src/errors.ts) of these kinds:
 * - FailedPrecondition: divergence (the target has snapshots or writes after the newest
 *   common snapshot that the source lacks; nothing destroyed, the message names what differs),
 *   or a target dataset that exists and is not zcsi's replica of this source;
 * - Unavailable: a host cannot be reached;
 * - Aborted: a run of the same job is already in flight;
 * - Internal: a send or receive failed (stderr of the end that failed first).
 */
export interface ReplicationEngine {
  /** One run: snapshot, plan, transfer, hold the new base, release the old one, prune. */
  replicate(job: ReplicationJob, signal?: AbortSignal): Promise<ReplicationResult>;
  /**
   * Releases every hold the replicator placed on snapshots of `source` (all jobs, or one job).
   * Called when a job goes away and by DeleteVolume before it destroys a replicated volume.
   */
  releaseHolds(source: DatasetRef, jobId?: string): Promise<void>;
}
