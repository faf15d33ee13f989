/**
 * The per-volume move lock (mobility/move-lock.ts) through the real client-node adapter
 * (k8s/kube-mobility.ts) against the loopback fake API server: atomic create → exactly one of
 * two racing moves wins, the loser is told who holds it and since when; steps recorded in the
 * Lease; release deletes it; a rerun takes over an interrupted move of the same operation only.
 */
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { KubeNamedLeases } from "../../src/k8s/kube-mobility.js";
import { MOVE_ANNOTATION, moveLeaseName, MoveLocks } from "../../src/mobility/move-lock.js";
import { ManualClock, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

const logger = pino({ level: "silent" });
const VOLUME = "alice:tank/k8s/pvc-1";

let api: FakeApiServer;
let leases: KubeNamedLeases;
const clock = new ManualClock("2026-12-03T16:00:00Z");

beforeAll(async () => {
  api = await startFakeApiServer();
  leases = new KubeNamedLeases(kubeConfigFor(api.url, { token: "t", skipTLSVerify: true }), "zcsi-system");
});
afterAll(async () => {
  await api.close();
});
beforeEach(() => {
  api.leases.clear();
});

describe("the move lock", () => {
  it("names the Lease after a hash of the volume id: a valid object name, stable, distinct per volume", () => {
    expect(moveLeaseName(VOLUME)).toMatch(/^zcsi-move-[0-9a-f]{16}$/);
    expect(moveLeaseName(VOLUME)).toBe(moveLeaseName(VOLUME));
    expect(moveLeaseName("alice:tank/k8s/pvc-2")).not.toBe(moveLeaseName(VOLUME));
  });

  it("lets exactly one of two racing moves take it; the other is refused naming the holder and since when", async () => {
    const one = new MoveLocks(leases, "ops-1/100", logger, clock);
    const two = new MoveLocks(leases, "ops-2/200", logger, clock);
    const results = await Promise.allSettled([
      one.acquire({ op: "failover", volumeId: VOLUME, from: "alice", to: "bob" }),
      two.acquire({ op: "failover", volumeId: VOLUME, from: "alice", to: "carol" }),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(isZcsiError(lost[0]!.reason, "FailedPrecondition")).toBe(true);
    expect((lost[0]!.reason as Error).message).toMatch(/being moved: failover alice → (bob|carol) by ops-[12]\/[12]00, since 2026-12-03T16:00:00.000Z, at step locked/);
    // One Lease, in the namespace, with the winner's record.
    const stored = api.leases.get(moveLeaseName(VOLUME));
    expect(stored?.metadata.namespace).toBe("zcsi-system");
    expect(stored?.metadata.labels).toEqual({ "zcsi.dev/move": "true" });
    const record = JSON.parse((stored?.metadata.annotations as Record<string, string>)[MOVE_ANNOTATION]!) as Record<string, unknown>;
    expect(record).toMatchObject({ op: "failover", volumeId: VOLUME, from: "alice", step: "locked", startedAt: "2026-12-03T16:00:00.000Z" });
  });

  it("records each step in the Lease and deletes it on release, after which a new move may start", async () => {
    const locks = new MoveLocks(leases, "ops-1/100", logger, clock);
    const lock = await locks.acquire({ op: "migrate", volumeId: VOLUME, from: "alice", to: "bob" });
    await lock.step("promoted", { epoch: 2 });
    expect(await locks.current(VOLUME)).toMatchObject({ op: "migrate", step: "promoted", epoch: 2, holder: "ops-1/100" });
    await lock.release();
    expect(api.leases.size).toBe(0);
    expect(await locks.current(VOLUME)).toBeUndefined();
    const again = await locks.acquire({ op: "failover", volumeId: VOLUME, to: "bob" });
    await again.release();
  });

  it("a rerun takes over an interrupted move of the same operation (once), and never another operation's", async () => {
    const crashed = new MoveLocks(leases, "ops-1/100", logger, clock);
    const first = await crashed.acquire({ op: "failover", volumeId: VOLUME, from: "alice", to: "bob" });
    await first.step("promoted");
    await expect(new MoveLocks(leases, "ops-3/300", logger, clock).takeOver(VOLUME, "migrate")).rejects.toThrow(/not a migrate, so a migrate cannot take it over/);
    const rerun = await new MoveLocks(leases, "ops-2/200", logger, clock).takeOver(VOLUME, "failover");
    expect(rerun?.record).toMatchObject({ step: "promoted", holder: "ops-2/200", takenOverFrom: "ops-1/100" });
    // The old holder's view is stale: its next step write is refused (the Lease changed under it).
    await expect(first.step("workloads-restarted")).rejects.toMatchObject({ kind: "Aborted" });
    expect(await new MoveLocks(leases, "x", logger, clock).takeOver("alice:tank/k8s/none", "failover")).toBeUndefined();
    await rerun!.release();
    expect(api.leases.size).toBe(0);
  });
});
