import { describe, expect, it } from "vitest";
import { parsePolicy } from "../../src/volumes/schedule.js";
import { autoSnapshotName, isDue, parseAutoSnapshotName, periodStart, planRetention, type AutoSnapshot } from "../../src/snapshots/retention.js";

const HOUR = 3_600_000;
const t = (iso: string): Date => new Date(iso);
const snap = (iso: string): AutoSnapshot => {
  const name = autoSnapshotName(t(iso));
  return { name, time: parseAutoSnapshotName(name) ?? NaN };
};
/** `2025-12-31T15:05` → `zcsi-auto-2025-12-31T1505Z` */
const n = (short: string): string => `zcsi-auto-${short.replace(":", "")}Z`;

describe("automatic snapshot names", () => {
  it("are the UTC minute after a fixed prefix", () => {
    expect(autoSnapshotName(t("2026-11-22T01:00:59.999Z"))).toBe("zcsi-auto-2026-11-22T0100Z");
    expect(parseAutoSnapshotName("zcsi-auto-2026-11-22T0100Z")).toBe(Date.parse("2026-11-22T01:00:00Z"));
  });

  it.each(["zcsi-auto-2026-02-30T0100Z", "zcsi-auto-2026-11-22T2460Z", "zcsi-auto-2026-11-22T0100", "snapshot-2026-11-22T0100Z", "zcsi-auto-2026-11-22T0100Z-x", "zcsi-clone-pvc-1"])(
    "refuse %j",
    (name) => expect(parseAutoSnapshotName(name)).toBeUndefined(),
  );
});

describe("periods", () => {
  it("are UTC; weeks start on Monday, months on the 1st", () => {
    const at = Date.parse("2025-12-31T15:05:00Z"); // a Wednesday
    expect(new Date(periodStart({ name: "frequent", intervalMinutes: 15 }, Date.parse("2025-12-31T15:44:00Z"))).toISOString()).toBe("2025-12-31T15:30:00.000Z");
    expect(new Date(periodStart({ name: "hourly" }, at)).toISOString()).toBe("2025-12-31T15:00:00.000Z");
    expect(new Date(periodStart({ name: "daily" }, at)).toISOString()).toBe("2025-12-31T00:00:00.000Z");
    expect(new Date(periodStart({ name: "weekly" }, at)).toISOString()).toBe("2025-12-29T00:00:00.000Z");
    expect(new Date(periodStart({ name: "weekly" }, Date.parse("2025-12-28T23:59:00Z"))).toISOString()).toBe("2025-12-22T00:00:00.000Z");
    expect(new Date(periodStart({ name: "monthly" }, at)).toISOString()).toBe("2025-12-01T00:00:00.000Z");
    expect(new Date(periodStart({ name: "yearly" }, at)).toISOString()).toBe("2025-01-01T00:00:00.000Z");
  });
});

