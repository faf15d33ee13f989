import { errorMessage, isZcsiError } from "../errors.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { formatVolumeId } from "../volumes/ids.js";
import { AUTO_SNAPSHOT_PREFIX, PROP, SIZE_PROPERTY } from "../volumes/properties.js";
import { ownUserPropertyValue, PropertyView } from "../zfs/parse.js";

/**
 * `zcsi status`: what the pool hosts hold, read straight from ZFS (no Kubernetes API, no CSI
 * socket), so an operator can use it when the cluster itself is in trouble.
 *
 * Per pool host it runs a fixed set of commands, however many volumes and snapshots there are,
 * all at once over the host's SSH pool (STATUS_COMMANDS_PER_HOST):
 *   1. `zpool list -H -o name,health,size,free,allocated <pool>`     pool health
 *   2. `zfs get -Hp used,available <pool>`                            pool capacity, exact
 *   3. `zfs get -Hp -d 1 <volume properties> <parentDataset>`         every volume, one line per property
 *   4. `zfs list -H -o name -t snapshot -d 2 <parentDataset>`         every snapshot name of every volume
 * (1 and 2 are `Zfs.pool()`, the same pair GetCapacity and Probe use.) Snapshots are counted
 * from names only; reading their properties would cost one line per snapshot and property.
 */
export const STATUS_COMMANDS_PER_HOST = 4;

/** Volume properties read in command 3. Numbers are exact (`-p`). */
const VOLUME_PROPS = [
  PROP.csiName,
  PROP.state,
  PROP.pvc,
  PROP.pv,
  PROP.snapshotSchedule,
  PROP.replicateTo,
  SIZE_PROPERTY,
  "referenced",
  "used",
  "available",
  "mountpoint",
  "mounted",
] as const;

export interface VolumeStatus {
  /** The CSI volume id, `<poolHost>:<dataset>`. */
  readonly id: string;
  readonly poolHost: string;
  readonly dataset: string;
  /** The CSI name (the PV name when the external-provisioner made it). */
  readonly csiName: string;
  /** `<namespace>/<name>` of the PVC, when the provisioner passed it (--extra-create-metadata). */
  readonly pvc?: string;
  readonly pv?: string;
  /** `ready`, or `creating` for a volume whose creation has not finished. */
  readonly state: string;
  /** The volume's size: its `refquota`. */
  readonly sizeBytes: bigint;
  /** What the volume's files take: its `referenced`. */
  readonly usedBytes: bigint;
  /** `used`: the files plus what only its snapshots still hold. */
  readonly usedWithSnapshotsBytes: bigint;
  readonly mountpoint: string;
  readonly mounted: boolean;
  readonly snapshots: { readonly total: number; readonly scheduled: number };
  readonly snapshotSchedule?: string;
  readonly replicateTo?: string;
}

export interface PoolHostStatus {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly pool: string;
  readonly parentDataset: string;
  /** `ONLINE`, `DEGRADED`, ... from zpool; undefined when it could not be read. */
  readonly health?: string;
  /** Pool-wide, from the pool's root dataset: used + available, available, used. */
  readonly poolSizeBytes?: bigint;
  readonly poolFreeBytes?: bigint;
  readonly poolUsedBytes?: bigint;
  /** What new volumes can still get: `available` of the parent dataset (what GetCapacity reports). */
  readonly availableBytes?: bigint;
  /**
   * The controller's rule (health per pool host, zcsi_pool_host_up): the host answered, its
   * pool is ONLINE and its parent dataset is there. False: its volumes are degraded, the other
   * hosts' are not.
   */
  readonly up: boolean;
  readonly volumes: readonly VolumeStatus[];
  /** Why (part of) this host could not be read; the other hosts are reported anyway. */
  readonly errors: readonly string[];
}

export interface Status {
  /** ISO 8601, when collection started. */
  readonly collectedAt: string;
  readonly hosts: readonly PoolHostStatus[];
}

export type StatusFormat = "text" | "json";


/** The snapshot counts per dataset from `zfs list -t snapshot` names. */
function countSnapshots(names: readonly string[]): Map<string, { total: number; scheduled: number }> {
  const counts = new Map<string, { total: number; scheduled: number }>();
  for (const name of names) {
    const at = name.indexOf("@");
    if (at < 0) continue;
    const dataset = name.slice(0, at);
    const entry = counts.get(dataset) ?? { total: 0, scheduled: 0 };
    entry.total += 1;
    if (name.slice(at + 1).startsWith(AUTO_SNAPSHOT_PREFIX)) entry.scheduled += 1;
    counts.set(dataset, entry);
  }
  return counts;
}

