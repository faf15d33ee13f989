import { alreadyExists, errorMessage, failedPrecondition, internal, isZcsiError, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import { hasReason } from "../zfs/errors.js";
import { poolOf } from "../zfs/names.js";
import { ownProperty as local, PropertyView, type PropertyMap } from "../zfs/parse.js";
import { DELETE_SNAPSHOT_PROGRAM, deleteSnapshotProgramArgs, parseDeleteSnapshotResult } from "./delete-snapshot-program.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import { formatSnapshotId, formatVolumeId, parseSnapshotId, parseVolumeId, type SnapshotRef, type VolumeRef } from "./ids.js";
import type { SnapshotParameters } from "./parameters.js";
import { AUTO_SNAPSHOT_PREFIX, PROP } from "./properties.js";
import { isServingCopy } from "./volume.js";

/** A CSI snapshot: a ZFS snapshot of a zcsi volume carrying zcsi:csi-snapshot-name, not deleted. */
export interface Snapshot {
  /** `<poolHost>:<dataset>@<snapshot>`: what `kubectl describe volumesnapshotcontent` shows as the handle. */
  readonly id: string;
  readonly ref: SnapshotRef;
  readonly sourceVolumeId: string;
  /** ZFS `creation`, seconds since the epoch (ZFS keeps no finer resolution). */
  readonly creationSeconds: bigint;
  /** ZFS `referenced` of the snapshot: what the volume referenced when it was taken. */
  readonly sizeBytes: bigint;
  /**
   * Taken by the snapshot schedule (`zcsi-auto-*`), not by CreateSnapshot. Such a snapshot can
   * be named by id (a pre-provisioned VolumeSnapshotContent) and restored, but it is not listed
   * and DeleteSnapshot leaves it to the schedule's retention (docs/snapshots.md).
   */
  readonly scheduled?: boolean;
  /** The group snapshot it belongs to (group-snapshots.ts), when it is a member of one. */
  readonly groupSnapshotId?: string;
}

/**
 * What a snapshot name at a place is to zcsi:
 * - `csi`: a live CSI snapshot of a zcsi volume;
 * - `deleted`: a CSI snapshot DeleteSnapshot already destroyed with `-d`, kept by ZFS only
 *   while clones (restored volumes) still depend on it;
 * - `other`: a snapshot zcsi did not take for CSI (by hand, scheduled, a clone source), or one
 *   of a dataset that is not a zcsi volume.
 */
export type SnapshotLookup =
  | { readonly state: "absent" }
  | { readonly state: "csi"; readonly snapshot: Snapshot }
  | { readonly state: "deleted"; readonly name: string }
  | { readonly state: "other"; readonly name: string };

/** Everything a snapshot lookup or listing needs, for volumes and snapshots alike, in one `zfs get`. */
export const SNAPSHOT_PROPS = [PROP.snapshotName, PROP.groupMembers, PROP.autoSnapshot, PROP.csiName, PROP.volume, PROP.role, PROP.replicaOf, PROP.fenced, "defer_destroy", "creation", "referenced"];

/**
 * Classifies `dataset@snap` from one `zfs get` result that holds both the snapshot and its
 * dataset (the dataset's own zcsi:csi-name says whether it is a zcsi volume).
 */
export function classifySnapshot(poolHost: string, name: string, all: PropertyMap): SnapshotLookup {
  const props = all.get(name);
  if (!props) return { state: "absent" };
  const at = name.indexOf("@");
  const dataset = name.slice(0, at);
  const snapshot = name.slice(at + 1);
  const isVolume = local(all.get(dataset), PROP.csiName) !== undefined;
  const scheduled = local(props, PROP.snapshotName) === undefined && snapshot.startsWith(AUTO_SNAPSHOT_PREFIX) && local(props, PROP.autoSnapshot) !== undefined;
  if ((local(props, PROP.snapshotName) === undefined && !scheduled) || !isVolume) return { state: "other", name };
  const group = groupOf(poolHost, dataset, snapshot, local(props, PROP.groupMembers));
  // Marked by a recursive group snapshot but not a member: about to be destroyed, never a CSI snapshot.
  if (group === null) return { state: "other", name };
  if (props.get("defer_destroy")?.value === "on") return { state: "deleted", name };
  const ref = { poolHost, dataset, snapshot };
  return {
    state: "csi",
    snapshot: {
      id: formatSnapshotId(ref),
      ref,
      // A promoted copy's snapshots belong to the volume it serves (zcsi:volume, its birth id).
      sourceVolumeId: local(all.get(dataset), PROP.volume) ?? formatVolumeId({ poolHost, dataset }),
      creationSeconds: new PropertyView(name, props, poolHost).integer("creation"),
      sizeBytes: new PropertyView(name, props, poolHost).integer("referenced"),
      ...(scheduled && { scheduled: true }),
      ...(group !== undefined && { groupSnapshotId: group }),
    },
  };
}

/**
 * The group id of a snapshot carrying zcsi:group-members (`<poolHost>:<parent>@<snapshot>`,
 * group-snapshots.ts); undefined without the mark; null when the mark does not list the dataset.
 */
export function groupOf(poolHost: string, dataset: string, snapshot: string, members: string | undefined): string | null | undefined {
  if (members === undefined) return undefined;
  const slash = dataset.lastIndexOf("/");
  if (!members.split(",").includes(dataset.slice(slash + 1))) return null;
  return `${poolHost}:${dataset.slice(0, slash)}@${snapshot}`;
}

function byId(a: Snapshot, b: Snapshot): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * CSI snapshots on the pool hosts. Every lookup is one batched `zfs get` (per host for
 * listings), never one call per volume or per snapshot.
 */
export class SnapshotService {
  constructor(
    readonly hosts: PoolHosts,
    private readonly logger: Logger,
  ) {}

  /**
   * `zfs get -Hp -d 2 <props> <parent>`: the parent, its children (volumes) and their snapshots,
   * in one call. Depth 2 reaches `<parent>/<leaf>@<snap>` (a snapshot counts one level below its
   * dataset). A missing parent has no snapshots.
   */
  async tree(host: PoolHost): Promise<PropertyMap> {
    try {
      return await host.zfs.get([host.config.parentDataset], SNAPSHOT_PROPS, { depth: 2 });
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return new Map();
      throw err;
    }
  }

  /** Snapshots directly of the parent's children (`<parent>/<leaf>@<snap>`) in a tree result. */
  snapshotNames(host: PoolHost, all: PropertyMap): string[] {
    const prefix = host.config.parentDataset + "/";
    return [...all.keys()].filter((n) => n.startsWith(prefix) && n.includes("@") && !n.slice(prefix.length, n.indexOf("@")).includes("/"));
  }

  /** What `ref` names: one `zfs get` of the snapshot and its dataset. */
  async lookup(ref: SnapshotRef): Promise<SnapshotLookup> {
    const host = this.hosts.get(ref.poolHost);
    const name = `${ref.dataset}@${ref.snapshot}`;
    const all = await host.zfs.get([ref.dataset, name], SNAPSHOT_PROPS, { missingOk: true });
    return classifySnapshot(host.config.name, name, all);
  }

  /** The live CSI snapshot at `ref`, or undefined. */
  async get(ref: SnapshotRef): Promise<Snapshot | undefined> {
    const found = await this.lookup(ref);
    return found.state === "csi" ? found.snapshot : undefined;
  }

  /**
   * CreateSnapshot, idempotent by name across the host: one `zfs get -d 2` of the parent finds
   * the source volume and any snapshot already called `name` on any volume there; then
   * `zfs snapshot -o zcsi:csi-snapshot-name=<name> ...` and a `zfs get` for creation/size.
   * Same name on the same volume → that snapshot; on another volume, or a snapshot zcsi did not
   * take for CSI → ALREADY_EXISTS. Unknown source → NOT_FOUND.
   */
  async create(source: VolumeRef, name: string, params: SnapshotParameters): Promise<Snapshot> {
    const host = this.hosts.get(source.poolHost);
    const all = await this.tree(host);
    // Not the serving copy (a replica, fenced): NotFound here, and the caller looks for the volume's home.
    const sourceProps = all.get(source.dataset);
    if (sourceProps === undefined || !isServingCopy(sourceProps)) throw notFound(`source volume ${formatVolumeId(source)} does not exist`);
    for (const existing of this.snapshotNames(host, all).filter((n) => n.endsWith(`@${name}`))) {
      const found = classifySnapshot(host.config.name, existing, all);
      const onSource = existing === `${source.dataset}@${name}`;
      if (onSource && found.state === "csi") return found.snapshot;
      if (onSource && found.state === "deleted") {
        throw alreadyExists(`snapshot ${name} of ${formatVolumeId(source)} was deleted, but ZFS keeps it until the volumes restored from it are deleted; use another name`);
      }
      if (onSource) throw alreadyExists(`${existing} exists on ${host.config.name} and is not a CSI snapshot; use another name`);
      throw alreadyExists(`snapshot name ${name} is already used on ${host.config.name} by ${existing}`);
    }
    const zfsName = `${source.dataset}@${name}`;
    const props: Record<string, string> = {
      [PROP.snapshotName]: name,
      ...(params.volumeSnapshotName && params.volumeSnapshotNamespace && { [PROP.volumeSnapshot]: `${params.volumeSnapshotNamespace}/${params.volumeSnapshotName}` }),
      ...(params.volumeSnapshotContentName && { [PROP.volumeSnapshotContent]: params.volumeSnapshotContentName }),
    };
    try {
      await host.zfs.snapshot(zfsName, props);
    } catch (err) {
      // Another controller replica won the race; the retry will find what it made.
      if (isZcsiError(err, "AlreadyExists")) throw alreadyExists(`snapshot ${zfsName} was created concurrently on ${host.config.name}; retry`);
      throw err;
    }
    const made = await this.lookup({ poolHost: host.config.name, dataset: source.dataset, snapshot: name });
    if (made.state !== "csi") throw notFound(`snapshot ${zfsName} vanished right after it was created on ${host.config.name}`);
    this.logger.info({ op: "CreateSnapshot", snapshotId: made.snapshot.id }, "snapshot created");
    return made.snapshot;
  }

  /**
   * Every live CSI snapshot, optionally only those of one volume, ordered by id: one `zfs get`
   * per host (all hosts at once), or one for a single volume.
   */
  async list(filter: { source?: VolumeRef } = {}): Promise<Snapshot[]> {
    const source = filter.source;
    if (source) {
      const host = this.hosts.get(source.poolHost);
      let all: PropertyMap;
      try {
        all = await host.zfs.get([source.dataset], SNAPSHOT_PROPS, { depth: 1 });
      } catch (err) {
        if (isZcsiError(err, "NotFound")) return [];
        throw err;
      }
      return this.collect(host, all, (n) => n.startsWith(`${source.dataset}@`));
    }
    const perHost = await Promise.all(this.hosts.all().map(async (host) => this.collect(host, await this.tree(host), () => true)));
    return perHost.flat().sort(byId);
  }

  /**
   * ListSnapshots' filters: by snapshot id and/or source volume id (either "" for any). An id
   * that cannot name a zcsi snapshot or volume matches nothing (an empty list, not an error).
   */
  async listMatching(filter: { readonly snapshotId: string; readonly sourceVolumeId: string }): Promise<Snapshot[]> {
    const configs = this.hosts.configs;
    if (filter.snapshotId !== "") {
      let ref: SnapshotRef | undefined;
      try {
        ref = parseSnapshotId(filter.snapshotId, configs);
      } catch {
        ref = undefined;
      }
      const one = ref ? await this.get(ref) : undefined;
      return one && (filter.sourceVolumeId === "" || one.sourceVolumeId === filter.sourceVolumeId) ? [one] : [];
    }
    if (filter.sourceVolumeId !== "") {
      let source: VolumeRef | undefined;
      try {
        source = parseVolumeId(filter.sourceVolumeId, configs, "source_volume_id");
      } catch {
        source = undefined;
      }
      return source ? this.list({ source }) : [];
    }
    return this.list();
  }

  private collect(host: PoolHost, all: PropertyMap, keep: (name: string) => boolean): Snapshot[] {
    const out: Snapshot[] = [];
    for (const name of this.snapshotNames(host, all)) {
      if (!keep(name)) continue;
      const found = classifySnapshot(host.config.name, name, all);
      if (found.state === "csi" && !found.snapshot.scheduled) out.push(found.snapshot);
    }
    return out.sort(byId);
  }

  /**
   * DeleteSnapshot: `zfs destroy -d`. A snapshot without clones goes at once; one that restored
   * volumes (clones) or a hold still keep is marked `defer_destroy` and ZFS removes it when the
   * last clone or hold goes (zfs-destroy(8) -d). So deleting never breaks a clone and never
   * blocks: from then on the snapshot is invisible to CSI (ListSnapshots, GetSnapshot,
   * restores) and its name stays taken until ZFS frees it. Absent or already deleted → false
   * (idempotent); a scheduled snapshot is left to its retention → false; a snapshot zcsi did
   * not take for CSI (by hand, a clone's hidden source, not of a zcsi volume) →
   * FAILED_PRECONDITION, untouched.
   *
   * The ZFS CLI has no conditional destroy (`zfs destroy` filters on nothing, and cannot be
   * undone), and an id can name a snapshot zcsi must refuse (a pre-provisioned
   * VolumeSnapshotContent with deletionPolicy Delete, a scheduled snapshot, one made by hand
   * with a CSI-like name). So:
   * - OpenZFS: ONE command, a channel program that checks and destroys in one txg
   *   (delete-snapshot-program.ts): 1.08× the bare `zfs destroy -d` in the OpenZFS VM
   *   (bench/results/delete-snapshot.md), where lookup + destroy cost 1.85×;
   * - zfs-fuse (no `zfs program`), or a host that refuses channel programs: two, the lookup
   *   (one `zfs get` of the snapshot and its dataset: there? ours? deferred?) and the destroy.
   *   A retry of a finished delete is one command (the lookup finds nothing).
   */
  async delete(ref: SnapshotRef): Promise<boolean> {
    const host = this.hosts.get(ref.poolHost);
    if ((await host.zfs.capabilities()).channelPrograms) {
      try {
        return await this.deleteInOne(host, ref);
      } catch (err) {
        // Refused (no root, no sudo): remembered by the client; this and later deletes take the CLI path.
        if (!hasReason(err, "permissionDenied", "unsupported")) throw err;
        this.logger.info({ op: "DeleteSnapshot", poolHost: host.config.name, err: errorMessage(err) }, "channel program refused; deleting snapshots with zfs get + zfs destroy on this host");
      }
    }
    return this.decide(ref, await this.lookup(ref), () => destroyDeferred(host, `${ref.dataset}@${ref.snapshot}`));
  }

  /** The channel program's delete: its facts answer as the lookup's would (one source: classifySnapshot). */
  private async deleteInOne(host: PoolHost, ref: SnapshotRef): Promise<boolean> {
    const name = `${ref.dataset}@${ref.snapshot}`;
    const returned = await host.zfs.program(poolOf(ref.dataset), DELETE_SNAPSHOT_PROGRAM, deleteSnapshotProgramArgs(name));
    const outcome = parseDeleteSnapshotResult(name, returned);
    return this.decide(ref, classifySnapshot(host.config.name, name, outcome.all), async () => {
      if (outcome.destroyed) return true;
      // EBUSY: the snapshot is mounted under .zfs/snapshot, which only the CLI's destroy unmounts.
      if (outcome.error !== 0) {
        this.logger.info({ op: "DeleteSnapshot", snapshotId: formatSnapshotId(ref), errno: outcome.error }, "channel program could not destroy the snapshot; retrying with zfs destroy -d");
        return destroyDeferred(host, name);
      }
      throw internal(`${host.config.name}: the DeleteSnapshot channel program left ${name} although it is a CSI snapshot of a zcsi volume (its rule and classifySnapshot disagree)`);
    });
  }

  /** What a lookup means for DeleteSnapshot; `destroy` runs only for a live CSI snapshot zcsi took on request. */
  private async decide(ref: SnapshotRef, found: SnapshotLookup, destroy: () => Promise<boolean>): Promise<boolean> {
    if (found.state === "absent" || found.state === "deleted") return false;
    if (found.state === "other") throw failedPrecondition(`${found.name} on ${ref.poolHost} is not a CSI snapshot of a zcsi volume; refusing to destroy it`);
    if (found.snapshot.scheduled) {
      // The schedule owns it: its retention prunes it (never while a clone depends on it).
      this.logger.info({ op: "DeleteSnapshot", snapshotId: found.snapshot.id }, "scheduled snapshot left to its retention policy");
      return false;
    }
    return destroy();
  }
}

/** `zfs destroy -d`; true when it destroyed (or deferred), false when the snapshot was already gone. */
async function destroyDeferred(host: PoolHost, name: string): Promise<boolean> {
  try {
    await host.zfs.destroy(name, { deferred: true });
  } catch (err) {
    if (isZcsiError(err, "NotFound")) return false;
    throw err;
  }
  return true;
}