describe("planRetention", () => {
  const policy = parsePolicy("hourly=2,daily=2");

  it("takes the first snapshot of a volume at once", () => {
    expect(planRetention(policy, t("2026-01-05T10:17:31Z"), [])).toEqual({
      take: "zcsi-auto-2026-01-05T1017Z",
      keep: [{ name: "zcsi-auto-2026-01-05T1017Z", buckets: ["hourly", "daily"] }],
      prune: [],
    });
  });

  it("takes nothing while the finest bucket's current period already has a snapshot", () => {
    const existing = [snap("2026-01-05T10:00:00Z")];
    expect(planRetention(policy, t("2026-01-05T10:59:59Z"), existing).take).toBeUndefined();
    expect(planRetention(policy, t("2026-01-05T11:00:00Z"), existing).take).toBe("zcsi-auto-2026-01-05T1100Z");
  });

  it("after days of downtime takes one catch-up snapshot, not one per missed period", () => {
    const existing = [snap("2026-01-01T08:00:00Z"), snap("2026-01-01T09:00:00Z")];
    const plan = planRetention(policy, t("2026-01-05T10:20:00Z"), existing);
    expect(plan.take).toBe("zcsi-auto-2026-01-05T1020Z");
    // The outage does not use up the counts: yesterday's newest (09:00 on the 1st) is still a daily one.
    expect(plan.keep.map((k) => k.name)).toEqual([n("2026-01-01T09:00"), n("2026-01-05T10:20")]);
    expect(plan.prune).toEqual([n("2026-01-01T08:00")]);
    // The next tick in the same hour takes nothing more.
    const after = [...existing.filter((s) => !plan.prune.includes(s.name)), snap("2026-01-05T10:20:00Z")];
    expect(planRetention(policy, t("2026-01-05T10:21:00Z"), after).take).toBeUndefined();
  });

  it("lets one snapshot count for several buckets and keeps the newest of each period", () => {
    const existing = ["2026-01-04T22:00", "2026-01-04T23:00", "2026-01-05T00:00", "2026-01-05T01:00"].map((s) => snap(`${s}:00Z`));
    const plan = planRetention(policy, t("2026-01-05T01:30:00Z"), existing);
    expect(plan.take).toBeUndefined();
    expect(plan.keep).toEqual([
      { name: n("2026-01-04T23:00"), buckets: ["daily"] },
      { name: n("2026-01-05T00:00"), buckets: ["hourly"] },
      { name: n("2026-01-05T01:00"), buckets: ["hourly", "daily"] },
    ]);
    expect(plan.prune).toEqual([n("2026-01-04T22:00")]);
  });

  it("takes every frequent interval and thins out to hourly", () => {
    const p = parsePolicy("frequent/15m=2,hourly=2");
    let existing: AutoSnapshot[] = [];
    const taken: string[] = [];
    for (let m = 0; m < 120; m += 5) {
      const now = new Date(Date.parse("2026-03-01T10:00:00Z") + m * 60_000);
      const plan = planRetention(p, now, existing);
      if (plan.take) {
        taken.push(plan.take);
        existing.push({ name: plan.take, time: now.getTime() });
      }
      existing = existing.filter((s) => !plan.prune.includes(s.name));
    }
    expect(taken).toHaveLength(8);
    expect(existing.map((s) => s.name)).toEqual([n("2026-03-01T10:45"), n("2026-03-01T11:30"), n("2026-03-01T11:45")]);
  });

  it("keeps snapshots dated after now (clock stepped back) and ignores them", () => {
    const existing = [snap("2026-01-05T09:00:00Z"), snap("2026-01-06T09:00:00Z")];
    const plan = planRetention(policy, t("2026-01-05T10:05:00Z"), existing);
    expect(plan.take).toBe(n("2026-01-05T10:05"));
    expect(plan.prune).toEqual([]);
    expect(plan.keep.map((k) => k.name)).toEqual([n("2026-01-05T09:00"), n("2026-01-05T10:05"), n("2026-01-06T09:00")]);
  });

  it("does nothing for the off policy", () => {
    const existing = [snap("2020-01-01T00:00:00Z")];
    expect(planRetention(parsePolicy("off"), t("2026-01-05T10:05:00Z"), existing)).toEqual({ keep: [{ name: existing[0]?.name, buckets: [] }], prune: [] });
    expect(isDue(parsePolicy("off"), t("2026-01-05T10:05:00Z"), [])).toBe(false);
  });
});

