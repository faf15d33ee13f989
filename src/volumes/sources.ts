import { isZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import type { PoolHost } from "./hosts.js";
import type { VolumeParameters } from "./parameters.js";
import { PROP, RECEIVE_PREFIX } from "./properties.js";
import type { Snapshot } from "./snapshots.js";
import { cloneSnapshotName, type Volume } from "./volume.js";

/**
 * Whether two datasets are in one pool. A clone cannot leave its origin's pool (zfs-clone(8)):
 * the source of an adopted volume (a dataset in the operator's pool, outside parentDataset)
 * may be in another pool than the new volume, and is then copied whatever restoreMode says.
 */
export function samePool(a: string, b: string): boolean {
  return a.split("/")[0] === b.split("/")[0];
}

/** How a new volume gets the data of its content source: a clone, or a send/recv copy. */
export class ContentCopies {
  constructor(private readonly logger: Logger) {}

  /**
   * A volume from a CSI snapshot. `clone` (default): one `zfs clone -o ...` with every property,
   * instant; the snapshot then has a dependent clone, which DeleteSnapshot handles with a
   * deferred destroy. `copy`: an independent dataset by send/recv (see copyInto).
   */
  async restoreSnapshot(host: PoolHost, snapshot: Snapshot, dataset: string, props: Record<string, string>, params: VolumeParameters): Promise<void> {
    const from = `${snapshot.ref.dataset}@${snapshot.ref.snapshot}`;
    if (params.restoreMode === "copy" || !samePool(snapshot.ref.dataset, dataset)) await this.copyInto(host, from, dataset, props);
    else await host.zfs.clone(from, dataset, props);
  }

  /**
   * A volume from another volume (PVC clone): a hidden snapshot `<source>@zcsi-clone-<leaf>`
   * (not a CSI snapshot: never listed, never deletable through CSI), then a clone or copy of it,
   * then `zfs destroy -d` of the hidden snapshot, whatever happened. After a copy (or a failed
   * clone) nothing depends on it and it goes at once; after a clone ZFS keeps it, marked
   * `defer_destroy`, until the clone is destroyed, and frees it then by itself.
   *
   * So the new volume carries no dependency that blocks anything: deleting the clone releases
   * the hidden snapshot; deleting the SOURCE first is handled by DeleteVolume, which promotes
   * the clone (see deleteWithDependents), so the source goes and the clone keeps its data. A
   * retry after a crash reuses a hidden snapshot that is already there.
   */
  async cloneVolume(host: PoolHost, source: Volume, leaf: string, dataset: string, props: Record<string, string>, params: VolumeParameters): Promise<void> {
    const hidden = cloneSnapshotName(source.ref.dataset, leaf);
    try {
      await host.zfs.snapshot(hidden);
    } catch (err) {
      if (!isZcsiError(err, "AlreadyExists")) throw err;
    }
    try {
      if (params.restoreMode === "copy" || !samePool(source.ref.dataset, dataset)) await this.copyInto(host, hidden, dataset, props);
      else await host.zfs.clone(hidden, dataset, props);
    } finally {
      await host.zfs.destroy(hidden, { deferred: true }).catch((err: unknown) => {
        if (!isZcsiError(err, "NotFound")) this.logger.warn({ op: "CreateVolume", snapshot: hidden, err: String(err) }, "could not release the clone's source snapshot; DeleteVolume of the source will");
      });
    }
  }

  /**
   * Copy mode: `zfs send <snapshot> | zfs recv -u <parent>/zcsi-recv-<leaf>` on the pool host
   * (Zfs.sendReceive: argv only, both exit codes checked), then on that staging dataset: destroy
   * the received snapshot (a new volume starts with no history), set every property (zfs-fuse's
   * recv has no -o; its set takes one property per call), and rename it to the volume's name.
   * The staging name is reserved (volume names may not start with zcsi-recv-), so a half-done
   * copy is never mistaken for a volume, and any failure destroys it: leftovers of a crashed
   * attempt are destroyed before the next one starts. The volume arrives unmounted and in state
   * `creating`; finish() mounts it and marks it ready.
   */
  private async copyInto(host: PoolHost, snapshot: string, dataset: string, props: Record<string, string>): Promise<void> {
    const leaf = dataset.slice(host.config.parentDataset.length + 1);
    const staging = `${host.config.parentDataset}/${RECEIVE_PREFIX}${leaf}`;
    const snapshotPart = snapshot.slice(snapshot.indexOf("@") + 1);
    await this.destroyIfPresent(host, staging);
    try {
      await host.zfs.sendReceive(snapshot, staging);
      await host.zfs.destroy(`${staging}@${snapshotPart}`);
      await host.zfs.set(staging, { ...props, [PROP.state]: "creating" });
      await host.zfs.rename(staging, dataset);
    } catch (err) {
      await this.destroyIfPresent(host, staging).catch((cleanup: unknown) =>
        this.logger.error({ op: "CreateVolume", dataset: staging, err: String(cleanup) }, "could not destroy the staging dataset of a failed copy"),
      );
      throw err;
    }
  }

  private async destroyIfPresent(host: PoolHost, dataset: string): Promise<void> {
    try {
      await host.zfs.destroy(dataset, { recursive: true });
    } catch (err) {
      if (!isZcsiError(err, "NotFound")) throw err;
    }
  }

}
