/**
 * What a failover (and a planned move) needs to make pods re-attach a volume to its new home:
 * the PVC bound to the volume's PV, the VolumeAttachments of that PV (deleting one makes the
 * external-attacher unpublish it and the kubelet attach again, through ControllerPublish, to the
 * new home), and the pods that use the PVC (deleted: their controllers recreate them). The
 * client-node adapter is kube-mobility.ts; tests use it against the fake API server.
 */

export interface ClaimRef {
  readonly namespace: string;
  readonly name: string;
}

export interface VolumeWorkloads {
  /** The PVC a PV is bound to (spec.claimRef); undefined when the PV is missing or unbound. */
  pvClaim(pvName: string): Promise<ClaimRef | undefined>;
  /** Names of the VolumeAttachments of the PV attached by `attacher` (the CSI driver name). */
  attachments(pvName: string, attacher: string): Promise<string[]>;
  /** False when it was gone already. */
  deleteAttachment(name: string): Promise<boolean>;
  /** Names of the pods in the claim's namespace that mount the claim. */
  podsUsing(claim: ClaimRef): Promise<string[]>;
  /** False when it was gone already. */
  deletePod(namespace: string, name: string): Promise<boolean>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** spec.claimRef of a PersistentVolume object (wire or client-node form). */
export function claimOfPv(pv: unknown): ClaimRef | undefined {
  const ref = isObject(pv) && isObject(pv.spec) ? pv.spec.claimRef : undefined;
  if (!isObject(ref) || typeof ref.namespace !== "string" || typeof ref.name !== "string") return undefined;
  return { namespace: ref.namespace, name: ref.name };
}

/** Whether a VolumeAttachment (wire or client-node form) attaches `pvName` by `attacher`. */
export function attachesPv(va: unknown, pvName: string, attacher: string): boolean {
  if (!isObject(va) || !isObject(va.spec)) return false;
  const source = va.spec.source;
  return va.spec.attacher === attacher && isObject(source) && source.persistentVolumeName === pvName;
}

/** Whether a pod (wire or client-node form) has a volume from PVC `claim`. */
export function podUsesClaim(pod: unknown, claim: string): boolean {
  const volumes = isObject(pod) && isObject(pod.spec) ? pod.spec.volumes : undefined;
  if (!Array.isArray(volumes)) return false;
  return volumes.some((v) => isObject(v) && isObject(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName === claim);
}
