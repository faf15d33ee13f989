import { Transform, type TransformCallback } from "node:stream";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";

/**
 * An executor that can cut the next `zfs send` stream after `bytes` of it have been read, by
 * killing its channel: what a dropped connection or a killed replicator does mid-transfer. It
 * also keeps a log of what ran through it (streamed commands, `zfs hold`s), so a test can
 * tell how a transfer was made (`zfs send -t <token>`: resumed) and what it moved.
 */
export class CuttingExecutor implements Executor {
  private cutAfter: number | undefined;
  cuts = 0;
  /** Every `zfs hold` run through this executor, with how it ended. */
  readonly holds: { snapshot: string; exitCode: number | null; stderr: string }[] = [];
  /** Every streamed command's argv (sends and receives), in order, with the bytes read from its stdout. */
  readonly streams: { argv: readonly string[]; bytes: number }[] = [];
  constructor(private readonly inner: Executor) {}
  get host(): string {
    return this.inner.host;
  }
  cutNextSendAfter(bytes: number): void {
    this.cutAfter = bytes;
  }
  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    const result = await this.inner.run(argv, options);
    const i = argv.indexOf("zfs");
    if (argv[i + 1] === "hold") this.holds.push({ snapshot: argv[argv.length - 1] ?? "", exitCode: result.exitCode, stderr: result.stderr.trim() });
    return result;
  }
  async stream(argv: readonly string[]): Promise<ExecStream> {
    const running = await this.inner.stream(argv);
    const entry = { argv: [...argv], bytes: 0 };
    this.streams.push(entry);
    const limit = this.cutAfter;
    const i = argv.indexOf("zfs");
    const isSend = argv[i + 1] === "send";
    if (isSend && limit !== undefined) this.cutAfter = undefined;
    let cut = false;
    const counter = new Transform({
      transform: (chunk: Buffer, _e: BufferEncoding, cb: TransformCallback) => {
        if (cut) return cb();
        entry.bytes += chunk.length;
        if (!isSend || limit === undefined || entry.bytes < limit) return cb(null, chunk);
        // The connection drops here: what follows never arrives, and the command dies.
        cut = true;
        this.cuts++;
        running.stdout.unpipe(counter);
        running.stdout.resume();
        counter.end();
        running.kill();
        const over = entry.bytes - limit;
        entry.bytes = limit;
        cb(null, chunk.subarray(0, chunk.length - over));
      },
    });
    running.stdout.pipe(counter);
    return { ...running, stdout: counter, kill: running.kill };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
