import ssh2 from "ssh2";
import { deadlineExceeded, errorMessage, invalidArgument, isZcsiError, unavailable } from "../errors.js";
import { silentLogger, type Logger } from "../log.js";
import { backoffDelay, sleep } from "../util/backoff.js";
import type { Clock } from "../util/clock.js";
import { Semaphore, type Release } from "../util/limiter.js";
import { currentCallSignal } from "./call-context.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "./executor.js";
import { isChannelOpenFailure } from "./errors.js";
import { quoteArgv } from "./quote.js";
import { openExecChannel, trackChannel, type Running, type StartedChannel } from "./ssh-channel.js";
import { SshConnector } from "./ssh-connection.js";
import { parseHostKey } from "./ssh-keys.js";

export { fingerprint } from "./ssh-keys.js";

// ssh2 is CommonJS: Node's ESM loader only offers its default export.
const { utils } = ssh2;

export interface SshExecutorOptions {
  /** Pool host name, for logs and error messages. */
  readonly host: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** OpenSSH or PEM private key. Kept in a private field: never logged, never in a message. */
  readonly privateKey: Buffer;
  /** Pinned host keys, `ssh-ed25519 AAAA... comment`. The connection fails closed on any other key. */
  readonly hostKeys: readonly string[];
  /** Prefix every argv with `sudo -n` (a non-root pool-host user; `-n` fails instead of prompting). */
  readonly sudo?: boolean;
  /** Concurrent channels on the one connection; keep below sshd's MaxSessions (default 10). */
  readonly maxChannels?: number;
  /**
   * Commands started with `run` at once (config `maxConcurrentCommands`); more wait in FIFO
   * order. Default: `maxChannels`. Streams (`zfs send`/`receive`) take only a channel: their
   * number is bounded by the replicator's concurrency, and a stream holding a command slot
   * while its run waits for another command could starve the host.
   */
  readonly maxCommands?: number;
  /** TCP connect + SSH handshake + authentication. */
  readonly connectTimeoutMs?: number;
  readonly keepaliveIntervalMs?: number;
  /** Per-command timeout for `run` when the call gives none. */
  readonly defaultTimeoutMs?: number;
  /**
   * How long close() waits for `run` commands still on the host to exit before it drops the
   * connection (which would leave them running there unseen). Default 10 s.
   */
  readonly drainTimeoutMs?: number;
  /** Delay after the first failed connection attempt; doubles per failure up to `backoffMaxMs`. */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Where the backoff reads the time (tests inject a manual clock). */
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** Counters for tests and benchmarks. */
export interface SshExecutorStats {
  /** Channel slots in use now (a slot is held from before the channel opens until it closes). */
  readonly openChannels: number;
  /** High-water mark of `openChannels`; never above `maxChannels`. */
  readonly peakChannels: number;
  /** Calls waiting for a free command or channel slot. */
  readonly queued: number;
  /** `run` commands holding a command slot now, and their high-water mark (never above `maxCommands`). */
  readonly runningCommands: number;
  readonly peakCommands: number;
  /** `run` commands that overran their timeout and have not exited yet (they still hold their slots). */
  readonly abandonedCommands: number;
  /** Connection attempts made (successful or not). */
  readonly connects: number;
  /** Channel opens the server refused (e.g. MaxSessions) and that were retried. */
  readonly channelOpenRetries: number;
}

const MAX_OPEN_RETRIES = 20;

/**
 * Runs argv on one pool host over one pooled SSH connection (ssh2).
 *
 * - The connection (ssh-connection.ts) opens on first use and is reused; when it drops, the
 *   next call reconnects, with backoff after failures. Every transport failure rejects with
 *   kind Unavailable naming host and address:port (a host key mismatch too, with both
 *   fingerprints).
 * - At most `maxCommands` `run` commands and `maxChannels` channels at once; more wait in FIFO
 *   order. A call whose signal (its gRPC call's cancellation or deadline, see
 *   call-context.ts) fires while it waits rejects with Unavailable and never starts.
 * - A command that overruns its timeout gets SIGTERM, then SIGKILL, and the call rejects
 *   with DeadlineExceeded. The timeout covers the whole call: queueing, connecting, running.
 */
export class SshExecutor implements Executor {
  readonly host: string;
  private readonly target: string;
  private readonly sudo: boolean;
  private readonly defaultTimeoutMs: number;
  private readonly log: Logger;
  private readonly connector: SshConnector;
  private readonly channels: Semaphore;
  private readonly commands: Semaphore;
  private openRetries = 0;
  private abandoned = 0;
  /** The `done` of every `run` command started and not yet exited: what close() waits for. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly drainTimeoutMs: number;
  private closed = false;

  constructor(options: SshExecutorOptions) {
    this.host = options.host;
    this.target = `${options.host} (${options.address}:${options.port})`;
    if (options.hostKeys.length === 0) throw invalidArgument(`${options.host}: no pinned host key; zcsi never connects without one`);
    const pinned = options.hostKeys.map((line) => parseHostKey(line, options.host));
    // Parse once here so a bad key is a configuration error at startup, not a failure per call.
    const parsed = utils.parseKey(options.privateKey);
    if (parsed instanceof Error) throw invalidArgument(`${options.host}: the SSH private key cannot be used: ${parsed.message}`);
    const maxChannels = options.maxChannels ?? 8;
    if (!Number.isInteger(maxChannels) || maxChannels < 1) throw invalidArgument(`${options.host}: maxChannels must be a positive integer`);
    const maxCommands = options.maxCommands ?? maxChannels;
    if (!Number.isInteger(maxCommands) || maxCommands < 1) throw invalidArgument(`${options.host}: maxCommands must be a positive integer`);
    this.channels = new Semaphore(maxChannels);
    this.commands = new Semaphore(maxCommands);
    this.sudo = options.sudo ?? false;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 60_000;
    this.drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
    this.log = (options.logger ?? silentLogger).child({ component: "ssh", host: options.host });
    this.connector = new SshConnector(this.target, options, options.privateKey, pinned, this.log);
  }

  stats(): SshExecutorStats {
    return {
      openChannels: this.channels.inUse,
      peakChannels: this.channels.peak,
      queued: this.channels.queued + this.commands.queued,
      runningCommands: this.commands.inUse,
      peakCommands: this.commands.peak,
      abandonedCommands: this.abandoned,
      connects: this.connector.connects,
      channelOpenRetries: this.openRetries,
    };
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (options.detach) throw invalidArgument(`${this.host}: detached commands run only on this machine, not over SSH`);
    const command = this.quote(argv); // a rejected argv must not take a slot
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(deadlineExceeded(`${this.host}: ${argv[0] ?? "command"} did not finish within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const callSignal = options.signal ?? currentCallSignal();
    const waitSignal = callSignal ? AbortSignal.any([deadline.signal, callSignal]) : deadline.signal;
    let releaseCommand: Release | undefined;
    try {
      releaseCommand = await this.waitFor(this.commands, argv, waitSignal);
      const running = await this.start(argv, command, waitSignal, deadline.signal);
      this.inFlight.add(running.done);
      void running.done.catch(() => undefined).finally(() => this.inFlight.delete(running.done));
      const { channel } = running;
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      channel.on("data", options.onStdout ?? ((chunk: Buffer) => stdout.push(chunk)));
      channel.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      // stderr data is pushed before the channel closes, but is delivered on its own stream.
      const stderrDone = new Promise<void>((resolve) => {
        channel.stderr.once("end", resolve);
        channel.stderr.once("close", resolve);
      });
      channel.end(options.stdin); // stdin (if any), then EOF so a command reading stdin finishes
      const onAbort = (): void => running.kill();
      deadline.signal.addEventListener("abort", onAbort, { once: true });
      const expired = new Promise<never>((_, reject) => deadline.signal.addEventListener("abort", () => reject(deadline.signal.reason), { once: true }));
      try {
        const result = await Promise.race([running.done, expired]);
        await stderrDone;
        return { ...result, stdout: Buffer.concat(stdout).toString("utf8"), stderr: Buffer.concat(stderr).toString("utf8") };
      } catch (err) {
        if (deadline.signal.aborted) releaseCommand = this.abandon(argv, running, releaseCommand);
        throw err;
      } finally {
        deadline.signal.removeEventListener("abort", onAbort);
      }
    } finally {
      clearTimeout(timer);
      releaseCommand?.();
    }
  }

  /**
   * A command past its deadline: the caller gets DeadlineExceeded now, but the command keeps
   * its slot until it has exited on the host (the kill is under way; see trackChannel). A
   * command that does not die (stuck in the kernel of a struggling host) keeps the slot for
   * good, so zcsi never runs more than `maxCommands` commands there, dead or alive. Returns
   * the release for the caller's `finally`, which is now a no-op.
   */
  private abandon(argv: readonly string[], running: Running, release: Release | undefined): undefined {
    this.abandoned += 1;
    this.log.warn({ command: argv[0] ?? "command", runningCommands: this.commands.inUse }, "command timed out; its slot stays taken until it has exited on the pool host");
    const exited = (): void => {
      this.abandoned -= 1;
      release?.();
    };
    running.done.then(exited, exited);
    return undefined;
  }

