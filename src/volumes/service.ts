import { alreadyExists, failedPrecondition, invalidArgument, isZcsiError, notFound, outOfRange, resourceExhausted, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import { formatSnapshotId, formatVolumeId, type VolumeRef } from "./ids.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import type { VolumeParameters } from "./parameters.js";
import { AUTO_SNAPSHOT_PREFIX, CLONE_SNAPSHOT_PREFIX, PROP, RECEIVE_PREFIX, REPLICATION_SNAPSHOT_PREFIX, SIZE_PROPERTY, type VolumeState } from "./properties.js";
import type { Snapshot } from "./snapshots.js";

export interface Volume {
  readonly id: string;
  readonly ref: VolumeRef;
  readonly csiName: string;
  readonly capacityBytes: bigint;
  readonly usedBytes: bigint;
  readonly mountpoint: string;
  readonly mounted: boolean;
  readonly state: VolumeState;
  /** Canonical parameters the volume was created with. */
  readonly parameters: string;
  /** `snapshot:<snapshot_id>` or `volume:<volume_id>` when the volume was made from one (see PROP.contentSource). */
  readonly contentSource?: string;
  /** ZFS `origin`: the snapshot this dataset is a clone of, if it is one. */
  readonly origin?: string;
  /** Local zcsi:replicate-to: the hosts the replicator copies this volume to. */
  readonly replicateTo?: string;
}

/**
 * What DeleteVolume needs of replication (the engine implements it): the replicator holds
 * the snapshot each target's next increment starts from (zfs-hold(8)), and a held snapshot
 * cannot be destroyed, so the holds go first.
 */
export interface ReplicationHolds {
  releaseHolds(source: { readonly host: string; readonly dataset: string }): Promise<void>;
}

/** Where a new volume's data comes from, already resolved and checked by the caller. */
export type ContentSource = { readonly kind: "snapshot"; readonly snapshot: Snapshot } | { readonly kind: "volume"; readonly volume: Volume };

/** The value of PROP.contentSource for a source: what a retried CreateVolume must match. */
export function contentSourceKey(source: ContentSource | undefined): string | undefined {
  if (!source) return undefined;
  return source.kind === "snapshot" ? `snapshot:${source.snapshot.id}` : `volume:${source.volume.id}`;
}

/** The answer of VolumeService.lookup: an existing volume, and free bytes per pool host. */
export interface Placement {
  readonly existing?: Volume;
  readonly free: ReadonlyMap<string, bigint>;
}

export interface CreateSpec {
  readonly csiName: string;
  readonly leaf: string;
  readonly capacityBytes: bigint;
  readonly params: VolumeParameters;
  readonly source?: ContentSource;
}

const VOLUME_PROPS = [PROP.csiName, PROP.state, PROP.parameters, PROP.contentSource, PROP.replicateTo, PROP.replicaOf, SIZE_PROPERTY, "referenced", "mountpoint", "mounted", "origin"];

type PropertyMap = ReadonlyMap<string, { value: string; source: string }>;

/** A user property counts only where it is set on the dataset itself, not inherited. */
function local(props: PropertyMap, name: string): string | undefined {
  const p = props.get(name);
  return p && p.source === "local" && p.value !== "-" ? p.value : undefined;
}

function toVolume(host: PoolHost, dataset: string, props: PropertyMap): Volume | undefined {
  const csiName = local(props, PROP.csiName);
  if (csiName === undefined) return undefined;
  const ref = { poolHost: host.config.name, dataset };
  const number = (name: string): bigint => {
    const v = props.get(name)?.value ?? "0";
    return /^[0-9]+$/.test(v) ? BigInt(v) : 0n;
  };
  return {
    id: formatVolumeId(ref),
    ref,
    csiName,
    capacityBytes: number(SIZE_PROPERTY),
    usedBytes: number("referenced"),
    mountpoint: props.get("mountpoint")?.value ?? "",
    mounted: props.get("mounted")?.value === "yes",
    state: local(props, PROP.state) === "ready" ? "ready" : "creating",
    parameters: local(props, PROP.parameters) ?? "{}",
    ...optional("contentSource", local(props, PROP.contentSource)),
    ...optional("origin", props.get("origin")?.value),
    ...optional("replicateTo", local(props, PROP.replicateTo)),
  };
}

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value === undefined || value === "-" || value === "" ? {} : { [key]: value }) as { [P in K]?: string };
}

