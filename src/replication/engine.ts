import { createHash } from "node:crypto";
import { aborted, errorMessage, failedPrecondition, internal, invalidArgument, isZcsiError, notFound } from "../errors.js";
import { silentLogger, type Logger } from "../log.js";
import { systemClock, type Clock } from "../util/clock.js";
import { KeyedLocks } from "../util/locks.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { PROP, REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import type { Capabilities } from "../zfs/capabilities.js";
import type { SendFlags } from "../zfs/argv.js";
import type { StreamedCommand } from "../zfs/client.js";
import { isStaleResumeToken, isTargetModified } from "../zfs/errors.js";
import { relay } from "../zfs/relay.js";
import { isBelow, parentOf, validateDataset } from "../zfs/names.js";
import { ownUserPropertyValue, type DatasetProperties } from "../zfs/parse.js";
import { bandwidthLimiter } from "./limiter.js";
import { describeDivergence, isUnmarkedReplica, plan, type SnapshotEntry } from "./plan.js";
import type { DatasetRef, ReplicationAction, ReplicationEngine, ReplicationJob, ReplicationResult } from "./types.js";

/**
 * The replication engine: one run of one job (types.ts), over the pool hosts' executors.
 *
 * A run, in order:
 *  1. read both sides in one `zfs get -d 1` each (snapshots with guid/createtxg/creation/
 *     userrefs; the target's zcsi:replica-of, and on OpenZFS its receive_resume_token and
 *     `written`);
 *  2. refuse a target that exists and is not zcsi's replica of this source (FailedPrecondition);
 *  3. if the target holds an interrupted resumable receive, finish it (`send -t`); a token the
 *     source no longer accepts is dropped (`recv -A`) and the run goes on afresh;
 *  4. plan on the current lists: divergence is refused BEFORE anything is created;
 *  5. snapshot the source `@zcsi-repl-<UTC time>` and hold it (tag `zcsi-repl-<jobId>`);
 *  6. send (full, or `-i` from the newest common snapshot) into `receive -u [-s]`;
 *  7. confirm the new snapshot's guid on the target, then release the job's older holds,
 *     record the job's base and the volume's zcsi:replicated-through, and prune the
 *     replicator's own old snapshots on both sides.
 *
 * Only `-i` (not `-I`): the target gets the replicator's snapshots only, so target retention
 * is `targetKeep` of those and nothing else accumulates there.
 *
 * THE `-F` RULE: this engine never receives with `-F` (zfs-receive(8): roll the target back to
 * its newest snapshot, destroying later snapshots and writes). A target that diverged is
 * refused and reported; the operator decides what to destroy. Where writes matter for the
 * receive, the target is kept `readonly=on` (set at the first receive) so that merely mounting
 * and reading it (atime) does not count as a modification: zfs-fuse refuses an incremental
 * receive after a read of a read-write target ("has been modified since most recent snapshot").
 *
 * Ownership: the first (full) receive creates the target and marks it `zcsi:replica-of =
 * <source host>:<source dataset>` (with `receive -o` on OpenZFS, so even an interrupted first
 * receive carries it; by a `zfs set` right after on zfs-fuse). Any other existing target is
 * refused, except one provably made by this replicator from this source (plan.isUnmarkedReplica),
 * which is marked and used.
 *
 * Holds: the job's newest common snapshot on the source carries hold `zcsi-repl-<jobId>`, so
 * no prune (ours, the snapshot scheduler's, or a human's `zfs destroy`) removes the base the
 * next increment needs. A new snapshot is held before it is sent; the previous base's hold is
 * released only after the new snapshot's guid is confirmed on the target.
 */

export interface ReplicationEngineOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Injected for tests of the limiter; defaults to setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
}

const JOB_ID = /^[A-Za-z0-9._-]{1,128}$/;
const DEFAULT_TARGET_KEEP = 3;

/** `zcsi-repl-2026-11-22T063251Z` (UTC, to the second: runs of one job are minutes apart). */
export function replicationSnapshotName(at: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, "0");
  return (
    `${REPLICATION_SNAPSHOT_PREFIX}${p(at.getUTCFullYear(), 4)}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())}` +
    `T${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}Z`
  );
}

