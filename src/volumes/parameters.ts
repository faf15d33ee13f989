import { invalidArgument } from "../errors.js";
import { durationSeconds, formatDuration, quantityBytes } from "../util/units.js";
import { normalizePolicy } from "./schedule.js";
import { DEFAULT_SIZE_MODE, SIZE_MODES, type SizeMode } from "./size-modes.js";

/**
 * StorageClass parameters zcsi understands. Each entry validates and normalises one value;
 * an unknown key is refused (a typo must not silently produce a differently-configured
 * volume). Keys the CSI sidecars add (`csi.storage.k8s.io/*`) are accepted and ignored,
 * except the PVC/PV names the provisioner passes with --extra-create-metadata, which are
 * recorded on the dataset so `zfs get` and `zcsi status` can say whose data it is.
 */
export interface VolumeParameters {
  /** Pool host to create on; absent → the configured host with the most free space. */
  readonly poolHost?: string;
  /** ZFS native properties set at `zfs create` time. */
  readonly zfsProperties: Readonly<Record<string, string>>;
  /** Owner and mode of the volume's root directory, applied once at creation. */
  readonly uid?: number;
  readonly gid?: number;
  readonly mode?: string;
  /**
   * How a volume made from a snapshot or another volume gets its data: `clone` (default:
   * `zfs clone`, instant, shares blocks with the snapshot, which then lives until the clone
   * goes) or `copy` (`zfs send | zfs recv` on the pool host: takes time and space, but the new
   * volume depends on nothing and the snapshot can be deleted at once).
   */
  readonly restoreMode: RestoreMode;
  /**
   * What the size means on the pool host (size-modes.ts): `refquota` (default), `quota`, `thin`
   * or `reserved`. A volume made from a snapshot or another volume takes the mode of its own
   * StorageClass, not its source's.
   */
  readonly sizeMode: SizeMode;
  /** Snapshot schedule in normal form (docs/snapshots.md), stored on the dataset for the snapshotter. */
  readonly snapshotSchedule?: string;
  /**
   * Volumes of one pool host carrying the same name are snapshotted by the schedule in one
   * atomic `zfs snapshot` and pruned together (docs/snapshots.md, "Snapshot groups").
   */
  readonly snapshotGroup?: string;
  /**
   * Pool hosts that keep a replica (docs/replication.md), distinct, sorted; never the volume's
   * own host (checked where the host is known: VolumeService.create, ControllerService).
   */
  readonly replicateTo?: readonly string[];
  /** Time between replication runs, in normal form (`15m`, `1h30m`); set whenever replicateTo is. */
  readonly replicationInterval?: string;
  /** Bandwidth limit of each replication run (per target), bytes per second; absent: unlimited. */
  readonly replicationBandwidth?: number;
  /** Normalised zcsi parameters (sidecar keys excluded): what a retried request must match. */
  readonly canonical: string;
  readonly pvcName?: string;
  readonly pvcNamespace?: string;
  readonly pvName?: string;
}

export type RestoreMode = "clone" | "copy";

const ON_OFF = /^(on|off)$/;
const COMPRESSION = /^(on|off|lzjb|zle|lz4|gzip|gzip-[1-9]|zstd|zstd-([1-9]|1[0-9])|zstd-fast)$/;
const SIZE = /^([0-9]+)([KMkm]?)$/;
const ID = /^(0|[1-9][0-9]{0,9})$/;
const MODE = /^0?[0-7]{3,4}$/;
const SNAPSHOT_GROUP = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const SIDECAR_PREFIX = "csi.storage.k8s.io/";
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

type Parser = (value: string, key: string) => string;

/** The replicator's default when a StorageClass asks for replication without an interval. */
export const DEFAULT_REPLICATION_INTERVAL = "15m";
/** Shorter intervals would mostly take and prune snapshots: each run snapshots the source. */
export const MIN_REPLICATION_INTERVAL_SECONDS = 60;
/** Below this a run of even an idle volume (an empty increment is a few KiB) would crawl. */
export const MIN_REPLICATION_BANDWIDTH = 64 * 1024;
const POOL_HOST = /^[A-Za-z0-9][-A-Za-z0-9_.]{0,252}$/;

/** A replication interval: a duration of at least a minute, in normal form. */
export function parseReplicationInterval(value: string, what: string): string {
  const seconds = durationSeconds(value.trim());
  if (seconds === undefined) throw invalidArgument(`${what}=${JSON.stringify(value)}: must be a duration such as 15m, 1h or 1h30m (units s, m, h, d)`);
  if (seconds < MIN_REPLICATION_INTERVAL_SECONDS) throw invalidArgument(`${what}=${JSON.stringify(value)}: must be at least 1m`);
  return formatDuration(seconds);
}

