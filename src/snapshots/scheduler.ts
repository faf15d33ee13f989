import { errorMessage, isZcsiError } from "../errors.js";
import type { EventRecorder } from "../k8s/events.js";
import type { Logger } from "../log.js";
import type { SnapshotMetrics, SnapshotOperation } from "../metrics.js";
import type { Clock } from "../util/clock.js";
import { ConditionLog } from "../util/periodic.js";
import { VolumeHomes, type FenceListener } from "../volumes/homes.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { formatVolumeId } from "../volumes/ids.js";
import { PROP } from "../volumes/properties.js";
import { hasReason } from "../zfs/errors.js";
import type { PropertyMap } from "../zfs/parse.js";
import { formatPolicy, parsePolicy, type RetentionPolicy } from "../volumes/schedule.js";
import { parseAutoSnapshotName, planRetention, type AutoSnapshot } from "./retention.js";
import { planGroups, reportSpreadGroups, tickGroup } from "./groups.js";
import { fenceStale, listedCopies } from "./stale.js";

/**
 * The scheduler's pass over every pool host ("tick"): discover, take what is due, prune what
 * expired. Per host, discovery is ONE command whatever the number of volumes:
 *
 *   zfs get -Hp -o name,property,value,source -d 2 <props> <parentDataset>
 *
 * which returns the volumes (depth 1) with their schedules and replication state, and their
 * snapshots (depth 2) with the marks and counts that decide what may be pruned; plus, only for
 * a host whose config lists adoptRoots, one `zfs get -r` per root, for the adopted datasets
 * the operator gave a schedule (`zcsi adopt --snapshot-schedule`, ModifyVolume). On top of it,
 * one `zfs snapshot` per volume that is due and one `zfs destroy` per expired snapshot: zfs-fuse
 * takes one snapshot name per command, so these cannot be batched there. (On OpenZFS the first
 * tick also runs the cached `zfs version` probe, to know whether to ask for `clones`.)
 *
 * What is never destroyed, whatever retention says:
 * - anything that is not an automatic snapshot: the name must be `zcsi-auto-<UTC minute>`, the
 *   snapshot must carry zcsi:auto-snapshot set locally (by `zfs snapshot -o`; received or
 *   inherited values do not count) and must not carry zcsi:csi-snapshot-name (a CSI snapshot);
 * - held snapshots (`userrefs` > 0; zfs-hold(8));
 * - snapshots with clones: a dataset below the parent whose `origin` is the snapshot, or a
 *   non-empty `clones` property where the host has it; a clone elsewhere in the pool makes
 *   `zfs destroy` refuse with "has dependent clones", which is treated the same way;
 * - unreplicated snapshots of a volume with replication targets (see `replicationGuard`).
 * Protected snapshots still count for retention; they are just not destroyed.
 */

export { DISCOVERY_PROPS, discoverAdopted, discoverVolumes, type ManagedVolume, type SnapshotInfo } from "./discover.js";
import { DISCOVERY_PROPS, discoverAdopted, discoverVolumes, type ManagedVolume, type SnapshotInfo } from "./discover.js";

/**
 * The replication rule. A volume with zcsi:replicate-to set is being replicated; the replicator
 * records in zcsi:replicated-through the guid (or name) of the newest snapshot that every target
 * has received. Then an automatic snapshot may be pruned only if it is strictly older (lower
 * `createtxg`, the transaction group that created it: exact and clock-free) than that snapshot.
 * Nothing may be pruned while zcsi:replicated-through is unset or names no existing snapshot of
 * the volume (nothing replicated yet, or the replicator's base is gone: it must decide, not us).
 * Without zcsi:replicate-to the rule does not apply.
 *
 * Returns the reason a snapshot must be kept, or undefined when replication allows pruning it.
 */
export function replicationGuard(volume: ManagedVolume): (snapshot: SnapshotInfo) => string | undefined {
  if (volume.replicateTo === undefined) return () => undefined;
  const through = volume.replicatedThrough;
  if (through === undefined) return () => `not replicated yet (${PROP.replicateTo} is set, ${PROP.replicatedThrough} is not)`;
  const base = volume.snapshots.find((s) => s.guid === through) ?? volume.snapshots.find((s) => s.name === through);
  if (base === undefined) return () => `${PROP.replicatedThrough}=${through} names no snapshot of the volume`;
  return (s) => (s.createtxg >= base.createtxg ? `not older than the replicated snapshot ${base.name}` : undefined);
}

