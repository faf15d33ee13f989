import { errorMessage, isZcsiError } from "../errors.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { formatVolumeId } from "../volumes/ids.js";
import { classifyCopy, decideHome } from "../volumes/home.js";
import { copyFacts } from "../volumes/homes.js";
import { parseLastMove } from "../volumes/moves.js";
import { AUTO_SNAPSHOT_PREFIX, FIRST_EPOCH, PROP } from "../volumes/properties.js";
import { capacityOf, SIZE_PROPERTIES, sizeModeOf } from "../volumes/size-modes.js";
import { ownUserPropertyValue, PropertyView, type DatasetProperties } from "../zfs/parse.js";
import { parseJsonObject } from "../util/json.js";

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
  PROP.volume,
  PROP.role,
  PROP.epoch,
  PROP.replicaOf,
  PROP.fenced,
  PROP.diverged,
  PROP.failedOver,
  PROP.lastMove,
  PROP.parameters,
  "readonly",
  ...SIZE_PROPERTIES,
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
  /** The volume's size in its size mode (volumes/size-modes.ts): `refquota`, `quota`, a thin volume's request. */
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
  /** `primary` or `replica` (volumes/home.ts: a copy with neither mark is a replica if it has zcsi:replica-of, else the primary). */
  readonly role: string;
  /** zcsi:epoch, 1 where unset. */
  readonly epoch: number;
  /** The volume this dataset is a copy of, when that is not the dataset itself (a replica, or a promoted one). */
  readonly copyOf?: string;
  /** zcsi:fenced: why this stale primary was fenced. */
  readonly fenced?: string;
  /** zcsi:diverged (JSON): diverged data a resync kept aside; not a copy of the volume any more. */
  readonly diverged?: string;
  /** zcsi:failed-over (JSON): this copy became the home by a failover, and the data-loss window. */
  readonly failedOver?: string;
  /** zcsi:last-move (JSON, volumes/moves.ts): the last move that ended on this copy. */
  readonly lastMove?: string;
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
  /** Per volume, from all its copies (volumes/home.ts): stale primaries and split brains. Status only reads; it fences nothing. */
  readonly copyProblems: readonly string[];
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

