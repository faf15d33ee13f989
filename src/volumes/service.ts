import { alreadyExists, failedPrecondition, isZcsiError, notFound, outOfRange, resourceExhausted, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import { formatVolumeId, type VolumeRef } from "./ids.js";
import type { PoolHost, PoolHosts } from "./hosts.js";
import type { VolumeParameters } from "./parameters.js";
import { PROP, SIZE_PROPERTY, type VolumeState } from "./properties.js";

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
}

export interface CreateSpec {
  readonly csiName: string;
  readonly leaf: string;
  readonly capacityBytes: bigint;
  readonly params: VolumeParameters;
}

const VOLUME_PROPS = [PROP.csiName, PROP.state, PROP.parameters, SIZE_PROPERTY, "referenced", "mountpoint", "mounted"];

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
  };
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
  ) {}

  datasetOf(host: PoolHost, leaf: string): string {
    return `${host.config.parentDataset}/${leaf}`;
  }

  /** The volume at `ref`; undefined when no dataset is there. Throws FailedPrecondition for a dataset zcsi did not create. */
  async get(ref: VolumeRef): Promise<Volume | undefined> {
    const host = this.hosts.get(ref.poolHost);
    let props: PropertyMap | undefined;
    try {
      props = (await host.zfs.get([ref.dataset], VOLUME_PROPS)).get(ref.dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return undefined;
      throw err;
    }
    if (!props) return undefined;
    const volume = toVolume(host, ref.dataset, props);
    if (!volume) throw failedPrecondition(`dataset ${ref.dataset} on ${ref.poolHost} exists but was not created by zcsi (no ${PROP.csiName}); refusing to touch it`);
    return volume;
  }

  /** Looks for `leaf` on the given host, or on every host (a volume may live on any). */
  async findByLeaf(leaf: string, poolHost?: string): Promise<Volume | undefined> {
    const hosts = poolHost ? [this.hosts.get(poolHost)] : this.hosts.all();
    const found = await Promise.all(hosts.map((h) => this.get({ poolHost: h.config.name, dataset: this.datasetOf(h, leaf) })));
    return found.find((v) => v !== undefined);
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

  /** The host a new volume goes to: the one named, or the one with the most free space. */
  async chooseHost(poolHost: string | undefined): Promise<PoolHost> {
    if (poolHost) return this.hosts.get(poolHost);
    const hosts = this.hosts.all();
    if (hosts.length === 1 && hosts[0]) return hosts[0];
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
  async create(spec: CreateSpec): Promise<Volume> {
    const host = await this.chooseHost(spec.params.poolHost);
    const dataset = this.datasetOf(host, spec.leaf);
    const needsSetup = spec.params.uid !== undefined || spec.params.gid !== undefined || spec.params.mode !== undefined;
    const free = await this.available(host);
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
      ...(spec.params.pvcName && spec.params.pvcNamespace && { [PROP.pvc]: `${spec.params.pvcNamespace}/${spec.params.pvcName}` }),
      ...(spec.params.pvName && { [PROP.pv]: spec.params.pvName }),
    };
    try {
      await host.zfs.create(dataset, props);
    } catch (err) {
      // A concurrent creator (another controller replica) won the race: report what is there.
      if (isZcsiError(err, "AlreadyExists")) throw alreadyExists(`dataset ${dataset} already exists on ${host.config.name}`);
      throw err;
    }
    const volume = await this.get({ poolHost: host.config.name, dataset });
    if (!volume) throw notFound(`dataset ${dataset} vanished right after it was created on ${host.config.name}`);
    return needsSetup ? this.finish(volume, spec.params) : volume;
  }

  /** Runs the post-create steps of a volume left in `creating` (idempotent) and marks it ready. */
  async finish(volume: Volume, params: VolumeParameters): Promise<Volume> {
    const host = this.hosts.get(volume.ref.poolHost);
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
    return { ...volume, state: "ready" };
  }

  /** Destroys a volume's dataset. Absent → nothing to do; not ours → FailedPrecondition. */
  async delete(ref: VolumeRef): Promise<boolean> {
    const volume = await this.get(ref);
    if (!volume) return false;
    const host = this.hosts.get(ref.poolHost);
    try {
      await host.zfs.destroy(ref.dataset);
    } catch (err) {
      if (isZcsiError(err, "NotFound")) return false;
      throw err;
    }
    return true;
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