/** The hold tag of a job on its source snapshots. */
export function holdTag(jobId: string): string {
  return `${REPLICATION_SNAPSHOT_PREFIX}${jobId}`;
}

export const JOB_STATE_PREFIX = "zcsi:repl.";

/**
 * The per-job user property on the source dataset that records the guid of the job's newest
 * common snapshot (its base): `zcsi:repl.<jobId>`. User property names are lowercase only
 * (zfsprops(7)), so an id with capitals gets a short hash of the exact id appended to keep
 * `Job-1` and `job-1` apart.
 */
export function jobStateProperty(jobId: string): string {
  const lower = jobId.toLowerCase();
  return lower === jobId ? `${JOB_STATE_PREFIX}${jobId}` : `${JOB_STATE_PREFIX}${lower}.${createHash("sha256").update(jobId).digest("hex").slice(0, 8)}`;
}

/** The value of zcsi:replica-of that marks a target as the replica of `source`. */
export function replicaMark(source: DatasetRef): string {
  return `${source.host}:${source.dataset}`;
}

interface Snapshot extends SnapshotEntry {
  readonly userrefs: number;
  /** Bytes written between the previous snapshot and this one (OpenZFS `written`); undefined where unknown. */
  readonly written?: bigint;
}

interface Side {
  readonly exists: boolean;
  readonly props: DatasetProperties | undefined;
  /** Oldest first. */
  readonly snapshots: readonly Snapshot[];
}

function value(props: DatasetProperties | undefined, name: string): string | undefined {
  const v = props?.get(name)?.value;
  return v === undefined || v === "-" || v === "" ? undefined : v;
}

function integer(props: DatasetProperties | undefined, name: string): bigint | undefined {
  const v = value(props, name);
  return v !== undefined && /^[0-9]+$/.test(v) ? BigInt(v) : undefined;
}

interface RunContext {
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

export class ZfsReplicationEngine implements ReplicationEngine {
  private readonly locks = new KeyedLocks();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly sleep: ((ms: number) => Promise<void>) | undefined;

  constructor(
    private readonly hosts: PoolHosts,
    options: ReplicationEngineOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.sleep = options.sleep;
  }

  async replicate(job: ReplicationJob, signal?: AbortSignal): Promise<ReplicationResult> {
    this.validate(job);
    return this.locks.run(job.id, "replicate", async () => {
      if (signal?.aborted) throw aborted(`replication ${job.id}: aborted before it started`);
      const started = this.clock.now().getTime();
      const src = this.hosts.get(job.source.host);
      const tgt = this.hosts.get(job.target.host);
      const [srcCaps, tgtCaps] = await Promise.all([src.zfs.capabilities(), tgt.zfs.capabilities()]);
      const ctx: RunContext = {
        job,
        src,
        tgt,
        srcCaps,
        tgtCaps,
        resumable: srcCaps.resumableSend && tgtCaps.resumableSend,
        log: this.logger.child({ jobId: job.id, op: "replicate" }),
        signal,
      };
      try {
        const result = await this.run(ctx, started);
        ctx.log.info(
          { action: result.action, snapshot: result.snapshot, bytes: result.bytes, durationMs: result.durationMs, abortedStaleToken: result.abortedStaleToken ?? false },
          "replication run done",
        );
        return result;
      } catch (err) {
        ctx.log.warn({ err: errorMessage(err), kind: isZcsiError(err) ? err.kind : "Internal" }, "replication run failed");
        throw err;
      }
    });
  }

  /**
   * For one job this takes the job's lock (Aborted while a run of it is in flight: that run
   * would hold its new base again right after). For all jobs of a source (DeleteVolume) there
   * is no single lock to take; a run still in flight there fails when its source goes.
   */
  async releaseHolds(source: DatasetRef, jobId?: string): Promise<void> {
    validateDataset(source.dataset);
    if (jobId !== undefined && !JOB_ID.test(jobId)) throw invalidArgument(`invalid replication job id ${JSON.stringify(jobId)}`);
    const src = this.hosts.get(source.host);
    this.checkBelowParent(src, source.dataset, "source");
    if (jobId === undefined) return this.release(src, source, undefined);
    return this.locks.run(jobId, "release-holds", () => this.release(src, source, jobId));
  }

