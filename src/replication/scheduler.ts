import { errorMessage, isZcsiError } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import type { NodeSource } from "../k8s/nodes.js";
import { HOME_ANNOTATION, homeAnnotationValue, replicaAnnotationKey, type PvAnnotator } from "../k8s/pv.js";
import type { Logger } from "../log.js";
import type { MoveMetrics, ReplicationLabels, ReplicationMetrics } from "../metrics.js";
import type { Clock } from "../util/clock.js";
import { ConditionLog } from "../util/periodic.js";
import { formatDuration } from "../util/units.js";
import type { PoolHosts } from "../volumes/hosts.js";
import type { PropertyMap } from "../zfs/parse.js";
import { adoptedJobs, annotationJobs, REPLICATION_NODE_SELECTOR, VOLUME_DISCOVERY_PROPS, volumeJobs, withoutStaleTargets, type ConfigProblem, type JobSet, type ScheduledJob } from "./jobs.js";
import { AnnotationFailover } from "./annotation-failover.js";
import { MoveTally } from "./move-tally.js";
import { replicaAnnotationValue, shortError } from "./pv-annotation.js";

export { replicaAnnotationValue, shortError } from "./pv-annotation.js";
import type { ReplicationEngine, ReplicationJob, ReplicationResult } from "./types.js";

/**
 * The replication scheduler (the loop of `zcsi replicator`, a sidecar in the controller pod;
 * roles/replicator.ts wires it): which replication jobs exist, when each runs, and what users
 * see. The engine (engine.ts) does one run of one job; this loop decides the rest:
 *
 * - Every pass ("tick"): the jobs are rebuilt from scratch, from the pool hosts (one `zfs get`
 *   per host: volumes with zcsi:replicate-to) and from the Nodes labelled
 *   zcsi.dev/replication=true (re-read every pass, so annotation changes apply without a
 *   restart). A job that is gone gets its holds released (engine.releaseHolds) and its PV
 *   annotation removed. A host or the API that cannot be read keeps its previous jobs: an
 *   outage must not look like a deletion and release holds the next run still needs.
 * - Scheduling is a pure function of the clock: a job is due when it never ran in this
 *   process, or `interval` after its last run STARTED. No jitter: runs are spread by the
 *   concurrency limit, and tests drive the whole schedule with a fake clock. Due jobs queue in
 *   (last start, id) order and at most `concurrency` run at once across all jobs; a tick never
 *   waits for runs, so a long first send does not delay the others' scheduling.
 * - After each run the PV of a volume job gets `zcsi.dev/replica.<target host>` =
 *   `<time> lag=<age of the replicated snapshot> snapshot=<name>` (on failure `... error=<why>`
 *   and a Warning Event), and the metrics are updated.
 * - Only the Lease holder acts; losing the Lease aborts running runs (the engine resumes them
 *   on the next leader where the hosts support resumable receive).
 */

export interface ReplicatorCoreOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics?: ReplicationMetrics;
  /** Moves and stale copies seen in the listings (move-tally.ts). */
  readonly moveMetrics?: MoveMetrics;
  readonly events?: EventRecorder;
  /** Node annotations; absent (no Kubernetes) → volume jobs only. */
  readonly nodes?: NodeSource;
  /** PV annotations; absent → replica state only in logs and metrics. */
  readonly pvs?: PvAnnotator;
  /** Runs at once across all jobs. Default 2. */
  readonly concurrency?: number;
  /** Interval of annotation jobs. Default 15 minutes. */
  readonly annotationIntervalSeconds?: number;
  /** Bandwidth limit of each annotation job's runs, bytes per second. Default unlimited. */
  readonly annotationBandwidthBytesPerSec?: number;
}

export interface TickReport {
  readonly at: Date;
  /** Every job known after this tick, by id. */
  readonly jobs: readonly string[];
  /** Jobs started by this tick (more may start later as slots free up). */
  readonly started: readonly string[];
  /** Jobs that went away and had their holds released in this tick. */
  readonly released: readonly string[];
  readonly problems: readonly ConfigProblem[];
}

