import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { isZcsiError, unavailable, type ErrorKind } from "../../src/errors.js";
import type { ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { storedReadonly } from "../../src/volumes/homes.js";
import { VolumeService } from "../../src/volumes/service.js";

/** A pool host's datasets as `zfs get` shows them (every value local), or a host that is down. */
class FakeHost implements Executor {
  readonly sets: string[][] = [];
  down = false;
  constructor(
    readonly host: string,
    readonly datasets: Map<string, Map<string, string>> = new Map(),
  ) {}
  async run(argv: readonly string[]): Promise<ExecResult> {
    if (this.down) throw unavailable(`ssh ${this.host}: connection refused`);
    if (argv[1] === "version") return { stdout: "zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n", stderr: "", exitCode: 0 };
    if (argv[1] === "get") {
      const name = argv[argv.length - 1]!;
      const props = argv[argv.length - 2]!.split(",");
      const ds = this.datasets.get(name);
      if (!ds) return { stdout: "", stderr: `cannot open '${name}': dataset does not exist\n`, exitCode: 1 };
      const lines = props.map((p) => (ds.has(p) ? `${name}\t${p}\t${ds.get(p)}\t${p.includes(":") || p === "readonly" ? "local" : "-"}` : `${name}\t${p}\t-\t-`));
      return { stdout: lines.join("\n") + "\n", stderr: "", exitCode: 0 };
    }
    if (argv[1] === "set") {
      this.sets.push([...argv]);
      const name = argv[argv.length - 1]!;
      for (const a of argv.slice(2, -1)) {
        const eq = a.indexOf("=");
        this.datasets.get(name)?.set(a.slice(0, eq), a.slice(eq + 1));
      }
      return { stdout: "", stderr: "", exitCode: 0 };
    }
    return { stdout: "", stderr: `unexpected ${argv.join(" ")}`, exitCode: 2 };
  }
  stream(): Promise<ExecStream> {
    return Promise.reject(new Error("no streams here"));
  }
  async close(): Promise<void> {}
}

const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [
    { name: "alice", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "tank/k8s", mountRoot: "/ma", hostKey: key },
    { name: "bob", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "pool2/k8s", mountRoot: "/mb", hostKey: key },
  ],
});
const ID = "alice:tank/k8s/pvc-1";

function setup(alice: Record<string, string> | undefined, bob: Record<string, string> | undefined) {
  const a = new FakeHost("alice", new Map(alice ? [["tank/k8s/pvc-1", new Map(Object.entries(alice))]] : []));
  const b = new FakeHost("bob", new Map(bob ? [["pool2/k8s/pvc-1", new Map(Object.entries(bob))]] : []));
  const hosts = new PoolHosts([
    { config: config.poolHosts[0]!, exec: a },
    { config: config.poolHosts[1]!, exec: b },
  ]);
  return { a, b, service: new VolumeService(hosts, pino({ level: "silent" })) };
}

const primaryA = { "zcsi:csi-name": "pvc-1", "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "1", readonly: "off", mountpoint: "/ma/pvc-1" };
const replicaB = { "zcsi:csi-name": "pvc-1", "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "1", "zcsi:replica-of": ID, readonly: "on", mountpoint: "/mb/pvc-1" };

async function failure(p: Promise<unknown>): Promise<{ kind: ErrorKind; message: string }> {
  try {
    await p;
  } catch (err) {
    if (isZcsiError(err)) return { kind: err.kind, message: err.message };
    throw err;
  }
  throw new Error("expected a failure");
}

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
