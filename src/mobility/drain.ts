import { errorMessage, failedPrecondition, invalidArgument } from "../errors.js";
import type { Logger } from "../log.js";
import { copyFacts, type VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { formatVolumeId } from "../volumes/ids.js";
import { PROP } from "../volumes/properties.js";
import { isBelow } from "../zfs/names.js";
import { PropertyView } from "../zfs/parse.js";
import type { MigrateOptions, MigrateResult, Migrator } from "./migrate.js";
import { mostFreeSpace } from "./steps.js";

/**
 * `zcsi drain HOST [--to HOST] [--parallel 2]`: every volume whose home is HOST moved off it, a
 * few at a time (before a planned reboot: the nightly kernel update that rebuilds the zfs module).
 * Each goes to `--to`, else to a host that already has its replica (least to send), else to the
 * configured host with the most free space. One volume failing does not stop the others; the
 * result lists each volume's outcome.
 */

export interface DrainOptions extends MigrateOptions {
  readonly to?: string;
  readonly parallel?: number;
}

export interface DrainOutcome {
  readonly volumeId: string;
  readonly to?: string;
  readonly result?: MigrateResult;
  readonly error?: string;
}

export interface DrainDeps {
  readonly hosts: PoolHosts;
  readonly homes: VolumeHomes;
  readonly migrator: Pick<Migrator, "migrate">;
  readonly logger: Logger;
}

/** The volume ids of the copies on `host` (one `zfs get -d 1`), whatever their role. */
export async function volumesOnHost(deps: DrainDeps, host: string): Promise<string[]> {
  const h = deps.hosts.get(host);
  const parent = h.config.parentDataset;
  const all = await h.zfs.get([parent], [PROP.csiName, PROP.volume, PROP.role, PROP.replicaOf, PROP.epoch, PROP.fenced, "readonly", "mountpoint"], { depth: 1 });
  const ids = new Set<string>();
  for (const [dataset, props] of all) {
    if (!isBelow(parent, dataset) || dataset.includes("@") || dataset.slice(parent.length + 1).includes("/")) continue;
    const facts = copyFacts(host, dataset, props);
    const id = facts.volume ?? (facts.replicaOf === undefined && facts.csiName !== undefined ? formatVolumeId({ poolHost: host, dataset }) : undefined);
    if (id !== undefined) ids.add(id);
  }
  return [...ids].sort();
}

/** Where a volume of the drained host goes: `--to`, its replica, or the host with the most free space. */
export async function pickTarget(deps: DrainDeps, volumeId: string, drained: string, to: string | undefined): Promise<string> {
  if (to !== undefined) return to;
  const copies = await deps.homes.find(volumeId, "drain");
  const replica = copies.replicas.find((r) => r.host !== drained);
  if (replica !== undefined) return replica.host;
  const free = new Map<string, bigint>();
  for (const h of deps.hosts.all()) {
    if (h.config.name === drained) continue;
    try {
      const props = (await h.zfs.get([h.config.parentDataset], ["available"])).get(h.config.parentDataset);
      const available = new PropertyView(h.config.parentDataset, props).optionalInteger("available");
      if (available !== undefined) free.set(h.config.name, available);
    } catch (err) {
      deps.logger.info({ op: "drain", volumeId, poolHost: h.config.name, err: errorMessage(err) }, "pool host cannot take volumes now; skipped");
    }
  }
  const best = mostFreeSpace(free);
  if (best === undefined) throw failedPrecondition(`volume ${volumeId}: no other pool host can take it (none answered)`);
  return best;
}

export async function drain(deps: DrainDeps, host: string, options: DrainOptions = {}): Promise<DrainOutcome[]> {
  deps.hosts.get(host); // InvalidArgument: not configured
  if (options.to !== undefined) {
    deps.hosts.get(options.to);
    if (options.to === host) throw invalidArgument(`--to ${options.to} is the host being drained`);
  }
  const parallel = options.parallel ?? 2;
  if (!Number.isInteger(parallel) || parallel < 1) throw invalidArgument(`--parallel must be a whole number of at least 1, not ${parallel}`);
  const candidates = await volumesOnHost(deps, host);
  const homed: string[] = [];
  for (const id of candidates) {
    const copies = await deps.homes.find(id, "drain");
    if (copies.home?.host === host) homed.push(id);
  }
  deps.logger.info({ op: "drain", poolHost: host, volumes: homed.length, parallel }, "draining pool host");
  const outcomes: DrainOutcome[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < homed.length) {
      const volumeId = homed[next++] as string;
      let to: string | undefined;
      try {
        to = await pickTarget(deps, volumeId, host, options.to);
        const result = await deps.migrator.migrate(volumeId, to, options);
        outcomes.push({ volumeId, to, result });
      } catch (err) {
        deps.logger.warn({ op: "drain", volumeId, to, err: errorMessage(err) }, "volume not moved");
        outcomes.push({ volumeId, ...(to !== undefined && { to }), error: errorMessage(err) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, Math.max(homed.length, 1)) }, worker));
  deps.logger.info({ op: "drain", poolHost: host, moved: outcomes.filter((o) => o.result).length, failed: outcomes.filter((o) => o.error).length }, "drain done");
  return outcomes.sort((a, b) => (a.volumeId < b.volumeId ? -1 : 1));
}
