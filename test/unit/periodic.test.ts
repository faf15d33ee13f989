import { afterEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../src/log.js";
import { PeriodicTasks } from "../../src/util/periodic.js";

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
