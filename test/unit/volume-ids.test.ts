import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { formatVolumeId, leafFromName, parseSnapshotId, parseVolumeId } from "../../src/volumes/ids.js";

const config = parseConfig({
  privateKeyFile: "/k",
  poolHosts: [{ name: "alice", address: "127.0.0.1", parentDataset: "tank/k8s", mountRoot: "/mnt/k8s", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbl" }],
});
const hosts = config.poolHosts;

describe("volume ids", () => {
  it("round-trips a volume id", () => {
    const id = formatVolumeId({ poolHost: "alice", dataset: "tank/k8s/pvc-1" });
    expect(id).toBe("alice:tank/k8s/pvc-1");
    expect(parseVolumeId(id, hosts)).toMatchObject({ poolHost: "alice", dataset: "tank/k8s/pvc-1", leaf: "pvc-1" });
  });
  it.each([
    "bob:tank/k8s/pvc-1", // unknown host
    "alice:tank/other/pvc-1", // outside the parent
    "alice:tank/k8s", // the parent itself
    "alice:tank/k8s/a/b", // not a direct child
    "alice:tank/k8s/../x",
    "alice:tank/k8s2/pvc-1", // a sibling that merely shares the prefix
    "tank/k8s/pvc-1",
    "alice:tank/k8s/pvc 1",
  ])("treats %s as a volume that does not exist", (id) => {
    expect(() => parseVolumeId(id, hosts)).toThrow(expect.objectContaining({ kind: "NotFound" }));
  });
  it("requires a volume id", () => {
    expect(() => parseVolumeId("", hosts)).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
  it("parses snapshot ids", () => {
    expect(parseSnapshotId("alice:tank/k8s/pvc-1@snap-1", hosts)).toMatchObject({ dataset: "tank/k8s/pvc-1", snapshot: "snap-1" });
  });
});

describe("leafFromName", () => {
  it("keeps provisioner names as they are", () => {
    expect(leafFromName("pvc-8f3a1c2e-0b7d-4f43-9a8e-2b1d5c6e7f80")).toBe("pvc-8f3a1c2e-0b7d-4f43-9a8e-2b1d5c6e7f80");
  });
  it.each(["", "-x", ".hidden", "a/b", "a b", "a@b", "a..b", "x".repeat(129), "é", "$(id)"])("refuses %j", (name) => {
    expect(() => leafFromName(name)).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
});
