import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { commandName } from "../../src/exec/instrumented.js";
import { backoffDelay, sleep } from "../../src/util/backoff.js";
import { Semaphore } from "../../src/util/limiter.js";

function gate(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Lets queued promise callbacks run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("Semaphore", () => {
  it("runs at most `capacity` at once and grants the rest in FIFO order", async () => {
    const limiter = new Semaphore(2);
    const order: number[] = [];
    const gates = Array.from({ length: 5 }, gate);
    const runs = gates.map((g, i) =>
      limiter.run(async () => {
        order.push(i);
        await g.promise;
      }),
    );
    await settle();
    expect(order).toEqual([0, 1]);
    expect(limiter.inUse).toBe(2);
    expect(limiter.queued).toBe(3);
    gates[1]!.resolve();
    await settle();
    expect(order).toEqual([0, 1, 2]);
    for (const g of gates) g.resolve();
    await Promise.all(runs);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(limiter.peak).toBe(2);
    expect(limiter.inUse).toBe(0);
  });

  it("a waiter whose signal fires leaves the queue with the signal's reason, and its work never runs", async () => {
    const limiter = new Semaphore(1);
    const release = await limiter.acquire();
    const controller = new AbortController();
    let ran = false;
    const waiting = limiter.run(async () => {
      ran = true;
    }, controller.signal);
    const behind = limiter.acquire();
    await settle();
    expect(limiter.queued).toBe(2);
    const reason = new Error("deadline passed");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(limiter.queued).toBe(1);
    release();
    // The slot goes to the next waiter, not to the one that gave up.
    const next = await behind;
    expect(ran).toBe(false);
    expect(limiter.inUse).toBe(1);
    next();
    expect(limiter.inUse).toBe(0);
  });

  it("refuses at once with an already-fired signal, even when a slot is free", async () => {
    const limiter = new Semaphore(3);
    const reason = new Error("cancelled");
    await expect(limiter.acquire(AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(limiter.inUse).toBe(0);
  });

  it("releasing twice frees one slot", async () => {
    const limiter = new Semaphore(1);
    const release = await limiter.acquire();
    const second = limiter.acquire();
    release();
    release();
    await second;
    expect(limiter.inUse).toBe(1);
    expect(limiter.queued).toBe(0);
  });

  it("close() fails the waiters and later calls; slots held stay valid", async () => {
    const limiter = new Semaphore(1);
    const release = await limiter.acquire();
    const waiting = limiter.acquire();
    const reason = new Error("closed");
    limiter.close(reason);
    await expect(waiting).rejects.toBe(reason);
    await expect(limiter.acquire()).rejects.toBe(reason);
    release();
    expect(limiter.inUse).toBe(0);
  });

  it("frees the slot when the work fails", async () => {
    const limiter = new Semaphore(1);
    await expect(limiter.run(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(limiter.inUse).toBe(0);
  });

  it("refuses a capacity that is not a positive integer", () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => new Semaphore(bad)).toThrow(/positive integer/);
  });
});

describe("backoff", () => {
  it("doubles from the initial delay up to the cap", () => {
    const policy = { initialMs: 250, maxMs: 5000 };
    expect([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, policy))).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
  });

  it("sleep() ends early with the signal's reason", async () => {
    const controller = new AbortController();
    const pending = sleep(60_000, controller.signal);
    const reason = new Error("stop");
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });
});

describe("commandName (the command label of logs and zcsi_command_duration_seconds)", () => {
  it("names the program and its subcommand, seeing through sudo and systemd-run", () => {
    expect(commandName(["zfs", "create", "-o", "a=b", "tank/x"])).toBe("zfs create");
    expect(commandName(["sudo", "-n", "zfs", "list", "-H"])).toBe("zfs list");
    expect(commandName(["/usr/bin/systemd-run", "--scope", "--quiet", "--", "sshfs", "u@h:/x", "/mnt"])).toBe("sshfs");
    expect(commandName(["mount", "--bind", "--", "/a", "/b"])).toBe("mount");
    expect(commandName(["install", "-d", "-m", "0755", "/x"])).toBe("install");
  });
});

describe("config: maxConcurrentCommands", () => {
  const host = { name: "alice", address: "10.0.0.5", parentDataset: "tank/k8s", mountRoot: "/tank/k8s", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
  const parse = (extra: Record<string, unknown>) => parseConfig({ privateKeyFile: "/k", poolHosts: [{ ...host, ...extra }] });

  it("defaults to 4 per pool host", () => {
    expect(parse({}).poolHosts[0]?.maxConcurrentCommands).toBe(4);
    expect(parse({ maxConcurrentCommands: 2 }).poolHosts[0]?.maxConcurrentCommands).toBe(2);
  });

  it("refuses what is not an integer from 1 to 8, naming the field", () => {
    for (const bad of [0, 9, 2.5, "4", null]) expect(() => parse({ maxConcurrentCommands: bad })).toThrow(/poolHosts\[0\]\.maxConcurrentCommands must be an integer from 1 to 8/);
  });
});
