import { describe, expect, it } from "vitest";
import { decideHome, classifyCopy } from "../../src/volumes/home.js";
import { isMarkedReplica, isRepointableReplica, notHomeReason, replicaProperties, sideRole } from "../../src/replication/roles.js";
import type { ReplicationJob } from "../../src/replication/types.js";
import type { DatasetProperties } from "../../src/zfs/parse.js";

const ID = "alice:tank/k8s/pvc-1";
const job: ReplicationJob = {
  id: "pvc-1.bob",
  origin: { kind: "volume", volumeId: ID },
  source: { host: "alice", dataset: "tank/k8s/pvc-1" },
  target: { host: "bob", dataset: "pool2/k8s/pvc-1" },
};
const annotationJob: ReplicationJob = { ...job, origin: { kind: "annotation", node: "alice" } };

function props(values: Record<string, string>, source = "local"): DatasetProperties {
  return new Map(Object.entries(values).map(([k, v]) => [k, { value: v, source: k === "readonly" ? "default" : source }]));
}

describe("what a replica is marked with", () => {
  it("carries the source's identity, role replica and the source's epoch, readonly", () => {
    expect(replicaProperties(job, props({ "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "3" }))).toEqual({
      "zcsi:replica-of": "alice:tank/k8s/pvc-1",
      "zcsi:volume": ID,
      "zcsi:role": "replica",
      "zcsi:epoch": "3",
      readonly: "on",
    });
  });

  it("gives a source made before roles its job's volume id and epoch 1; a node-annotation dataset its own name", () => {
    expect(replicaProperties(job, props({}))).toMatchObject({ "zcsi:volume": ID, "zcsi:epoch": "1" });
    expect(replicaProperties(annotationJob, props({}))).toMatchObject({ "zcsi:volume": "alice:tank/k8s/pvc-1", "zcsi:role": "replica" });
  });

  it("does not count an inherited value as the source's own", () => {
    expect(replicaProperties(job, props({ "zcsi:epoch": "9", "zcsi:volume": "x:y/z" }, "inherited from tank/k8s"))).toMatchObject({ "zcsi:volume": ID, "zcsi:epoch": "1" });
  });

  it("needs a set only when a mark is missing or differs (a new epoch re-marks)", () => {
    const marks = replicaProperties(job, props({ "zcsi:epoch": "2" }));
    const target = props({ "zcsi:replica-of": "alice:tank/k8s/pvc-1", "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "2", readonly: "on" });
    expect(isMarkedReplica(target, marks)).toBe(true);
    expect(isMarkedReplica(props({ "zcsi:replica-of": "alice:tank/k8s/pvc-1", readonly: "on" }), marks)).toBe(false);
    expect(isMarkedReplica(target, replicaProperties(job, props({ "zcsi:epoch": "3" })))).toBe(false);
  });

  it("reads a side without roles as primary, or replica when it has zcsi:replica-of, at epoch 1", () => {
    expect(sideRole(props({}))).toEqual({ role: "primary", epoch: 1 });
    expect(sideRole(props({ "zcsi:replica-of": "a:b/c" }))).toEqual({ role: "replica", epoch: 1 });
  });
});

describe("only the home sends", () => {
  const primary = props({ "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "1" });

  it("lets the primary send to its replica", () => {
    expect(notHomeReason(job, primary, props({ "zcsi:role": "replica", "zcsi:epoch": "1" }))).toBeUndefined();
    expect(notHomeReason(job, primary, undefined)).toBeUndefined();
    expect(notHomeReason(job, props({}), props({ "zcsi:replica-of": "alice:tank/k8s/pvc-1" }))).toBeUndefined();
  });

  it("refuses a replica or fenced source", () => {
    expect(notHomeReason(job, props({ "zcsi:role": "replica" }), undefined)).toMatch(/is a replica/);
    expect(notHomeReason(job, props({ "zcsi:role": "primary", "zcsi:fenced": "superseded by epoch 2 on bob:x" }), undefined)).toMatch(/fenced \(superseded by epoch 2/);
  });

  it("refuses to send into a primary, or from a source older than its target", () => {
    expect(notHomeReason(job, primary, props({ "zcsi:role": "primary", "zcsi:epoch": "2" }))).toMatch(/target bob:pool2\/k8s\/pvc-1 is a primary/);
    expect(notHomeReason(job, primary, props({ "zcsi:role": "replica", "zcsi:epoch": "2" }))).toMatch(/epoch 2, newer than the source's 1/);
  });

  it("refuses a stale source that only a third host's copies reveal", () => {
    const decision = decideHome(ID, [
      classifyCopy(ID, job.source, { ...job.source, volume: ID, role: "primary", epoch: "1", readonly: false })!,
      classifyCopy(ID, job.source, { host: "carol", dataset: "c/k8s/pvc-1", volume: ID, role: "primary", epoch: "2", readonly: false })!,
    ]);
    expect(notHomeReason(job, primary, props({ "zcsi:role": "replica", "zcsi:epoch": "1" }), decision)).toMatch(/stale \(superseded by epoch 2 on carol/);
  });

  it("refuses a source in a split brain", () => {
    const decision = decideHome(ID, [
      classifyCopy(ID, job.source, { ...job.source, volume: ID, role: "primary", epoch: "2", readonly: false })!,
      classifyCopy(ID, job.source, { host: "carol", dataset: "c/k8s/pvc-1", volume: ID, role: "primary", epoch: "2", readonly: false })!,
    ]);
    expect(notHomeReason(job, props({ "zcsi:role": "primary", "zcsi:epoch": "2" }), undefined, decision)).toMatch(/split brain/);
  });
});

describe("a replica of the old home follows the new one", () => {
  // After a move to bob, carol's replica still names the old home alice in zcsi:replica-of.
  const fromBob: ReplicationJob = { id: "pvc-1.carol", origin: { kind: "volume", volumeId: ID }, source: { host: "bob", dataset: "pool2/k8s/pvc-1" }, target: { host: "carol", dataset: "pool3/k8s/pvc-1" } };
  const newHome = props({ "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "2" });
  const carol = (extra: Record<string, string> = {}) => props({ "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "1", "zcsi:replica-of": "alice:tank/k8s/pvc-1", ...extra });

  it("is continued from the new home, and carries its mark and epoch after the run", () => {
    expect(isRepointableReplica(fromBob, newHome, carol())).toBe(true);
    expect(replicaProperties(fromBob, newHome)).toMatchObject({ "zcsi:replica-of": "bob:pool2/k8s/pvc-1", "zcsi:epoch": "2", "zcsi:role": "replica" });
  });

  it("is not taken over when it is another volume's, a primary, fenced, unmarked or newer than the source", () => {
    expect(isRepointableReplica(fromBob, newHome, carol({ "zcsi:volume": "alice:tank/k8s/pvc-2" }))).toBe(false);
    expect(isRepointableReplica(fromBob, newHome, carol({ "zcsi:role": "primary" }))).toBe(false);
    expect(isRepointableReplica(fromBob, newHome, carol({ "zcsi:fenced": "superseded" }))).toBe(false);
    expect(isRepointableReplica(fromBob, newHome, props({ "zcsi:replica-of": "alice:tank/k8s/pvc-1" }))).toBe(false);
    expect(isRepointableReplica(fromBob, newHome, carol({ "zcsi:epoch": "3" }))).toBe(false);
  });

  it("is never continued from a copy that is not a primary", () => {
    expect(isRepointableReplica(fromBob, props({ "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "2" }), carol())).toBe(false);
    expect(isRepointableReplica(fromBob, props({ "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "2", "zcsi:fenced": "x" }), carol())).toBe(false);
  });
});