function describeFailure(what: string, err: unknown): string {
  if (isZcsiError(err, "NotFound")) return `${what}: not found (${errorMessage(err)})`;
  return `${what}: ${errorMessage(err)}`;
}

async function collectHost(host: PoolHost): Promise<PoolHostStatus> {
  const { config } = host;
  const parent = config.parentDataset;
  const [pool, datasets, snapshots] = await Promise.allSettled([
    host.zfs.pool(host.pool),
    host.zfs.get([parent], VOLUME_PROPS, { depth: 1 }),
    host.zfs.list(parent, { type: "snapshot", depth: 2, props: [] }),
  ]);
  const errors: string[] = [];
  if (pool.status === "rejected") errors.push(describeFailure(`pool ${host.pool}`, pool.reason));
  if (datasets.status === "rejected") errors.push(describeFailure(`parent dataset ${parent}`, datasets.reason));
  // A missing parent fails both dataset commands with the same cause: say it once.
  if (snapshots.status === "rejected" && datasets.status === "fulfilled") errors.push(describeFailure(`snapshots below ${parent}`, snapshots.reason));

  const snapshotCounts = countSnapshots(snapshots.status === "fulfilled" ? snapshots.value.map((row) => row.name ?? "") : []);
  const volumes: VolumeStatus[] = [];
  let availableBytes: bigint | undefined;
  if (datasets.status === "fulfilled") {
    availableBytes = PropertyView.of(datasets.value, parent, config.name).optionalInteger("available");
    for (const [dataset, props] of datasets.value) {
      // Only direct children that carry zcsi's own (local) csi-name are volumes; anything
      // else below the parent is someone else's and is not listed.
      if (!dataset.startsWith(parent + "/") || dataset.slice(parent.length + 1).includes("/")) continue;
      const csiName = ownUserPropertyValue(props.get(PROP.csiName));
      if (csiName === undefined) continue;
      const pvc = ownUserPropertyValue(props.get(PROP.pvc));
      const pv = ownUserPropertyValue(props.get(PROP.pv));
      const schedule = ownUserPropertyValue(props.get(PROP.snapshotSchedule));
      const replicateTo = ownUserPropertyValue(props.get(PROP.replicateTo));
      volumes.push({
        id: formatVolumeId({ poolHost: config.name, dataset }),
        poolHost: config.name,
        dataset,
        csiName,
        ...(pvc !== undefined && { pvc }),
        ...(pv !== undefined && { pv }),
        state: ownUserPropertyValue(props.get(PROP.state)) ?? "creating",
        sizeBytes: new PropertyView(dataset, props, config.name).integer(SIZE_PROPERTY),
        usedBytes: new PropertyView(dataset, props, config.name).integer("referenced"),
        usedWithSnapshotsBytes: new PropertyView(dataset, props, config.name).integer("used"),
        mountpoint: props.get("mountpoint")?.value ?? "",
        mounted: props.get("mounted")?.value === "yes",
        snapshots: snapshotCounts.get(dataset) ?? { total: 0, scheduled: 0 },
        ...(schedule !== undefined && { snapshotSchedule: schedule }),
        ...(replicateTo !== undefined && { replicateTo }),
      });
    }
  }
  volumes.sort((a, b) => (a.csiName < b.csiName ? -1 : a.csiName > b.csiName ? 1 : 0));
  const poolInfo = pool.status === "fulfilled" ? pool.value : undefined;
  return {
    name: config.name,
    address: config.address,
    port: config.port,
    pool: host.pool,
    parentDataset: parent,
    ...(poolInfo && {
      health: poolInfo.health,
      poolSizeBytes: poolInfo.sizeBytes,
      poolFreeBytes: poolInfo.freeBytes,
      poolUsedBytes: poolInfo.allocatedBytes,
    }),
    ...(availableBytes !== undefined && { availableBytes }),
    up: poolInfo?.health === "ONLINE" && availableBytes !== undefined && errors.length === 0,
    volumes,
    errors,
  };
}

