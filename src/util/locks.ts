import { aborted } from "../errors.js";

/**
 * One in-flight operation per key (CSI spec: "Concurrency": a plugin SHOULD return ABORTED
 * when an operation is pending for the volume). A second caller fails at once instead of
 * queueing: the sidecars retry with backoff, and queued work would run on stale intent.
 */
export class KeyedLocks {
  private readonly held = new Map<string, string>();

  async run<T>(key: string, operation: string, work: () => Promise<T>): Promise<T> {
    const current = this.held.get(key);
    if (current !== undefined) throw aborted(`an operation (${current}) is already in progress for ${key}`);
    this.held.set(key, operation);
    try {
      return await work();
    } finally {
      this.held.delete(key);
    }
  }

  get size(): number {
    return this.held.size;
  }
}
