import { describe, expect, it } from "vitest";
import { Node } from "kubernetes-models/v1";
import { parseConfig, type PoolHostConfig } from "../../src/config.js";
import { nodeFromObject, nodesFromList, type NodeInfo } from "../../src/k8s/nodes.js";
import { annotationJobs, replicationJobId, sourcePruneOfCopy, volumeJobs, withoutStaleTargets } from "../../src/replication/jobs.js";
import { jobStateProperty } from "../../src/replication/bookkeeping.js";
import { parseGet } from "../../src/zfs/parse.js";
import { k8sFixture } from "../harness/fake-k8s.js";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gQ0PnCqYcZ6m6gZ1vIjxbnT4LkQm2R2wqkz9E5S9y";
const config = parseConfig({
  privateKeyFile: "/etc/zcsi/ssh/id_ed25519",
  poolHosts: ["pool-1", "pool-2", "pool-3"].map((name) => ({ name, address: `${name}.example`, parentDataset: "tank/k8s", mountRoot: "/tank/k8s", hostKey: KEY })),
});
const HOSTS: readonly PoolHostConfig[] = config.poolHosts;
const MINUTE = 60;

const node = (name: string): NodeInfo => nodeFromObject(k8sFixture(name));
const summary = (set: ReturnType<typeof annotationJobs>): string[] =>
  set.jobs.map((j) => `${j.job.source.host}:${j.job.source.dataset} -> ${j.job.target.host}:${j.job.target.dataset}`).sort();

describe("Node fixtures", () => {
  it.each(["node-pool-1-source", "node-pool-2-replica", "node-pool-2-replica-changed", "node-pool-3-second-master", "node-worker-unlabelled"])(
    "%s is a valid v1 Node",
    (name) => {
      expect(() => new Node(k8sFixture(name) as ConstructorParameters<typeof Node>[0]).validate()).not.toThrow();
    },
  );
  it("reads name, labels and annotations from a Node and from a NodeList", () => {
    const info = node("node-pool-1-source");
    expect(info.name).toBe("pool-1");
    expect(info.labels["zcsi.dev/replication"]).toBe("true");
    expect(info.annotations["zcsi.dev/replication-source"]).toBe("tank/k8s/apps/db,tank/k8s/apps/www");
    const list = nodesFromList({ apiVersion: "v1", kind: "NodeList", metadata: { resourceVersion: "1051900" }, items: [k8sFixture("node-pool-1-source"), k8sFixture("node-pool-2-replica")] });
    expect(list.map((n) => n.name)).toEqual(["pool-1", "pool-2"]);
    expect(() => nodeFromObject({ kind: "Node" })).toThrow(/metadata.name/);
  });
});