  private async release(src: PoolHost, source: DatasetRef, jobId: string | undefined): Promise<void> {
    const log = this.logger.child({ op: "release-holds", poolHost: source.host, dataset: source.dataset, ...(jobId !== undefined && { jobId }) });
    const [side, props] = await Promise.all([this.readSide(src, source.dataset, []), this.userProperties(src, source.dataset)]);
    if (!side.exists) return;
    const states = jobStates(props);
    // Which tags to release: the job's, or every job that ever recorded state here. A job with
    // no recorded state (it never completed a run) may still hold its in-flight snapshot, so
    // the tags of all our snapshots' plausible holders are tried: release is idempotent.
    const tags = jobId !== undefined ? [holdTag(jobId)] : [...new Set([...states.values()].map((s) => holdTag(s.jobId)))];
    const held = side.snapshots.filter((s) => s.userrefs > 0);
    let released = 0;
    for (const snap of held) {
      for (const tag of tags) {
        if (await src.zfs.release(tag, `${source.dataset}@${snap.name}`)) released++;
      }
    }
    // Without per-job state we cannot name every tag (zfs-fuse cannot list holds): on OpenZFS,
    // `zfs holds` names them, so any zcsi-repl-* tag left is released too.
    if (jobId === undefined && held.length > 0 && (await src.zfs.capabilities()).implementation === "openzfs") {
      const holds = await src.zfs.holds(held.map((s) => `${source.dataset}@${s.name}`));
      for (const h of holds) {
        if (h.tag.startsWith(REPLICATION_SNAPSHOT_PREFIX) && (await src.zfs.release(h.tag, h.snapshot))) released++;
      }
    }
    for (const [property, state] of states) {
      if (jobId === undefined || state.jobId === jobId || property === jobStateProperty(jobId)) await src.zfs.inherit(source.dataset, property);
    }
    await this.updateReplicatedThrough(src, source.dataset);
    log.info({ released }, "released replication holds");
  }

  // ---- one run ------------------------------------------------------------------------------

