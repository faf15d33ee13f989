import { describe, expect, it } from "vitest";
import { describePv, pvYaml, recordedDescribe, recordedPv, recordedPvText } from "../harness/describe-pv.js";
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
