import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml, stringify } from "yaml";
import type { CreateVolumeResponse__Output } from "../../src/gen/csi/v1/CreateVolumeResponse.js";

/**
 * PersistentVolumes as a cluster shows them, for docs/describe-pv.md and its test. Both start
 * from objects recorded from a real cluster (test/fixtures/k8s/recorded/, copied from
 * ../shared/reference/k8s-recorded/): the PV csi-provisioner created, and `kubectl describe pv`
 * of it. describePv is checked against that recording (test/unit/describe-pv.test.ts).
 */

export const RECORDED = join(import.meta.dirname, "../fixtures/k8s/recorded");

export interface PersistentVolume {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations: Record<string, string>; finalizers: string[]; [key: string]: unknown };
  spec: {
    accessModes: string[];
    capacity: { storage: string };
    claimRef: { namespace: string; name: string; [key: string]: unknown };
    csi: { driver: string; volumeHandle: string; volumeAttributes: Record<string, string> };
    nodeAffinity?: { required: { nodeSelectorTerms: { matchExpressions: { key: string; operator: string; values: string[] }[] }[] } };
    mountOptions?: string[];
    persistentVolumeReclaimPolicy: string;
    storageClassName: string;
    volumeMode: string;
  };
  status: { phase: string; [key: string]: unknown };
}

/** The PV csi-provisioner created in the recorded cluster, as `kubectl get pv -o yaml` printed it. */
export function recordedPv(): PersistentVolume {
  return parseYaml(readFileSync(join(RECORDED, "pv-provisioned.yaml"), "utf8")) as PersistentVolume;
}

/** The recorded PV file as it is. */
export function recordedPvText(): string {
  return readFileSync(join(RECORDED, "pv-provisioned.yaml"), "utf8").replace(/\n$/, "");
}

/**
 * `kubectl get pv -o yaml` of a PV: kubectl's YAML printer (sigs.k8s.io/yaml, from JSON) sorts
 * map keys, does not indent list items below their key, and quotes strings that YAML 1.1 would
 * read as something else (timestamps, numbers).
 */
export function pvYaml(pv: PersistentVolume): string {
  return stringify(pv, { version: "1.1", lineWidth: 0, sortMapEntries: true, indentSeq: false }).replace(/\n$/, "");
}

/** `kubectl describe pv` of the recorded PV (after its expansion to 2Gi), as printed. */
export function recordedDescribe(): string {
  return readFileSync(join(RECORDED, "describe-pv-pv1.txt"), "utf8").replace(/\n$/, "");
}

