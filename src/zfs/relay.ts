import { Transform, type TransformCallback } from "node:stream";
import { aborted } from "../errors.js";
import type { ExecResult } from "../exec/executor.js";
import type { StreamedCommand } from "./client.js";

/**
 * Moves one `zfs send` stream into one `zfs receive`, on one host (`Zfs.sendReceive`, a
 * copy-mode restore) or on two (replication), through this process, with a byte count and
 * optional transforms (the replicator's bandwidth limiter) in between. Argv only on both ends,
 * so no name ever meets a shell.
 *
 * The rules:
 * - both exit codes count: a send that dies after writing part of a stream can leave a receive
 *   that read a clean EOF, and that must not pass for a copy;
 * - when the receive fails first, the send is killed so it cannot block forever on a full pipe;
 * - the error reported is the root cause: that of whichever end failed first, with its stderr;
 * - flow control end to end: `pipe` stops reading the send while the receive (or the limiter)
 *   is behind, and the SSH channel window then stops the remote `zfs send`.
 * Aborting (`signal`) kills both ends; a resumable receive then keeps its partial state.
 */

/** Collects a stream's text (stderr), bounded so a chatty command cannot grow it without limit. */
function collect(stream: NodeJS.ReadableStream): { text: () => string; ended: Promise<void> } {
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on("data", (chunk: Buffer) => {
    if (size < 64 * 1024) chunks.push(chunk);
    size += chunk.length;
  });
  const ended = new Promise<void>((resolve) => {
    stream.once("end", resolve);
    stream.once("close", resolve);
    stream.once("error", () => resolve());
  });
  return { text: () => Buffer.concat(chunks).toString("utf8"), ended };
}

export interface RelayOptions {
  /** Applied in order between the send's stdout and the receive's stdin. */
  readonly through?: readonly Transform[];
  readonly signal?: AbortSignal;
}

export interface RelayResult {
  /** Stream bytes that left the send (before any transform). */
  readonly bytes: number;
}

/**
 * Relays `send`'s stdout into `receive`'s stdin until both exit; rejects with the classified
 * error of the end that failed first (kind Internal for a killed or unrecognised failure,
 * FailedPrecondition for e.g. a modified target; see zfs/errors.ts), or Aborted on `signal`.
 */
export async function relay(send: StreamedCommand, receive: StreamedCommand, options: RelayOptions = {}): Promise<RelayResult> {
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      bytes += chunk.length;
      callback(null, chunk);
    },
  });
  const sendStderr = collect(send.stream.stderr);
  const recvStderr = collect(receive.stream.stderr);
  // zfs send reads no input; recv writes no output. Close/drain them so neither channel waits.
  const ignore = (): void => undefined;
  send.stream.stdin.on("error", ignore);
  receive.stream.stdin.on("error", ignore);
  send.stream.stdout.on("error", ignore);
  counter.on("error", ignore);
  for (const t of options.through ?? []) t.on("error", ignore);
  send.stream.stdin.end();
  receive.stream.stdout.resume();
  let chain: NodeJS.ReadableStream = send.stream.stdout.pipe(counter);
  for (const t of options.through ?? []) chain = chain.pipe(t);
  chain.pipe(receive.stream.stdin);

  let firstFailure: "send" | "receive" | "aborted" | undefined;
  const killBoth = (): void => {
    send.stream.kill();
    receive.stream.kill();
  };
  const onAbort = (): void => {
    firstFailure ??= "aborted";
    killBoth();
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const sendDone = send.stream.done.then(
    (r) => {
      if (r.exitCode !== 0) firstFailure ??= "send";
      return r;
    },
    (err: unknown) => {
      firstFailure ??= "send";
      // The channel is gone: nothing more will come, so the receive must see the end now.
      receive.stream.stdin.end();
      throw err;
    },
  );
  const recvFailed = (): void => {
    firstFailure ??= "receive";
    send.stream.kill();
  };
  const recvDone = receive.stream.done.then(
    (r) => {
      if (r.exitCode !== 0) recvFailed();
      return r;
    },
    (err: unknown) => {
      recvFailed();
      throw err;
    },
  );
  const [sent, received] = await Promise.allSettled([sendDone, recvDone]);
  options.signal?.removeEventListener("abort", onAbort);
  // Over SSH, stderr is its own stream and may end just after the channel reports its exit.
  await Promise.all([sendStderr.ended, recvStderr.ended]);
  if (firstFailure === undefined) return { bytes };
  if (firstFailure === "aborted") throw aborted(`transfer ${send.argv.join(" ")} -> ${receive.argv.join(" ")} aborted after ${bytes} bytes`);
  const [settled, end, stderr]: [PromiseSettledResult<ExecResult>, StreamedCommand, { text: () => string }] =
    firstFailure === "send" ? [sent, send, sendStderr] : [received, receive, recvStderr];
  if (settled.status === "rejected") throw settled.reason;
  throw end.failure({ ...settled.value, stderr: stderr.text() });
}
