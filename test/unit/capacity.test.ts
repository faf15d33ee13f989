import { describe, expect, it } from "vitest";
import { MIN_VOLUME_BYTES, capacityFits, resolveCapacity } from "../../src/volumes/capacity.js";

const GiB = 1n << 30n;
const DEFAULT = 5n * GiB;

describe("resolveCapacity", () => {
  it("gives the default when neither bound is set", () => {
    expect(resolveCapacity(null, DEFAULT)).toBe(DEFAULT);
    expect(resolveCapacity({ requiredBytes: "0", limitBytes: "0" }, DEFAULT)).toBe(DEFAULT);
  });
  it("gives exactly required_bytes, even above 2^53", () => {
    expect(resolveCapacity({ requiredBytes: "9007199254740993" }, DEFAULT)).toBe(9007199254740993n);
  });
  it("caps the default by limit_bytes", () => {
    expect(resolveCapacity({ limitBytes: String(2n * GiB) }, DEFAULT)).toBe(2n * GiB);
  });
  it("rounds tiny requests up to the minimum when the limit allows", () => {
    expect(resolveCapacity({ requiredBytes: "1" }, DEFAULT)).toBe(MIN_VOLUME_BYTES);
  });
  it("is OUT_OF_RANGE when required exceeds limit", () => {
    expect(() => resolveCapacity({ requiredBytes: "10", limitBytes: "5" }, DEFAULT)).toThrow(expect.objectContaining({ kind: "OutOfRange" }));
  });
  it("is OUT_OF_RANGE when the limit is below the minimum volume", () => {
    expect(() => resolveCapacity({ limitBytes: "1000" }, DEFAULT)).toThrow(expect.objectContaining({ kind: "OutOfRange" }));
  });
  it("rejects negative and non-integer byte counts as INVALID_ARGUMENT", () => {
    expect(() => resolveCapacity({ requiredBytes: "-1" }, DEFAULT)).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
    expect(() => resolveCapacity({ requiredBytes: "1e9" }, DEFAULT)).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
});

describe("capacityFits", () => {
  it("accepts a size within [required, limit]", () => {
    expect(capacityFits(GiB, { requiredBytes: String(GiB), limitBytes: String(2n * GiB) })).toBe(true);
    expect(capacityFits(GiB, null)).toBe(true);
  });
  it("rejects a size below required or above limit", () => {
    expect(capacityFits(GiB, { requiredBytes: String(2n * GiB) })).toBe(false);
    expect(capacityFits(2n * GiB, { limitBytes: String(GiB) })).toBe(false);
  });
});
