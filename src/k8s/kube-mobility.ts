import { CoordinationV1Api, CoreV1Api, StorageV1Api, type KubeConfig } from "@kubernetes/client-node";
import { aborted, alreadyExists, notFound, unavailable } from "../errors.js";
import { describe, leaseBody, statusOf } from "./client.js";
import { leaseFromObject, type LeaseSpec, type StoredLease } from "./lease.js";
import type { NamedLeases } from "./leases.js";
import { attachesPv, claimOfPv, podUsesClaim, type ClaimRef, type VolumeWorkloads } from "./workloads.js";

/**
 * client-node adapters for what planned moves, failover and resync need of Kubernetes (the
 * interfaces live next to their users' types: leases.ts, ...). Errors: 404 → NotFound or
 * absent, 409 → AlreadyExists (create) or Aborted (changed meanwhile), anything else Unavailable.
 */

/** Leases by name in one namespace (coordination.k8s.io/v1). */
export class KubeNamedLeases implements NamedLeases {
  private readonly api: CoordinationV1Api;

  constructor(
    kc: KubeConfig,
    readonly namespace: string,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  async get(name: string): Promise<StoredLease | undefined> {
    try {
      return leaseFromObject(await this.api.readNamespacedLease({ name, namespace: this.namespace }));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading Lease ${this.namespace}/${name}: ${describe(err)}`, { cause: err });
    }
  }

  async create(name: string, spec: LeaseSpec, annotations: Readonly<Record<string, string>>, labels?: Readonly<Record<string, string>>): Promise<StoredLease> {
    const body = leaseBody(name, this.namespace, spec);
    body.metadata = { ...body.metadata, annotations: { ...annotations }, ...(labels && { labels: { ...labels } }) };
    try {
      return leaseFromObject(await this.api.createNamespacedLease({ namespace: this.namespace, body }));
    } catch (err) {
      if (statusOf(err) === 409) throw alreadyExists(`Lease ${this.namespace}/${name} exists`);
      throw unavailable(`creating Lease ${this.namespace}/${name}: ${describe(err)}`, { cause: err });
    }
  }

  async replace(current: StoredLease, spec: LeaseSpec, annotations: Readonly<Record<string, string>>): Promise<StoredLease> {
    const body = leaseBody(current.name, this.namespace, spec, current);
    body.metadata = { ...body.metadata, annotations: { ...(current.annotations ?? {}), ...annotations } };
    try {
      return leaseFromObject(await this.api.replaceNamespacedLease({ name: current.name, namespace: this.namespace, body }));
    } catch (err) {
      if (statusOf(err) === 409) throw aborted(`Lease ${this.namespace}/${current.name} changed since resourceVersion ${current.resourceVersion}: ${describe(err)}`);
      if (statusOf(err) === 404) throw notFound(`Lease ${this.namespace}/${current.name} is gone`);
      throw unavailable(`updating Lease ${this.namespace}/${current.name}: ${describe(err)}`, { cause: err });
    }
  }

  async delete(current: StoredLease): Promise<boolean> {
    try {
      await this.api.deleteNamespacedLease({ name: current.name, namespace: this.namespace, body: { preconditions: { resourceVersion: current.resourceVersion } } });
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      if (statusOf(err) === 409) throw aborted(`Lease ${this.namespace}/${current.name} changed since resourceVersion ${current.resourceVersion}; not deleted`);
      throw unavailable(`deleting Lease ${this.namespace}/${current.name}: ${describe(err)}`, { cause: err });
    }
  }
}

/** PVs, VolumeAttachments (storage.k8s.io/v1) and pods (core/v1), paged lists, no cache. */
export class KubeVolumeWorkloads implements VolumeWorkloads {
  private readonly core: CoreV1Api;
  private readonly storage: StorageV1Api;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.storage = kc.makeApiClient(StorageV1Api);
  }

  async pvClaim(pvName: string): Promise<ClaimRef | undefined> {
    try {
      return claimOfPv(await this.core.readPersistentVolume({ name: pvName }));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading PersistentVolume ${pvName}: ${describe(err)}`, { cause: err });
    }
  }

  async attachments(pvName: string, attacher: string): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.storage.listVolumeAttachment({ limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const va of page.items) if (attachesPv(va, pvName, attacher) && va.metadata?.name) names.push(va.metadata.name);
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing VolumeAttachments: ${describe(err)}`, { cause: err });
    }
    return names;
  }

  async deleteAttachment(name: string): Promise<boolean> {
    try {
      await this.storage.deleteVolumeAttachment({ name });
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw unavailable(`deleting VolumeAttachment ${name}: ${describe(err)}`, { cause: err });
    }
  }

  async podsUsing(claim: ClaimRef): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.core.listNamespacedPod({ namespace: claim.namespace, limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const pod of page.items) if (podUsesClaim(pod, claim.name) && pod.metadata?.name) names.push(pod.metadata.name);
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing pods in ${claim.namespace}: ${describe(err)}`, { cause: err });
    }
    return names;
  }

  async deletePod(namespace: string, name: string): Promise<boolean> {
    try {
      await this.core.deleteNamespacedPod({ namespace, name });
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw unavailable(`deleting pod ${namespace}/${name}: ${describe(err)}`, { cause: err });
    }
  }
}
