import pino from "pino";
import { describe, expect, it } from "vitest";
import { PoolHosts } from "../../src/volumes/hosts.js";
import type { PvEvent } from "../../src/k8s/events.js";
import { fenceEvents } from "../../src/roles/fence-events.js";
import { storedReadonly, VolumeHomes } from "../../src/volumes/homes.js";
import { VolumeService } from "../../src/volumes/service.js";
import { FakePoolHost, TWO_POOL_HOSTS, zcsiRejection as failure } from "../harness/fake-pool-host.js";


const config = TWO_POOL_HOSTS;
const ID = "alice:tank/k8s/pvc-1";

function setup(alice: Record<string, string> | undefined, bob: Record<string, string> | undefined) {
  const a = new FakePoolHost("alice", new Map(alice ? [["tank/k8s/pvc-1", new Map(Object.entries(alice))]] : []));
  const b = new FakePoolHost("bob", new Map(bob ? [["pool2/k8s/pvc-1", new Map(Object.entries(bob))]] : []));
  const hosts = new PoolHosts([
    { config: config.poolHosts[0]!, exec: a },
    { config: config.poolHosts[1]!, exec: b },
  ]);
  return { a, b, service: new VolumeService(hosts, pino({ level: "silent" })) };
}

const primaryA = { "zcsi:csi-name": "pvc-1", "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "1", readonly: "off", mountpoint: "/ma/pvc-1" };
const replicaB = { "zcsi:csi-name": "pvc-1", "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "1", "zcsi:replica-of": ID, readonly: "on", mountpoint: "/mb/pvc-1" };


describe("reading a copy's readonly setting", () => {
  it("takes the setting, not a live mount that differs from it (source temporary)", () => {
    expect(storedReadonly({ value: "on", source: "local" })).toBe(true);
    expect(storedReadonly({ value: "off", source: "default" })).toBe(false);
    // zfs-fuse after `zfs set readonly=on` on a mounted dataset: the mount still says rw.
    expect(storedReadonly({ value: "off", source: "temporary" })).toBe(true);
    expect(storedReadonly({ value: "on", source: "temporary" })).toBe(false);
    expect(storedReadonly(undefined)).toBe(false);
  });
});

describe("VolumeService.resolveHome", () => {
  it("answers the primary, with its mountpoint and epoch, and changes nothing", async () => {
    const { a, b, service } = setup(primaryA, replicaB);
    expect(await service.resolveHome(ID)).toEqual({ host: "alice", dataset: "tank/k8s/pvc-1", mountpoint: "/ma/pvc-1", epoch: 1 });
    expect([...a.sets, ...b.sets]).toEqual([]);
  });

  it("answers the promoted replica after a failover and fences the old primary once", async () => {
    const { a, b, service } = setup(primaryA, { ...replicaB, "zcsi:role": "primary", "zcsi:epoch": "2" });
    expect(await service.resolveHome(ID)).toMatchObject({ host: "bob", dataset: "pool2/k8s/pvc-1", epoch: 2 });
    expect(a.sets).toEqual([["zfs", "set", "readonly=on", "zcsi:fenced=superseded by epoch 2 on bob:pool2/k8s/pvc-1", "tank/k8s/pvc-1"]]);
    expect(await service.resolveHome(ID)).toMatchObject({ host: "bob" });
    expect(a.sets).toHaveLength(1);
    expect(b.sets).toEqual([]);
  });

  it("serves a volume made before roles existed from its birth host", async () => {
    const { service } = setup({ "zcsi:csi-name": "pvc-1", readonly: "off", mountpoint: "/ma/pvc-1" }, undefined);
    expect(await service.resolveHome(ID)).toEqual({ host: "alice", dataset: "tank/k8s/pvc-1", mountpoint: "/ma/pvc-1", epoch: 1 });
  });

  it("serves the primary while a replica's host is down", async () => {
    const { b, service } = setup(primaryA, replicaB);
    b.down = true;
    expect(await service.resolveHome(ID)).toMatchObject({ host: "alice" });
  });

  it("is UNAVAILABLE when the only copy that answers is a replica", async () => {
    const { a, service } = setup(primaryA, replicaB);
    a.down = true;
    const f = await failure(service.resolveHome(ID));
    expect(f.kind).toBe("Unavailable");
    expect(f.message).toMatch(/not reachable: alice/);
  });

  it("is NOT_FOUND when no host has a copy, and for an id that cannot be a volume", async () => {
    const { service } = setup(undefined, undefined);
    expect((await failure(service.resolveHome(ID))).kind).toBe("NotFound");
    expect((await failure(service.resolveHome("carol:x/y"))).kind).toBe("NotFound");
  });

  it("is FAILED_PRECONDITION on split brain, naming both copies, and fences neither", async () => {
    const { a, b, service } = setup({ ...primaryA, "zcsi:epoch": "2" }, { ...replicaB, "zcsi:role": "primary", "zcsi:epoch": "2" });
    const f = await failure(service.resolveHome(ID));
    expect(f.kind).toBe("FailedPrecondition");
    expect(f.message).toMatch(/split brain: alice:tank\/k8s\/pvc-1 and bob:pool2\/k8s\/pvc-1/);
    expect([...a.sets, ...b.sets]).toEqual([]);
  });

  it("ignores a dataset of another volume that only shares the name", async () => {
    const { service } = setup(primaryA, { "zcsi:csi-name": "pvc-1", "zcsi:volume": "bob:pool2/k8s/pvc-1", "zcsi:role": "primary", "zcsi:epoch": "7", readonly: "off" });
    expect(await service.resolveHome(ID)).toMatchObject({ host: "alice", epoch: 1 });
  });
});

describe("fencing is reported on the PV (CopyFenced)", () => {
  it("records one Warning Event naming the stale copy, its epoch and how to resync it, when the fence is set", async () => {
    const a = new FakePoolHost("alice", new Map([["tank/k8s/pvc-1", new Map(Object.entries({ ...primaryA, "zcsi:pv": "pvc-3faf" }))]]));
    const b = new FakePoolHost("bob", new Map([["pool2/k8s/pvc-1", new Map(Object.entries({ ...replicaB, "zcsi:role": "primary", "zcsi:epoch": "2" }))]]));
    const hosts = new PoolHosts([
      { config: config.poolHosts[0]!, exec: a },
      { config: config.poolHosts[1]!, exec: b },
    ]);
    const events: PvEvent[] = [];
    const homes = new VolumeHomes(hosts, pino({ level: "silent" }), fenceEvents({ record: async (e) => void events.push(e) }));
    expect((await homes.find(ID)).home).toMatchObject({ host: "bob", epoch: 2 });
    expect(events).toEqual([
      {
        pvName: "pvc-3faf",
        type: "Warning",
        reason: "CopyFenced",
        message: `stale copy alice:tank/k8s/pvc-1 of ${ID} (primary at epoch 1: superseded by epoch 2 on bob:pool2/k8s/pvc-1) fenced (readonly); kept, never served: zcsi resync ${ID} --host alice makes it a replica`,
      },
    ]);
    // Fenced now (readonly=on, zcsi:fenced): the next lookup has nothing to fence and says nothing.
    await homes.find(ID);
    expect(events).toHaveLength(1);
  });

  it("records nothing when the fence could not be set (the next lookup tries again)", async () => {
    const a = new FakePoolHost("alice", new Map([["tank/k8s/pvc-1", new Map(Object.entries({ ...primaryA, "zcsi:pv": "pvc-3faf" }))]]));
    const b = new FakePoolHost("bob", new Map([["pool2/k8s/pvc-1", new Map(Object.entries({ ...replicaB, "zcsi:role": "primary", "zcsi:epoch": "2" }))]]));
    a.failSet = "cannot set property for 'tank/k8s/pvc-1': pool I/O is currently suspended";
    const hosts = new PoolHosts([
      { config: config.poolHosts[0]!, exec: a },
      { config: config.poolHosts[1]!, exec: b },
    ]);
    const events: PvEvent[] = [];
    const homes = new VolumeHomes(hosts, pino({ level: "silent" }), fenceEvents({ record: async (e) => void events.push(e) }));
    expect((await homes.find(ID)).stale).toHaveLength(1);
    expect(events).toEqual([]);
  });
});
