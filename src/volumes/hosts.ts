import type { PoolHostConfig } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { Executor } from "../exec/executor.js";
import { Zfs, type PoolInfo } from "../zfs/client.js";

/** A configured pool host with its command channel. */
export interface PoolHost {
  readonly config: PoolHostConfig;
  readonly exec: Executor;
  readonly zfs: Zfs;
  /** The pool holding parentDataset (its first component). */
  readonly pool: string;
}

/** What zcsi last saw of a pool host: up (it answered, pool ONLINE, parent present) or down, and why. */
export interface PoolHostState {
  readonly up: boolean;
  /** Why the host is down; absent while it is up. */
  readonly problem?: string;
  /** When this state began (ms since the epoch, from the injected clock). */
  readonly since: number;
}

/** What the last check saw beyond up/down: whether the host answered at all, and its pool's state. */
export interface PoolHostObservation {
  /** The host ran the check's commands (whatever they answered); false: SSH failed or timed out. */
  readonly reachable: boolean;
  /** The pool as `zpool list` and `zfs get` showed it; absent when they did not answer. */
  readonly pool?: PoolInfo;
}

/**
 * How long ListVolumes takes a host's last check that found it up as its health, instead of
 * checking again (`zpool list` and two `zfs get`s beside its one listing: with 10 volumes
 * they double a walk's time, bench/scale.ts). Short beside what a walk already accepts (its
 * later pages read the health of its first, held up to LISTING_TTL_MS, csi/listing-cache.ts)
 * and beside Probe's period; a host found down is checked again every time, and a failed
 * listing makes its host's next check run (PoolHostHealth.suspect).
 */
export const HEALTH_REUSE_MS = 5_000;

/**
 * Health per pool host, not per process (ARCHITECTURE, key decisions): one unreachable host
 * degrades its own volumes only. Fed by every host check (Probe, ListVolumes,
 * ControllerGetVolume) and read by VolumeCondition, Probe, `zcsi status` and the
 * `zcsi_pool_host_up{host}` gauge (util/pool-host-metrics.ts). A host never checked has no state.
 */
export class PoolHostHealth {
  private readonly states = new Map<string, PoolHostState>();
  private readonly observations = new Map<string, PoolHostObservation>();
  /** When each host was last checked (any outcome); absent when never, or suspect since. */
  private readonly checkedAt = new Map<string, number>();

  constructor(
    readonly hosts: readonly string[],
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a check's outcome; returns the new state when it differs from the last one (a start, change or end of a problem). */
  record(host: string, problem: string | undefined, observation?: PoolHostObservation): PoolHostState | undefined {
    if (observation !== undefined) this.observations.set(host, observation);
    this.checkedAt.set(host, this.now());
    const before = this.states.get(host);
    if (before && before.up === (problem === undefined) && before.problem === problem) return undefined;
    const state: PoolHostState = problem === undefined ? { up: true, since: this.now() } : { up: false, problem, since: this.now() };
    this.states.set(host, state);
    return state;
  }

  /** True when the last check found the host up less than `maxAgeMs` ago and nothing has made it suspect since. */
  upWithin(host: string, maxAgeMs: number): boolean {
    const at = this.checkedAt.get(host);
    return this.states.get(host)?.up === true && at !== undefined && this.now() - at < maxAgeMs;
  }

  /** A command on the host failed outside a check (a listing): its last check is reused no more. */
  suspect(host: string): void {
    this.checkedAt.delete(host);
  }

  state(host: string): PoolHostState | undefined {
    return this.states.get(host);
  }

  /** What the last check that recorded one saw (reachability, the pool): the pool gauges' source. */
  observation(host: string): PoolHostObservation | undefined {
    return this.observations.get(host);
  }

  /** 1 up, 0 down, undefined not checked yet: what the gauge shows. */
  isUp(host: string): boolean | undefined {
    return this.states.get(host)?.up;
  }
}

export class PoolHosts {
  private readonly byName: Map<string, PoolHost>;
  readonly health: PoolHostHealth;

  constructor(hosts: readonly { config: PoolHostConfig; exec: Executor }[], options: { timeoutMs?: number; listingTimeoutMs?: number; now?: () => number } = {}) {
    this.health = new PoolHostHealth(
      hosts.map((h) => h.config.name),
      options.now,
    );
    this.byName = new Map(
      hosts.map(({ config, exec }) => [
        config.name,
        { config, exec, zfs: new Zfs(exec, options), pool: config.parentDataset.split("/")[0] ?? config.parentDataset },
      ]),
    );
  }

  get configs(): PoolHostConfig[] {
    return this.all().map((h) => h.config);
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  all(): PoolHost[] {
    return [...this.byName.values()].sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  get(name: string): PoolHost {
    const host = this.byName.get(name);
    if (!host) throw invalidArgument(`no pool host named ${JSON.stringify(name)} in the config`);
    return host;
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((h) => h.exec.close()));
  }
}
