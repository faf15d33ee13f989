import { describe, expect, it } from "vitest";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";

const HOSTS = ["alice", "bob"];

describe("parseVolumeParameters", () => {
  it("normalises the documented parameters", () => {
    const p = parseVolumeParameters({ compression: "lz4", recordsize: "128K", atime: "off", uid: "1000", gid: "2000", mode: "770", poolHost: "bob" }, HOSTS);
    expect(p.zfsProperties).toEqual({ compression: "lz4", recordsize: "131072", atime: "off" });
    expect(p).toMatchObject({ poolHost: "bob", uid: 1000, gid: 2000, mode: "0770" });
  });
  it("gives the same canonical form whatever the key order or spelling of equal values", () => {
    const a = parseVolumeParameters({ recordsize: "131072", compression: "lz4" }, HOSTS);
    const b = parseVolumeParameters({ compression: "lz4", recordsize: "128k" }, HOSTS);
    expect(a.canonical).toBe(b.canonical);
  });
  it("ignores sidecar parameters in the canonical form but records PVC names", () => {
    const p = parseVolumeParameters(
      { "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "csi.storage.k8s.io/pv/name": "pvc-1", "csi.storage.k8s.io/fstype": "zfs" },
      HOSTS,
    );
    expect(p.canonical).toBe("{}");
    expect(p).toMatchObject({ pvcName: "data", pvcNamespace: "db", pvName: "pvc-1" });
  });
  it.each([
    [{ compresion: "lz4" }, /unknown parameter "compresion"/],
    [{ compression: "lz5" }, /compression/],
    [{ recordsize: "100K" }, /power of two/],
    [{ recordsize: "32M" }, /power of two/],
    [{ atime: "yes" }, /atime/],
    [{ uid: "-1" }, /uid/],
    [{ uid: "1e3" }, /uid/],
    [{ gid: "4294967295" }, /gid/],
    [{ mode: "999" }, /mode/],
    [{ mode: "u+rwx" }, /mode/],
    [{ poolHost: "carol" }, /no such pool host/],
    [{ poolHost: "a;b" }, /poolHost/],
  ])("rejects %j with INVALID_ARGUMENT naming the parameter", (raw, message) => {
    expect(() => parseVolumeParameters(raw, HOSTS)).toThrow(expect.objectContaining({ kind: "InvalidArgument", message: expect.stringMatching(message) }));
  });
});
