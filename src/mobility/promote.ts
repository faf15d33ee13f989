import { errorMessage, failedPrecondition } from "../errors.js";
import { HOME_ANNOTATION, homeAnnotationValue, type PvAnnotator } from "../k8s/pv.js";
import type { Logger } from "../log.js";
import { copyName, type Copy } from "../volumes/home.js";
import type { VolumeCopies, VolumeHomes } from "../volumes/homes.js";
import type { PoolHost, PoolHosts } from "../volumes/hosts.js";
import { parseVolumeId } from "../volumes/ids.js";
import { CARRIED_PROPS, PROP } from "../volumes/properties.js";
import { PUBLISHED_TO_PROPERTY } from "../volumes/publications.js";
import { ownUserPropertyValue, type DatasetProperties as PropertyMap } from "../zfs/parse.js";
import { parseJsonObject } from "../util/json.js";

/**
 * The promotion primitive (ARCHITECTURE, "Where a volume lives"): make one copy of a volume
 * its home at a new epoch, and turn a former home into a replica of the new one. Used by
 * failover, migrate and resync; the caller holds the volume's move lock (move-lock.ts) and
 * decides whether the old home may still be alive (failover's --force).
 */

export interface Promotion {
  readonly volumeId: string;
  readonly host: string;
  readonly dataset: string;
  readonly epoch: number;
  /** The home before the promotion, when one was reachable (it is stale now, and fenced at the next lookup). */
  readonly previousHome?: Copy;
  /** The copy was the home already (a rerun): nothing was changed. */
  readonly already: boolean;
  /** The copies as found before the promotion. */
  readonly copies: VolumeCopies;
}

const own = (props: PropertyMap | undefined, name: string): string | undefined => {
  const v = ownUserPropertyValue(props?.get(name));
  return v === undefined || v === "-" || v === "" ? undefined : v;
};

function everyCopy(copies: VolumeCopies): Copy[] {
  return [...copies.live, ...copies.stale, ...copies.replicas];
}

/** The volume's metadata (CARRIED_PROPS) as a copy's own properties say, or its zcsi:meta (a replica's). */
export function metadataOf(props: PropertyMap | undefined): Record<string, string> | undefined {
  if (own(props, PROP.csiName) !== undefined) {
    return Object.fromEntries(CARRIED_PROPS.flatMap((name) => (own(props, name) === undefined ? [] : [[name, own(props, name) ?? ""]])));
  }
  const parsed = parseJsonObject(own(props, PROP.meta));
  if (parsed === undefined) return undefined;
  const known = new Set<string>(CARRIED_PROPS);
  const out = Object.fromEntries(Object.entries(parsed).filter((e): e is [string, string] => known.has(e[0]) && typeof e[1] === "string"));
  return out[PROP.csiName] === undefined ? undefined : out;
}

const READ = [...CARRIED_PROPS, PROP.csiName, PROP.meta, "mounted", "mountpoint"];

export async function readProps(host: PoolHost, dataset: string): Promise<PropertyMap | undefined> {
  return (await host.zfs.get([dataset], READ, { missingOk: true })).get(dataset);
}

/**
 * The freshest metadata: the live home's own (when reachable), else the target's (its own, or
 * the zcsi:meta its last receive brought), else a stale copy's own.
 */
async function findMetadata(hosts: PoolHosts, copies: VolumeCopies, target: Copy, targetProps: PropertyMap | undefined): Promise<Record<string, string>> {
  const candidates = [...(copies.home ? [copies.home] : []), target, ...copies.stale];
  for (const c of candidates) {
    try {
      const props = c === target ? targetProps : await readProps(hosts.get(c.host), c.dataset);
      const meta = metadataOf(props);
      if (meta) return meta;
    } catch {
      // That copy's host went away since the lookup: try the next one.
    }
  }
  throw failedPrecondition(
    `no reachable copy of ${copies.volumeId} carries its metadata (${PROP.csiName}, ${PROP.parameters}; a replica gets them in ${PROP.meta} at each replication run); replicate once more before promoting ${copyName(target)}`,
  );
}

/**
 * zcsi:replicate-to of the promoted copy: the old list without the new home. The old home is
 * not added here: at the promotion it is stale (fenced, or gone), neither a source nor a
 * target; it becomes a target when it becomes a replica (demoteCopy, resync: withTarget).
 */