  private async run(ctx: RunContext, started: number): Promise<ReplicationResult> {
    const { job } = ctx;
    let [source, target] = await Promise.all([this.readSource(ctx), this.readTarget(ctx)]);
    if (!source.exists) throw notFound(`replication source ${replicaMark(job.source)} does not exist`);
    await this.checkOwnership(ctx, source, target);

    let abortedStaleToken = false;
    const token = value(target.props, "receive_resume_token");
    if (token !== undefined) {
      try {
        return await this.resume(ctx, token, started);
      } catch (err) {
        if (!isStaleResumeToken(err)) throw err;
        // The token names a snapshot the source no longer has (or no longer the same one):
        // it can never complete. Its partial state blocks every other receive, so drop it.
        // For an interrupted first receive that state is the whole (marked, ours) dataset.
        ctx.log.warn({ err: errorMessage(err) }, "resume token is stale; aborting the interrupted receive and sending afresh");
        await ctx.tgt.zfs.receiveAbort(job.target.dataset);
        abortedStaleToken = true;
        [source, target] = await Promise.all([this.readSource(ctx), this.readTarget(ctx)]);
      }
    }

    // Refuse a diverged target before creating anything on the source.
    const before = plan(this.planInput(source, target));
    if (before.kind === "refuse") throw failedPrecondition(describeDivergence(replicaMark(job.target), before.divergence));

    const snapshot = await this.takeSnapshot(ctx, target);
    source = await this.readSource(ctx);
    const takenAt = source.snapshots.findIndex((s) => `${job.source.dataset}@${s.name}` === snapshot);
    const taken = source.snapshots[takenAt];
    // `written` of a snapshot counts from the snapshot just before it, which must be the common one.
    const previous = source.snapshots[takenAt - 1];
    if (before.kind === "none" && taken?.written === 0n && previous?.guid === before.snapshot.guid) {
      // Nothing was written since the snapshot both sides already have (OpenZFS: the new
      // snapshot's `written` is 0), so the new one is dropped and there is nothing to send.
      // The dataset's own `written` cannot tell before a snapshot: it lags until the open
      // transaction group syncs (seen: 0 right after an 8 MiB write and `sync`), while taking
      // a snapshot syncs it.
      await this.dropInFlight(ctx, snapshot);
      return this.finish(ctx, before.snapshot, "none", 0, started, abortedStaleToken);
    }
    await ctx.src.zfs.hold(holdTag(job.id), snapshot);
    const next = plan(this.planInput(source, target));
    switch (next.kind) {
      case "none":
        return this.finish(ctx, next.snapshot, "none", 0, started, abortedStaleToken);
      case "refuse":
        await this.dropInFlight(ctx, snapshot);
        throw failedPrecondition(describeDivergence(replicaMark(job.target), next.divergence));
      case "resume":
      case "no-source-snapshot":
        throw internal(`replication ${job.id}: unexpected plan ${next.kind} after taking ${snapshot}`);
      case "full":
      case "incremental": {
        const to = next.kind === "full" ? next.snapshot : next.to;
        if (next.kind === "full") await this.ensureTargetParent(ctx);
        let bytes: number;
        try {
          bytes = await this.transfer(ctx, source, next.kind === "full" ? { kind: "full", to } : { kind: "incremental", from: next.from, to });
        } catch (err) {
          if (await this.arrived(ctx, to)) {
            // The receive finished and the snapshot is on the target: `zfs receive` checks the
            // stream's checksum at its end record, so a cut stream cannot pass for whole. What
            // failed came after the last byte (e.g. the send was killed as it exited).
            ctx.log.warn({ err: errorMessage(err), snapshot }, "transfer reported a failure after the receive completed; the snapshot is on the target");
            return this.finish(ctx, to, next.kind, 0, started, abortedStaleToken);
          }
          await this.afterFailedTransfer(ctx, snapshot);
          if (isTargetModified(err)) {
            throw failedPrecondition(
              `${replicaMark(job.target)} was written after its newest snapshot; replication refuses to roll the writes back ` +
                `(roll it back by hand to continue): ${errorMessage(err)}`,
              { cause: err },
            );
          }
          throw err;
        }
        return this.finish(ctx, to, next.kind, bytes, started, abortedStaleToken);
      }
    }
  }

  /**
   * A full receive creates the target but not its parents. A target deeper than one level
   * below the target host's parentDataset (a node-annotation job's `tank/k8s/apps/db`) gets
   * the missing datasets in between created, and only those: never the parentDataset itself,
   * which is the operator's.
   */
  private async ensureTargetParent(ctx: RunContext): Promise<void> {
    const parent = parentOf(ctx.job.target.dataset);
    const root = ctx.tgt.config.parentDataset;
    if (parent === undefined || parent === root || !isBelow(root, parent)) return;
    if (await ctx.tgt.zfs.exists(parent)) return;
    ctx.log.info({ dataset: parent }, "creating the target's parent datasets");
    await ctx.tgt.zfs.create(parent, {}, { parents: true });
  }

  /**
   * `zfs snapshot <source>@zcsi-repl-<UTC second>`; when that name is taken (a second run, or
   * another job of the same source, within the same second) `-2`, `-3`, ... is appended. Never
   * reuse the existing one: it may predate writes this run must carry.
   */
  private async takeSnapshot(ctx: RunContext, target: Side): Promise<string> {
    const base = replicationSnapshotName(this.clock.now());
    // Not a name the target still has either: the source may have pruned an older snapshot of
    // that name (runs seconds apart), and the receive would then refuse ("destination already exists").
    const onTarget = new Set(target.snapshots.map((s) => s.name));
    for (let n = 1; ; n++) {
      if (n > 50) throw internal(`replication ${ctx.job.id}: no free snapshot name after ${base}-50`);
      const name = n === 1 ? base : `${base}-${n}`;
      if (onTarget.has(name)) continue;
      const snapshot = `${ctx.job.source.dataset}@${name}`;
      try {
        await ctx.src.zfs.snapshot(snapshot);
        return snapshot;
      } catch (err) {
        if (!isZcsiError(err, "AlreadyExists")) throw err;
      }
    }
  }

