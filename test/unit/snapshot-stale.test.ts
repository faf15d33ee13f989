import { describe, expect, it } from "vitest";
import { listedCopies, staleServingCopies } from "../../src/snapshots/stale.js";
import type { PropertyMap } from "../../src/zfs/parse.js";

/** One host's listing (`zfs get -d 2` below tank/k8s) as the snapshotter reads it: own (local) values. */
function listing(children: Record<string, Record<string, string>>): PropertyMap {
  const all: PropertyMap = new Map([["tank/k8s", new Map()]]);
  for (const [leaf, props] of Object.entries(children)) {
    all.set(`tank/k8s/${leaf}`, new Map(Object.entries(props).map(([k, v]) => [k, { value: v, source: "local" }])));
    all.set(`tank/k8s/${leaf}@zcsi-auto-2026-12-03T0900Z`, new Map([["type", { value: "snapshot", source: "-" }]]));
  }
  return all;
}

const ID = "alice:tank/k8s/pvc-1";
const primary = (epoch: string) => ({ "zcsi:csi-name": "pvc-1", "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": epoch });
const replica = (epoch: string) => ({ "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": epoch, "zcsi:replica-of": ID });

describe("stale copies in the snapshotter's listings", () => {
  it("finds the unfenced primary whose volume has a newer epoch on another host, whatever that copy's role", () => {
    const alice = listedCopies("alice", "tank/k8s", listing({ "pvc-1": primary("1") }));
    const bobPrimary = listedCopies("bob", "tank/k8s", listing({ "pvc-1": primary("2") }));
    expect(staleServingCopies([...alice, ...bobPrimary])).toEqual([expect.objectContaining({ host: "alice", dataset: "tank/k8s/pvc-1", epoch: 1, newer: expect.objectContaining({ host: "bob", epoch: 2 }) })]);
    // A replica at epoch 2 proves a promotion happened even while the new home cannot be listed.
    const bobReplica = listedCopies("bob", "tank/k8s", listing({ "pvc-1": replica("2") }));
    expect(staleServingCopies([...alice, ...bobReplica]).map((c) => c.host)).toEqual(["alice"]);
  });

  it("finds none when the home has the newest epoch, when the newer copy is another volume's, or is not listed", () => {
    const alice = listedCopies("alice", "tank/k8s", listing({ "pvc-1": primary("2") }));
    expect(staleServingCopies([...alice, ...listedCopies("bob", "tank/k8s", listing({ "pvc-1": replica("2") }))])).toEqual([]);
    expect(staleServingCopies([...alice, ...listedCopies("bob", "tank/k8s", listing({ "pvc-1": { ...primary("5"), "zcsi:volume": "bob:tank/k8s/pvc-1" } }))])).toEqual([]);
    expect(staleServingCopies(alice)).toEqual([]);
  });

  it("never reports a replica or a fenced copy (they are not snapshotted anyway), nor datasets deeper than the volumes", () => {
    const copies = [
      ...listedCopies("alice", "tank/k8s", listing({ "pvc-1": { ...primary("1"), "zcsi:fenced": "superseded by epoch 2 on bob:tank/k8s/pvc-1" } })),
      ...listedCopies("carol", "tank/k8s", listing({ "pvc-1": replica("1") })),
      ...listedCopies("bob", "tank/k8s", listing({ "pvc-1": primary("2") })),
    ];
    expect(staleServingCopies(copies)).toEqual([]);
    expect(listedCopies("alice", "tank/k8s", listing({ "apps/db": primary("1") }))).toEqual([]);
  });

  it("identifies a volume from before roles by its own id, and a replica from before identities by zcsi:replica-of", () => {
    const legacy = listedCopies("alice", "tank/k8s", listing({ "pvc-1": { "zcsi:csi-name": "pvc-1" } }));
    expect(legacy).toEqual([{ host: "alice", dataset: "tank/k8s/pvc-1", volumeId: ID, epoch: 1, serving: true }]);
    const promoted = listedCopies("bob", "tank/k8s", listing({ "pvc-1": { "zcsi:csi-name": "pvc-1", "zcsi:replica-of": ID, "zcsi:role": "primary", "zcsi:epoch": "2" } }));
    expect(staleServingCopies([...legacy, ...promoted]).map((c) => c.host)).toEqual(["alice"]);
  });
});
