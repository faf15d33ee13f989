import { invalidArgument } from "../errors.js";
import type { GroupControllerHandlers } from "../gen/csi/v1/GroupController.js";
import type { VolumeGroupSnapshot } from "../gen/csi/v1/VolumeGroupSnapshot.js";
import type { Logger } from "../log.js";
import { KeyedLocks } from "../util/locks.js";
import { GroupSnapshotService, parseGroupSnapshotId, type GroupSnapshot } from "../volumes/group-snapshots.js";
import { snapshotNameFromCsi } from "../volumes/ids.js";
import { toCsiSnapshot } from "./messages.js";
import { unary } from "./server.js";

function toCsiGroup(group: GroupSnapshot): VolumeGroupSnapshot {
  return {
    groupSnapshotId: group.id,
    snapshots: group.members.map(toCsiSnapshot),
    creationTime: { seconds: group.creationSeconds.toString(), nanos: 0 },
    // One `zfs snapshot` made them all; nothing is processed afterwards.
    readyToUse: true,
  };
}

/**
 * The CSI GroupController service (CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT): each call in the
 * controller's shape (validate, lock the group's name, look up, act). The work is in
 * volumes/group-snapshots.ts; docs/group-snapshots.md says what a user sees.
 */
export class GroupControllerService {
  /** Keyed by the group's snapshot name: a create and a delete of one group never overlap (ABORTED). */
  private readonly locks = new KeyedLocks();

  constructor(
    private readonly groups: GroupSnapshotService,
    private readonly logger: Logger,
  ) {}

  handlers(): GroupControllerHandlers {
    const log = this.logger;
    const byId = <R extends { groupSnapshotId: string }>(r: R) => ({ snapshotId: r.groupSnapshotId });
    return {
      GroupControllerGetCapabilities: unary(log, "GroupControllerGetCapabilities", async () => ({
        capabilities: [{ rpc: { type: "CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT" as const } }],
      })),
      CreateVolumeGroupSnapshot: unary(
        log,
        "CreateVolumeGroupSnapshot",
        async (r) => {
          const name = snapshotNameFromCsi(r.name);
          return this.locks.run(`group:${name}`, "CreateVolumeGroupSnapshot", async () => ({ groupSnapshot: toCsiGroup(await this.groups.create(r.sourceVolumeIds, name, r.parameters)) }));
        },
        (r) => ({ name: r.name }),
      ),
      DeleteVolumeGroupSnapshot: unary(
        log,
        "DeleteVolumeGroupSnapshot",
        async (r) => {
          let ref;
          try {
            ref = parseGroupSnapshotId(r.groupSnapshotId, this.groups.hosts);
          } catch (err) {
            if (r.groupSnapshotId === "") throw err;
            // CSI spec: a group snapshot that does not exist is already deleted.
            if (r.snapshotIds.length === 0) throw invalidArgument("snapshot_ids is required");
            log.info({ op: "DeleteVolumeGroupSnapshot", snapshotId: r.groupSnapshotId }, "group snapshot id cannot name a zcsi group; nothing to delete");
            return {};
          }
          await this.locks.run(`group:${ref.name}`, "DeleteVolumeGroupSnapshot", () => this.groups.delete(ref, r.snapshotIds));
          return {};
        },
        byId,
      ),
      GetVolumeGroupSnapshot: unary(
        log,
        "GetVolumeGroupSnapshot",
        async (r) => {
          const ref = parseGroupSnapshotId(r.groupSnapshotId, this.groups.hosts);
          return { groupSnapshot: toCsiGroup(await this.groups.describe(ref, r.snapshotIds)) };
        },
        byId,
      ),
    };
  }
}
