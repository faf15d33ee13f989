import { errorMessage } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import type { Logger } from "../log.js";
import type { MoveMetrics } from "../metrics.js";
import type { Clock } from "../util/clock.js";
import { classifyCopy, copyName, type CopyFacts } from "../volumes/home.js";
import { copyFacts, HOME_PROPS, newestSnapshot } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { failedOverValue, readFailedOver } from "../volumes/failed-over.js";
import { PROP } from "../volumes/properties.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import { SOURCE_ANNOTATION, type ConfigProblem, type ScheduledJob } from "./jobs.js";

/**
 * Failover of node-annotation datasets (issue 14, item 6), driven by the annotations alone: the
 * `zcsi.dev/replication-source` annotation names the master, so moving it to a node whose copy
 * is a replica IS the failover. Every pass, before the annotation jobs run, each annotated
 * source is compared with the other copies of the same data (the job targets, the copy its
 * zcsi:replica-of names, the copy its zcsi:failed-over record names), with the same rule as a
 * volume's home (volumes/home.ts) and the same zcsi:* properties, so `zcsi status` shows them:
 *
 *  - an annotated source that is a replica of the same identity, with no copy anywhere at a
 *    newer epoch, is promoted: zcsi:role=primary, epoch + 1, readonly=off, mounted, its
 *    zcsi:replica-of replaced by a zcsi:failed-over record naming the old master;
 *  - every other primary of that identity at a lower epoch (the old master, now or whenever it
 *    is back) is fenced: readonly=on, zcsi:fenced, role primary with its (lower) epoch. It is
 *    never destroyed, never overwritten (the engine refuses a fenced or primary target) and never
 *    a source (the engine refuses a fenced source). `zcsi resync HOST:DATASET` makes it a replica.
 *
 * Refused (a configuration problem, nothing changed): the copy the source replicated from is
 * still annotated as a source (two masters of one identity), or a copy at a newer epoch exists
 * (the annotated source is behind: resync it first), or two live primaries share the newest
 * epoch. A host that cannot be read is unknown: its copy is neither promoted over nor fenced.
 *
 * The decision is pure (decideAnnotationFailover); AnnotationFailover reads and acts.
 */

/** An annotated source: the node (= pool host) and the dataset its annotation names. */
export interface AnnotatedSource {
  readonly node: string;
  readonly host: string;
  readonly dataset: string;
}

export interface FenceAction {
  readonly host: string;
  readonly dataset: string;
  readonly epoch: number;
  readonly reason: string;
}

export interface AnnotationDecision {
  readonly identity?: string;
  /** Promote the annotated source to this epoch; `previous`: the master it takes over from. */
  readonly promote?: { readonly epoch: number; readonly previous?: string };
  readonly fence: readonly FenceAction[];
  readonly problem?: string;
}

/** The props read of each copy (HOME_PROPS and the failover record). */
export const ANNOTATION_COPY_PROPS = [...HOME_PROPS, PROP.failedOver];

/** `<host>:<dataset>` split at the first colon (pool host names have none). */
export function splitName(name: string): { host: string; dataset: string } | undefined {
  const colon = name.indexOf(":");
  return colon > 0 ? { host: name.slice(0, colon), dataset: name.slice(colon + 1) } : undefined;
}

/** The old master a promoted copy's zcsi:failed-over record names (`from`), when it is one copy. */
export function failedOverFrom(record: string | undefined): string | undefined {
  const from = readFailedOver(record)?.from;
  return from !== undefined && splitName(from) !== undefined ? from : undefined;
}

/**
 * A dataset as a copy of the node-annotation data `identity` (`<birth host>:<birth dataset>`):
 * as volumes/home.ts classifies a volume's copies, except that the birth dataset needs no
 * zcsi:csi-name: a dataset that carries no identity is the birth copy of one named after itself.
 */
export function classifyAnnotated(identity: string, facts: CopyFacts): ReturnType<typeof classifyCopy> {
  const birth = splitName(identity) ?? facts;
  return classifyCopy(identity, birth, facts.volume === undefined && copyName(facts) === identity ? { ...facts, volume: identity } : facts);
}

/**
 * The decision for one annotated source. `facts`: what each copy that could be read says
 * (missing datasets and hosts that could not be read absent); `annotatedSources`: the
 * `<host>:<dataset>` of every dataset annotated as a source. Pure.
 */
