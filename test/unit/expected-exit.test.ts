import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { ExecOptions, ExecResult, Executor } from "../../src/exec/executor.js";
import { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import { Zfs } from "../../src/zfs/client.js";

/** A pool host where nothing exists: every `zfs get` answers "dataset does not exist". */
class NothingThere implements Executor {
  readonly host = "alice";
  async run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
    return { stdout: "", stderr: `cannot open '${argv[argv.length - 1] ?? ""}': dataset does not exist\n`, exitCode: 1 };
  }
  stream(): never {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

function capture(): { lines: { level: number; msg: string }[]; logger: pino.Logger } {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
      done();
    },
  });
  return { lines, logger: pino({ level: "debug" }, sink) };
}

describe("a lookup that finds nothing", () => {
  it("is logged at debug when the caller expects it (zfs get with missingOk), and still warns otherwise", async () => {
    const { lines, logger } = capture();
    const zfs = new Zfs(new InstrumentedExecutor(new NothingThere(), logger));
    expect((await zfs.get(["tank/k8s/pvc-1"], ["refquota"], { missingOk: true })).size).toBe(0);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines.some((l) => l.level === 20 && /exec exited non-zero/.test(l.msg))).toBe(true);
    await expect(zfs.get(["tank/k8s/pvc-1"], ["refquota"])).rejects.toMatchObject({ kind: "NotFound" });
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(["exec exited non-zero"]);
  });
});