/** What one run of a job ended with, for tests and logs. */
export type RunOutcome = { readonly jobId: string; readonly result: ReplicationResult } | { readonly jobId: string; readonly error: string; readonly kind: string };

interface JobState {
  /** Clock time (ms) the last run started. */
  lastStart?: number;
  /** The newest snapshot a run confirmed on the target, and its creation time (s). */
  lastGood?: { readonly snapshot: string; readonly createdAt: number; readonly epoch?: number };
}

interface Running {
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

function labelsOf(job: ReplicationJob): Record<ReplicationLabels, string> {
  return { job_id: job.id, source: `${job.source.host}:${job.source.dataset}`, target: job.target.host };
}

export class Replicator {
  private readonly concurrency: number;
  private readonly annotationIntervalSeconds: number;
  private jobs = new Map<string, ScheduledJob>();
  private readonly state = new Map<string, JobState>();
  private readonly queue: string[] = [];
  private readonly running = new Map<string, Running>();
  /** Jobs that went away and whose holds are not released yet (retried every tick). */
  private readonly releases = new Map<string, ScheduledJob>();
  private problemsKey = "";
  /** A host or the API that stays unreadable is logged when that starts, changes or ends (and hourly), not every tick. */
  private readonly conditions = new ConditionLog();
  private active: () => boolean = () => true;
  private readonly moveTally: MoveTally;
  private readonly failover: AnnotationFailover;
  /** Every finished run, in order (bounded): what tests and runOnce() look at. */
  readonly outcomes: RunOutcome[] = [];

  constructor(
    private readonly hosts: PoolHosts,
    private readonly engine: ReplicationEngine,
    private readonly options: ReplicatorCoreOptions,
  ) {
    this.concurrency = Math.max(1, options.concurrency ?? 2);
    this.annotationIntervalSeconds = options.annotationIntervalSeconds ?? 900;
    this.moveTally = new MoveTally(options.moveMetrics, options.clock.now().getTime());
    this.failover = new AnnotationFailover(hosts, {
      clock: options.clock,
      logger: options.logger,
      ...(options.events && { events: options.events }),
      ...(options.moveMetrics && { moveMetrics: options.moveMetrics }),
    });
  }

  /** The jobs as of the last tick. */
  get currentJobs(): ScheduledJob[] {
    return [...this.jobs.values()];
  }

  /** Ids of jobs running now. */
  get runningJobs(): string[] {
    return [...this.running.keys()];
  }

