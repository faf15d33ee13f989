import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { build, DEPLOY_DIR, ofKind, REPO_ROOT, zcsiContainers, type K8sObject } from "./deploy-manifests.js";

/**
 * RBAC covers every Kubernetes API call zcsi makes, and nothing more than its containers need.
 *
 * The calls: src/k8s is the only code that uses @kubernetes/client-node. Every method call in
 * it whose name is a generated API method (`readNamespacedLease`, `createNamespacedEvent`,
 * `patchPersistentVolume`, `listNode`, ...) is mapped to an API request with the mapping
 * client-node itself is generated with: each method's path template and HTTP method, read from
 * its request factories (dist/gen/apis/*Api.js). The path gives group, resource, subresource
 * and scope; the HTTP method gives the verb (POST create, GET get/list, PUT update, PATCH
 * patch, DELETE delete/deletecollection). A path literal (`/api/v1/nodes`, for informers and
 * watches) needs list and watch.
 *
 * Who calls: the ServiceAccount of the pod whose zcsi container runs the role. A role's code
 * is src/roles/<role>.ts plus what cli.ts imports in its `case "<role>"` block, followed
 * through the import graph; a src/k8s module reached from no role is checked against the
 * controller pod's ServiceAccount, where the roles that use the API run. With no src/k8s
 * (or no calls in it) there is nothing to check.
 */

const SRC = join(REPO_ROOT, "src");
const K8S_DIR = join(SRC, "k8s");
const CONTROLLER_SA = "zcsi-controller";
/**
 * Namespaced resources zcsi writes outside its own namespace. Events about PersistentVolumes
 * go to "default", where `kubectl describe pv` looks (src/k8s/events.ts, PV_EVENT_NAMESPACE).
 */
const NAMESPACE_OF: Readonly<Record<string, string>> = { events: "default" };
/**
 * Commands an operator runs from their own machine with their own kubeconfig (not in a pod):
 * the calls they reach are checked against the ClusterRole the operator is meant to be bound
 * to (deploy/base/rbac-operator.yaml), not against a ServiceAccount.
 */
const OPERATOR_COMMANDS = ["failover", "resync", "migrate", "drain", "rollback"];
/** Operator commands also documented to run in the controller pod (`kubectl exec`): checked against its ServiceAccount too. */
const IN_POD_COMMANDS = ["rollback"];
const OPERATOR_ROLE = "zcsi-operator";

interface ApiRequest {
  readonly group: string;
  /** `leases`, or `persistentvolumeclaims/status` for a subresource. */
  readonly resource: string;
  readonly verb: string;
  readonly namespaced: boolean;
}

interface CatalogEntry {
  readonly api: string;
  readonly method: string;
  readonly request: ApiRequest;
}

/** group/resource/verb of a request, from client-node's path template and HTTP method. */
function classify(path: string, httpMethod: string): ApiRequest {
  const parts = path.split("/").filter((p) => p !== "");
  let rest: string[];
  let group: string;
  if (parts[0] === "api") {
    group = "";
    rest = parts.slice(2); // api, v1
  } else if (parts[0] === "apis") {
    group = parts[1] ?? "";
    rest = parts.slice(3); // apis, group, version
  } else {
    throw new Error(`not an API path: ${path}`);
  }
  let namespaced = false;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespaced = true;
    rest = rest.slice(2);
  }
  const [resource = "", name, subresource] = rest;
  const isItem = name !== undefined;
  const method = httpMethod.toUpperCase();
  const verb =
    method === "POST" ? "create" : method === "PUT" ? "update" : method === "PATCH" ? "patch" : method === "DELETE" ? (isItem ? "delete" : "deletecollection") : isItem ? "get" : "list";
  return { group, resource: subresource ? `${resource}/${subresource}` : resource, verb, namespaced };
}

let catalog: Map<string, CatalogEntry[]> | undefined;

