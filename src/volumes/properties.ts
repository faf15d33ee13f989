/**
 * Metadata lives with the data: zcsi's user properties on each dataset it creates
 * (zfsprops(7) "User Properties": `module:property`, inherited like native ones, so each is
 * read with its source and only a `local` value counts).
 */
export const PROP = {
  /** The CSI name the volume was created for; its presence marks a dataset as zcsi's. */
  csiName: "zcsi:csi-name",
  /** `creating` until every creation step is done, then `ready`. */
  state: "zcsi:state",
  /**
   * Normalised StorageClass parameters, compared on a retried CreateVolume. Also says the
   * volume's size mode (`sizeMode`, absent for the default `refquota`; size-modes.ts).
   */
  parameters: "zcsi:parameters",
  /**
   * A thin volume's size (sizeMode `thin`): the bytes its PVC asked for, as a decimal integer.
   * No ZFS limit enforces it; it is what CSI reports as the volume's capacity.
   */
  requestedSize: "zcsi:requested-size",
  pvc: "zcsi:pvc",
  pv: "zcsi:pv",
  /**
   * Where a volume's first content came from: `snapshot:<snapshot_id>` or `volume:<volume_id>`
   * (CSI VolumeContentSource). Echoed in CreateVolume and compared on a retried one.
   */
  contentSource: "zcsi:content-source",
  /**
   * Why CreateVolume put the volume on its host (volumes/placement.ts): `pod-node`,
   * `storage-class`, `most-free` or `content-source`, with the reason the pod's node was
   * passed over in parentheses. Echoed in the volume context (`kubectl describe pv`).
   */
  placement: "zcsi:placement",
  /**
   * On a snapshot: the CSI snapshot name it was taken for (set with `zfs snapshot -o`). Marks a
   * ZFS snapshot as a CSI snapshot; scheduled (`zcsi-auto-*`), hidden clone sources
   * (`zcsi-clone-*`) and snapshots users take by hand do not carry it, and ListSnapshots shows
   * only snapshots that do. A snapshot inherits its dataset's user properties, so only a
   * `local` value counts here too.
   */
  snapshotName: "zcsi:csi-snapshot-name",
  /** On a snapshot: `<namespace>/<name>` of the VolumeSnapshot (external-snapshotter --extra-create-metadata). */
  volumeSnapshot: "zcsi:volumesnapshot",
  /** On a snapshot: the VolumeSnapshotContent name. */
  volumeSnapshotContent: "zcsi:volumesnapshotcontent",
  /**
   * On each member of a group snapshot (CreateVolumeGroupSnapshot, a scheduled snapshotGroup):
   * the members' dataset leaves, sorted, comma-separated. Its presence makes the snapshot a group
   * member; a snapshot of the same name on a dataset not in the list is not one (zfs-fuse's
   * `zfs snapshot -r` marks every dataset below the parent before the non-members' are destroyed).
   */
  groupMembers: "zcsi:group-members",
  /** Snapshot schedule in normal form (volumes/schedule.ts); set at creation, changed only by `zfs set`. */
  snapshotSchedule: "zcsi:snapshot-schedule",
  /** StorageClass snapshotGroup: volumes of one host with the same value are snapshotted together by the schedule. */
  snapshotGroup: "zcsi:snapshot-group",
  /** On a snapshot: marks it as taken by the snapshotter (value: the schedule it was taken under). */
  autoSnapshot: "zcsi:auto-snapshot",
  /** Replication targets of the volume; when set, unreplicated automatic snapshots are never pruned. */
  replicateTo: "zcsi:replicate-to",
  /**
   * Time between replication runs of the volume, a duration in normal form (`15m`, `1h30m`);
   * set with zcsi:replicate-to at creation (StorageClass replicationInterval, default 15m).
   */
  replicationInterval: "zcsi:replication-interval",
  /**
   * Bandwidth limit of each replication run of the volume, bytes per second (decimal integer);
   * set with zcsi:replicate-to at creation when the StorageClass has replicationBandwidth.
   */
  replicationBandwidth: "zcsi:replication-bandwidth",
  /** Set by the replicator: guid (or name) of the newest snapshot every target has received. */
  replicatedThrough: "zcsi:replicated-through",
  /**
   * On a replica (target) dataset: `<source pool host>:<source dataset>`. Set by the
   * replicator's first receive; it receives only into datasets carrying its source's mark.
   * (Per job, the source dataset also carries `zcsi:repl.<job id>` = `<base guid> <job id>`:
   * the snapshot that job's target last confirmed; replication/engine.ts.)
   */
  replicaOf: "zcsi:replica-of",
  /**
   * On every copy of a volume: the volume's id (its identity; the birth host and dataset, which
   * never change). Set by CreateVolume on the primary and by the replicator on each replica.
   */
  volume: "zcsi:volume",
  /**
   * `primary` or `replica` (ROLES). The home of a volume is the primary with the highest
   * zcsi:epoch among reachable copies (volumes/home.ts). A volume created before roles existed
   * carries none: it is the primary, epoch 1, on its birth host.
   */
  role: "zcsi:role",
  /** Decimal integer, 1 at creation, incremented by each promotion; a replica carries its source's. */
  epoch: "zcsi:epoch",
  /**
   * Set (with readonly=on) on a stale primary when it is fenced: why, e.g. `superseded by epoch 2
   * on bob`. A fenced copy is never the home, never published, never a replication source, and
   * never destroyed automatically; an operator's resync turns it into a replica.
   */
  fenced: "zcsi:fenced",
  /**
   * On the home copy while a planned move (`zcsi migrate`) holds its attaches:
   * `<target host>@<ISO time the attaches were blocked>`. ControllerPublishVolume answers
   * UNAVAILABLE while the home carries it (the external-attacher retries), so the block is in
   * ZFS with the data and outlives a killed CLI; the move removes it when it is done or undone.
   */
  moving: "zcsi:moving",
  /**
   * On a replica: the volume's metadata (CARRIED_PROPS of its source, as a JSON object of
   * property → value), set by the replicator at each receive, so that a promotion can make the
   * replica the volume even when the old home is gone (mobility/promote.ts). One property, so
   * nothing that looks for volumes (zcsi:csi-name, schedules, replicate-to) mistakes a replica
   * for one.
   */
  meta: "zcsi:meta",
  /**
   * On data a resync kept aside (`<leaf>-diverged-<time>`, readonly): JSON {volume, epoch,
   * home, at}: the stale copy's writes that never reached the new home. Listed by `zcsi status`,
   * never destroyed by zcsi.
   */
  diverged: "zcsi:diverged",
  /**
   * On a copy promoted by a failover: JSON {from, epoch, at, lastSnapshot, lastSnapshotAt}, the
   * data-loss window (writes on the old home after lastSnapshotAt are not here). Shown by `zcsi status`.
   */
  failedOver: "zcsi:failed-over",
  /**
   * On a dataset zcsi did not create but serves as a PV because the operator adopted it
   * (`zcsi adopt`, volumes/adopted.ts): `read-write` or `read-only`. The controller serves an
   * adopted id only while its dataset carries the mark, and never destroys such a dataset.
   */
  adopted: "zcsi:adopted",
  /**
   * On a volume an operator rolled back (`zcsi rollback`): `<generation> <snapshot guid>
   * <snapshot>`, the request that its replicas follow (volumes/rollback.ts). The replicator rolls
   * each target back once per generation, the one time it rolls a target back.
   */
  rollback: "zcsi:rollback",
  /** On a replica: the zcsi:rollback generation of its source it has followed. */
  rollbackFollowed: "zcsi:rollback-followed",
  /** On a `--keep-current` copy: JSON {volume, snapshot, at}: the volume's data before a rollback. */
  preRollback: "zcsi:pre-rollback",
  /**
   * The last move that ended on this copy (volumes/moves.ts): JSON {kind, outcome, at, from, to,
   * epoch, downtimeSeconds}; set by zcsi migrate, failover and resync, counted by the replicator's
   * move metrics (a one-shot CLI has no /metrics to scrape).
   */
  lastMove: "zcsi:last-move",
} as const;

