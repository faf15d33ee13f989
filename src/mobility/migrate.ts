import { errorMessage, failedPrecondition, invalidArgument, isZcsiError, notFound } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import type { PvAnnotator } from "../k8s/pv.js";
import type { VolumeWorkloads } from "../k8s/workloads.js";
import type { Logger } from "../log.js";
import { replicationJobId } from "../replication/jobs.js";
import type { ReplicationEngine, ReplicationJob } from "../replication/types.js";
import type { Clock } from "../util/clock.js";
import { copyName, type Copy } from "../volumes/home.js";
import type { VolumeCopies, VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { parseMoving } from "../volumes/moving.js";
import { lastMoveProperty, type MoveOutcome } from "../volumes/moves.js";
import { PROP } from "../volumes/properties.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import { blockAttaches, releaseAttaches, restartPods, waitDetached, type DetachContext } from "./detach.js";
import { annotateHome } from "./promote.js";
import { caughtUp, downtimeMs, reached, replicateToAfterMove, type CopyRef, type MigrateLock, type MigrateLocks, type MoveRecord, type MoveStep, type Promotions } from "./steps.js";

/**
 * `zcsi migrate VOLUME --to HOST`: a planned move with seconds of downtime (issue 14, item 3).
 *
 *  1. catch up: replicate home → target (seeding a replica there if there is none), again and
 *     again while the volume is in use, until an increment is small (or rounds run out);
 *  2. block new attaches (zcsi:moving on the home; ControllerPublishVolume answers UNAVAILABLE);
 *  3. restart the pods that use it and wait until no node has it (detach.ts);
 *  4. the final increment (a last replication run: snapshot, send; nothing writes any more);
 *  5. promote the target (epoch + 1): from here on the target is the home (it carries the
 *     block too, set just before, so attaches wait for step 6);
 *  6. demote the old home to a replica of the new one, and turn replication around
 *     (zcsi:replicate-to on the new home names the old one; the old one's is cleared);
 *  7. release the block; report the downtime (2 → 7) and the final increment's bytes.
 *
 * Every step is recorded in the move lock's record once done (steps.ts), and every step is safe
 * to repeat, so a rerun after a kill finishes the move. Before step 5 a move can be undone
 * (`abort`: the block goes, nothing else changed); from step 5 on it can only be finished. At no
 * point are there two live primaries (the promotion raises the epoch, which makes the old home
 * stale at once) or none (the old home is primary until the target is promoted).
 */

export interface MigrateOptions {
  /** Stop catching up once an increment is at most this many bytes. Default 64 MiB. */
  readonly maxFinalDeltaBytes?: number;
  /** At most this many catch-up runs. Default 5. */
  readonly maxCatchUpRounds?: number;
  /** How long to wait for every node to let go. Default 10 minutes. */
  readonly detachTimeoutMs?: number;
  readonly pollMs?: number;
}

export interface MigrateResult {
  readonly volumeId: string;
  readonly from: string;
  readonly to: string;
  readonly epoch?: number;
  /** Attaches blocked → released, ms; undefined when a rerun could not tell when the block began. */
  readonly downtimeMs?: number;
  readonly finalBytes?: number;
  /** Pods deleted so that they re-attach to the new home. */
  readonly restartedPods: readonly string[];
  /** This run finished a move an earlier run had started. */
  readonly resumed: boolean;
}

export interface MigratorDeps {
  readonly hosts: PoolHosts;
  readonly homes: VolumeHomes;
  readonly engine: ReplicationEngine;
  readonly locks: MigrateLocks;
  readonly promotions: Promotions;
  readonly workloads?: VolumeWorkloads;
  /** The CSI driver name (config.driverName): the attacher of the PV's VolumeAttachments. */
  readonly driverName: string;
  readonly events?: EventRecorder;
  /** `zcsi.dev/home` on the PV once the move is done. */
  readonly pvs?: PvAnnotator;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Called after each step is recorded; tests throw from it to stand for a killed CLI. */
  readonly afterStep?: (step: MoveStep, record: MoveRecord) => Promise<void>;
}

const DEFAULTS = { maxFinalDeltaBytes: 64 * 1024 * 1024, maxCatchUpRounds: 5, detachTimeoutMs: 10 * 60_000, pollMs: 1000 };

export class Migrator {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly deps: MigratorDeps) {
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  async migrate(volumeId: string, targetHost: string, options: MigrateOptions = {}): Promise<MigrateResult> {
    const { hosts, homes, logger } = this.deps;
    const target = hosts.get(targetHost); // InvalidArgument: not a configured pool host
    const copies = await homes.find(volumeId, "migrate"); // NotFound: not a volume id
    if (copies.live.length + copies.stale.length + copies.replicas.length === 0 && copies.unknown.length === 0 && copies.problems.length === 0) {
      throw notFound(`volume ${volumeId} does not exist on any pool host`);
    }
    const lock = ended(await this.deps.locks.acquire(volumeId, "migrate"));
    let saved = false;
    try {
      let record = lock.record;
      const home = copies.home;
      if (record !== undefined && record.to.host !== targetHost && !reached(record, "promoted")) {
        throw failedPrecondition(`volume ${volumeId} has an unfinished move to ${record.to.host} (done: ${record.step}); rerun zcsi migrate ${volumeId} --to ${record.to.host} to finish it, or --abort to undo it`);
      }
      if (record === undefined) {
        if (home === undefined) throw failedPrecondition(`volume ${volumeId} has no home to move from: ${copies.problems.join("; ") || "no copy found"}`);
        const moving = home.moving !== undefined ? parseMoving(home.moving) : undefined;
        if (moving !== undefined && moving.target !== targetHost) throw failedPrecondition(`volume ${volumeId} is being moved to ${moving.target} (${PROP.moving} on ${copyName(home)}); finish that move or undo it with --abort`);
        if (home.host === targetHost) throw invalidArgument(`volume ${volumeId} already lives on ${targetHost} (${copyName(home)}, epoch ${home.epoch}); nothing to move`);
        record = { op: "migrate", volumeId, from: ref(home), to: { host: targetHost, dataset: `${target.config.parentDataset}/${leafOf(home)}` }, step: "started", ...(moving?.since !== undefined && { blockedAt: moving.since }) };
        saved = true;
        await this.save(lock, record);
      } else if (reached(record, "promoted") && record.to.host !== targetHost) {
        throw failedPrecondition(`volume ${volumeId} was moved to ${record.to.host} by a run that did not finish; rerun zcsi migrate ${volumeId} --to ${record.to.host} to finish it`);
      }
      const resumed = lock.record !== undefined;
      if (resumed) logger.info({ op: "migrate", volumeId, from: copyName(record.from), to: copyName(record.to), done: record.step }, "resuming an interrupted move");
      const result = await this.run(lock, record, copies, options, resumed);
      await lock.release();
      return result;
    } catch (err) {
      // A refusal before this run recorded anything leaves nothing behind, the lock included.
      if (!saved && lock.record === undefined) await lock.release().catch(() => undefined);
      else await lock.leave().catch(() => undefined);
      logger.warn({ op: "migrate", volumeId, to: targetHost, err: errorMessage(err), kind: isZcsiError(err) ? err.kind : "Internal" }, "migrate failed; rerun to finish or --abort to undo");
      throw err;
    }
  }

  /** Undoes a move that has not promoted yet: the block goes, the lock and its record go; the replica made stays (it is a replica). */
  async abort(volumeId: string): Promise<{ readonly undone: boolean; readonly to?: string }> {
    const { hosts, homes, logger } = this.deps;
    const copies = await homes.find(volumeId, "migrate-abort");
    const lock = await this.deps.locks.acquire(volumeId, "migrate-abort");
    const record = lock.record;
    if (reached(record, "promoted")) {
      await lock.leave();
      throw failedPrecondition(`volume ${volumeId}: the move to ${record?.to.host} promoted its target already; it can only be finished (zcsi migrate ${volumeId} --to ${record?.to.host})`);
    }
    const home = copies.home;
    const blocked = [...copies.live, ...copies.replicas].filter((c) => c.moving !== undefined);
    await releaseAttaches(
      blocked.map((c) => ({ host: hosts.get(c.host), copy: ref(c) })),
      logger,
      volumeId,
    );
    await lock.release();
    const to = record?.to.host ?? (home?.moving !== undefined ? parseMoving(home.moving).target : undefined);
    if (home !== undefined && (record !== undefined || blocked.length > 0)) {
      await this.recordEnd(ref(home), { kind: "migrate", outcome: "undone", at: this.deps.clock.now().toISOString(), from: home.host, ...(to !== undefined && { to }) });
    }
    logger.info({ op: "migrate-abort", volumeId, to, unblocked: blocked.map(copyName) }, record === undefined && blocked.length === 0 ? "no move to undo" : "move undone; attaches released");
    return { undone: record !== undefined || blocked.length > 0, ...(to !== undefined && { to }) };
  }

  private async run(lock: MigrateLock, start: MoveRecord, copies: VolumeCopies, options: MigrateOptions, resumed: boolean): Promise<MigrateResult> {
    const { hosts, logger, clock } = this.deps;
    const o = { ...DEFAULTS, ...options };
    const { volumeId, from, to } = start;
    const src = hosts.get(from.host);
    const tgt = hosts.get(to.host);
    let record = start;
    const step = async (name: MoveStep, extra: Partial<MoveRecord> = {}): Promise<void> => {
      record = { ...record, ...extra, step: name };
      await this.save(lock, record);
    };
    const job = await this.job(volumeId, from, to);
    const pvName = await this.pvName(from, to);
    const detach: DetachContext = { volumeId, pvName, workloads: this.deps.workloads, driverName: this.deps.driverName, clock, logger, sleep: this.sleep, pollMs: o.pollMs, timeoutMs: o.detachTimeoutMs };
    let restartedPods: string[] = [];

    if (!reached(record, "caught-up")) {
      for (let round = 1; ; round++) {
        const r = await this.deps.engine.replicate(job);
        logger.info({ op: "migrate", volumeId, to: copyName(to), round, action: r.action, bytes: r.bytes, durationMs: r.durationMs }, "catch-up run done");
        if (caughtUp(r.bytes, round, { maxFinalDeltaBytes: o.maxFinalDeltaBytes, maxRounds: o.maxCatchUpRounds })) break;
      }
      await step("caught-up");
    }
    if (!reached(record, "blocked")) {
      // A rerun keeps the block an earlier run set, and its start time.
      const already = copies.home?.moving !== undefined ? parseMoving(copies.home.moving) : undefined;
      const blockedAt = already?.target === to.host && already.since !== undefined ? already.since : clock.now().toISOString();
      if (already === undefined) await blockAttaches(src, from, to.host, new Date(blockedAt));
      logger.info({ op: "migrate", volumeId, from: copyName(from), to: copyName(to), blockedAt }, "attaches blocked");
      await step("blocked", { blockedAt });
    }
    if (!reached(record, "detached")) {
      restartedPods = await restartPods(detach);
      try {
        await waitDetached(src, from, detach);
      } catch (err) {
        // Nothing promoted: undo, so the pods come back on the old home rather than wait.
        await releaseAttaches([{ host: src, copy: from }], logger, volumeId);
        await lock.release();
        await this.recordEnd(from, { kind: "migrate", outcome: "undone", at: clock.now().toISOString(), from: from.host, to: to.host });
        throw failedPrecondition(`${errorMessage(err)}; the move is undone (attaches released, ${copyName(from)} is still the home)`, { cause: err });
      }
      logger.info({ op: "migrate", volumeId, pods: restartedPods }, "no node has the volume any more");
      await step("detached");
    }
    if (!reached(record, "final-sent")) {
      const r = await this.deps.engine.replicate(job);
      logger.info({ op: "migrate", volumeId, to: copyName(to), action: r.action, bytes: r.bytes, snapshot: r.snapshot }, "final increment sent");
      await step("final-sent", { finalBytes: r.bytes });
    }
    let epoch: number | undefined;
    if (!reached(record, "promoted")) {
      // The block moves with the home: set on the target before it is promoted, it holds the
      // attaches until the demotion is done too (release clears both).
      await blockAttaches(tgt, to, to.host, new Date(record.blockedAt ?? clock.now().toISOString()));
      const now = await this.deps.homes.find(volumeId, "migrate");
      if (now.home !== undefined && now.home.host === to.host) epoch = now.home.epoch; // promoted by the killed run before it could record it
      else epoch = (await this.deps.promotions.promote(volumeId, to)).epoch;
      logger.info({ op: "migrate", volumeId, poolHost: to.host, dataset: to.dataset, epoch }, "target promoted: it is the home now");
      await step("promoted");
    }
    if (!reached(record, "demoted")) {
      await this.deps.promotions.demote(volumeId, from, to);
      await this.turnReplication(from, to);
      await step("demoted");
    }
    await releaseAttaches(
      [
        { host: src, copy: from },
        { host: tgt, copy: to },
      ],
      logger,
      volumeId,
    );
    const downtime = downtimeMs(record.blockedAt, clock.now());
    await step("done");
    if (epoch === undefined) epoch = (await this.deps.homes.find(volumeId, "migrate")).home?.epoch;
    await this.recordEnd(to, {
      kind: "migrate",
      outcome: "done",
      at: clock.now().toISOString(),
      from: from.host,
      to: to.host,
      ...(epoch !== undefined && { epoch }),
      ...(downtime !== undefined && { downtimeSeconds: downtime / 1000 }),
    });
    const result: MigrateResult = {
      volumeId,
      from: copyName(from),
      to: copyName(to),
      ...(epoch !== undefined && { epoch }),
      ...(downtime !== undefined && { downtimeMs: downtime }),
      ...(record.finalBytes !== undefined && { finalBytes: record.finalBytes }),
      restartedPods,
      resumed,
    };
    logger.info({ op: "migrate", volumeId, from: result.from, to: result.to, epoch, downtimeMs: downtime, finalBytes: record.finalBytes, pods: restartedPods, resumed }, "volume moved");
    if (pvName !== undefined) {
      await annotateHome(this.deps.pvs, pvName, to, epoch, logger);
      await this.deps.events?.record({
        pvName,
        type: "Normal",
        reason: "VolumeMigrated",
        message: `moved from ${result.from} to ${result.to} (epoch ${epoch ?? "?"}); downtime ${downtime === undefined ? "unknown" : `${(downtime / 1000).toFixed(1)} s`}, final increment ${record.finalBytes ?? "?"} bytes`,
      });
    }
    return result;
  }

  /** zcsi:last-move on the copy the move ended on (the replicator counts it); a report, never a failure of the move. */
  private async recordEnd(copy: CopyRef, outcome: MoveOutcome): Promise<void> {
    try {
      await this.deps.hosts.get(copy.host).zfs.set(copy.dataset, lastMoveProperty(outcome));
    } catch (err) {
      this.deps.logger.warn({ op: "migrate", poolHost: copy.host, dataset: copy.dataset, err: errorMessage(err) }, "could not record the move's end on the copy; the move metrics miss it");
    }
  }

  private async save(lock: MigrateLock, record: MoveRecord): Promise<void> {
    await lock.save(record);
    await this.deps.afterStep?.(record.step, record);
  }

  /** The replicator's job for this pair (same id: its holds and records are shared, not doubled). */
  private async job(volumeId: string, from: CopyRef, to: CopyRef): Promise<ReplicationJob> {
    return { id: replicationJobId(from, to, `${leafOf(from)}.${to.host}`), origin: { kind: "volume", volumeId }, source: from, target: to };
  }

  /** zcsi:pv, else the CSI name (the external-provisioner names PVs so), from whichever copy has it. */
  private async pvName(...copies: CopyRef[]): Promise<string | undefined> {
    for (const c of copies) {
      try {
        const props = (await this.deps.hosts.get(c.host).zfs.get([c.dataset], [PROP.pv, PROP.csiName], { missingOk: true })).get(c.dataset);
        const name = ownUserPropertyValue(props?.get(PROP.pv)) ?? ownUserPropertyValue(props?.get(PROP.csiName));
        if (name !== undefined) return name;
      } catch (err) {
        this.deps.logger.debug({ op: "migrate", poolHost: c.host, err: errorMessage(err) }, "could not read the PV name from this copy");
      }
    }
    return undefined;
  }

  /** Replication runs the other way: the new home replicates to the old one (and to the others it had). */
  private async turnReplication(from: CopyRef, to: CopyRef): Promise<void> {
    const src = this.deps.hosts.get(from.host);
    const tgt = this.deps.hosts.get(to.host);
    const old = (await src.zfs.get([from.dataset], [PROP.replicateTo], { missingOk: true })).get(from.dataset);
    const now = (await tgt.zfs.get([to.dataset], [PROP.replicateTo], { missingOk: true })).get(to.dataset);
    const list = replicateToAfterMove(ownUserPropertyValue(old?.get(PROP.replicateTo)) ?? ownUserPropertyValue(now?.get(PROP.replicateTo)), from.host, to.host);
    await tgt.zfs.set(to.dataset, { [PROP.replicateTo]: list });
    // A replica must not replicate itself onward: the old home's own list goes.
    if (ownUserPropertyValue(old?.get(PROP.replicateTo)) !== undefined) await src.zfs.inherit(from.dataset, PROP.replicateTo);
    this.deps.logger.info({ op: "migrate", dataset: to.dataset, poolHost: to.host, replicateTo: list }, "replication turned around");
  }
}

/** After release(), leave() is a no-op: a step that ended the move (undone) has let go already. */
function ended(lock: MigrateLock): MigrateLock {
  let done = false;
  return {
    record: lock.record,
    save: (r) => lock.save(r),
    release: async () => {
      done = true;
      await lock.release();
    },
    leave: async () => {
      if (!done) await lock.leave();
    },
  };
}

const ref = (c: Copy): CopyRef => ({ host: c.host, dataset: c.dataset });
const leafOf = (c: CopyRef): string => c.dataset.slice(c.dataset.lastIndexOf("/") + 1);
