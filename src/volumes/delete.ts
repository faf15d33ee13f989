import { failedPrecondition, isZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import type { PoolHost } from "./hosts.js";
import { formatSnapshotId } from "./ids.js";
import { AUTO_SNAPSHOT_PREFIX, CLONE_SNAPSHOT_PREFIX, PROP, REPLICATION_SNAPSHOT_PREFIX } from "./properties.js";
import { local, type ReplicationHolds, type Volume } from "./volume.js";
import { hasReason } from "../zfs/errors.js";
import { PropertyView } from "../zfs/parse.js";
import { pushTo } from "../util/multimap.js";

/** DeleteVolume's work on the pool host, once the volume was found and is zcsi's. */
export class VolumeDestroyer {
  constructor(
    private readonly logger: Logger,
    /** Absent: no replicator in this deployment, so no holds of its to release. */
    private readonly replication?: ReplicationHolds,
  ) {}

  /**
   * Destroys a volume's dataset. A volume without snapshots costs one `zfs destroy`; one with
   * snapshots ("has children") is looked at closely in deleteWithDependents. False when the
   * dataset was gone already.
   */
  async destroy(host: PoolHost, volume: Volume): Promise<boolean> {
    const ref = volume.ref;
    if (volume.replicateTo !== undefined && this.replication !== undefined) {
      // Replicas on the targets are kept (docs/replication.md): only the source's holds go.
      await this.replication.releaseHolds({ host: ref.poolHost, dataset: ref.dataset });
      this.logger.info({ op: "DeleteVolume", volumeId: volume.id, replicateTo: volume.replicateTo }, "released replication holds; replicas on the targets are kept");
    }
    try {
      await host.zfs.destroy(ref.dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return false;
      if (!hasReason(err, "hasChildren", "dependentClones")) throw err;
      await this.deleteWithDependents(host, volume);
    }
    await this.removeMountpoint(host, volume);
    return true;
  }

  /**
   * ZFS removes a mountpoint directory on destroy only when the mountpoint was inherited; zcsi
   * sets it on the dataset (`<mountRoot>/<leaf>`), so the empty directory stayed behind. Only
   * that path is touched (a mountpoint an operator changed is not zcsi's to remove), and only
   * by `rmdir`, which removes an empty directory and nothing else: files written there while
   * the dataset was unmounted, or another filesystem mounted on it, keep it. The volume is gone
   * either way, so a directory left behind is logged, never an error.
   */
  private async removeMountpoint(host: PoolHost, volume: Volume): Promise<void> {
    const leaf = volume.ref.dataset.slice(host.config.parentDataset.length + 1);
    if (volume.mountpoint !== `${host.config.mountRoot}/${leaf}` && volume.mountpoint !== `${host.config.mountRoot.replace(/\/+$/, "")}/${leaf}`) return;
    const log = { op: "DeleteVolume", volumeId: volume.id, mountpoint: volume.mountpoint };
    try {
      const result = await host.exec.run(["rmdir", volume.mountpoint], { expectedExitCodes: [1] });
      if (result.exitCode !== 0) this.logger.info({ ...log, stderr: result.stderr.trim() }, "mountpoint directory left in place (not empty, in use, or already gone)");
    } catch (err) {
      this.logger.warn({ ...log, err: String(err) }, "could not remove the mountpoint directory");
    }
  }


  /**
   * DeleteVolume of a volume that has snapshots. CSI spec, DeleteVolume: a plugin that does not
   * treat snapshots as independent of their volume MUST leave the volume untouched and return
   * FAILED_PRECONDITION; ZFS snapshots live inside their dataset, so:
   *
   * - a live CSI snapshot (its VolumeSnapshot still exists), a snapshot zcsi did not make, a
   *   user hold, a dataset below the volume, or a clone that is not a zcsi volume → nothing is
   *   touched, FAILED_PRECONDITION naming each blocker (the CO retries with backoff once the
   *   user deleted them).
   * - zcsi's own leftovers without clones (a `zcsi-clone-*` whose clone is gone but whose
   *   deferred destroy did not happen, scheduled `zcsi-auto-*`) are destroyed with the volume.
   * - snapshots that only clones keep alive — deleted CSI snapshots (defer_destroy) that
   *   volumes were restored from, and the hidden `zcsi-clone-*` snapshots of PVC clones — do
   *   not block: `zfs promote` of the clone made from the newest of them moves those snapshots
   *   (and the clone relationship) to that clone, after which the volume is a clone without
   *   snapshots and a plain `zfs destroy` removes it. The clones keep their data and ids; the
   *   moved snapshots stay `defer_destroy` and ZFS frees them when their last clone goes.
   *
   * Two `zfs get` (the volume's snapshots; the origins of its siblings) find all of this.
   * Clones outside the parent dataset are not seen: for them the final destroy fails with
   * "has dependent clones" → FAILED_PRECONDITION, after only zcsi's leftovers were removed.
   */
  private async deleteWithDependents(host: PoolHost, volume: Volume): Promise<void> {
    const dataset = volume.ref.dataset;
    const parent = host.config.parentDataset;
    const [own, siblings] = await Promise.all([
      host.zfs.get([dataset], [PROP.snapshotName, "defer_destroy", "userrefs", "createtxg"], { depth: 1 }),
      host.zfs.get([parent], ["origin", PROP.csiName], { depth: 1 }),
    ]);
    const clonesOf = new Map<string, { dataset: string; zcsi: boolean }[]>();
    for (const [name, props] of siblings) {
      const origin = props.get("origin")?.value ?? "-";
      if (!origin.startsWith(`${dataset}@`)) continue;
      pushTo(clonesOf, origin, { dataset: name, zcsi: local(props, PROP.csiName) !== undefined });
    }
    const blockers: string[] = [];
    const leftovers: string[] = [];
    let promote: { clone: string; txg: bigint } | undefined;
    for (const [name, props] of own) {
      if (name === dataset) continue;
      if (!name.startsWith(`${dataset}@`)) {
        blockers.push(`dataset ${name} below the volume`);
        continue;
      }
      const snap = name.slice(dataset.length + 1);
      const clones = clonesOf.get(name) ?? [];
      const deferred = props.get("defer_destroy")?.value === "on";
      const holds = Number(props.get("userrefs")?.value ?? "0") || 0;
      // The replicator's own snapshots (zcsi-repl-*) go with the volume, like the scheduler's.
      const ours = snap.startsWith(CLONE_SNAPSHOT_PREFIX) || snap.startsWith(AUTO_SNAPSHOT_PREFIX) || snap.startsWith(REPLICATION_SNAPSHOT_PREFIX);
      if (local(props, PROP.snapshotName) !== undefined && !deferred) {
        blockers.push(`CSI snapshot ${formatSnapshotId({ poolHost: host.config.name, dataset, snapshot: snap })} (delete its VolumeSnapshot first)`);
      } else if (!deferred && !ours) {
        blockers.push(`snapshot ${name}, which zcsi did not create`);
      } else if (holds > 0) {
        blockers.push(`snapshot ${name} has ${holds} user hold(s) (zfs holds)`);
      } else if (clones.some((c) => !c.zcsi)) {
        blockers.push(`snapshot ${name} has clones zcsi did not create: ${clones.filter((c) => !c.zcsi).map((c) => c.dataset).join(", ")}`);
      } else if (clones.length === 0) {
        if (!deferred) leftovers.push(name);
      } else {
        const txg = new PropertyView(name, props, host.config.name).integer("createtxg");
        const clone = clones[0]?.dataset;
        if (clone && (!promote || txg > promote.txg)) promote = { clone, txg };
      }
    }
    if (blockers.length > 0) {
      throw failedPrecondition(
        `volume ${volume.id} cannot be deleted while it has ${blockers.join("; ")}. Nothing was changed (CSI DeleteVolume: zcsi does not treat snapshots as independent of their volume)`,
      );
    }
    for (const name of leftovers) {
      await host.zfs.destroy(name).catch((err: unknown) => {
        if (!isZcsiError(err, "NotFound")) throw err;
      });
    }
    if (promote) {
      this.logger.info({ op: "DeleteVolume", volumeId: volume.id, promote: promote.clone }, "promoting a clone so the volume it was made from can go");
      await host.zfs.promote(promote.clone);
    }
    try {
      await host.zfs.destroy(dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return;
      if (isZcsiError(err, "FailedPrecondition")) throw failedPrecondition(`volume ${volume.id} cannot be deleted: ${err.message}`, { cause: err });
      throw err;
    }
  }
}
