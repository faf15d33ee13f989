import { describe, expect, it } from "vitest";
import { controllerDefinition, loadCsiProto } from "../../src/csi/proto.js";

const proto = loadCsiProto();
const plain = proto.csi.v1.Controller.service;
const sliced = controllerDefinition(proto);

const volumes = (n: number): { volume: { volumeId: string; capacityBytes: string; volumeContext: Record<string, string> }; status: { publishedNodeIds: string[]; volumeCondition: { abnormal: boolean; message: string } } }[] =>
  Array.from({ length: n }, (_, i) => ({
    volume: { volumeId: `alice:tank/k8s/pvc-${i}`, capacityBytes: String(1 << 20), volumeContext: { poolHost: "alice", dataset: `tank/k8s/pvc-${i}` } },
    status: { publishedNodeIds: [], volumeCondition: { abnormal: i % 7 === 0, message: i % 7 === 0 ? "not mounted" : "" } },
  }));

describe("ListVolumes and ListSnapshots replies serialized in slices", () => {
  it("decode to the same reply as one serialization, entries in order and next_token once", () => {
    for (const n of [0, 1, 100, 101, 250]) {
      const reply = { entries: volumes(n), nextToken: n > 0 ? "dG9rZW4" : "" };
      const bytes = sliced.ListVolumes.responseSerialize(reply);
      expect(sliced.ListVolumes.responseDeserialize(bytes)).toEqual(plain.ListVolumes.responseDeserialize(plain.ListVolumes.responseSerialize(reply)));
      expect(plain.ListVolumes.responseDeserialize(bytes).entries.map((e) => e.volume?.volumeId)).toEqual(reply.entries.map((e) => e.volume.volumeId));
    }
  });

  it("leaves a ListSnapshots reply's bytes unchanged up to a page of entries, and its decoding unchanged above", () => {
    const entries = (n: number): { snapshot: { snapshotId: string; sourceVolumeId: string; sizeBytes: string; readyToUse: boolean } }[] =>
      Array.from({ length: n }, (_, i) => ({ snapshot: { snapshotId: `alice:tank/k8s/pvc-${i}@s`, sourceVolumeId: `alice:tank/k8s/pvc-${i}`, sizeBytes: "4096", readyToUse: true } }));
    const small = { entries: entries(100), nextToken: "" };
    expect(sliced.ListSnapshots.responseSerialize(small)).toEqual(plain.ListSnapshots.responseSerialize(small));
    const large = { entries: entries(333), nextToken: "eA" };
    expect(plain.ListSnapshots.responseDeserialize(sliced.ListSnapshots.responseSerialize(large))).toEqual(plain.ListSnapshots.responseDeserialize(plain.ListSnapshots.responseSerialize(large)));
  });
});
