import type { Readable, Writable } from "node:stream";

/** What a finished command left behind. A non-zero exit is a result, not an exception. */
export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Process exit code; null when the process died from a signal. */
  readonly exitCode: number | null;
  readonly signal?: string | null;
}

export interface ExecOptions {
  /** Kill the command (and report DeadlineExceeded) after this many milliseconds. */
  readonly timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  readonly stdin?: string | Buffer;
  /** Non-zero exit codes the caller expects (e.g. a lookup that may find nothing): logged at debug, not warn. */
  readonly expectedExitCodes?: readonly number[];
  /**
   * Hands stdout to this as it arrives instead of collecting it: the result's stdout then holds
   * only what was not handed over (nothing, from executors that stream; all of it from one that
   * cannot). For listings of thousands of datasets (zfs/parse.ts GetOutputParser), whose whole
   * output, joined and decoded at once, was most of a process's peak memory. Must not throw.
   */
  readonly onStdout?: (chunk: Buffer) => void;
  /**
   * Gives up *waiting* (for a free slot on the host, for the connection) when this fires; a
   * command that already started is not cut by it. Defaults to the signal of the call being
   * served (`withCallSignal` in call-context.ts).
   */
  readonly signal?: AbortSignal;
  /**
   * For a command that leaves a daemon behind (sshfs): start it in its own session (so a
   * kill of our process group does not reach it) with stdout and stderr appended to
   * `outputPath` instead of pipes (a daemon writing to a pipe whose reader has exited would
   * die of SIGPIPE). `run` resolves when the command itself exits; its stdout/stderr are
   * empty: read the file. On timeout the command's whole process group is killed.
   * Only the local executor can do this; the others reject with InvalidArgument.
   */
  readonly detach?: { readonly outputPath: string };
}

/**
 * A command with live streams, for byte pipelines such as `zfs send | zfs recv`.
 * `done` settles when the command exits; it rejects only on transport failure.
 */
export interface ExecStream {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly done: Promise<ExecResult>;
  /** Stop the command (closes the channel / kills the process). */
  kill(): void;
}

/**
 * Runs argv arrays on one host. Implementations never involve a local shell; the SSH one
 * quotes argv for the remote shell in exactly one function (`exec/quote.ts`).
 *
 * Errors: transport failures (connect, handshake, auth, host key, channel) reject with
 * `ZcsiError` kind `Unavailable` (a host key mismatch too: the message names both fingerprints);
 * a command that overruns `timeoutMs` rejects with kind `DeadlineExceeded`.
 */
export interface Executor {
  /** Human name for logs and errors: the pool host name, or "local". */
  readonly host: string;
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  stream(argv: readonly string[]): Promise<ExecStream>;
  close(): Promise<void>;
}