/** method name → the API request(s) it makes, from client-node's generated request factories. */
function apiCatalog(): Map<string, CatalogEntry[]> {
  if (catalog) return catalog;
  const require = createRequire(import.meta.url);
  const apisDir = join(dirname(require.resolve("@kubernetes/client-node")), "gen", "apis");
  catalog = new Map();
  for (const file of readdirSync(apisDir).filter((f) => /^[A-Za-z0-9]+Api\.js$/.test(f))) {
    const api = file.replace(/\.js$/, "");
    const text = readFileSync(join(apisDir, file), "utf8");
    const start = text.indexOf(`class ${api}RequestFactory`);
    const end = text.indexOf(`class ${api}ResponseProcessor`);
    if (start < 0 || end < 0) continue;
    const factory = text.slice(start, end);
    const method = /async (\w+)\([^)]*\) \{[\s\S]*?const localVarPath = '([^']+)'[\s\S]*?HttpMethod\.(\w+)\)/g;
    for (const m of factory.matchAll(method)) {
      const [, name, path, http] = m as unknown as [string, string, string, string];
      if (!path.startsWith("/api/") && !path.startsWith("/apis/")) continue;
      const parts = path.split("/").filter((p) => p !== "");
      if (parts.length < (path.startsWith("/api/") ? 3 : 4)) continue; // discovery endpoints (getAPIResources)
      const entries = catalog.get(name) ?? [];
      entries.push({ api, method: name, request: classify(path, http) });
      catalog.set(name, entries);
    }
  }
  return catalog;
}

interface Call {
  readonly file: string;
  readonly line: number;
  readonly what: string;
  readonly requests: readonly ApiRequest[];
}

