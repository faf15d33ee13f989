import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { deadlineExceeded, unavailable } from "../errors.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "./executor.js";

/** How long a killed command gets to exit before a timed-out `run` rejects without it. */
const UNKILLABLE_GRACE_MS = 2_000;

/** Runs argv on this machine with `spawn` (no shell, ever). Used on the pool host itself and in tests. */
export class LocalExecutor implements Executor {
  readonly host: string;

  constructor(options: { host?: string } = {}) {
    this.host = options.host ?? "local";
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (options.detach) return this.runDetached(argv, options.detach.outputPath, options.timeoutMs);
    const s = await this.stream(argv);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    s.stdout.on("data", options.onStdout ?? ((b: Buffer) => out.push(b)));
    s.stderr.on("data", (b: Buffer) => err.push(b));
    s.stdin.on("error", () => undefined); // the command may exit without reading its stdin
    s.stdin.end(options.stdin ?? undefined);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const expired = new Promise<never>((_, reject) => {
      if (options.timeoutMs === undefined) return;
      const timeout = deadlineExceeded(`${this.host}: ${argv[0]} did not finish within ${options.timeoutMs} ms`);
      timer = setTimeout(() => {
        timedOut = true;
        s.kill();
        // A process stuck in the kernel (D state: a hung FUSE or NFS mount) survives SIGKILL
        // and never closes its pipes; the caller's deadline must hold all the same.
        timer = setTimeout(() => reject(timeout), UNKILLABLE_GRACE_MS);
      }, options.timeoutMs);
    });
    try {
      const result = await Promise.race([s.done, expired]);
      if (timedOut) throw deadlineExceeded(`${this.host}: ${argv[0]} did not finish within ${options.timeoutMs} ms`);
      return { ...result, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  async stream(argv: readonly string[]): Promise<ExecStream> {
    const [command, ...args] = argv;
    if (command === undefined) throw new TypeError("argv must not be empty");
    const child = spawn(command, args, { shell: false, stdio: ["pipe", "pipe", "pipe"] });
    const done = new Promise<ExecResult>((resolve, reject) => {
      child.once("error", (e) => reject(unavailable(`${this.host}: cannot run ${command}: ${e.message}`, { cause: e })));
      child.once("close", (code, signal) => resolve({ stdout: "", stderr: "", exitCode: code, signal }));
    });
    return { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, done, kill: () => child.kill("SIGKILL") };
  }

  async close(): Promise<void> {}

  /** See `ExecOptions.detach`: own session, output to a file, the process group killed on timeout. */
  private async runDetached(argv: readonly string[], outputPath: string, timeoutMs: number | undefined): Promise<ExecResult> {
    const [command, ...args] = argv;
    if (command === undefined) throw new TypeError("argv must not be empty");
    const output = await open(outputPath, "w", 0o600);
    try {
      const child = spawn(command, args, { shell: false, detached: true, stdio: ["ignore", output.fd, output.fd] });
      return await new Promise<ExecResult>((resolve, reject) => {
        const timer =
          timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                // The process group: the command and what it started (sshfs and its ssh).
                if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
                reject(deadlineExceeded(`${this.host}: ${command} did not finish within ${timeoutMs} ms`));
              }, timeoutMs);
        child.once("error", (err) => {
          clearTimeout(timer);
          reject(unavailable(`${this.host}: cannot run ${command}: ${err.message}`, { cause: err }));
        });
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          resolve({ stdout: "", stderr: "", exitCode: code, signal });
        });
      });
    } finally {
      await output.close();
    }
  }
}
