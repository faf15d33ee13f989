import { invalidArgument, isZcsiError, alreadyExists, notFound, outOfRange } from "../errors.js";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { ControllerHandlers } from "../gen/csi/v1/Controller.js";
import type { CreateVolumeRequest__Output } from "../gen/csi/v1/CreateVolumeRequest.js";
import type { CreateVolumeResponse } from "../gen/csi/v1/CreateVolumeResponse.js";
import type { DeleteVolumeRequest__Output } from "../gen/csi/v1/DeleteVolumeRequest.js";
import type { ValidateVolumeCapabilitiesRequest__Output } from "../gen/csi/v1/ValidateVolumeCapabilitiesRequest.js";
import type { ValidateVolumeCapabilitiesResponse } from "../gen/csi/v1/ValidateVolumeCapabilitiesResponse.js";
import type { ListVolumesRequest__Output } from "../gen/csi/v1/ListVolumesRequest.js";
import type { ListVolumesResponse } from "../gen/csi/v1/ListVolumesResponse.js";
import type { GetCapacityRequest__Output } from "../gen/csi/v1/GetCapacityRequest.js";
import type { GetCapacityResponse } from "../gen/csi/v1/GetCapacityResponse.js";
import type { ControllerGetCapabilitiesResponse } from "../gen/csi/v1/ControllerGetCapabilitiesResponse.js";
import type { ControllerExpandVolumeRequest__Output } from "../gen/csi/v1/ControllerExpandVolumeRequest.js";
import type { ControllerExpandVolumeResponse } from "../gen/csi/v1/ControllerExpandVolumeResponse.js";
import type { ControllerGetVolumeRequest__Output } from "../gen/csi/v1/ControllerGetVolumeRequest.js";
import type { ControllerGetVolumeResponse } from "../gen/csi/v1/ControllerGetVolumeResponse.js";
import type { VolumeCondition } from "../gen/csi/v1/VolumeCondition.js";
import type { ControllerServiceCapability } from "../gen/csi/v1/ControllerServiceCapability.js";
import type { CreateSnapshotRequest__Output } from "../gen/csi/v1/CreateSnapshotRequest.js";
import type { CreateSnapshotResponse } from "../gen/csi/v1/CreateSnapshotResponse.js";
import type { DeleteSnapshotRequest__Output } from "../gen/csi/v1/DeleteSnapshotRequest.js";
import type { ListSnapshotsRequest__Output } from "../gen/csi/v1/ListSnapshotsRequest.js";
import type { ListSnapshotsResponse } from "../gen/csi/v1/ListSnapshotsResponse.js";
import type { GetSnapshotRequest__Output } from "../gen/csi/v1/GetSnapshotRequest.js";
import type { GetSnapshotResponse } from "../gen/csi/v1/GetSnapshotResponse.js";
import type { ControllerModifyVolumeRequest__Output } from "../gen/csi/v1/ControllerModifyVolumeRequest.js";
import type { ControllerModifyVolumeResponse } from "../gen/csi/v1/ControllerModifyVolumeResponse.js";
import { MIN_VOLUME_BYTES, capacityFits, resolveCapacity, resolveRestoreCapacity } from "../volumes/capacity.js";
import { parseSnapshotId, parseVolumeId, snapshotNameFromCsi, volumeLeafFromName } from "../volumes/ids.js";
import { parseSnapshotParameters, parseVolumeParameters, type VolumeParameters } from "../volumes/parameters.js";
import { largestVolume } from "../volumes/size-modes.js";
import { mutableKeys, withMutableParameters } from "../volumes/modify.js";
import { HEALTH_REUSE_MS } from "../volumes/hosts.js";
import type { Volume, VolumeListing, VolumeService } from "../volumes/service.js";
import type { Snapshot, SnapshotService } from "../volumes/snapshots.js";
import { KeyedLocks } from "../util/locks.js";
import { capabilityProblem, requireCapabilities } from "./capabilities.js";
import { Publisher } from "./publish.js";
import { unary } from "./server.js";
import { requestedSource, toCsiSnapshot, toCsiVolume, volumeContext } from "./messages.js";
import { resolveContentSource } from "./content-source.js";
import { preferredNode } from "./topology.js";
import { ListingCache } from "./listing-cache.js";
import { adoptedResizeRefused, AdoptedVolumes, isAdoptedId, keepAdopted, modifyAdopted, parseAdoptedId } from "../volumes/adopted.js";
import { AdoptedSnapshots } from "../volumes/adopted-snapshots.js";

