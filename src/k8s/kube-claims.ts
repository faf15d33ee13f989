import { CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { unavailable } from "../errors.js";
import { boundContentOf, csiOfPv, handleOfContent, volumeNameOfClaim, type ClaimLookups, type ClaimVolume, type SnapshotHandle } from "./claims.js";
import { describe, statusOf } from "./client.js";
import type { ClaimRef } from "./workloads.js";

/**
 * client-node adapter of ClaimLookups: PVC and PV (core/v1), VolumeSnapshot and
 * VolumeSnapshotContent (snapshot.storage.k8s.io/v1, CRDs of the external-snapshotter, read
 * as custom objects). 404 → absent; anything else Unavailable. The group and plural stay
 * literals in each call: test/unit/deploy-rbac.test.ts reads them to check RBAC.
 */
export class KubeClaimLookups implements ClaimLookups {
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  async claimVolume(claim: ClaimRef): Promise<ClaimVolume | undefined> {
    const what = `PersistentVolumeClaim ${claim.namespace}/${claim.name}`;
    const pvName = volumeNameOfClaim(await absentOn404(what, () => this.core.readNamespacedPersistentVolumeClaim({ namespace: claim.namespace, name: claim.name })));
    if (pvName === undefined) return undefined;
    const pv = await absentOn404(`PersistentVolume ${pvName}`, () => this.core.readPersistentVolume({ name: pvName }));
    return { pvName, ...csiOfPv(pv) };
  }

  async snapshotHandle(namespace: string, name: string): Promise<SnapshotHandle | undefined> {
    const vs: unknown = await absentOn404(`VolumeSnapshot ${namespace}/${name}`, () =>
      this.custom.getNamespacedCustomObject({ group: "snapshot.storage.k8s.io", version: "v1", plural: "volumesnapshots", namespace, name }),
    );
    if (vs === undefined) return undefined;
    const content = boundContentOf(vs);
    if (content === undefined) return {};
    const vsc: unknown = await absentOn404(`VolumeSnapshotContent ${content}`, () =>
      this.custom.getClusterCustomObject({ group: "snapshot.storage.k8s.io", version: "v1", plural: "volumesnapshotcontents", name: content }),
    );
    return { content, ...handleOfContent(vsc) };
  }
}

async function absentOn404<T>(what: string, read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw unavailable(`reading ${what}: ${describe(err)}`, { cause: err });
  }
}
