import { describe, expect, it } from "vitest";
import { decideAnnotationFailover, failedOverFrom } from "../../src/replication/annotation-failover.js";
import { annotationJobs } from "../../src/replication/jobs.js";
import { annotationCopyName } from "../../src/mobility/annotation-resync.js";
import type { CopyFacts } from "../../src/volumes/home.js";
import type { PoolHostConfig } from "../../src/config.js";
import type { NodeInfo } from "../../src/k8s/nodes.js";

const A = { host: "alice", dataset: "tank/k8s/apps/db" };
const B = { host: "bob", dataset: "pool2/k8s/replicas/db" };
const C = { host: "carol", dataset: "pool3/k8s/apps/db" };
const ID = "alice:tank/k8s/apps/db";

/** The old master as the first replication left it: no zcsi marks at all. */
const plainMaster: CopyFacts = { ...A, readonly: false };
const replica = (at: { host: string; dataset: string }, epoch = "1", of = ID): CopyFacts => ({ ...at, volume: ID, role: "replica", epoch, replicaOf: of, readonly: true });
const nothingElseAnnotated = new Set<string>();

describe("decideAnnotationFailover: the source annotation moved to a replica", () => {
  it("promotes the replica to epoch + 1 and fences the old master (reachable), keeping its role primary at its lower epoch", () => {
    const d = decideAnnotationFailover({ node: "bob", ...B }, [replica(B), plainMaster, replica(C)], nothingElseAnnotated);
    expect(d.identity).toBe(ID);
    expect(d.promote).toEqual({ epoch: 2, previous: ID });
    expect(d.fence).toEqual([{ host: "alice", dataset: A.dataset, epoch: 1, reason: "superseded by epoch 2 on bob:pool2/k8s/replicas/db" }]);
    expect(d.problem).toBeUndefined();
  });

  it("promotes with the old master unreachable (absent from the facts): the previous master is named from zcsi:replica-of, nothing fenced", () => {
    const d = decideAnnotationFailover({ node: "bob", ...B }, [replica(B)], nothingElseAnnotated);
    expect(d.promote).toEqual({ epoch: 2, previous: ID });
    expect(d.fence).toEqual([]);
  });

  it("refuses while the copy it replicates from is still annotated as a source (a copied, not moved, annotation)", () => {
    const d = decideAnnotationFailover({ node: "bob", ...B }, [replica(B), plainMaster], new Set([ID, "bob:pool2/k8s/replicas/db"]));
    expect(d.promote).toBeUndefined();
    expect(d.fence).toEqual([]);
    expect(d.problem).toMatch(/still is too: move the zcsi\.dev\/replication-source annotation/);
  });

  it("refuses to promote a replica that is behind a newer epoch elsewhere", () => {
    const newer: CopyFacts = { ...C, volume: ID, role: "primary", epoch: "3", readonly: false };
    const d = decideAnnotationFailover({ node: "bob", ...B }, [replica(B, "2"), newer], nothingElseAnnotated);
    expect(d.promote).toBeUndefined();
    expect(d.problem).toMatch(/carol:pool3\/k8s\/apps\/db \(epoch 3\) is newer/);
  });

  it("promotes a replica of other data as that data, and leaves datasets of another identity alone", () => {
    const other: CopyFacts = { ...B, volume: "dave:tank/other", role: "replica", epoch: "1", replicaOf: "dave:tank/other", readonly: true };
    const unrelated: CopyFacts = { ...C, readonly: false }; // plain, under another name: not a copy of ID
    const d = decideAnnotationFailover({ node: "bob", ...B }, [other, plainMaster, unrelated], nothingElseAnnotated);
    expect(d.identity).toBe("dave:tank/other");
    expect(d.promote).toEqual({ epoch: 2, previous: "dave:tank/other" });
    expect(d.fence).toEqual([]); // alice's dataset is a different identity: untouched
  });
});

