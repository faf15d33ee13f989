import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { PvEvent } from "../../src/k8s/events.js";
import { HOME_ANNOTATION, homeAnnotationValue, replicaAnnotationKey } from "../../src/k8s/pv.js";
import { replicaAnnotationValue } from "../../src/replication/scheduler.js";
import { fenceEvents } from "../../src/roles/fence-events.js";
import { parse as parseYaml } from "yaml";
import { describePv, pvYaml, RECORDED, type PersistentVolume, recordedDescribe, recordedPv, recordedPvText } from "../harness/describe-pv.js";
import { k8sFixture } from "../harness/fake-k8s.js";

/**
 * The recorded objects (test/fixtures/k8s/recorded/, from a real Kubernetes 1.32 cluster with
 * the upstream csi-provisioner) keep the describe emulation and the hand-written fixtures honest.
 */
describe("objects recorded from a cluster", () => {
  it("pvYaml prints the recorded PV exactly as `kubectl get pv -o yaml` printed it", () => {
    expect(pvYaml(recordedPv())).toBe(recordedPvText());
  });

  it("describePv prints the recorded PV exactly as kubectl printed it", () => {
    expect(describePv(recordedPv())).toBe(recordedDescribe());
  });

  it("describePv prints a long annotation on its own line, cut, and the Events table, as kubectl printed a replicated volume's refused run", () => {
    const recorded = readFileSync(join(RECORDED, "describe-pv-repl1-refused.txt"), "utf8").replace(/\n$/, "");
    const name = "pvc-88084e86-6e01-48b5-8668-ad2a278f7787";
    const base = recordedPv();
    const { nodeAffinity: _none, ...spec } = base.spec;
    const message = recorded.split("\n").at(-1)!.replace(/^.*zcsi-replicator  /, "");
    const annotation = recorded.match(/zcsi\.dev\/replica\.poolhost2:\n\s+(.*)\.\.\.$/m)![1]!;
    const pv = {
      ...base,
      metadata: { ...base.metadata, name, annotations: { ...base.metadata.annotations, "zcsi.dev/replica.poolhost2": `${annotation} the snapshot that the rest of the value says` } },
      spec: {
        ...spec,
        storageClassName: "zfs-replicated",
        capacity: { storage: "1Gi" },
        claimRef: { ...spec.claimRef, name: "repl1" },
        csi: {
          ...spec.csi,
          volumeHandle: `poolhost:zk8s/k8s/${name}`,
          volumeAttributes: { dataset: `zk8s/k8s/${name}`, mountpoint: `/tank/k8s/${name}`, poolHost: "poolhost", "storage.kubernetes.io/csiProvisionerIdentity": "1796286638469-5914-zfs.zcsi.dev" },
        },
      },
    };
    expect(describePv(pv, [{ type: "Warning", reason: "ReplicationRefused", age: "19s", from: "zcsi-replicator", message }])).toBe(recorded);
  });

  it("the PV fixture of the API fake has what csi-provisioner always adds: two empty deletion-secret annotations, the identity attribute, both finalizers", () => {
    const recorded = recordedPv();
    const fixture = k8sFixture("pv") as unknown as ReturnType<typeof recordedPv>;
    expect(Object.keys(fixture.metadata.annotations).sort()).toEqual(Object.keys(recorded.metadata.annotations).sort());
    expect(recorded.metadata.annotations["volume.kubernetes.io/provisioner-deletion-secret-name"]).toBe("");
    expect(fixture.metadata.annotations["volume.kubernetes.io/provisioner-deletion-secret-name"]).toBe("");
    expect(fixture.metadata.annotations["volume.kubernetes.io/provisioner-deletion-secret-namespace"]).toBe("");
    expect(fixture.metadata.finalizers).toEqual(recorded.metadata.finalizers);
    const attributeKeys = (pv: ReturnType<typeof recordedPv>): string[] => Object.keys(pv.spec.csi.volumeAttributes).sort();
    expect(attributeKeys(fixture)).toEqual(attributeKeys(recorded));
    expect(fixture.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"]).toMatch(/^\d{13}-\d{1,4}-zfs\.zcsi\.dev$/);
    expect(recorded.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"]).toMatch(/^\d{13}-\d{1,4}-zfs\.zcsi\.dev$/);
  });
});

describe("docs/describe-pv.md: a volume after a failover", () => {
  it("shows the sample the doc prints: the home and its epoch, the failover, the old home as a replica with its lag, and the Events", async () => {
    const doc = readFileSync(join(import.meta.dirname, "../../docs/describe-pv.md"), "utf8");
    const block = (name: string): string | undefined => new RegExp(`<!-- sample: ${name} -->\n\`\`\`[a-z]+\n([\\s\\S]*?)\n\`\`\``).exec(doc)?.[1];
    // The PV of the doc's first sample (checked against a real pool by test/integration/status-describe-pv.test.ts).
    const pv = parseYaml(block("pv-yaml") ?? "") as PersistentVolume;
    const volumeId = pv.spec.csi.volumeHandle;
    const leaf = volumeId.slice(volumeId.lastIndexOf("/") + 1);
    const at = new Date("2026-12-03T09:40:12Z");
    pv.metadata.annotations = {
      ...pv.metadata.annotations,
      [HOME_ANNOTATION]: homeAnnotationValue({ host: "pool-2", dataset: `tank/k8s/${leaf}` }, 2),
      "zcsi.dev/failover": JSON.stringify({ from: "pool-1", to: "pool-2", epoch: 2, lastSnapshot: "zcsi-repl-2026-12-03T091500Z", lastSnapshotAt: "2026-12-03T09:15:00.000Z" }),
      [replicaAnnotationKey("pool-1")]: replicaAnnotationValue(at, { snapshot: "zcsi-repl-2026-12-03T094000Z", createdAt: at.getTime() / 1000 - 12, epoch: 2 }),
    };
    const fenced: PvEvent[] = [];
    await fenceEvents({ record: async (e) => void fenced.push(e) })?.({ volumeId, host: "pool-1", dataset: `tank/k8s/${leaf}`, epoch: 1, reason: `superseded by epoch 2 on pool-2:tank/k8s/${leaf}`, pv: pv.metadata.name });
    const events = [
      { type: "Warning", reason: "FailedOver", age: "31m", from: "zcsi-cli", message: `volume failed over from pool-1 to pool-2 (epoch 2); data written after 2026-12-03T09:15:00.000Z (snapshot zcsi-repl-2026-12-03T091500Z) is not on pool-2` },
      { type: "Warning", reason: "CopyFenced", age: "2m", from: "zcsi-replicator", message: fenced[0]!.message },
      { type: "Normal", reason: "Resynced", age: "40s", from: "zcsi-cli", message: "copy on pool-1 is a replica of pool-2 (epoch 2) again; diverged data kept in pool-1:tank/k8s/" + `${leaf}-diverged-20261203T093900Z` },
    ];
    expect(block("describe-moved")).toBe(describePv(pv, events));
  });
});
