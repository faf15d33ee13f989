import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { ControllerService } from "../../src/csi/controller.js";
import { NodeService } from "../../src/csi/node.js";
import type { VolumeMounts } from "../../src/mount/volume-mounts.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { VolumeService } from "../../src/volumes/service.js";
import { SnapshotService } from "../../src/volumes/snapshots.js";
import { FAKE_HOST_KEY, FakePoolHost, zcsiRejection } from "../harness/fake-pool-host.js";

/** The CSI services facing adopted volume ids (volumes/adopted-ids.ts), over a fake pool host. */

const logger = pino({ level: "silent" });
const config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [{ name: "alice", address: "127.0.0.1", user: "zcsi", parentDataset: "data/k8s", mountRoot: "/data/k8s", hostKey: FAKE_HOST_KEY, adoptRoots: ["data"] }],
});

function controller(): { service: ControllerService; host: FakePoolHost } {
  const props = { type: "filesystem", referenced: "4096", available: "1000000", refquota: "0", quota: "0", mountpoint: "/data/mysql", mounted: "yes", origin: "-", "zcsi:adopted": "read-write" };
  const host = new FakePoolHost("alice", new Map([["data/mysql", new Map(Object.entries(props))]]));
  const hosts = new PoolHosts([{ config: config.poolHosts[0]!, exec: host }]);
  return { service: new ControllerService(config, new VolumeService(hosts, logger), new SnapshotService(hosts, logger), logger), host };
}

describe("controller, adopted volumes", () => {
  it("DeleteVolume answers OK and runs no command at all on the pool host, for every adopted id, allowed or not", async () => {
    const { service, host } = controller();
    for (const volumeId of ["alice:data/mysql#adopted", "alice:data/mysql#adopted-ro-team-a", "alice:elsewhere/x#adopted", "bob:data/x#adopted", "alice:data/k8s/pvc-1#adopted"]) {
      expect(await service.deleteVolume({ volumeId, secrets: {} })).toEqual({});
    }
    expect(host.commands).toEqual([]);
  });

  it("expansion is INVALID_ARGUMENT and sets nothing; a read-only adoption is neither snapshotted nor modified", async () => {
    const { service, host } = controller();
    const expand = await zcsiRejection(service.controllerExpandVolume({ volumeId: "alice:data/mysql#adopted", capacityRange: { requiredBytes: "2000000", limitBytes: "0" }, secrets: {}, volumeCapability: null }));
    expect(expand).toMatchObject({ kind: "InvalidArgument", message: expect.stringMatching(/adopted dataset; zcsi never changes its size/) });
    const snap = await zcsiRejection(service.createSnapshot({ name: "snapshot-1", sourceVolumeId: "alice:data/mysql#adopted-ro-team-a", parameters: {}, secrets: {} }));
    expect(snap).toMatchObject({ kind: "InvalidArgument", message: expect.stringMatching(/read-only adoption/) });
    const modify = await zcsiRejection(service.controllerModifyVolume({ volumeId: "alice:data/mysql#adopted-ro-team-a", mutableParameters: { snapshotSchedule: "daily=7" }, secrets: {} }));
    expect(modify).toMatchObject({ kind: "InvalidArgument", message: expect.stringMatching(/read-only adoption/) });
    expect(host.sets).toEqual([]);
  });

  it("ControllerGetVolume reports the dataset where it is, with placement adopted", async () => {
    const { service } = controller();
    const got = await service.controllerGetVolume({ volumeId: "alice:data/mysql#adopted" });
    expect(got.volume).toMatchObject({ volumeId: "alice:data/mysql#adopted", capacityBytes: "1004096", volumeContext: { poolHost: "alice", dataset: "data/mysql", mountpoint: "/data/mysql", placement: "adopted" } });
  });
});

describe("node, adopted volumes", () => {
  const node = new NodeService(config, {} as VolumeMounts, { nodeId: "alice", maxVolumesPerNode: 0 }, logger);
  const id = "alice:data/mysql#adopted";

  it("mounts from the dataset's own mountpoint, from publish_context or volume_context, bound locally on the pool host", () => {
    expect(node.resolveServed(id, {}, { poolHost: "alice", dataset: "data/mysql", mountpoint: "/data/mysql" })).toMatchObject({ dataset: "data/mysql", mountpoint: "/data/mysql", local: true });
    expect(node.resolveServed(id, { mountpoint: "/data/mysql" }, undefined).mountpoint).toBe("/data/mysql");
  });

  it("refuses a context that disagrees with the id or with itself, a relative path, and a dataset the config does not allow", () => {
    expect(() => node.resolveServed(id, {}, { poolHost: "alice", dataset: "data/other", mountpoint: "/data/other" })).toThrow(/dataset="data\/other" does not match/);
    expect(() => node.resolveServed(id, { mountpoint: "/data/mysql" }, { poolHost: "alice", dataset: "data/mysql", mountpoint: "/etc" })).toThrow(/is not where it is served/);
    expect(() => node.resolveServed(id, { mountpoint: "data/mysql" }, undefined)).toThrow(/not an absolute path/);
    expect(() => node.resolveServed(id, { mountpoint: "/data/../etc" }, undefined)).toThrow(/not an absolute path/);
    expect(() => node.resolveServed("alice:data/k8s/pvc-1#adopted", {}, undefined)).toThrow(expect.objectContaining({ kind: "NotFound" }));
  });
});
