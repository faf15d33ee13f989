import { readFileSync } from "node:fs";
import { ApiException, CoordinationV1Api, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, V1MicroTime, type CoreV1Event, type V1Lease } from "@kubernetes/client-node";
import { errorMessage, unavailable } from "../errors.js";
import type { EventObject, EventSink } from "./events.js";
import { nodeFromObject, type NodeInfo, type NodeSource } from "./nodes.js";
import type { AnnotationPatch, PvAnnotator } from "./pv.js";
import { leaseConflict, leaseExists, leaseFromObject, type LeaseSpec, type LeaseStore, type StoredLease } from "./lease.js";

/**
 * With kube-mobility.ts, the only modules that import @kubernetes/client-node. They implement the small interfaces
 * the rest of zcsi uses (LeaseStore, EventSink, NodeSource, PvAnnotator); everything else stays testable without a
 * cluster. client-node 1.x quirk worked around here: MicroTime fields (Lease acquireTime,
 * renewTime) are not in its type map, so they come back as plain strings although typed as
 * V1MicroTime; lease.ts accepts both, and we write real V1MicroTime objects (which serialise
 * with six fractional digits, as the API requires).
 */

const SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** In a pod: the in-cluster config; elsewhere: $KUBECONFIG or ~/.kube/config. */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

/**
 * A KubeConfig for one API server URL and bearer token. client-node refuses plain `http://`
 * unless skipTLSVerify is set: only tests (a loopback fake API server) set it.
 */
export function kubeConfigFor(server: string, options: { token?: string; skipTLSVerify?: boolean } = {}): KubeConfig {
  const token = options.token;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "zcsi", server, skipTLSVerify: options.skipTLSVerify ?? false }],
    users: [{ name: "zcsi", ...(token !== undefined && { token }) }],
    contexts: [{ name: "zcsi", cluster: "zcsi", user: "zcsi" }],
    currentContext: "zcsi",
  });
  return kc;
}

/** The pod's namespace (service account mount), or undefined outside a pod. */
export function podNamespace(): string | undefined {
  try {
    const ns = readFileSync(SERVICE_ACCOUNT_NAMESPACE, "utf8").trim();
    return ns === "" ? undefined : ns;
  } catch {
    return undefined;
  }
}

export function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** A short reason from an API error: the Status message when the body is one. */
export function describe(err: unknown): string {
  if (err instanceof ApiException) {
    const body: unknown = err.body;
    let message: string | undefined;
    if (typeof body === "string") {
      try {
        const parsed = JSON.parse(body) as { message?: unknown };
        if (typeof parsed.message === "string") message = parsed.message;
      } catch {
        message = body.slice(0, 200);
      }
    } else if (typeof body === "object" && body !== null && typeof (body as { message?: unknown }).message === "string") {
      message = (body as { message: string }).message;
    }
    return `HTTP ${err.code}${message ? `: ${message}` : ""}`;
  }
  return errorMessage(err);
}

export function leaseBody(name: string, namespace: string, spec: LeaseSpec, current?: StoredLease): V1Lease {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name,
      namespace,
      ...(current && { resourceVersion: current.resourceVersion }),
      ...(current?.labels && { labels: { ...current.labels } }),
      ...(current?.annotations && { annotations: { ...current.annotations } }),
    },
    spec: {
      ...(spec.holderIdentity !== undefined && { holderIdentity: spec.holderIdentity }),
      ...(spec.leaseDurationSeconds !== undefined && { leaseDurationSeconds: spec.leaseDurationSeconds }),
      ...(spec.acquireTime && { acquireTime: new V1MicroTime(spec.acquireTime.getTime()) }),
      ...(spec.renewTime && { renewTime: new V1MicroTime(spec.renewTime.getTime()) }),
      ...(spec.leaseTransitions !== undefined && { leaseTransitions: spec.leaseTransitions }),
    },
  };
}

/** One Lease (`namespace/name`) through the coordination.k8s.io/v1 API. */
export class KubeLeaseStore implements LeaseStore {
  private readonly api: CoordinationV1Api;