export interface VolumeTick {
  readonly volumeId: string;
  readonly dataset: string;
  readonly policy: string;
  readonly taken?: string;
  readonly pruned: readonly string[];
  /** Expired by retention but kept, with why. */
  readonly protected: readonly { readonly name: string; readonly reason: string }[];
  readonly failures: readonly { readonly operation: SnapshotOperation; readonly error: string }[];
}

export interface HostTick {
  readonly poolHost: string;
  /** Set when discovery failed: nothing was done on this host this tick. */
  readonly error?: string;
  readonly volumes: readonly VolumeTick[];
}

export interface TickReport {
  readonly at: Date;
  readonly hosts: readonly HostTick[];
}

export interface SnapshotSchedulerOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics?: SnapshotMetrics;
  readonly events?: EventRecorder;
  /** Told of each stale copy the scheduler has fenced (roles turn it into a PV Event). */
  readonly onFence?: FenceListener;
  /** Volumes worked on at once per host (each runs one command at a time). Default 4. */
  readonly concurrency?: number;
  /**
   * A condition met on every tick (an unreadable schedule, a host that cannot be listed) is
   * logged when it starts, changes or ends, and again at most this often while it lasts.
   * Default one hour. (Its Event and failure count still come every tick; the recorder
   * de-duplicates Events.)
   */
  readonly conditionRepeatMs?: number;
}

async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

export class SnapshotScheduler {
  private readonly concurrency: number;
  private readonly conditions: ConditionLog;
  private readonly homes: VolumeHomes;

  constructor(
    private readonly hosts: PoolHosts,
    private readonly options: SnapshotSchedulerOptions,
  ) {
    this.concurrency = options.concurrency ?? 4;
    this.conditions = new ConditionLog(options.conditionRepeatMs);
    this.homes = new VolumeHomes(hosts, options.logger, options.onFence);
  }

  /**
   * One pass over every pool host, all at the same `now`. Never throws; failures are in the
   * report. `active` is asked before each volume: a replica that lost its Lease mid-tick stops.
   */
  async tick(active: () => boolean = () => true): Promise<TickReport> {
    const at = this.options.clock.now();
    const groupHosts = new Map<string, Set<string>>();
    const listings = await Promise.all(this.hosts.all().map(async (host) => ({ host, listing: await this.discover(host).catch((err: unknown) => ({ error: err })) })));
    const copies = listings.flatMap(({ host, listing }) => ("error" in listing ? [] : listedCopies(host.config.name, host.config.parentDataset, listing)));
    const stale = await fenceStale(copies, this.homes, this.options.logger, this.conditions, at);
    const hosts = await Promise.all(listings.map(({ host, listing }) => this.tickHost(host, listing, stale, at, active, groupHosts)));
    reportSpreadGroups(groupHosts, this.conditions, this.options.logger, at);
    this.options.metrics?.ticks.inc();
    return { at, hosts };
  }

  /**
   * The host's listing: the parent (`-d 2`) and, one more command each, every adoptRoot
   * (`-r`: adopted datasets sit anywhere below a root; none when adoptRoots is empty). A
   * missing root or parent lists nothing. Merged into one map: discoverVolumes reads only
   * what is below the parent, discoverAdopted only adopted datasets.
   */
  private async discover(host: PoolHost): Promise<PropertyMap> {
    const parent = host.config.parentDataset;
    const caps = await host.zfs.capabilities().catch(() => undefined);
    const props = caps?.implementation === "openzfs" ? [...DISCOVERY_PROPS, "clones"] : DISCOVERY_PROPS;
    const list = async (root: string, opts: { depth?: number; recursive?: boolean }): Promise<PropertyMap> => {
      try {
        return await host.zfs.get([root], props, opts);
      } catch (err) {
        if (isZcsiError(err, "NotFound")) return new Map();
        throw err;
      }
    };
    const roots = host.config.adoptRoots ?? [];
    const listings = await Promise.all([list(parent, { depth: 2 }), ...roots.map((root) => list(root, { recursive: true }))]);
    if (listings.length === 1) return listings[0] ?? new Map();
    return new Map(listings.flatMap((l) => [...l]));
  }

