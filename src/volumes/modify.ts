import { invalidArgument } from "../errors.js";
import type { Logger } from "../log.js";
import { requireHostCanHonour } from "./host-limits.js";
import type { PoolHost } from "./hosts.js";
import { PARAMETERS, parseVolumeParameters, SIDECAR_PREFIX, type VolumeParameters } from "./parameters.js";
import { PROP } from "./properties.js";
import type { Volume } from "./volume.js";
import { parseJsonObject } from "../util/json.js";

/**
 * StorageClass parameters that can change on a live volume (docs/modify-volume.md), through
 * ControllerModifyVolume (a PVC switching VolumeAttributesClass) or CreateVolume's
 * mutable_parameters: ZFS properties that `zfs set` changes online (they apply to blocks
 * written from then on), and the zcsi:* properties the snapshotter and the replicator re-read
 * at every tick. Everything else is fixed at creation: the pool host (the data lives there),
 * ownership and mode (applied once to the root directory), how a restore copies.
 */
export const MUTABLE_PARAMETERS = ["compression", "recordsize", "atime", "snapshotSchedule", "replicateTo", "replicationInterval", "replicationBandwidth"] as const;
type MutableKey = (typeof MUTABLE_PARAMETERS)[number];

function isMutable(key: string): key is MutableKey {
  return (MUTABLE_PARAMETERS as readonly string[]).includes(key);
}

/**
 * The zcsi keys of a mutable_parameters map; INVALID_ARGUMENT for any key that is not mutable
 * (an unknown key, or one fixed at creation), before anything is read or changed. Keys of the
 * CSI sidecars (`csi.storage.k8s.io/*`, e.g. the resizer's --extra-modify-metadata) are
 * accepted and ignored, as on a StorageClass.
 */
export function mutableKeys(raw: Readonly<Record<string, string>> | null | undefined, field = "mutable_parameters"): MutableKey[] {
  const keys: MutableKey[] = [];
  for (const key of Object.keys(raw ?? {}).sort()) {
    if (key.startsWith(SIDECAR_PREFIX)) continue;
    if (isMutable(key)) keys.push(key);
    else if (PARAMETERS[key]) throw invalidArgument(`${field}: parameter ${key} is fixed when a volume is created and cannot be changed; mutable: ${MUTABLE_PARAMETERS.join(", ")}`);
    else throw invalidArgument(`${field}: unknown parameter ${JSON.stringify(key)}; mutable: ${MUTABLE_PARAMETERS.join(", ")}`);
  }
  return keys;
}

/**
 * CreateVolume's parameters with its mutable_parameters applied over them (CSI spec,
 * CreateVolumeRequest.mutable_parameters: they take precedence over `parameters`); the result
 * is validated and stored as one set, so a retry with the same two maps compares equal.
 */
export function withMutableParameters(parameters: Readonly<Record<string, string>>, mutable: Readonly<Record<string, string>> | null | undefined): Record<string, string> {
  const keys = mutableKeys(mutable);
  return { ...parameters, ...Object.fromEntries(keys.map((k) => [k, mutable?.[k] ?? ""])) };
}

/** What one ModifyVolume does to a dataset: the parameters it ends with, and the properties to set. */
export interface Modification {
  /** The volume's parameters after the change: the stored ones with the new values over them. */
  readonly params: VolumeParameters;
  /**
   * Properties for one `zfs set`, in order: the native ones, then zcsi's, zcsi:parameters last,
   * so that where zfs takes one property per call (zfs-fuse) a failure part-way leaves the
   * stored parameters as they were and a retry applies everything again.
   */
  readonly properties: Readonly<Record<string, string>>;
}

/** The stored parameters (zcsi:parameters) of a volume as a key → value map. */
function storedParameters(volume: Volume): Record<string, string> {
  const parsed = parseJsonObject(volume.parameters);
  if (parsed === undefined || Object.values(parsed).some((v) => typeof v !== "string")) {
    throw invalidArgument(`volume ${volume.id} carries ${PROP.parameters}=${JSON.stringify(volume.parameters)}, which is not a parameter map; fix it on the dataset before modifying the volume`);
  }
  return parsed as Record<string, string>;
}

