import { invalidArgument, notFound } from "../errors.js";
import type { PoolHostConfig } from "../config.js";
import { ADOPTED_REPLICA_PREFIX, RECEIVE_PREFIX, RESERVED_PREFIX } from "./properties.js";

/**
 * Volume ids name their data: `<poolHost>:<dataset>` (e.g. `alice:tank/k8s/pvc-1234`), so
 * every role finds the dataset without a lookup. Snapshot ids add `@<snapshot>`.
 */
export interface VolumeRef {
  readonly poolHost: string;
  readonly dataset: string;
}

export interface SnapshotRef extends VolumeRef {
  readonly snapshot: string;
}

/**
 * CSI names become dataset leaf names unchanged, so an operator reading `zfs list` sees the
 * PV name. The external-provisioner sends `pvc-<uid>` (or its --volume-name-prefix form),
 * which fits; anything outside this conservative form is refused rather than rewritten, so a
 * name can never smuggle a path, option or shell syntax into a dataset name.
 */
const LEAF = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function leafFromName(csiName: string, field = "name"): string {
  if (csiName === "") throw invalidArgument(`${field} is required`);
  if (!LEAF.test(csiName) || csiName.includes("..")) {
    throw invalidArgument(
      `${field} ${JSON.stringify(csiName.length > 80 ? csiName.slice(0, 80) + "…" : csiName)} is not accepted: use 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit`,
    );
  }
  return csiName;
}

/** A CreateVolume name as a dataset leaf; refuses the prefixes zcsi receives copies and adopted datasets' replicas under. */
export function volumeLeafFromName(csiName: string): string {
  const leaf = leafFromName(csiName);
  for (const prefix of [RECEIVE_PREFIX, ADOPTED_REPLICA_PREFIX]) {
    if (leaf.startsWith(prefix)) throw invalidArgument(`name ${JSON.stringify(csiName)} is not accepted: the prefix ${prefix} is reserved by zcsi`);
  }
  return leaf;
}

/**
 * A CSI snapshot name as the ZFS snapshot component, unchanged (`snapshot-<uid>` from the
 * external-snapshotter), so `zfs list -t snapshot` shows the VolumeSnapshotContent's handle.
 * Same rule as volume names (refuse, never rewrite), and `zcsi-*` is refused too: those names
 * belong to zcsi's own snapshots (scheduled, clone sources), which must never be mistaken for,
 * or collide with, a CSI snapshot.
 */
export function snapshotNameFromCsi(csiName: string, field = "name"): string {
  const name = leafFromName(csiName, field);
  if (name.startsWith(RESERVED_PREFIX)) throw invalidArgument(`${field} ${JSON.stringify(csiName)} is not accepted: the prefix ${RESERVED_PREFIX} is reserved for zcsi's own snapshots`);
  return name;
}

export function formatVolumeId(ref: VolumeRef): string {
  return `${ref.poolHost}:${ref.dataset}`;
}

export function formatSnapshotId(ref: SnapshotRef): string {
  return `${ref.poolHost}:${ref.dataset}@${ref.snapshot}`;
}

/**
 * Parses a volume id and checks that it names a direct child of the pool host's parent
 * dataset: zcsi never touches anything else, whatever id it is handed. A malformed id or one
 * outside the parent is reported as not found (it cannot be a volume of ours).
 */
export function parseVolumeId(volumeId: string, hosts: readonly PoolHostConfig[], field = "volume_id"): VolumeRef & { leaf: string; host: PoolHostConfig } {
  if (volumeId === "") throw invalidArgument(`${field} is required`);
  const colon = volumeId.indexOf(":");
  const poolHost = volumeId.slice(0, colon);
  const dataset = volumeId.slice(colon + 1);
  const host = colon > 0 ? hosts.find((h) => h.name === poolHost) : undefined;
  if (!host) throw notFound(`volume ${JSON.stringify(volumeId)} does not exist (no configured pool host ${JSON.stringify(poolHost)})`);
  const prefix = host.parentDataset + "/";
  const leaf = dataset.startsWith(prefix) ? dataset.slice(prefix.length) : "";
  if (!LEAF.test(leaf) || leaf.includes("..")) throw notFound(`volume ${JSON.stringify(volumeId)} does not exist (not a dataset directly below ${host.parentDataset})`);
  return { poolHost, dataset, leaf, host };
}

export function parseSnapshotId(snapshotId: string, hosts: readonly PoolHostConfig[], field = "snapshot_id"): SnapshotRef & { leaf: string; host: PoolHostConfig } {
  if (snapshotId === "") throw invalidArgument(`${field} is required`);
  const at = snapshotId.lastIndexOf("@");
  if (at < 0) throw notFound(`snapshot ${JSON.stringify(snapshotId)} does not exist (no @ in id)`);
  const volume = parseVolumeId(snapshotId.slice(0, at), hosts, field);
  const snapshot = snapshotId.slice(at + 1);
  if (!LEAF.test(snapshot) || snapshot.includes("..")) throw notFound(`snapshot ${JSON.stringify(snapshotId)} does not exist (bad snapshot name)`);
  return { ...volume, snapshot };
}