  private planInput(source: Side, target: Side): Parameters<typeof plan>[0] {
    const token = value(target.props, "receive_resume_token");
    const written = integer(target.props, "written");
    return {
      source: source.snapshots,
      target: target.exists ? target.snapshots : undefined,
      ...(token !== undefined && { targetResumeToken: token }),
      // `written` of a target with no snapshot yet (an interrupted first receive) means nothing.
      ...(written !== undefined && target.snapshots.length > 0 && { targetWrittenBytes: written }),
    };
  }

  private async resume(ctx: RunContext, token: string, started: number): Promise<ReplicationResult> {
    const { job } = ctx;
    ctx.log.info({ action: "resume" }, "resuming an interrupted receive");
    const bytes = await this.transfer(ctx, await this.readSource(ctx), { kind: "resume", token });
    const after = await this.readTarget(ctx);
    const newest = after.snapshots[after.snapshots.length - 1];
    const fresh = await this.readSource(ctx);
    const to = newest === undefined ? undefined : fresh.snapshots.find((s) => s.guid === newest.guid);
    if (to === undefined) throw internal(`replication ${job.id}: resumed receive into ${replicaMark(job.target)} left no snapshot the source has`);
    return this.finish(ctx, to, "resume", bytes, started, false);
  }

  /** One stream from the source host into the target host, limited when the job says so. */
  /**
   * Stream options: none unless both ends are OpenZFS (zfs-fuse knows none, and a stream with
   * them cannot be received there). Between OpenZFS hosts: large blocks, embedded and
   * compressed blocks as stored (less to move, nothing to recompress), and an encrypted source
   * raw, so the replica stays encrypted and the replicator never needs its key. Every run of a
   * job decides the same way, so a raw full is followed by raw increments. (A resumed send
   * takes its options from the token.)
   */
  private sendFlags(ctx: RunContext, source: Side): SendFlags {
    if (ctx.srcCaps.implementation !== "openzfs" || ctx.tgtCaps.implementation !== "openzfs") return {};
    const encryption = value(source.props, "encryption");
    return { largeBlocks: true, embedded: true, compressed: true, ...(encryption !== undefined && encryption !== "off" && { raw: true }) };
  }

  private async transfer(
    ctx: RunContext,
    source: Side,
    what: { kind: "full"; to: SnapshotEntry } | { kind: "incremental"; from: SnapshotEntry; to: SnapshotEntry } | { kind: "resume"; token: string },
  ): Promise<number> {
    const { job, src, tgt } = ctx;
    const recvProps =
      what.kind === "full" && ctx.tgtCaps.implementation === "openzfs" ? { [PROP.replicaOf]: replicaMark(job.source), readonly: "on" } : undefined;
    const receive = await tgt.zfs.startReceive(job.target.dataset, { resumable: ctx.resumable, ...(recvProps && { props: recvProps }) });
    let send: StreamedCommand;
    try {
      send =
        what.kind === "resume"
          ? await src.zfs.startSendResume(what.token)
          : await src.zfs.startSend(`${job.source.dataset}@${what.to.name}`, {
              ...this.sendFlags(ctx, source),
              ...(what.kind === "incremental" && { incrementalFrom: `${job.source.dataset}@${what.from.name}` }),
            });
    } catch (err) {
      receive.stream.stdin.end();
      receive.stream.kill();
      await receive.stream.done.catch(() => undefined);
      throw err;
    }
    const through =
      job.bandwidthBytesPerSec === undefined
        ? []
        : [bandwidthLimiter({ bytesPerSecond: job.bandwidthBytesPerSec, clock: this.clock, ...(this.sleep && { sleep: this.sleep }) })];
    ctx.log.info(
      { action: what.kind, send: send.argv, receive: receive.argv, ...(job.bandwidthBytesPerSec !== undefined && { bandwidthBytesPerSec: job.bandwidthBytesPerSec }) },
      "transfer started",
    );
    const { bytes } = await relay(send, receive, { through, ...(ctx.signal && { signal: ctx.signal }) });
    return bytes;
  }

  private async arrived(ctx: RunContext, to: SnapshotEntry): Promise<boolean> {
    try {
      return (await this.readTarget(ctx)).snapshots.some((s) => s.guid === to.guid);
    } catch {
      return false;
    }
  }

