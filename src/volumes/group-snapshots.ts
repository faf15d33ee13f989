import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import type { PropertyMap } from "../zfs/parse.js";
import { destroyNonMembers, groupMembersValue, snapshotTogether } from "./atomic-snapshot.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import { leafFromName, parseVolumeId } from "./ids.js";
import { PROP } from "./properties.js";
import type { VolumeService } from "./service.js";
import { classifySnapshot, type Snapshot, type SnapshotService } from "./snapshots.js";

/**
 * A group snapshot: one ZFS snapshot name taken on several volumes of one pool host in one
 * atomic `zfs snapshot` (atomic-snapshot.ts). Each member is an ordinary CSI snapshot
 * (`<host>:<dataset>@<name>`, restorable, listed) that also carries zcsi:group-members. The
 * group's id is `<poolHost>:<parentDataset>@<name>`: snapshot names are unique per pool host,
 * so host and name find the members in one `zfs get` of the parent's tree. No other record.
 */
export interface GroupSnapshot {
  readonly id: string;
  readonly poolHost: string;
  readonly name: string;
  /** Ordered by id. */
  readonly members: readonly Snapshot[];
  readonly creationSeconds: bigint;
}

export interface GroupRef {
  readonly poolHost: string;
  readonly name: string;
}

/** CO metadata keys the external-snapshotter adds (--extra-create-metadata); nothing else is a parameter. */
const SIDECAR_PREFIX = "csi.storage.k8s.io/";

/** A group id as a ref; malformed or not ours → NotFound (it cannot name a group of ours). */
export function parseGroupSnapshotId(id: string, hosts: PoolHosts, field = "group_snapshot_id"): GroupRef {
  if (id === "") throw invalidArgument(`${field} is required`);
  const colon = id.indexOf(":");
  const at = id.lastIndexOf("@");
  const poolHost = id.slice(0, Math.max(colon, 0));
  const host = colon > 0 ? hosts.configs.find((h) => h.name === poolHost) : undefined;
  if (!host || at < 0 || id.slice(colon + 1, at) !== host.parentDataset) throw notFound(`group snapshot ${JSON.stringify(id)} does not exist (not <poolHost>:<parentDataset>@<name> of a configured host)`);
  try {
    return { poolHost, name: leafFromName(id.slice(at + 1)) };
  } catch {
    throw notFound(`group snapshot ${JSON.stringify(id)} does not exist (bad name)`);
  }
}

export class GroupSnapshotService {
  constructor(
    readonly hosts: PoolHosts,
    private readonly volumes: VolumeService,
    private readonly snapshots: SnapshotService,
    private readonly logger: Logger,
  ) {}

  private groupIn(host: PoolHost, all: PropertyMap, name: string): GroupSnapshot | undefined {
    const id = `${host.config.name}:${host.config.parentDataset}@${name}`;
    const members: Snapshot[] = [];
    for (const n of this.snapshots.snapshotNames(host, all)) {
      if (!n.endsWith(`@${name}`)) continue;
      const found = classifySnapshot(host.config.name, n, all);
      if (found.state === "csi" && found.snapshot.groupSnapshotId === id) members.push(found.snapshot);
    }
    if (members.length === 0) return undefined;
    members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const creationSeconds = members.reduce((min, m) => (m.creationSeconds < min ? m.creationSeconds : min), members[0]!.creationSeconds);
    return { id, poolHost: host.config.name, name, members, creationSeconds };
  }

  /** The group at `ref`, or undefined when none of its members is left. One `zfs get`. */
  async get(ref: GroupRef): Promise<GroupSnapshot | undefined> {
    const host = this.hosts.get(ref.poolHost);
    return this.groupIn(host, await this.snapshots.tree(host), ref.name);
  }