/** The hidden snapshot a PVC-to-PVC clone named `leaf` is made from. */
export function cloneSnapshotName(sourceDataset: string, leaf: string): string {
  return `${sourceDataset}@${CLONE_SNAPSHOT_PREFIX}${leaf}`;
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
    /** Absent: no replicator in this deployment, so no holds of its to release. */
    private readonly replication?: ReplicationHolds,
  ) {}

  /**
   * A replica the replicator received here (zcsi:replica-of, set by its first receive, in any
   * source): not a volume, and not a foreign dataset either, so it neither answers for a
   * volume of that name nor blocks the volume's own CreateVolume on its real host.
   */
  private isReplica(props: PropertyMap): boolean {
    const mark = props.get(PROP.replicaOf)?.value;
    return mark !== undefined && mark !== "-" && mark !== "";
  }

  datasetOf(host: PoolHost, leaf: string): string {
    return `${host.config.parentDataset}/${leaf}`;
  }

  /** The volume at `ref`; undefined when no dataset is there. Throws FailedPrecondition for a dataset zcsi did not create. */
  async get(ref: VolumeRef): Promise<Volume | undefined> {
    const host = this.hosts.get(ref.poolHost);
    // A volume that is not there is an answer (DeleteVolume retries, NOT_FOUND), not a failure.
    const props = (await host.zfs.get([ref.dataset], VOLUME_PROPS, { missingOk: true })).get(ref.dataset);
    if (!props) return undefined;
    const volume = toVolume(host, ref.dataset, props);
    if (!volume) throw failedPrecondition(`dataset ${ref.dataset} on ${ref.poolHost} exists but was not created by zcsi (no ${PROP.csiName}); refusing to touch it`);
    return volume;
  }

  /**
   * Where a new volume named `leaf` stands: the volume if it already exists on some host (a
   * volume may live on any), and each host's free space under its parent. One `zfs get` per
   * host (in parallel) answers both, so a CreateVolume costs this and its `zfs create`.
   */
  async lookup(leaf: string): Promise<Placement> {
    const results = await Promise.all(
      this.hosts.all().map(async (host) => {
        const parent = host.config.parentDataset;
        const dataset = this.datasetOf(host, leaf);
        const found = await host.zfs.get([parent, dataset], [...VOLUME_PROPS, "available"], { missingOk: true });
        const parentProps = found.get(parent);
        if (!parentProps) throw failedPrecondition(`parent dataset ${parent} does not exist on pool host ${host.config.name}; create it first (see docs/pool-host.md)`);
        const entry = found.get(dataset);
        const props = entry && !this.isReplica(entry) ? entry : undefined;
        const volume = props ? toVolume(host, dataset, props) : undefined;
        if (props && !volume) throw failedPrecondition(`dataset ${dataset} on ${host.config.name} exists but was not created by zcsi (no ${PROP.csiName}); refusing to touch it`);
        const available = parentProps.get("available")?.value ?? "0";
        return { host: host.config.name, free: /^[0-9]+$/.test(available) ? BigInt(available) : 0n, volume };
      }),
    );
    const existing = results.find((r) => r.volume !== undefined)?.volume;
    return { ...(existing && { existing }), free: new Map(results.map((r) => [r.host, r.free])) };
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
    const value = props?.get("available")?.value ?? "0";
    return /^[0-9]+$/.test(value) ? BigInt(value) : 0n;
  }

  /**
   * The host a new volume goes to: the one named, or the one with the most free space among
   * those that are not to hold its replicas (`exclude`: replicateTo; a volume and its replica
   * on one host would protect against nothing).
   */
  async chooseHost(poolHost: string | undefined, free?: ReadonlyMap<string, bigint>, exclude: readonly string[] = []): Promise<PoolHost> {
    if (poolHost) return this.hosts.get(poolHost);
    const hosts = this.hosts.all().filter((h) => !exclude.includes(h.config.name));
    if (hosts.length === 0) throw invalidArgument(`parameter replicateTo names every pool host (${exclude.join(", ")}); none is left to hold the volume itself`);
    if (hosts.length === 1 && hosts[0]) return hosts[0];
    if (free) {
      const best = [...free.entries()].filter(([name]) => !exclude.includes(name)).sort(([, a], [, b]) => (a === b ? 0 : a > b ? -1 : 1))[0];
      if (best) return this.hosts.get(best[0]);
    }
    const settled = await Promise.allSettled(hosts.map(async (h) => ({ host: h, free: await this.available(h) })));
    const usable = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    for (const s of settled) if (s.status === "rejected") this.logger.warn({ op: "chooseHost", err: String(s.reason) }, "pool host skipped");
    const best = usable.sort((a, b) => (a.free === b.free ? 0 : a.free > b.free ? -1 : 1))[0];
    if (!best) throw unavailable("no pool host is reachable to place the volume on");
    return best.host;
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
    const host = source
      ? this.hosts.get(source.kind === "snapshot" ? source.snapshot.ref.poolHost : source.volume.ref.poolHost)
      : await this.chooseHost(spec.params.poolHost, known?.free, spec.params.replicateTo);
    const dataset = this.datasetOf(host, spec.leaf);
    const needsSetup = spec.params.uid !== undefined || spec.params.gid !== undefined || spec.params.mode !== undefined;
    const free = known?.free.get(host.config.name) ?? (await this.available(host));
    if (spec.capacityBytes > free) {
      // A refquota larger than the pool is legal in ZFS (thin provisioning), but the CSI
      // contract is that the capacity is usable: refuse rather than over-promise.
      throw resourceExhausted(`pool host ${host.config.name} has ${free} bytes available under ${host.config.parentDataset}; ${spec.capacityBytes} requested`);
    }
    const props: Record<string, string> = {
      ...spec.params.zfsProperties,
      [SIZE_PROPERTY]: spec.capacityBytes.toString(),
      mountpoint: `${host.config.mountRoot}/${spec.leaf}`,
      [PROP.csiName]: spec.csiName,
      [PROP.parameters]: spec.params.canonical,
      [PROP.state]: needsSetup ? "creating" : "ready",
      ...(source && { [PROP.contentSource]: contentSourceKey(source) ?? "" }),
      ...(spec.params.pvcName && spec.params.pvcNamespace && { [PROP.pvc]: `${spec.params.pvcNamespace}/${spec.params.pvcName}` }),
      ...(spec.params.pvName && { [PROP.pv]: spec.params.pvName }),
      ...(spec.params.snapshotSchedule !== undefined && { [PROP.snapshotSchedule]: spec.params.snapshotSchedule }),
      // Read by the replicator at every pass (docs/replication.md); changed later only by `zfs set`.
      ...(spec.params.replicateTo !== undefined && {
        [PROP.replicateTo]: spec.params.replicateTo.join(","),
        [PROP.replicationInterval]: spec.params.replicationInterval ?? "",
      }),
      ...(spec.params.replicationBandwidth !== undefined && { [PROP.replicationBandwidth]: String(spec.params.replicationBandwidth) }),
    };
    try {
      if (!source) await host.zfs.create(dataset, props);
      else if (source.kind === "snapshot") await this.restoreSnapshot(host, source.snapshot, dataset, props, spec.params);
      else await this.cloneVolume(host, source.volume, spec.leaf, dataset, props, spec.params);
    } catch (err) {
      // A concurrent creator (another controller replica) won the race: report what is there.
      if (isZcsiError(err, "AlreadyExists")) throw alreadyExists(`dataset ${dataset} already exists on ${host.config.name}`);
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
          usedBytes: 0n,
          mountpoint: props.mountpoint ?? "",
          mounted: true,
          state: needsSetup ? "creating" : "ready",
          parameters: spec.params.canonical,
        };
    if (!volume) throw notFound(`dataset ${dataset} vanished right after it was created on ${host.config.name}`);
    return volume.state !== "ready" ? this.finish(volume, spec.params) : volume;
  }

  /**
   * A volume from a CSI snapshot. `clone` (default): one `zfs clone -o ...` with every property,
   * instant; the snapshot then has a dependent clone, which DeleteSnapshot handles with a
   * deferred destroy. `copy`: an independent dataset by send/recv (see copyInto).
   */
  private async restoreSnapshot(host: PoolHost, snapshot: Snapshot, dataset: string, props: Record<string, string>, params: VolumeParameters): Promise<void> {
    const from = `${snapshot.ref.dataset}@${snapshot.ref.snapshot}`;
    if (params.restoreMode === "copy") await this.copyInto(host, from, dataset, props);
    else await host.zfs.clone(from, dataset, props);
  }

  /**
   * A volume from another volume (PVC clone): a hidden snapshot `<source>@zcsi-clone-<leaf>`
   * (not a CSI snapshot: never listed, never deletable through CSI), then a clone or copy of it,
   * then `zfs destroy -d` of the hidden snapshot, whatever happened. After a copy (or a failed
   * clone) nothing depends on it and it goes at once; after a clone ZFS keeps it, marked
   * `defer_destroy`, until the clone is destroyed, and frees it then by itself.
   *
   * So the new volume carries no dependency that blocks anything: deleting the clone releases
   * the hidden snapshot; deleting the SOURCE first is handled by DeleteVolume, which promotes
   * the clone (see deleteWithDependents), so the source goes and the clone keeps its data. A
   * retry after a crash reuses a hidden snapshot that is already there.
   */
  private async cloneVolume(host: PoolHost, source: Volume, leaf: string, dataset: string, props: Record<string, string>, params: VolumeParameters): Promise<void> {
    const hidden = cloneSnapshotName(source.ref.dataset, leaf);
    try {
      await host.zfs.snapshot(hidden);
    } catch (err) {
      if (!isZcsiError(err, "AlreadyExists")) throw err;
    }
    try {
      if (params.restoreMode === "copy") await this.copyInto(host, hidden, dataset, props);
      else await host.zfs.clone(hidden, dataset, props);
    } finally {
      await host.zfs.destroy(hidden, { deferred: true }).catch((err: unknown) => {
        if (!isZcsiError(err, "NotFound")) this.logger.warn({ op: "CreateVolume", snapshot: hidden, err: String(err) }, "could not release the clone's source snapshot; DeleteVolume of the source will");
      });
    }
  }

  /**
   * Copy mode: `zfs send <snapshot> | zfs recv -u <parent>/zcsi-recv-<leaf>` on the pool host
   * (Zfs.sendReceive: argv only, both exit codes checked), then on that staging dataset: destroy
   * the received snapshot (a new volume starts with no history), set every property (zfs-fuse's
   * recv has no -o; its set takes one property per call), and rename it to the volume's name.
   * The staging name is reserved (volume names may not start with zcsi-recv-), so a half-done
   * copy is never mistaken for a volume, and any failure destroys it: leftovers of a crashed
   * attempt are destroyed before the next one starts. The volume arrives unmounted and in state
   * `creating`; finish() mounts it and marks it ready.
   */
  private async copyInto(host: PoolHost, snapshot: string, dataset: string, props: Record<string, string>): Promise<void> {
    const leaf = dataset.slice(host.config.parentDataset.length + 1);
    const staging = `${host.config.parentDataset}/${RECEIVE_PREFIX}${leaf}`;
    const snapshotPart = snapshot.slice(snapshot.indexOf("@") + 1);
    await this.destroyIfPresent(host, staging);
    try {
      await host.zfs.sendReceive(snapshot, staging);
      await host.zfs.destroy(`${staging}@${snapshotPart}`);
      await host.zfs.set(staging, { ...props, [PROP.state]: "creating" });
      await host.zfs.rename(staging, dataset);
    } catch (err) {
      await this.destroyIfPresent(host, staging).catch((cleanup: unknown) =>
        this.logger.error({ op: "CreateVolume", dataset: staging, err: String(cleanup) }, "could not destroy the staging dataset of a failed copy"),
      );
      throw err;
    }
  }

  private async destroyIfPresent(host: PoolHost, dataset: string): Promise<void> {
    try {
      await host.zfs.destroy(dataset, { recursive: true });
    } catch (err) {
      if (!isZcsiError(err, "NotFound")) throw err;
    }
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

  /**
   * Destroys a volume's dataset. Absent → nothing to do; not ours → FailedPrecondition. A
   * volume without snapshots costs one `zfs destroy`; one with snapshots ("has children") is
   * looked at closely in deleteWithDependents.
   */
  async delete(ref: VolumeRef): Promise<boolean> {
    const volume = await this.get(ref);
    if (!volume) return false;
    const host = this.hosts.get(ref.poolHost);
    if (volume.replicateTo !== undefined && this.replication !== undefined) {
      // Replicas on the targets are kept (docs/replication.md): only the source's holds go.
      await this.replication.releaseHolds({ host: ref.poolHost, dataset: ref.dataset });
      this.logger.info({ op: "DeleteVolume", volumeId: volume.id, replicateTo: volume.replicateTo }, "released replication holds; replicas on the targets are kept");
    }
    try {
      await host.zfs.destroy(ref.dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return false;
      if (!isZcsiError(err, "FailedPrecondition") || !/has children|dependent clones/.test(err.message)) throw err;
      await this.deleteWithDependents(host, volume);
    }
    return true;
  }

  /**
   * DeleteVolume of a volume that has snapshots. CSI spec, DeleteVolume: a plugin that does not
   * treat snapshots as independent of their volume MUST leave the volume untouched and return
   * FAILED_PRECONDITION; ZFS snapshots live inside their dataset, so:
   *
   * - a live CSI snapshot (its VolumeSnapshot still exists), a snapshot zcsi did not make, a
   *   user hold, a dataset below the volume, or a clone that is not a zcsi volume → nothing is
   *   touched, FAILED_PRECONDITION naming each blocker (the CO retries with backoff once the
   *   user deleted them).
   * - zcsi's own leftovers without clones (a `zcsi-clone-*` whose clone is gone but whose
   *   deferred destroy did not happen, scheduled `zcsi-auto-*`) are destroyed with the volume.
   * - snapshots that only clones keep alive — deleted CSI snapshots (defer_destroy) that
   *   volumes were restored from, and the hidden `zcsi-clone-*` snapshots of PVC clones — do
   *   not block: `zfs promote` of the clone made from the newest of them moves those snapshots
   *   (and the clone relationship) to that clone, after which the volume is a clone without
   *   snapshots and a plain `zfs destroy` removes it. The clones keep their data and ids; the
   *   moved snapshots stay `defer_destroy` and ZFS frees them when their last clone goes.
   *
   * Two `zfs get` (the volume's snapshots; the origins of its siblings) find all of this.
   * Clones outside the parent dataset are not seen: for them the final destroy fails with
   * "has dependent clones" → FAILED_PRECONDITION, after only zcsi's leftovers were removed.
   */
  private async deleteWithDependents(host: PoolHost, volume: Volume): Promise<void> {
    const dataset = volume.ref.dataset;
    const parent = host.config.parentDataset;
    const [own, siblings] = await Promise.all([
      host.zfs.get([dataset], [PROP.snapshotName, "defer_destroy", "userrefs", "createtxg"], { depth: 1 }),
      host.zfs.get([parent], ["origin", PROP.csiName], { depth: 1 }),
    ]);
    const clonesOf = new Map<string, { dataset: string; zcsi: boolean }[]>();
    for (const [name, props] of siblings) {
      const origin = props.get("origin")?.value ?? "-";
      if (!origin.startsWith(`${dataset}@`)) continue;
      clonesOf.set(origin, [...(clonesOf.get(origin) ?? []), { dataset: name, zcsi: local(props, PROP.csiName) !== undefined }]);
    }
    const blockers: string[] = [];
    const leftovers: string[] = [];
    let promote: { clone: string; txg: bigint } | undefined;
    for (const [name, props] of own) {
      if (name === dataset) continue;
      if (!name.startsWith(`${dataset}@`)) {
        blockers.push(`dataset ${name} below the volume`);
        continue;
      }
      const snap = name.slice(dataset.length + 1);
      const clones = clonesOf.get(name) ?? [];
      const deferred = props.get("defer_destroy")?.value === "on";
      const holds = Number(props.get("userrefs")?.value ?? "0") || 0;
      // The replicator's own snapshots (zcsi-repl-*) go with the volume, like the scheduler's.
      const ours = snap.startsWith(CLONE_SNAPSHOT_PREFIX) || snap.startsWith(AUTO_SNAPSHOT_PREFIX) || snap.startsWith(REPLICATION_SNAPSHOT_PREFIX);
      if (local(props, PROP.snapshotName) !== undefined && !deferred) {
        blockers.push(`CSI snapshot ${formatSnapshotId({ poolHost: host.config.name, dataset, snapshot: snap })} (delete its VolumeSnapshot first)`);
      } else if (!deferred && !ours) {
        blockers.push(`snapshot ${name}, which zcsi did not create`);
      } else if (holds > 0) {
        blockers.push(`snapshot ${name} has ${holds} user hold(s) (zfs holds)`);
      } else if (clones.some((c) => !c.zcsi)) {
        blockers.push(`snapshot ${name} has clones zcsi did not create: ${clones.filter((c) => !c.zcsi).map((c) => c.dataset).join(", ")}`);
      } else if (clones.length === 0) {
        if (!deferred) leftovers.push(name);
      } else {
        const txg = BigInt(/^[0-9]+$/.test(props.get("createtxg")?.value ?? "") ? (props.get("createtxg")?.value ?? "0") : "0");
        const clone = clones[0]?.dataset;
        if (clone && (!promote || txg > promote.txg)) promote = { clone, txg };
      }
    }
    if (blockers.length > 0) {
      throw failedPrecondition(
        `volume ${volume.id} cannot be deleted while it has ${blockers.join("; ")}. Nothing was changed (CSI DeleteVolume: zcsi does not treat snapshots as independent of their volume)`,
      );
    }
    for (const name of leftovers) {
      await host.zfs.destroy(name).catch((err: unknown) => {
        if (!isZcsiError(err, "NotFound")) throw err;
      });
    }
    if (promote) {
      this.logger.info({ op: "DeleteVolume", volumeId: volume.id, promote: promote.clone }, "promoting a clone so the volume it was made from can go");
      await host.zfs.promote(promote.clone);
    }
    try {
      await host.zfs.destroy(dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return;
      if (isZcsiError(err, "FailedPrecondition")) throw failedPrecondition(`volume ${volume.id} cannot be deleted: ${err.message}`, { cause: err });
      throw err;
    }
  }

  /** Sets the size limit. Shrinking below what the volume already holds is OUT_OF_RANGE. */
  async resize(volume: Volume, bytes: bigint): Promise<Volume> {
    if (bytes < volume.usedBytes) throw outOfRange(`volume ${volume.id} already holds ${volume.usedBytes} bytes; cannot set its size to ${bytes}`);
    const host = this.hosts.get(volume.ref.poolHost);
    if (bytes > volume.capacityBytes) {
      const free = await this.available(host);
      if (bytes - volume.capacityBytes > free) throw resourceExhausted(`pool host ${host.config.name} has ${free} bytes available; growing ${volume.id} by ${bytes - volume.capacityBytes} does not fit`);
    }
    await host.zfs.set(volume.ref.dataset, { [SIZE_PROPERTY]: bytes.toString() });
    return { ...volume, capacityBytes: bytes };
  }

  /** Every zcsi volume on every host, ordered by id: one `zfs get` per host. */
  async list(): Promise<Volume[]> {
    const perHost = await Promise.all(
      this.hosts.all().map(async (host) => {
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
          const volume = toVolume(host, dataset, props);
          if (volume) volumes.push(volume);
        }
        return volumes;
      }),
    );
    return perHost.flat().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Why a host is not fit to serve, or undefined when it is (pool ONLINE, parent present). */
  async hostProblem(host: PoolHost): Promise<string | undefined> {
    try {
      const pool = await host.zfs.pool(host.pool);
      if (pool.health !== "ONLINE") return `pool ${host.pool} on ${host.config.name} is ${pool.health}`;
      await this.available(host);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }
}
