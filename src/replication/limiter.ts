import { Transform, type TransformCallback } from "node:stream";
import { invalidArgument } from "../errors.js";
import type { Clock } from "../util/clock.js";

/**
 * A token bucket in bytes: `rate` tokens per second accrue up to `burst`; sending n bytes
 * spends n. Spending more than there is leaves a debt that the caller waits off, so the bytes
 * that pass by time t never exceed `burst + rate * t` (t counted from creation), whatever the
 * chunk sizes. Pure arithmetic over an injected clock: tests drive time by hand.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly clock: Clock,
  ) {
    if (!Number.isFinite(rate) || rate <= 0) throw invalidArgument(`bandwidth limit must be a positive number of bytes per second, got ${rate}`);
    if (!Number.isFinite(burst) || burst <= 0) throw invalidArgument(`burst must be a positive number of bytes, got ${burst}`);
    this.tokens = burst;
    this.last = clock.now().getTime();
  }

  private refill(): void {
    const now = this.clock.now().getTime();
    // A clock that steps back (NTP) must not mint tokens or create debt.
    const elapsed = Math.max(0, now - this.last);
    this.last = Math.max(this.last, now);
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.rate) / 1000);
  }

  /**
   * Spends `bytes` and returns how many milliseconds the caller must wait before sending them
   * (0 when the bucket had enough).
   */
  take(bytes: number): number {
    this.refill();
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** Tokens available now (negative: debt). For tests and logs. */
  available(): number {
    this.refill();
    return this.tokens;
  }
}

export interface LimiterOptions {
  readonly bytesPerSecond: number;
  /** Bucket size; default one second's worth, at least 64 KiB (one SSH channel window). */
  readonly burstBytes?: number;
  readonly clock: Clock;
  /** Injected for tests; defaults to setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A pass-through stream that holds each chunk until the bucket allows it. Backpressure does
 * the rest: while a chunk waits, the transform does not call back, its buffers fill, and the
 * upstream `zfs send` stops being read (the SSH window closes), so nothing piles up in memory.
 */
export function bandwidthLimiter(options: LimiterOptions): Transform {
  const burst = options.burstBytes ?? Math.max(options.bytesPerSecond, 64 * 1024);
  const bucket = new TokenBucket(options.bytesPerSecond, burst, options.clock);
  const sleep = options.sleep ?? defaultSleep;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      const wait = bucket.take(chunk.length);
      if (wait === 0) {
        callback(null, chunk);
        return;
      }
      sleep(wait).then(
        () => callback(null, chunk),
        (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
      );
    },
  });
}