/**
 * Reads every pool host at once. Never throws for a host's failure (an unreachable host, a
 * missing parent dataset): that host's `errors` says what went wrong and the others are
 * reported in full.
 */
export async function collectStatus(hosts: PoolHosts, options: { now?: () => Date } = {}): Promise<Status> {
  const collectedAt = (options.now ?? (() => new Date()))().toISOString();
  return { collectedAt, hosts: await Promise.all(hosts.all().map(collectHost)) };
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] as const;

/** 1536 → "1.5 KiB"; exact below 1 KiB; one decimal above, none from 100 up. */
export function formatBytes(bytes: bigint): string {
  if (bytes < 1024n) return `${bytes} B`;
  let unit = 0;
  let whole = bytes;
  while (whole >= 1024n * 1024n && unit < UNITS.length - 2) {
    whole /= 1024n;
    unit += 1;
  }
  // `whole` is now below 1 MiB of the current unit: one more step with a fraction.
  const value = Number(whole) / 1024;
  unit += 1;
  const text = value >= 100 ? value.toFixed(0) : value.toFixed(1);
  return `${text.replace(/\.0$/, "")} ${UNITS[unit]}`;
}

function percent(part: bigint, whole: bigint): string {
  if (whole <= 0n) return "-";
  return `${((part * 100n) / whole).toString()}%`;
}

/** Columns padded to their widest cell, two spaces apart; no trailing blanks. */
function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ").trimEnd()).join("\n");
}

function renderText(status: Status): string {
  const hostRows: string[][] = [["POOL HOST", "ADDRESS", "POOL", "HEALTH", "POOL SIZE", "POOL FREE", "PARENT", "AVAILABLE", "VOLUMES"]];
  for (const h of status.hosts) {
    hostRows.push([
      h.name,
      `${h.address}:${h.port}`,
      h.pool,
      h.health ?? (h.errors.length > 0 ? "UNREACHABLE" : "UNKNOWN"),
      h.poolSizeBytes === undefined ? "-" : formatBytes(h.poolSizeBytes),
      h.poolFreeBytes === undefined ? "-" : formatBytes(h.poolFreeBytes),
      h.parentDataset,
      h.availableBytes === undefined ? "-" : formatBytes(h.availableBytes),
      String(h.volumes.length),
    ]);
  }
  const parts = [table(hostRows)];
  const volumes = status.hosts.flatMap((h) => h.volumes);
  if (volumes.length > 0) {
    const volumeRows: string[][] = [["POOL HOST", "VOLUME", "PVC", "SIZE", "USED", "USE%", "SNAPSHOTS", "STATE", "DATASET"]];
    for (const v of volumes) {
      volumeRows.push([
        v.poolHost,
        v.csiName,
        v.pvc ?? "-",
        formatBytes(v.sizeBytes),
        formatBytes(v.usedBytes),
        percent(v.usedBytes, v.sizeBytes),
        v.snapshots.scheduled > 0 ? `${v.snapshots.total} (${v.snapshots.scheduled} scheduled)` : String(v.snapshots.total),
        v.state === "ready" && !v.mounted ? "not mounted" : v.state,
        v.dataset,
      ]);
    }
    parts.push(table(volumeRows));
  } else {
    parts.push("No volumes.");
  }
  const problems = status.hosts.flatMap((h) => [...(h.up ? [] : [`${h.name}: DOWN (its volumes are degraded; the other pool hosts serve on)`]), ...h.errors.map((e) => `${h.name}: ${e}`)]);
  if (problems.length > 0) parts.push(["Problems:", ...problems.map((p) => `  ${p}`)].join("\n"));
  return parts.join("\n\n") + "\n";
}

/**
 * JSON with byte counts as exact integers: JSON numbers have no size limit, only JavaScript's
 * do, so bigints are written as their digits rather than rounded through a double or quoted.
 */
function renderJson(status: Status): string {
  const marker = "\u0000bigint:";
  const text = JSON.stringify(status, (_key, value: unknown) => (typeof value === "bigint" ? `${marker}${value.toString()}` : value), 2);
  return text.replace(/"\\u0000bigint:([0-9]+)"/g, "$1") + "\n";
}

export function renderStatus(status: Status, format: StatusFormat): string {
  return format === "json" ? renderJson(status) : renderText(status);
}