  /**
   * One pass: rebuild the jobs, release what went away, queue what is due, start up to the
   * limit. Returns without waiting for the runs (idle() does). `active` is asked before each
   * start: a replica that lost its Lease starts nothing more.
   */
  async tick(active: () => boolean = () => true): Promise<TickReport> {
    this.active = active;
    const at = this.options.clock.now();
    const log = this.options.logger;
    const problems: ConfigProblem[] = [];
    const next = new Map<string, ScheduledJob>();
    const listings = new Map<string, PropertyMap>();
    const volumeSets: JobSet[] = [];

    await Promise.all(
      this.hosts.all().map(async (host) => {
        const poolHost = host.config.name;
        try {
          let all: PropertyMap;
          try {
            all = await host.zfs.get([host.config.parentDataset], VOLUME_DISCOVERY_PROPS, { depth: 1 });
          } catch (err) {
            if (!isZcsiError(err, "NotFound")) throw err;
            all = new Map();
          }
          this.ended(`list:${poolHost}`, { poolHost }, "listing replicated volumes works again");
          for (const move of this.moveTally.observe(poolHost, all)) log.info({ op: "replicator", poolHost, ...move }, "volume move counted");
          listings.set(poolHost, all);
          volumeSets.push(volumeJobs(host.config, all, this.hosts.configs));
          // Adopted datasets the operator asked to replicate: one recursive listing per adoptRoot, none without.
          for (const root of host.config.adoptRoots ?? []) {
            const listing = await host.zfs.get([root], VOLUME_DISCOVERY_PROPS, { recursive: true }).catch((err: unknown) => {
              if (isZcsiError(err, "NotFound")) return new Map() as PropertyMap;
              throw err;
            });
            volumeSets.push(adoptedJobs(host.config, listing, this.hosts.configs));
          }
        } catch (err) {
          const condition = this.conditions.observe("replicator", `list:${poolHost}`, errorMessage(err), at);
          if (condition !== undefined) log.warn({ op: "replicator", poolHost, err: errorMessage(err), condition }, "listing replicated volumes failed; keeping this host's jobs as they were");
          for (const j of this.jobs.values()) if (j.job.origin.kind === "volume" && j.job.source.host === poolHost) next.set(j.job.id, j);
        }
      }),
    );
    // Judged once every host is listed: a target's state is on its own host.
    for (const set of volumeSets.map((v) => withoutStaleTargets(v, listings))) {
      for (const j of set.jobs) next.set(j.job.id, j);
      problems.push(...set.problems);
    }
    if (this.options.nodes !== undefined) {
      try {
        const set = annotationJobs(await this.options.nodes.listNodes(REPLICATION_NODE_SELECTOR), this.hosts.configs, this.annotationIntervalSeconds, this.options.annotationBandwidthBytesPerSec);
        this.ended("list-nodes", {}, "listing Nodes works again");
        for (const j of set.jobs) next.set(j.job.id, j);
        problems.push(...set.problems);
        // Before any run: a source annotation moved to a replica is promoted, stale masters fenced.
        if (this.active()) problems.push(...(await this.failover.reconcile(set.sources ?? [], set.jobs)));
      } catch (err) {
        const condition = this.conditions.observe("replicator", "list-nodes", errorMessage(err), at);
        if (condition !== undefined) log.warn({ op: "replicator", err: errorMessage(err), condition }, "listing Nodes failed; keeping the annotation jobs as they were");
        for (const j of this.jobs.values()) if (j.job.origin.kind === "annotation") next.set(j.job.id, j);
      }
    }
    this.reportProblems(problems);

    for (const [id, job] of this.jobs) {
      if (next.has(id)) continue;
      log.info({ op: "replicator", jobId: id, source: labelsOf(job.job).source, target: job.job.target.host }, "replication job removed; releasing its holds");
      this.releases.set(id, job);
      // A run of a job that is gone has nothing left to do; its holds are released once it stopped.
      this.running.get(id)?.controller.abort(new Error(`replication job ${id} was removed`));
    }
    for (const [id, job] of next) {
      if (!this.jobs.has(id)) {
        log.info({ op: "replicator", jobId: id, source: labelsOf(job.job).source, target: `${job.job.target.host}:${job.job.target.dataset}`, intervalSeconds: job.intervalSeconds }, "replication job added");
      }
      this.releases.delete(id); // back before its release happened: keep the holds
    }
    this.jobs = next;
    for (const id of [...this.state.keys()]) if (!next.has(id) && !this.running.has(id)) this.state.delete(id);
    for (let i = this.queue.length - 1; i >= 0; i--) if (!next.has(this.queue[i] ?? "")) this.queue.splice(i, 1);

    const released = await this.releaseGone();

    const nowMs = at.getTime();
    for (const [id, job] of this.jobs) {
      const st = this.state.get(id);
      this.options.metrics?.interval.set(labelsOf(job.job), job.intervalSeconds);
      if (st?.lastGood !== undefined) this.options.metrics?.lag.set(labelsOf(job.job), Math.max(0, nowMs / 1000 - st.lastGood.createdAt));
    }
    const due = [...this.jobs.values()]
      .filter(({ job, intervalSeconds }) => {
        if (this.running.has(job.id) || this.queue.includes(job.id)) return false;
        const last = this.state.get(job.id)?.lastStart;
        return last === undefined || nowMs >= last + intervalSeconds * 1000;
      })
      .sort((a, b) => {
        const la = this.state.get(a.job.id)?.lastStart ?? -Infinity;
        const lb = this.state.get(b.job.id)?.lastStart ?? -Infinity;
        return la !== lb ? la - lb : a.job.id < b.job.id ? -1 : a.job.id > b.job.id ? 1 : 0;
      });
    this.queue.push(...due.map((j) => j.job.id));
    const started = this.pump();
    const origins = { volume: 0, annotation: 0 };
    for (const j of this.jobs.values()) origins[j.job.origin.kind]++;
    this.options.metrics?.jobs.set({ origin: "volume" }, origins.volume);
    this.options.metrics?.jobs.set({ origin: "annotation" }, origins.annotation);
    return { at, jobs: [...this.jobs.keys()].sort(), started, released, problems };
  }

