import { posix } from "node:path";
import type { Config } from "../config.js";
import { failedPrecondition, invalidArgument, notFound, unavailable } from "../errors.js";
import type { NodeHandlers } from "../gen/csi/v1/Node.js";
import type { NodeExpandVolumeRequest__Output } from "../gen/csi/v1/NodeExpandVolumeRequest.js";
import type { NodeExpandVolumeResponse } from "../gen/csi/v1/NodeExpandVolumeResponse.js";
import type { NodeGetCapabilitiesResponse } from "../gen/csi/v1/NodeGetCapabilitiesResponse.js";
import type { NodeGetInfoResponse } from "../gen/csi/v1/NodeGetInfoResponse.js";
import type { NodeGetVolumeStatsRequest__Output } from "../gen/csi/v1/NodeGetVolumeStatsRequest.js";
import type { NodeGetVolumeStatsResponse } from "../gen/csi/v1/NodeGetVolumeStatsResponse.js";
import type { NodePublishVolumeRequest__Output } from "../gen/csi/v1/NodePublishVolumeRequest.js";
import type { NodeServiceCapability } from "../gen/csi/v1/NodeServiceCapability.js";
import type { NodeStageVolumeRequest__Output } from "../gen/csi/v1/NodeStageVolumeRequest.js";
import type { NodeUnpublishVolumeRequest__Output } from "../gen/csi/v1/NodeUnpublishVolumeRequest.js";
import type { NodeUnstageVolumeRequest__Output } from "../gen/csi/v1/NodeUnstageVolumeRequest.js";
import type { VolumeCapability__Output } from "../gen/csi/v1/VolumeCapability.js";
import type { Logger } from "../log.js";
import { parseMountFlags, type MountFlags } from "../mount/flags.js";
import { readMountInfo } from "../mount/mountinfo.js";
import type { NodeVolume, StagedSource, VolumeMounts } from "../mount/volume-mounts.js";
import { KeyedLocks } from "../util/locks.js";
import { parseVolumeId } from "../volumes/ids.js";
import { isAdoptedId, parseAdoptedId } from "../volumes/adopted-ids.js";
import { capabilityProblem } from "./capabilities.js";
import { unary } from "./server.js";
import { nodeTopology } from "./topology.js";

const CAPABILITIES = ["STAGE_UNSTAGE_VOLUME", "GET_VOLUME_STATS", "VOLUME_CONDITION", "SINGLE_NODE_MULTI_WRITER", "EXPAND_VOLUME"] as const;

/**
 * Volumes per node kubelet will schedule: each SSHFS volume is one sshfs and one ssh
 * process (a few MiB) and one SSH connection to its pool host, so the limit guards the
 * pool hosts' sshd more than the node. Documented in docs/node.md; `--max-volumes-per-node`.
 */
export const DEFAULT_MAX_VOLUMES_PER_NODE = 128;

export interface NodeServiceOptions {
  readonly nodeId: string;
  readonly maxVolumesPerNode: number;
}


const READ_ONLY_MODES = new Set(["SINGLE_NODE_READER_ONLY", "MULTI_NODE_READER_ONLY"]);

function requirePath(value: string, field: string): string {
  if (value === "") throw invalidArgument(`${field} is required`);
  const path = value.length > 1 ? value.replace(/\/+$/, "") : value;
  // Paths go to mount(8) as argv words; refuse anything that is not a plain absolute path.
  if (!path.startsWith("/") || posix.normalize(path) !== path || /[\0\n]/.test(path)) {
    throw invalidArgument(`${field} ${JSON.stringify(value)} must be a normalised absolute path`);
  }
  return path;
}

function requireCapability(cap: VolumeCapability__Output | null, field = "volume_capability"): { cap: VolumeCapability__Output; flags: MountFlags } {
  if (!cap) throw invalidArgument(`${field} is required`);
  const problem = capabilityProblem(cap);
  if (problem) throw invalidArgument(`${field}: ${problem}`);
  return { cap, flags: parseMountFlags(cap.mount?.mountFlags ?? [], `${field}.mount.mount_flags`) };
}

/**
 * The CSI Node service. Each call: validate → lock the volume id → look at the mount table
 * (in VolumeMounts) → act → a precise code. A node whose name is a pool host's mounts that
 * host's volumes with a bind mount; every other volume comes over SSHFS.
 */
export class NodeService {
  private readonly locks = new KeyedLocks();

  constructor(
    private readonly config: Config,
    private readonly mounts: VolumeMounts,
    private readonly options: NodeServiceOptions,
    private readonly logger: Logger,
  ) {}

