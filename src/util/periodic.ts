import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * Background work repeated at a fixed delay, for the sidecar roles (snapshotter, replicator).
 * The delay counts from the end of one run to the start of the next, so a slow run postpones
 * the next instead of overlapping it; a run that throws is logged and the loop goes on.
 */
export class PeriodicTasks {
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly logger: Logger,
    private readonly op: string,
  ) {}

  every(ms: number, work: () => Promise<unknown>): void {
    const schedule = (): void => {
      if (this.stopped) return;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        work()
          .catch((err: unknown) => this.logger.error({ op: this.op, err: errorMessage(err) }, `${this.op} loop failed`))
          .finally(schedule);
      }, ms);
      this.timers.add(timer);
    };
    schedule();
  }

  /** No run starts after this; a run already started finishes (callers await it themselves). */
  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}

/** Why a persisting condition is logged now. */
export type ConditionChange = "started" | "changed" | "persists";

/**
 * Logging for conditions that a periodic loop meets again on every pass (an unreadable
 * schedule, a host that cannot be listed): a line when one starts, when its message changes,
 * when it ends, and at most once per `repeatMs` while it persists, instead of one every pass.
 * Time comes from the caller (an injected clock), so tests step through hours at once.
 *
 * Conditions are keyed; `scope` groups the keys one pass covers (a pool host), so a pass that
 * covered one scope ends only that scope's conditions it no longer met.
 */
export class ConditionLog {
  private readonly open = new Map<string, { scope: string; message: string; loggedAt: number; seen: boolean }>();

  constructor(private readonly repeatMs: number = 60 * 60 * 1000) {}

  /** The condition `key` holds now with `message`: why to log it, or undefined (already logged). */
  observe(scope: string, key: string, message: string, now: Date): ConditionChange | undefined {
    const at = now.getTime();
    const current = this.open.get(key);
    if (current === undefined) {
      this.open.set(key, { scope, message, loggedAt: at, seen: true });
      return "started";
    }
    current.seen = true;
    if (current.message !== message) {
      current.message = message;
      current.loggedAt = at;
      return "changed";
    }
    // A clock that stepped back re-logs at once rather than falling silent.
    if (at - current.loggedAt >= this.repeatMs || at < current.loggedAt) {
      current.loggedAt = at;
      return "persists";
    }
    return undefined;
  }

  /** The condition `key` no longer holds: its last message when it was open (log that it ended). */
  end(key: string): string | undefined {
    const current = this.open.get(key);
    this.open.delete(key);
    return current?.message;
  }

  /**
   * Ends the conditions of `scope` not observed since the previous settle of that scope, and
   * returns them (key and last message) so the caller can log that they ended.
   */
  settle(scope: string): { key: string; message: string }[] {
    const ended: { key: string; message: string }[] = [];
    for (const [key, c] of this.open) {
      if (c.scope !== scope) continue;
      if (c.seen) c.seen = false;
      else {
        this.open.delete(key);
        ended.push({ key, message: c.message });
      }
    }
    return ended;
  }
}
