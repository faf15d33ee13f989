import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import { KubeEventSink, KubePvAnnotator, loadKubeConfig } from "../k8s/client.js";
import { KubeEventRecorder } from "../k8s/events.js";
import { KubeNamedLeases, KubeVolumeWorkloads } from "../k8s/kube-mobility.js";
import type { Logger } from "../log.js";
import { leaseMoveLocks } from "../mobility/migrate-lock.js";
import { MoveLocks } from "../mobility/move-lock.js";
import { demoteCopy, promoteCopy } from "../mobility/promote.js";
import type { Promotions } from "../mobility/steps.js";
import { systemClock } from "../util/clock.js";
import { VolumeHomes } from "../volumes/homes.js";
import type { PoolHosts } from "../volumes/hosts.js";
import type { MoveFlags, MoveWiring } from "./migrate.js";
import { DEFAULT_NAMESPACE } from "./mobility.js";

/** The move Lease (in `namespace`, held by `holder`) and promotion, for one KubeConfig. */
export function moveWiring(kc: KubeConfig, namespace: string, holder: string, hosts: PoolHosts, logger: Logger): Pick<MoveWiring, "locks" | "promotions"> {
  const homes = new VolumeHomes(hosts, logger);
  const promotions: Promotions = {
    promote: async (volumeId, copy) => ({ epoch: (await promoteCopy(hosts, homes, volumeId, copy.host, logger)).epoch }),
    demote: async (volumeId, copy) => void (await demoteCopy(hosts, homes, volumeId, copy.host, logger)),
  };
  return { locks: leaseMoveLocks(new MoveLocks(new KubeNamedLeases(kc, namespace), holder, logger)), promotions };
}

/** In a pod: the in-cluster config; elsewhere $KUBECONFIG. The move Leases in --namespace (default zcsi, as failover's). */
export function moveWiringFromKube(hosts: PoolHosts, flags: MoveFlags, logger: Logger): MoveWiring {
  const kc = loadKubeConfig();
  const namespace = flags.namespace || DEFAULT_NAMESPACE;
  const holder = flags.identity || `${hostname()}/${process.pid}`;
  return {
    ...moveWiring(kc, namespace, holder, hosts, logger),
    workloads: new KubeVolumeWorkloads(kc),
    pvs: new KubePvAnnotator(kc),
    events: new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-migrate", instance: holder }),
  };
}
