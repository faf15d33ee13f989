import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";
import { VolumeService } from "../../src/volumes/service.js";
import { CARRIED_PROPS, PROP } from "../../src/volumes/properties.js";
import { capacityOf, largestVolume, recordsizeOf, SIZE_PROPERTIES, sizeModeOf, sizeProperties, spaceNeeded, type SizeMode } from "../../src/volumes/size-modes.js";
import { PropertyView } from "../../src/zfs/parse.js";
import { fail, ok, ScriptedExecutor } from "../harness/scripted-executor.js";

const MiB = 1n << 20n;

/** Properties as `zfs get -Hp -o name,property,value,source` gives them (parse.ts). */
function props(values: Record<string, [string, string]>): Map<string, { value: string; source: string }> {
  return new Map(Object.entries(values).map(([k, [value, source]]) => [k, { value, source }]));
}

function capacity(mode: SizeMode, values: Record<string, [string, string]>): bigint {
  const p = props(values);
  return capacityOf(mode, new PropertyView("tank/k8s/pvc-1", p, "alice"), p);
}

describe("size modes", () => {
  it("set the properties each mode means, refquota before refreservation (ZFS refuses a reservation above the refquota)", () => {
    expect(sizeProperties("refquota", 8n * MiB)).toEqual({ refquota: "8388608" });
    expect(sizeProperties("quota", 8n * MiB)).toEqual({ quota: "8388608" });
    expect(sizeProperties("thin", 8n * MiB)).toEqual({ [PROP.requestedSize]: "8388608" });
    // reserved: the reservation (size + 24 records of 128 KiB) first, so a pool that cannot hold it refuses before anything changed.
    expect(Object.entries(sizeProperties("reserved", 8n * MiB))).toEqual([
      ["reservation", String(11n * MiB)],
      ["refquota", "8388608"],
      ["refreservation", "8388608"],
    ]);
    expect(sizeProperties("reserved", 8n * MiB, "1048576").reservation).toBe(String(32n * MiB));
  });

  it("set aside a reserved volume's headroom in what CreateVolume needs and GetCapacity offers, and nothing for the other modes", () => {
    expect(spaceNeeded("reserved", 8n * MiB)).toBe(11n * MiB);
    expect(spaceNeeded("reserved", 8n * MiB, "16384")).toBe(8n * MiB + 384n * 1024n);
    for (const mode of ["refquota", "quota", "thin"] as const) expect(spaceNeeded(mode, 8n * MiB)).toBe(8n * MiB);
    expect(largestVolume("reserved", 100n * MiB)).toBe(97n * MiB);
    expect(largestVolume("reserved", 2n * MiB)).toBe(0n);
    expect(largestVolume("thin", 100n * MiB)).toBe(100n * MiB);
    expect(recordsizeOf(JSON.stringify({ recordsize: "1048576", sizeMode: "reserved" }))).toBe("1048576");
    expect(recordsizeOf("{}")).toBeUndefined();
    expect(recordsizeOf("not json")).toBeUndefined();
  });

  it("read the mode from zcsi:parameters, refquota where it names none or cannot be read", () => {
    expect(sizeModeOf(JSON.stringify({ compression: "gzip", sizeMode: "thin" }))).toBe("thin");
    expect(sizeModeOf(JSON.stringify({ sizeMode: "reserved" }))).toBe("reserved");
    expect(sizeModeOf("{}")).toBe("refquota");
    expect(sizeModeOf(undefined)).toBe("refquota");
    expect(sizeModeOf("not json")).toBe("refquota");
    expect(sizeModeOf(JSON.stringify({ sizeMode: "bogus" }))).toBe("refquota");
  });

  it("report the capacity from the mode's own property", () => {
    const all = { refquota: ["8388608", "local"], quota: ["16777216", "local"], refreservation: ["4194304", "local"], [PROP.requestedSize]: ["33554432", "local"] } as Record<string, [string, string]>;
    expect(capacity("refquota", all)).toBe(8n * MiB);
    expect(capacity("quota", all)).toBe(16n * MiB);
    expect(capacity("thin", all)).toBe(32n * MiB);
    // Reserved: the smaller of the two, so an expansion cut between its two steps reads as not done.
    expect(capacity("reserved", all)).toBe(4n * MiB);
    expect(capacity("reserved", { ...all, refreservation: ["8388608", "local"] })).toBe(8n * MiB);
  });

  it("count a thin request only where it is set on the dataset itself, not inherited", () => {
    expect(capacity("thin", { [PROP.requestedSize]: ["33554432", "inherited from tank/k8s"] })).toBe(0n);
    expect(capacity("thin", { [PROP.requestedSize]: ["-", "-"] })).toBe(0n);
    expect(() => capacity("thin", { [PROP.requestedSize]: ["32M", "local"] })).toThrow(/exact integer/);
  });
});

