import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import type { CreateVolumeResponse__Output } from "../../src/gen/csi/v1/CreateVolumeResponse.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";

/**
 * docs/describe-pv.md shows what `kubectl describe pv` prints for a zcsi volume. Its samples
 * are produced here from a real CreateVolume response: the controller creates the volume on
 * a real pool, and the PersistentVolume is built from the response the way the
 * external-provisioner builds it (driver, volume handle = volume_id, volume attributes =
 * volume_context plus the provisioner's identity, capacity = capacity_bytes). Only the
 * test pool's random names are replaced by the ones the docs use.
 *
 * When the output changes on purpose, run with ZCSI_UPDATE_DOCS=1 to rewrite the samples.
 */

const DOC = resolve(import.meta.dirname, "../../docs/describe-pv.md");
const DRIVER = "zfs.zcsi.dev";
const PV_NAME = "pvc-5f0c6d1e-8a3b-4c55-9d61-2b7e0a4f9c13";
// The external-provisioner's identity: <start time in ms>-<random 0..9999>-<driver>; any run's value.
const PROVISIONER_IDENTITY = `1763700000000-8081-${DRIVER}`;

let env: ControllerEnv;

/** The example StorageClass `zfs` (deploy/examples/storageclass.yaml) the PVC of the sample uses. */
const storageClass = parseAllDocuments(readFileSync(resolve(import.meta.dirname, "../../deploy/examples/storageclass.yaml"), "utf8"))
  .map((d) => d.toJS() as { metadata: { name: string }; parameters: Record<string, string>; mountOptions?: string[]; reclaimPolicy: string })
  .find((sc) => sc.metadata.name === "zfs")!;

beforeAll(async () => {
  // 2 GiB (a sparse image): room for the 1 GiB volume of the sample.
  env = await startControllerEnv({ hostNames: ["pool-1"], poolSizeMiB: 2048 });
});
afterAll(async () => {
  await env?.stop();
});

/** resource.NewQuantity(bytes, BinarySI).String(), for the sizes this test uses. */
function binaryQuantity(bytes: bigint): string {
  for (const [suffix, unit] of [["Ti", 1n << 40n], ["Gi", 1n << 30n], ["Mi", 1n << 20n], ["Ki", 1n << 10n]] as const) {
    if (bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return bytes.toString();
}

/** The PersistentVolume the external-provisioner (v6) makes from a CreateVolume response. */
function persistentVolume(res: CreateVolumeResponse__Output): Record<string, unknown> {
  const volume = res.volume!;
  return {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: {
      name: PV_NAME,
      annotations: { "pv.kubernetes.io/provisioned-by": DRIVER },
      finalizers: ["external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection"],
    },
    spec: {
      accessModes: ["ReadWriteMany"],
      ...(storageClass.mountOptions && { mountOptions: storageClass.mountOptions }),
      capacity: { storage: binaryQuantity(BigInt(volume.capacityBytes)) },
      claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: "default", name: "data" },
      csi: {
        driver: DRIVER,
        volumeHandle: volume.volumeId,
        volumeAttributes: { ...volume.volumeContext, "storage.kubernetes.io/csiProvisionerIdentity": PROVISIONER_IDENTITY },
      },
      // GenerateVolumeNodeAffinity: one term per accessible topology, `In` per segment.
      ...(volume.accessibleTopology.length > 0 && {
        nodeAffinity: {
          required: {
            nodeSelectorTerms: volume.accessibleTopology.map((t) => ({
              matchExpressions: Object.entries(t.segments).map(([key, value]) => ({ key, operator: "In", values: [value] })),
            })),
          },
        },
      }),
      persistentVolumeReclaimPolicy: storageClass.reclaimPolicy,
      storageClassName: storageClass.metadata.name,
      volumeMode: "Filesystem",
    },
    status: { phase: "Bound" },
  };
}

/**
 * `kubectl describe pv` (k8s.io/kubectl describePersistentVolume and
 * printCSIPersistentVolumeSource), laid out as its tabwriter does: a column block's cells
 * are padded to the widest cell plus two spaces.
 */
function describePv(pv: Record<string, unknown>): string {
  const meta = pv.metadata as { name: string; annotations: Record<string, string>; finalizers: string[] };
  const spec = pv.spec as {
    capacity: { storage: string };
    claimRef: { namespace: string; name: string };
    csi: { driver: string; volumeHandle: string; volumeAttributes: Record<string, string> };
    nodeAffinity?: { required: { nodeSelectorTerms: { matchExpressions: { key: string; operator: string; values: string[] }[] }[] } };
    persistentVolumeReclaimPolicy: string;
    storageClassName: string;
    volumeMode: string;
  };
  const block = (rows: Array<[string, string]>): string[] => {
    const width = Math.max(...rows.map(([cell]) => cell.length)) + 2;
    return rows.map(([cell, rest]) => `${cell.padEnd(width)}${rest}`.trimEnd());
  };
  const annotations = Object.entries(meta.annotations).sort(([a], [b]) => (a < b ? -1 : 1));
  const top = block([
    ["Name:", meta.name],
    ["Labels:", "<none>"],
    ...annotations.map(([k, v], i): [string, string] => [i === 0 ? "Annotations:" : "", `${k}: ${v}`]),
    ["Finalizers:", `[${meta.finalizers.join(" ")}]`],
    ["StorageClass:", spec.storageClassName],
    ["Status:", "Bound"],
    ["Claim:", `${spec.claimRef.namespace}/${spec.claimRef.name}`],
    ["Reclaim Policy:", spec.persistentVolumeReclaimPolicy],
    ["Access Modes:", "RWX"],
    ["VolumeMode:", spec.volumeMode],
    ["Capacity:", spec.capacity.storage],
    // printVolumeNodeAffinity / printNodeSelectorTermsMultilineWithIndent.
    ...((): Array<[string, string]> => {
      const terms = spec.nodeAffinity?.required.nodeSelectorTerms;
      if (!terms) return [["Node Affinity:", "<none>"]];
      return [
        ["Node Affinity:", ""],
        ["  Required Terms:", ""],
        ...terms.flatMap((term, i) =>
          term.matchExpressions.map((e, j): [string, string] => [j === 0 ? `    Term ${i}:` : "    ", `${e.key} ${e.operator.toLowerCase()} [${e.values.join(", ")}]`]),
        ),
      ];
    })(),
    ["Message:", ""],
  ]);
  const attributes = Object.entries(spec.csi.volumeAttributes).sort(([a], [b]) => (a < b ? -1 : 1));
  const source = block([
    ["    Type:", "CSI (a Container Storage Interface (CSI) volume source)"],
    ["    Driver:", spec.csi.driver],
    ["    FSType:", ""],
    ["    VolumeHandle:", spec.csi.volumeHandle],
    ["    ReadOnly:", "false"],
    ...attributes.map(([k, v], i): [string, string] => [i === 0 ? "    VolumeAttributes:" : "        ", `    ${k}=${v}`]),
    ["Events:", "<none>"],
  ]);
  return [...top, "Source:", ...source].join("\n");
}

/** The body of the fenced block that follows `<!-- sample: NAME -->` in the doc: [start, end) of its lines. */
function sampleBlock(doc: string, name: string): { start: number; end: number; text: string } {
  const marker = `<!-- sample: ${name} -->`;
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`docs/describe-pv.md has no ${marker}`);
  const start = doc.indexOf("\n", doc.indexOf("```", at)) + 1;
  let end = start;
  while (!doc.startsWith("```", end)) {
    const next = doc.indexOf("\n", end);
    if (next < 0) throw new Error(`the ${name} sample in docs/describe-pv.md is not closed`);
    end = next + 1;
  }
  return { start, end, text: doc.slice(start, end).replace(/\n$/, "") };
}