/**
 * What a copy needs to be the volume for every controller call (CreateVolume's properties):
 * carried to replicas in zcsi:meta, set on a copy when it is promoted.
 */
export const CARRIED_PROPS = [
  "zcsi:csi-name",
  "zcsi:parameters",
  "zcsi:pvc",
  "zcsi:pv",
  "zcsi:content-source",
  "zcsi:snapshot-schedule",
  "zcsi:replicate-to",
  "zcsi:replication-interval",
  "zcsi:replication-bandwidth",
  "zcsi:placement",
  // The size, as its mode sets it (size-modes.ts SIZE_PROPERTIES, in the order zfs-fuse accepts:
  // refquota before refreservation, a reserved volume's reservation first): a replica is
  // received without properties, and a promoted copy without them would be a volume with no
  // limit and no reservation.
  "zcsi:requested-size",
  "reservation",
  "refquota",
  "quota",
  "refreservation",
] as const;

export const ROLES = ["primary", "replica"] as const;
export type Role = (typeof ROLES)[number];
/** The epoch of a volume when it is created, and of any copy that carries none. */
export const FIRST_EPOCH = 1;

export type VolumeState = "creating" | "ready";

/**
 * Names zcsi keeps for itself. CSI snapshot names may not start with `zcsi-` (INVALID_ARGUMENT),
 * and volume names may not start with RECEIVE_PREFIX, so no CSI object can collide with:
 * - `<volume>@zcsi-clone-<target leaf>`: the snapshot a PVC-to-PVC clone is made from;
 * - `<volume>@zcsi-auto-<...>`: snapshots of the snapshot scheduler;
 * - `<parent>/zcsi-recv-<leaf>`: where a copy-mode restore receives before it becomes the volume.
 */
export const RESERVED_PREFIX = "zcsi-";
export const CLONE_SNAPSHOT_PREFIX = "zcsi-clone-";
export const AUTO_SNAPSHOT_PREFIX = "zcsi-auto-";
export const RECEIVE_PREFIX = "zcsi-recv-";
/**
 * `<target parentDataset>/zcsi-adopted-<readable>-<hash>`: the replica of an adopted dataset
 * (adopted-ids.ts adoptedReplicaLeaf). CreateVolume refuses names with this prefix, so no
 * volume (or a volume's replica, which has the volume's leaf) can ever take a replica's name.
 */
export const ADOPTED_REPLICA_PREFIX = "zcsi-adopted-";
/** `<volume>@zcsi-repl-<...>`: snapshots of the replicator (replication/engine.ts). */
export const REPLICATION_SNAPSHOT_PREFIX = "zcsi-repl-";
