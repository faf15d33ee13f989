import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { aborted } from "../../src/errors.js";
import type { PvEvent } from "../../src/k8s/events.js";
import type { VolumeWorkloads } from "../../src/k8s/workloads.js";
import { drain } from "../../src/mobility/drain.js";
import { Migrator, type MigratorDeps } from "../../src/mobility/migrate.js";
import { replicateToAfterPromotion, withTarget } from "../../src/mobility/promote.js";
import { caughtUp, downtimeMs, mostFreeSpace, MOVE_STEPS, replicateToAfterMove, type CopyRef, type MigrateLock, type MigrateLocks, type MoveRecord, type MoveStep, type Promotions } from "../../src/mobility/steps.js";
import type { ReplicationJob, ReplicationResult } from "../../src/replication/types.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { ManualClock } from "../harness/fake-k8s.js";
import { FAKE_HOST_KEY, FakePoolHost, TWO_POOL_HOSTS, zcsiRejection as failure } from "../harness/fake-pool-host.js";


const config = TWO_POOL_HOSTS;
const ID = "alice:tank/k8s/pvc-1";
const A = { host: "alice", dataset: "tank/k8s/pvc-1" };
const B = { host: "bob", dataset: "pool2/k8s/pvc-1" };

/** The volume's copies and everything around a move, faked at its edges; promote/demote change the fake datasets as the real ones change ZFS. */
function world(options: { replica?: boolean; increments?: number[]; pods?: string[] } = {}) {
  const alice = new FakePoolHost("alice", new Map([[A.dataset, new Map(Object.entries({ "zcsi:csi-name": "pvc-1", "zcsi:pv": "pv-1", "zcsi:volume": ID, "zcsi:role": "primary", "zcsi:epoch": "1", "zcsi:replicate-to": "bob", "zcsi:published-to": "carol:mnmw", readonly: "off", mountpoint: "/ma/pvc-1" }))]]));
  const bob = new FakePoolHost("bob", new Map());
  const replicaProps = () => new Map(Object.entries({ "zcsi:volume": ID, "zcsi:role": "replica", "zcsi:epoch": "1", "zcsi:replica-of": ID, readonly: "on", mountpoint: "/mb/pvc-1" }));
  if (options.replica) bob.datasets.set(B.dataset, replicaProps());
  const hosts = new PoolHosts([
    { config: config.poolHosts[0]!, exec: alice },
    { config: config.poolHosts[1]!, exec: bob },
  ]);
  const logger = pino({ level: "silent" });
  const clock = new ManualClock("2026-12-03T16:00:00Z");
  const log: string[] = [];
  const increments = [...(options.increments ?? [500 * 1024 * 1024, 10 * 1024 * 1024, 1024])];
  const engine = {
    replicate: async (job: ReplicationJob): Promise<ReplicationResult> => {
      log.push(`replicate ${job.source.host}->${job.target.host}`);
      if (!bob.datasets.has(B.dataset)) bob.datasets.set(B.dataset, replicaProps());
      clock.advance(1000);
      return { jobId: job.id, action: "incremental", snapshot: "s", guid: "1", snapshotCreatedAt: 0, bytes: increments.shift() ?? 0, durationMs: 1000 };
    },
    releaseHolds: async () => undefined,
  };
  const promotions: Promotions & { promoted: number } = {
    promoted: 0,
    async promote(volumeId: string, copy: CopyRef) {
      this.promoted++;
      log.push(`promote ${copy.host}`);
      const ds = bob.datasets.get(copy.dataset)!;
      for (const [k, v] of Object.entries({ "zcsi:role": "primary", "zcsi:epoch": "2", "zcsi:csi-name": "pvc-1", "zcsi:pv": "pv-1", readonly: "off" })) ds.set(k, v);
      ds.delete("zcsi:replica-of");
      return { epoch: 2 };
    },
    async demote(volumeId: string, copy: CopyRef, home: CopyRef) {
      log.push(`demote ${copy.host}`);
      const ds = alice.datasets.get(copy.dataset)!;
      for (const [k, v] of Object.entries({ "zcsi:role": "replica", "zcsi:epoch": "2", "zcsi:replica-of": `${home.host}:${home.dataset}`, readonly: "on" })) ds.set(k, v);
      ds.delete("zcsi:fenced");
    },
  };
  let stored: MoveRecord | undefined;
  let held = false;
  const locks: MigrateLocks & { readonly record: MoveRecord | undefined; expire(): void } = {
    get record() {
      return stored;
    },
    /** The holder died: the lock can be taken again, its record stays. */
    expire() {
      held = false;
    },
    async acquire(): Promise<MigrateLock> {
      if (held) throw aborted("volume's move lock is held");
      held = true;
      return {
        record: stored,
        save: async (r) => {
          stored = r;
        },
        release: async () => {
          stored = undefined;
          held = false;
        },
        leave: async () => {
          held = false;
        },
      };
    },
  };
  let pods = options.pods ?? ["web-0"];
  let attachments = ["csi-1"];
  const workloads: VolumeWorkloads & { detachOnDelete: boolean } = {
    detachOnDelete: true,
    pvClaim: async (name) => (name === "pv-1" ? { namespace: "apps", name: "data" } : undefined),
    attachments: async (pv, attacher) => (pv === "pv-1" && attacher === "zfs.zcsi.dev" ? attachments : []),
    deleteAttachment: async () => false,
    podsUsing: async (claim) => (claim.namespace === "apps" && claim.name === "data" ? pods : []),
    async deletePod(namespace, name) {
      log.push(`delete pod ${name}`);
      // Until the attaches are blocked, a deleted pod would just re-attach: the block comes first.
      expect(alice.datasets.get(A.dataset)!.get("zcsi:moving")).toMatch(/^bob@/);
      pods = pods.filter((p) => p !== name);
      if (this.detachOnDelete) {
        // kubelet unstages, the attacher calls ControllerUnpublish and removes the VolumeAttachment.
        alice.datasets.get(A.dataset)!.delete("zcsi:published-to");
        attachments = [];
      }
      return true;
    },
  };
  const events: PvEvent[] = [];
  const annotations = new Map<string, Record<string, string | null>>();
  const pvs = {
    annotate: async (pv: string, patch: Readonly<Record<string, string | null>>): Promise<boolean> => {
      annotations.set(pv, { ...annotations.get(pv), ...patch });
      return true;
    },
  };
  const deps = (afterStep?: MigratorDeps["afterStep"]): MigratorDeps => ({
    hosts,
    homes: new VolumeHomes(hosts, logger),
    engine,
    locks,
    promotions,
    workloads,
    driverName: "zfs.zcsi.dev",
    events: { record: async (e) => void events.push(e) },
    pvs,
    clock,
    logger,
    sleep: async (ms) => clock.advance(ms),
    ...(afterStep && { afterStep }),
  });
  const home = async () => (await new VolumeHomes(hosts, logger).find(ID)).home;
  return { alice, bob, hosts, clock, log, promotions, locks, workloads, events, annotations, deps, home };
}