function recordsize(value: string, key: string): string {
  const m = SIZE.exec(value);
  const unit = m?.[2]?.toUpperCase();
  const n = m ? BigInt(m[1] ?? "0") * (unit === "K" ? 1024n : unit === "M" ? 1048576n : 1n) : 0n;
  // zfsprops(7): a power of two from 512 bytes to 1 MiB (16 MiB with large_blocks; 128 KiB on pool v23).
  if (n < 512n || n > 16777216n || (n & (n - 1n)) !== 0n) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: must be a power of two from 512 to 16M (e.g. 128K)`);
  return n.toString();
}

function id(value: string, key: string): string {
  if (!ID.test(value) || Number(value) > 4294967294) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: must be a numeric id from 0 to 4294967294`);
  return value;
}

function enumOf(pattern: RegExp, allowed: string): Parser {
  return (value, key) => {
    if (!pattern.test(value)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: must be one of ${allowed}`);
    return value;
  };
}

/** The documented parameters: key → validator/normaliser. */
export const PARAMETERS: Readonly<Record<string, Parser>> = {
  poolHost: (value, key) => {
    if (!POOL_HOST.test(value)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: not a pool host name`);
    return value;
  },
  compression: enumOf(COMPRESSION, "on, off, lz4, lzjb, zle, gzip[-1..9], zstd[-1..19], zstd-fast"),
  recordsize,
  atime: enumOf(ON_OFF, "on, off"),
  uid: id,
  gid: id,
  mode: (value, key) => {
    if (!MODE.test(value)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: must be an octal mode such as 0770`);
    return value.padStart(4, "0").slice(-4);
  },
  restoreMode: enumOf(/^(clone|copy)$/, "clone, copy"),
  sizeMode: enumOf(new RegExp(`^(${SIZE_MODES.join("|")})$`), SIZE_MODES.join(", ")),
  snapshotSchedule: (value, key) => normalizePolicy(value, `parameter ${key}`),
  snapshotGroup: (value, key) => {
    if (!SNAPSHOT_GROUP.test(value)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: must be 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
    return value;
  },
  // Names only; whether they are configured, and not the volume's own host, is checked below.
  replicateTo: (value, key) => {
    const names = value.split(",").map((n) => n.trim());
    for (const name of names) {
      if (!POOL_HOST.test(name)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: ${JSON.stringify(name)} is not a pool host name (expected a comma-separated list such as "bob,carol")`);
    }
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: ${twice} is listed twice`);
    return [...names].sort().join(",");
  },
  replicationInterval: (value, key) => parseReplicationInterval(value, `parameter ${key}`),
  // Normalised to bytes per second, so "1Mi" and "1048576" are the same class for a retry.
  replicationBandwidth: (value, key) => String(parseBandwidth(value, `parameter ${key}`)),
};

/** Bytes per second from a quantity such as `50Mi`; InvalidArgument naming `what` otherwise. */
export function parseBandwidth(value: string, what: string): number {
  const bytes = quantityBytes(value);
  if (bytes === undefined) throw invalidArgument(`${what}=${JSON.stringify(value)}: must be bytes per second as a quantity such as 50Mi, 10M or 1048576`);
  if (bytes < MIN_REPLICATION_BANDWIDTH) throw invalidArgument(`${what}=${JSON.stringify(value)}: must be at least 64Ki (bytes per second)`);
  return bytes;
}

const ZFS_NATIVE = ["compression", "recordsize", "atime"] as const;

export function parseVolumeParameters(raw: Readonly<Record<string, string>> | null | undefined, knownHosts: readonly string[]): VolumeParameters {
  const normalized: Record<string, string> = {};
  let pvcName: string | undefined;
  let pvcNamespace: string | undefined;
  let pvName: string | undefined;
  for (const [key, value] of Object.entries(raw ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (key.startsWith(SIDECAR_PREFIX)) {
      // Names Kubernetes already validated (DNS labels/subdomains); kept only if they look like it.
      const k8sName = K8S_NAME.test(value) ? value : undefined;
      if (key === "csi.storage.k8s.io/pvc/name") pvcName = k8sName;
      else if (key === "csi.storage.k8s.io/pvc/namespace") pvcNamespace = k8sName;
      else if (key === "csi.storage.k8s.io/pv/name") pvName = k8sName;
      continue;
    }
    const parse = PARAMETERS[key];
    if (!parse) throw invalidArgument(`unknown parameter ${JSON.stringify(key)}; zcsi accepts: ${Object.keys(PARAMETERS).join(", ")}`);
    if (typeof value !== "string") throw invalidArgument(`parameter ${key} must be a string`);
    normalized[key] = parse(value, key);
  }
  if (normalized.poolHost !== undefined && !knownHosts.includes(normalized.poolHost)) {
    throw invalidArgument(`parameter poolHost=${JSON.stringify(normalized.poolHost)}: no such pool host in the config (have: ${knownHosts.join(", ")})`);
  }
  const replicateTo = normalized.replicateTo?.split(",");
  if (replicateTo !== undefined) {
    const unknown = replicateTo.filter((h) => !knownHosts.includes(h));
    if (unknown.length > 0) throw invalidArgument(`parameter replicateTo=${JSON.stringify(normalized.replicateTo)}: no such pool host in the config: ${unknown.join(", ")} (have: ${knownHosts.join(", ")})`);
    if (knownHosts.every((h) => replicateTo.includes(h))) {
      throw invalidArgument(`parameter replicateTo=${JSON.stringify(normalized.replicateTo)}: names every pool host; none is left to hold the volume itself`);
    }
    if (normalized.poolHost !== undefined && replicateTo.includes(normalized.poolHost)) {
      throw invalidArgument(`parameter replicateTo=${JSON.stringify(normalized.replicateTo)}: names the volume's own pool host ${normalized.poolHost} (poolHost); a replica must be on another host`);
    }
  } else {
    // Refused rather than ignored: a class that sets these surely meant to replicate.
    for (const key of ["replicationInterval", "replicationBandwidth"]) {
      if (normalized[key] !== undefined) throw invalidArgument(`parameter ${key}=${JSON.stringify(raw?.[key])} needs replicateTo (the pool hosts to replicate to)`);
    }
  }
  // Refused rather than ignored: a group without a schedule would never be snapshotted.
  if (normalized.snapshotGroup !== undefined && normalized.snapshotSchedule === undefined) {
    throw invalidArgument(`parameter snapshotGroup=${JSON.stringify(normalized.snapshotGroup)} needs snapshotSchedule (the schedule the group is snapshotted on)`);
  }
  // The default mode is left out of the canonical form: `sizeMode: refquota`, no sizeMode, and a
  // volume made before size modes existed all mean the same and must match on a retry.
  if (normalized.sizeMode === DEFAULT_SIZE_MODE) delete normalized.sizeMode;
  const zfsProperties: Record<string, string> = {};
  for (const prop of ZFS_NATIVE) if (normalized[prop] !== undefined) zfsProperties[prop] = normalized[prop];
  return {
    ...(normalized.poolHost !== undefined && { poolHost: normalized.poolHost }),
    zfsProperties,
    ...(normalized.uid !== undefined && { uid: Number(normalized.uid) }),
    ...(normalized.gid !== undefined && { gid: Number(normalized.gid) }),
    ...(normalized.mode !== undefined && { mode: normalized.mode }),
    restoreMode: normalized.restoreMode === "copy" ? "copy" : "clone",
    sizeMode: SIZE_MODES.find((m) => m === normalized.sizeMode) ?? DEFAULT_SIZE_MODE,
    ...(normalized.snapshotSchedule !== undefined && { snapshotSchedule: normalized.snapshotSchedule }),
    ...(normalized.snapshotGroup !== undefined && { snapshotGroup: normalized.snapshotGroup }),
    ...(replicateTo !== undefined && { replicateTo, replicationInterval: normalized.replicationInterval ?? DEFAULT_REPLICATION_INTERVAL }),
    ...(normalized.replicationBandwidth !== undefined && { replicationBandwidth: Number(normalized.replicationBandwidth) }),
    canonical: JSON.stringify(normalized),
    ...(pvcName !== undefined && { pvcName }),
    ...(pvcNamespace !== undefined && { pvcNamespace }),
    ...(pvName !== undefined && { pvName }),
  };
}