export function replicateToAfterPromotion(list: string | undefined, newHome: string): string | undefined {
  if (list === undefined) return undefined;
  const hosts = list.split(",").map((h) => h.trim()).filter((h) => h !== "" && h !== newHome);
  return hosts.length === 0 ? undefined : hosts.join(",");
}

/** A replicate-to list with `host` added (once, at the end); order kept. */
export function withTarget(list: string | undefined, host: string): string {
  const hosts = (list ?? "").split(",").map((h) => h.trim()).filter((h) => h !== "");
  if (!hosts.includes(host)) hosts.push(host);
  return hosts.join(",");
}

/**
 * Makes the home replicate to the copy on `hostName` (zcsi:replicate-to on the home), once that
 * copy is a replica of it: the replicator keeps it current from then on.
 */
export async function addReplicationTarget(hosts: PoolHosts, home: { host: string; dataset: string }, hostName: string, log: Logger): Promise<void> {
  const host = hosts.get(home.host);
  const list = ownUserPropertyValue((await host.zfs.get([home.dataset], [PROP.replicateTo], { missingOk: true })).get(home.dataset)?.get(PROP.replicateTo));
  const next = withTarget(list === "-" ? undefined : list, hostName);
  if (next === list) return;
  await host.zfs.set(home.dataset, { [PROP.replicateTo]: next });
  log.info({ home: copyName(home), replicateTo: next }, "the home replicates to the new replica");
}

/**
 * Makes the copy of `volumeId` on pool host `to` the volume's home at epoch (newest epoch among
 * reachable copies) + 1: zcsi:role=primary, zcsi:epoch, readonly=off, the volume's metadata set
 * on it (so every controller call finds the volume there), zcsi:replica-of and zcsi:meta
 * removed, mounted at `<mountRoot>/<leaf>`. The old home, if it still answers, is stale from
 * then on (fenced by the next lookup). The role and epoch go in the same `zfs set` as the
 * metadata, so a crash leaves either the replica or the new home, never half of one.
 *
 * FailedPrecondition, nothing changed: no reachable copy; no copy on `to`; the copy there is
 * stale (fenced: resync it); no copy carries the volume's metadata.
 */
export async function promoteCopy(hosts: PoolHosts, homes: VolumeHomes, volumeId: string, to: string, logger: Logger): Promise<Promotion> {
  const log = logger.child({ op: "promote", volumeId, to });
  hosts.get(to); // NotFound for a host that is not configured
  const copies = await homes.find(volumeId, "promote");
  const all = everyCopy(copies);
  const unreachable = copies.unknown.length > 0 ? ` (not reachable: ${copies.unknown.map((u) => u.host).join(", ")})` : "";
  if (all.length === 0) throw failedPrecondition(`volume ${volumeId} has no reachable copy${unreachable}; nothing promoted`);
  if (copies.home?.host === to) {
    log.info({ epoch: copies.home.epoch }, "the copy is the home already; nothing to promote");
    return { volumeId, host: to, dataset: copies.home.dataset, epoch: copies.home.epoch, already: true, copies };
  }
  const target = all.find((c) => c.host === to);
  if (!target) throw failedPrecondition(`pool host ${to} holds no copy of volume ${volumeId} (copies: ${all.map(copyName).join(", ")}${unreachable}); nothing promoted`);
  const stale = copies.stale.find((c) => c.host === to);
  if (stale) throw failedPrecondition(`copy ${copyName(stale)} of ${volumeId} is stale (${stale.reason}); it may hold diverged data: resync it (zcsi resync) before it can be promoted; nothing promoted`);
  const host = hosts.get(to);
  const targetProps = await readProps(host, target.dataset);
  const meta = await findMetadata(hosts, copies, target, targetProps);
  const epoch = Math.max(...all.map((c) => c.epoch)) + 1;
  const previous = copies.home ?? [...copies.stale].sort((a, b) => b.epoch - a.epoch)[0];
  const birth = parseVolumeId(volumeId, hosts.configs);
  const replicateTo = replicateToAfterPromotion(meta[PROP.replicateTo], to);
  const { [PROP.replicateTo]: _dropped, ...rest } = meta;
  const props: Record<string, string> = {
    ...rest,
    ...(replicateTo !== undefined && { [PROP.replicateTo]: replicateTo }),
    [PROP.volume]: volumeId,
    [PROP.state]: "ready",
    [PROP.role]: "primary",
    [PROP.epoch]: String(epoch),
    readonly: "off",
    mountpoint: `${host.config.mountRoot}/${birth.leaf}`,
  };
  log.info({ dataset: target.dataset, epoch, previousHome: previous && copyName(previous) }, "promoting the copy to the volume's home");
  await host.zfs.set(target.dataset, props);
  for (const name of [PROP.replicaOf, PROP.meta, PROP.fenced]) {
    if (own(targetProps, name) !== undefined || name === PROP.replicaOf) await host.zfs.inherit(target.dataset, name);
  }
  if (replicateTo === undefined && meta[PROP.replicateTo] !== undefined) await host.zfs.inherit(target.dataset, PROP.replicateTo);
  await host.zfs.mount(target.dataset);
  log.info({ dataset: target.dataset, epoch }, "promoted: the copy is the volume's home");
  return { volumeId, host: to, dataset: target.dataset, epoch, ...(previous && { previousHome: previous }), already: false, copies };
}