export function decideAnnotationFailover(
  source: AnnotatedSource,
  facts: readonly CopyFacts[],
  annotatedSources: ReadonlySet<string>,
): AnnotationDecision {
  const name = copyName(source);
  const own = facts.find((f) => f.host === source.host && f.dataset === source.dataset);
  if (own === undefined) return { fence: [] };
  // A dataset that carries no identity is the birth copy of one named after itself.
  const identity = own.volume ?? name;
  const classified = facts.map((f) => classifyAnnotated(identity, f));
  const copies = classified.flatMap((c) => (c === undefined || "problem" in c ? [] : [c]));
  const problems = classified.flatMap((c) => (c !== undefined && "problem" in c ? [c.problem] : []));
  if (problems.length > 0) return { identity, fence: [], problem: problems.join("; ") };
  const self = copies.find((c) => c.host === source.host && c.dataset === source.dataset);
  if (self === undefined) return { identity, fence: [] };
  const others = copies.filter((c) => c !== self);
  const newer = others.filter((c) => c.epoch > self.epoch);
  const fencesBelow = (epoch: number): FenceAction[] =>
    others
      .filter((c) => c.role === "primary" && c.epoch < epoch && (c.fenced === undefined || !c.readonly))
      .map((c) => ({ host: c.host, dataset: c.dataset, epoch: c.epoch, reason: c.fenced ?? `superseded by epoch ${epoch} on ${name}` }));

  if (self.role === "replica") {
    const from = own.replicaOf;
    if (from !== undefined && from !== name && annotatedSources.has(from)) {
      return { identity, fence: [], problem: `${name} is annotated as a source, but the copy it replicates from, ${from}, still is too: move the ${SOURCE_ANNOTATION} annotation (remove it from ${splitName(from)?.host ?? from}), do not copy it; not promoted` };
    }
    if (newer.length > 0) {
      return { identity, fence: [], problem: `${name} is a replica at epoch ${self.epoch}, but ${newer.map((c) => `${copyName(c)} (epoch ${c.epoch})`).join(", ")} is newer: it may lack data written since; resync it from there first; not promoted` };
    }
    const epoch = Math.max(self.epoch, ...others.map((c) => c.epoch)) + 1;
    const previous = others.find((c) => c.role === "primary" && c.epoch === self.epoch && c.fenced === undefined) ?? (from !== undefined ? { name: from } : undefined);
    const previousName = previous === undefined ? undefined : "name" in previous ? previous.name : copyName(previous);
    return { identity, promote: { epoch, ...(previousName !== undefined && { previous: previousName }) }, fence: fencesBelow(epoch) };
  }
  // The annotated source is a primary: stale (fenced, or a newer epoch elsewhere), split, or the home.
  if (self.fenced !== undefined || newer.length > 0) {
    const why = self.fenced ?? `superseded by epoch ${Math.max(...newer.map((c) => c.epoch))} on ${newer.map(copyName).join(", ")}`;
    return { identity, fence: [], problem: `${name} is annotated as a source but is a stale copy (${why}); it is not replicated from. Annotate the newest copy's node as the source, or resync this copy` };
  }
  const rivals = others.filter((c) => c.role === "primary" && c.epoch === self.epoch && c.fenced === undefined);
  if (rivals.length > 0) {
    return { identity, fence: [], problem: `split brain: ${[name, ...rivals.map(copyName)].join(" and ")} are all primary at epoch ${self.epoch}; nothing fenced until an operator resolves it` };
  }
  return { identity, fence: fencesBelow(self.epoch) };
}

export interface AnnotationFailoverOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events?: EventRecorder;
  readonly moveMetrics?: MoveMetrics;
}

/** Runs decideAnnotationFailover for each annotated source every pass, and carries it out. */
export class AnnotationFailover {
  constructor(
    private readonly hosts: PoolHosts,
    private readonly options: AnnotationFailoverOptions,
  ) {}

  /** Returns the problems found (reported with the replicator's configuration problems). Never throws. */
  async reconcile(sources: readonly AnnotatedSource[], jobs: readonly ScheduledJob[]): Promise<ConfigProblem[]> {
    const problems: ConfigProblem[] = [];
    const annotated = new Set(sources.map(copyName));
    for (const source of sources) {
      try {
        const problem = await this.reconcileOne(source, jobs, annotated);
        if (problem !== undefined) problems.push({ where: `dataset ${copyName(source)}`, message: problem });
      } catch (err) {
        problems.push({ where: `dataset ${copyName(source)}`, message: `could not check its copies' roles: ${errorMessage(err)}` });
      }
    }
    return problems;
  }

  private async reconcileOne(source: AnnotatedSource, jobs: readonly ScheduledJob[], annotated: ReadonlySet<string>): Promise<string | undefined> {
    const first = await this.read([source]);
    const own = first.facts.find((f) => f.host === source.host && f.dataset === source.dataset);
    if (own === undefined) return undefined; // not there (yet): the engine reports a missing source
    const related = [
      source,
      ...jobs.filter((j) => j.job.origin.kind === "annotation" && j.job.source.host === source.host && j.job.source.dataset === source.dataset).map((j) => j.job.target),
      ...[own.replicaOf, failedOverFrom(first.records.get(copyName(source)))].flatMap((n) => (n === undefined ? [] : [splitName(n)].flatMap((s) => (s ? [s] : [])))),
    ].filter((c) => this.hosts.configs.some((h) => h.name === c.host));
    // A host that cannot be read leaves its copy out: never promoted over, never fenced (until it answers).
    const { facts } = await this.read(related);
    const decision = decideAnnotationFailover(source, facts, annotated);
    const identity = decision.identity ?? copyName(source);
    if (decision.promote) await this.promote(source, identity, decision.promote);
    for (const f of decision.fence) await this.fence(f, identity, facts);
    return decision.problem;
  }

