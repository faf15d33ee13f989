import { DEFAULT_LISTING_TIMEOUT_MS } from "../config.js";
import { isZcsiError } from "../errors.js";

/**
 * Timeouts for listings: commands whose output grows with the number of datasets on a host (a
 * `zfs get -d 1|-d 2|-r` under the parent, `zfs list -r`). A fixed per-command timeout that
 * suits `zfs create` fails them once a slow host holds enough volumes (measured: zfs-fuse under
 * load took over 60 s for one `zfs get -d 2` of 2000 volumes and snapshots), and then every
 * ListVolumes, snapshotter tick and replicator tick on that host fails the same way, forever.
 *
 * The rule, per host (one instance per Zfs client) and per listing (its argv):
 * - a listing never seen gets `floorMs` (config `listingTimeoutMs`);
 * - after one that finished, it gets `GROWTH_FACTOR` × that duration, when this is more than the floor;
 * - after one that ran out of time, it gets twice the allowance that ran out: the listing is
 *   known to take longer than that, and repeating the same allowance would fail it again;
 * - never more than `CEILING_FACTOR` × the floor, so a wedged host still answers DeadlineExceeded.
 * The durations include the wait for a free command slot on the host, as the executor's own
 * timeout does.
 */
export const GROWTH_FACTOR = 3;
export const CEILING_FACTOR = 8;
/** Listings remembered per host; the least recently run goes first (per-volume `-d 1` gets are listings too). */
export const MAX_REMEMBERED_LISTINGS = 64;

interface Seen {
  /** How long the last completed run took. */
  readonly lastMs?: number;
  /** The allowance the last run exceeded, when it did. */
  readonly expiredMs?: number;
}

export interface ListingTimeoutOptions {
  readonly floorMs?: number;
  /** ms clock; tests inject one. */
  readonly now?: () => number;
}

export class ListingTimeouts {
  readonly floorMs: number;
  readonly ceilingMs: number;
  private readonly now: () => number;
  private readonly seen = new Map<string, Seen>();

  constructor(options: ListingTimeoutOptions = {}) {
    this.floorMs = options.floorMs ?? DEFAULT_LISTING_TIMEOUT_MS;
    this.ceilingMs = this.floorMs * CEILING_FACTOR;
    this.now = options.now ?? Date.now;
  }

  /** The allowance the next run of `listing` gets. */
  timeoutFor(listing: string): number {
    const seen = this.seen.get(listing);
    const wanted = seen?.expiredMs !== undefined ? 2 * seen.expiredMs : GROWTH_FACTOR * (seen?.lastMs ?? 0);
    return Math.min(this.ceilingMs, Math.max(this.floorMs, Math.ceil(wanted)));
  }

  /**
   * Runs `work` with the allowance `listing` has now and learns from how it went: its duration
   * when it finished (whatever the exit code: the command ran to its end), the allowance when it
   * ended in DeadlineExceeded. Other failures (host unreachable) teach nothing.
   */
  async run<T>(listing: string, work: (timeoutMs: number) => Promise<T>): Promise<T> {
    const allowed = this.timeoutFor(listing);
    const started = this.now();
    try {
      const result = await work(allowed);
      this.remember(listing, { lastMs: this.now() - started });
      return result;
    } catch (err) {
      if (isZcsiError(err, "DeadlineExceeded")) this.remember(listing, { ...this.seen.get(listing), expiredMs: allowed });
      throw err;
    }
  }

  private remember(listing: string, seen: Seen): void {
    this.seen.delete(listing); // re-insert: Map order is recency
    this.seen.set(listing, seen);
    while (this.seen.size > MAX_REMEMBERED_LISTINGS) {
      const oldest = this.seen.keys().next().value;
      if (oldest === undefined) break;
      this.seen.delete(oldest);
    }
  }
}
