import { aborted, errorMessage, failedPrecondition, internal, invalidArgument, isZcsiError, notFound } from "../errors.js";
import { silentLogger, type Logger } from "../log.js";
import { systemClock, type Clock } from "../util/clock.js";
import { KeyedLocks } from "../util/locks.js";
import { VolumeHomes, type FenceListener } from "../volumes/homes.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { hasReason } from "../zfs/errors.js";
import { validateDataset } from "../zfs/names.js";
import { formatJobState, holdsToRelease, holdTag, jobStateProperty, needsHold, replicaMark } from "./bookkeeping.js";
import { statesAfter, targetPrune, type JobState } from "./bookkeeping.js";
import { describeDivergence, plan, type SnapshotEntry } from "./plan.js";
import { followRollback } from "./follow.js";
import { applyReplicatedThrough, releaseJobHolds } from "./holds.js";
import { checkOwnership, ensureTargetParent, jobStates, lookupHome, withReceived, planInput, planRun, readSide, requireHomeSource, siblingBases, takeSnapshot, userProperties, value, type Side } from "./sides.js";
import { isMarkedReplica, replicaProperties, ROLE_PROPS, sideRole } from "./roles.js";
import { abortStaleReceive, incrementChain, transfer, type TransferContext, type TransferWhat } from "./transfer.js";
import type { DatasetRef, ReplicationAction, ReplicationEngine, ReplicationJob, ReplicationResult } from "./types.js";
import { checkHoldSource, JOB_ID, validateJob } from "./validate.js";
import { sourcePruneOfCopy } from "./jobs.js";
export { holdTag, jobStateProperty, JOB_STATE_PREFIX, replicaMark, replicationSnapshotName } from "./bookkeeping.js";

/**
 * The replication engine: one run of one job (types.ts), over the pool hosts' executors.
 *
 * A run, in order:
 *  1. read both sides in one `zfs get -d 1` each, and the volume's copies, side by side (guid/
 *     createtxg/creation/userrefs of snapshots; the target's zcsi:replica-of, on OpenZFS its
 *     receive_resume_token and `written`);
 *  2. refuse a target that exists and is not zcsi's replica of this source, and a source that
 *     is not the volume's home (a replica, fenced or stale copy: sides.requireHomeSource)
 *     (FailedPrecondition);
 *  3. if the target holds an interrupted resumable receive, finish it (`send -t`); a token the
 *     source no longer accepts is dropped (`recv -A`) and the run goes on afresh;
 *  4. plan on the current lists: divergence is refused BEFORE anything is created;
 *  5. snapshot the source `@zcsi-repl-<UTC time>` and hold it (tag `zcsi-repl-<jobId>`);
 *  6. send (full, or `-i` from the newest common snapshot, through the other jobs' bases on
 *     the way) into `receive -u [-s]`;
 *  7. the new snapshot is on the target (the receive exited 0), then release the job's older
 *     holds, record the job's base and zcsi:replicated-through, and prune the replicator's
 *     own old snapshots on both sides (the other jobs' bases stay): commands side by side.
 *
 * Only `-i` (not `-I`): the target gets the replicator's snapshots only (its own and its
 * siblings' bases: after a move one replica continues another), kept `targetKeep` deep.
 *
 * THE `-F` RULE: this engine never receives with `-F` (zfs-receive(8): roll the target back to
 * its newest snapshot, destroying later snapshots and writes). A target that diverged is
 * refused and reported; the operator decides what to destroy. The one exception is an
 * operator's `zcsi rollback` of the source, which the targets follow once (follow.ts). Where writes matter for the
 * receive, the target is kept `readonly=on` (set at the first receive) so that merely mounting
 * and reading it (atime) does not count as a modification: zfs-fuse refuses an incremental
 * receive after a read of a read-write target ("has been modified since most recent snapshot").
 *
 * Ownership: the first (full) receive creates the target and marks it `zcsi:replica-of =
 * <source host>:<source dataset>` (with `receive -o` on OpenZFS, so even an interrupted first
 * receive carries it; by a `zfs set` right after on zfs-fuse), together with the volume's
 * identity, `zcsi:role=replica` and the source's epoch (replication/roles.ts). Any other
 * existing target is refused, except one provably made by this replicator from this source
 * (plan.isUnmarkedReplica), which is marked and used; a replica of another copy of the volume
 * is continued (roles.isRepointableReplica). Holds, pruning (a moved home keeps its received
 * snapshots: jobs.unstartedTargets) and zcsi:replicated-through: bookkeeping.ts; the bytes
 * move in transfer.ts; the sides are read and prepared in sides.ts. This file orchestrates.
 */

export interface ReplicationEngineOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Injected for tests of the limiter; defaults to setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Told of each stale copy a run's home lookup fences (roles turn it into a PV Event). */
  readonly onFence?: FenceListener;
}

