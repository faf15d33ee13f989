import type { PoolHost } from "./hosts.js";
import { formatVolumeId, type VolumeRef } from "./ids.js";
import type { VolumeParameters } from "./parameters.js";
import { CLONE_SNAPSHOT_PREFIX, PROP, type VolumeState } from "./properties.js";
import { capacityOf, SIZE_PROPERTIES, sizeModeOf, type SizeMode } from "./size-modes.js";
import type { Snapshot } from "./snapshots.js";
import { ownProperty, PropertyView } from "../zfs/parse.js";

export interface Volume {
  readonly id: string;
  readonly ref: VolumeRef;
  readonly csiName: string;
  /** The size, in the volume's size mode (size-modes.ts capacityOf). */
  readonly capacityBytes: bigint;
  /** From zcsi:parameters; `refquota` when it says none. */
  readonly sizeMode: SizeMode;
  readonly usedBytes: bigint;
  readonly mountpoint: string;
  readonly mounted: boolean;
  readonly state: VolumeState;
  /** Canonical parameters the volume was created with. */
  readonly parameters: string;
  /** `snapshot:<snapshot_id>` or `volume:<volume_id>` when the volume was made from one (see PROP.contentSource). */
  readonly contentSource?: string;
  /** ZFS `origin`: the snapshot this dataset is a clone of, if it is one. */
  readonly origin?: string;
  /** Local zcsi:replicate-to: the hosts the replicator copies this volume to. */
  readonly replicateTo?: string;
  /**
   * Set when the copy serving the volume is not its birth copy (a promoted replica): where the
   * volume was born, which is what its id and volume_context keep saying (a PV is immutable).
   * `ref` is where the data is now.
   */
  readonly birth?: { readonly poolHost: string; readonly dataset: string; readonly mountpoint: string };
  /** Local zcsi:placement: why the volume was created on its host (placement.ts). */
  readonly placement?: string;
}

/**
 * What DeleteVolume needs of replication (the engine implements it): the replicator holds
 * the snapshot each target's next increment starts from (zfs-hold(8)), and a held snapshot
 * cannot be destroyed, so the holds go first.
 */
export interface ReplicationHolds {
  releaseHolds(source: { readonly host: string; readonly dataset: string }): Promise<void>;
}

/** Where a new volume's data comes from, already resolved and checked by the caller. */
export type ContentSource = { readonly kind: "snapshot"; readonly snapshot: Snapshot } | { readonly kind: "volume"; readonly volume: Volume };

/** The value of PROP.contentSource for a source: what a retried CreateVolume must match. */
export function contentSourceKey(source: ContentSource | undefined): string | undefined {
  if (!source) return undefined;
  return source.kind === "snapshot" ? `snapshot:${source.snapshot.id}` : `volume:${source.volume.id}`;
}

/** The answer of VolumeService.lookup: an existing volume, and free bytes per pool host. */
export interface Placement {
  readonly existing?: Volume;
  readonly free: ReadonlyMap<string, bigint>;
}

export interface CreateSpec {
  readonly csiName: string;
  readonly leaf: string;
  readonly capacityBytes: bigint;
  readonly params: VolumeParameters;
  readonly source?: ContentSource;
  /** The node the pod was scheduled to (accessibility_requirements.preferred), if any. */
  readonly preferredNode?: string;
}

export const VOLUME_PROPS = [
  PROP.csiName,
  PROP.state,
  PROP.parameters,
  PROP.contentSource,
  PROP.replicateTo,
  PROP.replicaOf,
  PROP.volume,
  PROP.role,
  PROP.fenced,
  PROP.placement,
  ...SIZE_PROPERTIES,
  "referenced",
  "mountpoint",
  "mounted",
  "origin",
];

export type PropertyMap = ReadonlyMap<string, { value: string; source: string }>;

/** A user property counts only where it is set on the dataset itself, not inherited. */
export const local: (props: PropertyMap, name: string) => string | undefined = ownProperty;

export function toVolume(host: PoolHost, dataset: string, props: PropertyMap): Volume | undefined {
  const csiName = local(props, PROP.csiName);
  if (csiName === undefined) return undefined;
  const ref = { poolHost: host.config.name, dataset };
  // A promoted copy is the volume under the id it was born with (zcsi:volume); any other copy's id names itself.
  const identity = local(props, PROP.volume);
  const view = new PropertyView(dataset, props, host.config.name);
  const parameters = local(props, PROP.parameters) ?? "{}";
  const sizeMode = sizeModeOf(parameters);
  return {
    id: identity !== undefined && identity !== "-" && identity !== "" ? identity : formatVolumeId(ref),
    ref,
    csiName,
    capacityBytes: capacityOf(sizeMode, view, props),
    sizeMode,
    usedBytes: view.integer("referenced"),
    mountpoint: props.get("mountpoint")?.value ?? "",
    mounted: props.get("mounted")?.value === "yes",
    state: local(props, PROP.state) === "ready" ? "ready" : "creating",
    parameters,
    ...optional("contentSource", local(props, PROP.contentSource)),
    ...optional("origin", props.get("origin")?.value),
    ...optional("replicateTo", local(props, PROP.replicateTo)),
    ...optional("placement", local(props, PROP.placement)),
  };
}

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value === undefined || value === "-" || value === "" ? {} : { [key]: value }) as { [P in K]?: string };
}

/** The hidden snapshot a PVC-to-PVC clone named `leaf` is made from. */
export function cloneSnapshotName(sourceDataset: string, leaf: string): string {
  return `${sourceDataset}@${CLONE_SNAPSHOT_PREFIX}${leaf}`;
}

/**
 * A replica the replicator received here (zcsi:replica-of, set by its first receive, in any
 * source): not a volume, and not a foreign dataset either, so it neither answers for a
 * volume of that name nor blocks the volume's own CreateVolume on its real host.
 */
export function isReplica(props: PropertyMap): boolean {
  // Its own zcsi:role decides (a promoted copy may still carry zcsi:replica-of for a moment).
  const role = local(props, PROP.role);
  if (role === "primary") return false;
  if (role === "replica") return true;
  const mark = props.get(PROP.replicaOf)?.value;
  return mark !== undefined && mark !== "-" && mark !== "";
}

/** A stale primary, fenced (zcsi:fenced): kept, never served. */
export function isFenced(props: PropertyMap): boolean {
  const v = local(props, PROP.fenced);
  return v !== undefined && v !== "-" && v !== "";
}

/**
 * Whether a dataset serves its volume: zcsi's (zcsi:csi-name), neither a replica nor fenced.
 * Only such copies are listed, snapshotted, replicated from or acted on by controller calls.
 */
export function isServingCopy(props: PropertyMap): boolean {
  return local(props, PROP.csiName) !== undefined && !isReplica(props) && !isFenced(props);
}
