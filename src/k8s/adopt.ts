import { createHash } from "node:crypto";

/**
 * The PersistentVolume and PersistentVolumeClaim of an adopted dataset (`zcsi adopt`,
 * docs/coming-from-hostpath.md), as wire objects shaped like the PVs the external-provisioner
 * makes for zcsi (test/fixtures/k8s/recorded/pv-provisioned.yaml): same CSI driver, a volume
 * handle, and volumeAttributes poolHost/dataset/mountpoint. The PV is pre-bound to the claim
 * (claimRef) and the claim to the PV (volumeName), with one storageClassName, so the two bind
 * to each other and nothing else. Reclaim policy Retain: deleting the PVC leaves the PV (and
 * the dataset) alone; the controller never destroys an adopted dataset anyway.
 */

export interface AdoptionSpec {
  readonly driverName: string;
  readonly volumeId: string;
  readonly poolHost: string;
  readonly dataset: string;
  readonly mountpoint: string;
  readonly namespace: string;
  readonly claimName: string;
  readonly readOnly: boolean;
  /** Kubernetes quantity in bytes (the dataset's limit, or what `df` shows without one). */
  readonly capacityBytes: bigint;
  /** "" (the default) binds by name only and keeps the default StorageClass from claiming the PVC. */
  readonly storageClassName: string;
}

export type WireObject = Record<string, unknown> & { metadata: Record<string, unknown> };

/** A PV found in the cluster, as far as adoption cares: what data it points at, and its claim. */
export interface PvSummary {
  readonly name: string;
  readonly driver?: string;
  readonly volumeHandle?: string;
  readonly poolHost?: string;
  readonly dataset?: string;
  readonly readOnly: boolean;
  /** hostPath or local volume path (a PV that mounts a directory of a node directly). */
  readonly path?: string;
  readonly claim?: { readonly namespace: string; readonly name: string };
}

/** What `zcsi adopt` needs of the API (the client-node adapter is kube-adopt.ts; tests use the fake API server). */
export interface AdoptionApi {
  listPvs(): Promise<PvSummary[]>;
  /** Creates the object; AlreadyExists when one of that name exists. */
  createPv(pv: WireObject): Promise<void>;
  createPvc(namespace: string, pvc: WireObject): Promise<void>;
  /** The PVC's spec.volumeName, "" when it has none, undefined when there is no such PVC. */
  pvcVolumeName(namespace: string, name: string): Promise<string | undefined>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

/** A PV object (wire or client-node form) → PvSummary. */
export function pvSummary(pv: unknown): PvSummary | undefined {
  if (!isObject(pv) || !isObject(pv.metadata) || !isObject(pv.spec)) return undefined;
  const name = str(pv.metadata.name);
  if (name === undefined) return undefined;
  const spec = pv.spec;
  const csi = isObject(spec.csi) ? spec.csi : {};
  const attributes = isObject(csi.volumeAttributes) ? csi.volumeAttributes : {};
  const claim = isObject(spec.claimRef) ? { namespace: str(spec.claimRef.namespace), name: str(spec.claimRef.name) } : undefined;
  const path = (isObject(spec.hostPath) ? str(spec.hostPath.path) : undefined) ?? (isObject(spec.local) ? str(spec.local.path) : undefined);
  const pick = <K extends string>(key: K, value: string | undefined): { [P in K]?: string } => (value === undefined ? {} : ({ [key]: value } as { [P in K]?: string }));
  return {
    name,
    ...pick("driver", str(csi.driver)),
    ...pick("volumeHandle", str(csi.volumeHandle)),
    ...pick("poolHost", str(attributes.poolHost)),
    ...pick("dataset", str(attributes.dataset)),
    readOnly: csi.readOnly === true,
    ...pick("path", path),
    ...(claim?.namespace !== undefined && claim.name !== undefined && { claim: { namespace: claim.namespace, name: claim.name } }),
  };
}

/**
 * The PV's name: `adopted-<readable part>-<hash of the volume id>`, a valid DNS subdomain
 * whatever the dataset is called, distinct per volume id (so per read-only namespace too).
 */
export function adoptedPvName(volumeId: string, dataset: string): string {
  const hash = createHash("sha256").update(volumeId).digest("hex").slice(0, 10);
  const readable = dataset.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 200);
  return `adopted-${readable}-${hash}`;
}

/** The PV and the PVC bound to it. */
export function adoptionObjects(spec: AdoptionSpec): { pv: WireObject; pvc: WireObject } {
  const pvName = adoptedPvName(spec.volumeId, spec.dataset);
  const accessModes = [spec.readOnly ? "ReadOnlyMany" : "ReadWriteMany"];
  const storage = spec.capacityBytes.toString();
  const labels = { "app.kubernetes.io/managed-by": "zcsi-adopt" };
  const pv: WireObject = {
    apiVersion: "v1",
    kind: "PersistentVolume",
    // No pv.kubernetes.io/provisioned-by: the external-provisioner must never treat it as its own.
    metadata: { name: pvName, labels },
    spec: {
      accessModes,
      capacity: { storage },
      claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: spec.namespace, name: spec.claimName },
      csi: {
        driver: spec.driverName,
        volumeHandle: spec.volumeId,
        // Kubernetes passes readOnly to ControllerPublishVolume and NodePublishVolume: every mount is read-only.
        ...(spec.readOnly && { readOnly: true }),
        volumeAttributes: { poolHost: spec.poolHost, dataset: spec.dataset, mountpoint: spec.mountpoint, placement: "adopted" },
      },
      persistentVolumeReclaimPolicy: "Retain",
      storageClassName: spec.storageClassName,
      volumeMode: "Filesystem",
    },
  };
  const pvc: WireObject = {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name: spec.claimName, namespace: spec.namespace, labels },
    spec: {
      accessModes,
      resources: { requests: { storage } },
      storageClassName: spec.storageClassName,
      volumeMode: "Filesystem",
      volumeName: pvName,
    },
  };
  return { pv, pvc };
}
