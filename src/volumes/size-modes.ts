import { ownUserPropertyValue, parseExactInteger, PropertyView } from "../zfs/parse.js";
import { PROP } from "./properties.js";
import { parseJsonObject } from "../util/json.js";

/**
 * What a volume's size means on the pool host: the StorageClass parameter `sizeMode`
 * (README "StorageClass parameters"). Every mode is a set of ZFS properties (zfsprops(7)):
 *
 * - `refquota` (default): `refquota` = size. Limits what the volume's files reference; its
 *   snapshots are not counted, so `df` in the pod shows the size and the room left in it.
 * - `quota`: `quota` = size. The limit also counts the volume's snapshots (`used`): space a
 *   snapshot still holds is space the pod cannot write, and `df` shows exactly that.
 * - `thin`: no limit at all. The size is a request recorded on the dataset (zcsi:requested-size)
 *   and reported as the volume's capacity; the pod sees, and can fill, the pool's free space
 *   (what every other thin volume sees too), as with hostPath on the pool host.
 * - `reserved`: `refquota` and `refreservation` = size: the limit of `refquota`, and the space
 *   is set aside in the pool, so the pod can always write up to its size whatever the other
 *   datasets do. Plus `reservation` = size + a headroom (reservedHeadroom), without which
 *   OpenZFS refuses the last megabytes of the size once the pool is otherwise full
 *   (docs/size-modes.md). CreateVolume and expansion answer RESOURCE_EXHAUSTED when the pool
 *   cannot set it aside (ZFS refuses a reservation larger than what the parent has available).
 *
 * None but `reserved` sets space aside: a pool of `refquota`, `quota` or `thin` volumes can be
 * promised more than it holds (each request is checked against the free space at its creation).
 */
export const SIZE_MODES = ["refquota", "quota", "thin", "reserved"] as const;
export type SizeMode = (typeof SIZE_MODES)[number];
export const DEFAULT_SIZE_MODE: SizeMode = "refquota";

/** Every property a volume's size can live in: what a volume lookup reads. */
export const SIZE_PROPERTIES = ["refquota", "quota", "refreservation", "reservation", PROP.requestedSize] as const;

/**
 * OpenZFS's `spa_asize_inflation` (zfs(4)), default 24: before a write is admitted, its space is
 * estimated at 24 times its size (worst case of copies, parity and indirect blocks). The part of
 * that estimate beyond what is left of a dataset's `refreservation` is charged to its parent,
 * so with the pool otherwise full the last 24 records of a reserved volume could not be
 * written (ENOSPC with 3 MiB of its size left at 128 KiB records, measured on OpenZFS 2.3).
 */
const ASIZE_INFLATION = 24n;
/** ZFS's default recordsize, for a volume whose StorageClass names none. */
const DEFAULT_RECORDSIZE = 128n * 1024n;

/**
 * What a `reserved` volume sets aside beyond its size (its `reservation` = size + this): one
 * write's worst-case estimate, 24 records of its recordsize (3 MiB at 128 KiB). `recordsize` is
 * the StorageClass parameter in bytes (parameters.ts); a recordsize the volume inherits from a
 * parent the operator set is not known here, and 128 KiB is assumed.
 */
export function reservedHeadroom(recordsize?: string | bigint): bigint {
  const bytes = recordsize === undefined ? DEFAULT_RECORDSIZE : BigInt(recordsize);
  return ASIZE_INFLATION * bytes;
}

/** The recordsize (bytes) in a volume's canonical zcsi:parameters, if its class named one. */
export function recordsizeOf(parameters: string | undefined): string | undefined {
  try {
    const parsed: unknown = JSON.parse(parameters ?? "{}");
    const value = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>).recordsize : undefined;
    return typeof value === "string" && /^[0-9]+$/.test(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The largest volume of `mode` that `available` bytes under the parent hold (GetCapacity). */
export function largestVolume(mode: SizeMode, available: bigint, recordsize?: string): bigint {
  const headroom = spaceNeeded(mode, 0n, recordsize);
  return available > headroom ? available - headroom : 0n;
}

/** What CreateVolume must find `available` under the parent for a volume of `bytes` in `mode`. */
export function spaceNeeded(mode: SizeMode, bytes: bigint, recordsize?: string): bigint {
  return mode === "reserved" ? bytes + reservedHeadroom(recordsize) : bytes;
}

export function isSizeMode(value: string): value is SizeMode {
  return (SIZE_MODES as readonly string[]).includes(value);
}

/**
 * The properties that give a volume of `mode` the size `bytes`, in the order they must be set:
 * ZFS refuses a `refreservation` above the `refquota` and a `refquota` below the
 * `refreservation` (both measured on zfs-fuse, and OpenZFS 2.3 too), so growing a reserved
 * volume raises `refquota` first; its `reservation` comes before both, so that a pool that
 * cannot hold the growth refuses it before anything changed (and the refreservation then
 * fits inside space already set aside). `recordsize`: the class's, in bytes (reservedHeadroom).
 * Used for `zfs create`/`clone -o` (all at once) and by expansion (`zfs set`).
 */
export function sizeProperties(mode: SizeMode, bytes: bigint, recordsize?: string): Record<string, string> {
  const size = bytes.toString();
  switch (mode) {
    case "refquota":
      return { refquota: size };
    case "quota":
      return { quota: size };
    case "thin":
      return { [PROP.requestedSize]: size };
    case "reserved":
      return { reservation: (bytes + reservedHeadroom(recordsize)).toString(), refquota: size, refreservation: size };
  }
}

/**
 * The mode a volume was created with, from its zcsi:parameters (the canonical StorageClass
 * parameters, JSON). The default mode is not written there (parameters.ts), so a volume made
 * before size modes existed, or with `sizeMode: refquota`, reads as `refquota`.
 */
export function sizeModeOf(parameters: string | undefined): SizeMode {
  const value = parseJsonObject(parameters)?.["sizeMode"];
  return typeof value === "string" && isSizeMode(value) ? value : DEFAULT_SIZE_MODE;
}

/**
 * A volume's capacity (what CSI reports as capacity_bytes) from its properties, as read by
 * `zfs get -Hp`: the `refquota` or `quota`, the recorded request of a thin volume (0 when it
 * has none), and for `reserved` the smaller of `refquota` and `refreservation`, so a volume
 * whose expansion stopped between the two reads as its old size and a retry finishes it.
 */
export function capacityOf(mode: SizeMode, view: PropertyView, props: ReadonlyMap<string, { value: string; source: string }>): bigint {
  switch (mode) {
    case "refquota":
      return view.integer("refquota");
    case "quota":
      return view.integer("quota");
    case "thin": {
      const requested = ownUserPropertyValue(props.get(PROP.requestedSize));
      return requested === undefined ? 0n : parseExactInteger(requested, `${view.dataset}: property ${PROP.requestedSize}`);
    }
    case "reserved": {
      const quota = view.integer("refquota");
      const reservation = view.integer("refreservation");
      return quota < reservation ? quota : reservation;
    }
  }
}