const CAPABILITIES = [
  "CREATE_DELETE_VOLUME",
  "LIST_VOLUMES",
  "GET_CAPACITY",
  "EXPAND_VOLUME",
  "GET_VOLUME",
  "VOLUME_CONDITION",
  "SINGLE_NODE_MULTI_WRITER",
  "CREATE_DELETE_SNAPSHOT",
  "LIST_SNAPSHOTS",
  "CLONE_VOLUME",
  // The serving host is decided at attach time (publish.ts); readonly is honoured by the node,
  // which publishes every pod target of a readonly publication read-only.
  "PUBLISH_UNPUBLISH_VOLUME",
  "PUBLISH_READONLY",
  // ControllerModifyVolume and CreateVolume's mutable_parameters (volumes/modify.ts).
  "MODIFY_VOLUME",
] as const;

/** Snapshot locks share the map with volume leaves; the prefix keeps `pvc-1` the volume and `pvc-1` the snapshot apart. */
function snapshotLockKey(name: string): string {
  return `snapshot:${name}`;
}

export class ControllerService {
  private readonly locks = new KeyedLocks();
  private readonly publisher: Publisher;
  /** A paged walk lists once: the later pages come from the first page's listing (listing-cache.ts). */
  private readonly volumeListings = new ListingCache<VolumeListing, Volume>("volumes", (l) => l.volumes, (v) => v.id);
  private readonly snapshotListings = new ListingCache<Snapshot[], Snapshot>("snapshots", (l) => l, (s) => s.id);
  /** Datasets the operator adopted (`zcsi adopt`): served, never destroyed or resized. */
  private readonly adopted: AdoptedVolumes;
  private readonly adoptedSnapshots: AdoptedSnapshots;

  constructor(
    private readonly config: Config,
    private readonly volumes: VolumeService,
    private readonly snapshots: SnapshotService,
    private readonly logger: Logger,
  ) {
    // Publish shares the per-volume locks: a publish during a delete or expand is ABORTED.
    this.adopted = new AdoptedVolumes(volumes.hosts);
    this.adoptedSnapshots = new AdoptedSnapshots(volumes.hosts, logger);
    this.publisher = new Publisher(volumes, this.locks, logger, this.adopted);
  }

  /**
   * CSI spec, CreateVolume: same name + compatible request (capacity, parameters, content
   * source) → the same volume; incompatible → ALREADY_EXISTS. With volume_content_source the
   * volume is a restore of a CSI snapshot or a clone of a volume (see VolumeService.create).
   */
  async createVolume(req: CreateVolumeRequest__Output): Promise<CreateVolumeResponse> {
    const leaf = volumeLeafFromName(req.name);
    requireCapabilities(req.volumeCapabilities);
    // mutable_parameters take precedence over parameters (CSI spec); stored and compared as one set.
    const params = parseVolumeParameters(withMutableParameters(req.parameters, req.mutableParameters), this.volumes.hosts.names);
    const wanted = requestedSource(req.volumeContentSource);
    // Validates the range before any command; a source's own size is checked once it is known.
    const capacityBytes = resolveCapacity(req.capacityRange, this.config.defaultCapacityBytes);
    return this.locks.run(leaf, "CreateVolume", async () => {
      const placement = await this.volumes.lookup(leaf);
      const existing = placement.existing;
      if (existing) {
        if (existing.csiName !== req.name) throw alreadyExists(`dataset ${existing.ref.dataset} belongs to volume ${JSON.stringify(existing.csiName)}`);
        if (!capacityFits(existing.capacityBytes, req.capacityRange)) {
          throw alreadyExists(`volume ${req.name} exists with ${existing.capacityBytes} bytes, which does not satisfy the requested capacity_range`);
        }
        if (existing.parameters !== params.canonical) {
          throw alreadyExists(`volume ${req.name} exists with parameters ${existing.parameters}; this request asks for ${params.canonical}`);
        }
        if (existing.contentSource !== wanted?.key) {
          throw alreadyExists(`volume ${req.name} exists with content source ${existing.contentSource ?? "none"}; this request asks for ${wanted?.key ?? "none"}`);
        }
        return { volume: toCsiVolume(await this.volumes.settle(existing, params), this.config.driverName) };
      }
      if (!wanted) {
        const node = preferredNode(req.accessibilityRequirements, this.config.driverName);
        const spec = { csiName: req.name, leaf, capacityBytes, params, ...(node !== undefined && { preferredNode: node }) };
        return { volume: toCsiVolume(await this.volumes.create(spec, placement), this.config.driverName) };
      }
      const source = await resolveContentSource({ hosts: this.volumes.hosts.configs, volumes: this.volumes, snapshots: this.snapshots, adopted: this.adopted, adoptedSnapshots: this.adoptedSnapshots }, wanted, params);
      const size = resolveRestoreCapacity(
        req.capacityRange,
        source.kind === "snapshot" ? this.config.defaultCapacityBytes : source.volume.capacityBytes,
        source.kind === "snapshot" ? source.snapshot.sizeBytes : source.volume.usedBytes,
        source.kind === "snapshot" ? `snapshot ${source.snapshot.id}` : `what volume ${source.volume.id} holds`,
      );
      return { volume: toCsiVolume(await this.volumes.create({ csiName: req.name, leaf, capacityBytes: size, params, source }), this.config.driverName) };
    });
  }

