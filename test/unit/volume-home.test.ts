import { describe, expect, it } from "vitest";
import { classifyCopy, decideHome, type Copy, type CopyFacts } from "../../src/volumes/home.js";

const ID = "alice:tank/k8s/pvc-1";
const BIRTH = { host: "alice", dataset: "tank/k8s/pvc-1" };

function facts(host: string, dataset: string, more: Partial<CopyFacts> = {}): CopyFacts {
  return { host, dataset, csiName: "pvc-1", readonly: false, mountpoint: `/m/${host}/pvc-1`, ...more };
}
const primary = (host: string, epoch: number, more: Partial<CopyFacts> = {}): CopyFacts =>
  facts(host, host === "alice" ? BIRTH.dataset : `${host}/k8s/pvc-1`, { volume: ID, role: "primary", epoch: String(epoch), ...more });
const replica = (host: string, epoch: number, more: Partial<CopyFacts> = {}): CopyFacts =>
  facts(host, host === "alice" ? BIRTH.dataset : `${host}/k8s/pvc-1`, { volume: ID, role: "replica", epoch: String(epoch), replicaOf: "alice:tank/k8s/pvc-1", readonly: true, ...more });

function decide(all: CopyFacts[], unknown: { host: string; reason: string }[] = []) {
  return decideHome(
    ID,
    all.flatMap((f) => {
      const c = classifyCopy(ID, BIRTH, f);
      return c === undefined ? [] : [c];
    }),
    unknown,
  );
}
const where = (c: Copy | undefined): string | undefined => (c ? `${c.host}:${c.dataset}@${c.epoch}` : undefined);

describe("which datasets are copies of the volume", () => {
  it("identifies a copy by zcsi:volume, whatever host or name it has", () => {
    expect(classifyCopy(ID, BIRTH, primary("bob", 3))).toMatchObject({ host: "bob", role: "primary", epoch: 3, identity: ID });
    expect(classifyCopy(ID, BIRTH, facts("bob", "pool/x", { volume: ID, role: "replica", epoch: "2" }))).toMatchObject({ role: "replica", epoch: 2 });
  });

  it("ignores a dataset of another volume that shares the name", () => {
    expect(classifyCopy(ID, BIRTH, facts("bob", "bob/k8s/pvc-1", { volume: "bob:bob/k8s/pvc-1", role: "primary", epoch: "1" }))).toBeUndefined();
    expect(classifyCopy(ID, BIRTH, facts("bob", "bob/k8s/pvc-1", { replicaOf: "carol:c/k8s/pvc-1" }))).toBeUndefined();
  });

  it("takes a volume made before roles existed as the primary at epoch 1 on its birth host", () => {
    expect(classifyCopy(ID, BIRTH, facts("alice", BIRTH.dataset))).toMatchObject({ role: "primary", epoch: 1, identity: ID, mountpoint: "/m/alice/pvc-1" });
  });

  it("takes a replica made before roles existed (zcsi:replica-of names the birth dataset) as a replica at epoch 1", () => {
    expect(classifyCopy(ID, BIRTH, facts("bob", "bob/k8s/pvc-1", { replicaOf: "alice:tank/k8s/pvc-1", readonly: true }))).toMatchObject({ role: "replica", epoch: 1 });
  });

  it("does not take an unmarked dataset elsewhere, or one without zcsi:csi-name on the birth host, as a copy", () => {
    expect(classifyCopy(ID, BIRTH, facts("bob", "bob/k8s/pvc-1"))).toBeUndefined();
    expect(classifyCopy(ID, BIRTH, facts("alice", BIRTH.dataset, { csiName: undefined }))).toBeUndefined();
  });

  it("reports a copy whose role or epoch cannot be read instead of guessing", () => {
    expect(classifyCopy(ID, BIRTH, primary("bob", 1, { role: "leader" }))).toEqual({ problem: expect.stringMatching(/bob:bob\/k8s\/pvc-1.*zcsi:role="leader"/) });
    for (const epoch of ["0", "-1", "1.5", "two", "", "01"]) {
      expect(classifyCopy(ID, BIRTH, primary("bob", 1, { epoch }))).toEqual({ problem: expect.stringContaining("zcsi:epoch") });
    }
  });
});

