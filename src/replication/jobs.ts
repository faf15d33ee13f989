import { createHash } from "node:crypto";
import type { PoolHostConfig } from "../config.js";
import { errorMessage } from "../errors.js";
import type { NodeInfo } from "../k8s/nodes.js";
import { formatVolumeId } from "../volumes/ids.js";
import { adoptedReplicaLeaf, adoptionProblem, formatAdoptedId } from "../volumes/adopted-ids.js";
import { durationSeconds } from "../util/units.js";
import { DEFAULT_REPLICATION_INTERVAL, MIN_REPLICATION_BANDWIDTH, MIN_REPLICATION_INTERVAL_SECONDS } from "../volumes/parameters.js";
import { PROP } from "../volumes/properties.js";
import { isServingCopy } from "../volumes/volume.js";
import { isBelow, validateDataset } from "../zfs/names.js";
import { ownProperty as local, type DatasetProperties, type PropertyMap } from "../zfs/parse.js";
import type { AnnotatedSource } from "./annotation-failover.js";
import type { ReplicationJob } from "./types.js";

export { keptForOldHome, sourcePruneOfCopy, unstartedTargets } from "./moved-home.js";

/** The label that opts a node in: only labelled nodes are read for replication annotations. */
export const REPLICATION_LABEL = "zcsi.dev/replication";
/** On a source node: the datasets it masters, comma-separated (`tank/db,tank/www`). */
export const SOURCE_ANNOTATION = "zcsi.dev/replication-source";
/** On a replica node: the datasets it receives (`tank/db`, or `tank/db=backup/db` to receive under another name). */
export const REPLICA_ANNOTATION = "zcsi.dev/replication-replica";
/** The label selector for the nodes whose annotations are read. */
export const REPLICATION_NODE_SELECTOR = `${REPLICATION_LABEL}=true`;

/**
 * Which replication jobs exist (pure: plain values in, plain values out). Two sources:
 *
 * - Volumes (StorageClass `replicateTo`): a zcsi volume whose dataset carries a local
 *   zcsi:replicate-to gets one job per target host, into `<target parentDataset>/<leaf>`, every
 *   zcsi:replication-interval. Found by ONE `zfs get -d 1` per pool host (VOLUME_DISCOVERY_PROPS).
 *   Adopted datasets with zcsi:replicate-to likewise (adoptedJobs), found by one `zfs get -r`
 *   per adoptRoot of the host (none when it lists no adoptRoots).
 * - Node annotations (the z8r model), for data that is not a PV: nodes labelled
 *   `zcsi.dev/replication=true` whose name is a configured pool host; a source node annotated
 *   `zcsi.dev/replication-source: "tank/k8s/apps/db,tank/k8s/apps/www"` masters those
 *   datasets, a replica node annotated `zcsi.dev/replication-replica: "tank/k8s/apps/db"`
 *   receives them (`tank/k8s/apps/db=backup/k8s/apps/db`: under another name, e.g. when its
 *   pool is named differently). Datasets are below the host's parentDataset, not directly
 *   (see datasetProblem). A dataset has exactly one master; every problem is reported and only
 *   the affected dataset gets no job.
 *
 * Job ids are stable: a readable part and a hash of (source host, source dataset, target host,
 * target dataset), so the same configuration always yields the same id (hold tags, metrics,
 * the replicator's bookkeeping) and two different pairs never share one.
 */

/** What one discovery command per pool host asks for. */
export const VOLUME_DISCOVERY_PROPS = [PROP.adopted, PROP.csiName, PROP.pv, PROP.replicateTo, PROP.replicationInterval, PROP.replicationBandwidth, PROP.volume, PROP.role, PROP.replicaOf, PROP.fenced, PROP.lastMove] as const;

export interface ScheduledJob {
  readonly job: ReplicationJob;
  /** Time between runs (start to start). */
  readonly intervalSeconds: number;
  /** For volume jobs: the PersistentVolume whose annotations show the replica's state. */
  readonly pvName?: string;
}