  /**
   * Starts a command with live streams and SSH flow control: a reader that stops reading
   * stdout stops the remote writer. stdout and stderr share the channel's window, so the
   * caller must consume both (or the command stalls).
   */
  async stream(argv: readonly string[]): Promise<ExecStream> {
    const running = await this.start(argv, this.quote(argv));
    const { channel } = running;
    return { stdin: channel, stdout: channel, stderr: channel.stderr, done: running.done, kill: running.kill };
  }

  /**
   * Refuses new commands at once, lets the commands already on the host finish (at most
   * `drainTimeoutMs`), then drops the connection.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = unavailable(`${this.target}: the SSH executor was closed`);
    this.commands.close(err);
    this.channels.close(err);
    if (this.inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.drainTimeoutMs)));
      const drained = Promise.allSettled([...this.inFlight]).then(() => false);
      if (await Promise.race([drained, gaveUp])) this.log.warn({ running: this.inFlight.size }, "closing with commands still running on the pool host");
      clearTimeout(timer);
    }
    await this.connector.close();
  }

  private quote(argv: readonly string[]): string {
    return quoteArgv(this.sudo ? ["sudo", "-n", ...argv] : argv);
  }

  /**
   * A slot of `limiter`. Given up when `signal` fires: with a DeadlineExceeded reason (the
   * command's own timeout) as that; for any other reason (the call was cancelled or its
   * deadline passed) as Unavailable: the host is busy, the command never ran, a retry is safe.
   */
  private async waitFor(limiter: Semaphore, argv: readonly string[], signal?: AbortSignal): Promise<Release> {
    try {
      return await limiter.acquire(signal);
    } catch (err) {
      throw this.notStarted(argv, err);
    }
  }