describe("zcsi migrate, step by step", () => {
  it("catches up until the increment is small, blocks, restarts the pods, sends the last increment, promotes, demotes, turns replication around and releases", async () => {
    const w = world({ replica: true });
    const result = await new Migrator(w.deps()).migrate(ID, "bob", { maxFinalDeltaBytes: 64 * 1024 * 1024 });
    // 500 MiB, then 10 MiB (small enough): two catch-up runs; then the final one (1 KiB).
    expect(w.log).toEqual(["replicate alice->bob", "replicate alice->bob", "delete pod web-0", "replicate alice->bob", "promote bob", "demote alice"]);
    expect(result).toMatchObject({ from: `alice:${A.dataset}`, to: `bob:${B.dataset}`, epoch: 2, finalBytes: 1024, restartedPods: ["apps/web-0"], resumed: false });
    // Blocked before the pod restart, released at the end: the final run's second on the manual clock.
    expect(result.downtimeMs).toBe(1000);
    expect(await w.home()).toMatchObject({ host: "bob", epoch: 2 });
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(w.bob.datasets.get(B.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(w.bob.datasets.get(B.dataset)!.get("zcsi:replicate-to")).toBe("alice");
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:replicate-to")).toBeUndefined();
    expect(w.locks.record).toBeUndefined();
    expect(w.events).toEqual([expect.objectContaining({ pvName: "pv-1", type: "Normal", reason: "VolumeMigrated", message: expect.stringContaining("final increment 1024 bytes") })]);
    // What people see: the PV names the new home; the new home records the move for the replicator's metrics.
    expect(w.annotations.get("pv-1")).toEqual({ "zcsi.dev/home": `bob:${B.dataset} epoch=2` });
    expect(JSON.parse(w.bob.datasets.get(B.dataset)!.get("zcsi:last-move")!)).toEqual({ kind: "migrate", outcome: "done", at: expect.any(String), from: "alice", to: "bob", epoch: 2, downtimeSeconds: 1 });
  });

  it("gives up catching up after the last round when the volume is written faster than it is sent", async () => {
    const w = world({ increments: [900, 900, 900, 5] });
    const result = await new Migrator(w.deps()).migrate(ID, "bob", { maxFinalDeltaBytes: 100, maxCatchUpRounds: 3 });
    expect(w.log.filter((l) => l.startsWith("replicate"))).toHaveLength(4);
    expect(result.finalBytes).toBe(5);
  });

  it.each(MOVE_STEPS.filter((s) => s !== "done"))("killed after step %s, a rerun finishes the move: one primary, promoted once, nothing blocked", async (killAt) => {
    const w = world({ replica: true });
    const killed = async (step: MoveStep): Promise<void> => {
      if (step === killAt) throw new Error(`killed after ${step}`);
    };
    await expect(new Migrator(w.deps(killed)).migrate(ID, "bob")).rejects.toThrow(`killed after ${killAt}`);
    expect(w.locks.record?.step).toBe(killAt);
    const blockedAt = w.locks.record?.blockedAt;
    // Attaches stay blocked wherever the home is meanwhile.
    const home = await w.home();
    if (blockedAt !== undefined) expect(home?.moving).toBe(`bob@${blockedAt}`);
    // The CLI died; its lock expires, its record stays for the rerun.
    w.locks.expire();
    const result = await new Migrator(w.deps()).migrate(ID, "bob");
    expect(result).toMatchObject({ to: `bob:${B.dataset}`, epoch: 2, resumed: true });
    if (blockedAt !== undefined) expect(result.downtimeMs).toBe(w.clock.now().getTime() - Date.parse(blockedAt));
    expect(w.promotions.promoted).toBe(1);
    const copies = await new VolumeHomes(w.hosts, pino({ level: "silent" })).find(ID);
    expect(copies.live.map((c) => c.host)).toEqual(["bob"]);
    expect(copies.home).toMatchObject({ host: "bob", epoch: 2 });
    expect(copies.replicas.map((c) => c.host)).toEqual(["alice"]);
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(w.bob.datasets.get(B.dataset)!.get("zcsi:replicate-to")).toBe("alice");
    expect(w.locks.record).toBeUndefined();
  });

  it("killed after the promotion but before recording it, a rerun does not promote again", async () => {
    const w = world({ replica: true });
    const real = w.promotions.promote.bind(w.promotions);
    w.promotions.promote = async (volumeId, copy) => {
      await real(volumeId, copy);
      throw new Error("killed inside promote");
    };
    await expect(new Migrator(w.deps()).migrate(ID, "bob")).rejects.toThrow("killed inside promote");
    expect(w.locks.record?.step).toBe("final-sent");
    w.locks.expire();
    w.promotions.promote = real;
    expect(await new Migrator(w.deps()).migrate(ID, "bob")).toMatchObject({ epoch: 2 });
    expect(w.promotions.promoted).toBe(1);
    expect(await w.home()).toMatchObject({ host: "bob", epoch: 2 });
  });

  it("refuses a host that is not configured, the current home and an unknown volume, and changes nothing", async () => {
    const w = world({ replica: true });
    const m = new Migrator(w.deps());
    expect(await failure(m.migrate(ID, "dave"))).toMatchObject({ kind: "InvalidArgument", message: expect.stringContaining('no pool host named "dave"') });
    expect(await failure(m.migrate(ID, "alice"))).toMatchObject({ kind: "InvalidArgument", message: expect.stringContaining("already lives on alice") });
    expect(await failure(m.migrate("alice:tank/k8s/pvc-nope", "bob"))).toMatchObject({ kind: "NotFound" });
    expect(await failure(m.migrate("zed:tank/k8s/pvc-1", "bob"))).toMatchObject({ kind: "NotFound" });
    expect(w.log).toEqual([]);
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(w.alice.commands.filter((c) => c[1] === "set" || c[1] === "inherit")).toEqual([]);
    expect(w.locks.record).toBeUndefined();
  });

  it("undoes the move when the nodes do not let go in time: the old home serves again, nothing promoted", async () => {
    const w = world({ replica: true });
    w.workloads.detachOnDelete = false;
    const err = await failure(new Migrator(w.deps()).migrate(ID, "bob", { detachTimeoutMs: 30_000, pollMs: 1000 }));
    expect(err.kind).toBe("FailedPrecondition");
    expect(err.message).toContain("published to node carol");
    expect(err.message).toContain("the move is undone");
    expect(w.promotions.promoted).toBe(0);
    expect(await w.home()).toMatchObject({ host: "alice", epoch: 1 });
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(w.locks.record).toBeUndefined();
    expect(JSON.parse(w.alice.datasets.get(A.dataset)!.get("zcsi:last-move")!)).toMatchObject({ kind: "migrate", outcome: "undone", from: "alice", to: "bob" });
    expect(w.annotations.size).toBe(0);
  });

  it("an unfinished move blocks other moves; --abort before the promotion undoes it, after the promotion it refuses", async () => {
    const w = world({ replica: true });
    const stopAt = (at: MoveStep) => async (step: MoveStep) => {
      if (step === at) throw new Error("killed");
    };
    await expect(new Migrator(w.deps(stopAt("detached"))).migrate(ID, "bob")).rejects.toThrow("killed");
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toMatch(/^bob@2026-12-03T/);
    w.locks.expire();
    expect(await failure(new Migrator(w.deps()).migrate(ID, "alice"))).toMatchObject({ kind: "FailedPrecondition", message: expect.stringContaining("unfinished move to bob") });
    w.locks.expire();
    expect(await new Migrator(w.deps()).abort(ID)).toEqual({ undone: true, to: "bob" });
    expect(JSON.parse(w.alice.datasets.get(A.dataset)!.get("zcsi:last-move")!)).toMatchObject({ kind: "migrate", outcome: "undone", from: "alice", to: "bob" });
    expect(w.alice.datasets.get(A.dataset)!.get("zcsi:moving")).toBeUndefined();
    expect(await w.home()).toMatchObject({ host: "alice", epoch: 1 });
    expect(w.locks.record).toBeUndefined();

    await expect(new Migrator(w.deps(stopAt("promoted"))).migrate(ID, "bob")).rejects.toThrow("killed");
    w.locks.expire();
    expect(await failure(new Migrator(w.deps()).abort(ID))).toMatchObject({ kind: "FailedPrecondition", message: expect.stringContaining("can only be finished") });
  });
});

describe("zcsi drain", () => {
  const three = parseConfig({
    privateKeyFile: "/nonexistent",
    poolHosts: ["alice", "bob", "carol"].map((name) => ({ name, address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: `${name}p/k8s`, mountRoot: `/m${name}`, hostKey: FAKE_HOST_KEY })),
  });
  const primary = (host: string, leaf: string, extra: Record<string, string> = {}) =>
    new Map(Object.entries({ "zcsi:csi-name": leaf, "zcsi:volume": `${host}:${host}p/k8s/${leaf}`, "zcsi:role": "primary", "zcsi:epoch": "1", readonly: "off", mountpoint: `/m${host}/${leaf}`, ...extra }));
  const replica = (of: string, leaf: string) => new Map(Object.entries({ "zcsi:volume": `${of}:${of}p/k8s/${leaf}`, "zcsi:role": "replica", "zcsi:epoch": "1", "zcsi:replica-of": `${of}:${of}p/k8s/${leaf}`, readonly: "on" }));

  it("moves every volume whose home is the host, to its replica's host or else the host with the most free space; one failure does not stop the rest", async () => {
    const alice = new FakePoolHost("alice", new Map([["alicep/k8s/pvc-a", primary("alice", "pvc-a")], ["alicep/k8s/pvc-b", primary("alice", "pvc-b")], ["alicep/k8s/pvc-c", primary("alice", "pvc-c")], ["alicep/k8s/pvc-r", replica("bob", "pvc-r")]]));
    const bob = new FakePoolHost("bob", new Map([["bobp/k8s", new Map([["available", "9000"]])], ["bobp/k8s/pvc-r", primary("bob", "pvc-r")]]));
    const carol = new FakePoolHost("carol", new Map([["carolp/k8s", new Map([["available", "5000"]])], ["carolp/k8s/pvc-b", replica("alice", "pvc-b")]]));
    const hosts = new PoolHosts(three.poolHosts.map((c, i) => ({ config: c, exec: [alice, bob, carol][i]! })));
    const logger = pino({ level: "silent" });
    const moved: string[] = [];
    const migrator = {
      migrate: async (volumeId: string, to: string) => {
        if (volumeId.endsWith("pvc-c")) throw aborted("the volume's move lock is held");
        moved.push(`${volumeId} -> ${to}`);
        return { volumeId, from: volumeId, to, restartedPods: [], resumed: false };
      },
    };
    const outcomes = await drain({ hosts, homes: new VolumeHomes(hosts, logger), migrator, logger }, "alice", { parallel: 2 });
    // pvc-r's home is bob (alice has its replica): not drained.
    expect(moved.sort()).toEqual(["alice:alicep/k8s/pvc-a -> bob", "alice:alicep/k8s/pvc-b -> carol"]);
    expect(outcomes.map((o) => [o.volumeId, o.to, o.error === undefined])).toEqual([
      ["alice:alicep/k8s/pvc-a", "bob", true],
      ["alice:alicep/k8s/pvc-b", "carol", true],
      ["alice:alicep/k8s/pvc-c", "bob", false],
    ]);
    // --to wins; the drained host and unknown hosts are refused before anything moves.
    moved.length = 0;
    await drain({ hosts, homes: new VolumeHomes(hosts, logger), migrator, logger }, "alice", { to: "bob" });
    expect(moved.sort()).toEqual(["alice:alicep/k8s/pvc-a -> bob", "alice:alicep/k8s/pvc-b -> bob"]);
    expect(await failure(drain({ hosts, homes: new VolumeHomes(hosts, logger), migrator, logger }, "alice", { to: "alice" }))).toMatchObject({ kind: "InvalidArgument" });
    expect(await failure(drain({ hosts, homes: new VolumeHomes(hosts, logger), migrator, logger }, "dave"))).toMatchObject({ kind: "InvalidArgument" });
  });
});

describe("a move's pure parts", () => {
  it("a promotion drops only the new home from zcsi:replicate-to; the old home comes back in when it is a replica", () => {
    expect(replicateToAfterPromotion("bob,carol", "bob")).toBe("carol");
    expect(replicateToAfterPromotion("bob", "bob")).toBeUndefined();
    expect(replicateToAfterPromotion(undefined, "bob")).toBeUndefined();
    expect(withTarget("carol", "alice")).toBe("carol,alice");
    expect(withTarget("carol,alice", "alice")).toBe("carol,alice");
    expect(withTarget(undefined, "alice")).toBe("alice");
  });

  it("turns zcsi:replicate-to around: the old home in, the new home out, the others kept", () => {
    expect(replicateToAfterMove("bob", "alice", "bob")).toBe("alice");
    expect(replicateToAfterMove("bob,carol", "alice", "bob")).toBe("alice,carol");
    expect(replicateToAfterMove(undefined, "alice", "bob")).toBe("alice");
    expect(replicateToAfterMove("carol, alice", "alice", "bob")).toBe("carol,alice");
  });
  it("stops catching up on a small increment or when rounds run out", () => {
    expect(caughtUp(10, 1, { maxFinalDeltaBytes: 10, maxRounds: 5 })).toBe(true);
    expect(caughtUp(11, 4, { maxFinalDeltaBytes: 10, maxRounds: 5 })).toBe(false);
    expect(caughtUp(11, 5, { maxFinalDeltaBytes: 10, maxRounds: 5 })).toBe(true);
  });
  it("measures the downtime from the block's recorded start", () => {
    expect(downtimeMs("2026-12-03T16:00:00.000Z", new Date("2026-12-03T16:00:02.500Z"))).toBe(2500);
    expect(downtimeMs(undefined, new Date())).toBeUndefined();
    expect(downtimeMs("garbage", new Date())).toBeUndefined();
  });
  it("picks the host with the most free space, by name on a tie", () => {
    expect(mostFreeSpace(new Map([["bob", 10n], ["carol", 20n]]))).toBe("carol");
    expect(mostFreeSpace(new Map([["carol", 20n], ["bob", 20n]]))).toBe("bob");
    expect(mostFreeSpace(new Map())).toBeUndefined();
  });
});
