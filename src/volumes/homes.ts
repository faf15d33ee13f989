import { errorMessage, failedPrecondition, notFound, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import { classifyCopy, copyName, decideHome, type CopyFacts, type HomeDecision, type StaleCopy } from "./home.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import { parseVolumeId } from "./ids.js";
import { PROP } from "./properties.js";
import type { PropertyMap } from "./volume.js";

/** Where a volume is served from: the answer ControllerPublishVolume puts in publish_context. */
export interface ResolvedHome {
  readonly host: string;
  readonly dataset: string;
  readonly mountpoint: string;
  readonly epoch: number;
  /** zcsi:moving of the home: a planned move blocks new attaches (`<target>@<time>`). */
  readonly moving?: string;
}

/** Everything known about a volume's copies: the decision (home.ts) with the birth it was made for. */
export interface VolumeCopies extends HomeDecision {
  readonly volumeId: string;
  readonly birth: { readonly host: string; readonly dataset: string };
  /** The home copy's properties as read for the decision (with the `extraProps` find was asked for). */
  readonly homeProps?: PropertyMap;
}

export const HOME_PROPS = [PROP.csiName, PROP.volume, PROP.role, PROP.epoch, PROP.replicaOf, PROP.fenced, PROP.moving, PROP.pv, "readonly", "mountpoint"];

/** A stale primary this lookup fenced: what a PV Event about it says (roles wire the listener). */
export interface FencedCopy {
  readonly volumeId: string;
  readonly host: string;
  readonly dataset: string;
  readonly epoch: number;
  readonly reason: string;
  /** The copy's own zcsi:pv (else zcsi:csi-name, which the external-provisioner uses as the PV name), when it has one. */
  readonly pv?: string;
}

/** Told once per copy fenced (after the `zfs set` succeeded). Must not throw. */
export type FenceListener = (fenced: FencedCopy) => Promise<void>;

/** What a dataset's properties say for home.ts: own (local or received) zcsi values only, never inherited ones. */
export function copyFacts(host: string, dataset: string, props: PropertyMap): CopyFacts {
  const own = (name: string): string | undefined => {
    const v = ownUserPropertyValue(props.get(name));
    return v === undefined || v === "-" || v === "" ? undefined : v;
  };
  return {
    host,
    dataset,
    csiName: own(PROP.csiName),
    volume: own(PROP.volume),
    role: own(PROP.role),
    epoch: own(PROP.epoch),
    replicaOf: own(PROP.replicaOf),
    fenced: own(PROP.fenced),
    moving: own(PROP.moving),
    readonly: storedReadonly(props.get("readonly")),
    mountpoint: props.get("mountpoint")?.value,
  };
}

/**
 * The dataset's own readonly setting. libzfs reports a mounted dataset's live mount option
 * instead, with source `temporary`, when the two differ: zfs-fuse does not remount on
 * `zfs set readonly=on` (its mtab keeps `rw`), so a fenced copy reads back `off temporary`.
 * For a boolean, a temporary value means the setting is the other one.
 */
export function storedReadonly(entry: { value: string; source: string } | undefined): boolean {
  if (entry === undefined) return false;
  return entry.source === "temporary" ? entry.value !== "on" : entry.value === "on";
}

/**
 * Finds a volume's copies on every configured pool host and decides its home (home.ts).
 * A copy lives where the replicator puts it, `<host's parentDataset>/<leaf>` (the birth dataset
 * on the birth host), so each host answers one `zfs get` of one dataset, all hosts in
 * parallel. A host that cannot answer is left out and listed as unknown; the others decide.
 *
 * Every stale copy seen is fenced on the spot (readonly=on and zcsi:fenced, one `zfs set`),
 * whoever asked: the first zcsi component to reach a host back from a failover fences it.
 */
export class VolumeHomes {
  constructor(
    private readonly hosts: PoolHosts,
    private readonly logger: Logger,
    private readonly onFence?: FenceListener,
  ) {}

  /**
   * The copies and the decision, after fencing what is stale. NotFound for an id that cannot be
   * a volume. `extraProps` are read in the same `zfs get` and returned for the home copy, so a
   * caller that needs the volume itself asks each host once.
   */
  async find(volumeId: string, op = "home", extraProps: readonly string[] = []): Promise<VolumeCopies> {
    const id = parseVolumeId(volumeId, this.hosts.configs);
    const birth = { host: id.poolHost, dataset: id.dataset };
    const answers = await Promise.all(
      this.hosts.all().map(async (host) => {
        const name = host.config.name;
        const dataset = name === birth.host ? birth.dataset : `${host.config.parentDataset}/${id.leaf}`;
        try {
          const props = (await host.zfs.get([dataset], [...new Set([...HOME_PROPS, ...extraProps])], { missingOk: true })).get(dataset);
          return { host: name, props, copy: props && classifyCopy(volumeId, birth, copyFacts(name, dataset, props)) };
        } catch (err) {
          this.logger.debug({ op, volumeId, poolHost: name, err: errorMessage(err) }, "pool host skipped: it cannot answer, its copy is unknown");
          return { host: name, unknown: errorMessage(err) };
        }
      }),
    );
    const decision = decideHome(
      volumeId,
      answers.flatMap((a) => (a.copy ? [a.copy] : [])),
      answers.flatMap((a) => (a.unknown !== undefined ? [{ host: a.host, reason: a.unknown }] : [])),
    );
    for (const stale of decision.stale) {
      if (!stale.needsFence) continue;
      const props = answers.find((a) => a.host === stale.host)?.props;
      const pv = props && (ownUserPropertyValue(props.get(PROP.pv)) ?? ownUserPropertyValue(props.get(PROP.csiName)));
      await this.fence(this.hosts.get(stale.host), stale, volumeId, op, pv);
    }
    const homeProps = decision.home && answers.find((a) => a.host === decision.home?.host)?.props;
    return { ...decision, volumeId, birth, ...(homeProps && { homeProps }) };
  }

  /**
   * Where the volume is served from. NotFound: no copy anywhere (and every host answered);
   * Unavailable: no home among the hosts that answered while some did not (it may be there);
   * FailedPrecondition: split brain, or copies that leave no home (the message says why).
   */
  async resolve(volumeId: string, op = "resolveHome"): Promise<ResolvedHome> {
    const copies = await this.find(volumeId, op);
    const { home, problems, unknown } = copies;
    const splitBrain = problems.find((p) => p.startsWith("split brain"));
    if (splitBrain !== undefined) throw failedPrecondition(`volume ${volumeId}: ${splitBrain}`);
    if (home) return { host: home.host, dataset: home.dataset, mountpoint: home.mountpoint, epoch: home.epoch, ...(home.moving !== undefined && { moving: home.moving }) };
    const seen = copies.stale.length + copies.replicas.length > 0;
    if (unknown.length > 0) {
      throw unavailable(`volume ${volumeId} has no home among the pool hosts that answered; not reachable: ${unknown.map((u) => `${u.host} (${u.reason})`).join(", ")}${problems.length > 0 ? `; ${problems.join("; ")}` : ""}`);
    }
    if (!seen && problems.length === 0) throw notFound(`volume ${volumeId} does not exist on any pool host`);
    throw failedPrecondition(`volume ${volumeId} has no home: ${problems.join("; ")}`);
  }

  private async fence(host: PoolHost, copy: StaleCopy, volumeId: string, op: string, pv: string | undefined): Promise<void> {
    const { reason } = copy;
    try {
      await host.zfs.set(copy.dataset, { readonly: "on", [PROP.fenced]: reason });
      this.logger.warn({ op, volumeId, poolHost: host.config.name, dataset: copy.dataset, epoch: copy.epoch, reason }, "fenced a stale primary (readonly=on); kept, never served, never a replication source");
    } catch (err) {
      // Still stale in the decision (never served); the next lookup tries again.
      this.logger.warn({ op, volumeId, poolHost: host.config.name, dataset: copy.dataset, err: errorMessage(err) }, `could not fence stale copy ${copyName(copy)}`);
      return;
    }
    await this.onFence?.({ volumeId, host: host.config.name, dataset: copy.dataset, epoch: copy.epoch, reason, ...(pv !== undefined && { pv }) });
  }
}

/** The newest snapshot of a dataset (by creation txg), with its creation time. */
export async function newestSnapshot(hosts: PoolHosts, copy: { host: string; dataset: string }): Promise<{ name: string; createdAt: Date } | undefined> {
  const all = await hosts.get(copy.host).zfs.get([copy.dataset], ["createtxg", "creation"], { depth: 1, missingOk: true });
  let best: { name: string; txg: bigint; createdAt: Date } | undefined;
  for (const [name, props] of all) {
    if (!name.startsWith(`${copy.dataset}@`)) continue;
    const txg = BigInt(props.get("createtxg")?.value.match(/^[0-9]+$/)?.[0] ?? "0");
    const seconds = Number(props.get("creation")?.value ?? "0");
    if (!best || txg > best.txg) best = { name: name.slice(copy.dataset.length + 1), txg, createdAt: new Date(seconds * 1000) };
  }
  return best && { name: best.name, createdAt: best.createdAt };
}