  /** Resolves when no run is in flight and nothing is queued that could start. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running.values()].map((r) => r.done));
  }

  /** Drops the queue and aborts running runs (Lease lost, shutting down). */
  stop(reason: string): void {
    this.queue.length = 0;
    for (const r of this.running.values()) r.controller.abort(new Error(reason));
  }

  private ended(key: string, context: Record<string, string>, message: string): void {
    const was = this.conditions.end(key);
    if (was !== undefined) this.options.logger.info({ op: "replicator", ...context, was, condition: "ended" }, message);
  }

  private reportProblems(problems: readonly ConfigProblem[]): void {
    this.options.metrics?.configProblems.set(problems.length);
    // Logged when they change, not every pass: a standing mistake is one line, not thousands.
    const key = JSON.stringify(problems);
    if (key === this.problemsKey) return;
    this.problemsKey = key;
    for (const p of problems) this.options.logger.warn({ op: "replicator", where: p.where, problem: p.message }, "replication configuration problem");
  }

  private async releaseGone(): Promise<string[]> {
    const released: string[] = [];
    for (const [id, sj] of [...this.releases]) {
      if (this.running.has(id)) continue; // after its run stopped
      const log = this.options.logger;
      try {
        await this.engine.releaseHolds(sj.job.source, id);
      } catch (err) {
        if (!isZcsiError(err, "NotFound")) {
          log.warn({ op: "replicator", jobId: id, err: errorMessage(err) }, "releasing the holds of a removed job failed; retrying next pass");
          continue;
        }
      }
      this.releases.delete(id);
      this.state.delete(id);
      this.options.metrics?.forget(labelsOf(sj.job));
      released.push(id);
      if (sj.pvName !== undefined && this.options.pvs !== undefined) {
        // The PV's last job gone (the volume deleted, or no longer replicated): its home annotation goes too.
        const last = ![...this.jobs.values()].some((j) => j.pvName === sj.pvName);
        await this.patchPv(sj, null, last ? null : undefined);
      }
    }
    return released;
  }

  private pump(): string[] {
    const started: string[] = [];
    while (this.running.size < this.concurrency && this.queue.length > 0 && this.active()) {
      const id = this.queue.shift() as string;
      const sj = this.jobs.get(id);
      if (sj === undefined || this.running.has(id)) continue;
      const st = this.state.get(id) ?? {};
      st.lastStart = this.options.clock.now().getTime();
      this.state.set(id, st);
      const controller = new AbortController();
      const done = this.run(sj, controller.signal).finally(() => {
        this.running.delete(id);
        this.pump();
      });
      this.running.set(id, { controller, done });
      started.push(id);
    }
    return started;
  }

  private record(outcome: RunOutcome): void {
    this.outcomes.push(outcome);
    if (this.outcomes.length > 1000) this.outcomes.splice(0, this.outcomes.length - 1000);
  }