  /**
   * CreateVolumeGroupSnapshot. Every source must be a volume (NotFound otherwise), all served
   * from one pool host (FAILED_PRECONDITION naming each volume and where it lives: the CSI
   * spec's "cannot snapshot multiple volumes together"; never a silently non-atomic group).
   * The same name on the same volumes → that group; on other volumes, or a name taken by any
   * other snapshot on the host → ALREADY_EXISTS. Cost: one `zfs get` per source, one tree
   * lookup, the snapshot (atomic-snapshot.ts), one tree lookup.
   */
  async create(sourceVolumeIds: readonly string[], name: string, parameters: Readonly<Record<string, string>>): Promise<GroupSnapshot> {
    if (sourceVolumeIds.length === 0) throw invalidArgument("source_volume_ids is required");
    if (new Set(sourceVolumeIds).size !== sourceVolumeIds.length) throw invalidArgument(`source_volume_ids names a volume twice: ${sourceVolumeIds.join(", ")}`);
    for (const key of Object.keys(parameters)) {
      if (!key.startsWith(SIDECAR_PREFIX)) throw invalidArgument(`unknown VolumeGroupSnapshotClass parameter ${JSON.stringify(key)}; zcsi accepts none besides the csi.storage.k8s.io/* keys the snapshotter adds`);
    }
    const refs = sourceVolumeIds.map((id) => parseVolumeId(id, this.hosts.configs, "source_volume_ids"));
    const volumes = await Promise.all(refs.map((ref) => this.volumes.get(ref)));
    const missing = sourceVolumeIds.filter((_, i) => volumes[i] === undefined);
    if (missing.length > 0) throw notFound(`source volume(s) ${missing.join(", ")} do not exist`);
    const served = volumes.map((v) => v!);
    const where = (i: number): string => {
      const host = this.hosts.get(served[i]!.ref.poolHost).config;
      return `${sourceVolumeIds[i]} on pool host ${host.name} (pool ${host.parentDataset.split("/")[0]})`;
    };
    if (new Set(served.map((v) => v.ref.poolHost)).size > 1) {
      throw failedPrecondition(
        `volumes cannot be snapshotted together: a group snapshot is one atomic zfs snapshot, so its volumes must share one pool on one pool host; ${served.map((_, i) => where(i)).join("; ")}`,
      );
    }
    const host = this.hosts.get(served[0]!.ref.poolHost);
    const all = await this.snapshots.tree(host);
    const existing = this.groupIn(host, all, name);
    if (existing) {
      const have = existing.members.map((m) => m.sourceVolumeId).sort();
      const want = served.map((v) => v.id).sort();
      if (have.join("\n") !== want.join("\n")) throw alreadyExists(`group snapshot ${name} exists with volumes ${have.join(", ")}; this request asks for ${want.join(", ")}`);
      // zfs-fuse: a crash between the recursive snapshot and its cleanup left the parent's mark.
      if (all.has(`${host.config.parentDataset}@${name}`)) await destroyNonMembers(host, served.map((v) => v.ref.dataset), name, this.logger);
      return existing;
    }
    const members = served.map((v) => v.ref.dataset);
    // Snapshot names are unique per pool host, as for CreateSnapshot: the group id names host and name.
    const taken = this.snapshots.snapshotNames(host, all).find((n) => n.endsWith(`@${name}`));
    if (taken) throw alreadyExists(`snapshot name ${name} is already used on ${host.config.name} by ${taken}`);
    const props: Record<string, string> = { [PROP.snapshotName]: name };
    const ns = parameters["csi.storage.k8s.io/volumegroupsnapshot/namespace"];
    const vgs = parameters["csi.storage.k8s.io/volumegroupsnapshot/name"];
    if (ns && vgs && /^[a-z0-9.-]{1,253}$/.test(ns + vgs)) props[PROP.volumeSnapshot] = `${ns}/${vgs}`;
    await snapshotTogether(host, members, name, props, this.logger);
    const made = await this.get({ poolHost: host.config.name, name });
    if (!made || made.members.length !== members.length) throw notFound(`group snapshot ${name} on ${host.config.name} is incomplete right after it was taken (members ${groupMembersValue(members)})`);
    this.logger.info({ op: "CreateVolumeGroupSnapshot", groupSnapshotId: made.id, members: made.members.length }, "group snapshot created");
    return made;
  }

  /**
   * CSI spec, snapshot_ids of Delete/GetVolumeGroupSnapshot: a mismatch is INVALID_ARGUMENT.
   * A mismatch is a live member the list leaves out, or a listed id that is a live snapshot
   * outside the group; a listed member already deleted is no mismatch (a retried delete).
   */
  checkSnapshotIds(group: GroupSnapshot, snapshotIds: readonly string[], live: (id: string) => boolean): void {
    if (snapshotIds.length === 0) throw invalidArgument("snapshot_ids is required");
    const ids = new Set(group.members.map((m) => m.id));
    const left = group.members.filter((m) => !snapshotIds.includes(m.id)).map((m) => m.id);
    const strangers = snapshotIds.filter((id) => !ids.has(id) && live(id));
    if (left.length > 0 || strangers.length > 0) {
      throw invalidArgument(
        `snapshot_ids do not match group snapshot ${group.id} (members ${[...ids].join(", ")})${left.length ? `: missing ${left.join(", ")}` : ""}${strangers.length ? `: not members ${strangers.join(", ")}` : ""}`,
      );
    }
  }

  /** A listed id that is a live CSI snapshot outside the group, seen in the same tree lookup. */
  private async liveIds(host: PoolHost): Promise<{ group: (name: string) => GroupSnapshot | undefined; live: (id: string) => boolean }> {
    const all = await this.snapshots.tree(host);
    const live = new Set(this.snapshots.snapshotNames(host, all).flatMap((n) => {
      const found = classifySnapshot(host.config.name, n, all);
      return found.state === "csi" ? [found.snapshot.id] : [];
    }));
    return { group: (name) => this.groupIn(host, all, name), live: (id) => live.has(id) };
  }

  /** GetVolumeGroupSnapshot: NotFound when no member is left. */
  async describe(ref: GroupRef, snapshotIds: readonly string[]): Promise<GroupSnapshot> {
    const { group, live } = await this.liveIds(this.hosts.get(ref.poolHost));
    const found = group(ref.name);
    if (!found) throw notFound(`group snapshot ${ref.poolHost}:…@${ref.name} does not exist`);
    this.checkSnapshotIds(found, snapshotIds, live);
    return found;
  }

  /**
   * DeleteVolumeGroupSnapshot: every member as DeleteSnapshot deletes one (`zfs destroy -d`: a
   * member that restored volumes still depend on disappears for CSI now and from ZFS with its
   * last clone). A group with no member left is already deleted: OK.
   */
  async delete(ref: GroupRef, snapshotIds: readonly string[]): Promise<void> {
    const { group, live } = await this.liveIds(this.hosts.get(ref.poolHost));
    const found = group(ref.name);
    if (!found) {
      if (snapshotIds.length === 0) throw invalidArgument("snapshot_ids is required");
      return;
    }
    this.checkSnapshotIds(found, snapshotIds, live);
    for (const member of found.members) await this.snapshots.delete(member.ref);
    this.logger.info({ op: "DeleteVolumeGroupSnapshot", groupSnapshotId: found.id, members: found.members.length }, "group snapshot deleted");
  }
}