describe("annotationJobs (recorded-shape Node objects)", () => {
  it("makes one job per replica entry from the datasets the source node masters", () => {
    const set = annotationJobs([node("node-pool-1-source"), node("node-pool-2-replica")], HOSTS, 15 * MINUTE);
    expect(summary(set)).toEqual(["pool-1:tank/k8s/apps/db -> pool-2:tank/k8s/apps/db", "pool-1:tank/k8s/apps/www -> pool-2:tank/k8s/replicas/www"]);
    expect(set.problems).toEqual([]);
    for (const { job, intervalSeconds } of set.jobs) {
      expect(job.origin).toEqual({ kind: "annotation", node: "pool-2" });
      expect(job.id).toMatch(/^[A-Za-z0-9_.-]+$/);
      expect(intervalSeconds).toBe(15 * MINUTE);
    }
  });

  it("changes the jobs when the annotations change (same node, newer object)", () => {
    const before = annotationJobs([node("node-pool-1-source"), node("node-pool-2-replica")], HOSTS, 15 * MINUTE);
    const after = annotationJobs([node("node-pool-1-source"), node("node-pool-2-replica-changed")], HOSTS, 15 * MINUTE);
    expect(summary(after)).toEqual(["pool-1:tank/k8s/apps/db -> pool-2:tank/k8s/apps/db"]);
    // The job that stays keeps its id (its holds and metrics stay its own); the other one is gone.
    const db = (s: typeof before) => s.jobs.find((j) => j.job.source.dataset === "tank/k8s/apps/db")!.job.id;
    expect(db(after)).toBe(db(before));
    expect(after.jobs.map((j) => j.job.id)).not.toContain(before.jobs.find((j) => j.job.source.dataset === "tank/k8s/apps/www")!.job.id);
  });

  it("reports a dataset with two masters and makes no job for it, while other datasets keep theirs", () => {
    const set = annotationJobs([node("node-pool-1-source"), node("node-pool-2-replica"), node("node-pool-3-second-master")], HOSTS, 15 * MINUTE);
    expect(summary(set)).toEqual(["pool-1:tank/k8s/apps/www -> pool-2:tank/k8s/replicas/www", "pool-1:tank/k8s/apps/www -> pool-3:tank/k8s/apps/www"]);
    expect(set.problems).toContainEqual({ where: "dataset tank/k8s/apps/db", message: expect.stringMatching(/mastered by pool-1 and pool-3.*exactly one master/) });
  });

  it("ignores a node without the label, and says so", () => {
    const set = annotationJobs([node("node-pool-1-source"), node("node-worker-unlabelled")], HOSTS, 15 * MINUTE);
    expect(set.jobs).toEqual([]);
    expect(set.problems).toEqual([{ where: "node worker-1", message: expect.stringMatching(/not the label zcsi.dev\/replication=true/) }]);
  });

  const labelled = (name: string, annotations: Record<string, string>): NodeInfo => ({ name, labels: { "zcsi.dev/replication": "true" }, annotations });

  it.each([
    ["a dataset outside the host's parentDataset", { "zcsi.dev/replication-source": "tank/db" }, /not below tank\/k8s, the parentDataset of pool host pool-1/],
    ["a dataset in another pool", { "zcsi.dev/replication-source": "other/k8s/apps/db" }, /not below tank\/k8s/],
    ["the parentDataset itself", { "zcsi.dev/replication-source": "tank/k8s" }, /not below tank\/k8s/],
    ["a direct child of the parentDataset (a volume's place)", { "zcsi.dev/replication-source": "tank/k8s/pvc-1" }, /direct child of tank\/k8s, where volumes live/],
    ["an invalid name", { "zcsi.dev/replication-source": "tank/k8s/a b" }, /invalid dataset name/],
    ["an option-like name", { "zcsi.dev/replication-source": "tank/k8s/apps/-R" }, /starts with "-"/],
  ])("refuses %s as a source", (_what, annotations, message) => {
    const set = annotationJobs([labelled("pool-1", annotations), labelled("pool-2", { "zcsi.dev/replication-replica": annotations["zcsi.dev/replication-source"]! })], HOSTS, 900);
    expect(set.jobs).toEqual([]);
    expect(set.problems.map((p) => p.message)).toContainEqual(expect.stringMatching(message));
  });

  it("refuses replicas nobody masters, on the master itself, onto invalid or doubly used targets", () => {
    const set = annotationJobs(
      [
        labelled("pool-1", { "zcsi.dev/replication-source": "tank/k8s/a/db,tank/k8s/a/x,tank/k8s/a/y", "zcsi.dev/replication-replica": "tank/k8s/a/db" }),
        labelled("pool-2", { "zcsi.dev/replication-replica": "tank/k8s/a/nobody,tank/k8s/a/x=tank/k8s/b/xy,tank/k8s/a/y=tank/k8s/b/xy,tank/k8s/a/db=other/k8s/a/db" }),
        labelled("elsewhere", { "zcsi.dev/replication-source": "tank/k8s/a/z" }),
      ],
      HOSTS,
      900,
    );
    expect(set.problems.map((p) => `${p.where}: ${p.message}`)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^node pool-1: .*tank\/k8s\/a\/db is mastered by this same node/),
        expect.stringMatching(/^node pool-2: .*no labelled node masters "tank\/k8s\/a\/nobody"/),
        expect.stringMatching(/^node pool-2: .*tank\/k8s\/b\/xy would receive tank\/k8s\/a\/x and tank\/k8s\/a\/y/),
        expect.stringMatching(/^node pool-2: .*other\/k8s\/a\/db is not below tank\/k8s/),
        expect.stringMatching(/^node elsewhere: .*not a pool host in the config/),
      ]),
    );
    // Every replica entry above had a problem: no job at all, rather than a guess.
    expect(summary(set)).toEqual([]);
  });

  it("does not replicate a replica onward", () => {
    const set = annotationJobs(
      [
        labelled("pool-1", { "zcsi.dev/replication-source": "tank/k8s/a/db" }),
        labelled("pool-2", { "zcsi.dev/replication-replica": "tank/k8s/a/db=tank/k8s/a/copy", "zcsi.dev/replication-source": "tank/k8s/a/copy" }),
        labelled("pool-3", { "zcsi.dev/replication-replica": "tank/k8s/a/copy" }),
      ],
      HOSTS,
      900,
    );
    expect(summary(set)).toEqual(["pool-1:tank/k8s/a/db -> pool-2:tank/k8s/a/copy"]);
    expect(set.problems).toEqual([{ where: "dataset tank/k8s/a/copy", message: expect.stringMatching(/both receives a replica and is annotated as a source/) }]);
  });
});

