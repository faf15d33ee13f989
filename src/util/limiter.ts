import { unavailable } from "../errors.js";

interface Waiter {
  grant(): void;
  fail(err: unknown): void;
}

/** Gives back a slot; calling it again does nothing, so `finally` blocks cannot release twice. */
export type Release = () => void;

/**
 * A counting semaphore with a FIFO queue whose waiters can give up: the one limiter zcsi uses
 * (SSH channels and commands per pool host). A waiter whose AbortSignal fires (a call's
 * deadline, a cancelled gRPC call) leaves the queue and rejects with the signal's reason; the
 * work it guarded never started, so nothing is half done.
 *
 * Hand-written rather than p-limit/p-queue: callers need acquire and release apart (an SSH
 * channel's slot is held from before it opens until it closes, across callbacks), which
 * p-limit does not offer and p-queue offers only by wrapping a promise.
 */
export class Semaphore {
  private active = 0;
  private highWater = 0;
  private closedReason: unknown;
  private readonly waiters: Waiter[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`a limiter needs a positive integer capacity, got ${capacity}`);
  }

  /** Slots held now. */
  get inUse(): number {
    return this.active;
  }

  /** Highest `inUse` seen; never above `capacity`. */
  get peak(): number {
    return this.highWater;
  }

  /** Callers waiting for a slot. */
  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Resolves with a release function once a slot is free (at once when one is and nobody
   * waits). Rejects with `signal.reason` when the signal fires first, and after `close()`.
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (this.closedReason !== undefined) return Promise.reject(this.closedReason);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.active < this.capacity && this.waiters.length === 0) return Promise.resolve(this.take());
    return new Promise<Release>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.take());
        },
        fail: (err) => {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Runs `work` in a slot and frees the slot when it settles. */
  async run<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await work();
    } finally {
      release();
    }
  }

  /** Fails every waiter and every later `acquire` with `reason`; slots already held stay valid. */
  close(reason: unknown = unavailable("the limiter was closed")): void {
    this.closedReason = reason;
    for (const waiter of this.waiters.splice(0)) waiter.fail(reason);
  }

  private take(): Release {
    this.active += 1;
    this.highWater = Math.max(this.highWater, this.active);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active -= 1;
      this.waiters.shift()?.grant();
    };
  }
}
