import { describe, expect, it } from "vitest";
import type { PoolHostConfig } from "../../src/config.js";
import { unavailable } from "../../src/errors.js";
import type { ExecResult, Executor } from "../../src/exec/executor.js";
import { collectStatus, formatBytes, renderStatus, STATUS_COMMANDS_PER_HOST } from "../../src/status/status.js";
import { PoolHosts } from "../../src/volumes/hosts.js";

/** Answers the status commands from canned -H output, keyed by subcommand; records every argv. */
class CannedExecutor implements Executor {
  readonly calls: string[][] = [];
  constructor(
    readonly host: string,
    private readonly answers: Partial<Record<"zpool list" | "zfs get pool" | "zfs get parent" | "zfs list", ExecResult | Error>>,
  ) {}

  async run(argv: readonly string[]): Promise<ExecResult> {
    this.calls.push([...argv]);
    const key =
      argv[0] === "zpool" ? "zpool list" : argv[1] === "list" ? "zfs list" : argv.includes("-d") ? "zfs get parent" : "zfs get pool";
    const answer = this.answers[key];
    if (answer instanceof Error) throw answer;
    return answer ?? { stdout: "", stderr: `unexpected ${argv.join(" ")}`, exitCode: 2 };
  }
  stream(): never {
    throw new Error("not used");
  }
  async close(): Promise<void> {}
}

const ok = (stdout: string): ExecResult => ({ stdout, stderr: "", exitCode: 0 });
const rows = (lines: string[][]): string => lines.map((l) => l.join("\t")).join("\n") + "\n";

function hostConfig(name: string, parentDataset = "tank/k8s"): PoolHostConfig {
  return { name, address: "192.0.2.10", port: 22, user: "zcsi", parentDataset, mountRoot: "/tank/k8s", hostKeys: ["ssh-ed25519 AAAA"], sudo: false };
}

/** `zfs get -Hp -o name,property,value,source` lines for one dataset. */
function props(dataset: string, values: Record<string, [string, string]>): string[][] {
  return Object.entries(values).map(([prop, [value, source]]) => [dataset, prop, value, source]);
}

const GiB = 1n << 30n;

function aliceAnswers(): ConstructorParameters<typeof CannedExecutor>[1] {
  return {
    "zpool list": ok(rows([["tank", "ONLINE", "9.94G", "8G", "1.94G"]])),
    "zfs get pool": ok(rows([["tank", "used", String(2n * GiB), "-"], ["tank", "available", String(8n * GiB), "-"]])),
    "zfs get parent": ok(
      rows([
        ...props("tank/k8s", { available: [String(8n * GiB), "-"], "zcsi:csi-name": ["-", "-"] }),
        ...props("tank/k8s/pvc-b", {
          "zcsi:csi-name": ["pvc-b", "local"],
          "zcsi:state": ["ready", "local"],
          "zcsi:pvc": ["default/data", "local"],
          "zcsi:pv": ["pvc-b", "local"],
          "zcsi:snapshot-schedule": ["hourly=24,daily=7", "local"],
          refquota: [String(10n * GiB), "local"],
          referenced: [String(GiB / 2n), "-"],
          used: [String(GiB), "-"],
          mountpoint: ["/tank/k8s/pvc-b", "local"],
          mounted: ["yes", "-"],
        }),
        ...props("tank/k8s/pvc-a", {
          "zcsi:csi-name": ["pvc-a", "local"],
          "zcsi:state": ["creating", "local"],
          refquota: [String(GiB), "local"],
          referenced: ["24576", "-"],
          used: ["24576", "-"],
          mountpoint: ["/tank/k8s/pvc-a", "local"],
          mounted: ["yes", "-"],
        }),
        // Someone else's dataset below the parent: csi-name only inherited, so not a volume.
        ...props("tank/k8s/manual", { "zcsi:csi-name": ["x", "inherited from tank/k8s"], refquota: ["0", "default"] }),
      ]),
    ),
    "zfs list": ok(
      rows([
        ["tank/k8s@before-upgrade"],
        ["tank/k8s/pvc-b@zcsi-auto-2026-01-01T00:00Z"],
        ["tank/k8s/pvc-b@zcsi-auto-2026-01-01T01:00Z"],
        ["tank/k8s/pvc-b@snapshot-1234"],
      ]),
    ),
  };
}

