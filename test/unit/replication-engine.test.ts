import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { isZcsiError } from "../../src/errors.js";
import type { ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { createReplicationEngine, holdTag, jobStateProperty, replicaMark, replicationSnapshotName } from "../../src/replication/engine.js";
import type { ReplicationJob } from "../../src/replication/types.js";
import { validateUserProperty } from "../../src/zfs/names.js";
import { validateHoldTag } from "../../src/zfs/argv.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { fail, ok, ScriptedExecutor } from "../harness/scripted-executor.js";

/** alice (tank/k8s) and bob (pool2/k8s), never reached: the tests script their executors. */
function twoHosts(): ReturnType<typeof parseConfig> {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
  return parseConfig({
    privateKeyFile: "/nonexistent",
    poolHosts: [
      { name: "alice", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "tank/k8s", mountRoot: "/m", hostKey: key },
      { name: "bob", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "pool2/k8s", mountRoot: "/m", hostKey: key },
    ],
  });
}

describe("names the engine leaves on the pool", () => {
  it("names its snapshots by UTC second, sortable and in the zcsi-repl- namespace", () => {
    expect(replicationSnapshotName(new Date("2026-11-22T06:32:51.999Z"))).toBe("zcsi-repl-2026-11-22T063251Z");
    expect(replicationSnapshotName(new Date("2027-01-02T03:04:05Z"))).toBe("zcsi-repl-2027-01-02T030405Z");
  });

  it("holds with a per-job tag and records per-job state under a valid user property", () => {
    expect(holdTag("vol-1.bob")).toBe("zcsi-repl-vol-1.bob");
    expect(validateHoldTag(holdTag("A_b-9.x"))).toBe("zcsi-repl-A_b-9.x");
    expect(jobStateProperty("vol-1.bob")).toBe("zcsi:repl.vol-1.bob");
    // User properties are lowercase: ids differing only in case must not share one.
    const upper = jobStateProperty("Vol-1");
    expect(validateUserProperty(upper)).toBe(upper);
    expect(upper).not.toBe(jobStateProperty("vol-1"));
    expect(upper.startsWith("zcsi:repl.vol-1.")).toBe(true);
  });

  it("marks a replica with its source's host and dataset", () => {
    expect(replicaMark({ host: "alice", dataset: "tank/k8s/pvc-1" })).toBe("alice:tank/k8s/pvc-1");
  });
});

describe("job validation (before any command runs)", () => {
  /** An executor that records commands; validation must not reach it. */
  class Recorder implements Executor {
    readonly commands: string[][] = [];
    constructor(readonly host: string) {}
    async run(argv: readonly string[]): Promise<ExecResult> {
      this.commands.push([...argv]);
      return { stdout: "", stderr: "not reachable in this test", exitCode: 1 };
    }
    stream(argv: readonly string[]): Promise<ExecStream> {
      this.commands.push([...argv]);
      return Promise.reject(new Error("not reachable in this test"));
    }
    async close(): Promise<void> {}
  }
  const config = twoHosts();
  const execs = config.poolHosts.map((c) => new Recorder(c.name));
  const engine = createReplicationEngine(new PoolHosts(config.poolHosts.map((c, i) => ({ config: c, exec: execs[i]! }))));
  const good: ReplicationJob = {
    id: "pvc-1.bob",
    origin: { kind: "volume", volumeId: "alice:tank/k8s/pvc-1" },
    source: { host: "alice", dataset: "tank/k8s/pvc-1" },
    target: { host: "bob", dataset: "pool2/k8s/pvc-1" },
  };

  const cases: Array<[string, Partial<ReplicationJob>, RegExp]> = [
    ["an id with a space", { id: "a b" }, /job id/],
    ["an empty id", { id: "" }, /job id/],
    ["an id with a slash", { id: "a/b" }, /job id/],
    ["a source outside the source host's parentDataset", { source: { host: "alice", dataset: "tank/other" } }, /parentDataset tank\/k8s/],
    ["the parentDataset itself as target", { target: { host: "bob", dataset: "pool2/k8s" } }, /parentDataset pool2\/k8s/],
    ["a hostile dataset name", { target: { host: "bob", dataset: "pool2/k8s/-F" } }, /invalid dataset name/],
    ["a snapshot as target", { target: { host: "bob", dataset: "pool2/k8s/x@y" } }, /invalid dataset name/],
    ["an unknown host", { target: { host: "carol", dataset: "pool2/k8s/x" } }, /carol/],
    ["a target inside the source on one host", { target: { host: "alice", dataset: "tank/k8s/pvc-1/copy" } }, /overlap/],
    ["the source as its own target", { target: { host: "alice", dataset: "tank/k8s/pvc-1" } }, /overlap/],
    ["a zero bandwidth limit", { bandwidthBytesPerSec: 0 }, /bandwidth/],
    ["a fractional targetKeep", { targetKeep: 1.5 }, /targetKeep/],
    ["a targetKeep of 0", { targetKeep: 0 }, /targetKeep/],
  ];
  it.each(cases)("refuses %s with INVALID_ARGUMENT and runs nothing", async (_what, change, message) => {
    let err: unknown;
    try {
      await engine.replicate({ ...good, ...change });
    } catch (e) {
      err = e;
    }
    expect(isZcsiError(err, "InvalidArgument")).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect(execs.flatMap((e) => e.commands)).toEqual([]);
  });
});

describe("the run's new snapshot when reading it back fails", () => {
  const config = twoHosts();
  /** `zfs get -Hp -o name,property,value,source` lines of a dataset and its snapshots. */
  const side = (dataset: string, snapshots: Array<[string, string, number]>, own: Record<string, string> = {}): string =>
    [
      ...[["type", "filesystem"], ["guid", "1"], ["createtxg", "1"], ["creation", "1"], ["userrefs", "-"], ...Object.entries(own)].map(([p = "", v]) => `${dataset}\t${p}\t${v}\t${p.startsWith("zcsi:") ? "local" : "-"}`),
      ...snapshots.flatMap(([name, guid, txg]) =>
        [["type", "snapshot"], ["guid", guid], ["createtxg", String(txg)], ["creation", String(txg)], ["userrefs", "0"]].map(([p, v]) => `${dataset}@${name}\t${p}\t${v}\t-`),
      ),
    ].join("\n") + "\n";

  it("releases the hold placed beside the read and destroys the snapshot: no held snapshot is left that would pass for another job's base", async () => {
    let sourceReads = 0;
    const alice = new ScriptedExecutor([
      [/^zfs version/, ok("zfs-2.3.2-2\nzfs-kmod-2.3.2-2\n")],
      [/^zfs get .* -d 1 /, () => (++sourceReads === 1 ? ok(side("tank/k8s/a", [["zcsi-repl-a", "11", 10], ["zcsi-repl-b", "12", 20]])) : fail("cannot iterate: I/O error", 2))],
      [/^zfs snapshot /, ok()],
      [/^zfs hold /, ok()],
      [/^zfs release /, ok()],
      [/^zfs destroy /, ok()],
    ]);
    const bob = new ScriptedExecutor([
      [/^zfs version/, ok("zfs-2.3.2-2\nzfs-kmod-2.3.2-2\n")],
      [/^zfs get .* -d 1 /, ok(side("pool2/k8s/a", [["zcsi-repl-a", "11", 5]], { "zcsi:replica-of": "alice:tank/k8s/a" }))],
    ]);
    const engine = createReplicationEngine(new PoolHosts(config.poolHosts.map((c) => ({ config: c, exec: c.name === "alice" ? alice : bob }))));
    const job: ReplicationJob = { id: "a.bob", origin: { kind: "annotation", node: "alice" }, source: { host: "alice", dataset: "tank/k8s/a" }, target: { host: "bob", dataset: "pool2/k8s/a" } };
    await expect(engine.replicate(job)).rejects.toThrow(/I\/O error/);
    const after = (verb: string): string[] => alice.calls.map((c) => c.join(" ")).filter((c) => c.startsWith(`zfs ${verb} `));
    const [snapshot] = after("snapshot").map((c) => c.split(" ").pop());
    expect(snapshot).toMatch(/^tank\/k8s\/a@zcsi-repl-/);
    expect(after("hold")).toEqual([`zfs hold zcsi-repl-a.bob ${snapshot}`]);
    expect(after("release")).toEqual([`zfs release zcsi-repl-a.bob ${snapshot}`]);
    expect(after("destroy")).toEqual([`zfs destroy ${snapshot}`]);
  });
});
