import { invalidArgument } from "../errors.js";
import { normalizePolicy } from "../snapshots/policy.js";

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
  /** Snapshot schedule in normal form (docs/snapshots.md), stored on the dataset for the snapshotter. */
  readonly snapshotSchedule?: string;
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
const SIDECAR_PREFIX = "csi.storage.k8s.io/";
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

type Parser = (value: string, key: string) => string;

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
    if (!/^[A-Za-z0-9][-A-Za-z0-9_.]{0,252}$/.test(value)) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: not a pool host name`);
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
  snapshotSchedule: (value, key) => normalizePolicy(value, `parameter ${key}`),
};

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
  const zfsProperties: Record<string, string> = {};
  for (const prop of ZFS_NATIVE) if (normalized[prop] !== undefined) zfsProperties[prop] = normalized[prop];
  return {
    ...(normalized.poolHost !== undefined && { poolHost: normalized.poolHost }),
    zfsProperties,
    ...(normalized.uid !== undefined && { uid: Number(normalized.uid) }),
    ...(normalized.gid !== undefined && { gid: Number(normalized.gid) }),
    ...(normalized.mode !== undefined && { mode: normalized.mode }),
    restoreMode: normalized.restoreMode === "copy" ? "copy" : "clone",
    ...(normalized.snapshotSchedule !== undefined && { snapshotSchedule: normalized.snapshotSchedule }),
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
