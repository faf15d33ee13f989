import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import { ownUserPropertyValue, PropertyView } from "../zfs/parse.js";
import { isAdoptedId, parseAdoptedId, type AdoptedRef } from "./adopted-ids.js";
import { AdoptedVolumes } from "./adopted.js";
import type { PoolHosts } from "./hosts.js";
import { snapshotNameFromCsi } from "./ids.js";
import type { SnapshotParameters } from "./parameters.js";
import { PROP } from "./properties.js";
import type { Snapshot } from "./snapshots.js";

/**
 * CSI snapshots of adopted volumes (VolumeSnapshots of an adopted PVC): plain ZFS snapshots of
 * the operator's dataset, marked zcsi:csi-snapshot-name like any CSI snapshot, with ids
 * `<adopted volume id>@<name>`. Only a read-write adoption is snapshotted: a read-only one
 * changes nothing on the dataset. DeleteSnapshot destroys only a snapshot zcsi took for CSI;
 * the operator's own snapshots are never touched. Restoring one makes a new zcsi volume under
 * parentDataset: a clone when the adopted dataset is in the same pool, else a send/recv copy
 * (sources.ts samePool; a clone cannot leave its origin's pool).
 */

const SNAPSHOT_PROPS = [PROP.snapshotName, "defer_destroy", "creation", "referenced"];

/** `<adopted volume id>@<snapshot>`, checked like the volume id; NotFound when it cannot be one. */
export function parseAdoptedSnapshotId(snapshotId: string, hosts: AdoptedSnapshots["hosts"]["configs"]): { ref: AdoptedRef; snapshot: string } {
  const at = snapshotId.lastIndexOf("@");
  if (at < 0 || !isAdoptedId(snapshotId)) throw notFound(`snapshot ${JSON.stringify(snapshotId)} is not a snapshot of an adopted volume`);
  const ref = parseAdoptedId(snapshotId.slice(0, at), hosts, "snapshot_id");
  let snapshot: string;
  try {
    snapshot = snapshotNameFromCsi(snapshotId.slice(at + 1), "snapshot_id");
  } catch {
    throw notFound(`snapshot ${JSON.stringify(snapshotId)} does not exist (bad snapshot name)`);
  }
  return { ref, snapshot };
}

export class AdoptedSnapshots {
  private readonly volumes: AdoptedVolumes;

  constructor(
    readonly hosts: PoolHosts,
    private readonly logger: Logger,
  ) {
    this.volumes = new AdoptedVolumes(hosts);
  }

  /** The CSI snapshot `name` of the adopted volume, if zcsi took it and it is not deleted. */
  private async find(ref: AdoptedRef, name: string): Promise<{ snapshot?: Snapshot; other: boolean }> {
    const zfsName = `${ref.dataset}@${name}`;
    const props = (await this.hosts.get(ref.poolHost).zfs.get([zfsName], SNAPSHOT_PROPS, { missingOk: true })).get(zfsName);
    if (!props) return { other: false };
    if (ownUserPropertyValue(props.get(PROP.snapshotName)) !== name) return { other: true };
    if (props.get("defer_destroy")?.value === "on") return { other: false };
    const view = new PropertyView(zfsName, props, ref.poolHost);
    const snapshot: Snapshot = {
      id: `${ref.id}@${name}`,
      ref: { poolHost: ref.poolHost, dataset: ref.dataset, snapshot: name },
      sourceVolumeId: ref.id,
      creationSeconds: view.integer("creation"),
      sizeBytes: view.integer("referenced"),
    };
    return { snapshot, other: false };
  }

  /** CreateSnapshot, idempotent by name: the same name again → the same snapshot. */
  async create(sourceVolumeId: string, csiName: string, params: SnapshotParameters): Promise<Snapshot> {
    const name = snapshotNameFromCsi(csiName);
    const ref = parseAdoptedId(sourceVolumeId, this.hosts.configs, "source_volume_id");
    if (ref.readOnly) throw invalidArgument(`volume ${ref.id} is a read-only adoption; snapshot the dataset through its read-write adoption, or on the pool host`);
    if (!(await this.volumes.get(ref))) throw notFound(`source volume ${ref.id} does not exist (dataset gone, or no longer adopted)`);
    const found = await this.find(ref, name);
    if (found.snapshot) return found.snapshot;
    if (found.other) throw alreadyExists(`${ref.dataset}@${name} exists on ${ref.poolHost} and is not a CSI snapshot; use another name`);
    const props: Record<string, string> = {
      [PROP.snapshotName]: name,
      ...(params.volumeSnapshotName && params.volumeSnapshotNamespace && { [PROP.volumeSnapshot]: `${params.volumeSnapshotNamespace}/${params.volumeSnapshotName}` }),
      ...(params.volumeSnapshotContentName && { [PROP.volumeSnapshotContent]: params.volumeSnapshotContentName }),
    };
    await this.hosts.get(ref.poolHost).zfs.snapshot(`${ref.dataset}@${name}`, props);
    const made = await this.find(ref, name);
    if (!made.snapshot) throw notFound(`snapshot ${ref.dataset}@${name} vanished right after it was created on ${ref.poolHost}`);
    this.logger.info({ op: "CreateSnapshot", snapshotId: made.snapshot.id }, "snapshot of an adopted dataset created");
    return made.snapshot;
  }

  async get(snapshotId: string): Promise<Snapshot | undefined> {
    const { ref, snapshot } = parseAdoptedSnapshotId(snapshotId, this.hosts.configs);
    return (await this.find(ref, snapshot)).snapshot;
  }

  /**
   * DeleteSnapshot: `zfs destroy -d` of a snapshot zcsi took for CSI (clones keep it alive until
   * they go). Absent → false; an id that cannot be one → false; a snapshot zcsi did not take →
   * FAILED_PRECONDITION, untouched.
   */
  async delete(snapshotId: string): Promise<boolean> {
    let parsed;
    try {
      parsed = parseAdoptedSnapshotId(snapshotId, this.hosts.configs);
    } catch {
      return false;
    }
    const found = await this.find(parsed.ref, parsed.snapshot);
    if (found.other) throw failedPrecondition(`${parsed.ref.dataset}@${parsed.snapshot} on ${parsed.ref.poolHost} was not taken by zcsi for CSI; refusing to destroy it`);
    if (!found.snapshot) return false;
    await this.hosts.get(parsed.ref.poolHost).zfs.destroy(`${parsed.ref.dataset}@${parsed.snapshot}`, { deferred: true });
    return true;
  }
}
