import { invalidArgument, unimplemented, alreadyExists, aborted, notFound } from "../errors.js";
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
import type { Volume as CsiVolume } from "../gen/csi/v1/Volume.js";
import type { VolumeCondition } from "../gen/csi/v1/VolumeCondition.js";
import type { ControllerServiceCapability } from "../gen/csi/v1/ControllerServiceCapability.js";
import { MIN_VOLUME_BYTES, capacityFits, resolveCapacity } from "../volumes/capacity.js";
import { leafFromName, parseVolumeId } from "../volumes/ids.js";
import { parseVolumeParameters } from "../volumes/parameters.js";
import type { Volume, VolumeService } from "../volumes/service.js";
import { KeyedLocks } from "../util/locks.js";
import { capabilityProblem, requireCapabilities } from "./capabilities.js";
import { unary } from "./server.js";

const CAPABILITIES = [
  "CREATE_DELETE_VOLUME",
  "LIST_VOLUMES",
  "GET_CAPACITY",
  "EXPAND_VOLUME",
  "GET_VOLUME",
  "VOLUME_CONDITION",
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/** What `kubectl describe pv` shows under VolumeAttributes. */
export function volumeContext(volume: Volume): Record<string, string> {
  return { poolHost: volume.ref.poolHost, dataset: volume.ref.dataset, mountpoint: volume.mountpoint };
}

function toCsiVolume(volume: Volume): CsiVolume {
  return { volumeId: volume.id, capacityBytes: volume.capacityBytes.toString(), volumeContext: volumeContext(volume) };
}

/** ListVolumes tokens are opaque to callers: the id of the last entry returned. */
function encodeToken(lastId: string): string {
  return Buffer.from(`v1:${lastId}`, "utf8").toString("base64url");
}

function decodeToken(token: string): string {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  // CSI spec, ListVolumes: "starting_token ... is not valid" → ABORTED.
  if (!text.startsWith("v1:") || text.length <= 3) throw aborted(`starting_token ${JSON.stringify(token)} is not a token zcsi issued`);
  return text.slice(3);
}

export class ControllerService {
  private readonly locks = new KeyedLocks();

  constructor(
    private readonly config: Config,
    private readonly volumes: VolumeService,
    private readonly logger: Logger,
  ) {}

  /** CSI spec, CreateVolume: same name + compatible request → the same volume; incompatible → ALREADY_EXISTS. */
  async createVolume(req: CreateVolumeRequest__Output): Promise<CreateVolumeResponse> {
    const leaf = leafFromName(req.name);
    requireCapabilities(req.volumeCapabilities);
    if (req.volumeContentSource) throw invalidArgument("volume_content_source: restoring from snapshots and cloning are not supported yet");
    const params = parseVolumeParameters(req.parameters, this.volumes.hosts.names);
    const capacityBytes = resolveCapacity(req.capacityRange, this.config.defaultCapacityBytes);
    return this.locks.run(leaf, "CreateVolume", async () => {
      const existing = await this.volumes.findByLeaf(leaf);
      if (existing) {
        if (existing.csiName !== req.name) throw alreadyExists(`dataset ${existing.ref.dataset} belongs to volume ${JSON.stringify(existing.csiName)}`);
        if (!capacityFits(existing.capacityBytes, req.capacityRange)) {
          throw alreadyExists(`volume ${req.name} exists with ${existing.capacityBytes} bytes, which does not satisfy the requested capacity_range`);
        }
        if (existing.parameters !== params.canonical) {
          throw alreadyExists(`volume ${req.name} exists with parameters ${existing.parameters}; this request asks for ${params.canonical}`);
        }
        const ready = existing.state === "ready" ? existing : await this.volumes.finish(existing, params);
        return { volume: toCsiVolume(ready) };
      }
      return { volume: toCsiVolume(await this.volumes.create({ csiName: req.name, leaf, capacityBytes, params })) };
    });
  }

  /** CSI spec, DeleteVolume: a volume that does not exist (or cannot be ours) is already deleted: OK. */
  async deleteVolume(req: DeleteVolumeRequest__Output): Promise<Record<string, never>> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
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
    const ref = parseVolumeId(volumeId, this.volumes.hosts.configs);
    const volume = await this.volumes.get(ref);
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
      params = parseVolumeParameters(req.parameters, this.volumes.hosts.names);
    } catch (err) {
      return { message: err instanceof Error ? err.message : String(err) };
    }
    if (Object.keys(req.parameters).some((k) => !k.startsWith("csi.storage.k8s.io/")) && params.canonical !== volume.parameters) {
      return { message: `parameters do not match the volume's (${volume.parameters})` };
    }
    return { confirmed: { volumeContext: req.volumeContext, volumeCapabilities: req.volumeCapabilities, parameters: req.parameters } };
  }

  async listVolumes(req: ListVolumesRequest__Output): Promise<ListVolumesResponse> {
    if (req.maxEntries < 0) throw invalidArgument("max_entries must not be negative");
    const after = req.startingToken ? decodeToken(req.startingToken) : undefined;
    const all = await this.volumes.list();
    const problems = new Map<string, string | undefined>();
    await Promise.all(this.volumes.hosts.all().map(async (h) => problems.set(h.config.name, await this.volumes.hostProblem(h))));
    const rest = after === undefined ? all : all.filter((v) => v.id > after);
    const page = req.maxEntries > 0 ? rest.slice(0, req.maxEntries) : rest;
    const last = page[page.length - 1];
    return {
      entries: page.map((v) => ({ volume: toCsiVolume(v), status: { publishedNodeIds: [], volumeCondition: this.condition(v, problems.get(v.ref.poolHost)) } })),
      nextToken: last && rest.length > page.length ? encodeToken(last.id) : "",
    };
  }

  private condition(volume: Volume, hostProblem: string | undefined): VolumeCondition {
    if (hostProblem) return { abnormal: true, message: hostProblem };
    if (volume.state !== "ready") return { abnormal: true, message: `volume ${volume.id} is still being created` };
    if (!volume.mounted) return { abnormal: true, message: `dataset ${volume.ref.dataset} is not mounted on ${volume.ref.poolHost}` };
    return { abnormal: false, message: "" };
  }

  async getCapacity(req: GetCapacityRequest__Output): Promise<GetCapacityResponse> {
    const params = parseVolumeParameters(req.parameters, this.volumes.hosts.names);
    if (req.volumeCapabilities.some((cap) => capabilityProblem(cap) !== undefined)) {
      // CSI spec, GetCapacity: capacity for volumes that satisfy ALL capabilities; none do.
      return { availableCapacity: "0", minimumVolumeSize: { value: MIN_VOLUME_BYTES.toString() } };
    }
    const hosts = params.poolHost ? [this.volumes.hosts.get(params.poolHost)] : this.volumes.hosts.all();
    const free = await Promise.all(hosts.map((h) => this.volumes.available(h)));
    const best = free.reduce((a, b) => (b > a ? b : a), 0n);
    return { availableCapacity: best.toString(), maximumVolumeSize: { value: best.toString() }, minimumVolumeSize: { value: MIN_VOLUME_BYTES.toString() } };
  }

  controllerGetCapabilities(): ControllerGetCapabilitiesResponse {
    return { capabilities: CAPABILITIES.map((type): ControllerServiceCapability => ({ rpc: { type } })) };
  }

  async controllerExpandVolume(req: ControllerExpandVolumeRequest__Output): Promise<ControllerExpandVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (!req.capacityRange) throw invalidArgument("capacity_range is required");
    if (req.volumeCapability) requireCapabilities([req.volumeCapability], "volume_capability");
    const ref = parseVolumeId(req.volumeId, this.volumes.hosts.configs);
    return this.locks.run(ref.leaf, "ControllerExpandVolume", async () => {
      const volume = await this.volumes.get(ref);
      if (!volume) throw notFound(`volume ${req.volumeId} does not exist`);
      const target = resolveCapacity(req.capacityRange, volume.capacityBytes);
      // Already big enough and within the limit: nothing to do (a retried expand is a no-op).
      const fits = capacityFits(volume.capacityBytes, req.capacityRange);
      const resized = fits ? volume : await this.volumes.resize(volume, target);
      // The quota grows on the pool host; bind mounts and SSHFS see it at once.
      return { capacityBytes: resized.capacityBytes.toString(), nodeExpansionRequired: false };
    });
  }

  async controllerGetVolume(req: ControllerGetVolumeRequest__Output): Promise<ControllerGetVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    const volume = await this.requireVolume(req.volumeId);
    const problem = await this.volumes.hostProblem(this.volumes.hosts.get(volume.ref.poolHost));
    return { volume: toCsiVolume(volume), status: { publishedNodeIds: [], volumeCondition: this.condition(volume, problem) } };
  }

  handlers(): ControllerHandlers {
    const log = this.logger;
    const byId = <R extends { volumeId: string }>(r: R) => ({ volumeId: r.volumeId });
    const notSupported = (op: string) => unary(log, op, async () => Promise.reject(unimplemented(`${op} is not supported by zcsi`)));
    return {
      CreateVolume: unary(log, "CreateVolume", (r) => this.createVolume(r), (r) => ({ name: r.name })),
      DeleteVolume: unary(log, "DeleteVolume", (r) => this.deleteVolume(r), byId),
      ValidateVolumeCapabilities: unary(log, "ValidateVolumeCapabilities", (r) => this.validateVolumeCapabilities(r), byId),
      ListVolumes: unary(log, "ListVolumes", (r) => this.listVolumes(r)),
      GetCapacity: unary(log, "GetCapacity", (r) => this.getCapacity(r)),
      ControllerGetCapabilities: unary(log, "ControllerGetCapabilities", async () => this.controllerGetCapabilities()),
      ControllerExpandVolume: unary(log, "ControllerExpandVolume", (r) => this.controllerExpandVolume(r), byId),
      ControllerGetVolume: unary(log, "ControllerGetVolume", (r) => this.controllerGetVolume(r), byId),
      ControllerPublishVolume: notSupported("ControllerPublishVolume"),
      ControllerUnpublishVolume: notSupported("ControllerUnpublishVolume"),
      CreateSnapshot: notSupported("CreateSnapshot"),
      DeleteSnapshot: notSupported("DeleteSnapshot"),
      ListSnapshots: notSupported("ListSnapshots"),
      GetSnapshot: notSupported("GetSnapshot"),
      ControllerModifyVolume: notSupported("ControllerModifyVolume"),
    };
  }
}