describe("volumeJobs", () => {
  const line = (name: string, prop: string, value: string, source = "local") => `${name}\t${prop}\t${value}\t${source}\n`;
  const discovery = (rows: string[]) => parseGet(rows.join(""));
  const host = HOSTS[0]!;

  it("makes one job per target into <target parentDataset>/<leaf>, with the volume's interval and PV", () => {
    const set = volumeJobs(
      host,
      discovery([
        line("tank/k8s", "zcsi:csi-name", "-", "-"),
        line("tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1"),
        line("tank/k8s/pvc-1", "zcsi:pv", "pvc-1"),
        line("tank/k8s/pvc-1", "zcsi:replicate-to", "pool-2,pool-3"),
        line("tank/k8s/pvc-1", "zcsi:replication-interval", "1h"),
        line("tank/k8s/pvc-2", "zcsi:csi-name", "pvc-2"),
        line("tank/k8s/pvc-2", "zcsi:replicate-to", "-", "-"),
      ]),
      HOSTS,
    );
    expect(set.problems).toEqual([]);
    expect(set.jobs.map((j) => ({ ...j, job: { ...j.job, id: "x" } }))).toEqual(
      ["pool-2", "pool-3"].map((t) => ({
        job: { id: "x", origin: { kind: "volume", volumeId: "pool-1:tank/k8s/pvc-1" }, source: { host: "pool-1", dataset: "tank/k8s/pvc-1" }, target: { host: t, dataset: "tank/k8s/pvc-1" } },
        intervalSeconds: 3600,
        pvName: "pvc-1",
      })),
    );
    expect(new Set(set.jobs.map((j) => j.job.id)).size).toBe(2);
  });

  it("after a failover, replicates to the replicas and not to the old home's stale copy (fenced, or still saying primary) until it is resynced", () => {
    // pvc-1 born on pool-1, failed over to pool-2, whose list still names pool-1 (written before stale hosts were kept out).
    const onPool2 = discovery([
      line("tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1"),
      line("tank/k8s/pvc-1", "zcsi:volume", "pool-1:tank/k8s/pvc-1"),
      line("tank/k8s/pvc-1", "zcsi:role", "primary"),
      line("tank/k8s/pvc-1", "zcsi:epoch", "2"),
      line("tank/k8s/pvc-1", "zcsi:replicate-to", "pool-3,pool-1"),
    ]);
    const jobs = volumeJobs(HOSTS[1]!, onPool2, HOSTS);
    const replica = discovery([line("tank/k8s/pvc-1", "zcsi:role", "replica"), line("tank/k8s/pvc-1", "zcsi:replica-of", "pool-1:tank/k8s/pvc-1")]);
    const targets = (set: ReturnType<typeof volumeJobs>) => set.jobs.map((j) => j.job.target.host).sort();
    for (const stale of [
      discovery([line("tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1"), line("tank/k8s/pvc-1", "zcsi:role", "primary")]),
      discovery([line("tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1"), line("tank/k8s/pvc-1", "zcsi:fenced", "superseded by epoch 2 on pool-2:tank/k8s/pvc-1")]),
    ]) {
      const set = withoutStaleTargets(jobs, new Map([["pool-1", stale], ["pool-3", replica]]));
      expect(targets(set)).toEqual(["pool-3"]);
      expect(set.problems).toEqual([{ where: "volume pool-1:tank/k8s/pvc-1", message: expect.stringMatching(/target pool-1:tank\/k8s\/pvc-1 is a stale copy .*zcsi resync/) as unknown }]);
    }
    // Resynced (a replica), or not listed this pass (unknown: the engine still judges): kept.
    expect(targets(withoutStaleTargets(jobs, new Map([["pool-1", replica], ["pool-3", replica]])))).toEqual(["pool-1", "pool-3"]);
    expect(targets(withoutStaleTargets(jobs, new Map([["pool-3", replica]])))).toEqual(["pool-1", "pool-3"]);
    // A dataset with no zcsi identity is no copy of the volume, stale or not: kept, and the engine refuses to receive into it (a counted failure).
    const foreign = discovery([line("tank/k8s/pvc-1", "compression", "off")]);
    const withForeign = withoutStaleTargets(jobs, new Map([["pool-1", foreign], ["pool-3", replica]]));
    expect(targets(withForeign)).toEqual(["pool-1", "pool-3"]);
    expect(withForeign.problems).toEqual([]);
  });

  it("carries the volume's bandwidth limit into each of its jobs; a bad stored value replicates unlimited and is reported", () => {
    const set = volumeJobs(
      host,
      discovery([
        line("tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1"),
        line("tank/k8s/pvc-1", "zcsi:replicate-to", "pool-2,pool-3"),
        line("tank/k8s/pvc-1", "zcsi:replication-bandwidth", "52428800"),
        line("tank/k8s/pvc-2", "zcsi:csi-name", "pvc-2"),
        line("tank/k8s/pvc-2", "zcsi:replicate-to", "pool-2"),
        line("tank/k8s/pvc-2", "zcsi:replication-bandwidth", "50Mi"),
      ]),
      HOSTS,
    );
    const limits = Object.fromEntries(set.jobs.map((j) => [`${j.job.source.dataset}->${j.job.target.host}`, j.job.bandwidthBytesPerSec]));
    expect(limits).toEqual({ "tank/k8s/pvc-1->pool-2": 52428800, "tank/k8s/pvc-1->pool-3": 52428800, "tank/k8s/pvc-2->pool-2": undefined });
    expect(set.problems).toEqual([{ where: "volume pool-1:tank/k8s/pvc-2", message: expect.stringMatching(/zcsi:replication-bandwidth="50Mi" .*without a limit/) }]);
  });

  it("gives annotation jobs the role's bandwidth limit when one is set", () => {
    const nodes = [node("node-pool-1-source"), node("node-pool-2-replica")];
    const limited = annotationJobs(nodes, HOSTS, 15 * MINUTE, 8 * 2 ** 20).jobs;
    expect(limited.length).toBeGreaterThan(0);
    expect(limited.map((j) => j.job.bandwidthBytesPerSec)).toEqual(limited.map(() => 8 * 2 ** 20));
    expect(annotationJobs(nodes, HOSTS, 15 * MINUTE).jobs.map((j) => j.job.bandwidthBytesPerSec)).toEqual(limited.map(() => undefined));
  });

  it("ignores datasets zcsi did not create, received or inherited targets, and deeper datasets", () => {
    const set = volumeJobs(
      host,
      discovery([
        line("tank/k8s/foreign", "zcsi:replicate-to", "pool-2"),
        line("tank/k8s/replica", "zcsi:csi-name", "pvc-r", "received"),
        line("tank/k8s/replica", "zcsi:replicate-to", "pool-2", "received"),
        line("tank/k8s/pvc-3", "zcsi:csi-name", "pvc-3"),
        line("tank/k8s/pvc-3", "zcsi:replicate-to", "pool-2", "inherited from tank/k8s"),
        line("tank/k8s/apps/db", "zcsi:csi-name", "pvc-deep"),
        line("tank/k8s/apps/db", "zcsi:replicate-to", "pool-2"),
      ]),
      HOSTS,
    );
    expect(set.jobs).toEqual([]);
  });

  it("reports unknown and own-host targets and a bad interval, and replicates what it can on the default interval", () => {
    const set = volumeJobs(
      host,
      discovery([
        line("tank/k8s/pvc-4", "zcsi:csi-name", "pvc-4"),
        line("tank/k8s/pvc-4", "zcsi:replicate-to", "pool-1,pool-9,pool-2"),
        line("tank/k8s/pvc-4", "zcsi:replication-interval", "5s"),
      ]),
      HOSTS,
    );
    expect(set.jobs.map((j) => [j.job.target.host, j.intervalSeconds, j.pvName])).toEqual([["pool-2", 900, "pvc-4"]]);
    expect(set.problems.map((p) => p.message)).toEqual([
      expect.stringMatching(/zcsi:replication-interval="5s".*using 15m/),
      expect.stringMatching(/pool-1 \(the volume's own host\)/),
      expect.stringMatching(/"pool-9", which is not a pool host/),
    ]);
  });
});

describe("replicationJobId", () => {
  it("is stable, safe as a hold tag and metric label, and differs for different pairs", () => {
    const a = replicationJobId({ host: "pool-1", dataset: "tank/k8s/a/db" }, { host: "pool-2", dataset: "tank/k8s/a/db" }, "tank/k8s/a/db.pool-2");
    expect(a).toBe(replicationJobId({ host: "pool-1", dataset: "tank/k8s/a/db" }, { host: "pool-2", dataset: "tank/k8s/a/db" }, "tank/k8s/a/db.pool-2"));
    expect(a).toMatch(/^tank_k8s_a_db\.pool-2-[0-9a-f]{8}$/);
    expect(replicationJobId({ host: "pool-1", dataset: "tank/k8s/a/db" }, { host: "pool-2", dataset: "tank/k8s/a/db2" }, "tank/k8s/a/db.pool-2")).not.toBe(a);
  });
});

describe("a moved home keeps what its replicas continue from", () => {
  const src = { host: "pool-2", dataset: "tank/k8s/pvc-1" };
  const job = { id: "j", origin: { kind: "volume" as const, volumeId: "pool-1:tank/k8s/pvc-1" }, source: src, target: { host: "pool-3", dataset: "tank/k8s/pvc-1" } };
  const snap = (name: string, txg: number, creation: number) => ({ name, guid: `g-${name}`, createtxg: BigInt(txg), creation, userrefs: 0 });
  // Received from pool-1 before the move (creation 100, 200), then taken on pool-2 (300), the new base (400).
  const snaps = [snap("zcsi-repl-a", 1, 100), snap("zcsi-repl-b", 2, 200), snap("zcsi-repl-c", 3, 300), snap("zcsi-repl-d", 4, 400)];
  const to = snaps[3]!;
  const props = (values: Record<string, string>) => new Map(Object.entries(values).map(([k, v]) => [k, { value: v, source: "local" }]));
  const recorded = (...targets: string[]) => new Set(targets.map((t) => jobStateProperty(replicationJobId(src, { host: t, dataset: "tank/k8s/pvc-1" }, `pvc-1.${t}`))));

  it("prunes nothing while a replica in replicate-to has not received from it, and as always once all have", () => {
    const moved = props({ "zcsi:epoch": "2", "zcsi:replicate-to": "pool-3,pool-1" });
    expect(sourcePruneOfCopy(job, snaps, to, new Set(), moved, HOSTS, recorded("pool-3"))).toEqual([]);
    expect(sourcePruneOfCopy(job, snaps, to, new Set(), moved, HOSTS, recorded("pool-3", "pool-1"))).toEqual(["zcsi-repl-a", "zcsi-repl-b", "zcsi-repl-c"]);
    // A birth copy (epoch 1) prunes as always.
    expect(sourcePruneOfCopy(job, snaps, to, new Set(), props({ "zcsi:replicate-to": "pool-3,pool-1" }), HOSTS, recorded("pool-3"))).toEqual(["zcsi-repl-a", "zcsi-repl-b", "zcsi-repl-c"]);
  });

  it("keeps the snapshots from before a failover until the old home has received from it (after its resync), and only those", () => {
    const failedOver = props({ "zcsi:epoch": "2", "zcsi:replicate-to": "pool-3", "zcsi:failed-over": JSON.stringify({ from: "pool-1", epoch: 2, at: new Date(250_000).toISOString() }) });
    expect(sourcePruneOfCopy(job, snaps, to, new Set(), failedOver, HOSTS, recorded("pool-3"))).toEqual(["zcsi-repl-c"]);
    expect(sourcePruneOfCopy(job, snaps, to, new Set(), failedOver, HOSTS, recorded("pool-3", "pool-1"))).toEqual(["zcsi-repl-a", "zcsi-repl-b", "zcsi-repl-c"]);
  });

  it("a node-annotation master promoted by moving its source annotation keeps what it received up to the failover, for the old master's resync", () => {
    const annotationJob = { ...job, origin: { kind: "annotation" as const, node: "pool-2" } };
    const record = { "zcsi:failed-over": JSON.stringify({ from: "pool-1:tank/apps/db", epoch: 2, at: new Date(250_000).toISOString() }) };
    expect(sourcePruneOfCopy(annotationJob, snaps, to, new Set(), props(record), HOSTS, recorded())).toEqual(["zcsi-repl-c"]);
    // Never promoted: prunes as always.
    expect(sourcePruneOfCopy(annotationJob, snaps, to, new Set(), props({}), HOSTS, recorded())).toEqual(["zcsi-repl-a", "zcsi-repl-b", "zcsi-repl-c"]);
  });
});

