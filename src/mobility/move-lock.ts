import { createHash } from "node:crypto";
import { failedPrecondition, isZcsiError } from "../errors.js";
import type { StoredLease } from "../k8s/lease.js";
import type { NamedLeases } from "../k8s/leases.js";
import type { Logger } from "../log.js";
import { systemClock, type Clock } from "../util/clock.js";
import { parseJsonObject } from "../util/json.js";

/**
 * One move of a volume at a time (failover, migrate, resync, a promotion of any kind, and an
 * operator's rollback, which must not run under a move nor a move under it): a Lease
 * `zcsi-move-<hash of the volume id>` in the driver's namespace that exists while the move runs.
 * Acquiring is the API server's atomic create, so of two racing operations exactly one gets it;
 * the other is refused (FailedPrecondition) with who holds it and since when. The Lease carries
 * the move's record (MOVE_ANNOTATION, JSON) which the holder updates at each step, so that a
 * rerun after a crash sees where it was and can continue or undo it (takeOver). Released
 * (deleted) when done. It never expires by itself: a move interrupted halfway must be looked at.
 */

export const MOVE_ANNOTATION = "zcsi.dev/move";
export const MOVE_LABEL = "zcsi.dev/move";

export interface MoveRecord {
  /** `failover`, `migrate`, `resync`, ... */
  readonly op: string;
  readonly volumeId: string;
  /** The pool host the volume moves away from, when known. */
  readonly from?: string;
  /** The pool host the volume moves to. */
  readonly to?: string;
  /** The last step the holder recorded (`locked`, `promoted`, ...). */
  readonly step: string;
  /** ISO time the move started. */
  readonly startedAt: string;
  /** Who runs it: `<hostname>/<pid>` of the zcsi process. */
  readonly holder: string;
  /** Anything else the operation needs to continue or undo. */
  readonly [key: string]: unknown;
}

/** What a move starts with (startedAt and holder are added; step defaults to `locked`). */
export interface MoveStart {
  readonly op: string;
  readonly volumeId: string;
  readonly from?: string;
  readonly to?: string;
  readonly step?: string;
  readonly [key: string]: unknown;
}

/** `zcsi-move-<16 hex>`: a valid object name whatever the volume id. */
export function moveLeaseName(volumeId: string): string {
  return `zcsi-move-${createHash("sha256").update(volumeId).digest("hex").slice(0, 16)}`;
}

function recordOf(lease: StoredLease | undefined): MoveRecord | undefined {
  const parsed = parseJsonObject(lease?.annotations?.[MOVE_ANNOTATION]);
  return typeof parsed?.["op"] === "string" ? (parsed as unknown as MoveRecord) : undefined;
}

function describeHolder(volumeId: string, lease: StoredLease | undefined): string {
  const r = recordOf(lease);
  if (!r) return `volume ${volumeId} is being moved by another operation (Lease ${lease?.name ?? moveLeaseName(volumeId)})`;
  // A rollback holds the same Lease (mobility/rollback.ts) and moves nothing: it names its host and snapshot.
  if (r.op === "rollback") return `volume ${volumeId} is being rolled back to @${String(r.snapshot ?? "?")} by ${r.holder}, since ${r.startedAt}, at step ${r.step} (Lease ${lease?.name})`;
  const route = `${r.from ?? "?"} → ${r.to ?? "?"}`;
  return `volume ${volumeId} is being moved: ${r.op} ${route} by ${r.holder}, since ${r.startedAt}, at step ${r.step} (Lease ${lease?.name})`;
}

/** A held move lock: record steps, release when done. */
export class MoveLock {
  constructor(
    private readonly leases: NamedLeases,
    private lease: StoredLease,
    private current: MoveRecord,
    private readonly logger: Logger,
  ) {}

  get record(): MoveRecord {
    return this.current;
  }

  /** Records the step reached (and any extra fields) in the Lease; Aborted if someone else changed it. */
  async step(step: string, extra: Readonly<Record<string, unknown>> = {}): Promise<void> {
    const next: MoveRecord = { ...this.current, ...extra, step };
    this.lease = await this.leases.replace(this.lease, this.lease.spec, { [MOVE_ANNOTATION]: JSON.stringify(next) });
    this.current = next;
    this.logger.info({ op: next.op, volumeId: next.volumeId, step }, "move step recorded");
  }

  /** Deletes the Lease (only if it is still ours as last written). */
  async release(): Promise<void> {
    await this.leases.delete(this.lease);
    this.logger.info({ op: this.current.op, volumeId: this.current.volumeId, step: this.current.step }, "move lock released");
  }
}

export class MoveLocks {
  private readonly clock: Clock;

  constructor(
    private readonly leases: NamedLeases,
    private readonly holder: string,
    private readonly logger: Logger,
    clock?: Clock,
  ) {
    this.clock = clock ?? systemClock;
  }

  /** The record of a move in progress, if any. */
  async current(volumeId: string): Promise<MoveRecord | undefined> {
    const lease = await this.leases.get(moveLeaseName(volumeId));
    return lease && (recordOf(lease) ?? { op: "unknown", volumeId, step: "unknown", startedAt: "?", holder: lease.spec.holderIdentity ?? "?" });
  }

  /** Takes the lock for a new move. FailedPrecondition naming the holder when a move of the volume is in progress. */
  async acquire(record: MoveStart): Promise<MoveLock> {
    const name = moveLeaseName(record.volumeId);
    const now = this.clock.now();
    const full: MoveRecord = { ...record, step: record.step ?? "locked", startedAt: now.toISOString(), holder: this.holder };
    try {
      const lease = await this.leases.create(name, { holderIdentity: this.holder, acquireTime: now, renewTime: now }, { [MOVE_ANNOTATION]: JSON.stringify(full) }, { [MOVE_LABEL]: "true" });
      this.logger.info({ op: full.op, volumeId: full.volumeId, from: full.from, to: full.to, lease: name }, "move lock acquired");
      return new MoveLock(this.leases, lease, full, this.logger);
    } catch (err) {
      if (!isZcsiError(err, "AlreadyExists")) throw err;
      const held = await this.leases.get(name);
      throw failedPrecondition(`${describeHolder(record.volumeId, held)}; refusing to start ${record.op} (rerun that operation to finish it, or wait for it)`);
    }
  }

  /**
   * Takes over the lock of an interrupted move of operation `op` (a rerun after a crash): the
   * Lease is rewritten with this holder, with the resourceVersion that was read, so of two
   * reruns only one takes over (the other: FailedPrecondition). Undefined when there is none.
   */
  async takeOver(volumeId: string, op: string): Promise<MoveLock | undefined> {
    const lease = await this.leases.get(moveLeaseName(volumeId));
    if (!lease) return undefined;
    const record = recordOf(lease);
    if (!record || record.op !== op) throw failedPrecondition(`${describeHolder(volumeId, lease)}; not a ${op}, so a ${op} cannot take it over`);
    const now = this.clock.now();
    const next: MoveRecord = { ...record, holder: this.holder, takenOverFrom: record.holder };
    try {
      const taken = await this.leases.replace(lease, { ...lease.spec, holderIdentity: this.holder, renewTime: now }, { [MOVE_ANNOTATION]: JSON.stringify(next) });
      this.logger.warn({ op, volumeId, step: record.step, previousHolder: record.holder }, "took over an interrupted move");
      return new MoveLock(this.leases, taken, next, this.logger);
    } catch (err) {
      if (isZcsiError(err, "Aborted") || isZcsiError(err, "NotFound")) throw failedPrecondition(`${describeHolder(volumeId, lease)}; another process took it over or finished it first`);
      throw err;
    }
  }
}