  /**
   * CSI spec, CreateSnapshot: same name + same source → the same snapshot; the name on another
   * source → ALREADY_EXISTS; unknown source → NOT_FOUND. Names are unique per pool host.
   */
  async createSnapshot(req: CreateSnapshotRequest__Output): Promise<CreateSnapshotResponse> {
    const name = snapshotNameFromCsi(req.name);
    if (req.sourceVolumeId === "") throw invalidArgument("source_volume_id is required");
    const params = parseSnapshotParameters(req.parameters);
    if (isAdoptedId(req.sourceVolumeId)) return this.locks.run(snapshotLockKey(name), "CreateSnapshot", async () => ({ snapshot: toCsiSnapshot(await this.adoptedSnapshots.create(req.sourceVolumeId, req.name, params)) }));
    const source = parseVolumeId(req.sourceVolumeId, this.volumes.hosts.configs, "source_volume_id");
    return this.locks.run(snapshotLockKey(name), "CreateSnapshot", async () => {
      try {
        return { snapshot: toCsiSnapshot(await this.snapshots.create(source, name, params)) };
      } catch (err) {
        // The birth copy does not serve the volume (moved, its host down): snapshot the home copy.
        if (!isZcsiError(err, "NotFound") && !isZcsiError(err, "Unavailable")) throw err;
        const volume = await this.volumes.get(source);
        if (!volume || (volume.ref.poolHost === source.poolHost && volume.ref.dataset === source.dataset)) throw err;
        return { snapshot: toCsiSnapshot(await this.snapshots.create(volume.ref, name, params)) };
      }
    });
  }

  /**
   * CSI spec, DeleteSnapshot: an unknown snapshot is already deleted: OK. One that restored
   * volumes still depend on is destroyed with `zfs destroy -d` (SnapshotService.delete): it
   * disappears for CSI at once and from ZFS when its last clone goes.
   */
  async deleteSnapshot(req: DeleteSnapshotRequest__Output): Promise<Record<string, never>> {
    if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
    if (isAdoptedId(req.snapshotId)) return this.locks.run(snapshotLockKey(req.snapshotId.slice(req.snapshotId.lastIndexOf("@") + 1)), "DeleteSnapshot", () => this.adoptedSnapshots.delete(req.snapshotId)).then(() => ({}));
    let ref;
    try {
      ref = parseSnapshotId(req.snapshotId, this.volumes.hosts.configs);
    } catch {
      this.logger.info({ op: "DeleteSnapshot", snapshotId: req.snapshotId }, "snapshot id cannot name a zcsi snapshot; nothing to delete");
      return {};
    }
    await this.locks.run(snapshotLockKey(ref.snapshot), "DeleteSnapshot", () => this.snapshots.delete(ref));
    return {};
  }

