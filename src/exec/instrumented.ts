import { errorMessage, isZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import type { CommandMetrics, CommandOutcome } from "../metrics.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "./executor.js";

/** How much of a failing command's stderr goes into its log line. */
const STDERR_LOG_CHARS = 500;

/**
 * `zfs create -o a=b tank/x` → "zfs create"; `id -u` → "id". The subcommand is what tells
 * ZFS calls apart, so it is part of the name when argv[1] looks like one. Launchers are seen
 * through: `sudo -n zfs list` is "zfs list", `systemd-run --scope … -- sshfs …` is "sshfs".
 */
export function commandName(argv: readonly string[]): string {
  const base = (word: string | undefined): string => (word ?? "").split("/").pop() ?? "";
  let start = 0;
  if (base(argv[0]) === "systemd-run" && argv.includes("--")) start = argv.indexOf("--") + 1;
  else if (base(argv[0]) === "sudo") {
    start = 1;
    while (argv[start]?.startsWith("-")) start += 1;
  }
  const rest = argv.slice(start);
  const program = base(rest[0]);
  const sub = rest[1];
  return sub !== undefined && /^[a-z][a-z-]*$/.test(sub) ? `${program} ${sub}` : program;
}

/**
 * The one place every command passes (the zrepl `zfscmd` habit): one log line per command
 * with argv, exit code and duration, and counters that benchmarks and tests read.
 * stdin is never logged (it may carry key material); only its length is.
 */
export class InstrumentedExecutor implements Executor {
  readonly host: string;
  /** Commands started through this executor (run and stream). */
  count = 0;
  /** Starts per command name (see `commandName`). */
  readonly counts = new Map<string, number>();

  constructor(
    readonly inner: Executor,
    private readonly logger: Logger,
    private readonly metrics?: Pick<CommandMetrics, "observe">,
  ) {
    this.host = inner.host;
  }

  /** Zeroes the counters, e.g. between benchmark phases. */
  reset(): void {
    this.count = 0;
    this.counts.clear();
  }

  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    this.record(argv);
    const started = performance.now();
    const stdinBytes = options?.stdin === undefined ? undefined : Buffer.byteLength(options.stdin);
    try {
      const result = await this.inner.run(argv, options);
      this.logResult(argv, started, result, stdinBytes, options?.expectedExitCodes);
      return result;
    } catch (err) {
      this.logFailure(argv, started, err);
      throw err;
    }
  }

  async stream(argv: readonly string[]): Promise<ExecStream> {
    this.record(argv);
    const started = performance.now();
    let stream: ExecStream;
    try {
      stream = await this.inner.stream(argv);
    } catch (err) {
      this.logFailure(argv, started, err);
      throw err;
    }
    stream.done.then(
      (result) => this.logResult(argv, started, result, undefined),
      (err: unknown) => this.logFailure(argv, started, err),
    );
    return stream;
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private record(argv: readonly string[]): void {
    this.count += 1;
    const name = commandName(argv);
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
  }

  private observe(argv: readonly string[], started: number, outcome: CommandOutcome): void {
    this.metrics?.observe(this.host, commandName(argv), outcome, (performance.now() - started) / 1000);
  }

  private logResult(argv: readonly string[], started: number, result: ExecResult, stdinBytes: number | undefined, expected?: readonly number[]): void {
    this.observe(argv, started, result.exitCode === 0 ? "ok" : "nonzero");
    const line = {
      op: "exec",
      host: this.host,
      argv,
      exitCode: result.exitCode,
      ...(result.signal ? { signal: result.signal } : {}),
      ...(stdinBytes !== undefined ? { stdinBytes } : {}),
      durationMs: Math.round((performance.now() - started) * 10) / 10,
    };
    if (result.exitCode === 0) this.logger.debug(line, "exec");
    else if (result.exitCode !== null && expected?.includes(result.exitCode)) this.logger.debug({ ...line, stderr: result.stderr.slice(0, STDERR_LOG_CHARS) }, "exec exited non-zero, as the caller expects");
    else this.logger.warn({ ...line, stderr: result.stderr.slice(0, STDERR_LOG_CHARS) }, "exec exited non-zero");
  }

  private logFailure(argv: readonly string[], started: number, err: unknown): void {
    this.observe(argv, started, isZcsiError(err, "DeadlineExceeded") ? "timeout" : "error");
    this.logger.warn(
      {
        op: "exec",
        host: this.host,
        argv,
        exitCode: null,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
        errorKind: isZcsiError(err) ? err.kind : "Error",
        error: errorMessage(err),
      },
      "exec failed",
    );
  }
}
