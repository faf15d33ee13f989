import { invalidArgument } from "../errors.js";

/**
 * What a planned move (mobility/) needs of the workloads that use a volume: the PV's claim,
 * the pods that mount that claim (to restart them: deleted, their controllers recreate them,
 * and the new pods wait for the attach), and the VolumeAttachments of the PV (the
 * external-attacher's record of which node has it: gone, or detached, once
 * ControllerUnpublishVolume ran). Behind Workloads, so mobility is tested against the API fake
 * (test/harness/fake-k8s.ts) and workloads-client.ts implements it with client-node.
 */

export interface PvClaim {
  readonly pvName: string;
  /** spec.claimRef: the PVC bound to the PV; undefined for an unbound PV. */
  readonly claim?: { readonly namespace: string; readonly name: string };
}

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  /** spec.nodeName: where it runs; undefined while unscheduled. */
  readonly node?: string;
}

export interface AttachmentInfo {
  readonly name: string;
  readonly node: string;
  readonly pvName: string;
  /** status.attached: ControllerPublishVolume succeeded for it. */
  readonly attached: boolean;
  /** metadata.deletionTimestamp is set: the attacher is detaching it. */
  readonly deleting: boolean;
}

export interface Workloads {
  /** The PV and its claim; undefined when there is no such PV. Unavailable when the API cannot be read. */
  readPv(pvName: string): Promise<PvClaim | undefined>;
  /** The pods of `namespace` with a volume from PVC `claim`. */
  podsUsingClaim(namespace: string, claim: string): Promise<PodRef[]>;
  /** Deletes the pod (graceful); false when it was gone already. */
  deletePod(pod: PodRef): Promise<boolean>;
  /** VolumeAttachments whose source is PV `pvName`. */
  attachmentsOf(pvName: string): Promise<AttachmentInfo[]>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

/** A PersistentVolume (wire form or client-node's V1PersistentVolume) → its claim. */
export function pvClaimFromObject(obj: unknown): PvClaim {
  if (!isObject(obj) || !isObject(obj.metadata) || str(obj.metadata.name) === undefined) throw invalidArgument("not a PersistentVolume object (no metadata.name)");
  const ref = isObject(obj.spec) && isObject(obj.spec.claimRef) ? obj.spec.claimRef : undefined;
  const namespace = str(ref?.namespace);
  const name = str(ref?.name);
  return { pvName: obj.metadata.name as string, ...(namespace !== undefined && name !== undefined && { claim: { namespace, name } }) };
}

/** Whether a Pod (wire form) mounts PVC `claim` (spec.volumes[].persistentVolumeClaim.claimName). */
export function podUsesClaim(obj: unknown, claim: string): boolean {
  if (!isObject(obj) || !isObject(obj.spec) || !Array.isArray(obj.spec.volumes)) return false;
  return obj.spec.volumes.some((v) => isObject(v) && isObject(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName === claim);
}

export function podRefFromObject(obj: unknown): PodRef {
  if (!isObject(obj) || !isObject(obj.metadata)) throw invalidArgument("not a Pod object (no metadata)");
  const name = str(obj.metadata.name);
  const namespace = str(obj.metadata.namespace);
  if (name === undefined || namespace === undefined) throw invalidArgument("Pod object lacks metadata.name or namespace");
  const node = isObject(obj.spec) ? str(obj.spec.nodeName) : undefined;
  return { namespace, name, ...(node !== undefined && { node }) };
}

/** A VolumeAttachment (storage.k8s.io/v1, wire form) → AttachmentInfo; undefined for one that is not of a PV. */
export function attachmentFromObject(obj: unknown): AttachmentInfo | undefined {
  if (!isObject(obj) || !isObject(obj.metadata) || !isObject(obj.spec)) throw invalidArgument("not a VolumeAttachment object (no metadata or spec)");
  const name = str(obj.metadata.name);
  const node = str(obj.spec.nodeName);
  const pvName = isObject(obj.spec.source) ? str(obj.spec.source.persistentVolumeName) : undefined;
  if (name === undefined || node === undefined) throw invalidArgument("VolumeAttachment lacks metadata.name or spec.nodeName");
  if (pvName === undefined) return undefined;
  const attached = isObject(obj.status) && obj.status.attached === true;
  const deletion = obj.metadata.deletionTimestamp;
  return { name, node, pvName, attached, deleting: deletion !== undefined && deletion !== null };
}