/** resource.NewQuantity(bytes, BinarySI).String(), for whole binary units. */
export function binaryQuantity(bytes: bigint): string {
  for (const [suffix, unit] of [["Ti", 1n << 40n], ["Gi", 1n << 30n], ["Mi", 1n << 20n], ["Ki", 1n << 10n]] as const) {
    if (bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return bytes.toString();
}

/** Fields the API server sets on any object; the docs leave them out. */
const SERVER_METADATA = ["uid", "resourceVersion", "creationTimestamp"];

/**
 * The recorded PV as csi-provisioner would have made it from `res`: only what the provisioner
 * takes from the CreateVolume response changes (volume handle = volume_id, volume attributes =
 * volume_context plus its own csiProvisionerIdentity, which it always adds, capacity =
 * capacity_bytes, and with --feature-gates=Topology=true a node affinity from
 * accessible_topology, one term per topology and `In` per segment: GenerateVolumeNodeAffinity).
 * Everything else, annotations included, is the recording's; the fields the API server sets
 * are left out.
 */
export function provisionedPv(res: CreateVolumeResponse__Output, options: { topology: boolean }): PersistentVolume {
  const pv = recordedPv();
  const volume = res.volume!;
  for (const field of SERVER_METADATA) delete pv.metadata[field];
  delete pv.spec.claimRef.resourceVersion;
  delete pv.spec.claimRef.uid;
  delete pv.status.lastPhaseTransitionTime;
  const identity = pv.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"];
  if (identity === undefined) throw new Error("the recorded PV has no csiProvisionerIdentity");
  pv.spec.capacity.storage = binaryQuantity(BigInt(volume.capacityBytes));
  pv.spec.csi.volumeHandle = volume.volumeId;
  pv.spec.csi.volumeAttributes = { ...volume.volumeContext, "storage.kubernetes.io/csiProvisionerIdentity": identity };
  if (options.topology && volume.accessibleTopology.length > 0) {
    pv.spec.nodeAffinity = {
      required: {
        nodeSelectorTerms: volume.accessibleTopology.map((t) => ({
          matchExpressions: Object.entries(t.segments).map(([key, value]) => ({ key, operator: "In", values: [value] })),
        })),
      },
    };
  }
  return pv;
}

/**
 * `kubectl describe pv` (k8s.io/kubectl describePersistentVolume, printCSIPersistentVolumeSource),
 * laid out as its tabwriter does: within a block of tab-separated lines every first cell is
 * padded to the widest plus two spaces, an empty value too (hence the trailing spaces kubectl
 * prints after `Message:` or an empty annotation).
 */
/** An Event as `kubectl describe` lists it (Age as kubectl printed it: the test passes the recorded one). */
export interface DescribedEvent {
  readonly type: string;
  readonly reason: string;
  readonly age: string;
  readonly from: string;
  readonly message: string;
}

// kubectl printAnnotationsMultiline: a value longer than this (with its key) goes on its own line, cut.
const MAX_ANNOTATION_LEN = 140;

/** One annotation's lines: `key: value`, or `key:` then the value indented two spaces, cut to 138 characters plus `...`. */
function annotationLines(key: string, value: string): string[] {
  const v = value.replace(/\n$/, "");
  if (v.length + key.length + 2 <= MAX_ANNOTATION_LEN && !v.includes("\n")) return [`${key}: ${v}`];
  return [`${key}:`, ...v.split("\n").map((s) => `  ${s.length > MAX_ANNOTATION_LEN - 2 ? `${s.slice(0, MAX_ANNOTATION_LEN - 2)}...` : s}`)];
}

/** describe's Events table (DescribeEvents): a tabwriter block of its own, indented two spaces. */
function eventLines(events: readonly DescribedEvent[]): string[] {
  const rows = [["Type", "Reason", "Age", "From", "Message"], ["----", "------", "----", "----", "-------"], ...events.map((e) => [e.type, e.reason, e.age, e.from, e.message])];
  const widths = [0, 1, 2, 3].map((c) => Math.max(...rows.map((r) => (r[c] ?? "").length + (c === 0 ? 2 : 0))) + 2);
  return rows.map((r) => r.map((cell, c) => (c === 0 ? `  ${cell}` : cell).padEnd(c < 4 ? (widths[c] ?? 0) : 0)).join(""));
}

export function describePv(pv: PersistentVolume, events: readonly DescribedEvent[] = []): string {
  const { metadata: meta, spec } = pv;
  const block = (rows: Array<[string, string]>): string[] => {
    const width = Math.max(...rows.map(([cell]) => cell.length)) + 2;
    return rows.map(([cell, rest]) => `${cell.padEnd(width)}${rest}`);
  };
  const annotations = Object.entries(meta.annotations).sort(([a], [b]) => (a < b ? -1 : 1));
  const terms = spec.nodeAffinity?.required.nodeSelectorTerms;
  const top = block([
    ["Name:", meta.name],
    ["Labels:", "<none>"],
    ...(annotations.length === 0
      ? [["Annotations:", "<none>"] as [string, string]]
      : annotations.flatMap(([k, v], i) => annotationLines(k, v).map((line, j): [string, string] => [i === 0 && j === 0 ? "Annotations:" : "", line]))),
    ["Finalizers:", `[${meta.finalizers.join(" ")}]`],
    ["StorageClass:", spec.storageClassName],
    ["Status:", pv.status.phase],
    ["Claim:", `${spec.claimRef.namespace}/${spec.claimRef.name}`],
    ["Reclaim Policy:", spec.persistentVolumeReclaimPolicy],
    ["Access Modes:", spec.accessModes.map((m) => ({ ReadWriteOnce: "RWO", ReadOnlyMany: "ROX", ReadWriteMany: "RWX", ReadWriteOncePod: "RWOP" })[m] ?? m).join(",")],
    ["VolumeMode:", spec.volumeMode],
    ["Capacity:", spec.capacity.storage],
    // printVolumeNodeAffinity / printNodeSelectorTermsMultilineWithIndent.
    ...(terms === undefined
      ? [["Node Affinity:", "<none>"] as [string, string]]
      : [
          ["Node Affinity:", ""] as [string, string],
          ["  Required Terms:", ""] as [string, string],
          ...terms.flatMap((term, i) =>
            term.matchExpressions.map((e, j): [string, string] => [j === 0 ? `    Term ${i}:` : "    ", `${e.key} ${e.operator.toLowerCase()} [${e.values.join(", ")}]`]),
          ),
        ]),
    ["Message:", ""],
  ]);
  const attributes = Object.entries(spec.csi.volumeAttributes).sort(([a], [b]) => (a < b ? -1 : 1));
  const source = block([
    ["    Type:", "CSI (a Container Storage Interface (CSI) volume source)"],
    ["    Driver:", spec.csi.driver],
    ["    FSType:", ""],
    ["    VolumeHandle:", spec.csi.volumeHandle],
    ["    ReadOnly:", "false"],
    ...attributes.map(([k, v], i): [string, string] => [i === 0 ? "    VolumeAttributes:" : "", `    ${k}=${v}`]),
    ...(events.length === 0 ? [["Events:", "<none>"] as [string, string]] : []),
  ]);
  return [...top, "Source:", ...source, ...(events.length === 0 ? [] : ["Events:", ...eventLines(events)])].join("\n");
}