  private async tickHost(host: PoolHost, listing: PropertyMap | { error: unknown }, stale: ReadonlySet<string>, now: Date, active: () => boolean, groupHosts: Map<string, Set<string>>): Promise<HostTick> {
    const poolHost = host.config.name;
    const log = this.options.logger;
    let volumes: ManagedVolume[];
    try {
      if ("error" in listing) throw listing.error;
      volumes = [...discoverVolumes(host.config.parentDataset, listing).filter((v) => !stale.has(`${poolHost}:${v.dataset}`)), ...discoverAdopted(host.config, listing)];
    } catch (err) {
      this.options.metrics?.failed.inc({ pool_host: poolHost, operation: "discover" });
      this.options.metrics?.volumes.remove({ pool_host: poolHost });
      const condition = this.conditions.observe(poolHost, `discover:${poolHost}`, errorMessage(err), now);
      if (condition !== undefined) log.warn({ op: "snapshotter", poolHost, err: errorMessage(err), condition }, "listing volumes and snapshots failed; nothing done on this host");
      // The pool host's Node (same name, by the config's rule) says so once, when it starts or changes.
      if (condition === "started" || condition === "changed") {
        await this.options.events?.recordOnNode?.({ nodeName: poolHost, type: "Warning", reason: "PoolHostUnreachable", message: `zcsi cannot list pool host ${poolHost}: ${errorMessage(err)}` });
      }
      return { poolHost, error: errorMessage(err), volumes: [] };
    }
    this.options.metrics?.volumes.set({ pool_host: poolHost }, volumes.length);
    const unlisted = this.conditions.end(`discover:${poolHost}`);
    if (unlisted !== undefined) {
      log.info({ op: "snapshotter", poolHost, was: unlisted, condition: "ended" }, "listing volumes and snapshots works again");
      await this.options.events?.recordOnNode?.({ nodeName: poolHost, type: "Normal", reason: "PoolHostReachable", message: `zcsi lists pool host ${poolHost} again (it failed with: ${unlisted})` });
    }
    const reports: VolumeTick[] = [];
    let covered = true;
    const scheduled = volumes.filter((v) => v.schedule !== undefined);
    for (const v of scheduled) if (v.group !== undefined) groupHosts.set(v.group, (groupHosts.get(v.group) ?? new Set()).add(poolHost));
    // Groups first: zfs-fuse's recursive group snapshot fails whole when any dataset below the
    // parent already has its name, as a single volume's snapshot of this minute would.
    const singles = await this.tickGroups(host, scheduled, now, active, reports);
    if (singles === undefined) covered = false;
    await forEachLimited(
      singles ?? [],
      this.concurrency,
      async (volume) => {
        if (active()) reports.push(await this.tickVolume(host, volume, now));
        else covered = false;
      },
    );
    // Only a pass that looked at every volume of the host can tell a condition has ended.
    if (covered) {
      for (const ended of this.conditions.settle(poolHost)) log.info({ op: "snapshotter", poolHost, condition: "ended", key: ended.key, was: ended.message }, "condition ended");
    }
    reports.sort((a, b) => (a.volumeId < b.volumeId ? -1 : 1));
    const takenBy = new Map(reports.map((r) => [r.volumeId, r.taken]));
    const lastSuccess = new Map<string, number>();
    for (const volume of volumes) {
      const volumeId = volume.volumeId ?? formatVolumeId({ poolHost, dataset: volume.dataset });
      const taken = takenBy.get(volumeId);
      const times = volume.snapshots.flatMap((s) => (s.autoTime === undefined ? [] : [s.autoTime]));
      const takenTime = taken === undefined ? undefined : parseAutoSnapshotName(taken);
      if (takenTime !== undefined) times.push(takenTime);
      if (times.length > 0) lastSuccess.set(volumeId, Math.max(...times));
    }
    this.options.metrics?.setLastSuccess(poolHost, lastSuccess);
    return { poolHost, volumes: reports };
  }

  /** The host's snapshot groups (groups.ts planGroups), one after another; returns the volumes to tick alone. */
  private async tickGroups(host: PoolHost, scheduled: readonly ManagedVolume[], now: Date, active: () => boolean, reports: VolumeTick[]): Promise<ManagedVolume[] | undefined> {
    const { singles, groups } = planGroups(host.config.name, scheduled, this.conditions, this.options.logger, now);
    const ctx = { logger: this.options.logger, guard: replicationGuard, ...(this.options.metrics && { metrics: this.options.metrics }) };
    for (const g of groups) {
      if (!active()) return undefined;
      reports.push(...(await tickGroup(ctx, host, g.group, g.members, g.policy, formatPolicy(g.policy), now)));
    }
    return singles;
  }

