import { describe, expect, it } from "vitest";
import { mutableKeys, planModification, withMutableParameters } from "../../src/volumes/modify.js";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";
import type { Volume } from "../../src/volumes/volume.js";

const HOSTS = ["alice", "bob", "carol"];

function volume(parameters: Record<string, string>): Volume {
  const ref = { poolHost: "alice", dataset: "tank/k8s/pvc-1" };
  return { id: "alice:tank/k8s/pvc-1", ref, csiName: "pvc-1", capacityBytes: 1n << 30n, sizeMode: "refquota", usedBytes: 0n, mountpoint: "/tank/k8s/pvc-1", mounted: true, state: "ready", parameters: parseVolumeParameters(parameters, HOSTS).canonical };
}

describe("mutableKeys", () => {
  it("accepts the mutable parameters and the sidecars' keys, and nothing else", () => {
    expect(mutableKeys({ compression: "gzip", snapshotSchedule: "hourly=2", "csi.storage.k8s.io/pvc/name": "data" })).toEqual(["compression", "snapshotSchedule"]);
    expect(mutableKeys({})).toEqual([]);
  });
  it.each([
    [{ poolHost: "bob" }, /poolHost is fixed when a volume is created/],
    [{ uid: "1000" }, /uid is fixed/],
    [{ restoreMode: "copy" }, /restoreMode is fixed/],
    [{ compresion: "lz4" }, /unknown parameter "compresion"; mutable: compression, recordsize, atime, snapshotSchedule, replicateTo/],
  ])("refuses %j with INVALID_ARGUMENT", (raw, message) => {
    expect(() => mutableKeys(raw)).toThrow(expect.objectContaining({ kind: "InvalidArgument", message: expect.stringMatching(message) }));
  });
});

describe("withMutableParameters (CreateVolume)", () => {
  it("lets mutable_parameters take precedence over parameters", () => {
    const merged = withMutableParameters({ compression: "lzjb", atime: "off" }, { compression: "gzip-3" });
    expect(merged).toEqual({ compression: "gzip-3", atime: "off" });
    expect(parseVolumeParameters(merged, HOSTS).canonical).toBe(parseVolumeParameters({ atime: "off", compression: "gzip-3" }, HOSTS).canonical);
  });
  it("refuses an immutable key among mutable_parameters", () => {
    expect(() => withMutableParameters({}, { poolHost: "alice" })).toThrow(/poolHost is fixed/);
  });
});

describe("planModification", () => {
  it("sets the native properties given, and the stored parameters follow, in one property map with zcsi:parameters last", () => {
    const plan = planModification(volume({ compression: "lzjb", atime: "off" }), { compression: "gzip-9", recordsize: "32K" }, HOSTS);
    expect(plan.properties).toEqual({ compression: "gzip-9", recordsize: "32768", "zcsi:parameters": '{"atime":"off","compression":"gzip-9","recordsize":"32768"}' });
    expect(Object.keys(plan.properties).at(-1)).toBe("zcsi:parameters");
  });
  it("changes a snapshot schedule in normal form, and can turn it off", () => {
    expect(planModification(volume({}), { snapshotSchedule: " daily=7, hourly=24 " }, HOSTS).properties).toMatchObject({ "zcsi:snapshot-schedule": "hourly=24,daily=7" });
    expect(planModification(volume({ snapshotSchedule: "hourly=1" }), { snapshotSchedule: "off" }, HOSTS).properties).toMatchObject({ "zcsi:snapshot-schedule": "off", "zcsi:parameters": '{"snapshotSchedule":"off"}' });
  });
  it("starts replication with the default interval, and changes targets keeping the interval", () => {
    expect(planModification(volume({}), { replicateTo: "bob" }, HOSTS).properties).toEqual({
      "zcsi:replicate-to": "bob",
      "zcsi:replication-interval": "15m",
      "zcsi:parameters": '{"replicateTo":"bob"}',
    });
    const plan = planModification(volume({ replicateTo: "bob", replicationInterval: "1h" }), { replicateTo: "carol,bob" }, HOSTS);
    expect(plan.properties).toMatchObject({ "zcsi:replicate-to": "bob,carol", "zcsi:replication-interval": "1h" });
    expect(planModification(volume({ replicateTo: "bob" }), { replicationBandwidth: "1Mi" }, HOSTS).properties).toEqual({
      "zcsi:replication-bandwidth": "1048576",
      "zcsi:parameters": '{"replicateTo":"bob","replicationBandwidth":"1048576"}',
    });
  });
  it("plans from the targets a moved volume has now, not the StorageClass's: never its new home, never a stale old one", () => {
    // Born on alice replicating to bob and carol, migrated to bob: bob's copy replicates to carol and alice.
    const moved = { ...volume({ replicateTo: "bob,carol", replicationInterval: "1h" }), ref: { poolHost: "bob", dataset: "tank/k8s/pvc-1" }, replicateTo: "carol,alice" };
    expect(planModification(moved, { replicationInterval: "30m" }, HOSTS).properties).toMatchObject({ "zcsi:replicate-to": "alice,carol", "zcsi:replication-interval": "30m" });
  });
  it("leaves keys that are not given as they are (CSI: never act on absent keys)", () => {
    const plan = planModification(volume({ compression: "lzjb", snapshotSchedule: "hourly=1", replicateTo: "bob" }), { atime: "on" }, HOSTS);
    expect(plan.properties).toEqual({ atime: "on", "zcsi:parameters": '{"atime":"on","compression":"lzjb","replicateTo":"bob","snapshotSchedule":"hourly=1"}' });
  });
  it("gives the same plan for the same request: a retry sets the same values", () => {
    const v = volume({ compression: "lzjb" });
    const once = planModification(v, { compression: "gzip" }, HOSTS);
    const applied = { ...v, parameters: once.params.canonical };
    expect(planModification(applied, { compression: "gzip" }, HOSTS)).toEqual(once);
  });
  it.each([
    [{ compression: "lz5" }, /compression="lz5"/],
    [{ recordsize: "100K" }, /power of two/],
    [{ snapshotSchedule: "dayly=2" }, /unknown bucket "dayly"/],
    [{ replicateTo: "dave" }, /no such pool host in the config: dave/],
    [{ replicateTo: "alice" }, /names alice, where volume alice:tank\/k8s\/pvc-1 lives/],
    [{ replicationInterval: "1h" }, /needs replicateTo/],
    [{ replicationBandwidth: "1Ki" }, /at least 64Ki/],
    [{ poolHost: "bob" }, /poolHost is fixed/],
  ])("refuses %j as a StorageClass would", (mutable, message) => {
    expect(() => planModification(volume({}), mutable, HOSTS)).toThrow(expect.objectContaining({ kind: "InvalidArgument", message: expect.stringMatching(message) }));
  });
});
