import { ApiException, CoreV1Api, StorageV1Api, type KubeConfig } from "@kubernetes/client-node";
import { errorMessage, unavailable } from "../errors.js";
import { attachmentFromObject, podRefFromObject, podUsesClaim, pvClaimFromObject, type AttachmentInfo, type PodRef, type PvClaim, type Workloads } from "./workloads.js";

/**
 * Workloads (workloads.ts) through the core/v1 and storage.k8s.io/v1 APIs. Beside client.ts,
 * the other module that imports @kubernetes/client-node; both stay inside k8s/.
 */
export class KubeWorkloads implements Workloads {
  private readonly core: CoreV1Api;
  private readonly storage: StorageV1Api;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.storage = kc.makeApiClient(StorageV1Api);
  }

  async readPv(pvName: string): Promise<PvClaim | undefined> {
    try {
      return pvClaimFromObject(await this.core.readPersistentVolume({ name: pvName }));
    } catch (err) {
      if (code(err) === 404) return undefined;
      throw unavailable(`reading PersistentVolume ${pvName}: ${errorMessage(err)}`, { cause: err });
    }
  }

  async podsUsingClaim(namespace: string, claim: string): Promise<PodRef[]> {
    const pods: PodRef[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.core.listNamespacedPod({ namespace, limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const item of page.items) if (podUsesClaim(item, claim)) pods.push(podRefFromObject(item));
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing Pods in ${namespace}: ${errorMessage(err)}`, { cause: err });
    }
    return pods;
  }

  async deletePod(pod: PodRef): Promise<boolean> {
    try {
      await this.core.deleteNamespacedPod({ name: pod.name, namespace: pod.namespace });
      return true;
    } catch (err) {
      if (code(err) === 404) return false;
      throw unavailable(`deleting Pod ${pod.namespace}/${pod.name}: ${errorMessage(err)}`, { cause: err });
    }
  }

  async attachmentsOf(pvName: string): Promise<AttachmentInfo[]> {
    const found: AttachmentInfo[] = [];
    let token: string | undefined;
    try {
      do {
        // No field selector for spec.source on VolumeAttachments: list and filter.
        const page = await this.storage.listVolumeAttachment({ limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const item of page.items) {
          const a = attachmentFromObject(item);
          if (a?.pvName === pvName) found.push(a);
        }
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing VolumeAttachments: ${errorMessage(err)}`, { cause: err });
    }
    return found;
  }
}

function code(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}