/** A configuration mistake, reported (log, metric) while the rest keeps running. */
export interface ConfigProblem {
  /** `volume alice:tank/k8s/pvc-1`, `node bob`. */
  readonly where: string;
  readonly message: string;
}

export interface JobSet {
  readonly jobs: readonly ScheduledJob[];
  readonly problems: readonly ConfigProblem[];
  /** Annotation jobs only: each dataset exactly one labelled node annotates as its source (annotation-failover.ts). */
  readonly sources?: readonly AnnotatedSource[];
}

const DEFAULT_INTERVAL_SECONDS = durationSeconds(DEFAULT_REPLICATION_INTERVAL) ?? 900;
const ID_UNSAFE = /[^A-Za-z0-9_.-]+/g;

/** `<readable>-<8 hex>`: readable part from the names, uniqueness from the hash of the exact pair. */
export function replicationJobId(source: { host: string; dataset: string }, target: { host: string; dataset: string }, readable: string): string {
  const hash = createHash("sha256").update(JSON.stringify([source.host, source.dataset, target.host, target.dataset])).digest("hex").slice(0, 8);
  const text = readable.replace(ID_UNSAFE, "_").replace(/^[-.]+/, "").slice(0, 80);
  return `${text}-${hash}`;
}

/**
 * Volume jobs of one pool host from its discovery result (`zfs get -d 1 VOLUME_DISCOVERY_PROPS
 * <parentDataset>`). Only datasets directly below the parent with a local zcsi:csi-name (ours)
 * and a local zcsi:replicate-to (a received or inherited value does not count: a replica must
 * not replicate itself onward).
 */
export function volumeJobs(host: PoolHostConfig, all: PropertyMap, hosts: readonly PoolHostConfig[]): JobSet {
  const parent = host.parentDataset;
  const set = { jobs: [] as ScheduledJob[], problems: [] as ConfigProblem[] };
  for (const [dataset, props] of all) {
    if (!isBelow(parent, dataset) || dataset.includes("@") || dataset.slice(parent.length + 1).includes("/")) continue;
    const csiName = local(props, PROP.csiName);
    // Only the volume's serving copy sends: a replica (a demoted home too) or a fenced copy never does.
    if (csiName === undefined || !isServingCopy(props)) continue;
    // A promoted copy replicates as the volume it serves (zcsi:volume: its birth id).
    const volumeId = local(props, PROP.volume) ?? formatVolumeId({ poolHost: host.name, dataset });
    // zcsi:pv is set with --extra-create-metadata; without it the PV is named after the CSI
    // name (the external-provisioner passes the PV name as the CSI name: pvc-<uid>).
    addJobs(set, host, hosts, { dataset, props, volumeId, leaf: dataset.slice(parent.length + 1), pvName: local(props, PROP.pv) ?? csiName });
  }
  return set;
}

/**
 * Jobs of the read-write adopted datasets of one pool host, from the listing of its adoptRoots
 * (`zfs get -r VOLUME_DISCOVERY_PROPS <root>`): a local zcsi:adopted=read-write, a dataset
 * the config still allows adopting, and a local zcsi:replicate-to (`zcsi adopt --replicate-to`,
 * ModifyVolume). The replica lives under the target's parentDataset like a volume's, named
 * adoptedReplicaLeaf (a prefix no volume can have), and carries the adopted volume id.
 */
export function adoptedJobs(host: PoolHostConfig, all: PropertyMap, hosts: readonly PoolHostConfig[]): JobSet {
  const set = { jobs: [] as ScheduledJob[], problems: [] as ConfigProblem[] };
  for (const [dataset, props] of all) {
    if (dataset.includes("@") || local(props, PROP.adopted) !== "read-write" || adoptionProblem(host, dataset) !== undefined) continue;
    const pvName = local(props, PROP.pv);
    addJobs(set, host, hosts, { dataset, props, volumeId: formatAdoptedId(host.name, dataset, { readOnly: false }), leaf: adoptedReplicaLeaf(host.name, dataset), ...(pvName !== undefined && { pvName }) });
  }
  return set;
}

