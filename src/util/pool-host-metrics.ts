import { Gauge, type Registry } from "prom-client";

/** A pool as the last check saw it (zfs/client.ts's PoolInfo fits; kept structural: util sits below zfs). */
export interface ObservedPool {
  readonly name: string;
  readonly health: string;
  readonly sizeBytes: bigint;
  readonly freeBytes: bigint;
  readonly allocatedBytes: bigint;
}

/** What the gauges read: volumes/hosts.ts's PoolHostHealth fits (kept structural: util sits below volumes). */
export interface PoolHostUpSource {
  readonly hosts: readonly string[];
  /** true up, false down, undefined not checked yet (no sample). */
  isUp(host: string): boolean | undefined;
  /** Undefined before the first check. */
  observation(host: string): { readonly reachable: boolean; readonly pool?: ObservedPool } | undefined;
}

/** zpool(8)'s health states: each gets a 0/1 sample, so a state timeline and `== 1` alerts need no absent(). */
export const POOL_HEALTH_STATES = ["ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED"] as const;

/**
 * The controller's pool host gauges, read at scrape time from the health zcsi already keeps
 * (every Probe, ListVolumes and ControllerGetVolume checks the hosts), so they cost no command
 * of their own. No sample before the first check; the pool gauges have none while the last
 * check got no answer about the pool (the host was unreachable, or the pool is missing).
 *
 * - `zcsi_pool_host_up{host}`: 1 while the host answers with its pool ONLINE and parent dataset present;
 * - `zcsi_pool_host_reachable{host}`: 1 while the host runs commands at all (SSH works);
 * - `zcsi_pool_health{host,pool,state}`: 1 for the state zpool reports, 0 for the others;
 * - `zcsi_pool_size_bytes`, `zcsi_pool_free_bytes`, `zcsi_pool_allocated_bytes` `{host,pool}`:
 *   the pool's root dataset's used+available, available and used (what volumes can use).
 */
export function registerPoolHostMetrics(registry: Registry, health: PoolHostUpSource): Gauge<"host"> {
  const perHost = (name: string, help: string, value: (host: string) => boolean | undefined): Gauge<"host"> =>
    new Gauge({
      name,
      help,
      labelNames: ["host"],
      registers: [registry],
      collect() {
        this.reset();
        for (const host of health.hosts) {
          const v = value(host);
          if (v !== undefined) this.set({ host }, v ? 1 : 0);
        }
      },
    });
  const up = perHost(
    "zcsi_pool_host_up",
    "1 while the pool host answers with its pool ONLINE and parent dataset present, 0 while it does not (as of the last check).",
    (host) => health.isUp(host),
  );
  perHost(
    "zcsi_pool_host_reachable",
    "1 while the pool host runs commands over SSH (whatever they answer), 0 while SSH fails or times out (as of the last check).",
    (host) => health.observation(host)?.reachable,
  );
  const pools = (): Array<{ host: string; pool: ObservedPool }> =>
    health.hosts.flatMap((host) => {
      const pool = health.observation(host)?.pool;
      return pool === undefined ? [] : [{ host, pool }];
    });
  new Gauge({
    name: "zcsi_pool_health",
    help: "1 for the health state zpool reports for the pool (ONLINE, DEGRADED, FAULTED, OFFLINE, UNAVAIL, REMOVED, SUSPENDED), 0 for the others (as of the last check).",
    labelNames: ["host", "pool", "state"],
    registers: [registry],
    collect() {
      this.reset();
      for (const { host, pool } of pools()) {
        const states = POOL_HEALTH_STATES.includes(pool.health as (typeof POOL_HEALTH_STATES)[number]) ? POOL_HEALTH_STATES : [...POOL_HEALTH_STATES, pool.health];
        for (const state of states) this.set({ host, pool: pool.name, state }, state === pool.health ? 1 : 0);
      }
    },
  });
  const bytes = (name: string, help: string, value: (pool: ObservedPool) => bigint): void => {
    new Gauge({
      name,
      help,
      labelNames: ["host", "pool"],
      registers: [registry],
      collect() {
        this.reset();
        for (const { host, pool } of pools()) this.set({ host, pool: pool.name }, Number(value(pool)));
      },
    });
  };
  bytes("zcsi_pool_size_bytes", "What the pool's datasets can hold in total: used + available of its root dataset (as of the last check).", (p) => p.sizeBytes);
  bytes("zcsi_pool_free_bytes", "available of the pool's root dataset: what a new volume can still get (as of the last check).", (p) => p.freeBytes);
  bytes("zcsi_pool_allocated_bytes", "used of the pool's root dataset: every dataset, snapshot and reservation (as of the last check).", (p) => p.allocatedBytes);
  return up;
}
