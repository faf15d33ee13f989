import { describe, expect, it } from "vitest";
import { PROP } from "../../src/volumes/properties.js";
import { capacityOf, sizeModeOf, sizeProperties, type SizeMode } from "../../src/volumes/size-modes.js";
import { PropertyView } from "../../src/zfs/parse.js";

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
    expect(Object.entries(sizeProperties("reserved", 8n * MiB))).toEqual([
      ["refquota", "8388608"],
      ["refreservation", "8388608"],
    ]);
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
