import { errorMessage, failedPrecondition, isZcsiError } from "../errors.js";
import { replicationJobId } from "../replication/jobs.js";
import type { ReplicationEngine, ReplicationResult } from "../replication/types.js";
import { systemClock, type Clock } from "../util/clock.js";
import { copyName, type Copy } from "../volumes/home.js";
import type { PoolHost } from "../volumes/hosts.js";
import { parseVolumeId } from "../volumes/ids.js";
import { lastMoveProperty } from "../volumes/moves.js";
import { PROP } from "../volumes/properties.js";
import type { FailoverDeps } from "./failover.js";
import type { MoveLock } from "./move-lock.js";
import { addReplicationTarget, markReplica, metadataOf, readProps } from "./promote.js";

/**
 * Fail back, part one (issue 14, item 5): `zcsi resync VOLUME --host OLD` turns the stale copy
 * on OLD (a home that lost a failover, fenced) into a replica of the volume's home. Its
 * diverged state, the writes that never reached the new home, is kept unless the operator
 * says --discard-diverged:
 *
 *  1. snapshot the stale copy `@zcsi-diverged-<time>`, rename it aside to
 *     `<leaf>-diverged-<time>` (readonly, zcsi:diverged, its own mountpoint): nothing is lost;
 *  2. with a snapshot in common with the home (by guid): `zfs clone` the kept dataset at that
 *     snapshot back to `<leaf>` and `zfs promote` it, so `<leaf>` owns the snapshots up to the
 *     common one (the kept data becomes a clone of it, sharing the blocks); without one, the
 *     replication below sends in full;
 *  3. mark `<leaf>` a replica of the home (promote.ts markReplica) and run the volume's
 *     replication job home → OLD: incremental from the common snapshot.
 *
 * With --discard-diverged: `zfs rollback -r` to the common snapshot (destroying the diverged
 * writes), mark, replicate. Every step runs under the volume's move lock.
 */

export const DIVERGED_SNAPSHOT_PREFIX = "zcsi-diverged-";
export const DIVERGED_INFIX = "-diverged-";

export interface ResyncDeps extends FailoverDeps {
  readonly engine: ReplicationEngine;
  readonly clock?: Clock;
}

export interface ResyncRequest {
  readonly volumeId: string;
  /** The pool host whose stale copy becomes a replica. */
  readonly host: string;
  readonly discardDiverged?: boolean;
  /** Continue an interrupted resync (its copy may be a replica already). */
  readonly resume?: boolean;
}

export interface ResyncResult {
  readonly volumeId: string;
  readonly host: string;
  readonly home: string;
  readonly epoch: number;
  /** The newest snapshot both had: the increment starts there (absent: a full send). */
  readonly common?: string;
  /** Where the diverged data is kept (absent with --discard-diverged). */
  readonly kept?: { readonly dataset: string; readonly snapshot: string };
  readonly discarded: boolean;
  readonly replication: ReplicationResult;
}

interface Snap {
  readonly name: string;
  readonly guid: string;
  readonly txg: bigint;
}

async function snapshotsOf(host: PoolHost, dataset: string): Promise<Snap[]> {
  const all = await host.zfs.get([dataset], ["guid", "createtxg"], { depth: 1, missingOk: true });
  const out: Snap[] = [];
  for (const [name, props] of all) {
    const guid = props.get("guid")?.value;
    const txg = props.get("createtxg")?.value ?? "";
    if (!name.startsWith(`${dataset}@`) || guid === undefined || !/^[0-9]+$/.test(txg)) continue;
    out.push({ name: name.slice(dataset.length + 1), guid, txg: BigInt(txg) });
  }
  return out.sort((a, b) => (a.txg < b.txg ? -1 : a.txg > b.txg ? 1 : 0));
}

/** `20261203T165001Z`: sortable, valid in dataset and snapshot names. */
export function stamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, "").replace(/\.[0-9]{3}/, "");
}