describe("a simulated year of hourly ticks with outages", () => {
  // 2025: ticks at HH:05 every hour, except three outages:
  //   10 Mar 05:05 – 14 Mar 11:05 (4 days),
  //   8 Dec 00:05 – 14 Dec 23:05 (the whole ISO week of Monday 8 December),
  //   30 Dec 20:05 – 31 Dec 09:05 (overnight);
  // the last tick is at 31 Dec 15:05. Each tick applies the plan as the scheduler does.
  const policy = parsePolicy("hourly=24,daily=7,weekly=4,monthly=6,yearly=2");
  const outages: [number, number][] = [
    [Date.parse("2025-03-10T05:05:00Z"), Date.parse("2025-03-14T11:05:00Z")],
    [Date.parse("2025-12-08T00:05:00Z"), Date.parse("2025-12-14T23:05:00Z")],
    [Date.parse("2025-12-30T20:05:00Z"), Date.parse("2025-12-31T09:05:00Z")],
  ];
  const maxKept = 24 + 7 + 4 + 6 + 2;

  function simulate(): { existing: AutoSnapshot[]; ticks: number; takes: number; maxSize: number } {
    let existing: AutoSnapshot[] = [];
    let ticks = 0;
    let takes = 0;
    let maxSize = 0;
    for (let at = Date.parse("2025-01-01T00:05:00Z"); at <= Date.parse("2025-12-31T15:05:00Z"); at += HOUR) {
      if (outages.some(([from, to]) => at >= from && at <= to)) continue;
      ticks++;
      const plan = planRetention(policy, new Date(at), existing);
      // Hourly ticks with an hourly finest bucket: every tick takes exactly one snapshot, also
      // the first after each outage (one catch-up, no burst).
      expect(plan.take).toBe(autoSnapshotName(new Date(at)));
      takes++;
      existing = [...existing.filter((s) => !plan.prune.includes(s.name)), { name: plan.take ?? "", time: at }];
      maxSize = Math.max(maxSize, existing.length);
    }
    return { existing, ticks, takes, maxSize };
  }

  it("ends with exactly the snapshots each bucket asks for", () => {
    const { existing, ticks, takes, maxSize } = simulate();
    expect(ticks).toBe(364 * 24 + 16 - 103 - 168 - 14);
    expect(takes).toBe(ticks);
    expect(maxSize).toBeLessThanOrEqual(maxKept);
    const hourly = [
      ...Array.from({ length: 18 }, (_, i) => `2025-12-30T${String(2 + i).padStart(2, "0")}:05`),
      ...Array.from({ length: 6 }, (_, i) => `2025-12-31T${String(10 + i).padStart(2, "0")}:05`),
    ];
    // Newest of each of the last 7 days that have snapshots (30 Dec ends at 19:05: the outage).
    const daily = ["2025-12-25T23:05", "2025-12-26T23:05", "2025-12-27T23:05", "2025-12-28T23:05", "2025-12-29T23:05", "2025-12-30T19:05", "2025-12-31T15:05"];
    // Weeks from Monday: 29 Dec, 22 Dec, 15 Dec, (8 Dec has none: outage), 1 Dec.
    const weekly = ["2025-12-07T23:05", "2025-12-21T23:05", "2025-12-28T23:05", "2025-12-31T15:05"];
    const monthly = ["2025-07-31T23:05", "2025-08-31T23:05", "2025-09-30T23:05", "2025-10-31T23:05", "2025-11-30T23:05", "2025-12-31T15:05"];
    const yearly = ["2025-12-31T15:05"];
    const expected = [...new Set([...hourly, ...daily, ...weekly, ...monthly, ...yearly])].sort().map(n);
    expect(expected).toHaveLength(36);
    expect(existing.map((s) => s.name)).toEqual(expected);

    const plan = planRetention(policy, t("2025-12-31T15:30:00Z"), existing);
    expect(plan.take).toBeUndefined();
    expect(plan.prune).toEqual([]);
    const bucketsOf = new Map(plan.keep.map((k) => [k.name, k.buckets]));
    expect(bucketsOf.get(n("2025-12-31T15:05"))).toEqual(["hourly", "daily", "weekly", "monthly", "yearly"]);
    expect(bucketsOf.get(n("2025-12-30T19:05"))).toEqual(["hourly", "daily"]);
    expect(bucketsOf.get(n("2025-12-07T23:05"))).toEqual(["weekly"]);
    expect(bucketsOf.get(n("2025-07-31T23:05"))).toEqual(["monthly"]);
  });
});
