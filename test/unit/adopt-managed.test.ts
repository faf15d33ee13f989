import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { ControllerService } from "../../src/csi/controller.js";
import { adoptedJobs, volumeJobs } from "../../src/replication/jobs.js";
import { validateJob } from "../../src/replication/validate.js";
import { adoptParameters } from "../../src/roles/adopt.js";
import { samePool } from "../../src/volumes/sources.js";
import { discoverAdopted } from "../../src/snapshots/scheduler.js";
import { adoptedReplicaLeaf } from "../../src/volumes/adopted-ids.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { volumeLeafFromName } from "../../src/volumes/ids.js";
import { VolumeService } from "../../src/volumes/service.js";
import { SnapshotService } from "../../src/volumes/snapshots.js";
import { parseGet } from "../../src/zfs/parse.js";
import { FAKE_HOST_KEY, FakePoolHost, zcsiRejection } from "../harness/fake-pool-host.js";

/** Snapshots, schedules and replication of adopted datasets (issue #16 item 2): the pure parts and the CSI call. */

const logger = pino({ level: "silent" });
const config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [
    { name: "alice", address: "127.0.0.1", user: "zcsi", parentDataset: "data/k8s", mountRoot: "/data/k8s", hostKey: FAKE_HOST_KEY, adoptRoots: ["data"] },
    { name: "bob", address: "127.0.0.1", user: "zcsi", parentDataset: "pool2/k8s", mountRoot: "/mb", hostKey: FAKE_HOST_KEY },
  ],
});
const [alice, bob] = config.poolHosts as [(typeof config.poolHosts)[0], (typeof config.poolHosts)[0]];
const rows = (lines: string[][]): string => lines.map((l) => l.join("\t")).join("\n") + "\n";

/** `zfs get -r` of the adoptRoot `data` as zfs prints it (abridged to what matters). */
const ROOT_LISTING = parseGet(
  rows([
    ["data", "type", "filesystem", "-"],
    ["data/mysql", "type", "filesystem", "-"],
    ["data/mysql", "zcsi:adopted", "read-write", "local"],
    ["data/mysql", "zcsi:snapshot-schedule", "daily=7", "local"],
    ["data/mysql", "zcsi:replicate-to", "bob", "local"],
    ["data/mysql", "zcsi:pv", "adopted-data-mysql-0123456789", "local"],
    ["data/mysql@nightly-2026-12-01", "type", "snapshot", "-"],
    ["data/mysql@nightly-2026-12-01", "guid", "11", "-"],
    ["data/mysql@nightly-2026-12-01", "createtxg", "5", "-"],
    ["data/mysql@zcsi-auto-2026-12-02T0000Z", "type", "snapshot", "-"],
    ["data/mysql@zcsi-auto-2026-12-02T0000Z", "zcsi:auto-snapshot", "daily=7", "local"],
    ["data/mysql@zcsi-auto-2026-12-02T0000Z", "createtxg", "9", "-"],
    // A child inherits the mark: it was not adopted, and is neither snapshotted nor replicated.
    ["data/mysql/binlog", "type", "filesystem", "-"],
    ["data/mysql/binlog", "zcsi:adopted", "read-write", "inherited from data/mysql"],
    ["data/mysql/binlog", "zcsi:snapshot-schedule", "daily=7", "inherited from data/mysql"],
    ["data/mysql/binlog", "zcsi:replicate-to", "bob", "inherited from data/mysql"],
    // A read-only adoption changes nothing on its dataset, whatever it carries.
    ["data/shared", "type", "filesystem", "-"],
    ["data/shared", "zcsi:adopted", "read-only", "local"],
    ["data/shared", "zcsi:snapshot-schedule", "daily=7", "local"],
    ["data/shared", "zcsi:replicate-to", "bob", "local"],
    // zcsi's own parent, listed too when a root contains it: its volumes are discovered by the parent listing only.
    ["data/k8s/pvc-1", "type", "filesystem", "-"],
    ["data/k8s/pvc-1", "zcsi:adopted", "read-write", "local"],
    ["data/k8s/pvc-1", "zcsi:snapshot-schedule", "daily=7", "local"],
  ]),
);

describe("the snapshotter finds adopted datasets", () => {
  it("only read-write adoptions marked on the dataset itself, below an adoptRoot, with their own and the operator's snapshots", () => {
    const found = discoverAdopted(alice, ROOT_LISTING);
    expect(found.map((v) => [v.volumeId, v.dataset, v.schedule, v.pv])).toEqual([["alice:data/mysql#adopted", "data/mysql", "daily=7", "adopted-data-mysql-0123456789"]]);
    const snapshots = found[0]!.snapshots;
    // The operator's snapshot is listed (it counts for clones and replication) but is never one of zcsi's automatic ones.
    expect(snapshots.find((s) => s.name === "nightly-2026-12-01")?.autoTime).toBeUndefined();
    expect(snapshots.find((s) => s.name === "zcsi-auto-2026-12-02T0000Z")?.autoTime).toBeTypeOf("number");
  });

  it("finds nothing on a host whose config lists no adoptRoots", () => {
    expect(discoverAdopted(bob, ROOT_LISTING)).toEqual([]);
  });
});

