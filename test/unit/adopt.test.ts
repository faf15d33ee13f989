import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { parseConfig, type Config } from "../../src/config.js";
import { adoptedPvName, adoptionObjects, pvSummary } from "../../src/k8s/adopt.js";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { KubeAdoptionApi } from "../../src/k8s/kube-adopt.js";
import { adopt, conflictingPv } from "../../src/roles/adopt.js";
import { adoptionProblem, formatAdoptedId, parseAdoptedId } from "../../src/volumes/adopted-ids.js";
import { toAdoptedVolume } from "../../src/volumes/adopted.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { parseVolumeId } from "../../src/volumes/ids.js";
import { startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";
import { FAKE_HOST_KEY, FakePoolHost, zcsiRejection } from "../harness/fake-pool-host.js";
import { schemaProblems } from "./k8s-schema.js";
import type { K8sObject } from "./deploy-manifests.js";

const logger = pino({ level: "silent" });

const config: Config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [
    { name: "alice", address: "127.0.0.1", user: "zcsi", parentDataset: "data/k8s", mountRoot: "/data/k8s", hostKey: FAKE_HOST_KEY, adoptRoots: ["data", "tank/apps"] },
    { name: "bob", address: "127.0.0.1", user: "zcsi", parentDataset: "pool2/k8s", mountRoot: "/mb", hostKey: FAKE_HOST_KEY },
  ],
});
const alice = config.poolHosts[0]!;
const bob = config.poolHosts[1]!;

/** A mounted filesystem the operator made, as `zfs get -Hp` would show it. */
function operatorDataset(mountpoint: string, extra: Record<string, string> = {}): Map<string, string> {
  return new Map(Object.entries({ type: "filesystem", referenced: "1048576", available: "2000000000000", refquota: "0", quota: "0", mountpoint, mounted: "yes", origin: "-", ...extra }));
}

describe("adopted volume ids", () => {
  it("round-trip, and zcsi's own id parser never accepts them (so delete, resize and moves cannot reach them)", () => {
    const rw = formatAdoptedId("alice", "data/mysql", { readOnly: false });
    const ro = formatAdoptedId("alice", "data/mysql", { readOnly: true, namespace: "team-a" });
    expect(rw).toBe("alice:data/mysql#adopted");
    expect(ro).toBe("alice:data/mysql#adopted-ro-team-a");
    expect(parseAdoptedId(rw, config.poolHosts)).toMatchObject({ poolHost: "alice", dataset: "data/mysql", readOnly: false });
    expect(parseAdoptedId(ro, config.poolHosts)).toMatchObject({ poolHost: "alice", dataset: "data/mysql", readOnly: true, namespace: "team-a" });
    for (const id of [rw, ro]) expect(() => parseVolumeId(id, config.poolHosts)).toThrow(/does not exist/);
  });

  it("are NOT_FOUND when the config does not allow the dataset, or the mark is not one zcsi writes", () => {
    for (const id of ["alice:other/x#adopted", "alice:data#adopted", "alice:data/k8s/pvc-1#adopted", "bob:pool2/x#adopted", "carol:data/x#adopted", "alice:data/x#adopted-rw", "alice:data/x#adopted-ro-Bad_NS"]) {
      expect(() => parseAdoptedId(id, config.poolHosts), id).toThrow(expect.objectContaining({ kind: "NotFound" }));
    }
  });
});