/** VolumeSnapshotClass parameters: what CreateSnapshot records, after validation. */
export interface SnapshotParameters {
  readonly volumeSnapshotName?: string;
  readonly volumeSnapshotNamespace?: string;
  readonly volumeSnapshotContentName?: string;
}

/**
 * VolumeSnapshotClass parameters, validated like StorageClass ones: zcsi defines no snapshot
 * parameters yet, so any key outside `csi.storage.k8s.io/` is refused (a typo must not pass
 * silently). The external-snapshotter's --extra-create-metadata keys are recorded on the
 * snapshot, so `zfs get` says which VolumeSnapshot it belongs to.
 */
export function parseSnapshotParameters(raw: Readonly<Record<string, string>> | null | undefined): SnapshotParameters {
  const out: { -readonly [K in keyof SnapshotParameters]: SnapshotParameters[K] } = {};
  for (const [key, value] of Object.entries(raw ?? {})) {
    if (!key.startsWith(SIDECAR_PREFIX)) throw invalidArgument(`unknown VolumeSnapshotClass parameter ${JSON.stringify(key)}; zcsi accepts none besides the csi.storage.k8s.io/* keys the snapshotter adds`);
    if (typeof value !== "string") throw invalidArgument(`parameter ${key} must be a string`);
    const k8sName = K8S_NAME.test(value) ? value : undefined;
    if (key === "csi.storage.k8s.io/volumesnapshot/name") out.volumeSnapshotName = k8sName;
    else if (key === "csi.storage.k8s.io/volumesnapshot/namespace") out.volumeSnapshotNamespace = k8sName;
    else if (key === "csi.storage.k8s.io/volumesnapshotcontent/name") out.volumeSnapshotContentName = k8sName;
  }
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined)) as SnapshotParameters;
}
