import { isBusy } from "./errors.js";

export interface BusyRetryOptions {
  /** Time slept before giving up, in total (not wall time, so an injected sleep makes it deterministic). */
  readonly budgetMs: number;
  readonly sleep: (ms: number) => Promise<void>;
  /** Runs before each retry (e.g. unmount the filesystem so the retry does not race the mount again). */
  readonly beforeRetry?: () => Promise<void>;
}

/**
 * Runs `attempt` and retries it while it fails with reason `busy`: backoff 50 ms doubling,
 * capped at 1 s, until `budgetMs` of sleeping is spent; then the busy error reaches the caller.
 * Any other failure passes through at once. Used by destroy, rename and promote, which
 * unmount/remount filesystems and so meet the same zfs-fuse quirks (destroy right after create;
 * rename of any mounted filesystem).
 */
export async function retryWhileBusy(attempt: () => Promise<unknown>, options: BusyRetryOptions): Promise<void> {
  let slept = 0;
  let delay = 50;
  for (;;) {
    try {
      await attempt();
      return;
    } catch (err) {
      if (!isBusy(err) || slept + delay > options.budgetMs) throw err;
    }
    await options.sleep(delay);
    slept += delay;
    delay = Math.min(delay * 2, 1000);
    if (options.beforeRetry) await options.beforeRetry();
  }
}