  /**
   * CSI spec, ListSnapshots: filtered by snapshot_id and/or source_volume_id (an id that cannot
   * exist gives an empty list, not an error), paged in id order. One `zfs get` per walk (per
   * host when unfiltered), whatever the number of snapshots or pages: the later pages come
   * from the first page's listing while it is held (listing-cache.ts), else ABORTED.
   */
  async listSnapshots(req: ListSnapshotsRequest__Output): Promise<ListSnapshotsResponse> {
    if (req.maxEntries < 0) throw invalidArgument("max_entries must not be negative");
    const filter = { snapshotId: req.snapshotId, sourceVolumeId: req.sourceVolumeId };
    const { page: entries, nextToken } = await this.snapshotListings.page(req, () => this.snapshots.listMatching(filter), JSON.stringify(filter));
    return { entries: entries.map((s) => ({ snapshot: toCsiSnapshot(s) })), nextToken };
  }

  /** CSI v1.12 GetSnapshot (alpha): one live CSI snapshot by id, else NOT_FOUND. */
  async getSnapshot(req: GetSnapshotRequest__Output): Promise<GetSnapshotResponse> {
    if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
    const snapshot = isAdoptedId(req.snapshotId) ? await this.adoptedSnapshots.get(req.snapshotId) : await this.snapshots.get(parseSnapshotId(req.snapshotId, this.volumes.hosts.configs));
    if (!snapshot) throw notFound(`snapshot ${req.snapshotId} does not exist`);
    return { snapshot: toCsiSnapshot(snapshot) };
  }

