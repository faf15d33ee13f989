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

describe("replication parameters", () => {
  const THREE = ["alice", "bob", "carol"];

  it("normalises replicateTo (sorted, trimmed) and defaults the interval to 15m", () => {
    const p = parseVolumeParameters({ replicateTo: "carol, bob" }, THREE);
    expect(p.replicateTo).toEqual(["bob", "carol"]);
    expect(p.replicationInterval).toBe("15m");
    // The default is not part of what a retry must match: a class that never named an interval still matches.
    expect(p.canonical).toBe(JSON.stringify({ replicateTo: "bob,carol" }));
  });

  it("writes intervals in one normal form, so equal intervals compare equal on a retry", () => {
    const a = parseVolumeParameters({ replicateTo: "bob", replicationInterval: "90m" }, THREE);
    const b = parseVolumeParameters({ replicateTo: "bob", replicationInterval: "1h30m" }, THREE);
    expect(a.replicationInterval).toBe("1h30m");
    expect(a.canonical).toBe(b.canonical);
    expect(parseVolumeParameters({ replicateTo: "bob", replicationInterval: "1m" }, THREE).replicationInterval).toBe("1m");
    expect(parseVolumeParameters({ replicateTo: "bob", replicationInterval: "1d" }, THREE).replicationInterval).toBe("1d");
  });

  it("gives different canonical forms for different targets or intervals (a retry with them is ALREADY_EXISTS)", () => {
    const base = parseVolumeParameters({ replicateTo: "bob", replicationInterval: "15m" }, THREE).canonical;
    expect(parseVolumeParameters({ replicateTo: "carol", replicationInterval: "15m" }, THREE).canonical).not.toBe(base);
    expect(parseVolumeParameters({ replicateTo: "bob", replicationInterval: "1h" }, THREE).canonical).not.toBe(base);
    expect(parseVolumeParameters({}, THREE).canonical).not.toBe(base);
  });

  it("reads replicationBandwidth as bytes per second in one normal form; absent means unlimited", () => {
    const a = parseVolumeParameters({ replicateTo: "bob", replicationBandwidth: "50Mi" }, THREE);
    expect(a.replicationBandwidth).toBe(50 * 2 ** 20);
    expect(a.canonical).toBe(parseVolumeParameters({ replicateTo: "bob", replicationBandwidth: "52428800" }, THREE).canonical);
    expect(parseVolumeParameters({ replicateTo: "bob", replicationBandwidth: "10M" }, THREE).replicationBandwidth).toBe(10_000_000);
    expect(parseVolumeParameters({ replicateTo: "bob", replicationBandwidth: "1Gi" }, THREE).replicationBandwidth).toBe(2 ** 30);
    expect(parseVolumeParameters({ replicateTo: "bob" }, THREE).replicationBandwidth).toBeUndefined();
    expect(parseVolumeParameters({ replicateTo: "bob", replicationBandwidth: "20Mi" }, THREE).canonical).not.toBe(a.canonical);
  });

  it.each([
    [{ replicateTo: "bob", replicationBandwidth: "fast" }, /replicationBandwidth.*bytes per second/],
    [{ replicateTo: "bob", replicationBandwidth: "50MB" }, /replicationBandwidth.*bytes per second/],
    [{ replicateTo: "bob", replicationBandwidth: "0" }, /replicationBandwidth/],
    [{ replicateTo: "bob", replicationBandwidth: "-1Mi" }, /replicationBandwidth/],
    [{ replicateTo: "bob", replicationBandwidth: "1k" }, /replicationBandwidth.*at least 64Ki/],
    [{ replicationBandwidth: "50Mi" }, /replicationBandwidth="50Mi" needs replicateTo/],
    [{ replicateTo: "dave" }, /replicateTo.*no such pool host in the config: dave/],
    [{ replicateTo: "bob,bob" }, /replicateTo.*bob is listed twice/],
    [{ replicateTo: "bob,,carol" }, /replicateTo.*"" is not a pool host name/],
    [{ replicateTo: "b ob" }, /replicateTo/],
    [{ replicateTo: "bob", poolHost: "bob" }, /replicateTo.*own pool host bob/],
    [{ replicateTo: "alice,bob,carol" }, /replicateTo.*names every pool host/],
    [{ replicateTo: "bob", replicationInterval: "30s" }, /replicationInterval.*at least 1m/],
    [{ replicateTo: "bob", replicationInterval: "15" }, /replicationInterval.*must be a duration/],
    [{ replicateTo: "bob", replicationInterval: "1w" }, /replicationInterval.*must be a duration/],
    [{ replicateTo: "bob", replicationInterval: "-5m" }, /replicationInterval/],
    [{ replicationInterval: "15m" }, /replicationInterval.*needs replicateTo/],
  ])("rejects %j with INVALID_ARGUMENT naming the parameter", (raw, message) => {
    expect(() => parseVolumeParameters(raw, THREE)).toThrow(expect.objectContaining({ kind: "InvalidArgument", message: expect.stringMatching(message) }));
  });
});

describe("sizeMode", () => {
  it("is refquota by default, and each documented mode is taken as given", () => {
    expect(parseVolumeParameters({}, HOSTS).sizeMode).toBe("refquota");
    for (const mode of ["refquota", "quota", "thin", "reserved"]) expect(parseVolumeParameters({ sizeMode: mode }, HOSTS).sizeMode).toBe(mode);
  });

  it("is part of what a retry must match, except the default, which matches no sizeMode at all", () => {
    expect(parseVolumeParameters({ sizeMode: "thin" }, HOSTS).canonical).toBe(JSON.stringify({ sizeMode: "thin" }));
    expect(parseVolumeParameters({ sizeMode: "reserved" }, HOSTS).canonical).not.toBe(parseVolumeParameters({ sizeMode: "thin" }, HOSTS).canonical);
    // Volumes made before sizeMode existed carry no sizeMode in zcsi:parameters: they are refquota.
    expect(parseVolumeParameters({ sizeMode: "refquota" }, HOSTS).canonical).toBe("{}");
  });

  it.each(["Thin", "none", "refreservation", "", "thin,reserved"])("rejects sizeMode=%j with INVALID_ARGUMENT listing the modes", (value) => {
    expect(() => parseVolumeParameters({ sizeMode: value }, HOSTS)).toThrow(
      expect.objectContaining({ kind: "InvalidArgument", message: expect.stringMatching(/^parameter sizeMode=.*: must be one of refquota, quota, thin, reserved$/) }),
    );
  });
});

describe("snapshotGroup", () => {
  it("is kept as given with a schedule, and is part of what a retry must match", () => {
    const p = parseVolumeParameters({ snapshotSchedule: "hourly=2", snapshotGroup: "orders-db" }, HOSTS);
    expect(p.snapshotGroup).toBe("orders-db");
    expect(p.canonical).not.toBe(parseVolumeParameters({ snapshotSchedule: "hourly=2", snapshotGroup: "other" }, HOSTS).canonical);
  });
  it.each([["Orders"], ["-db"], ["db-"], ["a_b"], ["x".repeat(64)], [""]])("refuses the name %j", (name) => {
    expect(() => parseVolumeParameters({ snapshotSchedule: "hourly=2", snapshotGroup: name }, HOSTS)).toThrow(/snapshotGroup/);
  });
  it("needs snapshotSchedule: a group without a schedule would never be snapshotted", () => {
    expect(() => parseVolumeParameters({ snapshotGroup: "db" }, HOSTS)).toThrow(/snapshotGroup="db" needs snapshotSchedule/);
  });
});
