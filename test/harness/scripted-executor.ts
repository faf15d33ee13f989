import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";

export type Reply = ExecResult | ((argv: readonly string[]) => ExecResult);

/** Answers each command from a script (the first regex matching the argv joined by spaces) and records it. */
export class ScriptedExecutor implements Executor {
  readonly host = "fake";
  readonly calls: string[][] = [];
  readonly options: Array<ExecOptions | undefined> = [];
  constructor(private readonly script: Array<[RegExp, Reply]>) {}
  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    this.calls.push([...argv]);
    this.options.push(options);
    const line = argv.join(" ");
    const i = this.script.findIndex(([re]) => re.test(line));
    if (i < 0) throw new Error(`unexpected command: ${line}`);
    const [, reply] = this.script[i] as [RegExp, Reply];
    return typeof reply === "function" ? reply(argv) : reply;
  }
  async stream(): Promise<ExecStream> {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

export const ok = (stdout = ""): ExecResult => ({ stdout, stderr: "", exitCode: 0 });
export const fail = (stderr: string, exitCode = 1): ExecResult => ({ stdout: "", stderr, exitCode });