/**
 * The stored parameters with the replication targets the volume has NOW (its zcsi:replicate-to):
 * a move changes those (the new home out, the old one in once it is a replica), while
 * zcsi:parameters keeps what the StorageClass said at creation. Planning from the stored list
 * would name the new home itself, or bring back a stale old home, as soon as any replication
 * parameter changes.
 */
function currentParameters(volume: Volume): Record<string, string> {
  const stored = storedParameters(volume);
  return volume.replicateTo === undefined ? stored : { ...stored, replicateTo: volume.replicateTo };
}

/**
 * Plans a ModifyVolume (pure). Only the keys given change (CSI spec, ControllerModifyVolume:
 * "SPs MUST NOT modify volumes based on the absence of keys"). The new values are validated
 * together with the volume's other parameters, exactly as a StorageClass holding all of them
 * would be (a replicationInterval needs replicateTo; replicateTo names configured hosts, and
 * never the volume's own).
 */
export function planModification(volume: Volume, mutable: Readonly<Record<string, string>>, knownHosts: readonly string[]): Modification {
  const keys = mutableKeys(mutable);
  const merged = { ...currentParameters(volume), ...Object.fromEntries(keys.map((k) => [k, mutable[k] ?? ""])) };
  const params = parseVolumeParameters(merged, knownHosts);
  if (params.replicateTo?.includes(volume.ref.poolHost)) {
    throw invalidArgument(`mutable_parameters: replicateTo=${params.replicateTo.join(",")} names ${volume.ref.poolHost}, where volume ${volume.id} lives; a replica must be on another host`);
  }
  const native: Record<string, string> = {};
  const own: Record<string, string> = {};
  for (const key of keys) {
    if (key === "compression" || key === "recordsize" || key === "atime") native[key] = params.zfsProperties[key] ?? "";
    else if (key === "snapshotSchedule") own[PROP.snapshotSchedule] = params.snapshotSchedule ?? "";
    else if (key === "replicationBandwidth") own[PROP.replicationBandwidth] = String(params.replicationBandwidth ?? "");
    else {
      // replicateTo or replicationInterval: the pair the replicator reads (an interval keeps
      // its value, or gets the default, when only the targets change).
      own[PROP.replicateTo] = params.replicateTo?.join(",") ?? "";
      own[PROP.replicationInterval] = params.replicationInterval ?? "";
    }
  }
  return { params, properties: { ...native, ...own, [PROP.parameters]: params.canonical } };
}

/**
 * Applies a planned modification: refuses first what the host cannot take (capability probe,
 * host-limits.ts), then one `zfs set` (ZfsClient.set: one call where the CLI takes several
 * properties, one per property on zfs-fuse). Setting a property to the value it has is a no-op
 * in ZFS, so a retried modification does the same and ends the same.
 */
export async function applyModification(host: PoolHost, volume: Volume, modification: Modification): Promise<void> {
  const changedNative: Record<string, string> = {};
  for (const key of ["compression", "recordsize"]) {
    const value = modification.properties[key];
    if (value !== undefined) changedNative[key] = value;
  }
  await requireHostCanHonour(host, { ...modification.params, zfsProperties: changedNative });
  await host.zfs.set(volume.ref.dataset, modification.properties);
}

/**
 * Changes a live volume's mutable parameters: validated with the stored ones, refused before
 * anything changes when the host cannot take them, then one `zfs set` (applyModification).
 */
export async function modifyVolume(host: PoolHost, volume: Volume, mutable: Readonly<Record<string, string>>, knownHosts: readonly string[], logger: Logger): Promise<Volume> {
  const modification = planModification(volume, mutable, knownHosts);
  // Only sidecar keys (or none): nothing to change; the CSI call still answers OK.
  if (Object.keys(modification.properties).length === 1 && modification.params.canonical === volume.parameters) return volume;
  await applyModification(host, volume, modification);
  logger.info({ op: "ControllerModifyVolume", volumeId: volume.id, set: modification.properties }, "volume parameters changed");
  return { ...volume, parameters: modification.params.canonical };
}
