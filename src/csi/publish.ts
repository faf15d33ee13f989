import { alreadyExists, failedPrecondition, invalidArgument, isZcsiError, notFound, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import type { ControllerPublishVolumeRequest__Output } from "../gen/csi/v1/ControllerPublishVolumeRequest.js";
import type { ControllerPublishVolumeResponse } from "../gen/csi/v1/ControllerPublishVolumeResponse.js";
import type { ControllerUnpublishVolumeRequest__Output } from "../gen/csi/v1/ControllerUnpublishVolumeRequest.js";
import type { KeyedLocks } from "../util/locks.js";
import { parseVolumeId } from "../volumes/ids.js";
import { isPublishedMode, NODE_ID, PUBLISHED_TO_PROPERTY, readPublications, writePublications, type Publication, type PublishedMode } from "../volumes/publications.js";
import type { VolumeService } from "../volumes/service.js";
import { parseMoving } from "../volumes/moving.js";
import { requireCapabilities } from "./capabilities.js";
import { isAdoptedId, parseAdoptedId } from "../volumes/adopted-ids.js";
import type { AdoptedVolumes } from "../volumes/adopted.js";
import type { ResolvedHome } from "../volumes/homes.js";

/**
 * ControllerPublishVolume / ControllerUnpublishVolume: the serving host of a volume is decided
 * when a node attaches it (ARCHITECTURE, "Where a volume lives"). Publish resolves the volume's
 * home and returns it in publish_context; NodeStageVolume mounts from there. Which nodes a
 * volume is published to is recorded on the home's dataset (volumes/publications.ts), so the
 * access-mode rules below hold across controller restarts.
 */

/** Keys of publish_context (docs/node.md, "Where a node mounts from"). */
export const PUBLISH_CONTEXT = { poolHost: "poolHost", dataset: "dataset", mountpoint: "mountpoint", epoch: "epoch", readonly: "readonly" } as const;

const SINGLE_NODE: ReadonlySet<PublishedMode> = new Set(["SINGLE_NODE_WRITER", "SINGLE_NODE_READER_ONLY", "SINGLE_NODE_SINGLE_WRITER", "SINGLE_NODE_MULTI_WRITER"]);
const READ_ONLY: ReadonlySet<PublishedMode> = new Set(["SINGLE_NODE_READER_ONLY", "MULTI_NODE_READER_ONLY"]);

const writes = (p: Publication): boolean => !p.readonly && !READ_ONLY.has(p.mode);

/** Whether a publish changes the record, and the publications after it. */
export interface PublishDecision {
  readonly changed: boolean;
  readonly publications: Publication[];
}

/**
 * The CSI spec's rules for ControllerPublishVolume, as a pure function of what is recorded:
 * - the same (volume, node) again with the same access mode and readonly flag: nothing to do
 *   (idempotent); with another mode or flag: ALREADY_EXISTS ("Volume published but is
 *   incompatible");
 * - another node while a single-node mode (SINGLE_NODE_*) holds the volume, or asks for it:
 *   FAILED_PRECONDITION ("Volume published to another node");
 * - MULTI_NODE_SINGLE_WRITER: "only one of the nodes can be used as read/write", so a second
 *   writer where one of them is in that mode is FAILED_PRECONDITION too;
 * - multi-node modes publish anywhere.
 */
export function decidePublish(existing: readonly Publication[], wanted: Publication, volumeId: string): PublishDecision {
  const same = existing.find((p) => p.node === wanted.node);
  if (same) {
    if (same.mode === wanted.mode && same.readonly === wanted.readonly) return { changed: false, publications: [...existing] };
    throw alreadyExists(
      `volume ${volumeId} is already published to node ${wanted.node} as ${describe(same)}; this request asks for ${describe(wanted)} (unpublish it first)`,
    );
  }
  const others = existing.filter((p) => p.node !== wanted.node);
  const holder = others.find((p) => SINGLE_NODE.has(p.mode)) ?? (SINGLE_NODE.has(wanted.mode) ? others[0] : undefined);
  if (holder) {
    throw failedPrecondition(
      `volume ${volumeId} is published to node ${holder.node} as ${describe(holder)}; ${SINGLE_NODE.has(holder.mode) ? "that mode" : `${wanted.mode}`} allows one node only, so it cannot also be published to ${wanted.node}`,
    );
  }
  if (writes(wanted)) {
    const writer = others.find((p) => writes(p) && (p.mode === "MULTI_NODE_SINGLE_WRITER" || wanted.mode === "MULTI_NODE_SINGLE_WRITER"));
    if (writer) {
      throw failedPrecondition(`volume ${volumeId} is published read-write to node ${writer.node}; MULTI_NODE_SINGLE_WRITER allows one writer, so ${wanted.node} may only publish it readonly`);
    }
  }
  return { changed: true, publications: [...existing, wanted] };
}

/** ControllerUnpublishVolume: from one node, or from every node when none is named (CSI spec). */
export function decideUnpublish(existing: readonly Publication[], node: string | undefined): PublishDecision {
  const kept = node === undefined ? [] : existing.filter((p) => p.node !== node);
  return { changed: kept.length !== existing.length, publications: kept };
}

function describe(p: Publication): string {
  return `${p.mode}${p.readonly ? " readonly" : ""}`;
}

export class Publisher {
  constructor(
    private readonly volumes: VolumeService,
    private readonly locks: KeyedLocks,
    private readonly logger: Logger,
    private readonly adopted: AdoptedVolumes,
  ) {}

  /**
   * The lock key, the birth volume_context must match, and how to find the home. An adopted
   * dataset is served where it is (no copies, no moves); its mountpoint is the operator's, read
   * from ZFS, so volume_context's mountpoint is checked against the home instead.
   */
  private target(volumeId: string): { lockKey: string; birth: Record<string, string>; readOnly: boolean; record?: string; resolve: () => Promise<ResolvedHome> } {
    if (isAdoptedId(volumeId)) {
      const ref = parseAdoptedId(volumeId, this.volumes.hosts.configs);
      const resolve = async (): Promise<ResolvedHome> => {
        const home = await this.adopted.home(ref);
        if (!home) throw notFound(`adopted volume ${volumeId} does not exist (dataset gone, or no longer carries its adoption mark)`);
        return home;
      };
      // Each read-only adoption of a dataset is its own volume: its publications get their own record.
      const record = ref.namespace === undefined ? undefined : `${PUBLISHED_TO_PROPERTY}.ro-${ref.namespace}`;
      return { lockKey: ref.id, birth: { poolHost: ref.poolHost, dataset: ref.dataset }, readOnly: ref.readOnly, ...(record !== undefined && { record }), resolve };
    }
    const ref = parseVolumeId(volumeId, this.volumes.hosts.configs);
    const birth = { poolHost: ref.poolHost, dataset: ref.dataset, mountpoint: `${ref.host.mountRoot === "/" ? "" : ref.host.mountRoot}/${ref.leaf}` };
    return { lockKey: ref.leaf, birth, readOnly: false, resolve: () => this.volumes.resolveHome(volumeId) };
  }

  async publish(req: ControllerPublishVolumeRequest__Output): Promise<ControllerPublishVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (req.nodeId === "") throw invalidArgument("node_id is required");
    if (!req.volumeCapability) throw invalidArgument("volume_capability is required");
    requireCapabilities([req.volumeCapability], "volume_capability");
    const mode = req.volumeCapability.accessMode?.mode ?? "";
    if (!isPublishedMode(mode)) throw invalidArgument(`volume_capability.access_mode ${JSON.stringify(mode)} is not supported`);
    const target = this.target(req.volumeId);
    // zcsi's controller does not talk to Kubernetes, so it cannot tell whether a node exists;
    // a name that cannot be a node is NOT_FOUND, any other is taken at its word (docs/node.md).
    if (!NODE_ID.test(req.nodeId)) throw notFound(`node ${JSON.stringify(req.nodeId)} does not exist (not a Kubernetes node name)`);
    // volume_context, when given, is CreateVolume's: the birth host, whatever the home is now.
    for (const [key, expected] of Object.entries(target.birth)) {
      const given = req.volumeContext[key];
      if (given !== undefined && given !== expected) {
        throw invalidArgument(`volume_context ${key}=${JSON.stringify(given)} does not match volume ${req.volumeId} (expected ${JSON.stringify(expected)})`);
      }
    }
    const wanted: Publication = { node: req.nodeId, mode, readonly: req.readonly };
    return this.locks.run(target.lockKey, "ControllerPublishVolume", async () => {
      const home = await target.resolve();
      const givenMountpoint = req.volumeContext.mountpoint;
      if (target.birth.mountpoint === undefined && givenMountpoint !== undefined && givenMountpoint !== home.mountpoint) {
        throw invalidArgument(`volume_context mountpoint=${JSON.stringify(givenMountpoint)} does not match adopted volume ${req.volumeId} (mounted at ${JSON.stringify(home.mountpoint)})`);
      }
      if (home.moving !== undefined) {
        // A planned move (zcsi migrate) waits for every node to let go; the external-attacher
        // retries UNAVAILABLE, and the retry after the move gets the new home.
        const { target, since } = parseMoving(home.moving);
        this.logger.info({ op: "ControllerPublishVolume", volumeId: req.volumeId, nodeId: req.nodeId, poolHost: home.host, movingTo: target, since }, "refused: the volume is moving");
        throw unavailable(`volume ${req.volumeId} is moving to ${target}${since !== undefined ? ` (attaches blocked since ${since})` : ""}; retry when the move is done`);
      }
      const host = this.volumes.hosts.get(home.host);
      const record = await readPublications(host, home.dataset, target.record);
      const decision = decidePublish(record.publications, wanted, req.volumeId);
      if (decision.changed) await writePublications(host, home.dataset, { publications: decision.publications, unreadable: record.unreadable }, target.record);
      this.logger.info(
        { op: "ControllerPublishVolume", volumeId: req.volumeId, nodeId: req.nodeId, poolHost: home.host, dataset: home.dataset, epoch: home.epoch, recorded: decision.changed },
        decision.changed ? "published" : "already published",
      );
      const context: Record<string, string> = {
        [PUBLISH_CONTEXT.poolHost]: home.host,
        [PUBLISH_CONTEXT.dataset]: home.dataset,
        [PUBLISH_CONTEXT.mountpoint]: home.mountpoint,
        [PUBLISH_CONTEXT.epoch]: String(home.epoch),
      };
      // A read-only adoption publishes read-only whatever the request says (the node enforces it too).
      if (req.readonly || target.readOnly) context[PUBLISH_CONTEXT.readonly] = "true";
      return { publishContext: context };
    });
  }

  /**
   * CSI spec, ControllerUnpublishVolume: idempotent; a volume or node the plugin cannot find,
   * that "can be safely regarded as ControllerUnpublished from the node", is OK. A home that
   * cannot be reached is not safe to regard so: that is an error, and the CO retries.
   */
  async unpublish(req: ControllerUnpublishVolumeRequest__Output): Promise<Record<string, never>> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    let target;
    try {
      target = this.target(req.volumeId);
    } catch {
      this.logger.info({ op: "ControllerUnpublishVolume", volumeId: req.volumeId }, "volume id cannot name a zcsi volume; nothing is published");
      return {};
    }
    const node = req.nodeId === "" ? undefined : req.nodeId;
    if (node !== undefined && !NODE_ID.test(node)) return {}; // no such node: nothing published to it
    await this.locks.run(target.lockKey, "ControllerUnpublishVolume", async () => {
      let home;
      try {
        home = await target.resolve();
      } catch (err) {
        if (isZcsiError(err, "NotFound")) return;
        throw err;
      }
      const host = this.volumes.hosts.get(home.host);
      const record = await readPublications(host, home.dataset, target.record);
      const decision = decideUnpublish(record.publications, node);
      // From every node: entries zcsi could not read go too.
      const unreadable = node === undefined ? [] : record.unreadable;
      const changed = decision.changed || unreadable.length !== record.unreadable.length;
      if (changed) await writePublications(host, home.dataset, { publications: decision.publications, unreadable }, target.record);
      this.logger.info({ op: "ControllerUnpublishVolume", volumeId: req.volumeId, nodeId: node ?? "(all)", poolHost: home.host, recorded: changed }, changed ? "unpublished" : "was not published");
    });
    return {};
  }
}