type RunContext = TransferContext;

/** How a run reached the snapshot it finishes with. */
interface Arrival {
  readonly to: SnapshotEntry;
  readonly action: ReplicationAction;
  readonly bytes: number;
  /** This run held `to` before sending it: finish() does not hold it again. */
  readonly heldByThisRun: boolean;
  /** The target as it is now, `to` on it, when the run knows it without a read (a receive that exited 0). */
  readonly targetNow?: Side | undefined;
  /**
   * The source as read after this run's snapshot was taken (and held): finish() reads only the
   * records again. A snapshot another job takes meanwhile is newer than `to`, so neither the
   * releases, the prunes nor zcsi:replicated-through (the oldest base) miss it.
   */
  readonly sourceNow?: Side | undefined;
}

export class ZfsReplicationEngine implements ReplicationEngine {
  private readonly locks = new KeyedLocks();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly sleep: ((ms: number) => Promise<void>) | undefined;
  private readonly homes: VolumeHomes;

  constructor(
    private readonly hosts: PoolHosts,
    options: ReplicationEngineOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.sleep = options.sleep;
    this.homes = new VolumeHomes(hosts, this.logger, options.onFence);
  }

  async replicate(job: ReplicationJob, signal?: AbortSignal): Promise<ReplicationResult> {
    validateJob(job, this.hosts);
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
    checkHoldSource(src, source.dataset);
    if (jobId === undefined) return releaseJobHolds(src, source, undefined, this.logger);
    return this.locks.run(jobId, "release-holds", () => releaseJobHolds(src, source, jobId, this.logger));
  }

  // ---- one run ------------------------------------------------------------------------------