describe("collectStatus", () => {
  it("reads health, capacity, volumes and snapshot counts with a fixed number of commands per host", async () => {
    const exec = new CannedExecutor("alice", aliceAnswers());
    const status = await collectStatus(new PoolHosts([{ config: hostConfig("alice"), exec }]), { now: () => new Date("2026-01-02T03:04:05Z") });
    expect(exec.calls).toHaveLength(STATUS_COMMANDS_PER_HOST);
    expect(exec.calls).toContainEqual(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "2", "tank/k8s"]);
    expect(status.collectedAt).toBe("2026-01-02T03:04:05.000Z");
    const [host] = status.hosts;
    expect(host).toMatchObject({ name: "alice", pool: "tank", health: "ONLINE", poolSizeBytes: 10n * GiB, poolFreeBytes: 8n * GiB, availableBytes: 8n * GiB, up: true, errors: [] });
    expect(host?.volumes.map((v) => v.csiName)).toEqual(["pvc-a", "pvc-b"]);
    expect(host?.volumes[1]).toEqual({
      id: "alice:tank/k8s/pvc-b",
      poolHost: "alice",
      dataset: "tank/k8s/pvc-b",
      csiName: "pvc-b",
      pvc: "default/data",
      pv: "pvc-b",
      state: "ready",
      sizeBytes: 10n * GiB,
      usedBytes: GiB / 2n,
      usedWithSnapshotsBytes: GiB,
      mountpoint: "/tank/k8s/pvc-b",
      mounted: true,
      snapshots: { total: 3, scheduled: 2 },
      snapshotSchedule: "hourly=24,daily=7",
      // Made before roles existed: the primary at epoch 1.
      role: "primary",
      epoch: 1,
    });
    expect(host?.volumes[0]).toMatchObject({ state: "creating", snapshots: { total: 0, scheduled: 0 } });
  });

  it("reports an unreachable host with its error and still reports the others", async () => {
    const down = new CannedExecutor("bob", {
      "zpool list": unavailable("bob: connect ECONNREFUSED 192.0.2.11:22"),
      "zfs get pool": unavailable("bob: connect ECONNREFUSED 192.0.2.11:22"),
      "zfs get parent": unavailable("bob: connect ECONNREFUSED 192.0.2.11:22"),
      "zfs list": unavailable("bob: connect ECONNREFUSED 192.0.2.11:22"),
    });
    const hosts = new PoolHosts([
      { config: hostConfig("alice"), exec: new CannedExecutor("alice", aliceAnswers()) },
      { config: hostConfig("bob"), exec: down },
    ]);
    const status = await collectStatus(hosts);
    expect(status.hosts.map((h) => h.name)).toEqual(["alice", "bob"]);
    expect(status.hosts[0]?.volumes).toHaveLength(2);
    const bob = status.hosts[1];
    expect(bob?.health).toBeUndefined();
    expect([status.hosts[0]?.up, bob?.up]).toEqual([true, false]);
    expect(bob?.volumes).toEqual([]);
    expect(bob?.errors).toEqual([
      "pool tank: bob: connect ECONNREFUSED 192.0.2.11:22",
      "parent dataset tank/k8s: bob: connect ECONNREFUSED 192.0.2.11:22",
    ]);
    const text = renderStatus(status, "text");
    expect(text).toMatch(/^bob +192\.0\.2\.10:22 +tank +UNREACHABLE/m);
    expect(text).toContain("Problems:\n  bob: DOWN (its volumes are degraded; the other pool hosts serve on)\n  bob: pool tank: bob: connect ECONNREFUSED");
  });

  it("names a missing parent dataset once", async () => {
    const missing = { stdout: "", stderr: "cannot open 'tank/k8s': dataset does not exist\n", exitCode: 1 };
    const exec = new CannedExecutor("alice", { ...aliceAnswers(), "zfs get parent": missing, "zfs list": missing });
    const status = await collectStatus(new PoolHosts([{ config: hostConfig("alice"), exec }]));
    expect(status.hosts[0]?.health).toBe("ONLINE");
    expect(status.hosts[0]?.errors).toHaveLength(1);
    expect(status.hosts[0]?.errors[0]).toMatch(/^parent dataset tank\/k8s: not found/);
  });
});

