import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import type { ConditionLog } from "../util/periodic.js";
import type { VolumeHomes } from "../volumes/homes.js";
import { FIRST_EPOCH, PROP } from "../volumes/properties.js";
import { isServingCopy } from "../volumes/volume.js";
import { ownUserPropertyValue, type PropertyMap } from "../zfs/parse.js";

/**
 * Stale copies among the snapshotter's listings (pure). A pool host back after a failover
 * still holds its old primary, unfenced until some zcsi component looks the volume up; the
 * snapshotter must not snapshot or prune it in between: its snapshots would be taken on data
 * the volume no longer uses, and pruning could free the base the resync needs. The listings of
 * all hosts (one command each, read anyway) show every copy, so a serving copy whose volume
 * has a copy with a newer epoch on another host is known stale without another command; the
 * scheduler skips it and has VolumeHomes fence it (volumes/homes.ts, the same rule as the
 * controller's: the home is the primary with the highest epoch among reachable copies).
 */

/** What the listing shows of one direct child of a host's parentDataset. */
export interface ListedCopy {
  readonly host: string;
  readonly dataset: string;
  /** The volume id it is a copy of: zcsi:volume; else zcsi:replica-of (a replica from before identities); else itself (a volume from before roles). */
  readonly volumeId: string;
  readonly epoch: number;
  /** A serving copy (isServingCopy): what the snapshotter would snapshot. */
  readonly serving: boolean;
}

export interface StaleListedCopy extends ListedCopy {
  /** The copy with the newer epoch that makes it stale. */
  readonly newer: ListedCopy;
}

/** The properties (besides the scheduler's own) a listing needs for this. */
export const STALE_PROPS = [PROP.volume, PROP.epoch];

/** The copies directly below `parent` in one host's listing. */
export function listedCopies(host: string, parent: string, all: PropertyMap): ListedCopy[] {
  const prefix = `${parent}/`;
  const out: ListedCopy[] = [];
  for (const [dataset, props] of all) {
    if (!dataset.startsWith(prefix) || dataset.includes("@") || dataset.slice(prefix.length).includes("/")) continue;
    const own = (name: string): string | undefined => {
      const v = ownUserPropertyValue(props.get(name));
      return v === undefined || v === "-" || v === "" ? undefined : v;
    };
    const serving = isServingCopy(props);
    const volumeId = own(PROP.volume) ?? own(PROP.replicaOf) ?? (serving ? `${host}:${dataset}` : undefined);
    if (volumeId === undefined) continue;
    const text = own(PROP.epoch);
    out.push({ host, dataset, volumeId, epoch: text !== undefined && /^[0-9]{1,15}$/.test(text) ? Number(text) : FIRST_EPOCH, serving });
  }
  return out;
}

/** The serving copies for which another host holds a copy of the same volume at a newer epoch. */
export function staleServingCopies(copies: readonly ListedCopy[]): StaleListedCopy[] {
  const newest = new Map<string, ListedCopy>();
  for (const c of copies) {
    const best = newest.get(c.volumeId);
    if (best === undefined || c.epoch > best.epoch) newest.set(c.volumeId, c);
  }
  return copies.flatMap((c) => {
    const n = newest.get(c.volumeId);
    return c.serving && n !== undefined && n.epoch > c.epoch && n.host !== c.host ? [{ ...c, newer: n }] : [];
  });
}

/**
 * The serving copies that are stale, keyed `<host>:<dataset>`: the scheduler skips them this
 * tick; each is looked up through VolumeHomes, which fences it (and tells its onFence). Logged
 * when a copy turns stale, not every tick (it is fenced, hence no longer serving, at once).
 */
export async function fenceStale(copies: readonly ListedCopy[], homes: VolumeHomes, logger: Logger, conditions: ConditionLog, now: Date): Promise<Set<string>> {
  const stale = staleServingCopies(copies);
  for (const c of stale) {
    const context = { op: "snapshotter", volumeId: c.volumeId, poolHost: c.host, dataset: c.dataset, epoch: c.epoch, newer: `${c.newer.host}:${c.newer.dataset}`, newerEpoch: c.newer.epoch };
    const condition = conditions.observe(c.host, `stale:${c.host}:${c.dataset}`, `superseded by epoch ${c.newer.epoch}`, now);
    if (condition !== undefined) logger.warn({ ...context, condition }, "stale copy (a newer epoch exists on another host): not snapshotted or pruned; fencing it");
    try {
      await homes.find(c.volumeId, "snapshotter");
    } catch (err) {
      logger.warn({ ...context, err: errorMessage(err) }, "could not look the stale copy's volume up to fence it; skipped all the same");
    }
  }
  return new Set(stale.map((c) => `${c.host}:${c.dataset}`));
}
