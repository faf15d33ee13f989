import type { ClaimRef } from "./workloads.js";

/**
 * What `zcsi rollback` reads of Kubernetes besides pods and VolumeAttachments (workloads.ts):
 * the PVC's bound PV and its CSI volume handle, and a VolumeSnapshot's snapshot handle (through
 * its bound VolumeSnapshotContent, snapshot.storage.k8s.io/v1). Pure parsers here; the
 * client-node adapter is kube-claims.ts, tested against the fake API server.
 */

export interface ClaimVolume {
  /** spec.volumeName of the PVC. */
  readonly pvName: string;
  /** spec.csi.driver of the PV (undefined: not a CSI volume). */
  readonly driver?: string;
  /** spec.csi.volumeHandle of the PV: the zcsi volume id. */
  readonly volumeHandle?: string;
}

export interface SnapshotHandle {
  /** status.boundVolumeSnapshotContentName of the VolumeSnapshot (undefined: not bound yet). */
  readonly content?: string;
  /** status.snapshotHandle of the content: `<poolHost>:<dataset>@<snapshot>`. */
  readonly handle?: string;
  /** spec.driver of the content. */
  readonly driver?: string;
}

export interface ClaimLookups {
  /** The PV a PVC is bound to; undefined when the PVC does not exist, NotFound-free. Unbound: no pvName → undefined too. */
  claimVolume(claim: ClaimRef): Promise<ClaimVolume | undefined>;
  /** The snapshot behind a VolumeSnapshot; undefined when there is no such VolumeSnapshot. */
  snapshotHandle(namespace: string, name: string): Promise<SnapshotHandle | undefined>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

/** spec.volumeName of a PVC (wire or client-node form). */
export function volumeNameOfClaim(pvc: unknown): string | undefined {
  return isObject(pvc) && isObject(pvc.spec) ? str(pvc.spec.volumeName) : undefined;
}

/** spec.csi of a PV (wire or client-node form). */
export function csiOfPv(pv: unknown): { driver?: string; volumeHandle?: string } {
  const csi = isObject(pv) && isObject(pv.spec) ? pv.spec.csi : undefined;
  if (!isObject(csi)) return {};
  const driver = str(csi.driver);
  const volumeHandle = str(csi.volumeHandle);
  return { ...(driver !== undefined && { driver }), ...(volumeHandle !== undefined && { volumeHandle }) };
}

/** status.boundVolumeSnapshotContentName of a VolumeSnapshot. */
export function boundContentOf(vs: unknown): string | undefined {
  return isObject(vs) && isObject(vs.status) ? str(vs.status.boundVolumeSnapshotContentName) : undefined;
}

/** status.snapshotHandle and spec.driver of a VolumeSnapshotContent. */
export function handleOfContent(vsc: unknown): { handle?: string; driver?: string } {
  const handle = isObject(vsc) && isObject(vsc.status) ? str(vsc.status.snapshotHandle) : undefined;
  const driver = isObject(vsc) && isObject(vsc.spec) ? str(vsc.spec.driver) : undefined;
  return { ...(handle !== undefined && { handle }), ...(driver !== undefined && { driver }) };
}