describe("renderStatus", () => {
  it("prints a host table and a volume table as text", async () => {
    const status = await collectStatus(new PoolHosts([{ config: hostConfig("alice"), exec: new CannedExecutor("alice", aliceAnswers()) }]));
    expect(renderStatus(status, "text")).toBe(
      [
        "POOL HOST  ADDRESS        POOL  HEALTH  POOL SIZE  POOL FREE  PARENT    AVAILABLE  VOLUMES",
        "alice      192.0.2.10:22  tank  ONLINE  10 GiB     8 GiB      tank/k8s  8 GiB      2",
        "",
        "POOL HOST  VOLUME  PVC           ROLE       SIZE    USED     USE%  SNAPSHOTS        STATE     DATASET",
        "alice      pvc-a   -             primary@1  1 GiB   24 KiB   0%    0                creating  tank/k8s/pvc-a",
        "alice      pvc-b   default/data  primary@1  10 GiB  512 MiB  5%    3 (2 scheduled)  ready     tank/k8s/pvc-b",
        "",
      ].join("\n"),
    );
  });

  it("writes JSON with exact integers for byte counts", async () => {
    const status = await collectStatus(new PoolHosts([{ config: hostConfig("alice"), exec: new CannedExecutor("alice", aliceAnswers()) }]));
    const text = renderStatus(status, "json");
    expect(text).toContain('"sizeBytes": 10737418240');
    const parsed = JSON.parse(text) as { hosts: Array<{ health: string; volumes: Array<{ csiName: string; usedBytes: number }> }> };
    expect(parsed.hosts[0]?.health).toBe("ONLINE");
    expect(parsed.hosts[0]?.volumes.map((v) => [v.csiName, v.usedBytes])).toEqual([
      ["pvc-a", 24576],
      ["pvc-b", 536870912],
    ]);
    // Larger than 2^53: still exact in the text.
    const huge = { collectedAt: "x", copyProblems: [], hosts: [{ ...status.hosts[0]!, poolSizeBytes: (1n << 60n) + 1n }] };
    expect(renderStatus(huge, "json")).toContain(`"poolSizeBytes": ${(1n << 60n) + 1n}`);
  });
});

describe("copies of a volume in status", () => {
  it("shows each copy's role and epoch and lists a primary superseded by a newer epoch as stale", async () => {
    const bobAnswers = {
      ...aliceAnswers(),
      "zfs get parent": ok(
        rows([
          ...props("tank/k8s", { available: [String(8n * GiB), "-"] }),
          ...props("tank/k8s/pvc-b", {
            "zcsi:volume": ["alice:tank/k8s/pvc-b", "local"],
            "zcsi:role": ["primary", "local"],
            "zcsi:epoch": ["2", "local"],
            "zcsi:replica-of": ["alice:tank/k8s/pvc-b", "local"],
            refquota: [String(10n * GiB), "local"],
            referenced: [String(GiB / 2n), "-"],
            used: [String(GiB / 2n), "-"],
            mountpoint: ["/tank/k8s/pvc-b", "default"],
            mounted: ["yes", "-"],
          }),
        ]),
      ),
      "zfs list": ok(""),
    };
    const status = await collectStatus(
      new PoolHosts([
        { config: hostConfig("alice"), exec: new CannedExecutor("alice", aliceAnswers()) },
        { config: hostConfig("bob"), exec: new CannedExecutor("bob", bobAnswers) },
      ]),
    );
    const bobCopy = status.hosts[1]?.volumes[0];
    expect(bobCopy).toMatchObject({ id: "bob:tank/k8s/pvc-b", role: "primary", epoch: 2, copyOf: "alice:tank/k8s/pvc-b", csiName: "pvc-b" });
    expect(status.hosts[0]?.volumes.map((v) => [v.csiName, v.role, v.epoch])).toEqual([
      ["pvc-a", "primary", 1],
      ["pvc-b", "primary", 1],
    ]);
    expect(status.copyProblems).toEqual([expect.stringMatching(/^alice:tank\/k8s\/pvc-b: STALE copy alice:tank\/k8s\/pvc-b \(primary at epoch 1; not fenced yet: superseded by epoch 2 on bob:tank\/k8s\/pvc-b\)/)]);
    const text = renderStatus(status, "text");
    expect(text).toMatch(/bob +pvc-b +- +primary@2 /);
    expect(text).toContain("Problems:\n  alice:tank/k8s/pvc-b: STALE copy");
  });
});

