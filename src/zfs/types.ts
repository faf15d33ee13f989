/** What the zfs client (client.ts) returns besides property maps. */

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