  /**
   * After a failed send/receive: a resumable receive that kept partial state needs its
   * snapshot (the token names it), so it stays, held. Otherwise the new snapshot is useless
   * (the next run takes a newer one) and holding it would pile up one per failed run: release
   * it and destroy it.
   */
  private async afterFailedTransfer(ctx: RunContext, snapshot: string): Promise<void> {
    try {
      const target = await this.readTarget(ctx);
      if (value(target.props, "receive_resume_token") !== undefined) return;
      await this.dropInFlight(ctx, snapshot);
    } catch (err) {
      ctx.log.warn({ err: errorMessage(err), snapshot }, "cleanup after a failed transfer failed; the next run retries it");
    }
  }

  /** Releases and destroys a snapshot this run took and could not send. */
  private async dropInFlight(ctx: RunContext, snapshot: string): Promise<void> {
    await ctx.src.zfs.release(holdTag(ctx.job.id), snapshot);
    try {
      await ctx.src.zfs.destroy(snapshot);
    } catch (err) {
      // Held by another job, or being sent by one: then it is theirs to keep.
      ctx.log.info({ err: errorMessage(err), snapshot }, "kept the in-flight snapshot");
    }
  }

  /**
   * After `to` reached the target: confirm it there by guid, mark a new target, move the
   * job's hold to `to`, record state, prune. Bookkeeping failures after the confirmation are
   * logged, not thrown: the data is replicated, and the next run redoes what is missing.
   */
  private async finish(
    ctx: RunContext,
    to: SnapshotEntry,
    action: ReplicationAction,
    bytes: number,
    started: number,
    abortedStaleToken: boolean,
  ): Promise<ReplicationResult> {
    const { job, src, tgt } = ctx;
    const target = await this.readTarget(ctx);
    if (!target.snapshots.some((s) => s.guid === to.guid)) {
      throw internal(`replication ${job.id}: ${replicaMark(job.target)} has no snapshot with guid ${to.guid} (${to.name}) after the receive`);
    }
    const mark = replicaMark(job.source);
    if (ownUserPropertyValue(target.props?.get(PROP.replicaOf)) !== mark) {
      // zfs-fuse has no `receive -o`: the mark (and readonly) follow the first receive.
      await tgt.zfs.set(job.target.dataset, { [PROP.replicaOf]: mark, readonly: "on" });
    }
    const tag = holdTag(job.id);
    await src.zfs.hold(tag, `${job.source.dataset}@${to.name}`);
    try {
      const source = await this.readSource(ctx);
      // Only now that `to` is confirmed on the target may the older bases go.
      const released = new Set<string>();
      for (const snap of source.snapshots) {
        if (snap.guid === to.guid || snap.userrefs === 0) continue;
        if (await src.zfs.release(tag, `${job.source.dataset}@${snap.name}`)) released.add(snap.guid);
      }
      await src.zfs.set(job.source.dataset, { [jobStateProperty(job.id)]: `${to.guid} ${job.id}` });
      await this.updateReplicatedThrough(src, job.source.dataset);
      // Source: our snapshots older than the base that nobody holds any more.
      for (const snap of source.snapshots) {
        const refs = snap.userrefs - (released.has(snap.guid) ? 1 : 0);
        if (!snap.name.startsWith(REPLICATION_SNAPSHOT_PREFIX) || snap.createtxg >= to.createtxg || refs > 0) continue;
        await this.pruneOne(ctx, src, `${job.source.dataset}@${snap.name}`);
      }
      // Target: the newest targetKeep of our snapshots, and always the base.
      const keep = Math.max(1, job.targetKeep ?? DEFAULT_TARGET_KEEP);
      const ours = target.snapshots.filter((s) => s.name.startsWith(REPLICATION_SNAPSHOT_PREFIX) && s.guid !== to.guid);
      const excess = ours.slice(0, Math.max(0, ours.length - (keep - 1)));
      for (const snap of excess) await this.pruneOne(ctx, tgt, `${job.target.dataset}@${snap.name}`);
    } catch (err) {
      ctx.log.warn({ err: errorMessage(err) }, "bookkeeping after a replicated snapshot failed; the next run retries it");
    }
    return {
      jobId: job.id,
      action,
      snapshot: to.name,
      guid: to.guid,
      snapshotCreatedAt: to.creation,
      bytes,
      durationMs: Math.max(0, this.clock.now().getTime() - started),
      ...(abortedStaleToken && { abortedStaleToken }),
    };
  }