export async function resync(deps: ResyncDeps, req: ResyncRequest): Promise<ResyncResult> {
  const { hosts, homes, volumeId } = { ...deps, volumeId: req.volumeId };
  const log = deps.logger.child({ op: "resync", volumeId, poolHost: req.host });
  const host = hosts.get(req.host);
  const copies = await homes.find(volumeId, "resync");
  const home = copies.home;
  if (!home) throw failedPrecondition(`volume ${volumeId} has no home to resync ${req.host}'s copy from: ${copies.problems.join("; ") || "no copies"}; nothing changed`);
  if (home.host === req.host) throw failedPrecondition(`the copy on ${req.host} is the home of ${volumeId} (epoch ${home.epoch}); nothing to resync; nothing changed`);
  const stale = copies.stale.find((c) => c.host === req.host);
  const replica = copies.replicas.find((c) => c.host === req.host);
  const continuing = req.resume === true && replica !== undefined;
  if (!stale && !continuing) {
    const what = replica ? `a replica (epoch ${replica.epoch}), not stale` : "not there (or not a copy of the volume)";
    throw failedPrecondition(`the copy of ${volumeId} on ${req.host} is ${what}; resync turns a stale (fenced) copy into a replica; nothing changed`);
  }
  let lock: MoveLock | undefined;
  try {
    lock = await deps.locks.acquire({ op: "resync", volumeId, from: home.host, to: req.host });
  } catch (err) {
    if (!req.resume || !isZcsiError(err, "FailedPrecondition")) throw err;
    lock = await deps.locks.takeOver(volumeId, "resync");
    if (!lock) throw err;
  }
  const dataset = (stale ?? replica)?.dataset ?? "";
  let common: Snap | undefined;
  let kept: { dataset: string; snapshot: string } | undefined;
  if (stale) ({ common, kept } = await demoteStale(deps, { host, stale, home, identity: volumeId, discardDiverged: req.discardDiverged === true, lock, log }));
  const leaf = parseVolumeId(volumeId, hosts.configs).leaf;
  const source = { host: home.host, dataset: home.dataset };
  const target = { host: req.host, dataset };
  const replication = await deps.engine.replicate({ id: replicationJobId(source, target, `${leaf}.${req.host}`), origin: { kind: "volume", volumeId }, source, target });
  await lock.step("replicated", { snapshot: replication.snapshot });
  // A replica again: from now on the replicator keeps it current (it was no target while stale).
  await addReplicationTarget(hosts, home, req.host, log);
  await lock.release();
  try {
    await host.zfs.set(dataset, lastMoveProperty({ kind: "resync", outcome: "done", at: (deps.clock ?? systemClock).now().toISOString(), from: req.host, to: home.host, epoch: home.epoch }));
  } catch (err) {
    log.warn({ dataset, err: errorMessage(err) }, "could not record the resync on the copy; the move metrics miss it");
  }
  const result: ResyncResult = { volumeId, host: req.host, home: home.host, epoch: home.epoch, ...(common && { common: common.name }), ...(kept && { kept }), discarded: req.discardDiverged === true, replication };
  log.info({ home: copyName(home), common: common?.name, kept: kept?.dataset, action: replication.action, bytes: replication.bytes }, "resynced: the copy is a replica of the home");
  const meta = metadataOf(await readProps(host, dataset));
  const pv = meta?.[PROP.pv] ?? meta?.[PROP.csiName];
  if (pv !== undefined) {
    const what = kept ? `diverged data kept in ${req.host}:${kept.dataset}` : req.discardDiverged ? "diverged data discarded (--discard-diverged)" : "nothing diverged";
    await deps.events?.record({ pvName: pv, type: "Normal", reason: "Resynced", message: `copy on ${req.host} is a replica of ${home.host} (epoch ${home.epoch}) again; ${what}` });
  }
  return result;
}

/**
 * Steps 1 and 2 (or the --discard-diverged rollback) and the replica marks: after this the stale
 * copy's name holds a replica of `home` at the newest common snapshot (or nothing, when they
 * share none: the replication that follows sends in full), and its diverged state is kept aside.
 * Shared by volumes and node-annotation datasets (annotation-resync.ts).
 */
export async function demoteStale(
  deps: { readonly clock?: Clock; readonly hosts: ResyncDeps["hosts"] },
  args: { host: PoolHost; stale: Copy; home: Copy; identity: string; discardDiverged: boolean; lock: MoveLock; log: ResyncDeps["logger"] },
): Promise<{ common?: Snap; kept?: { dataset: string; snapshot: string } }> {
  const { host, stale, home, lock, log } = args;
  const dataset = stale.dataset;
  const [fromHome, onCopy] = await Promise.all([snapshotsOf(deps.hosts.get(home.host), home.dataset), snapshotsOf(host, dataset)]);
  const homeGuids = new Set(fromHome.map((s) => s.guid));
  const common = [...onCopy].reverse().find((s) => homeGuids.has(s.guid));
  const meta = metadataOf(await readProps(host, dataset));
  let kept: { dataset: string; snapshot: string } | undefined;
  if (args.discardDiverged) {
    if (!common) throw failedPrecondition(`the copy on ${host.config.name} has no snapshot in common with the home ${copyName(home)}; nothing to roll back to. Resync without --discard-diverged keeps its data aside and sends in full; nothing changed`);
    log.warn({ dataset, snapshot: common.name }, "--discard-diverged: rolling the stale copy back to the newest common snapshot, destroying its diverged writes");
    await host.zfs.rollback(`${dataset}@${common.name}`, { destroyNewer: true });
    await lock.step("rolled-back", { common: common.name });
  } else {
    kept = await keepAside(deps, host, stale, home, args.identity, lock);
    if (common) {
      await host.zfs.clone(`${kept.dataset}@${common.name}`, dataset, { readonly: "on" });
      await host.zfs.promote(dataset);
      await lock.step("cloned-back", { common: common.name });
    }
  }
  if (common) await markReplica(host, dataset, args.identity, home, meta, log);
  await lock.step("demoted");
  return { ...(common && { common }), ...(kept && { kept }) };
}

/** Step 1: the stale copy's state, snapshotted and renamed aside, readonly, marked zcsi:diverged. */
async function keepAside(deps: { readonly clock?: Clock }, host: PoolHost, stale: Copy, home: Copy, volumeId: string, lock: MoveLock): Promise<{ dataset: string; snapshot: string }> {
  const at = (deps.clock ?? systemClock).now();
  const suffix = stamp(at);
  const leaf = stale.dataset.slice(stale.dataset.lastIndexOf("/") + 1);
  const snapshot = `${DIVERGED_SNAPSHOT_PREFIX}${suffix}`;
  const aside = `${stale.dataset}${DIVERGED_INFIX}${suffix}`;
  await host.zfs.snapshot(`${stale.dataset}@${snapshot}`);
  await lock.step("snapshotted", { snapshot });
  await host.zfs.set(stale.dataset, { mountpoint: `${host.config.mountRoot}/${leaf}${DIVERGED_INFIX}${suffix}` });
  await host.zfs.rename(stale.dataset, aside);
  await host.zfs.set(aside, { readonly: "on", [PROP.diverged]: JSON.stringify({ volume: volumeId, epoch: stale.epoch, home: copyName(home), at: at.toISOString() }) });
  await lock.step("kept-aside", { kept: aside });
  return { dataset: aside, snapshot };
}
