import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { KubeEventSink, kubeConfigFor, KubeNodeSource, KubePvAnnotator } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { REPLICATION_NODE_SELECTOR } from "../../src/replication/jobs.js";
import { silentLogger } from "../../src/log.js";
import { k8sFixture, ManualClock, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

/** The replicator's client-node adapters against a loopback API server serving the fixtures. */

const PV_NAME = "pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b";

describe("KubeNodeSource and KubePvAnnotator", () => {
  let api: FakeApiServer;
  beforeAll(async () => {
    api = await startFakeApiServer();
  });
  afterAll(async () => {
    await api.close();
  });
  const kc = () => kubeConfigFor(api.url, { skipTLSVerify: true });

  it("lists only the nodes labelled zcsi.dev/replication=true, with their annotations, fresh on every call", async () => {
    api.nodes = [k8sFixture("node-pool-1-source"), k8sFixture("node-pool-2-replica"), k8sFixture("node-worker-unlabelled")];
    const source = new KubeNodeSource(kc());
    const nodes = await source.listNodes(REPLICATION_NODE_SELECTOR);
    expect(nodes.map((n) => [n.name, n.annotations["zcsi.dev/replication-source"] ?? n.annotations["zcsi.dev/replication-replica"]])).toEqual([
      ["pool-1", "tank/k8s/apps/db,tank/k8s/apps/www"],
      ["pool-2", "tank/k8s/apps/db, tank/k8s/apps/www=tank/k8s/replicas/www"],
    ]);
    const get = api.requests.filter((r) => r.method === "GET" && r.path === "/api/v1/nodes");
    expect(get).toHaveLength(1);
    api.nodes = [k8sFixture("node-pool-1-source"), k8sFixture("node-pool-2-replica-changed")];
    expect((await source.listNodes(REPLICATION_NODE_SELECTOR)).find((n) => n.name === "pool-2")?.annotations["zcsi.dev/replication-replica"]).toBe("tank/k8s/apps/db");
  });

  it("merge-patches one annotation of a PV, removes it with null, and answers false for a missing PV", async () => {
    api.pvs.set(PV_NAME, k8sFixture("pv"));
    const pvs = new KubePvAnnotator(kc());
    expect(await pvs.annotate(PV_NAME, { "zcsi.dev/replica.pool-2": "2026-11-22T01:00:00Z lag=42s snapshot=zcsi-repl-2026-11-22T005918Z" })).toBe(true);
    const annotations = (): Record<string, string> => (api.pvs.get(PV_NAME)?.metadata.annotations ?? {}) as Record<string, string>;
    // The provisioner's annotations stay: a merge patch touches only the key it names.
    expect(annotations()).toEqual({ ...(k8sFixture("pv").metadata.annotations as Record<string, string>), "zcsi.dev/replica.pool-2": "2026-11-22T01:00:00Z lag=42s snapshot=zcsi-repl-2026-11-22T005918Z" });
    const patch = api.requests.filter((r) => r.method === "PATCH").at(-1);
    expect(patch?.path).toBe(`/api/v1/persistentvolumes/${PV_NAME}`);
    expect(patch?.body).toEqual({ metadata: { annotations: { "zcsi.dev/replica.pool-2": "2026-11-22T01:00:00Z lag=42s snapshot=zcsi-repl-2026-11-22T005918Z" } } });
    expect(await pvs.annotate(PV_NAME, { "zcsi.dev/replica.pool-2": null })).toBe(true);
    expect(annotations()["zcsi.dev/replica.pool-2"]).toBeUndefined();
    expect(await pvs.annotate("pvc-00000000-0000-0000-0000-000000000000", { "zcsi.dev/replica.pool-2": "x" })).toBe(false);
  });

  it("records a Warning Event on a Node (an annotation job has no PV), with the Node's uid, in namespace default", async () => {
    api.nodes = [k8sFixture("node-pool-2-replica")];
    const recorder = new KubeEventRecorder(new KubeEventSink(kc()), { clock: new ManualClock("2026-11-22T01:00:12Z"), logger: silentLogger, component: "zcsi-replicator", instance: "zcsi-controller-7c9d6b5f4-abcde" });
    await recorder.recordOnNode({ nodeName: "pool-2", type: "Warning", reason: "ReplicationFailed", message: "replication of pool-1:tank/k8s/apps/db to tank/k8s/apps/db failed: ssh pool-1: connect ECONNREFUSED" });
    await recorder.recordOnNode({ nodeName: "no-such-node", type: "Warning", reason: "ReplicationFailed", message: "x" });
    const posts = api.requests.filter((r) => r.method === "POST" && r.path === "/api/v1/namespaces/default/events");
    expect(posts).toHaveLength(1);
    expect(posts[0]?.body).toMatchObject({
      involvedObject: { apiVersion: "v1", kind: "Node", name: "pool-2", uid: "a71c2e94-3d5b-4f0a-8e16-7b9c0d2f4e58" },
      reason: "ReplicationFailed",
      type: "Warning",
      source: { component: "zcsi-replicator" },
    });
  });

  it("reports an unreachable API server as Unavailable", async () => {
    const dead = kubeConfigFor("http://127.0.0.1:9", { skipTLSVerify: true });
    await expect(new KubeNodeSource(dead).listNodes(REPLICATION_NODE_SELECTOR)).rejects.toSatisfy((e: unknown) => isZcsiError(e, "Unavailable"));
    await expect(new KubePvAnnotator(dead).annotate(PV_NAME, { a: "b" })).rejects.toSatisfy((e: unknown) => isZcsiError(e, "Unavailable"));
  });
});