/** One job per target host of a dataset with a local zcsi:replicate-to, into `<target parentDataset>/<leaf>`. */
function addJobs(
  set: { jobs: ScheduledJob[]; problems: ConfigProblem[] },
  host: PoolHostConfig,
  hosts: readonly PoolHostConfig[],
  source: { dataset: string; props: ReadonlyMap<string, { value: string; source: string }>; volumeId: string; leaf: string; pvName?: string },
): void {
  const { dataset, props, volumeId, leaf, pvName } = source;
  const { jobs, problems } = set;
  // A received or inherited value does not count: a replica must not replicate itself onward.
  const replicateTo = local(props, PROP.replicateTo);
  if (replicateTo === undefined) return;
  const where = `volume ${volumeId}`;
  const intervalText = local(props, PROP.replicationInterval);
  const stored = intervalText === undefined ? undefined : durationSeconds(intervalText);
  let intervalSeconds = DEFAULT_INTERVAL_SECONDS;
  if (stored !== undefined && stored >= MIN_REPLICATION_INTERVAL_SECONDS) intervalSeconds = stored;
  else if (intervalText !== undefined) {
    // Replicate on the default rather than not at all: the copy is the point.
    problems.push({ where, message: `${PROP.replicationInterval}=${JSON.stringify(intervalText)} is not a duration of at least 1m; using ${DEFAULT_REPLICATION_INTERVAL}` });
  }
  const bandwidthText = local(props, PROP.replicationBandwidth);
  let bandwidthBytesPerSec: number | undefined;
  if (bandwidthText !== undefined) {
    const n = Number(bandwidthText);
    if (/^[0-9]+$/.test(bandwidthText) && Number.isSafeInteger(n) && n >= MIN_REPLICATION_BANDWIDTH) bandwidthBytesPerSec = n;
    // Unlimited rather than not at all, as with a bad interval; reported so someone fixes it.
    else problems.push({ where, message: `${PROP.replicationBandwidth}=${JSON.stringify(bandwidthText)} is not a whole number of bytes per second of at least ${MIN_REPLICATION_BANDWIDTH}; replicating without a limit` });
  }
  const seen = new Set<string>();
  for (const targetHost of replicateTo.split(",").map((t) => t.trim())) {
    const target = hosts.find((h) => h.name === targetHost);
    if (target === undefined) {
      problems.push({ where, message: `${PROP.replicateTo} names ${JSON.stringify(targetHost)}, which is not a pool host in the config; no replica there` });
      continue;
    }
    if (targetHost === host.name || seen.has(targetHost)) {
      problems.push({ where, message: `${PROP.replicateTo} names ${targetHost} ${targetHost === host.name ? "(the volume's own host)" : "twice"}; ignored` });
      continue;
    }
    seen.add(targetHost);
    const sourceRef = { host: host.name, dataset };
    const targetRef = { host: targetHost, dataset: `${target.parentDataset}/${leaf}` };
    jobs.push({
      job: {
        id: replicationJobId(sourceRef, targetRef, `${leaf}.${targetHost}`),
        origin: { kind: "volume", volumeId },
        source: sourceRef,
        target: targetRef,
        ...(bandwidthBytesPerSec !== undefined && { bandwidthBytesPerSec }),
      },
      intervalSeconds,
      ...(pvName !== undefined && { pvName }),
    });
  }
}

/**
 * Volume jobs whose target is a stale copy of the volume are dropped, each reported: a copy on
 * the target host that says primary (a home that lost a failover, fenced or not yet) or is
 * fenced is neither a target nor a source until `zcsi resync` makes it a replica (a
 * replicate-to written before moves kept stale hosts out of it may still name one).
 * `listings`: each target host's discovery result (VOLUME_DISCOVERY_PROPS); a host missing
 * there (not listed this pass) keeps its jobs, and the engine still refuses a primary target.
 */
