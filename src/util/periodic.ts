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
