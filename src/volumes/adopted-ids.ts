import { createHash } from "node:crypto";
import { invalidArgument, notFound } from "../errors.js";
import type { PoolHostConfig } from "../config.js";
import { ADOPTED_REPLICA_PREFIX } from "./properties.js";

/**
 * Adopted volumes: datasets zcsi did not create, served as PVs because the operator said so
 * (`zcsi adopt`, docs/coming-from-hostpath.md). Their ids say so, so every role tells them
 * from zcsi's own volumes without a lookup:
 *
 *   `<poolHost>:<dataset>#adopted`           the one read-write adoption of the dataset
 *   `<poolHost>:<dataset>#adopted-ro-<ns>`   a read-only adoption into namespace <ns>
 *
 * `#` cannot occur in a ZFS dataset name, so the mark cannot be forged by a dataset name, and
 * parseVolumeId (ids.ts) refuses these ids: code that handles only zcsi's own volumes (delete,
 * resize, mobility) sees an adopted id as NOT_FOUND and so can never destroy or move one.
 * A read-only adoption is one id per namespace because Kubernetes keys staging paths and
 * VolumeAttachments by volume handle: two PVs with one handle would share them.
 */
export const ADOPTED_MARK = "#adopted";
const READ_ONLY_MARK = "#adopted-ro-";

export interface AdoptedRef {
  readonly poolHost: string;
  readonly dataset: string;
  readonly host: PoolHostConfig;
  readonly readOnly: boolean;
  /** The namespace of a read-only adoption. */
  readonly namespace?: string;
  /** The whole id: the per-volume lock key (it can never equal a zcsi volume's leaf). */
  readonly id: string;
}

/** ZFS dataset names as zcsi accepts them (zfs(8) component characters, no `.`/`..` components). */
const DATASET = /^[A-Za-z][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)+$/;
/** A Kubernetes namespace: a DNS-1123 label. */
export const NAMESPACE = /^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function isAdoptedId(volumeId: string): boolean {
  return volumeId.includes(ADOPTED_MARK);
}

export function formatAdoptedId(poolHost: string, dataset: string, access: { readOnly: boolean; namespace?: string }): string {
  if (!access.readOnly) return `${poolHost}:${dataset}${ADOPTED_MARK}`;
  if (access.namespace === undefined || !NAMESPACE.test(access.namespace)) throw invalidArgument(`a read-only adoption needs the PVC's namespace, got ${JSON.stringify(access.namespace)}`);
  return `${poolHost}:${dataset}${READ_ONLY_MARK}${access.namespace}`;
}

/**
 * Why `dataset` on `host` may not be adopted, or undefined when it may: it must be strictly
 * below one of the host's adoptRoots, never a pool's root, never the driver's parentDataset,
 * anything inside it, or any dataset that contains it (which would hand out zcsi's volumes).
 */
export function adoptionProblem(host: PoolHostConfig, dataset: string): string | undefined {
  if (!/^[A-Za-z][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)*$/.test(dataset) || dataset.split("/").some((c) => c === "." || c === "..")) return `${JSON.stringify(dataset)} is not a dataset name`;
  if (!DATASET.test(dataset)) return `${dataset} is a pool's root dataset; zcsi never adopts a whole pool`;
  const parent = host.parentDataset;
  if (dataset === parent || dataset.startsWith(`${parent}/`)) return `${dataset} is inside ${parent}, zcsi's own parent dataset on ${host.name}; its volumes are not adopted`;
  if (parent.startsWith(`${dataset}/`)) return `${dataset} contains ${parent}, zcsi's own parent dataset on ${host.name}`;
  const roots = host.adoptRoots ?? [];
  if (!roots.some((root) => dataset.startsWith(`${root}/`))) {
    return roots.length === 0
      ? `pool host ${host.name} lists no adoptRoots in the config, so nothing on it may be adopted`
      : `${dataset} is not below any of pool host ${host.name}'s adoptRoots (${roots.join(", ")})`;
  }
  return undefined;
}

/**
 * An adopted volume id, checked against the config: a configured pool host, a dataset the
 * config allows adopting. Anything else is NOT_FOUND (it cannot be a volume of ours), as
 * parseVolumeId answers for zcsi's own ids.
 */
export function parseAdoptedId(volumeId: string, hosts: readonly PoolHostConfig[], field = "volume_id"): AdoptedRef {
  if (volumeId === "") throw invalidArgument(`${field} is required`);
  const mark = volumeId.indexOf(ADOPTED_MARK);
  const colon = volumeId.indexOf(":");
  if (mark < 0 || colon <= 0 || colon > mark) throw notFound(`volume ${JSON.stringify(volumeId)} is not an adopted volume id`);
  const suffix = volumeId.slice(mark);
  let access: { readOnly: boolean; namespace?: string };
  if (suffix === ADOPTED_MARK) access = { readOnly: false };
  else if (suffix.startsWith(READ_ONLY_MARK) && NAMESPACE.test(suffix.slice(READ_ONLY_MARK.length))) access = { readOnly: true, namespace: suffix.slice(READ_ONLY_MARK.length) };
  else throw notFound(`volume ${JSON.stringify(volumeId)} does not exist (unknown adoption mark ${JSON.stringify(suffix)})`);
  const poolHost = volumeId.slice(0, colon);
  const dataset = volumeId.slice(colon + 1, mark);
  const host = hosts.find((h) => h.name === poolHost);
  if (!host) throw notFound(`volume ${JSON.stringify(volumeId)} does not exist (no configured pool host ${JSON.stringify(poolHost)})`);
  const problem = adoptionProblem(host, dataset);
  if (problem !== undefined) throw notFound(`volume ${JSON.stringify(volumeId)} does not exist: ${problem}`);
  return { poolHost, dataset, host, ...access, id: volumeId };
}

/**
 * The leaf of an adopted dataset's replica under a target's parentDataset:
 * `zcsi-adopted-<host>-<dataset, / as ->-<8 hex>`. The prefix is refused as a CreateVolume name
 * (ids.ts), so it never meets a volume or a volume's replica; the hash of the exact
 * `<host>:<dataset>` keeps `data/a-b` and `data/a/b`, or one dataset name on two hosts, apart.
 */
export function adoptedReplicaLeaf(poolHost: string, dataset: string): string {
  const hash = createHash("sha256").update(`${poolHost}:${dataset}`).digest("hex").slice(0, 8);
  const readable = `${poolHost}-${dataset}`.replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/\.\.+/g, ".").slice(0, 96);
  return `${ADOPTED_REPLICA_PREFIX}${readable}-${hash}`;
}