  constructor(
    kc: KubeConfig,
    readonly namespace: string,
    readonly name: string,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  async get(): Promise<StoredLease | undefined> {
    try {
      return leaseFromObject(await this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading Lease ${this.namespace}/${this.name}: ${describe(err)}`, { cause: err });
    }
  }

  async create(spec: LeaseSpec): Promise<StoredLease> {
    try {
      return leaseFromObject(await this.api.createNamespacedLease({ namespace: this.namespace, body: leaseBody(this.name, this.namespace, spec) }));
    } catch (err) {
      if (statusOf(err) === 409) throw leaseExists(`Lease ${this.namespace}/${this.name} was created by someone else`);
      throw unavailable(`creating Lease ${this.namespace}/${this.name}: ${describe(err)}`, { cause: err });
    }
  }

  async replace(current: StoredLease, spec: LeaseSpec): Promise<StoredLease> {
    try {
      const body = leaseBody(this.name, this.namespace, spec, current);
      return leaseFromObject(await this.api.replaceNamespacedLease({ name: this.name, namespace: this.namespace, body }));
    } catch (err) {
      if (statusOf(err) === 409) throw leaseConflict(`Lease ${this.namespace}/${this.name} changed since resourceVersion ${current.resourceVersion}: ${describe(err)}`);
      throw unavailable(`updating Lease ${this.namespace}/${this.name}: ${describe(err)}`, { cause: err });
    }
  }
}

/** Events, and the PV and Node lookups they need, through the core/v1 API. */
export class KubeEventSink implements EventSink {
  private readonly api: CoreV1Api;

  constructor(kc: KubeConfig) {
    this.api = kc.makeApiClient(CoreV1Api);
  }

  async pvUid(name: string): Promise<string | undefined> {
    try {
      return (await this.api.readPersistentVolume({ name })).metadata?.uid;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading PersistentVolume ${name}: ${describe(err)}`, { cause: err });
    }
  }

  async nodeUid(name: string): Promise<string | undefined> {
    try {
      return (await this.api.readNode({ name })).metadata?.uid;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw unavailable(`reading Node ${name}: ${describe(err)}`, { cause: err });
    }
  }

  async create(event: EventObject): Promise<void> {
    const body: CoreV1Event = {
      ...event,
      metadata: { ...event.metadata },
      involvedObject: { ...event.involvedObject },
      source: { ...event.source },
      firstTimestamp: new Date(event.firstTimestamp),
      lastTimestamp: new Date(event.lastTimestamp),
    };
    try {
      await this.api.createNamespacedEvent({ namespace: event.metadata.namespace, body });
    } catch (err) {
      throw unavailable(`creating Event ${event.metadata.namespace}/${event.metadata.name}: ${describe(err)}`, { cause: err });
    }
  }
}

/** Nodes labelled zcsi.dev/replication=true, read fresh at every call (no cache, no watch). */
export class KubeNodeSource implements NodeSource {
  private readonly api: CoreV1Api;

  constructor(kc: KubeConfig) {
    this.api = kc.makeApiClient(CoreV1Api);
  }

  async listNodes(labelSelector: string): Promise<NodeInfo[]> {
    const nodes: NodeInfo[] = [];
    let token: string | undefined;
    try {
      do {
        // Paged, so a large cluster cannot make one answer huge; the selector keeps it small anyway.
        const page = await this.api.listNode({ labelSelector, limit: 500, ...(token !== undefined && { _continue: token }) });
        for (const item of page.items) nodes.push(nodeFromObject(item));
        token = page.metadata?._continue || undefined;
      } while (token !== undefined);
    } catch (err) {
      throw unavailable(`listing Nodes (${labelSelector}): ${describe(err)}`, { cause: err });
    }
    return nodes;
  }
}

/** PV annotations by JSON merge patch: only the keys given change; null removes one. */
export class KubePvAnnotator implements PvAnnotator {
  private readonly api: CoreV1Api;

  constructor(kc: KubeConfig) {
    this.api = kc.makeApiClient(CoreV1Api);
  }

  async annotate(pvName: string, annotations: AnnotationPatch): Promise<boolean> {
    try {
      await this.api.patchPersistentVolume({ name: pvName, body: { metadata: { annotations } } }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw unavailable(`patching PersistentVolume ${pvName}: ${describe(err)}`, { cause: err });
    }
  }
}