  /** Facts of the named copies, one `zfs get` per host (missing ones absent), and zcsi:failed-over of each. */
  private async read(copies: readonly { host: string; dataset: string }[]): Promise<{ facts: CopyFacts[]; unknown: { host: string; reason: string }[]; records: Map<string, string> }> {
    const byHost = new Map<string, Set<string>>();
    for (const c of copies) byHost.set(c.host, (byHost.get(c.host) ?? new Set()).add(c.dataset));
    const facts: CopyFacts[] = [];
    const unknown: { host: string; reason: string }[] = [];
    const records = new Map<string, string>();
    await Promise.all(
      [...byHost].map(async ([host, datasets]) => {
        try {
          const all = await this.hosts.get(host).zfs.get([...datasets], ANNOTATION_COPY_PROPS, { missingOk: true });
          for (const dataset of datasets) {
            const props = all.get(dataset);
            if (props === undefined) continue;
            facts.push(copyFacts(host, dataset, props));
            const record = ownUserPropertyValue(props.get(PROP.failedOver));
            if (record !== undefined) records.set(`${host}:${dataset}`, record);
          }
        } catch (err) {
          unknown.push({ host, reason: errorMessage(err) });
        }
      }),
    );
    return { facts, unknown, records };
  }

  private async promote(source: AnnotatedSource, identity: string, promote: { epoch: number; previous?: string }): Promise<void> {
    const { logger, clock } = this.options;
    const host = this.hosts.get(source.host);
    const at = clock.now().toISOString();
    const context = { op: "annotation-failover", identity, poolHost: source.host, dataset: source.dataset, epoch: promote.epoch, previous: promote.previous };
    logger.warn(context, "replication-source annotation names a replica: promoting it (failover of a node-annotation dataset)");
    const newest = await newestSnapshot(this.hosts, source);
    // Role and epoch in one `zfs set`: a crash leaves the replica or the new master, never half of one.
    await host.zfs.set(source.dataset, {
      [PROP.volume]: identity,
      [PROP.role]: "primary",
      [PROP.epoch]: String(promote.epoch),
      [PROP.failedOver]: failedOverValue(promote.previous, promote.epoch, at, newest),
      readonly: "off",
    });
    for (const name of [PROP.replicaOf, PROP.meta]) await host.zfs.inherit(source.dataset, name);
    try {
      await host.zfs.mount(source.dataset);
    } catch (err) {
      logger.warn({ ...context, err: errorMessage(err) }, "promoted, but could not mount it; mount it by hand (zfs mount)");
    }
    this.options.moveMetrics?.moves.inc({ kind: "failover", outcome: "done" });
    logger.warn(context, "promoted: the annotated source is the master of its data");
    const window = newest ? `data written on ${promote.previous ?? "the old master"} after ${newest.createdAt.toISOString()} (snapshot ${newest.name}) is not on it` : "it has no snapshot";
    await this.options.events?.recordOnNode?.({
      nodeName: source.node,
      type: "Warning",
      reason: "FailedOver",
      message: `${source.host}:${source.dataset} promoted to master of ${identity} (epoch ${promote.epoch}) because ${SOURCE_ANNOTATION} names it; ${window}`,
    });
  }

  private async fence(f: FenceAction, identity: string, facts: readonly CopyFacts[]): Promise<void> {
    const { logger } = this.options;
    const context = { op: "annotation-failover", identity, poolHost: f.host, dataset: f.dataset, epoch: f.epoch, reason: f.reason };
    const was = facts.find((c) => c.host === f.host && c.dataset === f.dataset);
    try {
      // The role and epoch written out too: an old master that predates them carries none, and `zcsi status` reads them.
      await this.hosts.get(f.host).zfs.set(f.dataset, {
        readonly: "on",
        [PROP.fenced]: f.reason,
        [PROP.volume]: identity,
        [PROP.role]: "primary",
        ...(was?.epoch === undefined && { [PROP.epoch]: String(f.epoch) }),
      });
    } catch (err) {
      logger.warn({ ...context, err: errorMessage(err) }, "could not fence the stale master; it stays refused as a source and a target, and the next pass tries again");
      return;
    }
    logger.warn(context, "fenced a stale master of a node-annotation dataset (readonly=on); kept, never replicated from or into");
    await this.options.events?.recordOnNode?.({
      nodeName: f.host,
      type: "Warning",
      reason: "CopyFenced",
      message: `stale copy ${f.host}:${f.dataset} of ${identity} (primary at epoch ${f.epoch}: ${f.reason}) fenced (readonly); kept: zcsi resync ${f.host}:${f.dataset} makes it a replica`,
    });
  }
}

