import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import type { Clock } from "../util/clock.js";
import type { PoolHost } from "../volumes/hosts.js";
import { PROP } from "../volumes/properties.js";
import type { SendFlags } from "../zfs/argv.js";
import type { Capabilities } from "../zfs/capabilities.js";
import type { StreamedCommand } from "../zfs/client.js";
import { relay } from "../zfs/relay.js";
import { replicaMark } from "./bookkeeping.js";
import { bandwidthLimiter } from "./limiter.js";
import type { SnapshotEntry } from "./plan.js";
import type { ReplicationJob } from "./types.js";

/**
 * Moving the bytes of one replication run: one `zfs send` on the source host streamed into one
 * `zfs receive -u [-s]` on the target host through this process (relay.ts), optionally through
 * the bandwidth limiter; resuming an interrupted receive (`send -t <token>`) and dropping one
 * whose token went stale (`receive -A`). What to send is decided elsewhere (plan.ts); what
 * follows a send (holds, pruning) too (bookkeeping.ts, engine.ts).
 */

/** The two ends of one job's run. */
export interface TransferContext {
  readonly job: ReplicationJob;
  readonly src: PoolHost;
  readonly tgt: PoolHost;
  readonly srcCaps: Capabilities;
  readonly tgtCaps: Capabilities;
  /** `receive -s` / `send -t` on both ends. */
  readonly resumable: boolean;
  readonly log: Logger;
  readonly signal: AbortSignal | undefined;
}

export type TransferWhat =
  | { readonly kind: "full"; readonly to: SnapshotEntry }
  | { readonly kind: "incremental"; readonly from: SnapshotEntry; readonly to: SnapshotEntry }
  | { readonly kind: "resume"; readonly token: string };

/**
 * `-i` increments from `from` through each of `hops` in turn (plan.ts: the siblings' bases on
 * the way, then the run's snapshot); the stream bytes summed. A failure part-way leaves the
 * target at the last hop it received, a snapshot the source has: the next run goes on from there.
 */
export async function incrementChain(from: SnapshotEntry, hops: readonly SnapshotEntry[], send: (what: TransferWhat) => Promise<number>): Promise<number> {
  let bytes = 0;
  let base = from;
  for (const hop of hops) {
    bytes += await send({ kind: "incremental", from: base, to: hop });
    base = hop;
  }
  return bytes;
}

export interface TransferOptions {
  readonly clock: Clock;
  /** Injected for tests of the limiter; defaults to setTimeout. */
  readonly sleep?: ((ms: number) => Promise<void>) | undefined;
  /** The source dataset's `encryption` (OpenZFS); undefined where unknown or off. */
  readonly sourceEncryption?: string | undefined;
  /** What marks the target as this source's replica (roles.replicaProperties), set by a first receive on OpenZFS. */
  readonly replicaProps?: Readonly<Record<string, string>>;
}

/**
 * Stream options: none unless both ends are OpenZFS (zfs-fuse knows none, and a stream with
 * them cannot be received there). Between OpenZFS hosts: large blocks, embedded and
 * compressed blocks as stored (less to move, nothing to recompress), and an encrypted source
 * raw, so the replica stays encrypted and the replicator never needs its key. Every run of a
 * job decides the same way, so a raw full is followed by raw increments. (A resumed send
 * takes its options from the token.)
 */
export function sendFlags(srcCaps: Capabilities, tgtCaps: Capabilities, sourceEncryption: string | undefined): SendFlags {
  if (srcCaps.implementation !== "openzfs" || tgtCaps.implementation !== "openzfs") return {};
  return { largeBlocks: true, embedded: true, compressed: true, ...(sourceEncryption !== undefined && sourceEncryption !== "off" && { raw: true }) };
}

/**
 * One stream from the source host into the target host, limited when the job says so. Returns
 * the stream bytes relayed. The receive is started first so that a send that cannot start
 * leaves nothing running; a first (full) receive on OpenZFS marks the new target at once
 * (`receive -o`), so even an interrupted one carries zcsi:replica-of.
 */
export async function transfer(ctx: TransferContext, what: TransferWhat, options: TransferOptions): Promise<number> {
  const { job, src, tgt } = ctx;
  const recvProps = what.kind === "full" && ctx.tgtCaps.implementation === "openzfs" ? (options.replicaProps ?? { [PROP.replicaOf]: replicaMark(job.source), readonly: "on" }) : undefined;
  const receive = await tgt.zfs.startReceive(job.target.dataset, { resumable: ctx.resumable, ...(recvProps && { props: recvProps }) });
  let send: StreamedCommand;
  try {
    send =
      what.kind === "resume"
        ? await src.zfs.startSendResume(what.token)
        : await src.zfs.startSend(`${job.source.dataset}@${what.to.name}`, {
            ...sendFlags(ctx.srcCaps, ctx.tgtCaps, options.sourceEncryption),
            ...(what.kind === "incremental" && { incrementalFrom: `${job.source.dataset}@${what.from.name}` }),
          });
  } catch (err) {
    receive.stream.stdin.end();
    receive.stream.kill();
    await receive.stream.done.catch(() => undefined);
    throw err;
  }
  const through =
    job.bandwidthBytesPerSec === undefined ? [] : [bandwidthLimiter({ bytesPerSecond: job.bandwidthBytesPerSec, clock: options.clock, ...(options.sleep && { sleep: options.sleep }) })];
  ctx.log.info(
    { action: what.kind, send: send.argv, receive: receive.argv, ...(job.bandwidthBytesPerSec !== undefined && { bandwidthBytesPerSec: job.bandwidthBytesPerSec }) },
    "transfer started",
  );
  const { bytes } = await relay(send, receive, { through, ...(ctx.signal && { signal: ctx.signal }) });
  return bytes;
}

/**
 * Drops the partial state of an interrupted receive whose token the source no longer accepts
 * (it names a snapshot the source no longer has, or no longer the same one): it can never
 * complete, and it blocks every other receive into the target. For an interrupted first
 * receive that state is the whole (marked, ours) dataset.
 */
export async function abortStaleReceive(ctx: TransferContext, err: unknown): Promise<void> {
  ctx.log.warn({ err: errorMessage(err) }, "resume token is stale; aborting the interrupted receive and sending afresh");
  await ctx.tgt.zfs.receiveAbort(ctx.job.target.dataset);
}