  private async run(sj: ScheduledJob, signal: AbortSignal): Promise<void> {
    const { job } = sj;
    const labels = labelsOf(job);
    const metrics = this.options.metrics;
    const log = this.options.logger;
    const context = { op: "replicate", jobId: job.id, ...(job.origin.kind === "volume" ? { volumeId: job.origin.volumeId } : { node: job.origin.node }), target: `${job.target.host}:${job.target.dataset}` };
    const startedAt = this.options.clock.now().getTime();
    let result: ReplicationResult;
    try {
      result = await this.engine.replicate(job, signal);
    } catch (err) {
      const message = errorMessage(err);
      if (signal.aborted) {
        log.info({ ...context, reason: String(signal.reason) }, "replication run stopped");
        this.record({ jobId: job.id, error: message, kind: "Stopped" });
        return;
      }
      const kind = isZcsiError(err) ? err.kind : "Internal";
      this.record({ jobId: job.id, error: message, kind });
      if (kind === "Aborted") {
        // Another run of the same job is in flight (a previous leader's, or ours): not a failure.
        log.info({ ...context, err: message }, "replication run skipped: one is already in flight");
        return;
      }
      const now = this.options.clock.now();
      metrics?.failed(labels, kind);
      metrics?.duration.observe(labels, Math.max(0, now.getTime() - startedAt) / 1000);
      log.warn({ ...context, kind, err: message }, "replication run failed");
      const reason = kind === "FailedPrecondition" ? "ReplicationRefused" : "ReplicationFailed";
      if (sj.pvName !== undefined) {
        await this.options.events?.record({ pvName: sj.pvName, type: "Warning", reason, message: `replication to ${job.target.host} (${job.target.dataset}) failed: ${shortError(message)}` });
        await this.patchPv(sj, replicaAnnotationValue(now, this.state.get(job.id)?.lastGood, message));
      } else if (job.origin.kind === "annotation") {
        // No PV: the Event goes on the Node whose annotation asked for this replica.
        await this.options.events?.recordOnNode?.({
          nodeName: job.origin.node,
          type: "Warning",
          reason,
          message: `replication of ${job.source.host}:${job.source.dataset} to ${job.target.dataset} failed: ${shortError(message)}`,
        });
      }
      return;
    }
    const now = this.options.clock.now();
    const good = { snapshot: result.snapshot, createdAt: result.snapshotCreatedAt, ...(result.epoch !== undefined && { epoch: result.epoch }) };
    const st = this.state.get(job.id);
    if (st !== undefined) st.lastGood = good;
    const lagSeconds = Math.max(0, now.getTime() / 1000 - result.snapshotCreatedAt);
    metrics?.bytes.inc(labels, result.bytes);
    metrics?.duration.observe(labels, result.durationMs / 1000);
    metrics?.lag.set(labels, lagSeconds);
    metrics?.succeeded(labels, result.action);
    this.record({ jobId: job.id, result });
    log.info({ ...context, action: result.action, snapshot: result.snapshot, bytes: result.bytes, durationMs: result.durationMs, lagSeconds: Math.round(lagSeconds) }, "replication run done");
    // The run sent from the home (the engine refuses any other source): the PV says which copy that is.
    if (sj.pvName !== undefined) await this.patchPv(sj, replicaAnnotationValue(now, good), homeAnnotationValue(job.source, result.epoch));
  }

  /** Never throws: the annotation reports the run; it is not part of it. */
  private async patchPv(sj: ScheduledJob, value: string | null, home?: string | null): Promise<void> {
    const pvs = this.options.pvs;
    if (pvs === undefined || sj.pvName === undefined) return;
    const key = replicaAnnotationKey(sj.job.target.host);
    try {
      const found = await pvs.annotate(sj.pvName, { [key]: value, ...(home !== undefined && { [HOME_ANNOTATION]: home }) });
      if (!found) this.options.logger.debug({ op: "replicator", jobId: sj.job.id, pv: sj.pvName }, "no such PersistentVolume; replica state not annotated");
    } catch (err) {
      this.options.logger.warn({ op: "replicator", jobId: sj.job.id, pv: sj.pvName, err: errorMessage(err) }, "annotating the PersistentVolume failed");
    }
  }
}