  /**
   * The volume behind an id: the first thing every call checks, so an id that cannot name a
   * volume is NOT_FOUND whatever else is wrong with the request (an empty id is
   * INVALID_ARGUMENT; parseVolumeId decides both). The mountpoint comes from volume_context (what CreateVolume
   * returned), else `<mountRoot>/<leaf>`; either way it must be that path, so a hand-made
   * PV cannot point the node at another directory of the pool host.
   */
  resolveVolume(volumeId: string, context: Readonly<Record<string, string>> = {}): NodeVolume {
    if (isAdoptedId(volumeId)) return this.resolveAdopted(volumeId, context, undefined);
    const ref = parseVolumeId(volumeId, this.config.poolHosts);
    const mountpoint = `${ref.host.mountRoot === "/" ? "" : ref.host.mountRoot}/${ref.leaf}`;
    for (const [key, expected] of [
      ["poolHost", ref.poolHost],
      ["dataset", ref.dataset],
      ["mountpoint", mountpoint],
    ] as const) {
      const given = context[key];
      if (given !== undefined && given !== expected) {
        throw invalidArgument(`volume_context ${key}=${JSON.stringify(given)} does not match volume ${volumeId} (expected ${JSON.stringify(expected)})`);
      }
    }
    return { id: volumeId, host: ref.host, dataset: ref.dataset, mountpoint, local: ref.host.name === this.options.nodeId };
  }

  /**
   * The volume as served from `source`: publish_context's home (ControllerPublishVolume), or a
   * stage record's. Without one (a CO that does not publish, a volume staged by an older
   * version), the birth host the id names. The source passes the same checks as an id: a
   * configured pool host, a dataset directly below its parent, mounted at `<mountRoot>/<leaf>`.
   */
  resolveServed(volumeId: string, context: Readonly<Record<string, string>>, source: Partial<StagedSource> | undefined): NodeVolume {
    if (isAdoptedId(volumeId)) return this.resolveAdopted(volumeId, context, source);
    const birth = this.resolveVolume(volumeId, context);
    if (source?.poolHost === undefined && source?.dataset === undefined && source?.mountpoint === undefined) return birth;
    const { poolHost = "", dataset = "", mountpoint = "" } = source;
    if (!this.config.poolHosts.some((h) => h.name === poolHost)) {
      throw failedPrecondition(`volume ${volumeId} is served from pool host ${JSON.stringify(poolHost)}, which this node's configuration does not list`);
    }
    let home;
    try {
      home = parseVolumeId(`${poolHost}:${dataset}`, this.config.poolHosts);
    } catch {
      throw invalidArgument(`publish_context dataset ${JSON.stringify(dataset)} of volume ${volumeId} is not a dataset directly below ${poolHost}'s parent dataset`);
    }
    const expected = `${home.host.mountRoot === "/" ? "" : home.host.mountRoot}/${home.leaf}`;
    if (mountpoint !== expected) throw invalidArgument(`publish_context mountpoint ${JSON.stringify(mountpoint)} of volume ${volumeId} is not ${JSON.stringify(expected)}`);
    return { id: volumeId, host: home.host, dataset: home.dataset, mountpoint, local: home.host.name === this.options.nodeId };
  }

  /**
   * An adopted dataset (volumes/adopted-ids.ts): always served from the host and dataset its id
   * names, which the config must allow adopting. Its mountpoint is the operator's, so it comes
   * from publish_context (read from ZFS by the controller) or the stage record, else
   * volume_context; all that are given must agree, and it must be a plain absolute path.
   */
  private resolveAdopted(volumeId: string, context: Readonly<Record<string, string>>, source: Partial<StagedSource> | undefined): NodeVolume {
    const ref = parseAdoptedId(volumeId, this.config.poolHosts);
    const given = { poolHost: [context.poolHost, source?.poolHost], dataset: [context.dataset, source?.dataset], mountpoint: [context.mountpoint, source?.mountpoint] };
    for (const [key, expected] of [["poolHost", ref.poolHost], ["dataset", ref.dataset]] as const) {
      const other = given[key].find((v) => v !== undefined && v !== expected);
      if (other !== undefined) throw invalidArgument(`${key}=${JSON.stringify(other)} does not match adopted volume ${volumeId} (expected ${JSON.stringify(expected)})`);
    }
    const mountpoints = [...new Set(given.mountpoint.filter((v): v is string => v !== undefined))];
    if (mountpoints.length > 1) throw invalidArgument(`volume_context mountpoint ${JSON.stringify(context.mountpoint)} of adopted volume ${volumeId} is not where it is served (${JSON.stringify(source?.mountpoint)})`);
    const mountpoint = mountpoints[0] ?? "";
    if (mountpoint !== "" && (!mountpoint.startsWith("/") || mountpoint.split("/").some((c) => c === "." || c === ".."))) throw invalidArgument(`mountpoint ${JSON.stringify(mountpoint)} of adopted volume ${volumeId} is not an absolute path`);
    return { id: volumeId, host: ref.host, dataset: ref.dataset, mountpoint, local: ref.host.name === this.options.nodeId };
  }

