/**
 * Stand-ins for the Kubernetes API, driven by the objects in test/fixtures/k8s/:
 * - FakeLeaseStore: a LeaseStore holding one Lease in wire form, with the API server's
 *   optimistic concurrency (a replace with a stale resourceVersion is a conflict); a test
 *   plays "the other replica" by putting a fixture object in it.
 * - startFakeApiServer: a loopback HTTP server answering the few REST calls client.ts makes,
 *   so the client-node adapter is tested for real (paths, status codes, JSON bodies).
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { unavailable } from "../../src/errors.js";
import { leaseConflict, leaseExists, leaseFromObject, type LeaseSpec, type LeaseStore, type StoredLease } from "../../src/k8s/lease.js";
import type { Clock } from "../../src/util/clock.js";

/** MicroTime wire form: RFC 3339 with exactly six fractional digits. */
export function formatMicroTime(d: Date): string {
  return d.toISOString().replace(/\.([0-9]{3})Z$/, ".$1000Z");
}

/** The JSON body of a create/replace (resourceVersion only on replace). */
function leaseToObject(name: string, namespace: string, spec: LeaseSpec, current?: StoredLease): Record<string, unknown> {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name,
      namespace,
      ...(current && { resourceVersion: current.resourceVersion }),
      ...(current?.labels && { labels: current.labels }),
      ...(current?.annotations && { annotations: current.annotations }),
    },
    spec: {
      ...(spec.holderIdentity !== undefined && { holderIdentity: spec.holderIdentity }),
      ...(spec.leaseDurationSeconds !== undefined && { leaseDurationSeconds: spec.leaseDurationSeconds }),
      ...(spec.acquireTime && { acquireTime: formatMicroTime(spec.acquireTime) }),
      ...(spec.renewTime && { renewTime: formatMicroTime(spec.renewTime) }),
      ...(spec.leaseTransitions !== undefined && { leaseTransitions: spec.leaseTransitions }),
    },
  };
}

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "k8s");

export type WireObject = Record<string, unknown> & { metadata: Record<string, unknown> };

export function k8sFixture(name: string): WireObject {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), "utf8")) as WireObject;
}

/** A clock the test moves by hand. */
export class ManualClock implements Clock {
  private ms: number;
  constructor(start: string | number) {
    this.ms = typeof start === "number" ? start : Date.parse(start);
  }
  now(): Date {
    return new Date(this.ms);
  }
  advance(ms: number): void {
    this.ms += ms;
  }
  set(iso: string): void {
    this.ms = Date.parse(iso);
  }
}

export class FakeLeaseStore implements LeaseStore {
  /** The stored object, wire form (what the API server would return). */
  object: WireObject | undefined;
  /** Bodies of every successful create/replace, in order. */
  readonly writes: Record<string, unknown>[] = [];
  /** When set, the next calls fail with it (an unreachable API server). */
  failure: Error | undefined;

  constructor(
    readonly namespace = "zcsi-system",
    readonly name = "zcsi-snapshotter",
    initial?: WireObject,
  ) {
    this.object = initial;
  }

  /** Another replica wrote this object (a fixture). */
  put(object: WireObject): void {
    this.object = structuredClone(object);
  }

  private nextVersion(): string {
    const rv = Number(this.object?.metadata.resourceVersion ?? "1000");
    return String(rv + 1);
  }

  async get(): Promise<StoredLease | undefined> {
    if (this.failure) throw this.failure;
    return this.object === undefined ? undefined : leaseFromObject(structuredClone(this.object));
  }

  async create(spec: LeaseSpec): Promise<StoredLease> {
    if (this.failure) throw this.failure;
    if (this.object !== undefined) throw leaseExists("already exists");
    const body = leaseToObject(this.name, this.namespace, spec);
    this.writes.push(body);
    this.object = { ...body, metadata: { ...(body.metadata as Record<string, unknown>), resourceVersion: this.nextVersion(), uid: "7e1f0a9c-0000-4000-8000-000000000001" } } as WireObject;
    return leaseFromObject(structuredClone(this.object));
  }

  async replace(current: StoredLease, spec: LeaseSpec): Promise<StoredLease> {
    if (this.failure) throw this.failure;
    if (this.object === undefined) throw unavailable("lease not found");
    if (this.object.metadata.resourceVersion !== current.resourceVersion) throw leaseConflict(`conflict: have ${String(this.object.metadata.resourceVersion)}, got ${current.resourceVersion}`);
    const body = leaseToObject(this.name, this.namespace, spec, current);
    this.writes.push(body);
    this.object = { ...body, metadata: { ...(this.object.metadata as Record<string, unknown>), ...(body.metadata as Record<string, unknown>), resourceVersion: this.nextVersion() } } as WireObject;
    return leaseFromObject(structuredClone(this.object));
  }
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
}

