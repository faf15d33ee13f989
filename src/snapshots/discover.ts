import type { PoolHostConfig } from "../config.js";
import { adoptionProblem, formatAdoptedId } from "../volumes/adopted-ids.js";
import { adoptionMark } from "../volumes/adopted.js";
import { PROP } from "../volumes/properties.js";
import { isServingCopy } from "../volumes/volume.js";
import { ownProperty as local, PropertyView, type PropertyMap } from "../zfs/parse.js";
import { parseAutoSnapshotName } from "./retention.js";
import { STALE_PROPS } from "./stale.js";
import { pushTo } from "../util/multimap.js";

/**
 * What the snapshot scheduler (scheduler.ts) reads of a pool host's listing: the volumes below
 * the parent, the read-write adopted datasets below the adoptRoots, and their snapshots with
 * what decides whether retention may prune them. Pure.
 */

/** What one discovery command asks for. */
export const DISCOVERY_PROPS = [
  PROP.adopted,
  ...["type", "createtxg", "guid", "userrefs", "origin", PROP.csiName, PROP.pv, PROP.snapshotSchedule, PROP.snapshotGroup],
  ...[PROP.replicateTo, PROP.replicatedThrough, PROP.autoSnapshot, PROP.snapshotName, PROP.role, PROP.replicaOf, PROP.fenced],
  ...STALE_PROPS,
];
export interface SnapshotInfo {
  /** The part after `@`. */
  readonly name: string;
  readonly guid: string;
  readonly createtxg: bigint;
  readonly userrefs: number;
  readonly hasClones: boolean;
  /** Time from the name when this is one of our automatic snapshots; undefined otherwise. */
  readonly autoTime?: number;
}

export interface ManagedVolume {
  readonly dataset: string;
  /** An adopted dataset's volume id (`<host>:<dataset>#adopted`); zcsi's own volumes: `<host>:<dataset>`. */
  readonly volumeId?: string;
  readonly pv?: string;
  /** The local zcsi:snapshot-schedule as stored (not yet parsed). */
  readonly schedule?: string;
  /** The local zcsi:snapshot-group: volumes of the host with the same one are snapshotted together (groups.ts). */
  readonly group?: string;
  readonly replicateTo?: string;
  readonly replicatedThrough?: string;
  readonly snapshots: readonly SnapshotInfo[];
}

type Props = ReadonlyMap<string, { value: string; source: string }>;


/**
 * The zcsi volumes directly below `parent` and their snapshots, from one discovery result.
 * Pure, for tests. Datasets without a local zcsi:csi-name are not ours and are left out.
 */
export function discoverVolumes(parent: string, all: PropertyMap): ManagedVolume[] {
  const prefix = parent + "/";
  const snapshotsOf = snapshotsByDataset(all);
  const volumes: ManagedVolume[] = [];
  for (const [dataset, props] of all) {
    if (!dataset.startsWith(prefix) || dataset.includes("@") || dataset.slice(prefix.length).includes("/")) continue;
    // Only the copy serving a volume is snapshotted: a replica (a demoted home too) receives them, a fenced copy is kept as it is.
    if (!isServingCopy(props)) continue;
    volumes.push(managedVolume(dataset, props, snapshotsOf));
  }
  return volumes;
}

/**
 * The read-write adopted datasets of `host` in a listing of its adoptRoots (`zfs get -r`):
 * a local zcsi:adopted=read-write, and a dataset the config still allows adopting
 * (adopted-ids.ts). They are scheduled like volumes; their snapshot groups are not (a group is
 * a StorageClass parameter, snapshotted with `zfs snapshot -r` below the parent). Read-only
 * adoptions change nothing on the dataset, so nothing is taken or pruned there. Pure.
 */
export function discoverAdopted(host: PoolHostConfig, all: PropertyMap): ManagedVolume[] {
  const snapshotsOf = snapshotsByDataset(all);
  const volumes: ManagedVolume[] = [];
  for (const [dataset, props] of all) {
    if (dataset.includes("@") || adoptionMark(props) !== "read-write" || adoptionProblem(host, dataset) !== undefined) continue;
    const { group: _group, ...volume } = managedVolume(dataset, props, snapshotsOf);
    volumes.push({ ...volume, volumeId: formatAdoptedId(host.name, dataset, { readOnly: false }) });
  }
  return volumes;
}

function managedVolume(dataset: string, props: Props, snapshotsOf: ReadonlyMap<string, SnapshotInfo[]>): ManagedVolume {
  const pv = local(props, PROP.pv);
  const schedule = local(props, PROP.snapshotSchedule);
  const group = local(props, PROP.snapshotGroup);
  const replicateTo = local(props, PROP.replicateTo);
  const replicatedThrough = local(props, PROP.replicatedThrough);
  return {
    dataset,
    ...(pv !== undefined && { pv }),
    ...(schedule !== undefined && { schedule }),
    ...(group !== undefined && { group }),
    ...(replicateTo !== undefined && { replicateTo }),
    ...(replicatedThrough !== undefined && { replicatedThrough }),
    snapshots: snapshotsOf.get(dataset) ?? [],
  };
}

/** Every snapshot in a listing, by its dataset, with what decides whether it may be pruned. */
function snapshotsByDataset(all: PropertyMap): Map<string, SnapshotInfo[]> {
  const clonedFrom = new Set<string>();
  for (const props of all.values()) {
    const origin = props.get("origin")?.value;
    if (origin !== undefined && origin !== "-" && origin !== "") clonedFrom.add(origin);
  }
  const snapshotsOf = new Map<string, SnapshotInfo[]>();
  for (const [name, props] of all) {
    const at = name.indexOf("@");
    if (at < 0 || props.get("type")?.value !== "snapshot") continue;
    const dataset = name.slice(0, at);
    const short = name.slice(at + 1);
    const clones = props.get("clones")?.value;
    const autoTime =
      local(props, PROP.autoSnapshot) !== undefined && local(props, PROP.snapshotName) === undefined ? parseAutoSnapshotName(short) : undefined;
    const userrefs = Number(props.get("userrefs")?.value ?? "0");
    const info: SnapshotInfo = {
      name: short,
      guid: props.get("guid")?.value ?? "",
      createtxg: new PropertyView(name, props).optionalInteger("createtxg") ?? 0n,
      userrefs: Number.isFinite(userrefs) ? userrefs : 0,
      hasClones: clonedFrom.has(name) || (clones !== undefined && clones !== "-" && clones !== ""),
      ...(autoTime !== undefined && { autoTime }),
    };
    pushTo(snapshotsOf, dataset, info);
  }
  return snapshotsOf;
}

