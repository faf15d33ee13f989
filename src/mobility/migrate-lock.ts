import type { MoveLock, MoveLocks } from "./move-lock.js";
import { MOVE_STEPS, type MigrateLock, type MigrateLocks, type MoveRecord } from "./steps.js";

/**
 * A migrate's lock is the volume's move Lease (move-lock.ts): created by the first run, taken
 * over by a rerun after a crash (the Lease never expires by itself), so the record a killed
 * run left is where the rerun starts. The migrate's own record travels in the Lease record's
 * `migrate` field; `step`, `from` and `to` are kept readable there for `kubectl get lease -o yaml`.
 */
export function leaseMoveLocks(locks: MoveLocks): MigrateLocks {
  return {
    async acquire(volumeId: string, op: string): Promise<MigrateLock> {
      const taken = await locks.takeOver(volumeId, "migrate");
      const lock = taken ?? (await locks.acquire({ op: "migrate", volumeId, step: "started", ...(op !== "migrate" && { by: op }) }));
      return handle(lock, taken === undefined ? undefined : recordIn(lock));
    },
  };
}

function recordIn(lock: MoveLock): MoveRecord | undefined {
  const r = lock.record.migrate as Partial<MoveRecord> | undefined;
  if (r === undefined || typeof r !== "object" || r.from === undefined || r.to === undefined) return undefined;
  return MOVE_STEPS.includes(r.step as MoveRecord["step"]) ? (r as MoveRecord) : undefined;
}

function handle(lock: MoveLock, record: MoveRecord | undefined): MigrateLock {
  return {
    record,
    save: (r) => lock.step(r.step, { from: r.from.host, to: r.to.host, migrate: r }),
    release: () => lock.release(),
    // The Lease stays with its record; the rerun takes it over.
    leave: async () => undefined,
  };
}