  /** CSI spec, DeleteVolume: a volume that does not exist (or cannot be ours) is already deleted: OK. */
  async deleteVolume(req: DeleteVolumeRequest__Output): Promise<Record<string, never>> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (keepAdopted(req.volumeId, this.logger)) return {}; // never destroyed, whatever asks
    let ref;
    try {
      ref = parseVolumeId(req.volumeId, this.volumes.hosts.configs);
    } catch {
      this.logger.info({ op: "DeleteVolume", volumeId: req.volumeId }, "volume id cannot name a zcsi volume; nothing to delete");
      return {};
    }
    await this.locks.run(ref.leaf, "DeleteVolume", () => this.volumes.delete(ref));
    return {};
  }

  private async requireVolume(volumeId: string): Promise<Volume> {
    const volume = isAdoptedId(volumeId) ? await this.adopted.get(parseAdoptedId(volumeId, this.volumes.hosts.configs)) : await this.volumes.get(parseVolumeId(volumeId, this.volumes.hosts.configs));
    if (!volume) throw notFound(`volume ${volumeId} does not exist`);
    return volume;
  }

  async validateVolumeCapabilities(req: ValidateVolumeCapabilitiesRequest__Output): Promise<ValidateVolumeCapabilitiesResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (req.volumeCapabilities.length === 0) throw invalidArgument("volume_capabilities is required");
    const volume = await this.requireVolume(req.volumeId);
    for (const cap of req.volumeCapabilities) {
      const problem = capabilityProblem(cap);
      if (problem) return { message: problem };
    }
    const context = volumeContext(volume);
    for (const [key, value] of Object.entries(req.volumeContext)) {
      if (context[key] !== value) return { message: `volume_context ${key}=${JSON.stringify(value)} does not match this volume (${JSON.stringify(context[key] ?? null)})` };
    }
    let params;
    try {
      params = parseVolumeParameters(withMutableParameters(req.parameters, req.mutableParameters), this.volumes.hosts.names);
    } catch (err) {
      return { message: err instanceof Error ? err.message : String(err) };
    }
    if ([...Object.keys(req.parameters), ...Object.keys(req.mutableParameters)].some((k) => !k.startsWith("csi.storage.k8s.io/")) && params.canonical !== volume.parameters) {
      return { message: `parameters do not match the volume's (${volume.parameters})` };
    }
    return { confirmed: { volumeContext: req.volumeContext, volumeCapabilities: req.volumeCapabilities, parameters: req.parameters } };
  }

  /**
   * CSI spec, ListVolumes: every volume, paged in id order, one `zfs get` per host for the whole
   * walk (listing-cache.ts). One host down degrades its own volumes only: they are listed as
   * last seen, abnormal, and the other hosts' volumes as usual (VolumeService.listTolerant).
   */
  async listVolumes(req: ListVolumesRequest__Output): Promise<ListVolumesResponse> {
    if (req.maxEntries < 0) throw invalidArgument("max_entries must not be negative");
    // The first page checks the hosts' health while it lists (in parallel), save a host found
    // up less than HEALTH_REUSE_MS ago; the later pages read the health last recorded (this
    // check, Probe's, any other call's) and run nothing.
    const list = async (): Promise<VolumeListing> => (await Promise.all([this.volumes.checkHosts(HEALTH_REUSE_MS), this.volumes.listTolerant()]))[1];
    const { listing, page: entries, nextToken } = await this.volumeListings.page(req, list);
    const problemOf = (host: string): string | undefined => this.volumes.hosts.health.state(host)?.problem ?? listing.unreachable.get(host);
    return {
      entries: entries.map((v) => ({ volume: toCsiVolume(v, this.config.driverName), status: { publishedNodeIds: [], volumeCondition: this.condition(v, problemOf(v.ref.poolHost)) } })),
      nextToken,
    };
  }

  private condition(volume: Volume, hostProblem: string | undefined): VolumeCondition {
    if (hostProblem) return { abnormal: true, message: hostProblem };
    if (volume.state !== "ready") return { abnormal: true, message: `volume ${volume.id} is still being created` };
    if (!volume.mounted) return { abnormal: true, message: `dataset ${volume.ref.dataset} is not mounted on ${volume.ref.poolHost}` };
    return { abnormal: false, message: "" };
  }

  /**
   * CSI spec, GetCapacity: the largest volume CreateVolume would make now with these
   * parameters: the best host's `available` under its parent (less a `reserved` volume's
   * headroom, size-modes.ts); for `refquota`, `quota` and `thin` that is free space shared with
   * every volume that has not filled its size (a thin size is never a limit or a promise).
   */
  async getCapacity(req: GetCapacityRequest__Output): Promise<GetCapacityResponse> {
    const params = parseVolumeParameters(req.parameters, this.volumes.hosts.names);
    if (req.volumeCapabilities.some((cap) => capabilityProblem(cap) !== undefined)) {
      // CSI spec, GetCapacity: capacity for volumes that satisfy ALL capabilities; none do.
      return { availableCapacity: "0", minimumVolumeSize: { value: MIN_VOLUME_BYTES.toString() } };
    }
    const hosts = params.poolHost ? [this.volumes.hosts.get(params.poolHost)] : this.volumes.hosts.all();
    const free = await Promise.all(hosts.map((h) => this.volumes.available(h)));
    const best = largestVolume(params.sizeMode, free.reduce((a, b) => (b > a ? b : a), 0n), params.zfsProperties["recordsize"]);
    return { availableCapacity: best.toString(), maximumVolumeSize: { value: best.toString() }, minimumVolumeSize: { value: MIN_VOLUME_BYTES.toString() } };
  }

  /** GET_SNAPSHOT (alpha) only when the config asks for it: see Config.advertiseGetSnapshot. */
  controllerGetCapabilities(): ControllerGetCapabilitiesResponse {
    const types = this.config.advertiseGetSnapshot === true ? [...CAPABILITIES, "GET_SNAPSHOT" as const] : CAPABILITIES;
    return { capabilities: types.map((type): ControllerServiceCapability => ({ rpc: { type } })) };
  }

  async controllerExpandVolume(req: ControllerExpandVolumeRequest__Output): Promise<ControllerExpandVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (!req.capacityRange) throw invalidArgument("capacity_range is required");
    if (req.volumeCapability) requireCapabilities([req.volumeCapability], "volume_capability");
    if (isAdoptedId(req.volumeId)) throw adoptedResizeRefused(await this.requireVolume(req.volumeId));
    const ref = parseVolumeId(req.volumeId, this.volumes.hosts.configs);
    return this.locks.run(ref.leaf, "ControllerExpandVolume", async () => {
      const volume = await this.volumes.get(ref);
      if (!volume) throw notFound(`volume ${req.volumeId} does not exist`);
      // Expansion never shrinks. CSI spec, ControllerExpandVolume: a volume already at or above
      // required_bytes answers OK with its current size; a limit_bytes below the current size
      // cannot be honoured without shrinking, so it is OUT_OF_RANGE and nothing changes.
      const target = resolveCapacity(req.capacityRange, volume.capacityBytes); // validates both bounds first
      const limit = BigInt(String(req.capacityRange?.limitBytes ?? "") || "0");
      if (limit > 0n && limit < volume.capacityBytes) {
        throw outOfRange(`volume ${req.volumeId} is ${volume.capacityBytes} bytes; limit_bytes ${limit} would shrink it, and zcsi never shrinks a volume`);
      }
      const resized = target > volume.capacityBytes ? await this.volumes.resize(volume, target) : volume;
      // The limit grows on the pool host (or a thin volume's request is recorded); bind mounts
      // and SSHFS see it at once.
      return { capacityBytes: resized.capacityBytes.toString(), nodeExpansionRequired: false };
    });
  }

  /**
   * CSI spec, ControllerModifyVolume: only the keys given change, each validated as on a
   * StorageClass; a key that cannot change, or a value the volume's pool host cannot take, is
   * INVALID_ARGUMENT with nothing changed; an unknown volume is NOT_FOUND. Applying the same
   * parameters again changes nothing and answers OK (volumes/modify.ts).
   */
  async controllerModifyVolume(req: ControllerModifyVolumeRequest__Output): Promise<ControllerModifyVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    mutableKeys(req.mutableParameters); // keys first: a bad request is refused before any lookup
    if (isAdoptedId(req.volumeId)) {
      const adopted = parseAdoptedId(req.volumeId, this.volumes.hosts.configs);
      return this.locks.run(adopted.id, "ControllerModifyVolume", async () => {
        const volume = adopted.readOnly ? undefined : await this.adopted.get(adopted);
        await modifyAdopted(this.volumes.hosts.get(adopted.poolHost), adopted, volume, req.mutableParameters, this.volumes.hosts.names, this.logger);
        return {};
      });
    }
    const ref = parseVolumeId(req.volumeId, this.volumes.hosts.configs);
    return this.locks.run(ref.leaf, "ControllerModifyVolume", async () => {
      const volume = await this.volumes.get(ref);
      if (!volume) throw notFound(`volume ${req.volumeId} does not exist`);
      await this.volumes.modify(volume, req.mutableParameters);
      return {};
    });
  }

  async controllerGetVolume(req: ControllerGetVolumeRequest__Output): Promise<ControllerGetVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    const volume = await this.requireVolume(req.volumeId);
    const problem = await this.volumes.checkHost(this.volumes.hosts.get(volume.ref.poolHost));
    return { volume: toCsiVolume(volume, this.config.driverName), status: { publishedNodeIds: [], volumeCondition: this.condition(volume, problem) } };
  }

  handlers(): ControllerHandlers {
    const log = this.logger;
    const byId = <R extends { volumeId: string }>(r: R) => ({ volumeId: r.volumeId });
    return {
      CreateVolume: unary(log, "CreateVolume", (r) => this.createVolume(r), (r) => ({ name: r.name })),
      DeleteVolume: unary(log, "DeleteVolume", (r) => this.deleteVolume(r), byId),
      ValidateVolumeCapabilities: unary(log, "ValidateVolumeCapabilities", (r) => this.validateVolumeCapabilities(r), byId),
      ListVolumes: unary(log, "ListVolumes", (r) => this.listVolumes(r)),
      GetCapacity: unary(log, "GetCapacity", (r) => this.getCapacity(r)),
      ControllerGetCapabilities: unary(log, "ControllerGetCapabilities", async () => this.controllerGetCapabilities()),
      ControllerExpandVolume: unary(log, "ControllerExpandVolume", (r) => this.controllerExpandVolume(r), byId),
      ControllerGetVolume: unary(log, "ControllerGetVolume", (r) => this.controllerGetVolume(r), byId),
      ControllerPublishVolume: unary(log, "ControllerPublishVolume", (r) => this.publisher.publish(r), (r) => ({ volumeId: r.volumeId, nodeId: r.nodeId })),
      ControllerUnpublishVolume: unary(log, "ControllerUnpublishVolume", (r) => this.publisher.unpublish(r), (r) => ({ volumeId: r.volumeId, nodeId: r.nodeId })),
      CreateSnapshot: unary(log, "CreateSnapshot", (r) => this.createSnapshot(r), (r) => ({ name: r.name, volumeId: r.sourceVolumeId })),
      DeleteSnapshot: unary(log, "DeleteSnapshot", (r) => this.deleteSnapshot(r), (r) => ({ snapshotId: r.snapshotId })),
      ListSnapshots: unary(log, "ListSnapshots", (r) => this.listSnapshots(r)),
      GetSnapshot: unary(log, "GetSnapshot", (r) => this.getSnapshot(r), (r) => ({ snapshotId: r.snapshotId })),
      ControllerModifyVolume: unary(log, "ControllerModifyVolume", (r) => this.controllerModifyVolume(r), byId),
    };
  }
}
