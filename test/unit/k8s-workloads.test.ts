import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { attachmentFromObject, podUsesClaim, pvClaimFromObject } from "../../src/k8s/workloads.js";
import { KubeWorkloads } from "../../src/k8s/workloads-client.js";
import { k8sFixture, startFakeApiServer, type FakeApiServer, type WireObject } from "../harness/fake-k8s.js";

const PV = "pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b";
let api: FakeApiServer;
let workloads: KubeWorkloads;

beforeAll(async () => {
  api = await startFakeApiServer();
  workloads = new KubeWorkloads(kubeConfigFor(api.url, { skipTLSVerify: true }));
});
afterAll(async () => api?.close());

describe("what a move reads of Kubernetes objects", () => {
  it("reads a PV's claim, a pod's claims and a VolumeAttachment's node, PV and state", () => {
    expect(pvClaimFromObject(k8sFixture("pv"))).toEqual({ pvName: PV, claim: { namespace: "db", name: "data-postgres-0" } });
    expect(podUsesClaim(k8sFixture("pod-postgres-0"), "data-postgres-0")).toBe(true);
    expect(podUsesClaim(k8sFixture("pod-postgres-0"), "data-postgres-1")).toBe(false);
    const va = k8sFixture("volumeattachment-worker-1");
    expect(attachmentFromObject(va)).toMatchObject({ node: "worker-1", pvName: PV, attached: true, deleting: false });
    expect(attachmentFromObject({ ...va, metadata: { ...va.metadata, deletionTimestamp: "2026-11-20T11:00:00Z" }, status: { attached: false } })).toMatchObject({ attached: false, deleting: true });
    expect(attachmentFromObject({ ...va, spec: { attacher: "x", nodeName: "n", source: { inlineVolumeSpec: {} } } })).toBeUndefined();
  });
});

describe("KubeWorkloads against the API fake", () => {
  it("lists the pods of a claim, deletes them once, and lists the PV's VolumeAttachments", async () => {
    api.pvs.set(PV, k8sFixture("pv"));
    const other = k8sFixture("pod-postgres-0");
    api.pods = [k8sFixture("pod-postgres-0"), { ...other, metadata: { ...other.metadata, name: "unrelated" }, spec: { ...(other.spec as object), volumes: [] } } as WireObject];
    api.volumeAttachments = [k8sFixture("volumeattachment-worker-1")];
    const deleted: string[] = [];
    api.onPodDeleted = (pod) => void deleted.push(String(pod.metadata.name));

    expect(await workloads.readPv(PV)).toEqual({ pvName: PV, claim: { namespace: "db", name: "data-postgres-0" } });
    expect(await workloads.readPv("pvc-none")).toBeUndefined();
    const pods = await workloads.podsUsingClaim("db", "data-postgres-0");
    expect(pods).toEqual([{ namespace: "db", name: "postgres-0", node: "worker-1" }]);
    expect(await workloads.deletePod(pods[0]!)).toBe(true);
    expect(await workloads.deletePod(pods[0]!)).toBe(false);
    expect(deleted).toEqual(["postgres-0"]);
    expect(api.pods.map((p) => p.metadata.name)).toEqual(["unrelated"]);
    expect(await workloads.attachmentsOf(PV)).toEqual([expect.objectContaining({ node: "worker-1", attached: true })]);
    expect(await workloads.attachmentsOf("pvc-other")).toEqual([]);
    expect(api.requests.filter((r) => r.method === "DELETE").map((r) => r.path)).toEqual(["/api/v1/namespaces/db/pods/postgres-0", "/api/v1/namespaces/db/pods/postgres-0"]);
  });
});
