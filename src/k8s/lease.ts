import { aborted, alreadyExists, errorMessage, invalidArgument, isZcsiError, type ZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Clock } from "../util/clock.js";

/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics
 * (k8s.io/client-go/tools/leaderelection), so that two snapshotter replicas never both act:
 *
 * - A candidate takes the Lease when it does not exist, when its holderIdentity is empty (a
 *   released Lease), or when the record has not changed for leaseDurationSeconds *as measured
 *   on the candidate's own clock since it first saw that record* — never by comparing the
 *   Lease's renewTime with the local clock, so clock skew between nodes cannot cause two leaders.
 * - Every write is a replace with the resourceVersion that was read: of two candidates racing
 *   for an expired Lease, the API server lets exactly one through (409 Conflict for the other).
 * - The leader renews every retry period and stops acting as soon as it has not renewed for
 *   renewDeadlineSeconds (< leaseDurationSeconds), so it has stopped before anyone may take over.
 *
 * The Kubernetes calls are behind LeaseStore (client.ts implements it with client-node); tests
 * drive a fake store with recorded Lease objects.
 */

export interface LeaseSpec {
  readonly holderIdentity?: string;
  readonly leaseDurationSeconds?: number;
  readonly acquireTime?: Date;
  readonly renewTime?: Date;
  readonly leaseTransitions?: number;
}

export interface StoredLease {
  readonly name: string;
  readonly namespace: string;
  readonly resourceVersion: string;
  /** Kept as they were: a replace (PUT) must not drop what others put there. */
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly spec: LeaseSpec;
}

/**
 * One named Lease. `create` fails with AlreadyExists and `replace` with Aborted (HTTP 409:
 * someone else wrote since `current` was read); other failures are Unavailable.
 */
export interface LeaseStore {
  get(): Promise<StoredLease | undefined>;
  create(spec: LeaseSpec): Promise<StoredLease>;
  replace(current: StoredLease, spec: LeaseSpec): Promise<StoredLease>;
}

