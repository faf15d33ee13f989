import { afterEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../src/log.js";
import { ConditionLog, PeriodicTasks } from "../../src/util/periodic.js";

describe("PeriodicTasks (the sidecars' timer loop)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("waits the delay after each run ends, keeps going after a failed run, and starts nothing after stop()", async () => {
    vi.useFakeTimers();
    const tasks = new PeriodicTasks(silentLogger, "test");
    const starts: number[] = [];
    let release: (() => void) | undefined;
    tasks.every(1000, async () => {
      starts.push(Date.now());
      if (starts.length === 1) throw new Error("first run fails");
      // The second run is slow: the next may not start before it ends.
      if (starts.length === 2) await new Promise<void>((r) => (release = r));
    });
    const t0 = Date.now();
    await vi.advanceTimersByTimeAsync(1000);
    expect(starts.map((t) => t - t0)).toEqual([1000]);
    await vi.advanceTimersByTimeAsync(1000); // after the failure, the loop goes on
    expect(starts.map((t) => t - t0)).toEqual([1000, 2000]);
    await vi.advanceTimersByTimeAsync(5000); // the second run is still running: no overlap
    expect(starts).toHaveLength(2);
    release?.();
    await vi.advanceTimersByTimeAsync(1000);
    expect(starts.map((t) => t - t0)).toEqual([1000, 2000, 8000]);
    tasks.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(starts).toHaveLength(3);
  });
});

describe("ConditionLog", () => {
  const at = (minute: number): Date => new Date(Date.UTC(2026, 0, 1, 0, minute));

  it("says when a condition starts, changes, persists past the repeat interval, and ends", () => {
    const log = new ConditionLog(30 * 60_000);
    expect(log.observe("alice", "k", "broken", at(0))).toBe("started");
    expect(log.observe("alice", "k", "broken", at(1))).toBeUndefined();
    expect(log.observe("alice", "k", "broken", at(29))).toBeUndefined();
    expect(log.observe("alice", "k", "broken", at(30))).toBe("persists");
    expect(log.observe("alice", "k", "broken differently", at(31))).toBe("changed");
    expect(log.settle("alice")).toEqual([]); // seen in this pass
    expect(log.settle("alice")).toEqual([{ key: "k", message: "broken differently" }]);
    expect(log.observe("alice", "k", "broken differently", at(32))).toBe("started");
  });

  it("ends only the settled scope's conditions, and re-logs at once when the clock steps back", () => {
    const log = new ConditionLog(30 * 60_000);
    log.observe("alice", "a", "x", at(10));
    log.observe("bob", "b", "y", at(10));
    log.settle("alice");
    log.settle("bob");
    log.observe("bob", "b", "y", at(11));
    expect(log.settle("alice")).toEqual([{ key: "a", message: "x" }]);
    expect(log.observe("bob", "b", "y", at(5))).toBe("persists");
    expect(log.end("b")).toBe("y");
    expect(log.end("b")).toBeUndefined();
  });
});
