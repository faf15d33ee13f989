import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { bandwidthLimiter, TokenBucket } from "../../src/replication/limiter.js";
import type { Clock } from "../../src/util/clock.js";

/** A clock that moves only when told (or when the limiter "sleeps"). */
function fakeClock(start = 1_000_000): Clock & { advance(ms: number): void; ms(): number } {
  let now = start;
  return { now: () => new Date(now), advance: (ms) => void (now += ms), ms: () => now - start };
}

describe("TokenBucket", () => {
  it("lets a full bucket pass at once, then makes the caller wait off the debt at the rate", () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(1000, 1000, clock);
    expect(bucket.take(1000)).toBe(0);
    expect(bucket.take(500)).toBe(500); // 500 bytes of debt at 1000 B/s
    clock.advance(500);
    expect(bucket.available()).toBe(0);
    expect(bucket.take(250)).toBe(250);
  });

  it("refills at the rate but never beyond the burst", () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(100, 300, clock);
    bucket.take(300);
    clock.advance(1000);
    expect(bucket.available()).toBe(100);
    clock.advance(60_000);
    expect(bucket.available()).toBe(300);
  });

  it("neither mints tokens nor adds debt when the clock steps back", () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(1000, 1000, clock);
    bucket.take(600);
    clock.advance(-5000);
    expect(bucket.available()).toBe(400);
    clock.advance(5100); // start + 100 ms: only the 100 ms after the latest reading (start) count
    expect(bucket.available()).toBe(500);
    clock.advance(100);
    expect(bucket.available()).toBe(600);
  });

  it("rejects a rate or burst that is not a positive number", () => {
    for (const [rate, burst] of [[0, 1], [-1, 1], [Number.NaN, 1], [Infinity, 1], [1, 0]] as const) {
      let err: unknown;
      try {
        new TokenBucket(rate, burst, fakeClock());
      } catch (e) {
        err = e;
      }
      expect(isZcsiError(err, "InvalidArgument")).toBe(true);
    }
  });
});

describe("bandwidthLimiter", () => {
  async function pump(total: number, chunk: number, bytesPerSecond: number, burstBytes?: number): Promise<{ elapsedMs: number; received: number; arrivals: Array<[number, number]> }> {
    const clock = fakeClock();
    // Sleeping advances the fake clock: the stream's time is virtual, no wall-clock involved.
    const sleep = async (ms: number): Promise<void> => clock.advance(ms);
    let received = 0;
    const arrivals: Array<[number, number]> = [];
    const chunks = Array.from({ length: Math.ceil(total / chunk) }, (_, i) => Buffer.alloc(Math.min(chunk, total - i * chunk), i));
    await pipeline(
      Readable.from(chunks),
      bandwidthLimiter({ bytesPerSecond, clock, sleep, ...(burstBytes !== undefined && { burstBytes }) }),
      new Writable({
        write(c: Buffer, _e, cb) {
          received += c.length;
          arrivals.push([clock.ms(), received]);
          cb();
        },
      }),
    );
    return { elapsedMs: clock.ms(), received, arrivals };
  }

  it("passes every byte, in order, and takes (bytes - burst) / rate of virtual time", async () => {
    const { elapsedMs, received } = await pump(1_000_000, 16 * 1024, 100_000, 100_000);
    expect(received).toBe(1_000_000);
    // 900 000 bytes beyond the burst at 100 000 B/s: 9 s (rounded up per chunk by at most 1 ms each).
    expect(elapsedMs).toBeGreaterThanOrEqual(9000);
    expect(elapsedMs).toBeLessThan(9000 + 70);
  });

  it("never lets more than burst + rate * t through by virtual time t", async () => {
    const rate = 50_000;
    const burst = 64 * 1024;
    const { arrivals } = await pump(500_000, 10_000, rate, burst);
    for (const [t, bytes] of arrivals) expect(bytes).toBeLessThanOrEqual(burst + (rate * t) / 1000);
  });

  it("does not slow a stream that stays under the burst", async () => {
    const { elapsedMs, received } = await pump(60_000, 4096, 1_000_000);
    expect(received).toBe(60_000);
    expect(elapsedMs).toBe(0);
  });
});
