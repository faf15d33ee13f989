import type { Config } from "../config.js";
import { errorMessage, invalidArgument } from "../errors.js";
import { fenceEvents } from "./fence-events.js";
import type { EventRecorder } from "../k8s/events.js";
import type { PvAnnotator } from "../k8s/pv.js";
import type { VolumeWorkloads } from "../k8s/workloads.js";
import type { Logger } from "../log.js";
import { drain, type DrainOutcome } from "../mobility/drain.js";
import { Migrator, type MigrateOptions, type MigrateResult } from "../mobility/migrate.js";
import type { MigrateLocks, Promotions } from "../mobility/steps.js";
import { createReplicationEngine } from "../replication/engine.js";
import { systemClock } from "../util/clock.js";
import { durationSeconds, quantityBytes } from "../util/units.js";
import { VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { connectPoolHosts } from "./pool-hosts.js";

/**
 * `zcsi migrate VOLUME --to HOST [--abort]` and `zcsi drain HOST [--to HOST] [--parallel N]`:
 * one-off commands an operator runs (like `zcsi status`: the config and SSH key as the other
 * roles find them; the Kubernetes API from the in-cluster config or $KUBECONFIG, for the PV's
 * pods and VolumeAttachments, its Events and the per-volume move Lease). The work is
 * mobility/'s; this is flags and wiring. Resolves to the exit code.
 */

export interface MoveFlags {
  readonly to?: string | undefined;
  readonly abort?: boolean | undefined;
  readonly parallel?: string | undefined;
  /** `64Mi`: catch up until an increment is at most this big. */
  readonly maxFinalDelta?: string | undefined;
  /** `10m`: how long to wait for the nodes to let go. */
  readonly detachTimeout?: string | undefined;
  /** Where the move Leases live: the driver's namespace (default zcsi). */
  readonly namespace?: string | undefined;
  readonly identity?: string | undefined;
}

/** What a move needs besides the pool hosts: Kubernetes, promotion and the move lock. Tests build their own. */
export interface MoveWiring {
  readonly workloads?: VolumeWorkloads;
  readonly events?: EventRecorder;
  readonly pvs?: PvAnnotator;
  readonly locks: MigrateLocks;
  readonly promotions: Promotions;
}

export function moveOptions(flags: MoveFlags): MigrateOptions {
  const out: { maxFinalDeltaBytes?: number; detachTimeoutMs?: number } = {};
  if (flags.maxFinalDelta !== undefined) {
    const bytes = quantityBytes(flags.maxFinalDelta);
    if (bytes === undefined) throw invalidArgument(`--max-final-delta ${JSON.stringify(flags.maxFinalDelta)} is not a size (e.g. 64Mi)`);
    out.maxFinalDeltaBytes = bytes;
  }
  if (flags.detachTimeout !== undefined) {
    const seconds = durationSeconds(flags.detachTimeout);
    if (seconds === undefined || seconds <= 0) throw invalidArgument(`--detach-timeout ${JSON.stringify(flags.detachTimeout)} is not a duration (e.g. 10m)`);
    out.detachTimeoutMs = seconds * 1000;
  }
  return out;
}

export function formatMigrated(r: MigrateResult): string {
  const downtime = r.downtimeMs === undefined ? "unknown" : `${(r.downtimeMs / 1000).toFixed(1)} s`;
  return (
    `migrated ${r.volumeId}: ${r.from} -> ${r.to} (epoch ${r.epoch ?? "?"})${r.resumed ? ", finishing an interrupted move" : ""}\n` +
    `  downtime (attaches blocked -> released): ${downtime}\n` +
    `  final increment: ${r.finalBytes ?? "?"} bytes\n` +
    `  pods restarted: ${r.restartedPods.length === 0 ? "none" : r.restartedPods.join(", ")}\n`
  );
}

export function formatDrained(host: string, outcomes: readonly DrainOutcome[]): string {
  const lines = outcomes.map((o) => (o.result ? formatMigrated(o.result) : `NOT moved ${o.volumeId}${o.to !== undefined ? ` (to ${o.to})` : ""}: ${o.error ?? "?"}\n`));
  const failed = outcomes.filter((o) => o.error !== undefined).length;
  return `${lines.join("")}drained ${host}: ${outcomes.length - failed} moved, ${failed} not moved\n`;
}

/** Runs `migrate` or `drain` on connected pool hosts with the given wiring. */
export async function runMove(command: "migrate" | "drain", target: string, flags: MoveFlags, hosts: PoolHosts, driverName: string, wiring: MoveWiring, logger: Logger, write: (text: string) => void): Promise<number> {
  const onFence = fenceEvents(wiring.events);
  const homes = new VolumeHomes(hosts, logger, onFence);
  const migrator = new Migrator({
    hosts,
    homes,
    engine: createReplicationEngine(hosts, { logger, ...(onFence && { onFence }) }),
    locks: wiring.locks,
    promotions: wiring.promotions,
    driverName,
    ...(wiring.workloads && { workloads: wiring.workloads }),
    ...(wiring.events && { events: wiring.events }),
    ...(wiring.pvs && { pvs: wiring.pvs }),
    clock: systemClock,
    logger,
  });
  if (command === "migrate") {
    if (flags.abort) {
      const r = await migrator.abort(target);
      write(r.undone ? `move of ${target}${r.to !== undefined ? ` to ${r.to}` : ""} undone; attaches released\n` : `no move of ${target} to undo\n`);
      return 0;
    }
    if (flags.to === undefined) throw invalidArgument("zcsi migrate needs --to HOST (or --abort)");
    write(formatMigrated(await migrator.migrate(target, flags.to, moveOptions(flags))));
    return 0;
  }
  const parallel = flags.parallel === undefined ? undefined : Number(flags.parallel);
  if (parallel !== undefined && !Number.isInteger(parallel)) throw invalidArgument(`--parallel ${JSON.stringify(flags.parallel)} is not a whole number`);
  const outcomes = await drain({ hosts, homes, migrator, logger }, target, { ...moveOptions(flags), ...(flags.to !== undefined && { to: flags.to }), ...(parallel !== undefined && { parallel }) });
  write(formatDrained(target, outcomes));
  return outcomes.some((o) => o.error !== undefined) ? 1 : 0;
}

/** The CLI entry: pool hosts over SSH, Kubernetes from the environment. */
export async function runMoveRole(command: "migrate" | "drain", target: string | undefined, config: Config, flags: MoveFlags, logger: Logger, write: (text: string) => void): Promise<number> {
  if (target === undefined) throw invalidArgument(command === "migrate" ? "usage: zcsi migrate VOLUME --to HOST" : "usage: zcsi drain HOST [--to HOST] [--parallel 2]");
  const hosts = connectPoolHosts(config, logger);
  try {
    const { moveWiringFromKube } = await import("./move-wiring.js");
    const wiring = moveWiringFromKube(hosts, flags, logger);
    return await runMove(command, target, flags, hosts, config.driverName, wiring, logger, write);
  } catch (err) {
    logger.debug({ op: command, err: errorMessage(err) }, "failed");
    throw err;
  } finally {
    await hosts.close();
  }
}
