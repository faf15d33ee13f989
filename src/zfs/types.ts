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

/** How a Zfs client (client.ts) runs its commands. */
export interface ZfsOptions {
  /** Per-command timeout passed to the executor (DeadlineExceeded when exceeded). */
  readonly timeoutMs?: number;
  /** Prefix every command with `sudo -n` (config `sudo: true`); a password prompt becomes PermissionDenied. */
  readonly sudo?: boolean;
  /** How long destroy keeps retrying "dataset is busy" before giving up. Default 5000 ms. */
  readonly busyRetryBudgetMs?: number;
  /** Injected for tests; defaults to setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * The floor of a listing's timeout (config `listingTimeoutMs`): a `zfs get` with `-d`/`-r` or
   * a `zfs list`, whose time grows with the datasets it lists. See listing-timeout.ts for how it
   * grows beyond the floor. Default DEFAULT_LISTING_TIMEOUT_MS.
   */
  readonly listingTimeoutMs?: number;
  /** ms clock for the listing timeouts; tests inject one. */
  readonly now?: () => number;
}