  /** The volume as this node staged it (stage record), for calls that carry no publish_context. */
  private async stagedVolume(volumeId: string, stagingPath?: string): Promise<NodeVolume> {
    this.resolveVolume(volumeId); // an id that cannot be a volume is NOT_FOUND before any file is read
    return this.resolveServed(volumeId, {}, await this.mounts.stagedFrom(volumeId, stagingPath));
  }

  /**
   * volume_path of NodeGetVolumeStats / NodeExpandVolume. CSI spec: NOT_FOUND when the volume
   * does not exist on the node; a caller checks the volume first, so an odd path of a volume
   * mounted nowhere on this node is NOT_FOUND too, and INVALID_ARGUMENT only for a volume
   * that is here.
   */
  private async requireVolumePath(volume: NodeVolume, value: string): Promise<string> {
    try {
      return requirePath(value, "volume_path");
    } catch (err) {
      const here = (await readMountInfo()).some((m) => this.mounts.matches(m, volume));
      if (!here) throw notFound(`volume ${volume.id} is not mounted on node ${this.options.nodeId}`);
      throw err;
    }
  }

  async nodeStageVolume(req: NodeStageVolumeRequest__Output): Promise<Record<string, never>> {
    const volume = this.resolveServed(req.volumeId, req.volumeContext, req.publishContext);
    if (volume.mountpoint === "") throw invalidArgument(`adopted volume ${volume.id}: neither publish_context nor volume_context gives its mountpoint`);
    const stagingPath = requirePath(req.stagingTargetPath, "staging_target_path");
    const { flags } = requireCapability(req.volumeCapability);
    await this.locks.run(req.volumeId, "NodeStageVolume", async () => {
      const outcome = await this.mounts.stage(volume, stagingPath, flags.sshfs);
      this.logger.info({ op: "NodeStageVolume", volumeId: volume.id, stagingPath, poolHost: volume.host.name, via: volume.local ? "bind" : "sshfs", outcome }, outcome);
    });
    return {};
  }

  async nodeUnstageVolume(req: NodeUnstageVolumeRequest__Output): Promise<Record<string, never>> {
    this.resolveVolume(req.volumeId);
    const stagingPath = requirePath(req.stagingTargetPath, "staging_target_path");
    const volume = await this.stagedVolume(req.volumeId, stagingPath);
    await this.locks.run(req.volumeId, "NodeUnstageVolume", () => this.mounts.unstage(volume, stagingPath));
    return {};
  }

  async nodePublishVolume(req: NodePublishVolumeRequest__Output): Promise<Record<string, never>> {
    const volume = this.resolveServed(req.volumeId, req.volumeContext, req.publishContext);
    const targetPath = requirePath(req.targetPath, "target_path");
    // With STAGE_UNSTAGE_VOLUME the CO must pass the staging path (CSI spec, NodePublishVolume).
    const stagingPath = requirePath(req.stagingTargetPath, "staging_target_path");
    if (targetPath === stagingPath) throw invalidArgument("target_path must differ from staging_target_path");
    const { cap, flags } = requireCapability(req.volumeCapability);
    // publish_context readonly=true: ControllerPublishVolume was asked for a readonly publication (PUBLISH_READONLY).
    const readOnly = isAdoptedId(req.volumeId) && parseAdoptedId(req.volumeId, this.config.poolHosts).readOnly ? true : req.readonly || flags.readOnly || READ_ONLY_MODES.has(cap.accessMode?.mode ?? "") || req.publishContext.readonly === "true";
    await this.locks.run(req.volumeId, "NodePublishVolume", async () => {
      const outcome = await this.mounts.publish(volume, stagingPath, targetPath, { readOnly, bindFlags: flags.bind });
      this.logger.info({ op: "NodePublishVolume", volumeId: volume.id, targetPath, readOnly, outcome }, outcome);
    });
    return {};
  }

