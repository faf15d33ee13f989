import { failedPrecondition, invalidArgument, isZcsiError, notFound, type ZcsiError } from "../errors.js";
import { ownUserPropertyValue, PropertyView } from "../zfs/parse.js";
import type { Logger } from "../log.js";
import { isAdoptedId, type AdoptedRef } from "./adopted-ids.js";

export { isAdoptedId, parseAdoptedId } from "./adopted-ids.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import { modifyVolume } from "./modify.js";
import { PROP } from "./properties.js";
import type { SizeMode } from "./size-modes.js";
import type { PropertyMap, Volume } from "./volume.js";

/**
 * What zcsi knows of an adopted dataset (adopted-ids.ts), read from ZFS like any volume. The
 * dataset is the operator's: zcsi sets only its own marks on it (zcsi:adopted, and the
 * schedule or replication the operator asked for), never its size, never destroys it.
 */

export type AdoptedAccess = "read-write" | "read-only";

export const ADOPTED_PROPS = [PROP.adopted, PROP.parameters, "type", "referenced", "available", "refquota", "quota", "mountpoint", "mounted", "origin"];

/** Why a dataset cannot be served as a PV at all (a zvol, no mountpoint), or undefined. */
export function unservable(dataset: string, props: PropertyMap): string | undefined {
  const type = props.get("type")?.value;
  if (type !== "filesystem") return `${dataset} is a ${type ?? "dataset of unknown type"}, not a filesystem`;
  const mountpoint = props.get("mountpoint")?.value ?? "";
  if (!mountpoint.startsWith("/")) return `${dataset} has mountpoint=${mountpoint || "?"}; a node mounts an adopted dataset from its mountpoint on the pool host, so it needs a path`;
  if (props.get("mounted")?.value !== "yes") return `${dataset} is not mounted on its pool host (zfs mount ${dataset})`;
  return undefined;
}

/**
 * The size an adopted dataset has for Kubernetes: the limit the operator set (`refquota`, else
 * `quota`), or with none what `df` shows on the pool host (referenced + available), which is
 * what the pods see: the thin sharing model of hostPath.
 */
export function adoptedSize(dataset: string, props: PropertyMap): { sizeMode: SizeMode; capacityBytes: bigint } {
  const view = new PropertyView(dataset, props);
  const refquota = view.integer("refquota");
  if (refquota > 0n) return { sizeMode: "refquota", capacityBytes: refquota };
  const quota = view.integer("quota");
  if (quota > 0n) return { sizeMode: "quota", capacityBytes: quota };
  return { sizeMode: "thin", capacityBytes: view.integer("referenced") + view.integer("available") };
}

/** The adoption mark on the dataset itself (inherited marks do not count: a child was not adopted). */
export function adoptionMark(props: PropertyMap | undefined): AdoptedAccess | undefined {
  const mark = ownUserPropertyValue(props?.get(PROP.adopted));
  return mark === "read-write" || mark === "read-only" ? mark : undefined;
}

/**
 * The adopted dataset as a Volume, or undefined when it is gone or no longer adopted. A
 * read-write id needs the read-write mark (a read-only adoption cannot be turned into a writer
 * by editing a PV's handle); a read-only id is served under either mark.
 */
export function toAdoptedVolume(ref: AdoptedRef, props: PropertyMap | undefined): Volume | undefined {
  const mark = adoptionMark(props);
  if (props === undefined || mark === undefined || (!ref.readOnly && mark !== "read-write")) return undefined;
  const view = new PropertyView(ref.dataset, props, ref.poolHost);
  return {
    id: ref.id,
    ref: { poolHost: ref.poolHost, dataset: ref.dataset },
    csiName: ref.id,
    ...adoptedSize(ref.dataset, props),
    usedBytes: view.integer("referenced"),
    mountpoint: props.get("mountpoint")?.value ?? "",
    mounted: props.get("mounted")?.value === "yes",
    state: "ready",
    // The mutable parameters the operator asked for (`zcsi adopt --snapshot-schedule`, ModifyVolume).
    parameters: ownUserPropertyValue(props.get(PROP.parameters)) ?? "{}",
    placement: "adopted",
  };
}

/**
 * ControllerExpandVolume of an adopted volume: refused. Its size is the operator's `refquota`
 * (or none), which zcsi never changes on a dataset it did not create. INVALID_ARGUMENT is final
 * for the external-resizer, which reports it on the PVC instead of retrying forever.
 */
export function adoptedResizeRefused(volume: Volume): ZcsiError {
  return invalidArgument(`volume ${volume.id} is an adopted dataset; zcsi never changes its size (set refquota on ${volume.ref.poolHost} yourself; docs/coming-from-hostpath.md)`);
}

/**
 * Schedule, replication and the other mutable parameters of an adopted volume
 * (ControllerModifyVolume, `zcsi adopt --snapshot-schedule/--replicate-to`): the same keys and
 * validation as for zcsi's own volumes (modify.ts), stored as the same zcsi:* properties, so
 * the snapshotter and the replicator treat the dataset like a volume. A read-only adoption
 * changes nothing on the dataset: INVALID_ARGUMENT, before anything is read or set.
 */
export async function modifyAdopted(host: PoolHost, ref: AdoptedRef, volume: Volume | undefined, mutable: Readonly<Record<string, string>>, knownHosts: readonly string[], logger: Logger): Promise<Volume> {
  if (ref.readOnly) throw invalidArgument(`volume ${ref.id} is a read-only adoption; its parameters (snapshot schedule, replication) are set through the dataset's read-write adoption`);
  if (!volume) throw notFound(`volume ${ref.id} does not exist (dataset gone, or no longer adopted)`);
  return modifyVolume(host, volume, mutable, knownHosts, logger);
}

/**
 * DeleteVolume of an adopted volume: true (answer OK) and nothing touched, whatever asks (a PV
 * switched to Delete, a hand-made call): the dataset is the operator's. False for other ids.
 */
export function keepAdopted(volumeId: string, logger: Logger): boolean {
  if (!isAdoptedId(volumeId)) return false;
  logger.info({ op: "DeleteVolume", volumeId }, "adopted volume: the dataset is the operator's and is kept, untouched");
  return true;
}

export class AdoptedVolumes {
  constructor(private readonly hosts: PoolHosts) {}

  /** The dataset's properties (one `zfs get`), undefined when it does not exist. */
  async read(ref: Pick<AdoptedRef, "poolHost" | "dataset">, extra: readonly string[] = []): Promise<PropertyMap | undefined> {
    const host = this.hosts.get(ref.poolHost);
    try {
      return (await host.zfs.get([ref.dataset], [...ADOPTED_PROPS, ...extra], { missingOk: true })).get(ref.dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return undefined;
      throw err;
    }
  }

  async get(ref: AdoptedRef): Promise<Volume | undefined> {
    return toAdoptedVolume(ref, await this.read(ref));
  }

  /** What ControllerPublishVolume needs: the dataset and its mountpoint, served only while adopted and mounted. */
  async home(ref: AdoptedRef): Promise<{ host: string; dataset: string; mountpoint: string; epoch: number } | undefined> {
    const props = await this.read(ref);
    const volume = toAdoptedVolume(ref, props);
    if (!volume || !props) return undefined;
    const problem = unservable(ref.dataset, props);
    if (problem !== undefined) throw failedPrecondition(`adopted volume ${ref.id} cannot be served: ${problem}`);
    return { host: ref.poolHost, dataset: ref.dataset, mountpoint: volume.mountpoint, epoch: 0 };
  }
}