describe("decideAnnotationFailover: the annotated source is a primary", () => {
  const home: CopyFacts = { ...B, volume: ID, role: "primary", epoch: "2", readonly: false };

  it("fences an old master that comes back unfenced with a lower epoch (a target of the new source)", () => {
    const d = decideAnnotationFailover({ node: "bob", ...B }, [home, plainMaster], nothingElseAnnotated);
    expect(d.promote).toBeUndefined();
    expect(d.fence).toEqual([{ host: "alice", dataset: A.dataset, epoch: 1, reason: "superseded by epoch 2 on bob:pool2/k8s/replicas/db" }]);
  });

  it("fences nothing once the old master is fenced and readonly, nor a replica (resynced)", () => {
    const fenced: CopyFacts = { ...A, volume: ID, role: "primary", epoch: "1", fenced: "superseded by epoch 2 on bob:x", readonly: true };
    expect(decideAnnotationFailover({ node: "bob", ...B }, [home, fenced, replica(C, "2")], nothingElseAnnotated).fence).toEqual([]);
    // Fenced but writable again (someone set readonly=off): fenced again, with its recorded reason.
    expect(decideAnnotationFailover({ node: "bob", ...B }, [home, { ...fenced, readonly: false }], nothingElseAnnotated).fence).toEqual([{ host: "alice", dataset: A.dataset, epoch: 1, reason: "superseded by epoch 2 on bob:x" }]);
  });

  it("a plain master with its replicas is the ordinary case: nothing to do", () => {
    expect(decideAnnotationFailover({ node: "alice", ...A }, [plainMaster, replica(B)], nothingElseAnnotated)).toEqual({ identity: ID, fence: [] });
  });

  it("reports an annotated source that is stale (fenced, or a newer epoch elsewhere) and changes nothing", () => {
    const fenced: CopyFacts = { ...A, volume: ID, role: "primary", epoch: "1", fenced: "superseded by epoch 2 on bob:x", readonly: true };
    expect(decideAnnotationFailover({ node: "alice", ...A }, [fenced, home], nothingElseAnnotated)).toMatchObject({ fence: [], problem: expect.stringMatching(/stale copy \(superseded by epoch 2/) });
    expect(decideAnnotationFailover({ node: "alice", ...A }, [plainMaster, home], nothingElseAnnotated)).toMatchObject({ fence: [], problem: expect.stringMatching(/superseded by epoch 2 on bob/) });
  });

  it("never fences on a split brain: two live primaries at the same epoch", () => {
    const rival: CopyFacts = { ...C, volume: ID, role: "primary", epoch: "2", readonly: false };
    const d = decideAnnotationFailover({ node: "bob", ...B }, [home, rival, plainMaster], nothingElseAnnotated);
    expect(d.fence).toEqual([]);
    expect(d.problem).toMatch(/split brain/);
  });

  it("a missing source decides nothing (the engine reports it)", () => {
    expect(decideAnnotationFailover({ node: "bob", ...B }, [plainMaster], nothingElseAnnotated)).toEqual({ fence: [] });
  });
});

describe("failedOverFrom", () => {
  it("reads the old master from a zcsi:failed-over record; anything else is undefined", () => {
    expect(failedOverFrom(JSON.stringify({ from: ID, epoch: 2 }))).toBe(ID);
    expect(failedOverFrom(JSON.stringify({ from: "alice,bob", epoch: 2 }))).toBeUndefined();
    expect(failedOverFrom("{")).toBeUndefined();
    expect(failedOverFrom(undefined)).toBeUndefined();
  });
});

describe("annotationJobs: the annotated sources", () => {
  const hosts = [
    { name: "alice", parentDataset: "tank/k8s" },
    { name: "bob", parentDataset: "pool2/k8s" },
  ] as PoolHostConfig[];
  const node = (name: string, annotations: Record<string, string>): NodeInfo => ({ name, labels: { "zcsi.dev/replication": "true" }, annotations }) as NodeInfo;

  it("lists each dataset one node masters, with that node, and leaves out a dataset two nodes claim", () => {
    const set = annotationJobs(
      [node("bob", { "zcsi.dev/replication-source": "pool2/k8s/replicas/db" }), node("alice", { "zcsi.dev/replication-replica": "pool2/k8s/replicas/db=tank/k8s/apps/db" })],
      hosts,
      900,
    );
    expect(set.sources).toEqual([{ node: "bob", host: "bob", dataset: "pool2/k8s/replicas/db" }]);
    const twice = annotationJobs([node("alice", { "zcsi.dev/replication-source": "tank/k8s/apps/x" }), node("bob", { "zcsi.dev/replication-source": "tank/k8s/apps/x" })], hosts.map((h) => ({ ...h, parentDataset: "tank/k8s" })), 900);
    expect(twice.sources).toEqual([]);
  });
});

describe("annotationCopyName: which resync argument names a node-annotation dataset", () => {
  const hosts = [{ name: "alice", parentDataset: "tank/k8s" }] as PoolHostConfig[];
  it("is HOST:DATASET two or more levels below the host's parentDataset; a volume id or anything else is not", () => {
    expect(annotationCopyName("alice:tank/k8s/apps/db", hosts)).toEqual({ host: "alice", dataset: "tank/k8s/apps/db" });
    expect(annotationCopyName("alice:tank/k8s/pvc-1", hosts)).toBeUndefined();
    expect(annotationCopyName("alice:tank/other/apps/db", hosts)).toBeUndefined();
    expect(annotationCopyName("nobody:tank/k8s/apps/db", hosts)).toBeUndefined();
    expect(annotationCopyName("tank/k8s/apps/db", hosts)).toBeUndefined();
  });
});