/** The API calls in one source text. `apisInScope`: client-node API classes the module set names. */
function callsIn(file: string, source: string, apisInScope: ReadonlySet<string>): Call[] {
  const calls: Call[] = [];
  const lineOf = (index: number): number => source.slice(0, index).split("\n").length;
  for (const m of source.matchAll(/\.(\w+)\(/g)) {
    const entries = apiCatalog().get(m[1]!);
    if (!entries) continue;
    const inScope = entries.filter((e) => apisInScope.has(e.api));
    // Ambiguous (same method name on several API classes in scope, e.g. createNamespacedEvent
    // on CoreV1Api and EventsV1Api): every one of them must be allowed.
    const chosen = inScope.length > 0 ? inScope : entries;
    // CustomObjectsApi paths are templates (`/apis/{group}/{version}/.../{plural}`): the call's
    // own `group: "..."` and `plural: "..."` literals say which resource it is (kube-claims.ts
    // keeps them literal); a call without them stays `{group}/{plural}`, which no rule allows.
    const args = source.slice(m.index, m.index + 400);
    const group = /\bgroup:\s*"([^"]+)"/.exec(args)?.[1];
    const plural = /\bplural:\s*"([^"]+)"/.exec(args)?.[1];
    const resolve = (r: ApiRequest): ApiRequest =>
      r.group === "{group}" && group !== undefined && plural !== undefined ? { ...r, group, resource: r.resource.replace("{plural}", plural) } : r;
    calls.push({ file, line: lineOf(m.index), what: `${chosen.map((e) => e.api).join("|")}.${m[1]}`, requests: chosen.map((e) => resolve(e.request)) });
  }
  for (const m of source.matchAll(/["'`](\/apis?\/[^"'`$]+)["'`]/g)) {
    const base = classify(m[1]!, "GET");
    for (const verb of ["list", "watch"]) calls.push({ file, line: lineOf(m.index), what: `${verb} ${m[1]}`, requests: [{ ...base, verb }] });
  }
  return calls;
}

function tsFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return tsFiles(path);
    return entry.endsWith(".ts") ? [path] : [];
  });
}

/** Runtime imports of a module (static, re-exports and dynamic; `import type` excluded), resolved to .ts files. */
function importsOf(file: string, source = readFileSync(file, "utf8")): string[] {
  const specifiers = [
    ...[...source.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+["'](\.[^"']+)["']/gm)].map((m) => m[1]!),
    ...[...source.matchAll(/^\s*import\s+["'](\.[^"']+)["']/gm)].map((m) => m[1]!),
    ...[...source.matchAll(/\bimport\(\s*["'](\.[^"']+)["']\s*\)/g)].map((m) => m[1]!),
  ];
  return specifiers.map((s) => resolve(dirname(file), s.replace(/\.js$/, ".ts"))).filter((p) => existsSync(p));
}

function reachable(entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    queue.push(...importsOf(file));
  }
  return seen;
}

/** Entry modules of a role: src/roles/<role>.ts and what cli.ts imports in its case block. */
function roleEntries(role: string): string[] {
  const entries: string[] = [];
  const roleFile = join(SRC, "roles", `${role}.ts`);
  if (existsSync(roleFile)) entries.push(roleFile);
  const cli = join(SRC, "cli.ts");
  const text = readFileSync(cli, "utf8");
  const start = text.indexOf(`case "${role}":`);
  if (start >= 0) {
    const after = text.slice(start + 1);
    const next = after.search(/\n\s*(case "|default:)/);
    const block = next < 0 ? after : after.slice(0, next);
    entries.push(...importsOf(cli, block));
  }
  return entries;
}

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
}

/** Rules that apply to `sa` for a request in `namespace` (undefined: cluster-scoped). */
function rulesFor(objects: readonly K8sObject[], sa: { name: string; namespace: string }, namespace: string | undefined): Rule[] {
  const isSubject = (b: K8sObject): boolean =>
    ((b.subjects ?? []) as Array<{ kind: string; name: string; namespace?: string }>).some((s) => s.kind === "ServiceAccount" && s.name === sa.name && s.namespace === sa.namespace);
  const roleRules = (kind: string, name: string, ns?: string): Rule[] =>
    objects
      .filter((o) => o.kind === kind && o.metadata.name === name && (kind === "ClusterRole" || o.metadata.namespace === ns))
      .flatMap((o) => (o.rules ?? []) as Rule[]);
  const rules: Rule[] = [];
  for (const b of ofKind(objects, "ClusterRoleBinding").filter(isSubject)) {
    const ref = b.roleRef as { kind: string; name: string };
    rules.push(...roleRules("ClusterRole", ref.name));
  }
  if (namespace !== undefined) {
    for (const b of ofKind(objects, "RoleBinding").filter(isSubject)) {
      if (b.metadata.namespace !== namespace) continue;
      const ref = b.roleRef as { kind: string; name: string };
      rules.push(...roleRules(ref.kind, ref.name, namespace));
    }
  }
  return rules;
}

/** Whether RBAC lets `sa` make `request`. */
function allows(objects: readonly K8sObject[], sa: { name: string; namespace: string }, request: ApiRequest): boolean {
  const namespace = request.namespaced ? (NAMESPACE_OF[request.resource] ?? sa.namespace) : undefined;
  return rulesFor(objects, sa, namespace).some(
    (r) => !r.resourceNames && (r.apiGroups ?? []).includes(request.group) && (r.resources ?? []).includes(request.resource) && (r.verbs ?? []).includes(request.verb),
  );
}

function describeRequest(r: ApiRequest): string {
  return `${r.verb} ${r.group === "" ? "core" : r.group}/${r.resource}${r.namespaced ? ` in ${NAMESPACE_OF[r.resource] ?? "own namespace"}` : ""}`;
}

/** Calls src/k8s makes that the ServiceAccount running them may not make. */
function uncoveredCalls(objects: readonly K8sObject[]): string[] {
  const k8sFiles = tsFiles(K8S_DIR);
  if (k8sFiles.length === 0) return [];
  const sources = new Map(k8sFiles.map((f) => [f, readFileSync(f, "utf8")]));
  const apisInScope = new Set([...apiCatalog().values()].flat().map((e) => e.api).filter((api) => [...sources.values()].some((s) => new RegExp(`\\b${api}\\b`).test(s))));
  const callsByFile = new Map(k8sFiles.map((f) => [f, callsIn(relative(REPO_ROOT, f), sources.get(f)!, apisInScope)]));
  const saOf = (c: { podSpec: Record<string, unknown>; workload: K8sObject }): { name: string; namespace: string } => ({
    name: (c.podSpec.serviceAccountName as string | undefined) ?? "default",
    namespace: c.workload.metadata.namespace ?? "default",
  });
  const problems: string[] = [];
  const checked = new Set<string>();
  const check = (file: string, sa: { name: string; namespace: string }, who: string): void => {
    for (const call of callsByFile.get(file) ?? []) {
      for (const request of call.requests) {
        if (!allows(objects, sa, request)) problems.push(`${call.file}:${call.line} ${call.what} (${describeRequest(request)}) run by ${who} as ServiceAccount ${sa.namespace}/${sa.name}`);
      }
    }
  };
  for (const container of zcsiContainers(objects)) {
    const sa = saOf(container);
    for (const file of reachable(roleEntries(container.role))) {
      if (!callsByFile.has(file)) continue;
      checked.add(file);
      check(file, sa, `zcsi ${container.role}`);
    }
  }
  // The ClusterRole, and the Role of the same name in zcsi's namespace (the move-lock Leases).
  const operatorRules = objects.filter((o) => (o.kind === "ClusterRole" || o.kind === "Role") && o.metadata.name === OPERATOR_ROLE).flatMap((o) => (o.rules ?? []) as Rule[]);
  for (const command of OPERATOR_COMMANDS) {
    for (const file of reachable(roleEntries(command))) {
      if (!callsByFile.has(file)) continue;
      checked.add(file);
      for (const call of callsByFile.get(file) ?? []) {
        for (const request of call.requests) {
          const allowed = operatorRules.some((r) => !r.resourceNames && (r.apiGroups ?? []).includes(request.group) && (r.resources ?? []).includes(request.resource) && (r.verbs ?? []).includes(request.verb));
          if (!allowed) problems.push(`${call.file}:${call.line} ${call.what} (${describeRequest(request)}) run by zcsi ${command} as an operator bound to ClusterRole ${OPERATOR_ROLE}`);
        }
      }
    }
  }
  const controller = zcsiContainers(objects).find((c) => c.role === "controller");
  if (!controller) throw new Error("no zcsi controller container in the manifests");
  for (const command of IN_POD_COMMANDS) {
    for (const file of reachable(roleEntries(command))) if (callsByFile.has(file)) check(file, { ...saOf(controller), name: CONTROLLER_SA }, `zcsi ${command} in the controller pod`);
  }
  for (const file of k8sFiles.filter((f) => !checked.has(f))) check(file, { ...saOf(controller), name: CONTROLLER_SA }, "a role not yet wired (assumed in the controller pod)");
  return problems;
}

describe("RBAC covers every Kubernetes API call in src/k8s", () => {
  it("maps client-node methods to the requests they make", () => {
    const get = (name: string): ApiRequest[] => (apiCatalog().get(name) ?? []).map((e) => e.request);
    expect(get("readNamespacedLease")).toEqual([{ group: "coordination.k8s.io", resource: "leases", verb: "get", namespaced: true }]);
    expect(get("replaceNamespacedLease")).toEqual([{ group: "coordination.k8s.io", resource: "leases", verb: "update", namespaced: true }]);
    expect(get("patchPersistentVolume")).toEqual([{ group: "", resource: "persistentvolumes", verb: "patch", namespaced: false }]);
    expect(get("listNode")).toEqual([{ group: "", resource: "nodes", verb: "list", namespaced: false }]);
    expect(get("patchNamespacedPersistentVolumeClaimStatus")).toEqual([{ group: "", resource: "persistentvolumeclaims/status", verb: "patch", namespaced: true }]);
    expect(get("createNamespacedEvent")).toEqual(
      expect.arrayContaining([
        { group: "", resource: "events", verb: "create", namespaced: true },
        { group: "events.k8s.io", resource: "events", verb: "create", namespaced: true },
      ]),
    );
    expect(get("deleteCollectionNode")).toEqual([{ group: "", resource: "nodes", verb: "deletecollection", namespaced: false }]);
  });

  it("reads a custom object call's group and plural from its literals, and leaves one without them unresolved", () => {
    const scope = new Set(["CustomObjectsApi"]);
    const literal = callsIn("x.ts", 'await custom.getNamespacedCustomObject({ group: "snapshot.storage.k8s.io", version: "v1", plural: "volumesnapshots", namespace, name });', scope);
    expect(literal.map((c) => c.requests)).toEqual([[{ group: "snapshot.storage.k8s.io", resource: "volumesnapshots", verb: "get", namespaced: true }]]);
    const opaque = callsIn("x.ts", "await custom.getClusterCustomObject({ group: GROUP, version, plural, name });", scope);
    expect(opaque.map((c) => c.requests)).toEqual([[{ group: "{group}", resource: "{plural}", verb: "get", namespaced: false }]]);
  });

  it("finds the calls in a module, scoped to the API classes it uses", () => {
    const source = [
      "const core = kc.makeApiClient(CoreV1Api);",
      "await core.createNamespacedEvent({ namespace, body });",
      "await core.listNode();",
      'const informer = makeInformer(kc, "/api/v1/persistentvolumes", () => core.listPersistentVolume());',
    ].join("\n");
    const calls = callsIn("x.ts", source, new Set(["CoreV1Api"]));
    expect(calls.map((c) => `${c.line} ${c.what}`)).toEqual([
      "2 CoreV1Api.createNamespacedEvent",
      "3 CoreV1Api.listNode",
      "4 CoreV1Api.listPersistentVolume",
      "4 list /api/v1/persistentvolumes",
      "4 watch /api/v1/persistentvolumes",
    ]);
  });

  it("allows every call src/k8s makes for the ServiceAccount of the pod that makes it", () => {
    // Passes trivially while src/k8s does not exist or makes no calls.
    expect(uncoveredCalls(build(DEPLOY_DIR))).toEqual([]);
  });

  it("covers zcsi's calls with zcsi's own roles, not by grace of the upstream sidecars' ClusterRoles", () => {
    const withoutSidecarRoles = build(DEPLOY_DIR).filter((o) => !(o.kind === "ClusterRole" && o.metadata.name.startsWith("zcsi-external-")));
    expect(uncoveredCalls(withoutSidecarRoles)).toEqual([]);
  });

  it("would report a call the rules do not cover", () => {
    const objects = build(DEPLOY_DIR);
    const sa = { name: CONTROLLER_SA, namespace: "zcsi" };
    expect(allows(objects, sa, { group: "", resource: "nodes", verb: "list", namespaced: false })).toBe(true);
    expect(allows(objects, sa, { group: "", resource: "nodes", verb: "patch", namespaced: false })).toBe(false);
    expect(allows(objects, sa, { group: "coordination.k8s.io", resource: "leases", verb: "update", namespaced: true })).toBe(true);
    expect(allows(objects, sa, { group: "", resource: "secrets", verb: "get", namespaced: true })).toBe(false);
    // A lease outside the pod's namespace is not covered by the namespaced Role.
    expect(allows(objects, { name: CONTROLLER_SA, namespace: "elsewhere" }, { group: "coordination.k8s.io", resource: "leases", verb: "get", namespaced: true })).toBe(false);
    // Without its bindings, the controller could not record PV events.
    const unbound = objects.filter((o) => !(o.kind === "ClusterRoleBinding" && o.metadata.name === "zcsi-controller"));
    expect(allows(unbound, sa, { group: "", resource: "events", verb: "create", namespaced: true })).toBe(true); // still: the sidecars' roles grant it
    expect(allows(unbound, sa, { group: "", resource: "persistentvolumes", verb: "patch", namespaced: false })).toBe(true);
    expect(allows(unbound, sa, { group: "", resource: "nodes", verb: "watch", namespaced: false })).toBe(true);
    const bare = objects.filter((o) => o.kind !== "ClusterRoleBinding");
    expect(allows(bare, sa, { group: "", resource: "events", verb: "create", namespaced: true })).toBe(false);
  });
});

describe("the csi-attacher sidecar (CSIDriver attachRequired: true)", () => {
  // What external-attacher v4 calls (its deploy/kubernetes/rbac.yaml, and the status
  // subresource it patches with the attach result and publish_context).
  const ATTACHER_CALLS: ApiRequest[] = [
    ...["get", "list", "watch", "patch"].map((verb) => ({ group: "", resource: "persistentvolumes", verb, namespaced: false })),
    ...["get", "list", "watch"].map((verb) => ({ group: "", resource: "nodes", verb, namespaced: false })),
    ...["get", "list", "watch"].map((verb) => ({ group: "storage.k8s.io", resource: "csinodes", verb, namespaced: false })),
    ...["get", "list", "watch", "patch"].map((verb) => ({ group: "storage.k8s.io", resource: "volumeattachments", verb, namespaced: false })),
    { group: "storage.k8s.io", resource: "volumeattachments/status", verb: "patch", namespaced: false },
    ...["get", "list", "watch", "create", "update", "delete"].map((verb) => ({ group: "coordination.k8s.io", resource: "leases", verb, namespaced: true })),
  ];

  it("runs in the controller pod when the CSIDriver requires attach, and its ServiceAccount may make every call it makes", () => {
    const objects = build(DEPLOY_DIR);
    const driver = ofKind(objects, "CSIDriver")[0]!;
    expect((driver.spec as { attachRequired?: boolean }).attachRequired).toBe(true);
    const controller = ofKind(objects, "Deployment").find((d) => d.metadata.name === "zcsi-controller")!;
    const podSpec = (controller.spec as { template: { spec: { serviceAccountName: string; containers: Array<{ name: string; image: string }> } } }).template.spec;
    expect(podSpec.containers.map((c) => c.image)).toContainEqual(expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/csi-attacher:v4\.[0-9]+\.[0-9]+$/));
    const sa = { name: podSpec.serviceAccountName, namespace: "zcsi" };
    expect(ATTACHER_CALLS.filter((r) => !allows(objects, sa, r)).map(describeRequest)).toEqual([]);
  });

  it("gets them from its own ClusterRole, which grants nothing else", () => {
    const objects = build(DEPLOY_DIR);
    const sa = { name: CONTROLLER_SA, namespace: "zcsi" };
    const onlyAttacher = objects.filter((o) => !(o.kind === "ClusterRole" && o.metadata.name !== "zcsi-external-attacher") && !(o.kind === "ClusterRoleBinding" && o.metadata.name !== "zcsi-external-attacher"));
    expect(ATTACHER_CALLS.filter((r) => !allows(onlyAttacher, sa, r)).map(describeRequest)).toEqual([]);
    const role = objects.find((o) => o.kind === "ClusterRole" && o.metadata.name === "zcsi-external-attacher")!;
    const granted = ((role.rules ?? []) as Rule[]).flatMap((r) => (r.resources ?? []).flatMap((res) => (r.verbs ?? []).map((v) => `${v} ${res}`)));
    const needed = new Set(ATTACHER_CALLS.filter((r) => !r.namespaced).map((r) => `${r.verb} ${r.resource}`));
    expect(granted.filter((g) => !needed.has(g))).toEqual([]);
  });
});

describe("the csi-resizer sidecar with VolumeAttributesClass (ControllerModifyVolume)", () => {
  // What external-resizer v2 calls: its deploy/kubernetes/rbac.yaml (PVs, PVCs, the PVC status
  // subresource where it reports expansion and modification, events) plus the
  // volumeattributesclasses rule v2.0 added (CHANGELOG-2.0, "Rbac change for
  // VolumeAttributesClass"), and its leader-election lease.
  const RESIZER_CALLS: ApiRequest[] = [
    ...["get", "list", "watch", "patch"].map((verb) => ({ group: "", resource: "persistentvolumes", verb, namespaced: false })),
    ...["get", "list", "watch"].map((verb) => ({ group: "", resource: "persistentvolumeclaims", verb, namespaced: true })),
    { group: "", resource: "persistentvolumeclaims/status", verb: "patch", namespaced: true },
    ...["get", "list", "watch"].map((verb) => ({ group: "storage.k8s.io", resource: "volumeattributesclasses", verb, namespaced: false })),
    ...["list", "watch", "create", "update", "patch"].map((verb) => ({ group: "", resource: "events", verb, namespaced: true })),
    ...["get", "list", "watch", "create", "update", "delete"].map((verb) => ({ group: "coordination.k8s.io", resource: "leases", verb, namespaced: true })),
  ];

  it("runs with the VolumeAttributesClass feature gate on, and may make every call it makes from its own ClusterRole", () => {
    const objects = build(DEPLOY_DIR);
    const controller = ofKind(objects, "Deployment").find((d) => d.metadata.name === "zcsi-controller")!;
    const podSpec = (controller.spec as { template: { spec: { serviceAccountName: string; containers: Array<{ name: string; image: string; args?: string[] }> } } }).template.spec;
    const resizer = podSpec.containers.find((c) => c.name === "csi-resizer")!;
    expect(resizer.image).toMatch(/^registry\.k8s\.io\/sig-storage\/csi-resizer:v2\.[0-9]+\.[0-9]+$/);
    expect(resizer.args).toContain("--feature-gates=VolumeAttributesClass=true");
    const sa = { name: podSpec.serviceAccountName, namespace: "zcsi" };
    const onlyResizer = objects.filter((o) => !(o.kind === "ClusterRole" && o.metadata.name !== "zcsi-external-resizer") && !(o.kind === "ClusterRoleBinding" && o.metadata.name !== "zcsi-external-resizer"));
    expect(RESIZER_CALLS.filter((r) => !allows(onlyResizer, sa, r)).map(describeRequest)).toEqual([]);
  });
});

describe("RBAC is least privilege", () => {
  it("uses no wildcards and grants no access to Secrets", () => {
    const objects = build(DEPLOY_DIR);
    for (const role of [...ofKind(objects, "ClusterRole"), ...ofKind(objects, "Role")]) {
      for (const rule of (role.rules ?? []) as Rule[]) {
        for (const list of [rule.apiGroups, rule.resources, rule.verbs]) expect(list ?? [], role.metadata.name).not.toContain("*");
        expect(rule.resources ?? [], role.metadata.name).not.toContain("secrets");
        for (const verb of rule.verbs ?? []) expect(["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"], `${role.metadata.name}: ${verb}`).toContain(verb);
      }
    }
  });

  it("gives the node plugin no Kubernetes API access at all", () => {
    const objects = build(DEPLOY_DIR);
    const bindings = [...ofKind(objects, "ClusterRoleBinding"), ...ofKind(objects, "RoleBinding")].filter((b) =>
      ((b.subjects ?? []) as Array<{ name: string }>).some((s) => s.name === "zcsi-node"),
    );
    expect(bindings).toEqual([]);
    const sa = objects.find((o) => o.kind === "ServiceAccount" && o.metadata.name === "zcsi-node");
    expect(sa?.automountServiceAccountToken).toBe(false);
  });

  it("binds every role it defines, to a ServiceAccount that exists, and leases only in zcsi's namespace", () => {
    const objects = build(DEPLOY_DIR);
    const accounts = new Set(ofKind(objects, "ServiceAccount").map((s) => `${s.metadata.namespace}/${s.metadata.name}`));
    const bound = new Set<string>();
    for (const b of [...ofKind(objects, "ClusterRoleBinding"), ...ofKind(objects, "RoleBinding")]) {
      // Groups (the operators of deploy/base/rbac-operator.yaml) are the cluster's; ServiceAccounts must exist.
      for (const s of (b.subjects ?? []) as Array<{ kind: string; name: string; namespace: string }>) if (s.kind === "ServiceAccount") expect(accounts.has(`${s.namespace}/${s.name}`), `${b.metadata.name}: ${s.name}`).toBe(true);
      const ref = b.roleRef as { kind: string; name: string };
      bound.add(`${ref.kind}/${ref.name}`);
    }
    for (const role of [...ofKind(objects, "ClusterRole"), ...ofKind(objects, "Role")]) expect(bound.has(`${role.kind}/${role.metadata.name}`), role.metadata.name).toBe(true);
    for (const role of ofKind(objects, "ClusterRole")) {
      const resources = ((role.rules ?? []) as Rule[]).flatMap((r) => r.resources ?? []);
      expect(resources, role.metadata.name).not.toContain("leases");
    }
  });
});
