import { hostname } from "node:os";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { rollback, type RollbackArgs, type RollbackDeps, type RollbackResult } from "../mobility/rollback.js";
import { systemClock } from "../util/clock.js";
import { VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { DEFAULT_NAMESPACE } from "./mobility.js";
import { connectPoolHosts } from "./pool-hosts.js";

/**
 * `zcsi rollback NAMESPACE/PVC SNAPSHOT [--destroy-newer] [--keep-current] [--force]`: run in the
 * controller pod's zcsi container (`kubectl exec`), it needs no flag: the config from
 * ZCSI_CONFIG, the SSH key the config names, the Kubernetes API from the pod's ServiceAccount
 * (elsewhere $KUBECONFIG). The work is mobility/rollback.ts; this is wiring and the report.
 */

export function describeRollback(r: RollbackResult): string {
  const lines = [`${r.volumeId}: rolled back to @${r.snapshot}${r.volumeSnapshot ? ` (VolumeSnapshot ${r.volumeSnapshot})` : ""} on ${r.host} (${r.dataset})`];
  lines.push(`  destroyed: ${r.destroyed.length === 0 ? "none" : r.destroyed.map((s) => `@${s}`).join(", ")}`);
  if (r.kept) lines.push(`  data before the rollback: ${r.host}:${r.kept.dataset} (snapshot @${r.kept.snapshot}); zcsi never destroys it (docs/rollback.md: restore or delete it)`);
  if (r.inUse.length > 0) lines.push(`  rolled back under ${r.inUse.join(", ")} (--force)`);
  lines.push(`  replicas follow at the replicator's next run (request generation ${r.generation})`);
  return lines.join("\n") + "\n";
}

/** Runs the rollback with the given wiring and writes the outcome; resolves to the exit code. */
export async function runRollback(deps: RollbackDeps, args: RollbackArgs, write: (text: string) => void): Promise<number> {
  write(describeRollback(await rollback(deps, args)));
  return 0;
}

/** The CLI entry: pool hosts over SSH, Kubernetes from the environment. */
export async function runRollbackRole(config: Config, args: RollbackArgs, logger: Logger, write: (text: string) => void, namespace?: string, hosts: PoolHosts = connectPoolHosts(config, logger)): Promise<number> {
  try {
    const { loadKubeConfig, KubeEventSink } = await import("../k8s/client.js");
    const { KubeClaimLookups } = await import("../k8s/kube-claims.js");
    const { KubeNamedLeases, KubeVolumeWorkloads } = await import("../k8s/kube-mobility.js");
    const { KubeEventRecorder } = await import("../k8s/events.js");
    const { MoveLocks } = await import("../mobility/move-lock.js");
    const kc = loadKubeConfig();
    const holder = process.env.POD_NAME || `${hostname()}/${process.pid}`;
    const deps: RollbackDeps = {
      // The move Leases of migrate and failover (--namespace, default zcsi): one of them at a time per volume.
      locks: new MoveLocks(new KubeNamedLeases(kc, namespace || DEFAULT_NAMESPACE), holder, logger),
      hosts,
      homes: new VolumeHomes(hosts, logger),
      driverName: config.driverName,
      claims: new KubeClaimLookups(kc),
      workloads: new KubeVolumeWorkloads(kc),
      events: new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-rollback", instance: process.env.POD_NAME ?? "zcsi-cli" }),
      logger,
    };
    return await runRollback(deps, args, write);
  } finally {
    await hosts.close();
  }
}