export function withoutStaleTargets(set: JobSet, listings: ReadonlyMap<string, PropertyMap>): JobSet {
  const problems = [...set.problems];
  const jobs = set.jobs.filter(({ job }) => {
    if (job.origin.kind !== "volume") return true;
    const props = listings.get(job.target.host)?.get(job.target.dataset);
    // Not a copy of any volume (no zcsi identity): not stale, foreign; the engine refuses to receive into it.
    if (props === undefined || (local(props, PROP.volume) === undefined && local(props, PROP.csiName) === undefined)) return true;
    const role = local(props, PROP.role) ?? (local(props, PROP.replicaOf) !== undefined ? "replica" : "primary");
    const fenced = local(props, PROP.fenced);
    if (role !== "primary" && fenced === undefined) return true;
    problems.push({ where: `volume ${job.origin.volumeId}`, message: `replication target ${job.target.host}:${job.target.dataset} is a stale copy (${fenced !== undefined ? `fenced: ${fenced}` : "a primary"}); not replicated to until zcsi resync makes it a replica` });
    return false;
  });
  return { jobs, problems };
}

function entries(annotation: string | undefined): string[] {
  // Empty entries (a trailing comma, blank annotation) are tolerated: people edit these by hand.
  return (annotation ?? "")
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
}

/**
 * Why `dataset` cannot be replicated on `host` by annotation, or undefined. zcsi touches only
 * datasets below a pool host's parentDataset (the engine refuses anything else), and the
 * direct children of parentDataset are volumes, replicated per StorageClass: so an annotated
 * dataset lives at least two levels down (`tank/k8s/apps/db` for parentDataset `tank/k8s`),
 * where no volume or volume replica can ever be.
 */
function datasetProblem(dataset: string, host: PoolHostConfig): string | undefined {
  try {
    validateDataset(dataset);
  } catch (err) {
    return errorMessage(err);
  }
  const parent = host.parentDataset;
  if (!isBelow(parent, dataset)) return `${dataset} is not below ${parent}, the parentDataset of pool host ${host.name} (zcsi replicates nothing outside it)`;
  if (!dataset.slice(parent.length + 1).includes("/")) {
    return `${dataset} is a direct child of ${parent}, where volumes live (they are replicated with the StorageClass parameter replicateTo); use a dataset one level deeper, e.g. ${parent}/apps/<name>`;
  }
  return undefined;
}

/**
 * Jobs from Node objects. `intervalSeconds` applies to all of them (`--annotation-interval`),
 * and so does `bandwidthBytesPerSec` when set (`--annotation-bandwidth`).
 * Nodes without the label are ignored, with a problem when they carry the annotations anyway
 * (the usual mistake).
 */
