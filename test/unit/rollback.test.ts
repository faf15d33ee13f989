import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { KubeClaimLookups } from "../../src/k8s/kube-claims.js";
import { parseClaim } from "../../src/mobility/rollback.js";
import { pendingRollback } from "../../src/replication/follow.js";
import { replicaProperties } from "../../src/replication/roles.js";
import { PROP } from "../../src/volumes/properties.js";
import { formatRollbackRequest, parseRollbackRequest, planRollback, type RollbackSnapshot } from "../../src/volumes/rollback.js";
import { k8sFixture, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

/** What `zcsi rollback` decides before it touches anything, and the Kubernetes reads behind it. */

function snap(name: string, txg: number, extra: Partial<RollbackSnapshot> = {}): RollbackSnapshot {
  return { name, guid: String(1000 + txg), createtxg: BigInt(txg), userrefs: 0, replicationHolds: [], clones: [], deferDestroy: false, ...extra };
}

describe("planRollback", () => {
  it("lists every later snapshot, oldest first, by createtxg and not by the order read", () => {
    const plan = planRollback([snap("c", 30), snap("a", 10), snap("zcsi-auto-2026-12-03T1900Z", 20), snap("zcsi-repl-2026-12-03T190500Z", 40)], "a");
    expect(plan?.target.name).toBe("a");
    expect(plan?.newer).toEqual([
      { name: "zcsi-auto-2026-12-03T1900Z", kind: "scheduled" },
      { name: "c", kind: "other" },
      { name: "zcsi-repl-2026-12-03T190500Z", kind: "replication" },
    ]);
  });

  it("has nothing to destroy for the newest snapshot, and no plan for a snapshot the volume lacks", () => {
    expect(planRollback([snap("a", 10), snap("b", 20)], "b")?.newer).toEqual([]);
    expect(planRollback([snap("a", 10)], "missing")).toBeUndefined();
  });

  it("blocks on a later CSI snapshot (naming its VolumeSnapshot), a hold that is not the replicator's, and clones", () => {
    const plan = planRollback(
      [
        snap("base", 1),
        snap("snapshot-1", 2, { csiName: "snapshot-1", volumeSnapshot: "db/nightly" }),
        snap("kept", 3, { userrefs: 1 }),
        snap("cloned", 4, { clones: ["tank/k8s/pvc-restored"] }),
      ],
      "base",
    );
    expect(plan?.newer.map((s) => [s.name, s.blocker])).toEqual([
      ["snapshot-1", expect.stringContaining("backs the VolumeSnapshot db/nightly")],
      ["kept", expect.stringContaining("is held (1 hold(s) besides the replicator's")],
      ["cloned", "it has clones: tank/k8s/pvc-restored"],
    ]);
  });

  it("releases the replicator's own holds instead of refusing them, and counts any other hold", () => {
    const repl = snap("zcsi-repl-1", 5, { userrefs: 1, replicationHolds: ["zcsi-repl-vol.alice-bob"] });
    const both = snap("zcsi-repl-2", 6, { userrefs: 2, replicationHolds: ["zcsi-repl-vol.alice-bob"] });
    const ok = planRollback([snap("base", 1), repl], "base");
    expect(ok?.newer).toEqual([{ name: "zcsi-repl-1", kind: "replication" }]);
    expect(ok?.releases).toEqual([{ snapshot: "zcsi-repl-1", tag: "zcsi-repl-vol.alice-bob" }]);
    expect(planRollback([snap("base", 1), both], "base")?.newer[0]?.blocker).toMatch(/held \(1 hold/);
  });

  it("does not count a deleted CSI snapshot kept only by its clones as a live one", () => {
    const plan = planRollback([snap("base", 1), snap("snapshot-2", 2, { csiName: "snapshot-2", deferDestroy: true, clones: ["tank/k8s/pvc-x"] })], "base");
    expect(plan?.newer).toEqual([{ name: "snapshot-2", kind: "other", blocker: "it has clones: tank/k8s/pvc-x" }]);
  });
});

describe("the request replicas follow", () => {
  const own = (value: string) => ({ value, source: "local" });
  it("round-trips and refuses anything else", () => {
    const request = { generation: 3, guid: "1234567890", snapshot: "zcsi-auto-2026-12-03T1900Z" };
    expect(parseRollbackRequest(formatRollbackRequest(request))).toEqual(request);
    for (const bad of ["", "0 1 a", "x 1 a", "1 abc a", "1 1", "1 1 a b"]) expect(parseRollbackRequest(bad), bad).toBeUndefined();
  });

  it("is pending on a target until it followed that generation, never from an inherited or received value", () => {
    const source = new Map([[PROP.rollback, own("2 99 nightly")]]);
    expect(pendingRollback(source, new Map())?.generation).toBe(2);
    expect(pendingRollback(source, new Map([[PROP.rollbackFollowed, own("1")]]))?.snapshot).toBe("nightly");
    expect(pendingRollback(source, new Map([[PROP.rollbackFollowed, own("2")]]))).toBeUndefined();
    expect(pendingRollback(new Map([[PROP.rollback, { value: "2 99 nightly", source: "inherited from tank/k8s" }]]), new Map())).toBeUndefined();
    expect(pendingRollback(new Map(), new Map())).toBeUndefined();
  });

  it("is recorded as followed with the replica's marks after a receive", () => {
    const job = { id: "v.alice-bob", origin: { kind: "volume" as const, volumeId: "alice:tank/k8s/v" }, source: { host: "alice", dataset: "tank/k8s/v" }, target: { host: "bob", dataset: "tank/k8s/v" } };
    expect(replicaProperties(job, new Map([[PROP.rollback, own("2 99 nightly")]]))[PROP.rollbackFollowed]).toBe("2");
    expect(replicaProperties(job, new Map())[PROP.rollbackFollowed]).toBeUndefined();
  });
});

describe("parseClaim", () => {
  it("takes NAMESPACE/NAME and refuses anything else", () => {
    expect(parseClaim("db/data-postgres-0")).toEqual({ namespace: "db", name: "data-postgres-0" });
    for (const bad of ["data", "db/", "/x", "a/b/c", "DB/x", "db/x y", "db/-x"]) expect(() => parseClaim(bad), bad).toThrow(/NAMESPACE\/NAME/);
  });
});

describe("KubeClaimLookups against the API", () => {
  let api: FakeApiServer;
  beforeAll(async () => {
    api = await startFakeApiServer();
  });
  afterAll(async () => {
    await api.close();
  });
  const lookups = () => new KubeClaimLookups(kubeConfigFor(api.url, { skipTLSVerify: true }));

  it("finds the PV a PVC is bound to and its volume handle", async () => {
    const pv = k8sFixture("pv");
    api.pvs.set(String(pv.metadata.name), pv);
    api.pvcs.set("db/data-postgres-0", k8sFixture("pvc-bound"));
    expect(await lookups().claimVolume({ namespace: "db", name: "data-postgres-0" })).toEqual({
      pvName: "pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b",
      driver: "zfs.zcsi.dev",
      volumeHandle: "alice:tank/k8s/pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b",
    });
    expect(api.requests.map((r) => `${r.method} ${r.path}`)).toContain("GET /api/v1/namespaces/db/persistentvolumeclaims/data-postgres-0");
  });

  it("answers undefined for a missing or unbound PVC", async () => {
    expect(await lookups().claimVolume({ namespace: "db", name: "nope" })).toBeUndefined();
    const pending = k8sFixture("pvc-bound");
    delete (pending.spec as { volumeName?: string }).volumeName;
    api.pvcs.set("db/pending", pending);
    expect(await lookups().claimVolume({ namespace: "db", name: "pending" })).toBeUndefined();
  });

  it("follows a VolumeSnapshot to its content's snapshotHandle", async () => {
    api.volumeSnapshots.set("db/data-postgres-0-nightly", k8sFixture("volumesnapshot"));
    api.volumeSnapshotContents.set("snapcontent-5d153ebb-6b19-4a78-b8fc-b8e65d88dfd4", k8sFixture("volumesnapshotcontent"));
    expect(await lookups().snapshotHandle("db", "data-postgres-0-nightly")).toEqual({
      content: "snapcontent-5d153ebb-6b19-4a78-b8fc-b8e65d88dfd4",
      handle: "alice:tank/k8s/pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b@snapshot-5d153ebb-6b19-4a78-b8fc-b8e65d88dfd4",
      driver: "zfs.zcsi.dev",
    });
    expect(await lookups().snapshotHandle("db", "nope")).toBeUndefined();
    const unbound = k8sFixture("volumesnapshot");
    delete (unbound as { status?: unknown }).status;
    api.volumeSnapshots.set("db/new", unbound);
    expect(await lookups().snapshotHandle("db", "new")).toEqual({});
  });
});