  private async tickVolume(host: PoolHost, volume: ManagedVolume, now: Date): Promise<VolumeTick> {
    const poolHost = host.config.name;
    const volumeId = volume.volumeId ?? formatVolumeId({ poolHost, dataset: volume.dataset });
    const log = this.options.logger;
    const failures: { operation: SnapshotOperation; error: string }[] = [];
    const fail = async (operation: SnapshotOperation, reason: string, message: string, persisting = false): Promise<void> => {
      failures.push({ operation, error: message });
      this.options.metrics?.failed.inc({ pool_host: poolHost, operation });
      // A persisting condition (the schedule stays unreadable until someone fixes it) is
      // logged when it starts, changes or ends, not on every tick.
      const condition = persisting ? this.conditions.observe(poolHost, `${operation}:${volumeId}`, message, now) : "failed";
      if (condition !== undefined) log.warn({ op: "snapshotter", volumeId, operation, err: message, ...(persisting && { condition }) }, `${operation} failed`);
      if (volume.pv !== undefined) await this.options.events?.record({ pvName: volume.pv, type: "Warning", reason, message });
    };
    let policy: RetentionPolicy;
    try {
      policy = parsePolicy(volume.schedule ?? "", PROP.snapshotSchedule);
    } catch (err) {
      await fail("policy", "AutoSnapshotPolicyInvalid", `${volume.dataset}: ${errorMessage(err)}; no snapshots are taken or pruned until it is fixed (zfs set ${PROP.snapshotSchedule}=...)`, true);
      return { volumeId, dataset: volume.dataset, policy: volume.schedule ?? "", pruned: [], protected: [], failures };
    }
    const normal = formatPolicy(policy);
    const autos: AutoSnapshot[] = volume.snapshots.flatMap((s) => (s.autoTime === undefined ? [] : [{ name: s.name, time: s.autoTime }]));
    const plan = planRetention(policy, now, autos);
    let taken: string | undefined;
    if (plan.take !== undefined) {
      const name = `${volume.dataset}@${plan.take}`;
      try {
        await host.zfs.snapshot(name, { [PROP.autoSnapshot]: normal });
        taken = plan.take;
        this.options.metrics?.taken.inc({ pool_host: poolHost });
        log.info({ op: "snapshotter", volumeId, snapshot: plan.take }, "snapshot taken");
      } catch (err) {
        if (isZcsiError(err, "AlreadyExists")) {
          // Another replica in its last moments as leader, or our own earlier attempt: it is there.
          taken = plan.take;
        } else {
          // Prune nothing when the new snapshot could not be taken: never shrink a volume's
          // history while it is not growing.
          await fail("snapshot", "AutoSnapshotFailed", `taking ${name} failed: ${errorMessage(err)}`);
          return { volumeId, dataset: volume.dataset, policy: normal, pruned: [], protected: [], failures };
        }
      }
    }
    const byName = new Map(volume.snapshots.map((s) => [s.name, s]));
    const guard = replicationGuard(volume);
    const pruned: string[] = [];
    const kept: { name: string; reason: string }[] = [];
    for (const name of plan.prune) {
      const info = byName.get(name);
      if (info === undefined) continue;
      const reason = info.userrefs > 0 ? `held (userrefs ${info.userrefs})` : info.hasClones ? "has clones" : guard(info);
      if (reason !== undefined) {
        kept.push({ name, reason });
        continue;
      }
      const full = `${volume.dataset}@${name}`;
      try {
        await host.zfs.destroy(full);
        pruned.push(name);
        this.options.metrics?.pruned.inc({ pool_host: poolHost });
        log.info({ op: "snapshotter", volumeId, snapshot: name }, "snapshot pruned");
      } catch (err) {
        if (isZcsiError(err, "NotFound")) continue; // already gone
        if (hasReason(err, "dependentClones")) {
          kept.push({ name, reason: "has clones (outside the parent dataset)" });
          continue;
        }
        if (hasReason(err, "busy", "held")) {
          // zfs-fuse answers "dataset is busy" for a held snapshot: a hold placed since discovery.
          kept.push({ name, reason: "busy (held?)" });
          continue;
        }
        await fail("prune", "AutoSnapshotPruneFailed", `destroying ${full} failed: ${errorMessage(err)}`);
      }
    }
    if (kept.length > 0) log.debug({ op: "snapshotter", volumeId, kept }, "expired snapshots kept");
    return { volumeId, dataset: volume.dataset, policy: normal, ...(taken !== undefined && { taken }), pruned, protected: kept, failures };
  }
}