/** `zcsi.dev/home` on the PV after a promotion; never throws (the replicator sets it again after its next run). */
export async function annotateHome(pvs: PvAnnotator | undefined, pv: string, home: { host: string; dataset: string }, epoch: number | undefined, log: Logger): Promise<void> {
  try {
    await pvs?.annotate(pv, { [HOME_ANNOTATION]: homeAnnotationValue(home, epoch) });
  } catch (err) {
    log.warn({ pv, err: errorMessage(err) }, "could not annotate the PersistentVolume with its new home");
  }
}

/**
 * Makes the copy of `volumeId` on pool host `host` a replica of the volume's home: role
 * replica, the home's epoch, readonly=on, zcsi:replica-of=<home>, its metadata kept in
 * zcsi:meta; zcsi:fenced and its publications removed; unmounted (a replica is received into,
 * never read: zfs-fuse refuses an incremental receive into a dataset read since its snapshot).
 * Its data is not touched: a diverged copy must be preserved before (resync.ts).
 *
 * FailedPrecondition, nothing changed: no home; no copy on `host`; that copy is the home.
 */
export async function demoteCopy(hosts: PoolHosts, homes: VolumeHomes, volumeId: string, hostName: string, logger: Logger): Promise<Copy> {
  const log = logger.child({ op: "demote", volumeId, poolHost: hostName });
  const copies = await homes.find(volumeId, "demote");
  const home = copies.home;
  if (!home) throw failedPrecondition(`volume ${volumeId} has no home to make ${hostName}'s copy a replica of: ${copies.problems.join("; ") || "no copies"}; nothing changed`);
  if (home.host === hostName) throw failedPrecondition(`the copy on ${hostName} is the home of ${volumeId} (epoch ${home.epoch}); promote another copy first; nothing changed`);
  const copy = everyCopy(copies).find((c) => c.host === hostName);
  if (!copy) throw failedPrecondition(`pool host ${hostName} holds no copy of volume ${volumeId}; nothing changed`);
  const host = hosts.get(hostName);
  const meta = metadataOf(await readProps(host, copy.dataset));
  await markReplica(host, copy.dataset, volumeId, home, meta, log);
  await addReplicationTarget(hosts, home, hostName, log);
  log.info({ dataset: copy.dataset, home: copyName(home), epoch: home.epoch }, "demoted: the copy is a replica of the volume's home");
  return { ...copy, role: "replica", epoch: home.epoch, readonly: true };
}

/**
 * Marks `dataset` a replica of the volume's home (what the replicator's first receive does):
 * role replica at the home's epoch, zcsi:replica-of, readonly=on, the metadata in zcsi:meta;
 * zcsi:fenced and publications removed; unmounted when it is not in use.
 */
export async function markReplica(host: PoolHost, dataset: string, volumeId: string, home: Copy, meta: Record<string, string> | undefined, log: Logger): Promise<void> {
  await host.zfs.set(dataset, {
    [PROP.role]: "replica",
    [PROP.epoch]: String(home.epoch),
    [PROP.replicaOf]: copyName(home),
    [PROP.volume]: volumeId,
    readonly: "on",
    ...(meta && { [PROP.meta]: JSON.stringify(meta) }),
  });
  for (const name of [PROP.fenced, PUBLISHED_TO_PROPERTY]) await host.zfs.inherit(dataset, name);
  try {
    await host.zfs.unmount(dataset);
  } catch (err) {
    log.warn({ dataset, err: errorMessage(err) }, "could not unmount the replica (in use?); it stays mounted");
  }
}
