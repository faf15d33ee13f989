import { errorMessage, isZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import type { SnapshotMetrics } from "../metrics.js";
import { snapshotTogether } from "../volumes/atomic-snapshot.js";
import type { PoolHost } from "../volumes/hosts.js";
import { formatVolumeId } from "../volumes/ids.js";
import { PROP } from "../volumes/properties.js";
import { parsePolicy, type RetentionPolicy } from "../volumes/schedule.js";
import type { ConditionLog } from "../util/periodic.js";
import { hasReason } from "../zfs/errors.js";
import { planRetention, type AutoSnapshot } from "./retention.js";
import type { ManagedVolume, SnapshotInfo, VolumeTick } from "./scheduler.js";
import { pushTo } from "../util/multimap.js";

/**
 * Scheduled snapshot groups (StorageClass `snapshotGroup`): the scheduled volumes of one pool
 * host that carry the same group name and the same schedule are one unit for the schedule.
 *
 * - Taking: ONE atomic `zfs snapshot` of every member (volumes/atomic-snapshot.ts: several names
 *   on OpenZFS, `-r` of the parent and the non-members' snapshots destroyed on zfs-fuse), named
 *   `zcsi-auto-<UTC minute>` like any scheduled snapshot, so each member's history is the same.
 * - Retention: planned once over the union of the members' automatic snapshots; an expired
 *   group snapshot is destroyed on every member, or, when any member's copy must stay (held,
 *   cloned, not yet replicated: the scheduler's rules), kept on every member.
 *
 * Returns one VolumeTick per member, as the single-volume path does.
 */
export interface GroupTickContext {
  readonly logger: Logger;
  readonly metrics?: SnapshotMetrics;
  /** The scheduler's replication rule for one member (scheduler.ts replicationGuard). */
  readonly guard: (volume: ManagedVolume) => (snapshot: SnapshotInfo) => string | undefined;
}

interface MemberState {
  readonly volume: ManagedVolume;
  readonly volumeId: string;
  readonly byName: ReadonlyMap<string, SnapshotInfo>;
  readonly guard: (snapshot: SnapshotInfo) => string | undefined;
  taken?: string;
  readonly pruned: string[];
  readonly kept: { name: string; reason: string }[];
  readonly failures: { operation: "snapshot" | "prune"; error: string }[];
}

/** Why `info` must stay, by the scheduler's rules (held, cloned, unreplicated); undefined when it may go. */
function keepReason(member: MemberState, info: SnapshotInfo): string | undefined {
  return info.userrefs > 0 ? `held (userrefs ${info.userrefs})` : info.hasClones ? "has clones" : member.guard(info);
}

export async function tickGroup(
  ctx: GroupTickContext,
  host: PoolHost,
  group: string,
  volumes: readonly ManagedVolume[],
  policy: RetentionPolicy,
  normal: string,
  now: Date,
): Promise<VolumeTick[]> {
  const poolHost = host.config.name;
  const log = ctx.logger;
  const members: MemberState[] = volumes.map((volume) => ({
    volume,
    volumeId: formatVolumeId({ poolHost, dataset: volume.dataset }),
    byName: new Map(volume.snapshots.map((s) => [s.name, s])),
    guard: ctx.guard(volume),
    pruned: [],
    kept: [],
    failures: [],
  }));
  const times = new Map<string, number>();
  for (const v of volumes) for (const s of v.snapshots) if (s.autoTime !== undefined) times.set(s.name, s.autoTime);
  const autos: AutoSnapshot[] = [...times].map(([name, time]) => ({ name, time }));
  const plan = planRetention(policy, now, autos);
  const report = (): VolumeTick[] =>
    members.map((m) => ({
      volumeId: m.volumeId,
      dataset: m.volume.dataset,
      policy: normal,
      ...(m.taken !== undefined && { taken: m.taken }),
      pruned: m.pruned,
      protected: m.kept,
      failures: m.failures,
    }));
  if (plan.take !== undefined) {
    const datasets = volumes.map((v) => v.dataset);
    try {
      await snapshotTogether(host, datasets, plan.take, { [PROP.autoSnapshot]: normal }, log);
      for (const m of members) m.taken = plan.take;
      ctx.metrics?.taken.inc({ pool_host: poolHost }, members.length);
      log.info({ op: "snapshotter", poolHost, snapshotGroup: group, snapshot: plan.take, volumes: members.map((m) => m.volumeId) }, "group snapshot taken");
    } catch (err) {
      // As for one volume: nothing is pruned while the group's history is not growing.
      const message = `taking ${plan.take} of snapshot group ${group} (${datasets.join(", ")}) failed: ${errorMessage(err)}`;
      for (const m of members) m.failures.push({ operation: "snapshot", error: message });
      ctx.metrics?.failed.inc({ pool_host: poolHost, operation: "snapshot" });
      log.warn({ op: "snapshotter", poolHost, snapshotGroup: group, operation: "snapshot", err: errorMessage(err) }, "snapshot failed");
      return report();
    }
  }
  for (const name of plan.prune) {
    const holders = members.filter((m) => m.byName.has(name));
    const reasons = holders.flatMap((m) => {
      const reason = keepReason(m, m.byName.get(name)!);
      return reason === undefined ? [] : [`${m.volume.dataset}: ${reason}`];
    });
    if (reasons.length > 0) {
      // Kept or dropped as one: one member's copy that must stay keeps the whole group snapshot.
      for (const m of holders) m.kept.push({ name, reason: `group ${group}: ${reasons.join("; ")}` });
      continue;
    }
    for (const m of holders) {
      const full = `${m.volume.dataset}@${name}`;
      try {
        await host.zfs.destroy(full);
        m.pruned.push(name);
        ctx.metrics?.pruned.inc({ pool_host: poolHost });
      } catch (err) {
        if (isZcsiError(err, "NotFound")) continue;
        if (hasReason(err, "dependentClones", "busy", "held")) {
          m.kept.push({ name, reason: "has clones or holds (found at destroy)" });
          continue;
        }
        m.failures.push({ operation: "prune", error: `destroying ${full} failed: ${errorMessage(err)}` });
        ctx.metrics?.failed.inc({ pool_host: poolHost, operation: "prune" });
        log.warn({ op: "snapshotter", volumeId: m.volumeId, snapshotGroup: group, operation: "prune", err: errorMessage(err) }, "prune failed");
      }
    }
    if (holders.some((m) => m.pruned.includes(name))) log.info({ op: "snapshotter", poolHost, snapshotGroup: group, snapshot: name }, "group snapshot pruned");
  }
  return report();
}

/**
 * Splits a host's scheduled volumes: groups of two or more members sharing one readable
 * schedule (ordered by name), and the volumes ticked alone: those in no group, a group of one,
 * or a group whose members disagree on the schedule (a condition logged when it starts and
 * ends; each member is then snapshotted alone until they agree).
 */
export function planGroups(
  poolHost: string,
  scheduled: readonly ManagedVolume[],
  conditions: ConditionLog,
  logger: Logger,
  now: Date,
): { singles: ManagedVolume[]; groups: { group: string; members: ManagedVolume[]; policy: RetentionPolicy }[] } {
  const byGroup = new Map<string, ManagedVolume[]>();
  for (const v of scheduled) if (v.group !== undefined) pushTo(byGroup, v.group, v);
  const singles = scheduled.filter((v) => v.group === undefined || (byGroup.get(v.group)?.length ?? 0) < 2);
  const groups: { group: string; members: ManagedVolume[]; policy: RetentionPolicy }[] = [];
  for (const [group, members] of [...byGroup].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (members.length < 2) continue;
    const schedules = new Set(members.map((m) => m.schedule ?? ""));
    let policy: RetentionPolicy | undefined;
    try {
      policy = schedules.size === 1 ? parsePolicy([...schedules][0]!, PROP.snapshotSchedule) : undefined;
    } catch {
      policy = undefined; // the single path reports each member's unreadable schedule
    }
    if (policy === undefined) {
      const message = `snapshot group ${group} on ${poolHost}: members have different or unreadable schedules (${[...schedules].join(" | ")}); each is snapshotted alone until they agree`;
      const condition = conditions.observe(poolHost, `group-schedule:${poolHost}:${group}`, message, now);
      if (condition !== undefined) logger.warn({ op: "snapshotter", poolHost, snapshotGroup: group, condition }, message);
      singles.push(...members);
      continue;
    }
    groups.push({ group, members, policy });
  }
  return { singles, groups };
}

/**
 * A snapshotGroup whose volumes live on several pool hosts cannot be one atomic snapshot: each
 * host's members are snapshotted together, per host. Logged when that starts and ends.
 */
export function reportSpreadGroups(groupHosts: ReadonlyMap<string, ReadonlySet<string>>, conditions: ConditionLog, logger: Logger, now: Date): void {
  for (const [group, hosts] of groupHosts) {
    if (hosts.size < 2) continue;
    const message = `snapshot group ${group} has volumes on pool hosts ${[...hosts].sort().join(", ")}: one atomic snapshot per pool host, not one for the group`;
    const condition = conditions.observe("snapshot-groups", `group:${group}`, message, now);
    if (condition !== undefined) logger.warn({ op: "snapshotter", snapshotGroup: group, condition }, message);
  }
  for (const ended of conditions.settle("snapshot-groups")) logger.info({ op: "snapshotter", condition: "ended", key: ended.key, was: ended.message }, "condition ended");
}
