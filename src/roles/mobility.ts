import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import { fenceEvents } from "./fence-events.js";
import type { Config } from "../config.js";
import { errorMessage, invalidArgument } from "../errors.js";
import type { Logger } from "../log.js";
import { failover, volumesHomedOn, type FailoverResult } from "../mobility/failover.js";
import { MoveLocks } from "../mobility/move-lock.js";
import { resync, type ResyncResult } from "../mobility/resync.js";
import { annotationCopyName, resyncAnnotated, type AnnotatedResyncDeps } from "../mobility/annotation-resync.js";
import { createReplicationEngine } from "../replication/engine.js";
import { systemClock } from "../util/clock.js";
import { VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { connectPoolHosts } from "./pool-hosts.js";

/**
 * The operator commands that move where a volume is served: `zcsi failover` (and `zcsi resync`).
 * They run outside the cluster like `zcsi status` (config + SSH key to reach the pool hosts),
 * plus a kubeconfig for the move lock, the PV's Event and annotation, and the attachments and
 * pods to restart. Each volume is reported on its own; the exit code is 1 when any failed.
 */

/** The namespace the driver runs in (the move Leases live there). */
export const DEFAULT_NAMESPACE = "zcsi";

export interface MobilityContext {
  readonly hosts: PoolHosts;
  readonly deps: AnnotatedResyncDeps;
  close(): Promise<void>;
}

/** Pool hosts, the volume homes and the Kubernetes adapters for one command run. */
export async function mobilityContext(config: Config, kc: KubeConfig, namespace: string, logger: Logger, hosts?: PoolHosts): Promise<MobilityContext> {
  const k8s = await import("../k8s/client.js");
  const { KubeNamedLeases, KubeVolumeWorkloads } = await import("../k8s/kube-mobility.js");
  const { KubeEventRecorder } = await import("../k8s/events.js");
  const own = hosts === undefined;
  const poolHosts = hosts ?? connectPoolHosts(config, logger);
  const holder = `${hostname()}/${process.pid}`;
  const events = new KubeEventRecorder(new k8s.KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-cli", instance: holder });
  const onFence = fenceEvents(events);
  const deps: AnnotatedResyncDeps = {
    nodes: new k8s.KubeNodeSource(kc),
    engine: createReplicationEngine(poolHosts, { logger, ...(onFence && { onFence }) }),
    hosts: poolHosts,
    homes: new VolumeHomes(poolHosts, logger, onFence),
    locks: new MoveLocks(new KubeNamedLeases(kc, namespace), holder, logger),
    driverName: config.driverName,
    logger,
    workloads: new KubeVolumeWorkloads(kc),
    events,
    pvs: new k8s.KubePvAnnotator(kc),
  };
  return { hosts: poolHosts, deps, close: async () => (own ? poolHosts.close() : undefined) };
}

export interface FailoverArgs {
  readonly volumeIds: readonly string[];
  /** `--host`: every volume whose home is this pool host. */
  readonly host?: string;
  readonly to?: string;
  readonly force?: boolean;
  readonly resume?: boolean;
}

export function describeFailover(r: FailoverResult): string {
  if (r.already) return `${r.volumeId}: already served by ${r.to} (epoch ${r.epoch}); nothing to do\n`;
  const lines = [`${r.volumeId}: failed over from ${r.from ?? "(unknown)"} to ${r.to}, epoch ${r.epoch}`];
  lines.push(
    r.lastSnapshot
      ? `  data-loss window: writes on ${r.from ?? "the old home"} after ${r.lastSnapshot.createdAt.toISOString()} (last replicated snapshot ${r.lastSnapshot.name}) are not on ${r.to}; they stay on the old copy, fenced when it returns (zcsi resync keeps them)`
      : `  data-loss window: ${r.to} had no snapshot of the volume`,
  );
  if (r.pv !== undefined) lines.push(`  PersistentVolume ${r.pv}: VolumeAttachments removed: ${r.removedAttachments.join(", ") || "none"}; pods deleted: ${r.deletedPods.join(", ") || "none"}`);
  return lines.join("\n") + "\n";
}

/** `zcsi failover`: resolves to the exit code. */
export async function runFailover(ctx: MobilityContext, args: FailoverArgs, write: (text: string) => void): Promise<number> {
  if ((args.host === undefined) === (args.volumeIds.length === 0)) throw invalidArgument("name either volumes or --host HOST (every volume whose home is that pool host)");
  if (args.host !== undefined) ctx.hosts.get(args.host);
  const volumeIds = args.host !== undefined ? await volumesHomedOn(ctx.hosts, args.host) : args.volumeIds;
  if (args.host !== undefined) write(`${volumeIds.length} volume(s) with replicas of ${args.host}: ${volumeIds.join(", ") || "none"}\n`);
  let failed = 0;
  for (const volumeId of volumeIds) {
    try {
      const result = await failover(ctx.deps, { volumeId, ...(args.to !== undefined && { to: args.to }), ...(args.force && { force: true }), ...(args.resume && { resume: true }) });
      write(describeFailover(result));
    } catch (err) {
      failed++;
      write(`${volumeId}: not failed over: ${errorMessage(err)}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}

export interface ResyncArgs {
  readonly volumeIds: readonly string[];
  readonly host?: string | undefined;
  readonly discardDiverged?: boolean;
  readonly resume?: boolean;
}

export function describeResync(r: ResyncResult): string {
  const lines = [`${r.volumeId}: the copy on ${r.host} is a replica of ${r.home} (epoch ${r.epoch}); replication ${r.replication.action} to ${r.replication.snapshot}${r.common ? ` from ${r.common}` : ""}, ${r.replication.bytes} bytes`];
  if (r.kept) lines.push(`  diverged data kept: ${r.host}:${r.kept.dataset} (snapshot @${r.kept.snapshot}); zcsi never destroys it (zfs destroy -r it by hand when it is not needed)`);
  else if (r.discarded) lines.push("  diverged data discarded (--discard-diverged)");
  return lines.join("\n") + "\n";
}

/** `zcsi resync VOLUME... --host OLD`: resolves to the exit code. */
export async function runResync(ctx: MobilityContext, args: ResyncArgs, write: (text: string) => void): Promise<number> {
  if (args.volumeIds.length === 0) throw invalidArgument("name the volume(s) to resync");
  // A node-annotation dataset is named as its stale copy, HOST:DATASET; a volume by its id and --host.
  const annotated = (id: string): boolean => annotationCopyName(id, ctx.hosts.configs) !== undefined;
  if (args.host === undefined && !args.volumeIds.every(annotated)) throw invalidArgument("--host OLD is required: the pool host whose stale copy becomes a replica");
  let failed = 0;
  for (const volumeId of args.volumeIds) {
    try {
      if (annotated(volumeId)) {
        write(describeResync(await resyncAnnotated(ctx.deps, { copy: volumeId, ...(args.host !== undefined && { host: args.host }), ...(args.discardDiverged && { discardDiverged: true }) })));
        continue;
      }
      write(describeResync(await resync(ctx.deps, { volumeId, host: args.host ?? "", ...(args.discardDiverged && { discardDiverged: true }), ...(args.resume && { resume: true }) })));
    } catch (err) {
      failed++;
      write(`${volumeId}: not resynced: ${errorMessage(err)}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}
