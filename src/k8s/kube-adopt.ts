import { CoreV1Api, type KubeConfig, type V1PersistentVolume, type V1PersistentVolumeClaim } from "@kubernetes/client-node";
import { alreadyExists, unavailable } from "../errors.js";
import { pvSummary, type AdoptionApi, type PvSummary, type WireObject } from "./adopt.js";
import { describe, statusOf } from "./client.js";

/** client-node adapter of AdoptionApi (adopt.ts): 409 → AlreadyExists, 404 → absent, anything else Unavailable. */
export class KubeAdoptionApi implements AdoptionApi {
  private readonly core: CoreV1Api;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async listPvs(): Promise<PvSummary[]> {
    const out: PvSummary[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.core.listPersistentVolume({ limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const pv of page.items) {
          const summary = pvSummary(pv);
          if (summary) out.push(summary);
        }
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing PersistentVolumes: ${describe(err)}`, { cause: err });
    }
    return out;
  }

  async createPv(pv: WireObject): Promise<void> {
    const name = String(pv.metadata.name);
    try {
      await this.core.createPersistentVolume({ body: pv as V1PersistentVolume });
    } catch (err) {
      if (statusOf(err) === 409) throw alreadyExists(`PersistentVolume ${name} exists`);
      throw unavailable(`creating PersistentVolume ${name}: ${describe(err)}`, { cause: err });
    }
  }

  async createPvc(namespace: string, pvc: WireObject): Promise<void> {
    const name = String(pvc.metadata.name);
    try {
      await this.core.createNamespacedPersistentVolumeClaim({ namespace, body: pvc as V1PersistentVolumeClaim });
    } catch (err) {
      if (statusOf(err) === 409) throw alreadyExists(`PersistentVolumeClaim ${namespace}/${name} exists`);
      throw unavailable(`creating PersistentVolumeClaim ${namespace}/${name}: ${describe(err)}`, { cause: err });
    }
  }

  async pvcVolumeName(namespace: string, name: string): Promise<string | undefined> {
    try {
      const pvc = await this.core.readNamespacedPersistentVolumeClaim({ namespace, name });
      return pvc.spec?.volumeName ?? "";
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading PersistentVolumeClaim ${namespace}/${name}: ${describe(err)}`, { cause: err });
    }
  }
}