  private async run(ctx: RunContext, started: number): Promise<ReplicationResult> {
    const { job } = ctx;
    // The two sides and the volume's home in one round of commands, side by side: what is
    // judged on them, and in what order, does not change with when they were read.
    let [source, target, home] = await Promise.all([this.readSource(ctx), this.readTarget(ctx), lookupHome(ctx, this.homes) /* never rejects */]);
    if (!source.exists) throw notFound(`replication source ${replicaMark(job.source)} does not exist`);
    await checkOwnership(ctx, source, target);
    requireHomeSource(ctx, home, source, target);
    const finish = (arrival: Arrival, abortedStaleToken: boolean): Promise<ReplicationResult> => this.finish(ctx, arrival, started, abortedStaleToken);

    let abortedStaleToken = false;
    const token = value(target.props, "receive_resume_token");
    if (token !== undefined) {
      try {
        return finish(await this.resume(ctx, token), false);
      } catch (err) {
        if (!hasReason(err, "staleResumeToken")) throw err;
        await abortStaleReceive(ctx, err);
        abortedStaleToken = true;
        [source, target] = await Promise.all([this.readSource(ctx), this.readTarget(ctx)]);
      }
    }

    // An operator's rollback of the source, once per request (follow.ts): the one rollback of a target.
    if (await followRollback(ctx, source, target)) target = await this.readTarget(ctx);

    // Refuse a diverged target before creating anything on the source (`written` alone: the receive decides, see planRun).
    const { plan: before, ignoreWritten } = planRun(source, target);
    if (before.kind === "refuse") throw failedPrecondition(describeDivergence(replicaMark(job.target), before.divergence));
    if (ignoreWritten) ctx.log.info({ written: String(value(target.props, "written")) }, "the target's head moved past its newest snapshot; the receive decides whether it was modified");

    const snapshot = await takeSnapshot(ctx, target, this.clock.now());
    // Where the new snapshot's `written` can tell that nothing changed (OpenZFS), it is read
    // before the hold, so that an idle run drops it unheld; elsewhere the hold and the read go
    // side by side (one round of commands less per run).
    const holdNow = before.kind !== "none" || ctx.srcCaps.implementation !== "openzfs";
    source = await this.readTaken(ctx, snapshot, holdNow);
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
      await this.dropInFlight(ctx, snapshot, holdNow);
      return finish({ to: before.snapshot, action: "none", bytes: 0, heldByThisRun: false, targetNow: target, sourceNow: { ...source, snapshots: source.snapshots.filter((s) => s !== taken) } }, abortedStaleToken);
    }
    if (!holdNow) await ctx.src.zfs.hold(holdTag(job.id), snapshot);
    const next = plan(planInput(source, target, { ignoreWritten }));
    switch (next.kind) {
      case "none":
        return finish({ to: next.snapshot, action: "none", bytes: 0, heldByThisRun: `${job.source.dataset}@${next.snapshot.name}` === snapshot, targetNow: target, sourceNow: source }, abortedStaleToken);
      case "refuse":
        await this.dropInFlight(ctx, snapshot);
        throw failedPrecondition(describeDivergence(replicaMark(job.target), next.divergence));
      case "resume":
      case "no-source-snapshot":
        throw internal(`replication ${job.id}: unexpected plan ${next.kind} after taking ${snapshot}`);
      case "full":
      case "incremental": {
        const to = next.kind === "full" ? next.snapshot : next.to;
        const heldByThisRun = `${job.source.dataset}@${to.name}` === snapshot;
        const hops = next.kind === "full" ? [to] : [...(next.via ?? []), to];
        if (next.kind === "full") await ensureTargetParent(ctx);
        let bytes: number;
        try {
          bytes = next.kind === "full" ? await this.send(ctx, source, { kind: "full", to }) : await incrementChain(next.from, hops, (what) => this.send(ctx, source, what));
        } catch (err) {
          const after = await this.readTarget(ctx).catch(() => undefined);
          if (after?.snapshots.some((s) => s.guid === to.guid) === true) {
            // The receive finished and the snapshot is on the target: `zfs receive` checks the
            // stream's checksum at its end record, so a cut stream cannot pass for whole. What
            // failed came after the last byte (e.g. the send was killed as it exited).
            ctx.log.warn({ err: errorMessage(err), snapshot }, "transfer reported a failure after the receive completed; the snapshot is on the target");
            return finish({ to, action: next.kind, bytes: 0, heldByThisRun, targetNow: after, sourceNow: source }, abortedStaleToken);
          }
          await this.afterFailedTransfer(ctx, snapshot);
          if (hasReason(err, "targetModified")) {
            throw failedPrecondition(
              `${replicaMark(job.target)} was written after its newest snapshot; replication refuses to roll the writes back ` +
                `(roll it back by hand to continue): ${errorMessage(err)}`,
              { cause: err },
            );
          }
          throw err;
        }
        // `zfs receive` exited 0 for each hop: each snapshot is on the target with its guid (the
        // receive checks the stream's checksum at its end record), so that needs no read to confirm.
        return finish({ to, action: next.kind, bytes, heldByThisRun, targetNow: withReceived(target, hops), sourceNow: source }, abortedStaleToken);
      }
    }
  }

  private async resume(ctx: RunContext, token: string): Promise<Arrival> {
    const { job } = ctx;
    ctx.log.info({ action: "resume" }, "resuming an interrupted receive");
    const bytes = await this.send(ctx, await this.readSource(ctx), { kind: "resume", token });
    const after = await this.readTarget(ctx);
    const newest = after.snapshots[after.snapshots.length - 1];
    const fresh = await this.readSource(ctx);
    const to = newest === undefined ? undefined : fresh.snapshots.find((s) => s.guid === newest.guid);
    if (to === undefined) throw internal(`replication ${job.id}: resumed receive into ${replicaMark(job.target)} left no snapshot the source has`);
    // The interrupted run held `to` before sending it; its record still names the older base,
    // so finish() holds it (again, harmlessly) unless the record says otherwise.
    return { to, action: "resume", bytes, heldByThisRun: false };
  }

  private send(ctx: RunContext, source: Side, what: TransferWhat): Promise<number> {
    return transfer(ctx, what, { clock: this.clock, sleep: this.sleep, sourceEncryption: value(source.props, "encryption"), replicaProps: replicaProperties(ctx.job, source.props) });
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

  /**
   * The source after this run's snapshot, read while (holdNow) the job's hold is placed on it.
   * Either failing leaves the snapshot neither held nor kept: a held one that no record names
   * would pass for another job's base.
   */
  private async readTaken(ctx: RunContext, snapshot: string, holdNow: boolean): Promise<Side> {
    // The one hold of the new snapshot: placed before it is sent, kept as the job's base.
    const [read, held] = await Promise.allSettled([this.readSource(ctx), holdNow ? ctx.src.zfs.hold(holdTag(ctx.job.id), snapshot) : undefined]);
    if (read.status === "fulfilled" && held.status === "fulfilled") return read.value;
    await this.dropInFlight(ctx, snapshot, holdNow /* a failed hold may still have been placed */).catch((err: unknown) => ctx.log.warn({ err: errorMessage(err), snapshot }, "could not drop the run's snapshot; the next run prunes it"));
    throw read.status === "rejected" ? read.reason : (held as PromiseRejectedResult).reason;
  }

  /** Releases (when this run held it) and destroys a snapshot this run took and could not send. */
  private async dropInFlight(ctx: RunContext, snapshot: string, held = true): Promise<void> {
    if (held) await ctx.src.zfs.release(holdTag(ctx.job.id), snapshot);
    try {
      await ctx.src.zfs.destroy(snapshot);
    } catch (err) {
      // Held by another job, or being sent by one: then it is theirs to keep.
      ctx.log.info({ err: errorMessage(err), snapshot }, "kept the in-flight snapshot");
    }
  }

  /**
   * After `to` reached the target: confirm it there by guid, mark a new target, move the
   * job's hold to `to`, record state, prune (what moves and goes: bookkeeping.ts). Bookkeeping
   * failures after the confirmation are logged, not thrown: the data is replicated, and the
   * next run redoes what is missing.
   */
  private async finish(ctx: RunContext, arrival: Arrival, started: number, abortedStaleToken: boolean): Promise<ReplicationResult> {
    const { job, src, tgt } = ctx;
    const { to, action, bytes } = arrival;
    const target = arrival.targetNow ?? (await this.readTarget(ctx));
    if (!target.snapshots.some((s) => s.guid === to.guid)) {
      throw internal(`replication ${job.id}: ${replicaMark(job.target)} has no snapshot with guid ${to.guid} (${to.name}) after the receive`);
    }
    const tag = holdTag(job.id);
    const property = jobStateProperty(job.id);
    const state: JobState = { guid: to.guid, jobId: job.id };
    // The records (`zfs get all`) are read fresh: other jobs of this source record theirs meanwhile.
    const recordsRead = userProperties(src, job.source.dataset);
    const source = arrival.sourceNow ?? (await this.readSource(ctx));
    const bases = siblingBases(source);
    // Only once `to` is confirmed on the target and held may the older bases go; the record of the new base goes beside them.
    const releaseAndRecord = async (recorded?: JobState): Promise<Set<string>> => {
      const [names] = await Promise.all([
        Promise.all(holdsToRelease(source.snapshots, to).map(async (name): Promise<string[]> => ((await src.zfs.release(tag, `${job.source.dataset}@${name}`)) ? [name] : []))),
        recorded?.guid === to.guid && recorded.jobId === job.id ? undefined : src.zfs.set(job.source.dataset, { [property]: formatJobState(state) }),
      ]);
      return new Set(names.flat());
    };
    // This run held `to` before sending it: the releases need not wait for anything else.
    const early = arrival.heldByThisRun ? releaseAndRecord() : undefined;
    early?.catch(() => undefined); // awaited below
    // zfs-fuse has no `receive -o`: the marks follow the first receive; a new home re-marks its replicas at their next one.
    const marks = replicaProperties(job, source.props);
    const [props] = await Promise.all([
      recordsRead,
      isMarkedReplica(target.props, marks) ? undefined : tgt.zfs.set(job.target.dataset, marks),
      !arrival.heldByThisRun &&
        recordsRead.then(async (records) => {
          if (needsHold({ to, heldByThisRun: false, recorded: jobStates(records).get(property), source: source.snapshots })) await src.zfs.hold(tag, `${job.source.dataset}@${to.name}`);
        }),
    ]);
    const states = jobStates(props);
    try {
      const released = await (early ?? releaseAndRecord(states.get(property)));
      const siblings = new Set(source.snapshots.filter((s) => !released.has(s.name) && s.guid !== to.guid).map((s) => s.guid).filter((g) => bases.has(g)));
      await Promise.all([
        applyReplicatedThrough(src, job.source.dataset, source, statesAfter(states, { set: [property, state] }), props),
        ...sourcePruneOfCopy(job, source.snapshots, to, released, props, this.hosts.configs, new Set([...states.keys(), property])).map((name) => this.pruneOne(ctx, src, `${job.source.dataset}@${name}`)),
        ...targetPrune(target.snapshots, to, job.targetKeep, siblings /* the other jobs' bases stay */).map((name) => this.pruneOne(ctx, tgt, `${job.target.dataset}@${name}`)),
      ]);
    } catch (err) {
      ctx.log.warn({ err: errorMessage(err) }, "bookkeeping after a replicated snapshot failed; the next run retries it");
    }
    return {
      jobId: job.id,
      action,
      snapshot: to.name,
      guid: to.guid,
      snapshotCreatedAt: to.creation,
      epoch: sideRole(source.props).epoch,
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

  private readSource(ctx: RunContext): Promise<Side> {
    return readSide(ctx.src, ctx.job.source.dataset, [...ROLE_PROPS, ...(ctx.srcCaps.implementation === "openzfs" ? ["written", "encryption"] : [])]);
  }

  private readTarget(ctx: RunContext): Promise<Side> {
    const extra = [...ROLE_PROPS, "readonly", ...(ctx.tgtCaps.resumableSend ? ["receive_resume_token"] : []), ...(ctx.tgtCaps.implementation === "openzfs" ? ["written"] : [])];
    return readSide(ctx.tgt, ctx.job.target.dataset, extra);
  }
}

/** The engine the replicator role uses. */
export function createReplicationEngine(hosts: PoolHosts, options: ReplicationEngineOptions = {}): ReplicationEngine {
  return new ZfsReplicationEngine(hosts, options);
}
