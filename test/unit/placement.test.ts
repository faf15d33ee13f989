import { describe, expect, it } from "vitest";
import { preferredNode } from "../../src/csi/topology.js";
import { choosePlacement, describePlacement, type PlacementInput } from "../../src/volumes/placement.js";

const GiB = 1n << 30n;
const base: PlacementInput = {
  hosts: ["alice", "bob", "carol"],
  free: new Map([["alice", 10n * GiB], ["bob", 30n * GiB], ["carol", 20n * GiB]]),
  capacityBytes: 5n * GiB,
  exclude: [],
};

describe("choosePlacement", () => {
  it("takes the pod's node when it is a pool host with room, over the StorageClass poolHost and the most free host", () => {
    expect(choosePlacement({ ...base, preferredNode: "alice" })).toEqual({ host: "alice", reason: "pod-node" });
    expect(choosePlacement({ ...base, preferredNode: "alice", poolHost: "carol" })).toEqual({ host: "alice", reason: "pod-node" });
  });

  it("takes the pod's node when the volume fills exactly its free space", () => {
    expect(choosePlacement({ ...base, preferredNode: "alice", capacityBytes: 10n * GiB })).toEqual({ host: "alice", reason: "pod-node" });
  });

  it("falls back to the most free host when the pod's node lacks room, and says why", () => {
    const choice = choosePlacement({ ...base, preferredNode: "alice", capacityBytes: 11n * GiB });
    expect(choice).toEqual({ host: "bob", reason: "most-free", preferredSkipped: `${10n * GiB} bytes free, ${11n * GiB} requested` });
    expect(describePlacement(choice, "alice")).toBe(`most-free (pod's node alice: ${10n * GiB} bytes free, ${11n * GiB} requested)`);
  });

  it("falls back to the StorageClass poolHost when the pod's node lacks room", () => {
    expect(choosePlacement({ ...base, preferredNode: "alice", poolHost: "carol", capacityBytes: 11n * GiB })).toMatchObject({ host: "carol", reason: "storage-class" });
  });

  it("passes over a pod's node that is not a pool host, does not answer, or is a replication target", () => {
    expect(choosePlacement({ ...base, preferredNode: "worker-1" })).toEqual({ host: "bob", reason: "most-free", preferredSkipped: "not a pool host" });
    const down = new Map(base.free);
    down.delete("alice");
    expect(choosePlacement({ ...base, free: down, preferredNode: "alice" })).toEqual({ host: "bob", reason: "most-free", preferredSkipped: "not answering" });
    expect(choosePlacement({ ...base, preferredNode: "alice", exclude: ["alice"] })).toEqual({ host: "bob", reason: "most-free", preferredSkipped: "a replication target of the volume (replicateTo)" });
  });

  it("without a pod's node: the StorageClass poolHost, else the most free host that is not a replication target", () => {
    expect(choosePlacement({ ...base, poolHost: "alice" })).toEqual({ host: "alice", reason: "storage-class" });
    expect(choosePlacement(base)).toEqual({ host: "bob", reason: "most-free" });
    expect(choosePlacement({ ...base, exclude: ["bob"] })).toEqual({ host: "carol", reason: "most-free" });
    expect(describePlacement(choosePlacement(base), undefined)).toBe("most-free");
  });

  it("breaks a tie in config order and finds no host when none that may hold the volume answers", () => {
    expect(choosePlacement({ ...base, free: new Map([["carol", GiB], ["bob", GiB]]) }).host).toBe("bob");
    expect(choosePlacement({ ...base, free: new Map([["alice", GiB]]), exclude: ["alice"] }).host).toBeUndefined();
  });
});

describe("preferredNode", () => {
  const key = "zfs.zcsi.dev/node";
  const term = (node: string) => ({ segments: { [key]: node, "zfs.zcsi.dev/access": "any-node" } });

  it("is the <driver>/node of the first preferred topology (the node the scheduler selected)", () => {
    expect(preferredNode({ requisite: [term("a"), term("b")], preferred: [term("b"), term("a")] }, "zfs.zcsi.dev")).toBe("b");
  });

  it("is undefined without requirements, without preferred entries, or without the node key", () => {
    expect(preferredNode(undefined, "zfs.zcsi.dev")).toBeUndefined();
    expect(preferredNode(null, "zfs.zcsi.dev")).toBeUndefined();
    expect(preferredNode({ requisite: [term("a")], preferred: [] }, "zfs.zcsi.dev")).toBeUndefined();
    expect(preferredNode({ requisite: [], preferred: [{ segments: { "topology.kubernetes.io/zone": "z1" } }] }, "zfs.zcsi.dev")).toBeUndefined();
    expect(preferredNode({ requisite: [], preferred: [term("a")] }, "other.example.com")).toBeUndefined();
  });
});