  private async pruneOne(ctx: RunContext, host: PoolHost, snapshot: string): Promise<void> {
    try {
      await host.zfs.destroy(snapshot);
      ctx.log.info({ poolHost: host.config.name, snapshot }, "pruned replication snapshot");
    } catch (err) {
      ctx.log.warn({ poolHost: host.config.name, snapshot, err: errorMessage(err) }, "could not prune replication snapshot; kept");
    }
  }

  /**
   * zcsi:replicated-through on the source = guid of the newest snapshot EVERY target has: the
   * oldest of the jobs' bases (by createtxg). The snapshot scheduler prunes only automatic
   * snapshots strictly older than it (snapshots/scheduler.ts replicationGuard). A job whose base
   * no longer exists protects nothing and is skipped; with no job state left the property goes.
   */
  private async updateReplicatedThrough(src: PoolHost, dataset: string): Promise<void> {
    const [side, props] = await Promise.all([this.readSide(src, dataset, []), this.userProperties(src, dataset)]);
    const byGuid = new Map(side.snapshots.map((s) => [s.guid, s]));
    let through: Snapshot | undefined;
    for (const state of jobStates(props).values()) {
      const base = byGuid.get(state.guid);
      if (base !== undefined && (through === undefined || base.createtxg < through.createtxg)) through = base;
    }
    const current = ownUserPropertyValue(props?.get(PROP.replicatedThrough));
    if (through === undefined) {
      if (current !== undefined) await src.zfs.inherit(dataset, PROP.replicatedThrough);
      return;
    }
    if (current !== through.guid) await src.zfs.set(dataset, { [PROP.replicatedThrough]: through.guid });
  }

  // ---- reading ------------------------------------------------------------------------------

  private readSource(ctx: RunContext): Promise<Side> {
    return this.readSide(ctx.src, ctx.job.source.dataset, ctx.srcCaps.implementation === "openzfs" ? ["written", "encryption"] : []);
  }

  private readTarget(ctx: RunContext): Promise<Side> {
    const extra = [PROP.replicaOf, ...(ctx.tgtCaps.resumableSend ? ["receive_resume_token"] : []), ...(ctx.tgtCaps.implementation === "openzfs" ? ["written"] : [])];
    return this.readSide(ctx.tgt, ctx.job.target.dataset, extra);
  }

  /**
   * Every property of the dataset itself (`zfs get all`), to find the per-job `zcsi:repl.*`
   * records, whose names are not known in advance. (zfs-fuse's `all` lacks guid and createtxg,
   * so snapshots are read by readSide.) Undefined when the dataset does not exist.
   */
  private async userProperties(host: PoolHost, dataset: string): Promise<DatasetProperties | undefined> {
    return (await host.zfs.get([dataset], ["all"], { missingOk: true })).get(dataset);
  }

  /** The dataset and its snapshots in one `zfs get -Hp -d 1` (missing dataset: exists false). */
  private async readSide(host: PoolHost, dataset: string, extra: readonly string[]): Promise<Side> {
    const props = ["type", "guid", "createtxg", "creation", "userrefs", ...extra];
    const all = await host.zfs.get([dataset], props, { depth: 1, missingOk: true });
    const own = all.get(dataset);
    const snapshots: Snapshot[] = [];
    const prefix = `${dataset}@`;
    for (const [name, p] of all) {
      if (!name.startsWith(prefix)) continue;
      const guid = value(p, "guid");
      const createtxg = integer(p, "createtxg");
      if (guid === undefined || createtxg === undefined) continue;
      const written = integer(p, "written");
      snapshots.push({
        name: name.slice(prefix.length),
        guid,
        createtxg,
        creation: Number(integer(p, "creation") ?? 0n),
        userrefs: Number(integer(p, "userrefs") ?? 0n),
        ...(written !== undefined && { written }),
      });
    }
    snapshots.sort((a, b) => (a.createtxg < b.createtxg ? -1 : a.createtxg > b.createtxg ? 1 : 0));
    return { exists: own !== undefined, props: own, snapshots };
  }