function optionalOwn<K extends string>(key: K, props: DatasetProperties, name: string): { [P in K]?: string } {
  const v = ownUserPropertyValue(props.get(name));
  return (v === undefined || v === "-" || v === "" ? {} : { [key]: v }) as { [P in K]?: string };
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
      // A replica (received without its source's properties) has no csi-name, but says which volume it copies.
      const facts = copyFacts(config.name, dataset, props);
      const csiName = facts.csiName ?? (facts.volume !== undefined ? dataset.slice(parent.length + 1) : undefined);
      if (csiName === undefined) continue;
      const id = formatVolumeId({ poolHost: config.name, dataset });
      const role = facts.role ?? (facts.replicaOf !== undefined ? "replica" : "primary");
      const epoch = facts.epoch !== undefined && /^[0-9]+$/.test(facts.epoch) ? Number(facts.epoch) : FIRST_EPOCH;
      const pvc = ownUserPropertyValue(props.get(PROP.pvc));
      const pv = ownUserPropertyValue(props.get(PROP.pv));
      const schedule = ownUserPropertyValue(props.get(PROP.snapshotSchedule));
      const replicateTo = ownUserPropertyValue(props.get(PROP.replicateTo));
      volumes.push({
        id,
        poolHost: config.name,
        dataset,
        csiName,
        ...(pvc !== undefined && { pvc }),
        ...(pv !== undefined && { pv }),
        state: ownUserPropertyValue(props.get(PROP.state)) ?? "creating",
        sizeBytes: capacityOf(sizeModeOf(ownUserPropertyValue(props.get(PROP.parameters))), new PropertyView(dataset, props, config.name), props),
        usedBytes: new PropertyView(dataset, props, config.name).integer("referenced"),
        usedWithSnapshotsBytes: new PropertyView(dataset, props, config.name).integer("used"),
        mountpoint: props.get("mountpoint")?.value ?? "",
        mounted: props.get("mounted")?.value === "yes",
        snapshots: snapshotCounts.get(dataset) ?? { total: 0, scheduled: 0 },
        ...(schedule !== undefined && { snapshotSchedule: schedule }),
        ...(replicateTo !== undefined && { replicateTo }),
        role,
        epoch,
        ...(facts.volume !== undefined && facts.volume !== id && { copyOf: facts.volume }),
        ...(facts.fenced !== undefined && { fenced: facts.fenced }),
        ...optionalOwn("diverged", props, PROP.diverged),
        ...optionalOwn("failedOver", props, PROP.failedOver),
        ...optionalOwn("lastMove", props, PROP.lastMove),
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
  const collected = await Promise.all(hosts.all().map(collectHost));
  return { collectedAt, hosts: collected, copyProblems: copyProblems(collected) };
}

/** Stale primaries and split brains, found by grouping every listed copy by the volume it belongs to. */
export function copyProblems(hosts: readonly PoolHostStatus[]): string[] {
  const byVolume = new Map<string, VolumeStatus[]>();
  for (const v of hosts.flatMap((h) => h.volumes).filter((c) => c.diverged === undefined)) byVolume.set(v.copyOf ?? v.id, [...(byVolume.get(v.copyOf ?? v.id) ?? []), v]);
  const unknown = hosts.filter((h) => !h.up && h.errors.length > 0).map((h) => ({ host: h.name, reason: h.errors.join("; ") }));
  const problems: string[] = [];
  for (const [volumeId, copies] of [...byVolume].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (copies.length < 2 && copies.every((c) => c.fenced === undefined)) continue;
    const colon = volumeId.indexOf(":");
    const birth = { host: volumeId.slice(0, colon), dataset: volumeId.slice(colon + 1) };
    const classified = copies.flatMap((c) => {
      const copy = classifyCopy(volumeId, birth, {
        host: c.poolHost,
        dataset: c.dataset,
        csiName: c.csiName,
        volume: c.copyOf ?? volumeId,
        role: c.role,
        epoch: String(c.epoch),
        fenced: c.fenced,
        readonly: c.fenced !== undefined,
      });
      return copy === undefined ? [] : [copy];
    });
    const decision = decideHome(volumeId, classified, unknown);
    for (const stale of decision.stale) problems.push(`${volumeId}: STALE copy ${stale.host}:${stale.dataset} (primary at epoch ${stale.epoch}; ${stale.fenced !== undefined ? "fenced" : "not fenced yet"}: ${stale.reason}); kept, never served`);
    for (const p of decision.problems) if (p.startsWith("split brain")) problems.push(`${volumeId}: ${p}`);
  }
  return problems;
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
    const volumeRows: string[][] = [["POOL HOST", "VOLUME", "PVC", "ROLE", "SIZE", "USED", "USE%", "SNAPSHOTS", "STATE", "DATASET"]];
    for (const v of volumes) {
      volumeRows.push([
        v.poolHost,
        v.csiName,
        v.pvc ?? "-",
        v.diverged !== undefined ? "diverged" : `${v.fenced !== undefined ? "stale" : v.role}@${v.epoch}`,
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
  parts.push(...mobilityLines(volumes));
  const problems = status.hosts.flatMap((h) => [...(h.up ? [] : [`${h.name}: DOWN (its volumes are degraded; the other pool hosts serve on)`]), ...h.errors.map((e) => `${h.name}: ${e}`)]).concat(status.copyProblems);
  if (problems.length > 0) parts.push(["Problems:", ...problems.map((p) => `  ${p}`)].join("\n"));
  return parts.join("\n\n") + "\n";
}

const parseJson = (text: string): Record<string, unknown> => parseJsonObject(text) ?? {};

/**
 * Where each volume with copies is served from (the unfenced primary at the newest epoch), with
 * its replicas, stale copies and the data-loss window of a failover; then the diverged data
 * resyncs kept. Empty when no volume has a copy elsewhere.
 */
function mobilityLines(volumes: readonly VolumeStatus[]): string[] {
  const byVolume = new Map<string, VolumeStatus[]>();
  for (const v of volumes.filter((c) => c.diverged === undefined)) byVolume.set(v.copyOf ?? v.id, [...(byVolume.get(v.copyOf ?? v.id) ?? []), v]);
  const homes: string[] = [];
  for (const [id, copies] of [...byVolume].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (copies.length < 2 && copies.every((c) => c.copyOf === undefined)) continue;
    const name = (c: VolumeStatus): string => `${c.poolHost}:${c.dataset}`;
    const live = copies.filter((c) => c.role === "primary" && c.fenced === undefined).sort((a, b) => b.epoch - a.epoch)[0];
    const replicas = copies.filter((c) => c.role === "replica").map(name);
    const stale = copies.filter((c) => c.role === "primary" && c !== live).map(name);
    const failed = live?.failedOver !== undefined ? parseJson(live.failedOver) : undefined;
    const window = failed ? `; failed over from ${String(failed.from)} at ${String(failed.at)}, writes after ${String(failed.lastSnapshotAt ?? "?")} (${String(failed.lastSnapshot ?? "no snapshot")}) not here` : "";
    const move = live?.lastMove !== undefined ? parseLastMove(live.lastMove) : undefined;
    const moved = move ? `; last move: ${move.kind} ${move.outcome} at ${move.at}${move.downtimeSeconds !== undefined ? `, downtime ${move.downtimeSeconds.toFixed(1)} s` : ""}` : "";
    homes.push(`  ${id}: home ${live ? `${name(live)} (epoch ${live.epoch})` : "NONE reachable"}; replicas: ${replicas.join(", ") || "none"}${stale.length > 0 ? `; stale: ${stale.join(", ")}` : ""}${window}${moved}`);
  }
  const kept = volumes.filter((v) => v.diverged !== undefined).map((v) => {
    const d = parseJson(v.diverged ?? "");
    return `  ${v.poolHost}:${v.dataset}: writes of ${String(d.volume)} at epoch ${String(d.epoch)} that ${String(d.home)} never got; kept since ${String(d.at)} (zcsi never destroys it)`;
  });
  return [...(homes.length > 0 ? [["Homes:", ...homes].join("\n")] : []), ...(kept.length > 0 ? [["Kept diverged data:", ...kept].join("\n")] : [])];
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