export interface FakeApiServer {
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** The (first) Lease the server holds (wire form), or undefined for 404; setting it replaces every Lease. */
  lease: WireObject | undefined;
  /** Every Lease by name (one namespace is enough for the tests). */
  readonly leases: Map<string, WireObject>;
  /** PersistentVolumes by name; a merge PATCH changes them as the API server would. */
  readonly pvs: Map<string, WireObject>;
  /** PersistentVolumeClaims by `namespace/name`: read, created (`zcsi adopt`). */
  readonly pvcs: Map<string, WireObject>;
  /** VolumeAttachments by name: listed, deleted. */
  readonly volumeAttachments: Map<string, WireObject>;
  /** Pods by `namespace/name`: listed per namespace, deleted. */
  readonly pods: Map<string, WireObject>;
  /**
   * Called after a pod is deleted, before the DELETE is answered: a test plays kubelet and the
   * external-attacher here (unstage, ControllerUnpublish, remove the VolumeAttachment) or the
   * pod's controller (put a new pod). An error fails the DELETE with 500.
   */
  onPodDeleted: ((pod: WireObject) => void | Promise<void>) | undefined;
  /** VolumeSnapshots by `namespace/name` and VolumeSnapshotContents by name (snapshot.storage.k8s.io/v1): read one by one. */
  readonly volumeSnapshots: Map<string, WireObject>;
  readonly volumeSnapshotContents: Map<string, WireObject>;
  /** Nodes, listed (with a `key=value` labelSelector) by GET /api/v1/nodes, read one by one by GET /api/v1/nodes/NAME. */
  nodes: WireObject[];
  close(): Promise<void>;
}

const LEASES = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/;
const PV = /^\/api\/v1\/persistentvolumes\/([^/]+)$/;
const PVS = /^\/api\/v1\/persistentvolumes$/;
const PVCS = /^\/api\/v1\/namespaces\/([^/]+)\/persistentvolumeclaims(?:\/([^/]+))?$/;
const EVENTS = /^\/api\/v1\/namespaces\/([^/]+)\/events$/;
const NODES = /^\/api\/v1\/nodes$/;
const VOLUME_ATTACHMENTS = /^\/apis\/storage\.k8s\.io\/v1\/volumeattachments(?:\/([^/]+))?$/;
const VOLUME_SNAPSHOTS = /^\/apis\/snapshot\.storage\.k8s\.io\/v1\/namespaces\/([^/]+)\/volumesnapshots\/([^/]+)$/;
const VOLUME_SNAPSHOT_CONTENTS = /^\/apis\/snapshot\.storage\.k8s\.io\/v1\/volumesnapshotcontents\/([^/]+)$/;
const PODS = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/;

/** RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "Content-Type": "application/json" }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  return text === "" ? undefined : (JSON.parse(text) as unknown);
}

function alreadyExistsStatus(kind: string, name: string): Record<string, unknown> {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `${kind} "${name}" already exists`, reason: "AlreadyExists", details: { name, kind }, code: 409 };
}

/** Loopback only (127.0.0.1, an ephemeral port). */
export async function startFakeApiServer(): Promise<FakeApiServer> {
  const state: { leases: Map<string, WireObject>; serial: number; nodes: WireObject[] } = { leases: new Map(), serial: 0, nodes: [] };
  const requests: RecordedRequest[] = [];
  const pvs = new Map<string, WireObject>();
  const volumeAttachments = new Map<string, WireObject>();
  const pvcs = new Map<string, WireObject>();
  const pods = new Map<string, WireObject>();
  const volumeSnapshots = new Map<string, WireObject>();
  const volumeSnapshotContents = new Map<string, WireObject>();
  /** The API server's 404 Status for a missing object (`persistentvolumeclaims "x" not found`). */
  const missing = (resource: string, group: string, name: string): WireObject =>
    ({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `${resource}${group ? `.${group}` : ""} "${name}" not found`, reason: "NotFound", details: { name, ...(group && { group }), kind: resource }, code: 404 }) as unknown as WireObject;
  const hooks: { onPodDeleted: FakeApiServer["onPodDeleted"] } = { onPodDeleted: undefined };
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? "").split("?")[0] ?? "";
      const body = await readBody(req);
      requests.push({ method: req.method ?? "", path, body });
      const lease = LEASES.exec(path);
      if (lease) {
        const name = lease[2] === undefined ? undefined : decodeURIComponent(lease[2]);
        const current = name === undefined ? undefined : state.leases.get(name);
        const notFound = (n: string): WireObject => ({ ...k8sFixture("status-lease-not-found"), message: `leases.coordination.k8s.io "${n}" not found`, details: { name: n, group: "coordination.k8s.io", kind: "leases" } });
        if (req.method === "GET" && name) {
          if (current === undefined) return send(res, 404, notFound(name));
          return send(res, 200, current);
        }
        if (req.method === "POST" && !name) {
          const obj = body as WireObject;
          const wanted = String(obj.metadata.name);
          if (state.leases.has(wanted)) return send(res, 409, { ...k8sFixture("status-lease-conflict"), reason: "AlreadyExists", message: `leases.coordination.k8s.io "${wanted}" already exists` });
          const created = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(2000 + state.serial++ * 10), uid: "7e1f0a9c-0000-4000-8000-000000000002", creationTimestamp: "2026-11-22T01:00:00Z" } };
          state.leases.set(wanted, created);
          return send(res, 201, created);
        }
        if (req.method === "PUT" && name) {
          const obj = body as WireObject;
          if (current === undefined) return send(res, 404, notFound(name));
          if (obj.metadata.resourceVersion !== current.metadata.resourceVersion) return send(res, 409, k8sFixture("status-lease-conflict"));
          const replaced = { ...obj, metadata: { ...current.metadata, ...obj.metadata, resourceVersion: String(Number(current.metadata.resourceVersion) + 1) } };
          state.leases.set(name, replaced);
          return send(res, 200, replaced);
        }
        if (req.method === "DELETE" && name) {
          if (current === undefined) return send(res, 404, notFound(name));
          const wantedVersion = (body as { preconditions?: { resourceVersion?: string } } | undefined)?.preconditions?.resourceVersion;
          if (wantedVersion !== undefined && wantedVersion !== current.metadata.resourceVersion) return send(res, 409, k8sFixture("status-lease-conflict"));
          state.leases.delete(name);
          return send(res, 200, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details: { name, group: "coordination.k8s.io", kind: "leases", uid: current.metadata.uid } });
        }
      }
      const pv = PV.exec(path);
      if (pv && req.method === "GET") {
        const found = pvs.get(decodeURIComponent(pv[1] ?? ""));
        return found ? send(res, 200, found) : send(res, 404, k8sFixture("status-pv-not-found"));
      }
      if (pv && req.method === "PATCH") {
        const name = decodeURIComponent(pv[1] ?? "");
        const found = pvs.get(name);
        if (!found) return send(res, 404, k8sFixture("status-pv-not-found"));
        if (req.headers["content-type"] !== "application/merge-patch+json") {
          return send(res, 415, { kind: "Status", apiVersion: "v1", status: "Failure", code: 415, message: `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml` });
        }
        const patched = mergePatch(found, body) as WireObject;
        patched.metadata = { ...patched.metadata, resourceVersion: String(Number(found.metadata.resourceVersion ?? "1") + 1) };
        pvs.set(name, patched);
        return send(res, 200, patched);
      }
      if (PVS.test(path) && req.method === "GET") {
        return send(res, 200, { kind: "PersistentVolumeList", apiVersion: "v1", metadata: { resourceVersion: "1051903" }, items: [...pvs.values()] });
      }
      if (PVS.test(path) && req.method === "POST") {
        const obj = body as WireObject;
        const name = String(obj.metadata.name);
        if (pvs.has(name)) return send(res, 409, alreadyExistsStatus("persistentvolumes", name));
        // What the API server adds to a created PV (test/fixtures/k8s/recorded/pv-provisioned.yaml): uid, version, the pv-protection finalizer, phase Pending until the binder runs.
        const created = { ...obj, metadata: { ...obj.metadata, uid: `0a0d0b7e-0000-4000-8000-${String(++state.serial).padStart(12, "0")}`, resourceVersion: String(4000 + state.serial), creationTimestamp: "2026-12-03T08:24:49Z", finalizers: ["kubernetes.io/pv-protection"] }, status: { phase: "Pending" } } as WireObject;
        pvs.set(name, created);
        return send(res, 201, created);
      }
      const pvc = PVCS.exec(path);
      if (pvc) {
        const ns = decodeURIComponent(pvc[1] ?? "");
        const name = pvc[2] === undefined ? undefined : decodeURIComponent(pvc[2]);
        if (req.method === "GET" && name !== undefined) {
          const found = pvcs.get(`${ns}/${name}`);
          return found ? send(res, 200, found) : send(res, 404, missing("persistentvolumeclaims", "", name));
        }
        if (req.method === "POST" && name === undefined) {
          const obj = body as WireObject;
          const wanted = String(obj.metadata.name);
          if (pvcs.has(`${ns}/${wanted}`)) return send(res, 409, alreadyExistsStatus("persistentvolumeclaims", wanted));
          const created = { ...obj, metadata: { ...obj.metadata, namespace: ns, uid: `3faf57a1-0000-4000-8000-${String(++state.serial).padStart(12, "0")}`, resourceVersion: String(4000 + state.serial), creationTimestamp: "2026-12-03T08:24:49Z", finalizers: ["kubernetes.io/pvc-protection"] }, status: { phase: "Pending" } } as WireObject;
          pvcs.set(`${ns}/${wanted}`, created);
          return send(res, 201, created);
        }
      }
      const oneNode = /^\/api\/v1\/nodes\/([^/]+)$/.exec(path);
      if (oneNode && req.method === "GET") {
        const found = state.nodes.find((n) => n.metadata.name === decodeURIComponent(oneNode[1] ?? ""));
        return found ? send(res, 200, found) : send(res, 404, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `nodes "${oneNode[1]}" not found`, reason: "NotFound", details: { name: oneNode[1], kind: "nodes" }, code: 404 });
      }
      if (NODES.test(path) && req.method === "GET") {
        const selector = new URL(req.url ?? "", "http://x").searchParams.get("labelSelector");
        const [key, value] = (selector ?? "").split("=");
        const items = state.nodes.filter((n) => !selector || (n.metadata.labels as Record<string, string> | undefined)?.[key ?? ""] === value);
        return send(res, 200, { kind: "NodeList", apiVersion: "v1", metadata: { resourceVersion: "1051900" }, items });
      }
      const va = VOLUME_ATTACHMENTS.exec(path);
      if (va && req.method === "GET" && !va[1]) {
        return send(res, 200, { kind: "VolumeAttachmentList", apiVersion: "storage.k8s.io/v1", metadata: { resourceVersion: "1051901" }, items: [...volumeAttachments.values()] });
      }
      if (va && req.method === "DELETE" && va[1]) {
        const name = decodeURIComponent(va[1]);
        const found = volumeAttachments.get(name);
        if (!found) return send(res, 404, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `volumeattachments.storage.k8s.io "${name}" not found`, reason: "NotFound", details: { name, group: "storage.k8s.io", kind: "volumeattachments" }, code: 404 });
        volumeAttachments.delete(name);
        return send(res, 200, found);
      }
      const vs = VOLUME_SNAPSHOTS.exec(path);
      if (vs && req.method === "GET") {
        const name = decodeURIComponent(vs[2] ?? "");
        const found = volumeSnapshots.get(`${decodeURIComponent(vs[1] ?? "")}/${name}`);
        return found ? send(res, 200, found) : send(res, 404, missing("volumesnapshots", "snapshot.storage.k8s.io", name));
      }
      const vsc = VOLUME_SNAPSHOT_CONTENTS.exec(path);
      if (vsc && req.method === "GET") {
        const name = decodeURIComponent(vsc[1] ?? "");
        const found = volumeSnapshotContents.get(name);
        return found ? send(res, 200, found) : send(res, 404, missing("volumesnapshotcontents", "snapshot.storage.k8s.io", name));
      }
      const pod = PODS.exec(path);
      if (pod && req.method === "GET" && !pod[2]) {
        const ns = decodeURIComponent(pod[1] ?? "");
        return send(res, 200, { kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: "1051902" }, items: [...pods.values()].filter((p) => p.metadata.namespace === ns) });
      }
      if (pod && req.method === "DELETE" && pod[2]) {
        const key = `${decodeURIComponent(pod[1] ?? "")}/${decodeURIComponent(pod[2])}`;
        const found = pods.get(key);
        if (!found) return send(res, 404, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `pods "${pod[2]}" not found`, reason: "NotFound", details: { name: pod[2], kind: "pods" }, code: 404 });
        pods.delete(key);
        try {
          await hooks.onPodDeleted?.(found);
        } catch (err) {
          return send(res, 500, { kind: "Status", apiVersion: "v1", status: "Failure", code: 500, message: `fake API server: onPodDeleted: ${String(err)}` });
        }
        return send(res, 200, found);
      }
      const events = EVENTS.exec(path);
      if (events && req.method === "POST") {
        const obj = body as WireObject;
        return send(res, 201, { ...obj, metadata: { ...obj.metadata, resourceVersion: "3000", uid: "7e1f0a9c-0000-4000-8000-000000000003" } });
      }
      send(res, 404, { kind: "Status", apiVersion: "v1", status: "Failure", code: 404, message: `fake API server: no route for ${req.method} ${path}` });
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get lease() {
      return [...state.leases.values()][0];
    },
    set lease(v) {
      state.leases.clear();
      if (v !== undefined) state.leases.set(String(v.metadata.name), v);
    },
    leases: state.leases,
    pvs,
    pvcs,
    volumeAttachments,
    pods,
    volumeSnapshots,
    volumeSnapshotContents,
    get onPodDeleted() {
      return hooks.onPodDeleted;
    },
    set onPodDeleted(v) {
      hooks.onPodDeleted = v;
    },
    get nodes() {
      return state.nodes;
    },
    set nodes(v) {
      state.nodes = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
