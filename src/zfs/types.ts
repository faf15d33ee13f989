import type { ExecResult, ExecStream } from "../exec/executor.js";
import type { ZfsError } from "./errors.js";

/** What the Zfs client (client.ts) returns besides property maps. */

/**
 * A zfs command started with live streams (`zfs send`, `zfs receive`) whose bytes the caller
 * moves itself, e.g. between two hosts (replication/transfer.ts).
 */
export interface StreamedCommand {
  readonly host: string;
  /** As run (with `sudo -n` when configured), for logs and errors. */
  readonly argv: readonly string[];
  readonly stream: ExecStream;
  /** The classified error for a result of this command that failed (stderr as collected by the caller). */
  failure(result: ExecResult): ZfsError;
}

/** One user hold, as `zfs holds -H` prints it. */
export interface Hold {
  readonly snapshot: string;
  readonly tag: string;
}

export interface PoolInfo {
  readonly name: string;
  /** `ONLINE`, `DEGRADED`, `FAULTED`, ... as zpool prints it. */
  readonly health: string;
  /** used + available of the pool's root dataset: what datasets can hold in total. */
  readonly sizeBytes: bigint;
  /** `available` of the root dataset: what a new dataset can still get (GetCapacity). */
  readonly freeBytes: bigint;
  /** `used` of the root dataset (includes all descendants, snapshots and reservations). */
  readonly allocatedBytes: bigint;
}
