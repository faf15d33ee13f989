import { invalidArgument } from "../errors.js";
import type { Snapshot as CsiSnapshot } from "../gen/csi/v1/Snapshot.js";
import type { Volume as CsiVolume } from "../gen/csi/v1/Volume.js";
import type { VolumeContentSource, VolumeContentSource__Output } from "../gen/csi/v1/VolumeContentSource.js";
import type { Volume } from "../volumes/service.js";
import type { Snapshot } from "../volumes/snapshots.js";
import { volumeTopology } from "./topology.js";

/** zcsi's volumes and snapshots as CSI messages, and a CreateVolume's content source as asked. */

/**
 * What `kubectl describe pv` shows under VolumeAttributes: where the data lives, and why there
 * (`placement`, for volumes created since CreateVolume records it; docs/placement.md).
 */
export function volumeContext(volume: Volume): Record<string, string> {
  // A moved volume keeps describing its birth copy: volume_context is immutable in a PV.
  const at = volume.birth ?? { poolHost: volume.ref.poolHost, dataset: volume.ref.dataset, mountpoint: volume.mountpoint };
  return {
    poolHost: at.poolHost,
    dataset: at.dataset,
    mountpoint: at.mountpoint,
    ...(volume.placement !== undefined && { placement: volume.placement }),
  };
}

/** A stored PROP.contentSource (`snapshot:<id>` / `volume:<id>`) as the CSI message. */
function toContentSource(stored: string | undefined): VolumeContentSource | undefined {
  if (stored?.startsWith("snapshot:")) return { snapshot: { snapshotId: stored.slice("snapshot:".length) } };
  if (stored?.startsWith("volume:")) return { volume: { volumeId: stored.slice("volume:".length) } };
  return undefined;
}

export function toCsiVolume(volume: Volume, driverName: string): CsiVolume {
  const contentSource = toContentSource(volume.contentSource);
  return {
    volumeId: volume.id,
    capacityBytes: volume.capacityBytes.toString(),
    volumeContext: volumeContext(volume),
    accessibleTopology: volumeTopology(driverName),
    ...(contentSource && { contentSource }),
  };
}

/** What `kubectl describe volumesnapshotcontent` shows: handle, restore size, creation time. */
export function toCsiSnapshot(snapshot: Snapshot): CsiSnapshot {
  return {
    snapshotId: snapshot.id,
    sourceVolumeId: snapshot.sourceVolumeId,
    sizeBytes: snapshot.sizeBytes.toString(),
    creationTime: { seconds: snapshot.creationSeconds.toString(), nanos: 0 },
    // A ZFS snapshot is complete when `zfs snapshot` returns: there is no upload phase.
    readyToUse: true,
    ...(snapshot.groupSnapshotId !== undefined && { groupSnapshotId: snapshot.groupSnapshotId }),
  };
}

export interface RequestedSource {
  readonly kind: "snapshot" | "volume";
  readonly id: string;
  /** What PROP.contentSource holds for it. */
  readonly key: string;
}

export function requestedSource(source: VolumeContentSource__Output | null | undefined): RequestedSource | undefined {
  if (!source) return undefined;
  if (source.snapshot) {
    if (source.snapshot.snapshotId === "") throw invalidArgument("volume_content_source.snapshot.snapshot_id is required");
    return { kind: "snapshot", id: source.snapshot.snapshotId, key: `snapshot:${source.snapshot.snapshotId}` };
  }
  if (source.volume) {
    if (source.volume.volumeId === "") throw invalidArgument("volume_content_source.volume.volume_id is required");
    return { kind: "volume", id: source.volume.volumeId, key: `volume:${source.volume.volumeId}` };
  }
  throw invalidArgument("volume_content_source names neither a snapshot nor a volume");
}
