import { describe, expect, it } from "vitest";
import { commandRounds } from "../../bench/lib.js";

/** An exec log line of a command that ran from `start` to `end` (ms). */
const exec = (start: number, end: number): Record<string, unknown> => ({ op: "exec", time: end, durationMs: end - start });

describe("commandRounds: the rounds of commands a stretch of the controller's log waited on", () => {
  it("counts commands that ran side by side as one round, and those one after another as several", () => {
    const lines = [exec(0, 30), exec(1, 25), exec(2, 40), { op: "replicate", time: 41 }, exec(45, 70), exec(75, 80), exec(79, 90)];
    expect(commandRounds(lines)).toEqual({ commands: 6, rounds: 3, busyMs: 40 + 25 + 15 });
  });

  it("takes the log's whole-millisecond clock into account: a start 1 ms after the round's end is the same round", () => {
    expect(commandRounds([exec(0, 10), exec(11, 20)]).rounds).toBe(1);
    expect(commandRounds([exec(0, 10), exec(12, 20)]).rounds).toBe(2);
  });

  it("is zero rounds for no commands", () => {
    expect(commandRounds([])).toEqual({ commands: 0, rounds: 0, busyMs: 0 });
  });
});