  private async checkOwnership(ctx: RunContext, source: Side, target: Side): Promise<void> {
    if (!target.exists) return;
    const expected = replicaMark(ctx.job.source);
    const mark = ownUserPropertyValue(target.props?.get(PROP.replicaOf));
    if (mark === expected) return;
    if (mark === undefined && isUnmarkedReplica(source.snapshots, target.snapshots)) {
      ctx.log.info({ target: replicaMark(ctx.job.target) }, "target is an unmarked replica of this source (every snapshot ours, by guid); marking it");
      await ctx.tgt.zfs.set(ctx.job.target.dataset, { [PROP.replicaOf]: expected, readonly: "on" });
      return;
    }
    throw failedPrecondition(
      `replication target ${replicaMark(ctx.job.target)} exists and is not zcsi's replica of ${expected}` +
        `${mark === undefined ? ` (no ${PROP.replicaOf})` : ` (${PROP.replicaOf}=${mark})`}; refusing to receive into it`,
    );
  }

  // ---- validation ---------------------------------------------------------------------------

  private validate(job: ReplicationJob): void {
    if (typeof job.id !== "string" || !JOB_ID.test(job.id)) {
      throw invalidArgument(`invalid replication job id ${JSON.stringify(job.id)}: 1-128 of A-Z a-z 0-9 . _ -`);
    }
    validateDataset(job.source.dataset);
    validateDataset(job.target.dataset);
    const src = this.hosts.get(job.source.host);
    const tgt = this.hosts.get(job.target.host);
    this.checkBelowParent(src, job.source.dataset, "source");
    this.checkBelowParent(tgt, job.target.dataset, "target");
    if (job.source.host === job.target.host) {
      const [a, b] = [job.source.dataset, job.target.dataset];
      if (a === b || isBelow(a, b) || isBelow(b, a)) throw invalidArgument(`replication job ${job.id}: source ${a} and target ${b} overlap on ${job.source.host}`);
    }
    if (job.bandwidthBytesPerSec !== undefined && !(Number.isFinite(job.bandwidthBytesPerSec) && job.bandwidthBytesPerSec > 0)) {
      throw invalidArgument(`replication job ${job.id}: bandwidthBytesPerSec must be a positive number, got ${job.bandwidthBytesPerSec}`);
    }
    if (job.targetKeep !== undefined && !(Number.isSafeInteger(job.targetKeep) && job.targetKeep >= 1)) {
      throw invalidArgument(`replication job ${job.id}: targetKeep must be an integer >= 1, got ${job.targetKeep}`);
    }
  }

  /** zcsi touches only datasets below a configured parentDataset (ARCHITECTURE: standards). */
  private checkBelowParent(host: PoolHost, dataset: string, what: string): void {
    const parent = host.config.parentDataset;
    if (!isBelow(parent, dataset)) {
      throw invalidArgument(`replication ${what} ${host.config.name}:${dataset} is not below the host's parentDataset ${parent}`);
    }
  }
}

/**
 * The per-job base records on a source dataset: property → state. Each is a local
 * `zcsi:repl.<job>` = `<base guid> <job id>` (the exact id: the property name is lowercased).
 */
function jobStates(props: DatasetProperties | undefined): Map<string, { jobId: string; guid: string }> {
  const states = new Map<string, { jobId: string; guid: string }>();
  for (const [name, entry] of props ?? []) {
    if (!name.startsWith(JOB_STATE_PREFIX)) continue;
    const m = /^([0-9]+) ([A-Za-z0-9._-]+)$/.exec(ownUserPropertyValue(entry) ?? "");
    if (m === null) continue;
    states.set(name, { guid: m[1] as string, jobId: m[2] as string });
  }
  return states;
}

/** The engine the replicator role uses. */
export function createReplicationEngine(hosts: PoolHosts, options: ReplicationEngineOptions = {}): ReplicationEngine {
  return new ZfsReplicationEngine(hosts, options);
}