describe("the replicator's jobs for adopted datasets", () => {
  const set = adoptedJobs(alice, ROOT_LISTING, config.poolHosts);

  it("one job per target, into the target's parentDataset under a reserved name, as the adopted volume", () => {
    expect(set.problems).toEqual([]);
    expect(set.jobs).toHaveLength(1);
    const job = set.jobs[0]!;
    expect(job.job.origin).toEqual({ kind: "volume", volumeId: "alice:data/mysql#adopted" });
    expect(job.job.source).toEqual({ host: "alice", dataset: "data/mysql" });
    expect(job.job.target.host).toBe("bob");
    expect(job.job.target.dataset).toMatch(/^pool2\/k8s\/zcsi-adopted-alice-data-mysql-[0-9a-f]{8}$/);
    expect(job.pvName).toBe("adopted-data-mysql-0123456789");
    expect(() => validateJob(job.job, new PoolHosts([{ config: alice, exec: new FakePoolHost("alice") }, { config: bob, exec: new FakePoolHost("bob") }]))).not.toThrow();
  });

  it("the engine refuses a source outside the parent that is not the adopted dataset its id names", () => {
    const hosts = new PoolHosts([{ config: alice, exec: new FakePoolHost("alice") }, { config: bob, exec: new FakePoolHost("bob") }]);
    const job = set.jobs[0]!.job;
    for (const origin of [{ kind: "volume" as const, volumeId: "alice:data/other#adopted" }, { kind: "volume" as const, volumeId: "alice:data/mysql#adopted-ro-team-a" }, { kind: "annotation" as const, node: "alice" }]) {
      expect(() => validateJob({ ...job, origin }, hosts)).toThrow(/not below the host's parentDataset/);
    }
  });

  it("an adopted dataset's replica can never have a volume's name: the prefix is refused to CreateVolume, and names stay apart", () => {
    const leaf = adoptedReplicaLeaf("alice", "data/mysql");
    expect(() => volumeLeafFromName(leaf)).toThrow(/prefix zcsi-adopted- is reserved/);
    expect(adoptedReplicaLeaf("alice", "data/a-b")).not.toBe(adoptedReplicaLeaf("alice", "data/a/b"));
    expect(adoptedReplicaLeaf("alice", "data/x")).not.toBe(adoptedReplicaLeaf("carol", "data/x"));
    expect(volumeLeafFromName("pvc-1")).toBe("pvc-1");
  });

  it("zcsi's own volume jobs ignore the adoption mark (a volume is found by its zcsi:csi-name)", () => {
    expect(volumeJobs(alice, ROOT_LISTING, config.poolHosts).jobs).toEqual([]);
  });
});

describe("zcsi adopt's parameter flags", () => {
  it("are the StorageClass parameters of the same names", () => {
    expect(adoptParameters({ dataset: "data/x", pvc: "a/b", snapshotSchedule: "daily=7", replicateTo: "bob" })).toEqual({ snapshotSchedule: "daily=7", replicateTo: "bob" });
    expect(adoptParameters({ dataset: "data/x", pvc: "a/b" })).toEqual({});
  });
});

describe("restores across pools", () => {
  it("are copies: a clone cannot leave its origin's pool", () => {
    expect(samePool("data/mysql", "data/k8s/pvc-1")).toBe(true);
    expect(samePool("data/mysql", "tank/k8s/pvc-1")).toBe(false);
  });
});

describe("ControllerModifyVolume of an adopted volume", () => {
  function controller(): { service: ControllerService; host: FakePoolHost } {
    const props = { type: "filesystem", referenced: "4096", available: "1000000", refquota: "0", quota: "0", mountpoint: "/data/mysql", mounted: "yes", origin: "-", "zcsi:adopted": "read-write" };
    const host = new FakePoolHost("alice", new Map([["data/mysql", new Map(Object.entries(props))]]));
    const hosts = new PoolHosts([{ config: alice, exec: host }, { config: bob, exec: new FakePoolHost("bob") }]);
    return { service: new ControllerService(config, new VolumeService(hosts, logger), new SnapshotService(hosts, logger), logger), host };
  }

  it("sets the schedule and replication as the same zcsi:* properties a volume carries, and keeps them for the next change", async () => {
    const { service, host } = controller();
    await service.controllerModifyVolume({ volumeId: "alice:data/mysql#adopted", mutableParameters: { snapshotSchedule: "daily=7,hourly=24" }, secrets: {} });
    const ds = host.datasets.get("data/mysql")!;
    expect(ds.get("zcsi:snapshot-schedule")).toBe("hourly=24,daily=7");
    await service.controllerModifyVolume({ volumeId: "alice:data/mysql#adopted", mutableParameters: { replicateTo: "bob" }, secrets: {} });
    expect(ds.get("zcsi:replicate-to")).toBe("bob");
    expect(ds.get("zcsi:replication-interval")).toBe("15m");
    expect(JSON.parse(ds.get("zcsi:parameters")!)).toMatchObject({ snapshotSchedule: "hourly=24,daily=7", replicateTo: "bob" });
  });

  it("refuses, changing nothing: a read-only adoption, a bad schedule, a replica on the dataset's own host", async () => {
    const { service, host } = controller();
    const cases: [string, Record<string, string>, RegExp][] = [
      ["alice:data/mysql#adopted-ro-team-a", { snapshotSchedule: "daily=7" }, /read-only adoption/],
      ["alice:data/mysql#adopted", { snapshotSchedule: "sometimes" }, /snapshotSchedule/],
      ["alice:data/mysql#adopted", { replicateTo: "alice" }, /a replica must be on another host|names alice/],
      ["alice:data/mysql#adopted", { sizeMode: "thin" }, /fixed when a volume is created/],
    ];
    for (const [volumeId, mutableParameters, message] of cases) {
      const err = await zcsiRejection(service.controllerModifyVolume({ volumeId, mutableParameters, secrets: {} }));
      expect(err, JSON.stringify(mutableParameters)).toMatchObject({ kind: "InvalidArgument", message: expect.stringMatching(message) });
    }
    expect(host.sets).toEqual([]);
  });
});
