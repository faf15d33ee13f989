import type { PoolHostConfig } from "../config.js";
import { invalidArgument, notFound } from "../errors.js";
import { isAdoptedId, parseAdoptedId, type AdoptedVolumes } from "../volumes/adopted.js";
import type { AdoptedSnapshots } from "../volumes/adopted-snapshots.js";
import { parseSnapshotId, parseVolumeId } from "../volumes/ids.js";
import type { VolumeParameters } from "../volumes/parameters.js";
import type { ContentSource, Volume, VolumeService } from "../volumes/service.js";
import type { SnapshotService } from "../volumes/snapshots.js";
import type { RequestedSource } from "./messages.js";

export interface SourceLookups {
  readonly hosts: readonly PoolHostConfig[];
  readonly volumes: Pick<VolumeService, "get">;
  readonly snapshots: Pick<SnapshotService, "get">;
  readonly adopted: Pick<AdoptedVolumes, "get">;
  readonly adoptedSnapshots: Pick<AdoptedSnapshots, "get">;
}

/**
 * The content source of a new volume. CSI spec, CreateVolume errors: a source that does not
 * exist → NOT_FOUND (a deleted snapshot too, though ZFS may still keep it for its clones);
 * one the plugin cannot use → INVALID_ARGUMENT: a clone or restore must be on the source's
 * pool host (ZFS clones cannot cross pools; a copy to another host is replication's job).
 * A snapshot of an adopted volume, or its read-write adoption itself, is a source like any
 * (a clone, or a copy when the dataset is in another pool than the parent: volumes/sources.ts).
 */
export async function resolveContentSource(lookups: SourceLookups, wanted: RequestedSource, params: VolumeParameters): Promise<ContentSource> {
  const { hosts } = lookups;
  let source: ContentSource;
  if (wanted.kind === "snapshot") {
    const snapshot = isAdoptedId(wanted.id)
      ? await lookups.adoptedSnapshots.get(wanted.id)
      : await lookups.snapshots.get(parseSnapshotId(wanted.id, hosts, "volume_content_source.snapshot.snapshot_id"));
    if (!snapshot) throw notFound(`snapshot ${wanted.id} does not exist`);
    source = { kind: "snapshot", snapshot };
  } else {
    let volume: Volume | undefined;
    if (isAdoptedId(wanted.id)) {
      const adopted = parseAdoptedId(wanted.id, hosts, "volume_content_source.volume.volume_id");
      // A PVC clone takes a hidden snapshot of its source: a read-only adoption changes nothing on the dataset.
      if (adopted.readOnly) throw invalidArgument(`volume_content_source ${wanted.id} is a read-only adoption; clone the dataset's read-write adoption, or restore a VolumeSnapshot of it`);
      volume = await lookups.adopted.get(adopted);
    } else {
      volume = await lookups.volumes.get(parseVolumeId(wanted.id, hosts, "volume_content_source.volume.volume_id"));
    }
    if (!volume) throw notFound(`volume ${wanted.id} does not exist`);
    source = { kind: "volume", volume };
  }
  const sourceHost = source.kind === "snapshot" ? source.snapshot.ref.poolHost : source.volume.ref.poolHost;
  if (params.poolHost !== undefined && params.poolHost !== sourceHost) {
    throw invalidArgument(
      `volume_content_source ${wanted.id} is on pool host ${sourceHost}, but the StorageClass asks for poolHost=${params.poolHost}; a restore or clone is made on its source's pool host`,
    );
  }
  if (params.replicateTo?.includes(sourceHost)) {
    throw invalidArgument(
      `volume_content_source ${wanted.id} is on pool host ${sourceHost}, where the new volume is made, but the StorageClass asks for replicateTo=${params.replicateTo.join(",")}; a replica must be on another host`,
    );
  }
  return source;
}
