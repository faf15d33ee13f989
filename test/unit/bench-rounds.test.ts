import { describe, expect, it } from "vitest";
import { commandRounds } from "../../bench/lib.js";

/** An exec log line of a command that ran from `start` to `end` (ms). */
const exec = (start: number, end: number): Record<string, unknown> => ({ op: "exec", time: end, durationMs: end - start });

describe("commandRounds: the rounds of commands a stretch of the controller's log waited on", () => {
  it("counts commands started side by side as one round, and each that started after an answer as the next", () => {
    // Three reads side by side; a snapshot after them; two commands side by side; a last one.
    const lines = [exec(0, 30), exec(1, 25), exec(2, 40), { op: "replicate", time: 41 }, exec(40, 70), exec(70, 80), exec(71, 90), exec(90, 95)];
    expect(commandRounds(lines)).toEqual({ commands: 7, rounds: 4, busyMs: 95 });
  });

  it("takes the log's whole-millisecond clock into account: a start 1 ms before an end waited on it", () => {
    expect(commandRounds([exec(0, 10), exec(9, 20)]).rounds).toBe(2);
    expect(commandRounds([exec(0, 10), exec(8, 20)]).rounds).toBe(1);
  });

  it("counts only the time some command ran", () => {
    expect(commandRounds([exec(0, 10), exec(20, 30)])).toEqual({ commands: 2, rounds: 2, busyMs: 20 });
  });

  it("is zero rounds for no commands", () => {
    expect(commandRounds([])).toEqual({ commands: 0, rounds: 0, busyMs: 0 });
  });
});