  async nodeUnpublishVolume(req: NodeUnpublishVolumeRequest__Output): Promise<Record<string, never>> {
    this.resolveVolume(req.volumeId);
    const targetPath = requirePath(req.targetPath, "target_path");
    const volume = await this.stagedVolume(req.volumeId);
    await this.locks.run(req.volumeId, "NodeUnpublishVolume", () => this.mounts.unpublish(volume, targetPath));
    return {};
  }

  /**
   * Usage from statfs on the volume's mount, which ZFS computes per dataset, so it is what a pod
   * can really write in each size mode (volumes/size-modes.ts). Total is referenced + available:
   * `refquota`: the size, available the room left in it (less when the pool itself is fuller);
   * `reserved`: the same, and the room is guaranteed; `quota`: available is what is left once
   * snapshots are counted, so the total drops below the size while snapshots hold space;
   * `thin`: available is the pool's free space. SSHFS passes the pool host's statvfs through.
   * A dead or missing mount is reported as an
   * abnormal VolumeCondition, not an error, so kubelet records it as a volume health event;
   * usage is still filled (zeros), because kubelet discards a response without usage.
   */
  async nodeGetVolumeStats(req: NodeGetVolumeStatsRequest__Output): Promise<NodeGetVolumeStatsResponse> {
    const volume = await this.stagedVolume(req.volumeId);
    const volumePath = await this.requireVolumePath(volume, req.volumePath);
    const usage = await this.mounts.usage(volume, volumePath);
    if ("problem" in usage) {
      return {
        usage: [
          { unit: "BYTES", total: "0", used: "0", available: "0" },
          { unit: "INODES", total: "0", used: "0", available: "0" },
        ],
        volumeCondition: { abnormal: true, message: usage.problem },
      };
    }
    const s = usage.stats;
    return {
      usage: [
        { unit: "BYTES", total: s.totalBytes.toString(), used: s.usedBytes.toString(), available: s.availableBytes.toString() },
        { unit: "INODES", total: s.totalInodes.toString(), used: s.usedInodes.toString(), available: s.freeInodes.toString() },
      ],
      volumeCondition: { abnormal: false, message: "" },
    };
  }

  /**
   * The size is a ZFS limit on the pool host (per sizeMode), raised by ControllerExpandVolume;
   * a bind mount and SSHFS both show it at once. Nothing changes on the node: this reports
   * the capacity the pod now sees (statfs through the mount).
   */
  async nodeExpandVolume(req: NodeExpandVolumeRequest__Output): Promise<NodeExpandVolumeResponse> {
    const volume = await this.stagedVolume(req.volumeId);
    const volumePath = await this.requireVolumePath(volume, req.volumePath);
    if (req.volumeCapability) requireCapability(req.volumeCapability);
    const usage = await this.mounts.usage(volume, volumePath);
    if ("problem" in usage) throw unavailable(usage.problem);
    return { capacityBytes: usage.stats.totalBytes.toString() };
  }

  nodeGetInfo(): NodeGetInfoResponse {
    return {
      nodeId: this.options.nodeId,
      maxVolumesPerNode: String(this.options.maxVolumesPerNode),
      accessibleTopology: nodeTopology(this.config.driverName, this.options.nodeId),
    };
  }

  nodeGetCapabilities(): NodeGetCapabilitiesResponse {
    return { capabilities: CAPABILITIES.map((type): NodeServiceCapability => ({ rpc: { type } })) };
  }

  handlers(): NodeHandlers {
    const log = this.logger;
    const ids = <R extends { volumeId: string }>(r: R) => ({ volumeId: r.volumeId });
    return {
      NodeStageVolume: unary(log, "NodeStageVolume", (r) => this.nodeStageVolume(r), ids),
      NodeUnstageVolume: unary(log, "NodeUnstageVolume", (r) => this.nodeUnstageVolume(r), ids),
      NodePublishVolume: unary(log, "NodePublishVolume", (r) => this.nodePublishVolume(r), ids),
      NodeUnpublishVolume: unary(log, "NodeUnpublishVolume", (r) => this.nodeUnpublishVolume(r), ids),
      NodeGetVolumeStats: unary(log, "NodeGetVolumeStats", (r) => this.nodeGetVolumeStats(r), ids),
      NodeExpandVolume: unary(log, "NodeExpandVolume", (r) => this.nodeExpandVolume(r), ids),
      NodeGetCapabilities: unary(log, "NodeGetCapabilities", async () => this.nodeGetCapabilities()),
      NodeGetInfo: unary(log, "NodeGetInfo", async () => this.nodeGetInfo()),
    };
  }
}