  private notStarted(argv: readonly string[], err: unknown): unknown {
    if (isZcsiError(err)) return err;
    return unavailable(
      `${this.target}: ${argv[0] ?? "command"} was not started: ${errorMessage(err)} while it waited for the pool host ` +
        `(${this.commands.inUse} commands running, ${this.commands.queued + this.channels.queued} waiting)`,
      { cause: err },
    );
  }

  /**
   * Takes a channel slot, a connection and a channel, in that order, and runs the command.
   * `waitSignal` ends the waiting; `killSignal` (the command's timeout) also stops a command
   * whose channel opened just as it fired.
   */
  private async start(argv: readonly string[], command: string, waitSignal?: AbortSignal, killSignal?: AbortSignal): Promise<Running> {
    const release = await this.waitFor(this.channels, argv, waitSignal);
    try {
      for (let attempt = 0; ; attempt++) {
        const conn = await abortable(this.connector.get(), waitSignal);
        let channel: StartedChannel;
        try {
          channel = await openExecChannel(conn, command);
        } catch (err) {
          // The server refused the channel (MaxSessions shared with other clients such as
          // SSHFS, or sessions still closing): the command never ran, so waiting and
          // retrying cannot run it twice.
          if (isChannelOpenFailure(err) && !conn.lost && !this.closed && attempt < MAX_OPEN_RETRIES) {
            this.openRetries += 1;
            this.log.debug({ attempt, err: errorMessage(err) }, "ssh channel refused; retrying");
            await sleep(backoffDelay(attempt, { initialMs: 25, maxMs: 1000 }), waitSignal);
            continue;
          }
          const why = conn.lost ? `connection lost: ${conn.lost.message}` : errorMessage(err);
          throw unavailable(`${this.target}: cannot start ${argv[0] ?? "command"}: ${why}`, { cause: err });
        }
        const running = trackChannel(conn, channel, { target: this.target, command: argv[0] ?? "command" }, this.log, release);
        if (killSignal?.aborted) running.kill(); // the deadline passed while the channel opened
        return running;
      }
    } catch (err) {
      release();
      throw this.notStarted(argv, err);
    }
  }
}

function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