describe("homes in status", () => {
  it("lists each moved volume's home with its epoch, replicas, stale copies and last move, and the diverged data a resync kept", async () => {
    const copy = (extra: Record<string, [string, string]>): Record<string, [string, string]> => ({
      "zcsi:csi-name": ["pvc-b", "local"],
      refquota: [String(10n * GiB), "local"],
      referenced: [String(GiB / 2n), "-"],
      used: [String(GiB / 2n), "-"],
      mounted: ["yes", "-"],
      ...extra,
    });
    const bobAnswers = {
      ...aliceAnswers(),
      "zfs get parent": ok(
        rows([
          ...props("tank/k8s", { available: [String(8n * GiB), "-"] }),
          ...props(
            "tank/k8s/pvc-b",
            copy({
              "zcsi:volume": ["alice:tank/k8s/pvc-b", "local"],
              "zcsi:role": ["primary", "local"],
              "zcsi:epoch": ["2", "local"],
              "zcsi:last-move": [JSON.stringify({ kind: "migrate", outcome: "done", at: "2026-12-03T02:00:00.000Z", from: "alice", to: "bob", epoch: 2, downtimeSeconds: 4.25 }), "local"],
              mountpoint: ["/tank/k8s/pvc-b", "local"],
            }),
          ),
          ...props(
            "tank/k8s/pvc-b-diverged-20261203T010000Z",
            copy({
              "zcsi:diverged": [JSON.stringify({ volume: "alice:tank/k8s/pvc-b", epoch: 1, home: "carol:tank/k8s/pvc-b", at: "2026-12-03T01:00:00.000Z" }), "local"],
              readonly: ["on", "local"],
              mountpoint: ["/tank/k8s/pvc-b-diverged-20261203T010000Z", "local"],
            }),
          ),
        ]),
      ),
      "zfs list": ok(""),
    };
    const status = await collectStatus(
      new PoolHosts([
        { config: hostConfig("alice"), exec: new CannedExecutor("alice", aliceAnswers()) },
        { config: hostConfig("bob"), exec: new CannedExecutor("bob", bobAnswers) },
      ]),
    );
    const text = renderStatus(status, "text");
    expect(text).toContain(
      "Homes:\n  alice:tank/k8s/pvc-b: home bob:tank/k8s/pvc-b (epoch 2); replicas: none; stale: alice:tank/k8s/pvc-b; last move: migrate done at 2026-12-03T02:00:00.000Z, downtime 4.3 s",
    );
    expect(text).toContain(
      "Kept diverged data:\n  bob:tank/k8s/pvc-b-diverged-20261203T010000Z: writes of alice:tank/k8s/pvc-b at epoch 1 that carol:tank/k8s/pvc-b never got; kept since 2026-12-03T01:00:00.000Z (zcsi never destroys it)",
    );
  });
});

describe("formatBytes", () => {
  it.each([
    [0n, "0 B"],
    [1023n, "1023 B"],
    [1536n, "1.5 KiB"],
    [1n << 30n, "1 GiB"],
    [(1n << 30n) * 150n, "150 GiB"],
    [1n << 63n, "8 EiB"],
  ])("%s → %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});