/** The errors a LeaseStore throws for HTTP 409 on replace and on create. */
export const leaseConflict = (message: string): ZcsiError => aborted(message);
export const leaseExists = (message: string): ZcsiError => alreadyExists(message);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function stringMap(v: unknown): Record<string, string> | undefined {
  if (!isObject(v)) return undefined;
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** A MicroTime as the API sends it (`2026-11-22T01:00:00.123456Z`) or a Date (client-node may give either). */
function time(v: unknown): Date | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v;
  if (typeof v !== "string" || v === "") return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** A Lease object as the API returns it (JSON wire form, or client-node's V1Lease) → StoredLease. */
export function leaseFromObject(obj: unknown): StoredLease {
  if (!isObject(obj) || !isObject(obj.metadata)) throw invalidArgument("not a Lease object (no metadata)");
  const md = obj.metadata;
  const name = md.name;
  const namespace = md.namespace;
  const resourceVersion = md.resourceVersion;
  if (typeof name !== "string" || typeof namespace !== "string" || typeof resourceVersion !== "string") {
    throw invalidArgument("Lease object lacks metadata.name, namespace or resourceVersion");
  }
  const spec = isObject(obj.spec) ? obj.spec : {};
  const holderIdentity = typeof spec.holderIdentity === "string" ? spec.holderIdentity : undefined;
  const leaseDurationSeconds = typeof spec.leaseDurationSeconds === "number" ? spec.leaseDurationSeconds : undefined;
  const leaseTransitions = typeof spec.leaseTransitions === "number" ? spec.leaseTransitions : undefined;
  const acquireTime = time(spec.acquireTime);
  const renewTime = time(spec.renewTime);
  const labels = stringMap(md.labels);
  const annotations = stringMap(md.annotations);
  return {
    name,
    namespace,
    resourceVersion,
    ...(labels && { labels }),
    ...(annotations && { annotations }),
    spec: {
      ...(holderIdentity !== undefined && { holderIdentity }),
      ...(leaseDurationSeconds !== undefined && { leaseDurationSeconds }),
      ...(acquireTime && { acquireTime }),
      ...(renewTime && { renewTime }),
      ...(leaseTransitions !== undefined && { leaseTransitions }),
    },
  };
}


export interface LeaderElectorOptions {
  readonly store: LeaseStore;
  /** This replica's identity (its pod name); unique among candidates. */
  readonly identity: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long others wait after the last observed change before taking over. client-go default 15 s. */
  readonly leaseDurationSeconds?: number;
  /** The leader stops acting when it could not renew for this long. client-go default 10 s. */
  readonly renewDeadlineSeconds?: number;
  /** How often to try to acquire or renew. client-go default 2 s. */
  readonly retryPeriodSeconds?: number;
}

function sameRecord(a: LeaseSpec, b: LeaseSpec): boolean {
  return (
    a.holderIdentity === b.holderIdentity &&
    a.leaseDurationSeconds === b.leaseDurationSeconds &&
    a.leaseTransitions === b.leaseTransitions &&
    a.acquireTime?.getTime() === b.acquireTime?.getTime() &&
    a.renewTime?.getTime() === b.renewTime?.getTime()
  );
}

export class LeaderElector {
  readonly identity: string;
  readonly leaseDurationSeconds: number;
  readonly renewDeadlineSeconds: number;
  readonly retryPeriodSeconds: number;
  /** The last Lease record seen and when (local clock, ms) it was first seen in that form. */
  private observed: { lease: StoredLease; at: number } | undefined;
  /** When this replica last wrote the Lease as holder (local clock, ms). */
  private lastRenew: number | undefined;

  constructor(private readonly options: LeaderElectorOptions) {
    this.identity = options.identity;
    this.leaseDurationSeconds = options.leaseDurationSeconds ?? 15;
    this.renewDeadlineSeconds = options.renewDeadlineSeconds ?? 10;
    this.retryPeriodSeconds = options.retryPeriodSeconds ?? 2;
    if (!options.identity) throw invalidArgument("leader election needs a non-empty identity");
    if (!(this.leaseDurationSeconds > this.renewDeadlineSeconds && this.renewDeadlineSeconds > this.retryPeriodSeconds && this.retryPeriodSeconds > 0)) {
      throw invalidArgument("leader election needs leaseDuration > renewDeadline > retryPeriod > 0");
    }
  }

  /** True while this replica may act: it holds the Lease and renewed it within renewDeadline. */
  isLeader(): boolean {
    if (this.lastRenew === undefined || this.observed?.lease.spec.holderIdentity !== this.identity) return false;
    return this.options.clock.now().getTime() - this.lastRenew < this.renewDeadlineSeconds * 1000;
  }

  /** The holder in the last Lease seen ("" when released; undefined before the first look). */
  get observedHolder(): string | undefined {
    return this.observed?.lease.spec.holderIdentity;
  }

  private observe(lease: StoredLease, now: number): void {
    if (this.observed === undefined || !sameRecord(this.observed.lease.spec, lease.spec)) this.observed = { lease, at: now };
    else this.observed = { lease, at: this.observed.at };
  }

  /** One round of client-go's tryAcquireOrRenew; returns isLeader() afterwards. Never throws. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const wasLeader = this.isLeader();
    const nowDate = this.options.clock.now();
    const now = nowDate.getTime();
    const log = this.options.logger;
    const fresh: LeaseSpec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseDurationSeconds,
      acquireTime: nowDate,
      renewTime: nowDate,
      leaseTransitions: 0,
    };
    let current: StoredLease | undefined;
    try {
      current = await this.options.store.get();
    } catch (err) {
      log.warn({ op: "lease", err: errorMessage(err) }, "reading the Lease failed");
      return this.report(wasLeader);
    }
    if (current === undefined) {
      try {
        const created = await this.options.store.create(fresh);
        this.observe(created, now);
        this.lastRenew = now;
      } catch (err) {
        if (!isZcsiError(err, "AlreadyExists")) log.warn({ op: "lease", err: errorMessage(err) }, "creating the Lease failed");
      }
      return this.report(wasLeader);
    }
    this.observe(current, now);
    const spec = current.spec;
    const holder = spec.holderIdentity ?? "";
    if (holder !== "" && holder !== this.identity) {
      const duration = (spec.leaseDurationSeconds ?? this.leaseDurationSeconds) * 1000;
      if (this.observed !== undefined && this.observed.at + duration > now) {
        this.lastRenew = undefined; // someone else holds a live Lease: we are not leading, whatever we thought
        return this.report(wasLeader);
      }
    }
    const next: LeaseSpec =
      holder === this.identity
        ? { ...fresh, ...(spec.acquireTime && { acquireTime: spec.acquireTime }), leaseTransitions: spec.leaseTransitions ?? 0 }
        : { ...fresh, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 };
    try {
      const updated = await this.options.store.replace(current, next);
      this.observe(updated, now);
      this.lastRenew = now;
    } catch (err) {
      // 409: another candidate wrote first; its record is read on the next round.
      if (isZcsiError(err, "Aborted")) log.info({ op: "lease", err: errorMessage(err) }, "Lease changed under us");
      else log.warn({ op: "lease", err: errorMessage(err) }, "updating the Lease failed");
    }
    return this.report(wasLeader);
  }

  private report(wasLeader: boolean): boolean {
    const leader = this.isLeader();
    if (leader !== wasLeader) {
      this.options.logger.info({ op: "lease", identity: this.identity, holder: this.observedHolder ?? null }, leader ? "became leader" : "stopped leading");
    }
    return leader;
  }

  /**
   * Gives the Lease up (on shutdown) the way client-go's ReleaseOnCancel does: empty holder,
   * 1 s duration, so the next candidate need not wait out the lease. Never throws.
   */
  async release(): Promise<void> {
    if (!this.isLeader() || this.observed === undefined) return;
    const now = this.options.clock.now();
    try {
      await this.options.store.replace(this.observed.lease, {
        holderIdentity: "",
        leaseDurationSeconds: 1,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: this.observed.lease.spec.leaseTransitions ?? 0,
      });
    } catch (err) {
      this.options.logger.warn({ op: "lease", err: errorMessage(err) }, "releasing the Lease failed; others take over after it expires");
    }
    this.lastRenew = undefined;
  }
}
