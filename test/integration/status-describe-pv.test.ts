import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { describePv, provisionedPv, pvYaml, recordedPv } from "../harness/describe-pv.js";

/**
 * docs/describe-pv.md shows what `kubectl describe pv` prints for a zcsi volume. Its samples
 * start from the PersistentVolume csi-provisioner created in a real cluster
 * (test/fixtures/k8s/recorded/pv-provisioned.yaml): the controller creates a volume of the
 * same name on a real pool, and only what the provisioner takes from the CreateVolume response
 * is replaced in the recorded PV (harness/describe-pv.ts, provisionedPv). describePv, which
 * lays it out as kubectl does, is itself checked against the recorded `kubectl describe pv`
 * (test/unit/describe-pv.test.ts). Only the test pool's random names are replaced by the ones
 * the docs use.
 *
 * When the output changes on purpose, run with ZCSI_UPDATE_DOCS=1 to rewrite the samples.
 */

const DOC = resolve(import.meta.dirname, "../../docs/describe-pv.md");
const RECORDED = recordedPv();
const PV_NAME = RECORDED.metadata.name;

let env: ControllerEnv;

/** The parameters of the example StorageClass `zfs` (deploy/examples/storageclass.yaml), which the request carries. */
const storageClass = parseAllDocuments(readFileSync(resolve(import.meta.dirname, "../../deploy/examples/storageclass.yaml"), "utf8"))
  .map((d) => d.toJS() as { metadata: { name: string }; parameters: Record<string, string> })
  .find((sc) => sc.metadata.name === "zfs")!;

beforeAll(async () => {
  // 2 GiB (a sparse image): room for the 1 GiB volume of the sample.
  env = await startControllerEnv({ hostNames: ["pool-1"], poolSizeMiB: 2048 });
});
afterAll(async () => {
  await env?.stop();
});

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
  it("shows the recorded PersistentVolume as csi-provisioner makes it from a real CreateVolume, and `kubectl describe pv` of it", async () => {
    const host = env.hosts[0]!;
    const res = await env.client.createVolume({
      name: PV_NAME,
      capacityRange: { requiredBytes: String(1n << 30n) },
      volumeCapabilities: [{ mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      // What the StorageClass passes (but compression=lz4, which zfs-fuse predates), plus
      // the provisioner's --extra-create-metadata for the recorded claim.
      parameters: {
        ...Object.fromEntries(Object.entries(storageClass.parameters).filter(([k]) => k !== "compression")),
        "csi.storage.k8s.io/pvc/name": RECORDED.spec.claimRef.name,
        "csi.storage.k8s.io/pvc/namespace": RECORDED.spec.claimRef.namespace,
        "csi.storage.k8s.io/pv/name": PV_NAME,
      },
    });
    // The volume context names where the data lives and why there, and it is true on the pool.
    const context = res.volume!.volumeContext;
    expect(context).toEqual({ poolHost: "pool-1", dataset: `${host.parent}/${PV_NAME}`, mountpoint: `${host.mountRoot}/${PV_NAME}`, placement: "most-free" });
    const mounted = await env.zfs("get", "-H", "-o", "value", "mountpoint,mounted,zcsi:pvc", context.dataset!);
    expect(mounted.stdout.split("\n").slice(0, 3)).toEqual([context.mountpoint, "yes", `${RECORDED.spec.claimRef.namespace}/${RECORDED.spec.claimRef.name}`]);

    // deploy/ runs the provisioner with --feature-gates=Topology=true: the PV gets a node affinity.
    const pv = provisionedPv(res, { topology: true });
    // What csi-provisioner always adds is there, as recorded.
    expect(pv.metadata.annotations).toEqual({
      "pv.kubernetes.io/provisioned-by": "zfs.zcsi.dev",
      "volume.kubernetes.io/provisioner-deletion-secret-name": "",
      "volume.kubernetes.io/provisioner-deletion-secret-namespace": "",
    });
    expect(pv.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"]).toBe(RECORDED.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"]);

    // The docs use the names of deploy/base/config.yaml instead of the test pool's.
    // Mount root first: on the VM it contains the parent's name (`/mnt/<pool>/k8s`).
    const normalize = (text: string): string => text.split(host.mountRoot).join("/tank/k8s").split(host.parent).join("tank/k8s");
    const samples = {
      "pv-yaml": normalize(pvYaml(pv)),
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