describe("docs/describe-pv.md", () => {
  it("shows the PersistentVolume and `kubectl describe pv` of a volume the controller really created", async () => {
    const host = env.hosts[0]!;
    const res = await env.client.createVolume({
      name: PV_NAME,
      capacityRange: { requiredBytes: String(1n << 30n) },
      volumeCapabilities: [{ mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      // What the StorageClass passes (but compression=lz4, which zfs-fuse predates), plus
      // the provisioner's --extra-create-metadata.
      parameters: {
        ...Object.fromEntries(Object.entries(storageClass.parameters).filter(([k]) => k !== "compression")),
        "csi.storage.k8s.io/pvc/name": "data",
        "csi.storage.k8s.io/pvc/namespace": "default",
        "csi.storage.k8s.io/pv/name": PV_NAME,
      },
    });
    // The volume context names where the data lives, and it is true on the pool.
    const context = res.volume!.volumeContext;
    expect(context).toEqual({ poolHost: "pool-1", dataset: `${host.parent}/${PV_NAME}`, mountpoint: `${host.mountRoot}/${PV_NAME}` });
    const mounted = await env.zfs("get", "-H", "-o", "value", "mountpoint,mounted,zcsi:pvc", context.dataset!);
    expect(mounted.stdout.split("\n").slice(0, 3)).toEqual([context.mountpoint, "yes", "default/data"]);

    // The docs use the names of deploy/base/config.yaml instead of the test pool's.
    // Mount root first: on the VM it contains the parent's name (`/mnt/<pool>/k8s`).
    const normalize = (text: string): string => text.split(host.mountRoot).join("/tank/k8s").split(host.parent).join("tank/k8s");
    const pv = persistentVolume(res);
    const samples = {
      "pv-yaml": normalize(stringify(pv, { lineWidth: 0 }).trimEnd()),
      describe: normalize(describePv(pv)),
    };

    let doc = readFileSync(DOC, "utf8");
    if (process.env.ZCSI_UPDATE_DOCS === "1") {
      for (const [name, text] of Object.entries(samples)) {
        const block = sampleBlock(doc, name);
        doc = `${doc.slice(0, block.start)}${text}\n${doc.slice(block.end)}`;
      }
      writeFileSync(DOC, doc);
    }
    for (const [name, text] of Object.entries(samples)) {
      expect(sampleBlock(doc, name).text, `sample ${name} in docs/describe-pv.md (ZCSI_UPDATE_DOCS=1 rewrites it)`).toBe(text);
    }
    expect(join(host.mountRoot, PV_NAME)).toBe(context.mountpoint);
  });
});
