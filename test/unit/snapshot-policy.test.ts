import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { formatPolicy, normalizePolicy, parsePolicy } from "../../src/volumes/schedule.js";
import { parseVolumeParameters } from "../../src/volumes/parameters.js";

describe("parsePolicy", () => {
  it("reads the buckets of the issue's example", () => {
    expect(parsePolicy("hourly=24,daily=7,weekly=4").buckets).toEqual([
      { name: "hourly", keep: 24 },
      { name: "daily", keep: 7 },
      { name: "weekly", keep: 4 },
    ]);
  });

  it("reads every bucket, frequent with and without an interval", () => {
    expect(parsePolicy("yearly=2,monthly=12,weekly=4,daily=7,hourly=24,frequent/5m=12").buckets).toEqual([
      { name: "frequent", keep: 12, intervalMinutes: 5 },
      { name: "hourly", keep: 24 },
      { name: "daily", keep: 7 },
      { name: "weekly", keep: 4 },
      { name: "monthly", keep: 12 },
      { name: "yearly", keep: 2 },
    ]);
    expect(parsePolicy("frequent=4").buckets).toEqual([{ name: "frequent", keep: 4, intervalMinutes: 15 }]);
  });

  it("normalises order, blanks and the default interval", () => {
    expect(normalizePolicy(" daily = 7 , hourly=24 ,frequent=4 ")).toBe("frequent/15m=4,hourly=24,daily=7");
    expect(normalizePolicy("weekly=4,hourly=24,daily=7")).toBe("hourly=24,daily=7,weekly=4");
  });

  it("round-trips the normal form", () => {
    for (const text of ["frequent/30m=2,monthly=3", "yearly=1", "hourly=24,daily=7,weekly=4", "off"]) {
      expect(formatPolicy(parsePolicy(text))).toBe(text);
    }
  });

  it("accepts off and none as no schedule", () => {
    expect(parsePolicy("off").buckets).toEqual([]);
    expect(normalizePolicy("none")).toBe("off");
  });

  it.each([
    ["", /empty/],
    ["   ", /empty/],
    ["hourly=24,dayly=7", /unknown bucket "dayly" in "dayly=7"/],
    ["Hourly=24", /unknown bucket "Hourly"/],
    ["hourly", /bucket "hourly" has no "=<count>"/],
    ["hourly=24,,daily=7", /empty bucket/],
    ["hourly=24,", /empty bucket/],
    ["hourly=0", /count 0 in "hourly=0" must be 1\.\.10000/],
    ["hourly=10001", /count 10001/],
    ["hourly=-1", /count "-1" in "hourly=-1" is not a whole number/],
    ["hourly=1.5", /is not a whole number/],
    ["hourly=abc", /count "abc"/],
    ["hourly=24,hourly=12", /bucket hourly appears twice/],
    ["frequent/7m=4", /frequent interval 7m in "frequent\/7m=4" must divide the hour/],
    ["frequent/60m=4", /must divide the hour/],
    ["frequent/0m=4", /must divide the hour/],
    ["frequent/15=4", /unknown bucket "frequent\/15"/],
    ["daily/15m=4", /only frequent takes an interval/],
    ["hourly=24;daily=7", /count "24;daily=7"/],
    ["x".repeat(300), /longer than 256/],
  ])("refuses %j, naming the bad part", (text, message) => {
    let caught: unknown;
    try {
      parsePolicy(text);
    } catch (err) {
      caught = err;
    }
    expect(isZcsiError(caught, "InvalidArgument")).toBe(true);
    expect((caught as Error).message).toMatch(message);
  });
});

describe("the snapshotSchedule StorageClass parameter", () => {
  it("is validated, normalised and part of the canonical parameters", () => {
    const p = parseVolumeParameters({ snapshotSchedule: "daily=7, hourly=24" }, ["alice"]);
    expect(p.snapshotSchedule).toBe("hourly=24,daily=7");
    expect(JSON.parse(p.canonical)).toEqual({ snapshotSchedule: "hourly=24,daily=7" });
    expect(parseVolumeParameters({}, ["alice"]).snapshotSchedule).toBeUndefined();
  });

  it("refuses a bad schedule with INVALID_ARGUMENT naming the parameter and the part", () => {
    expect(() => parseVolumeParameters({ snapshotSchedule: "hourly=24,weekly=four" }, ["alice"])).toThrow(
      /parameter snapshotSchedule="hourly=24,weekly=four": count "four" in "weekly=four" is not a whole number/,
    );
  });
});