/**
 * The refusals ZFS itself makes when the pool fills between zcsi's free-space check and its
 * command (another controller, or anyone on the pool host, took the space): the integration
 * tests reach only the check, so the commands' failures are scripted here, with the stderr
 * zfs-fuse printed for them (measured).
 */
describe("VolumeService when ZFS runs out of space itself", () => {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
  const config = parseConfig({
    privateKeyFile: "/nonexistent",
    poolHosts: [{ name: "alice", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "tank/k8s", mountRoot: "/m", hostKey: key }],
  });
  const GiB = 1n << 30n;
  const parentAvailable = ok(`tank/k8s\tavailable\t${GiB}\t-\n`);
  const service = (exec: ScriptedExecutor) => new VolumeService(new PoolHosts([{ config: config.poolHosts[0]!, exec }]), pino({ level: "silent" }));

  it("CreateVolume of a reserved volume refused by zfs create is RESOURCE_EXHAUSTED", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs create /, fail("cannot create 'tank/k8s/pvc-r': out of space\n")],
    ]);
    const params = parseVolumeParameters({ sizeMode: "reserved" }, ["alice"]);
    const placement = { free: new Map([["alice", GiB]]) };
    await expect(service(exec).create({ csiName: "pvc-r", leaf: "pvc-r", capacityBytes: 64n * MiB, params }, placement)).rejects.toMatchObject({
      kind: "ResourceExhausted",
      message: expect.stringMatching(/^pool host alice cannot hold 67108864 bytes for tank\/k8s\/pvc-r \(sizeMode reserved\): .*out of space$/),
    });
    const create = exec.calls.find((c) => c[1] === "create")!;
    expect(create).toContain(`refreservation=${64n * MiB}`);
    expect(create).toContain(`reservation=${67n * MiB}`);
  });

  it("an expansion whose reservation ZFS refuses puts the refquota and reservation back and is RESOURCE_EXHAUSTED", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs get -Hp -o name,property,value,source available tank\/k8s$/, parentAvailable],
      [/^zfs version$/, ok("zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n")],
      [/^zfs set reservation=\d+ refquota=\d+ refreservation=\d+ tank\/k8s\/pvc-r$/, fail("cannot set property for 'tank/k8s/pvc-r': size is greater than available space\n")],
      [/^zfs set refquota=\d+ reservation=\d+ tank\/k8s\/pvc-r$/, ok()],
    ]);
    const volume = {
      id: "alice:tank/k8s/pvc-r",
      ref: { poolHost: "alice", dataset: "tank/k8s/pvc-r" },
      csiName: "pvc-r",
      capacityBytes: 8n * MiB,
      sizeMode: "reserved" as const,
      usedBytes: 0n,
      mountpoint: "/m/pvc-r",
      mounted: true,
      state: "ready" as const,
      parameters: JSON.stringify({ sizeMode: "reserved" }),
    };
    await expect(service(exec).resize(volume, 32n * MiB)).rejects.toMatchObject({
      kind: "ResourceExhausted",
      message: expect.stringMatching(/cannot grow alice:tank\/k8s\/pvc-r \(sizeMode reserved\) to 33554432 bytes/),
    });
    expect(exec.calls.filter((c) => c[1] === "set")).toEqual([
      ["zfs", "set", `reservation=${35n * MiB}`, `refquota=${32n * MiB}`, `refreservation=${32n * MiB}`, "tank/k8s/pvc-r"],
      ["zfs", "set", `refquota=${8n * MiB}`, `reservation=${11n * MiB}`, "tank/k8s/pvc-r"],
    ]);
  });
});

describe("size properties on replicas", () => {
  it("every mode's size properties travel with a replica's metadata, refquota before refreservation, so a promoted copy keeps its limit and reservation", () => {
    const carried: readonly string[] = CARRIED_PROPS;
    for (const name of SIZE_PROPERTIES) expect(carried).toContain(name);
    expect(carried.indexOf("refquota")).toBeLessThan(carried.indexOf("refreservation"));
    expect(carried.indexOf("reservation")).toBeLessThan(carried.indexOf("refquota"));
  });
});