describe("deciding the home", () => {
  it("has no home and no problem when there is no copy", () => {
    expect(decide([])).toEqual({ live: [], stale: [], replicas: [], unknown: [], problems: [] });
  });

  it("serves a lone primary", () => {
    const d = decide([primary("alice", 1)]);
    expect(where(d.home)).toBe("alice:tank/k8s/pvc-1@1");
    expect(d.stale).toEqual([]);
    expect(d.problems).toEqual([]);
  });

  it("serves the primary and lists its replicas", () => {
    const d = decide([replica("bob", 1), primary("alice", 1), replica("carol", 1)]);
    expect(where(d.home)).toBe("alice:tank/k8s/pvc-1@1");
    expect(d.replicas.map((r) => r.host)).toEqual(["bob", "carol"]);
  });

  it("serves the highest-epoch primary after a failover and calls the old primary stale, to be fenced", () => {
    const d = decide([primary("alice", 1), primary("bob", 2)]);
    expect(where(d.home)).toBe("bob:bob/k8s/pvc-1@2");
    expect(d.stale).toHaveLength(1);
    expect(d.stale[0]).toMatchObject({ host: "alice", epoch: 1, needsFence: true, reason: "superseded by epoch 2 on bob:bob/k8s/pvc-1" });
    expect(d.problems).toEqual([]);
  });

  it("finds a pre-role birth copy stale once a replica was promoted", () => {
    const d = decide([facts("alice", BIRTH.dataset), facts("bob", "bob/k8s/pvc-1", { replicaOf: "alice:tank/k8s/pvc-1", role: "primary", epoch: "2" })]);
    expect(where(d.home)).toBe("bob:bob/k8s/pvc-1@2");
    expect(d.stale.map((s) => s.host)).toEqual(["alice"]);
  });

  it("does not fence again a stale copy that is already readonly and marked", () => {
    const d = decide([primary("alice", 1, { readonly: true, fenced: "superseded by epoch 2 on bob:bob/k8s/pvc-1" }), primary("bob", 2)]);
    expect(d.stale[0]).toMatchObject({ host: "alice", needsFence: false, reason: "superseded by epoch 2 on bob:bob/k8s/pvc-1" });
  });

  it("fences a marked copy someone made writable again", () => {
    const d = decide([primary("alice", 1, { readonly: false, fenced: "superseded" }), primary("bob", 2)]);
    expect(d.stale[0]).toMatchObject({ host: "alice", needsFence: true });
  });

  it("refuses to choose between two primaries at the same newest epoch (split brain), naming both", () => {
    const d = decide([primary("alice", 2), primary("bob", 2), primary("carol", 1)]);
    expect(d.home).toBeUndefined();
    expect(d.problems).toEqual([expect.stringMatching(/split brain: alice:tank\/k8s\/pvc-1 and bob:bob\/k8s\/pvc-1 .*epoch 2/)]);
    expect(d.stale.map((s) => s.host)).toEqual(["carol"]);
  });

  it("calls a primary stale when a replica proves a newer epoch, even with the newer primary unreachable", () => {
    const d = decide([primary("alice", 1), replica("carol", 2)], [{ host: "bob", reason: "connection refused" }]);
    expect(d.home).toBeUndefined();
    expect(d.stale.map((s) => s.host)).toEqual(["alice"]);
    expect(d.stale[0]?.reason).toBe("superseded by epoch 2 on carol:carol/k8s/pvc-1");
    expect(d.problems).toEqual([expect.stringMatching(/no live primary.*epoch 2.*not reachable: bob/)]);
  });

  it("never serves a fenced copy, even when the copy that superseded it is unreachable", () => {
    const d = decide([primary("alice", 1, { readonly: true, fenced: "superseded by epoch 2 on bob:bob/k8s/pvc-1" })], [{ host: "bob", reason: "timeout" }]);
    expect(d.home).toBeUndefined();
    expect(d.stale.map((s) => s.host)).toEqual(["alice"]);
    expect(d.unknown).toEqual([{ host: "bob", reason: "timeout" }]);
  });

  it("lists unreachable hosts as unknown, not stale, and serves the reachable newest primary", () => {
    const d = decide([primary("bob", 2), replica("carol", 2)], [{ host: "alice", reason: "down" }]);
    expect(where(d.home)).toBe("bob:bob/k8s/pvc-1@2");
    expect(d.stale).toEqual([]);
    expect(d.unknown.map((u) => u.host)).toEqual(["alice"]);
  });

  it("has no home when only replicas are reachable", () => {
    const d = decide([replica("bob", 1)], [{ host: "alice", reason: "down" }]);
    expect(d.home).toBeUndefined();
    expect(d.replicas.map((r) => r.host)).toEqual(["bob"]);
    expect(d.problems).toEqual([expect.stringContaining("no live primary")]);
  });

  it("has no home while a copy's role is unreadable, rather than guess past it", () => {
    const d = decideHome(ID, [classifyCopy(ID, BIRTH, primary("alice", 1))!, classifyCopy(ID, BIRTH, primary("bob", 5, { role: "??" }))!]);
    expect(d.home).toBeUndefined();
    expect(d.problems).toEqual([expect.stringContaining('zcsi:role="??"')]);
  });

  it("gives the same answer whatever order the hosts answered in", () => {
    const all = [primary("alice", 1), primary("bob", 3), replica("carol", 3), primary("dave", 2), replica("erin", 1)];
    const first = decide(all);
    expect(where(first.home)).toBe("bob:bob/k8s/pvc-1@3");
    expect(first.stale.map((s) => s.host)).toEqual(["alice", "dave"]);
    for (const order of [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 4, 0, 3, 2]]) {
      expect(decide(order.map((i) => all[i]!))).toEqual(first);
    }
  });
});
