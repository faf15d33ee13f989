import { alreadyExists, errorMessage, failedPrecondition, invalidArgument, isZcsiError, notFound, resourceExhausted, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import { VolumeDestroyer } from "./delete.js";
import { formatVolumeId, type VolumeRef } from "./ids.js";
import type { PoolHost, PoolHostObservation, PoolHosts } from "./hosts.js";
import type { VolumeParameters } from "./parameters.js";
import { FIRST_EPOCH, PROP } from "./properties.js";
import { resizeVolume } from "./resize.js";
import { sizeProperties, spaceNeeded } from "./size-modes.js";
import { requireHostCanHonour } from "./host-limits.js";
import { modifyVolume } from "./modify.js";
import { VolumeHomes, type FenceListener, type ResolvedHome } from "./homes.js";
import { volumeAtHome } from "./moved.js";
import { choosePlacement, describePlacement, type PlacementReason } from "./placement.js";
import { ContentCopies } from "./sources.js";
import { cloneSnapshotName, contentSourceKey, isFenced, isReplica, isServingCopy, toVolume, VOLUME_PROPS, type CreateSpec, type Placement, type PropertyMap, type ReplicationHolds, type Volume } from "./volume.js";
import { PropertyView } from "../zfs/parse.js";
import { hasReason, ZfsError } from "../zfs/errors.js";

export { cloneSnapshotName, contentSourceKey, type ContentSource, type CreateSpec, type Placement, type ReplicationHolds, type Volume } from "./volume.js";

/** Every volume (ordered by id), and why each host that could not be listed could not (its volumes are as last seen). */
export interface VolumeListing {
  readonly volumes: Volume[];
  readonly unreachable: ReadonlyMap<string, string>;
}

/**
 * What a volume is on a pool host: a dataset directly below the host's parentDataset,
 * carrying zcsi's user properties. Every method here takes a known-valid leaf or ref
 * (csi/ validated it), and touches nothing outside the configured parents.
 */
export class VolumeService {
  constructor(
    readonly hosts: PoolHosts,
    private readonly logger: Logger,
    replication?: ReplicationHolds, // absent: no replicator in this deployment, so no holds of its to release
    onFence?: FenceListener, // each stale copy a home lookup fences: the role makes it a PV Event
  ) {
    this.copies = new ContentCopies(logger);
    this.destroyer = new VolumeDestroyer(logger, replication);
    this.homes = new VolumeHomes(hosts, logger, onFence);
  }

  /** Where each volume is served from: its copies' roles and epochs (homes.ts). */
  readonly homes: VolumeHomes;

  /**
   * The host, dataset and mountpoint a volume is served from now (ControllerPublishVolume's
   * answer), fencing any stale copy it meets. NotFound: no copy; Unavailable: the only
   * candidates are on unreachable hosts; FailedPrecondition: split brain or no live primary.
   */
  resolveHome(volumeId: string): Promise<ResolvedHome> {
    return this.homes.resolve(volumeId);
  }

  private readonly copies: ContentCopies;
  private readonly destroyer: VolumeDestroyer;
  /** Each host's volumes at its last successful listing: what ListVolumes shows while it is down. */
  private readonly lastListed = new Map<string, Volume[]>();

  datasetOf(host: PoolHost, leaf: string): string {
    return `${host.config.parentDataset}/${leaf}`;
  }

  /** The volume born at `ref`: one `zfs get` while the birth copy has no replicas and serves it, else its home (moved.ts). */
  async get(ref: VolumeRef): Promise<Volume | undefined> {
    const host = this.hosts.get(ref.poolHost);
    let props: PropertyMap | undefined;
    try {
      props = (await host.zfs.get([ref.dataset], VOLUME_PROPS, { missingOk: true })).get(ref.dataset);
    } catch (err) {
      if (!isZcsiError(err, "Unavailable")) throw err;
      return volumeAtHome(this.hosts, this.homes, this.logger, ref, err);
    }
    // A copy with replicas may have lost its home to a failover while its host was down, and
    // still say primary until the first lookup fences it: only the copies decide (moved.ts).
    const mayBeStale = props !== undefined && this.hosts.names.length > 1 && (props.get(PROP.replicateTo)?.value ?? "-") !== "-";
    if (props && !isReplica(props) && !isFenced(props) && !mayBeStale) {
      const volume = toVolume(host, ref.dataset, props);
      if (!volume) throw failedPrecondition(`dataset ${ref.dataset} on ${ref.poolHost} exists but was not created by zcsi (no ${PROP.csiName}); refusing to touch it`);
      return volume;
    }
    return props || this.hosts.names.length > 1 ? volumeAtHome(this.hosts, this.homes, this.logger, ref, undefined) : undefined;
  }

  /**
   * Where a new volume named `leaf` stands: the volume if it already exists on some host (a
   * volume may live on any), and each host's free space under its parent. One `zfs get` per
   * host (in parallel) answers both, so a CreateVolume costs this and its `zfs create`.
   *
   * A host that cannot answer (unreachable, pool gone, no parent dataset) is left out of
   * `free`, so new volumes go to the others (health per host: one host down does not stop
   * provisioning on the rest); a request pinned to it (poolHost, a source on it) then fails
   * there with its own error. Only when no host answers does the lookup fail. The price,
   * logged: a retry of a CreateVolume whose first attempt landed on a host that is down now
   * cannot see that volume, and makes another one elsewhere.
   */
  async lookup(leaf: string): Promise<Placement> {
    const results = await Promise.all(
      this.hosts.all().map(async (host) => {
        const name = host.config.name;
        const parent = host.config.parentDataset;
        const dataset = this.datasetOf(host, leaf);
        let found: ReadonlyMap<string, PropertyMap>;
        try {
          found = await host.zfs.get([parent, dataset], [...VOLUME_PROPS, "available"], { missingOk: true });
        } catch (err) {
          return { host: name, unusable: err as unknown, free: undefined, volume: undefined };
        }
        const parentProps = found.get(parent);
        if (!parentProps) return { host: name, unusable: failedPrecondition(`parent dataset ${parent} does not exist on pool host ${name}; create it first (see docs/pool-host.md)`) as unknown, free: undefined, volume: undefined };
        const entry = found.get(dataset);
        const props = entry && !isReplica(entry) && !isFenced(entry) ? entry : undefined;
        const volume = props ? toVolume(host, dataset, props) : undefined;
        if (props && !volume) throw failedPrecondition(`dataset ${dataset} on ${name} exists but was not created by zcsi (no ${PROP.csiName}); refusing to touch it`);
        return { host: name, free: new PropertyView(parent, parentProps, name).integer("available"), volume, unusable: undefined };
      }),
    );
    type Usable = { host: string; free: bigint; volume: Volume | undefined };
    const usable = results.flatMap((r): Usable[] => (r.free !== undefined ? [{ host: r.host, free: r.free, volume: r.volume }] : []));
    const unusable = results.flatMap((r) => (r.unusable !== undefined ? [{ host: r.host, unusable: r.unusable as unknown }] : []));
    if (usable.length === 0 && unusable[0]) throw unusable[0].unusable;
    // Debug only: the host's being down is logged once when it starts (checkHost), not per call.
    for (const r of unusable) this.logger.debug({ op: "CreateVolume", leaf, poolHost: r.host, err: errorMessage(r.unusable) }, "pool host left out of placement: it cannot answer");
    const existing = usable.find((r) => r.volume !== undefined)?.volume;
    return { ...(existing && { existing }), free: new Map(usable.map((r) => [r.host, r.free])) };
  }

  /** Space available for new volumes on a host: the parent dataset's `available`. */
  async available(host: PoolHost): Promise<bigint> {
    const parent = host.config.parentDataset;
    let props: PropertyMap | undefined;
    try {
      props = (await host.zfs.get([parent], ["available"])).get(parent);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) throw failedPrecondition(`parent dataset ${parent} does not exist on pool host ${host.config.name}; create it first (see docs/pool-host.md)`);
      throw err;
    }
    return new PropertyView(parent, props, host.config.name).integer("available");
  }

  /**
   * The host a new volume goes to and why (placement.ts: the pod's node when it is a pool host
   * with room, else the StorageClass poolHost, else the most free space; never a host of its
   * replicateTo, since a volume and its replica on one host would protect against nothing).
   * Logged with the reason, which the volume also keeps in zcsi:placement.
   */
  async place(spec: CreateSpec, known?: ReadonlyMap<string, bigint>): Promise<{ host: PoolHost; placement: string }> {
    const exclude = spec.params.replicateTo ?? [];
    const names = this.hosts.names;
    if (names.every((n) => exclude.includes(n))) throw invalidArgument(`parameter replicateTo names every pool host (${exclude.join(", ")}); none is left to hold the volume itself`);
    const free = known ?? (await this.freeByHost());
    const choice = choosePlacement({ hosts: names, free, capacityBytes: spec.capacityBytes, exclude, ...(spec.preferredNode !== undefined && { preferredNode: spec.preferredNode }), ...(spec.params.poolHost !== undefined && { poolHost: spec.params.poolHost }) });
    if (choice.host === undefined) throw unavailable("no pool host is reachable to place the volume on");
    const placement = describePlacement(choice, spec.preferredNode);
    this.logger.info({ op: "CreateVolume", leaf: spec.leaf, poolHost: choice.host, reason: choice.reason, placement, preferredNode: spec.preferredNode, free: Object.fromEntries([...free].map(([h, b]) => [h, b.toString()])) }, "pool host chosen");
    return { host: this.hosts.get(choice.host), placement };
  }

  /** Free space of each host that answers (a host that does not is left out, and logged). */
  private async freeByHost(): Promise<Map<string, bigint>> {
    const hosts = this.hosts.all();
    const settled = await Promise.allSettled(hosts.map((h) => this.available(h)));
    const free = new Map<string, bigint>();
    settled.forEach((s, i) => {
      const name = hosts[i]?.config.name ?? "";
      if (s.status === "fulfilled") free.set(name, s.value);
      else this.logger.warn({ op: "CreateVolume", poolHost: name, err: errorMessage(s.reason) }, "pool host left out of placement: it cannot answer");
    });
    return free;
  }

  /**
   * Creates the dataset with every property in one `zfs create` (one round trip; zfs
   * applies them atomically). Steps that cannot be part of the create (ownership of the
   * root directory) run after it, bracketed by zcsi:state=creating → ready so that a crash
   * in between is finished by the retry instead of being reported as ready.
   */
  async create(spec: CreateSpec, known?: Placement): Promise<Volume> {
    const source = spec.source;
    // A clone or restore lives where its source is (the caller checked poolHost agrees).
    const { host, placement } = source
      ? { host: this.hosts.get(source.kind === "snapshot" ? source.snapshot.ref.poolHost : source.volume.ref.poolHost), placement: "content-source" satisfies PlacementReason }
      : await this.place(spec, known?.free);
    await requireHostCanHonour(host, spec.params);
    const dataset = this.datasetOf(host, spec.leaf);
    const needsSetup = spec.params.uid !== undefined || spec.params.gid !== undefined || spec.params.mode !== undefined;
    const free = known?.free.get(host.config.name) ?? (await this.available(host));
    const needed = spaceNeeded(spec.params.sizeMode, spec.capacityBytes, spec.params.zfsProperties["recordsize"]);
    if (needed > free) {
      // A limit (or a thin request) larger than the pool is legal in ZFS, but the CSI contract
      // is that the capacity is usable: refuse what the pool could not hold even now. For
      // `reserved` (size + headroom, size-modes.ts) this is ZFS's own rule: a reservation must
      // fit in the parent's `available`, which already counts every other reservation; the
      // other modes set nothing aside, so their volumes together may be promised more.
      throw resourceExhausted(`pool host ${host.config.name} has ${free} bytes available under ${host.config.parentDataset}; ${spec.capacityBytes} requested${needed > spec.capacityBytes ? ` (${needed} with its headroom)` : ""} (sizeMode ${spec.params.sizeMode})`);
    }
    const props: Record<string, string> = {
      ...spec.params.zfsProperties,
      // Every copy says which volume it is and whether it is the home (volumes/home.ts).
      [PROP.volume]: formatVolumeId({ poolHost: host.config.name, dataset }),
      [PROP.role]: "primary",
      [PROP.epoch]: String(FIRST_EPOCH),
      ...sizeProperties(spec.params.sizeMode, spec.capacityBytes, spec.params.zfsProperties["recordsize"]),
      mountpoint: `${host.config.mountRoot}/${spec.leaf}`,
      [PROP.csiName]: spec.csiName,
      [PROP.parameters]: spec.params.canonical,
      [PROP.state]: needsSetup ? "creating" : "ready",
      [PROP.placement]: placement,
      ...(source && { [PROP.contentSource]: contentSourceKey(source) ?? "" }),
      ...(spec.params.pvcName && spec.params.pvcNamespace && { [PROP.pvc]: `${spec.params.pvcNamespace}/${spec.params.pvcName}` }),
      ...(spec.params.pvName && { [PROP.pv]: spec.params.pvName }),
      ...(spec.params.snapshotSchedule !== undefined && { [PROP.snapshotSchedule]: spec.params.snapshotSchedule }),
      ...(spec.params.snapshotGroup !== undefined && { [PROP.snapshotGroup]: spec.params.snapshotGroup }),
      // Read by the replicator at every pass (docs/replication.md); changed later only by `zfs set`.
      ...(spec.params.replicateTo !== undefined && {
        [PROP.replicateTo]: spec.params.replicateTo.join(","),
        [PROP.replicationInterval]: spec.params.replicationInterval ?? "",
      }),
      ...(spec.params.replicationBandwidth !== undefined && { [PROP.replicationBandwidth]: String(spec.params.replicationBandwidth) }),
    };
    try {
      if (!source) await host.zfs.create(dataset, props);
      else if (source.kind === "snapshot") await this.copies.restoreSnapshot(host, source.snapshot, dataset, props, spec.params);
      else await this.copies.cloneVolume(host, source.volume, spec.leaf, dataset, props, spec.params);
    } catch (err) {
      // A concurrent creator (another controller replica) won the race: report what is there.
      if (isZcsiError(err, "AlreadyExists")) throw alreadyExists(`dataset ${dataset} already exists on ${host.config.name}`);
      // The pool filled between the free-space check and the create (another volume took the
      // space): ZFS refused the reservation, and created nothing.
      if (hasReason(err, "outOfSpace")) throw resourceExhausted(`pool host ${host.config.name} cannot hold ${spec.capacityBytes} bytes for ${dataset} (sizeMode ${spec.params.sizeMode}): ${errorMessage(err)}`, { cause: err });
      throw err;
    }
    // A plain create set every property itself: the volume is what it asked for, with no
    // read-back round trip. A clone or copy reads back what ZFS made of it.
    const ref = { poolHost: host.config.name, dataset };
    const volume: Volume | undefined = source
      ? await this.get(ref)
      : {
          id: formatVolumeId(ref),
          ref,
          csiName: spec.csiName,
          capacityBytes: spec.capacityBytes,
          sizeMode: spec.params.sizeMode,
          usedBytes: 0n,
          mountpoint: props.mountpoint ?? "",
          mounted: true,
          state: needsSetup ? "creating" : "ready",
          parameters: spec.params.canonical,
          placement,
        };
    if (!volume) throw notFound(`dataset ${dataset} vanished right after it was created on ${host.config.name}`);
    return volume.state !== "ready" ? this.finish(volume, spec.params) : volume;
  }

  /**
   * Work a retried CreateVolume still owes an existing volume: finish it if it is not ready,
   * and release the hidden snapshot of a PVC clone when a crash came between the clone and
   * that step (a deferred destroy is idempotent).
   */
  async settle(volume: Volume, params: VolumeParameters): Promise<Volume> {
    const ready = volume.state === "ready" ? volume : await this.finish(volume, params);
    const leaf = volume.ref.dataset.slice(volume.ref.dataset.lastIndexOf("/") + 1);
    const origin = volume.origin;
    if (origin !== undefined && volume.contentSource?.startsWith("volume:") && origin === cloneSnapshotName(origin.slice(0, origin.indexOf("@")), leaf)) {
      await this.hosts.get(volume.ref.poolHost).zfs.destroy(origin, { deferred: true }).catch((err: unknown) => {
        if (!isZcsiError(err, "NotFound")) throw err;
      });
    }
    return ready;
  }

  /** Runs the post-create steps of a volume left in `creating` (idempotent) and marks it ready. */
  async finish(volume: Volume, params: VolumeParameters): Promise<Volume> {
    const host = this.hosts.get(volume.ref.poolHost);
    // A copy-mode restore arrives unmounted; mount before touching the root directory.
    if (!volume.mounted) await host.zfs.mount(volume.ref.dataset);
    if (params.uid !== undefined || params.gid !== undefined || params.mode !== undefined) {
      // `install -d` sets owner and mode of an existing directory in one command.
      const argv = ["install", "-d", "-m", params.mode ?? "0755"];
      if (params.uid !== undefined) argv.push("-o", String(params.uid));
      if (params.gid !== undefined) argv.push("-g", String(params.gid));
      argv.push(volume.mountpoint);
      const result = await host.exec.run(argv);
      if (result.exitCode !== 0) throw unavailable(`setting owner/mode of ${volume.mountpoint} on ${host.config.name} failed: ${result.stderr.trim()}`);
    }
    await host.zfs.set(volume.ref.dataset, { [PROP.state]: "ready" });
    return { ...volume, state: "ready", mounted: true };
  }

  /** Destroys a volume's dataset (see VolumeDestroyer). Absent → false; not ours → FailedPrecondition. */
  async delete(ref: VolumeRef): Promise<boolean> {
    const volume = await this.get(ref);
    if (!volume) return false;
    return this.destroyer.destroy(this.hosts.get(volume.ref.poolHost), volume); // the home copy
  }

  /** Sets a new size in the volume's size mode (resize.ts). */
  async resize(volume: Volume, bytes: bigint): Promise<Volume> {
    const host = this.hosts.get(volume.ref.poolHost);
    return resizeVolume(host, volume, bytes, () => this.available(host), this.logger);
  }

  /** Changes a live volume's mutable parameters (modify.ts). */
  modify(volume: Volume, mutable: Readonly<Record<string, string>>): Promise<Volume> {
    return modifyVolume(this.hosts.get(volume.ref.poolHost), volume, mutable, this.hosts.names, this.logger);
  }

  private async listHost(host: PoolHost): Promise<Volume[]> {
    const parent = host.config.parentDataset;
    let all: ReadonlyMap<string, PropertyMap>;
    try {
      all = await host.zfs.get([parent], VOLUME_PROPS, { depth: 1 });
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return [];
      throw err;
    }
    const volumes: Volume[] = [];
    for (const [dataset, props] of all) {
      if (dataset === parent || !dataset.startsWith(parent + "/") || dataset.slice(parent.length + 1).includes("/")) continue;
      // Replicas and fenced copies are not volumes; a moved volume is listed where it is served.
      const volume = isServingCopy(props) ? toVolume(host, dataset, props) : undefined;
      if (volume) volumes.push(volume);
    }
    return volumes;
  }

  /**
   * Every volume, tolerating hosts that cannot answer: a host whose listing fails reports the
   * volumes it had at its last successful listing (none before the first), with the reason in
   * `unreachable`, so one host down neither hides nor blocks the others' volumes, and is
   * suspect (its next check runs, PoolHostHealth.suspect). Throws only when no host answered.
   */
  async listTolerant(): Promise<VolumeListing> {
    const hosts = this.hosts.all();
    const settled = await Promise.allSettled(hosts.map((host) => this.listHost(host)));
    const unreachable = new Map<string, string>();
    const volumes: Volume[] = [];
    settled.forEach((result, i) => {
      const name = hosts[i]?.config.name ?? "";
      if (result.status === "fulfilled") {
        this.lastListed.set(name, result.value);
        volumes.push(...result.value);
      } else {
        unreachable.set(name, errorMessage(result.reason));
        this.hosts.health.suspect(name);
        volumes.push(...(this.lastListed.get(name) ?? []));
      }
    });
    const firstFailure = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (firstFailure && unreachable.size === hosts.length) throw firstFailure.reason;
    return { volumes: volumes.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)), unreachable };
  }

  /**
   * Checks a host and records the outcome in hosts.health; logs when a problem starts, changes
   * or ends, not on every check (Probe runs every 30 s).
   */
  async checkHost(host: PoolHost): Promise<string | undefined> {
    const { problem, ...observation } = await this.hostCheck(host);
    const changed = this.hosts.health.record(host.config.name, problem, observation);
    if (changed?.up === false) this.logger.warn({ op: "health", poolHost: host.config.name, problem }, "pool host down: its volumes are degraded, the other hosts serve on");
    else if (changed?.up === true) this.logger.info({ op: "health", poolHost: host.config.name }, "pool host up");
    return problem;
  }

  /** Every host checked at once: name → problem (undefined when up); one found up less than `reuseUpWithinMs` ago is not checked again. */
  async checkHosts(reuseUpWithinMs = 0): Promise<Map<string, string | undefined>> {
    const hosts = this.hosts.all();
    const problems = await Promise.all(hosts.map((h) => (this.hosts.health.upWithin(h.config.name, reuseUpWithinMs) ? undefined : this.checkHost(h))));
    return new Map(hosts.map((h, i) => [h.config.name, problems[i]]));
  }

  /**
   * Probe's answer: the controller is ready while it can serve at least one pool host. With
   * some hosts down it is degraded, not dead (their volumes answer UNAVAILABLE and show an
   * abnormal condition); only when every host is down are the reasons returned (not ready).
   */
  async readiness(): Promise<string[]> {
    const problems = [...(await this.checkHosts()).entries()].flatMap(([name, p]) => (p === undefined ? [] : [`${name}: ${p}`]));
    return problems.length === this.hosts.names.length ? problems : [];
  }

  /** Why a host is unfit (none: pool ONLINE, parent present), its pool, whether it answered at all (a failed zfs command is an answer). */
  async hostCheck(host: PoolHost): Promise<PoolHostObservation & { problem?: string }> {
    // Both questions at once: one round trip, not two (ListVolumes waits on this while it lists).
    const [pool, parent] = await Promise.allSettled([host.zfs.pool(host.pool), this.available(host)]);
    if (pool.status === "rejected") return { reachable: pool.reason instanceof ZfsError, problem: errorMessage(pool.reason) };
    const seen = { reachable: true, pool: pool.value };
    if (pool.value.health !== "ONLINE") return { ...seen, problem: `pool ${host.pool} on ${host.config.name} is ${pool.value.health}` };
    return parent.status === "rejected" ? { ...seen, problem: errorMessage(parent.reason) } : seen;
  }
}