describe("which datasets may be adopted", () => {
  it("only strictly below an adoptRoot, never a pool's root, never zcsi's parent or what contains it", () => {
    expect(adoptionProblem(alice, "data/mysql")).toBeUndefined();
    expect(adoptionProblem(alice, "tank/apps/novix/db")).toBeUndefined();
    expect(adoptionProblem(alice, "data")).toMatch(/pool's root/);
    expect(adoptionProblem(alice, "tank/apps")).toMatch(/not below any of pool host alice's adoptRoots \(data, tank\/apps\)/);
    expect(adoptionProblem(alice, "tank/other")).toMatch(/not below any/);
    expect(adoptionProblem(alice, "data/k8s")).toMatch(/zcsi's own parent dataset/);
    expect(adoptionProblem(alice, "data/k8s/pvc-1")).toMatch(/inside data\/k8s/);
    expect(adoptionProblem(alice, "data/../etc")).toMatch(/not a dataset name/);
    expect(adoptionProblem(bob, "pool2/x")).toMatch(/lists no adoptRoots/);
  });

  it("the config refuses an adoptRoot inside parentDataset, and lists none by default", () => {
    const host = { name: "a", address: "h", parentDataset: "tank/k8s", mountRoot: "/t", hostKey: FAKE_HOST_KEY };
    expect(() => parseConfig({ privateKeyFile: "/k", poolHosts: [{ ...host, adoptRoots: ["tank/k8s/x"] }] })).toThrow(/inside parentDataset tank\/k8s/);
    expect(() => parseConfig({ privateKeyFile: "/k", poolHosts: [{ ...host, adoptRoots: "tank" }] })).toThrow(/adoptRoots must be a list/);
    expect(parseConfig({ privateKeyFile: "/k", poolHosts: [host] }).poolHosts[0]?.adoptRoots).toEqual([]);
  });
});

describe("an adopted dataset as a volume", () => {
  const ref = parseAdoptedId("alice:data/mysql#adopted", config.poolHosts);
  it("reports the operator's limit, or what df shows without one, and is never served without the adoption mark", () => {
    expect(toAdoptedVolume(ref, asProps(operatorDataset("/data/mysql")))).toBeUndefined();
    const thin = toAdoptedVolume(ref, asProps(operatorDataset("/data/mysql", { "zcsi:adopted": "read-write" })));
    expect(thin).toMatchObject({ id: "alice:data/mysql#adopted", capacityBytes: 2000001048576n, sizeMode: "thin", mountpoint: "/data/mysql", placement: "adopted" });
    expect(toAdoptedVolume(ref, asProps(operatorDataset("/data/mysql", { "zcsi:adopted": "read-write", refquota: "5368709120" })))?.capacityBytes).toBe(5368709120n);
    // A read-only mark does not serve a read-write id (a PV's handle edited by hand).
    expect(toAdoptedVolume(ref, asProps(operatorDataset("/data/mysql", { "zcsi:adopted": "read-only" })))).toBeUndefined();
  });
});

function asProps(values: Map<string, string>): Map<string, { value: string; source: string }> {
  return new Map([...values].map(([k, v]) => [k, { value: v, source: k.includes(":") ? "local" : "-" }]));
}

describe("conflicting PVs", () => {
  const want = { volumeId: "alice:data/mysql#adopted", poolHost: "alice", dataset: "data/mysql", mountpoint: "/data/mysql", readOnly: false, namespace: "db", claim: "mysql" };
  const reader = (ns: string) => ({ name: `pv-${ns}`, driver: "zfs.zcsi.dev", volumeHandle: `alice:data/mysql#adopted-ro-${ns}`, readOnly: true, claim: { namespace: ns, name: "m" } });

  it("finds a PV on the same dataset by handle, by volumeAttributes or by hostPath", () => {
    expect(conflictingPv([{ name: "a", volumeHandle: "alice:data/mysql#adopted", readOnly: false, claim: { namespace: "x", name: "y" } }], want).conflict).toMatch(/PV a already adopts it for x\/y/);
    expect(conflictingPv([{ name: "b", poolHost: "alice", dataset: "data/mysql", readOnly: false }], want).conflict).toMatch(/PV b already uses it/);
    expect(conflictingPv([{ name: "c", path: "/data/mysql", readOnly: false }], want).conflict).toMatch(/path \/data\/mysql/);
    expect(conflictingPv([{ name: "d", poolHost: "alice", dataset: "data/mysql2", readOnly: false }], want)).toEqual({});
  });

  it("lets read-only adoptions share a dataset, never with a writer, and takes its own PV for a retry", () => {
    const ro = { ...want, readOnly: true, volumeId: "alice:data/mysql#adopted-ro-b", namespace: "b", claim: "m" };
    expect(conflictingPv([reader("a")], ro)).toEqual({});
    expect(conflictingPv([reader("a")], want).conflict).toMatch(/read-write adoption needs it alone/);
    expect(conflictingPv([reader("b")], ro).existing?.name).toBe("pv-b");
  });
});

describe("zcsi adopt against the API fake", () => {
  let api: FakeApiServer;
  let host: FakePoolHost;
  let hosts: PoolHosts;
  const out: string[] = [];
  const run = (flags: Parameters<typeof adopt>[1]) => adopt(config, flags, { hosts, api: new KubeAdoptionApi(kubeConfigFor(api.url, { skipTLSVerify: true })), logger }, (t) => out.push(t));

  beforeEach(async () => {
    api = await startFakeApiServer();
    host = new FakePoolHost("alice", new Map([["data/mysql", operatorDataset("/data/mysql")], ["data/novix", operatorDataset("/data/novix", { refquota: "10737418240" })], ["data/zvol", new Map([["type", "volume"], ["mountpoint", "-"]])]]));
    hosts = new PoolHosts([{ config: alice, exec: host }, { config: bob, exec: new FakePoolHost("bob") }]);
    out.length = 0;
  });
  afterEach(() => api.close());

  it("--dry-run prints a PV and a PVC that pass the Kubernetes schemas, bind to each other, and changes nothing", async () => {
    expect(await run({ dataset: "data/novix", pvc: "apps/novix", dryRun: true })).toBe(0);
    const docs = parseAllDocuments(out.join("")).map((d) => d.toJS() as K8sObject);
    expect(docs.map((d) => d.kind)).toEqual(["PersistentVolume", "PersistentVolumeClaim"]);
    for (const doc of docs) expect(await schemaProblems(doc)).toEqual([]);
    const [pv, pvc] = docs as [K8sObject & { spec: Record<string, any> }, K8sObject & { spec: Record<string, any> }];
    expect(pv.spec.csi).toEqual({ driver: "zfs.zcsi.dev", volumeHandle: "alice:data/novix#adopted", volumeAttributes: { poolHost: "alice", dataset: "data/novix", mountpoint: "/data/novix", placement: "adopted" } });
    expect(pv.spec.persistentVolumeReclaimPolicy).toBe("Retain");
    expect(pv.spec.claimRef).toMatchObject({ namespace: "apps", name: "novix" });
    expect(pvc.spec.volumeName).toBe(pv.metadata.name);
    expect(pvc.spec.storageClassName).toBe(pv.spec.storageClassName);
    expect(pvc.spec.resources.requests.storage).toBe("10737418240");
    expect(pv.spec.capacity.storage).toBe("10737418240");
    expect(api.requests.filter((r) => r.method !== "GET")).toEqual([]);
    expect(host.sets).toEqual([]);
  });

  it("a read-only adoption's PV is readOnly and ReadOnlyMany, and passes the schemas too", async () => {
    await run({ dataset: "data/mysql", pvc: "team-a/mysql", readOnly: true, dryRun: true });
    const [pv] = parseAllDocuments(out.join("")).map((d) => d.toJS() as K8sObject & { spec: Record<string, any> });
    expect(await schemaProblems(pv!)).toEqual([]);
    expect(pv!.spec.csi.readOnly).toBe(true);
    expect(pv!.spec.csi.volumeHandle).toBe("alice:data/mysql#adopted-ro-team-a");
    expect(pv!.spec.accessModes).toEqual(["ReadOnlyMany"]);
  });

  it("marks the dataset, creates the PV and the PVC bound to it; a second run changes nothing", async () => {
    await run({ dataset: "data/mysql", pvc: "db/mysql" });
    const pvName = adoptedPvName("alice:data/mysql#adopted", "data/mysql");
    expect(host.datasets.get("data/mysql")?.get("zcsi:adopted")).toBe("read-write");
    expect(pvSummary(api.pvs.get(pvName))).toMatchObject({ volumeHandle: "alice:data/mysql#adopted", claim: { namespace: "db", name: "mysql" } });
    expect((api.pvcs.get("db/mysql")?.spec as Record<string, unknown>).volumeName).toBe(pvName);
    const writes = api.requests.filter((r) => r.method === "POST").length;
    await run({ dataset: "data/mysql", pvc: "db/mysql" });
    expect(api.requests.filter((r) => r.method === "POST").length).toBe(writes);
    expect(out.at(-1)).toMatch(/adopted alice:data\/mysql as PV adopted-data-mysql-/);
  });

  it("refuses, changing nothing: outside adoptRoots, a pool root, zcsi's parent, a zvol, a missing dataset, a dataset already adopted", async () => {
    await run({ dataset: "data/mysql", pvc: "db/mysql" });
    const before = { posts: api.requests.filter((r) => r.method === "POST").length, sets: host.sets.length };
    const cases: [Parameters<typeof adopt>[1], string, RegExp][] = [
      [{ dataset: "other/x", pvc: "a/b", host: "alice" }, "NotFound", /not below any of pool host alice's adoptRoots/],
      [{ dataset: "data", pvc: "a/b", host: "alice" }, "NotFound", /pool's root/],
      [{ dataset: "data/k8s/pvc-1", pvc: "a/b", host: "alice" }, "NotFound", /zcsi's own parent dataset/],
      [{ dataset: "data/zvol", pvc: "a/b" }, "FailedPrecondition", /is a volume, not a filesystem/],
      [{ dataset: "data/gone", pvc: "a/b" }, "NotFound", /does not exist on pool host alice/],
      [{ dataset: "data/mysql", pvc: "other/mysql" }, "FailedPrecondition", /already adopts it for db\/mysql; nothing was changed/],
      [{ dataset: "data/mysql", pvc: "other/mysql", readOnly: true }, "FailedPrecondition", /already uses it/],
      [{ dataset: "data/mysql", pvc: "Bad/Name" }, "InvalidArgument", /--pvc must be NAMESPACE\/NAME/],
    ];
    for (const [flags, kind, message] of cases) {
      const err = await zcsiRejection(run(flags));
      expect(err.kind, flags.dataset).toBe(kind);
      expect(err.message).toMatch(message);
    }
    expect({ posts: api.requests.filter((r) => r.method === "POST").length, sets: host.sets.length }).toEqual(before);
  });

  it("adopts one dataset read-only into two namespaces, each with its own PV, and then refuses a writer", async () => {
    await run({ dataset: "data/mysql", pvc: "team-a/mysql", readOnly: true });
    await run({ dataset: "data/mysql", pvc: "team-b/mysql", readOnly: true });
    const handles = [...api.pvs.values()].map((pv) => pvSummary(pv)?.volumeHandle).sort();
    expect(handles).toEqual(["alice:data/mysql#adopted-ro-team-a", "alice:data/mysql#adopted-ro-team-b"]);
    expect(host.datasets.get("data/mysql")?.get("zcsi:adopted")).toBe("read-only");
    expect((await zcsiRejection(run({ dataset: "data/mysql", pvc: "db/mysql" }))).message).toMatch(/read-write adoption needs it alone/);
  });

  it("refuses a PVC of that name bound elsewhere, after creating only the PV (a retry finishes once it is gone)", async () => {
    api.pvcs.set("db/mysql", { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: "mysql", namespace: "db" }, spec: { volumeName: "pvc-other" } });
    expect((await zcsiRejection(run({ dataset: "data/mysql", pvc: "db/mysql" }))).kind).toBe("AlreadyExists");
    api.pvcs.delete("db/mysql");
    expect(await run({ dataset: "data/mysql", pvc: "db/mysql" })).toBe(0);
    expect(api.pvs.size).toBe(1);
  });

  it("PV names are DNS subdomains, distinct per adoption", () => {
    const names = ["alice:data/My_DB#adopted", "alice:data/My_DB#adopted-ro-a", "alice:data/my-db#adopted"].map((id) => adoptedPvName(id, id.slice(6, id.indexOf("#"))));
    for (const name of names) expect(name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    expect(new Set(names).size).toBe(3);
    const { pv } = adoptionObjects({ driverName: "d", volumeId: "h:p/x#adopted", poolHost: "h", dataset: "p/x", mountpoint: "/p/x", namespace: "n", claimName: "c", readOnly: false, capacityBytes: 1n, storageClassName: "" });
    expect(parseYaml(JSON.stringify(pv))).toEqual(pv);
  });
});
