import { createHash } from "node:crypto";

/**
 * Replica state on PersistentVolumes: after each run the replicator sets one annotation per
 * target host, so `kubectl describe pv` (and `kubectl get pv -o yaml`) shows where copies are
 * and how old they are (docs/replication.md).
 */

/** Annotations to set (string) or remove (null) on one PV: a JSON merge patch of metadata.annotations. */
export type AnnotationPatch = Readonly<Record<string, string | null>>;

export interface PvAnnotator {
  /** Merge-patches the PV's annotations. Resolves false when there is no such PV; throws Unavailable otherwise. */
  annotate(pvName: string, annotations: AnnotationPatch): Promise<boolean>;
}

export const REPLICA_ANNOTATION_PREFIX = "zcsi.dev/replica.";

/**
 * `zcsi.dev/home`: the copy that serves the volume and its epoch (`pool-2:tank/k8s/pvc-1 epoch=2`),
 * set by the replicator after each run from it and by zcsi migrate/failover when they promote.
 * The volume handle keeps naming the birth copy (it is immutable); this says where it lives now.
 */
export const HOME_ANNOTATION = "zcsi.dev/home";

export function homeAnnotationValue(home: { readonly host: string; readonly dataset: string }, epoch: number | undefined): string {
  return `${home.host}:${home.dataset} epoch=${epoch ?? 1}`;
}

// The name part of an annotation key (after the `/`) is at most 63 characters of
// [A-Za-z0-9-_.], starting and ending alphanumeric (Kubernetes qualified names).
const NAME_PART = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/**
 * `zcsi.dev/replica.<host>`. A pool host name too long for a key (node names may have 253
 * characters) is shortened with a hash so the key stays valid and distinct.
 */
export function replicaAnnotationKey(targetHost: string): string {
  const name = `replica.${targetHost}`;
  if (NAME_PART.test(name)) return `zcsi.dev/${name}`;
  const hash = createHash("sha256").update(targetHost).digest("hex").slice(0, 8);
  const head = targetHost.replace(/[^-A-Za-z0-9_.]/g, "_").slice(0, 63 - "replica.".length - 9).replace(/[^A-Za-z0-9]+$/, "");
  return `zcsi.dev/replica.${head}-${hash}`;
}