export function annotationJobs(nodes: readonly NodeInfo[], hosts: readonly PoolHostConfig[], intervalSeconds: number, bandwidthBytesPerSec?: number): JobSet {
  const problems: ConfigProblem[] = [];
  const hostOf = new Map(hosts.map((h) => [h.name, h]));
  const participants: { node: NodeInfo; host: PoolHostConfig }[] = [];
  for (const node of [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const annotated = node.annotations[SOURCE_ANNOTATION] !== undefined || node.annotations[REPLICA_ANNOTATION] !== undefined;
    if (node.labels[REPLICATION_LABEL] !== "true") {
      if (annotated) problems.push({ where: `node ${node.name}`, message: `has replication annotations but not the label ${REPLICATION_LABEL}=true; ignored` });
      continue;
    }
    const host = hostOf.get(node.name);
    if (host === undefined) {
      if (annotated) problems.push({ where: `node ${node.name}`, message: `is labelled ${REPLICATION_LABEL}=true but is not a pool host in the config (the node name must equal the pool host name); ignored` });
      continue;
    }
    participants.push({ node, host });
  }

  // dataset → the nodes that master it
  const masters = new Map<string, PoolHostConfig[]>();
  const nodeOf = new Map<string, string>();
  for (const { node, host } of participants) {
    for (const dataset of new Set(entries(node.annotations[SOURCE_ANNOTATION]))) {
      const problem = datasetProblem(dataset, host);
      if (problem !== undefined) {
        problems.push({ where: `node ${node.name}`, message: `${SOURCE_ANNOTATION}: ${problem}; no job` });
        continue;
      }
      masters.set(dataset, [...(masters.get(dataset) ?? []), host]);
      nodeOf.set(`${host.name}:${dataset}`, node.name);
    }
  }
  for (const [dataset, hostsOfIt] of masters) {
    if (hostsOfIt.length > 1) {
      problems.push({
        where: `dataset ${dataset}`,
        message: `is mastered by ${hostsOfIt.map((h) => h.name).join(" and ")} (${SOURCE_ANNOTATION}); a dataset has exactly one master, so it is not replicated until one annotation is removed`,
      });
    }
  }

  interface Pending {
    readonly node: string;
    readonly source: { host: string; dataset: string };
    readonly target: { host: string; dataset: string };
  }
  const pending: Pending[] = [];
  for (const { node, host } of participants) {
    const targetsHere = new Map<string, string[]>();
    const mine: Pending[] = [];
    for (const entry of new Set(entries(node.annotations[REPLICA_ANNOTATION]))) {
      const eq = entry.indexOf("=");
      const sourceDataset = eq < 0 ? entry : entry.slice(0, eq).trim();
      const localDataset = eq < 0 ? entry : entry.slice(eq + 1).trim();
      const where = `node ${node.name}`;
      const master = masters.get(sourceDataset);
      if (master === undefined) {
        problems.push({ where, message: `${REPLICA_ANNOTATION}: no labelled node masters ${JSON.stringify(sourceDataset)} (${SOURCE_ANNOTATION}); no job` });
        continue;
      }
      if (master.length > 1) continue; // reported once above
      const sourceHost = master[0] as PoolHostConfig;
      if (sourceHost.name === host.name) {
        problems.push({ where, message: `${REPLICA_ANNOTATION}: ${sourceDataset} is mastered by this same node; a replica must be on another host` });
        continue;
      }
      const problem = datasetProblem(localDataset, host);
      if (problem !== undefined) {
        problems.push({ where, message: `${REPLICA_ANNOTATION}: ${problem}; no job` });
        continue;
      }
      targetsHere.set(localDataset, [...(targetsHere.get(localDataset) ?? []), sourceDataset]);
      mine.push({ node: node.name, source: { host: sourceHost.name, dataset: sourceDataset }, target: { host: host.name, dataset: localDataset } });
    }
    for (const [localDataset, sources] of targetsHere) {
      if (sources.length > 1) problems.push({ where: `node ${node.name}`, message: `${REPLICA_ANNOTATION}: ${localDataset} would receive ${sources.join(" and ")}; no job for it` });
    }
    pending.push(...mine.filter((p) => (targetsHere.get(p.target.dataset)?.length ?? 0) === 1));
  }

  // A dataset that receives cannot also be a source: the replicator's snapshots on it would
  // make it diverge from its own source, and the next receive would be refused.
  const receiving = new Set(pending.map((p) => `${p.target.host}\u0000${p.target.dataset}`));
  const jobs: ScheduledJob[] = [];
  for (const p of pending) {
    if (receiving.has(`${p.source.host}\u0000${p.source.dataset}`)) {
      problems.push({ where: `dataset ${p.source.dataset}`, message: `on ${p.source.host} both receives a replica and is annotated as a source; it is not replicated onward to ${p.target.host}` });
      continue;
    }
    jobs.push({
      job: {
        id: replicationJobId(p.source, p.target, `${p.source.dataset}.${p.target.host}`),
        origin: { kind: "annotation", node: p.node },
        source: p.source,
        target: p.target,
        ...(bandwidthBytesPerSec !== undefined && { bandwidthBytesPerSec }),
      },
      intervalSeconds,
    });
  }
  jobs.sort((a, b) => (a.job.id < b.job.id ? -1 : a.job.id > b.job.id ? 1 : 0));
  const sources = [...masters].flatMap(([dataset, [host, ...more]]) => (host === undefined || more.length > 0 ? [] : [{ node: nodeOf.get(`${host.name}:${dataset}`) ?? host.name, host: host.name, dataset }]));
  return { jobs, problems, sources };
}
