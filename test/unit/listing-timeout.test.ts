import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { deadlineExceeded, isZcsiError } from "../../src/errors.js";
import { Zfs } from "../../src/zfs/client.js";
import { CEILING_FACTOR, GROWTH_FACTOR, ListingTimeouts, MAX_REMEMBERED_LISTINGS } from "../../src/zfs/listing-timeout.js";
import { ok, ScriptedExecutor } from "../harness/scripted-executor.js";

/** A clock that moves only when a listing "runs" for a while. */
function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe("listing timeouts (zfs/listing-timeout.ts)", () => {
  it("gives a listing never seen the floor", () => {
    expect(new ListingTimeouts({ floorMs: 300_000 }).timeoutFor("zfs get -d 1 tank/k8s")).toBe(300_000);
  });

  it("keeps the floor while the listing finishes well inside it", async () => {
    const c = clock();
    const t = new ListingTimeouts({ floorMs: 300_000, now: c.now });
    await t.run("L", async () => c.advance(40_000));
    expect(t.timeoutFor("L")).toBe(300_000);
  });

  it("grows to GROWTH_FACTOR × the last duration when a host got slower than a third of the floor", async () => {
    const c = clock();
    const t = new ListingTimeouts({ floorMs: 300_000, now: c.now });
    await t.run("L", async () => c.advance(150_000));
    expect(t.timeoutFor("L")).toBe(GROWTH_FACTOR * 150_000);
    expect(t.timeoutFor("another listing")).toBe(300_000);
    // ... and comes back down when the listing gets fast again.
    await t.run("L", async () => c.advance(1_000));
    expect(t.timeoutFor("L")).toBe(300_000);
  });

  it("doubles the allowance after a listing ran out of it, up to CEILING_FACTOR × the floor", async () => {
    const c = clock();
    const t = new ListingTimeouts({ floorMs: 60_000, now: c.now });
    const allowances: number[] = [];
    for (let i = 0; i < 6; i++) {
      const err = await t
        .run("L", async (timeoutMs) => {
          allowances.push(timeoutMs);
          c.advance(timeoutMs);
          throw deadlineExceeded(`zfs did not finish within ${timeoutMs} ms`);
        })
        .catch((e: unknown) => e);
      expect(isZcsiError(err, "DeadlineExceeded")).toBe(true);
    }
    expect(allowances).toEqual([60_000, 120_000, 240_000, 480_000, 480_000, 480_000]);
    expect(60_000 * CEILING_FACTOR).toBe(480_000);
    // The next run that finishes sets the allowance from its duration again.
    await t.run("L", async () => c.advance(200_000));
    expect(t.timeoutFor("L")).toBe(Math.min(480_000, GROWTH_FACTOR * 200_000));
  });

  it("learns nothing from a failure other than a timeout (an unreachable host)", async () => {
    const c = clock();
    const t = new ListingTimeouts({ floorMs: 60_000, now: c.now });
    await t.run("L", async () => c.advance(50_000));
    await t
      .run("L", async () => {
        c.advance(1_000_000);
        throw new Error("connection refused");
      })
      .catch(() => undefined);
    expect(t.timeoutFor("L")).toBe(GROWTH_FACTOR * 50_000);
  });

  it(`remembers at most ${MAX_REMEMBERED_LISTINGS} listings, forgetting the least recently run`, async () => {
    const c = clock();
    const t = new ListingTimeouts({ floorMs: 10_000, now: c.now });
    for (let i = 0; i <= MAX_REMEMBERED_LISTINGS; i++) await t.run(`L${i}`, async () => c.advance(5_000));
    expect(t.timeoutFor("L0")).toBe(10_000);
    expect(t.timeoutFor("L1")).toBe(15_000);
    expect(t.timeoutFor(`L${MAX_REMEMBERED_LISTINGS}`)).toBe(15_000);
  });
});

describe("Zfs client: which commands are listings", () => {
  it("runs a `zfs get -d` under the listing timeout and a single-dataset get under the command timeout", async () => {
    const c = clock();
    const exec = new ScriptedExecutor([
      [/^zfs get .* -d 1 /, () => (c.advance(150_000), ok("tank/k8s\tzcsi:csi-name\t-\t-\n"))],
      [/^zfs get/, ok("tank/k8s/a\ttype\tfilesystem\t-\n")],
      [/^zfs list/, ok("tank/k8s/a@s\n")],
    ]);
    const zfs = new Zfs(exec, { timeoutMs: 60_000, listingTimeoutMs: 300_000, now: c.now });
    await zfs.get(["tank/k8s"], ["zcsi:csi-name"], { depth: 1 });
    await zfs.get(["tank/k8s"], ["zcsi:csi-name"], { depth: 1 });
    await zfs.get(["tank/k8s/a"], ["type"]);
    await zfs.list("tank/k8s", { type: "snapshot", depth: 2, props: [] });
    expect(exec.options.map((o) => o?.timeoutMs)).toEqual([300_000, GROWTH_FACTOR * 150_000, 60_000, 300_000]);
  });

  it("gives the next run of a listing that timed out twice the allowance", async () => {
    const exec = new ScriptedExecutor([
      [
        /^zfs get/,
        () => {
          throw deadlineExceeded("fake: zfs did not finish within 300000 ms");
        },
      ],
    ]);
    const zfs = new Zfs(exec, { timeoutMs: 60_000, listingTimeoutMs: 300_000 });
    for (let i = 0; i < 2; i++) await zfs.get(["tank/k8s"], ["type"], { depth: 2 }).catch(() => undefined);
    expect(exec.options.map((o) => o?.timeoutMs)).toEqual([300_000, 600_000]);
  });
});

describe("config listingTimeoutMs", () => {
  const base = { privateKeyFile: "/k", poolHosts: [{ name: "alice", address: "10.0.0.1", parentDataset: "tank/k8s", mountRoot: "/m", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl" }] };
  it("defaults to 5 minutes, and never less than commandTimeoutMs", () => {
    expect(parseConfig(base).listingTimeoutMs).toBe(300_000);
    expect(parseConfig({ ...base, commandTimeoutMs: 600_000 }).listingTimeoutMs).toBe(600_000);
  });
  it("refuses a listing timeout below the command timeout, naming the field", () => {
    expect(() => parseConfig({ ...base, commandTimeoutMs: 60_000, listingTimeoutMs: 1000 })).toThrow(/listingTimeoutMs/);
  });
});
