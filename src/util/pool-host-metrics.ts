import { Gauge, type Registry } from "prom-client";

/** What the gauge reads: volumes/hosts.ts's PoolHostHealth fits (kept structural: util sits below volumes). */
export interface PoolHostUpSource {
  readonly hosts: readonly string[];
  /** true up, false down, undefined not checked yet (no sample). */
  isUp(host: string): boolean | undefined;
}

/**
 * `zcsi_pool_host_up{host}`: 1 while a pool host answers with its pool ONLINE and its parent
 * dataset present, 0 while it does not; no sample before the first check. Read at scrape time
 * from the health zcsi already keeps, so it costs no command of its own.
 */
export function registerPoolHostMetrics(registry: Registry, health: PoolHostUpSource): Gauge<"host"> {
  return new Gauge({
    name: "zcsi_pool_host_up",
    help: "1 while the pool host answers with its pool ONLINE and parent dataset present, 0 while it does not (as of the last check).",
    labelNames: ["host"],
    registers: [registry],
    collect() {
      this.reset();
      for (const host of health.hosts) {
        const up = health.isUp(host);
        if (up !== undefined) this.set({ host }, up ? 1 : 0);
      }
    },
  });
}
