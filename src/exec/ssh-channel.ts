import type { Client as SshClient, ClientChannel } from "ssh2";
import { unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import type { ExecResult } from "./executor.js";

/** One SSH connection, and why it failed once it has (channels that then close without an exit status report it). */
export interface Connection {
  readonly client: SshClient;
  lost?: Error;
}

/** An exec channel with what ssh2 reported before anyone else could listen (see `openExecChannel`). */
export interface StartedChannel {
  readonly channel: ClientChannel;
  exit?: { code: number | null; signal: string | null };
  closed: boolean;
  onClose?: () => void;
}

/** A started command: the channel, its outcome (stdout/stderr left empty), and a way to stop it. */
export interface Running {
  readonly channel: ClientChannel;
  readonly done: Promise<ExecResult>;
  kill(): void;
}

/** Time a command gets to exit on SIGTERM (which sudo relays to its child) before SIGKILL. */
const KILL_GRACE_MS = 500;

/**
 * ssh2's public `signal()` is a no-op once our side has sent EOF (it checks `writable`), and
 * `run()` ends stdin at once. RFC 4254 §6.9 allows a signal request until the channel is
 * closed, so this uses ssh2's internal sender, guarded so an ssh2 upgrade that moves it
 * degrades to "close only" instead of throwing.
 */
function sendSignal(channel: ClientChannel, name: string): boolean {
  const internals = channel as unknown as {
    outgoing?: { id?: unknown; state?: unknown };
    _client?: { _protocol?: { signal?: unknown } };
  };
  const protocol = internals._client?._protocol;
  const id = internals.outgoing?.id;
  const state = internals.outgoing?.state;
  const signal = protocol?.signal;
  if (typeof id !== "number" || (state !== "open" && state !== "eof") || typeof signal !== "function") return false;
  signal.call(protocol, id, name);
  return true;
}

/**
 * Opens the exec channel. The exit status and the close are recorded from inside ssh2's
 * callback: ssh2 calls it while parsing the packets it has read, and a fast command's
 * `exit-status` and CLOSE can sit in the same chunk as the exec reply; they are emitted before
 * any later listener (trackChannel runs a microtask later) could see them. Missing the exit
 * event made a finished command look like "the channel closed without an exit status".
 */
export function openExecChannel(conn: Connection, command: string): Promise<StartedChannel> {
  return new Promise((resolve, reject) => {
    try {
      conn.client.exec(command, (err, channel) => {
        if (err) return reject(err);
        const started: StartedChannel = { channel, closed: false };
        channel.on("exit", (code: number | null, signal?: string) => {
          // RFC 4254 §6.10 names signals without "SIG" and ssh2 adds it; normalise either way to
          // node's child_process form (as LocalExecutor reports).
          started.exit = { code: code ?? null, signal: signal === undefined ? null : signal.startsWith("SIG") ? signal : `SIG${signal}` };
        });
        channel.once("close", () => {
          started.closed = true;
          started.onClose?.();
        });
        resolve(started);
      });
    } catch (err) {
      reject(err); // ssh2 throws "Not connected" synchronously when the socket just died
    }
  });
}

/**
 * Follows a started channel to its end: `done` settles when it closes (and `onClosed` runs
 * then, e.g. to free its slot); `kill` sends SIGTERM, then SIGKILL, and leaves the close to
 * the server, which sends it once the command has exited.
 */
export function trackChannel(conn: Connection, started: StartedChannel, what: { target: string; command: string }, log: Logger, onClosed: () => void): Running {
  const { channel } = started;
  let closed = false;
  let killTimer: NodeJS.Timeout | undefined;
  // e.g. writing stdin after the command exited; the outcome is reported through `done`.
  channel.on("error", (err: Error) => log.debug({ err: err.message, command: what.command }, "ssh channel error"));
  channel.stderr.on("error", () => undefined);
  const done = new Promise<ExecResult>((resolve, reject) => {
    const onClose = (): void => {
      closed = true;
      clearTimeout(killTimer);
      onClosed();
      const exit = started.exit;
      if (exit) return resolve({ stdout: "", stderr: "", exitCode: exit.code, signal: exit.signal });
      const why = conn.lost ? `connection lost: ${conn.lost.message}` : "the channel closed without an exit status";
      reject(unavailable(`${what.target}: ${what.command} did not complete: ${why}`));
    };
    if (started.closed) onClose();
    else started.onClose = onClose;
  });
  done.catch(() => undefined); // a stream() caller may never await `done`
  const kill = (): void => {
    if (closed || killTimer !== undefined) return;
    // sshd delivers signals with killpg() to the session's process group (OpenSSH session.c).
    // The channel is not closed after the signals: sshd closes it once every process holding
    // its stdout/stderr has exited, so `done` (and the slot freed with it) waits until the
    // command is really gone. A command stuck in the kernel (D state, e.g. on a hung FUSE
    // mount) survives SIGKILL; closing our side would free its slot while it still runs on the
    // host, and the next command would pile onto a pool host that is already struggling.
    // Only when no signal can be sent (an ssh2 that moved its internals) is closing left.
    const signalled = sendSignal(channel, "TERM");
    killTimer = setTimeout(() => {
      if (!signalled || !sendSignal(channel, "KILL")) channel.close();
    }, KILL_GRACE_MS);
    // Keep reading so the channel can reach "close" even if nobody consumes the output.
    channel.resume();
    channel.stderr.resume();
  };
  return { channel, done, kill };
}
