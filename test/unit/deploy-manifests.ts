/**
 * Shared by the deploy*.test.ts suites: build deploy/ the way `kubectl apply -k` does, and
 * look things up in the result.
 *
 * `kubectl kustomize` (kustomize built into kubectl) is used when kubectl is installed (it is
 * on this project's machine image). Neither Debian nor npm ships a kustomize binary, so
 * without kubectl a minimal built-in subset builds the same manifests: `resources` (files
 * and directories with a kustomization.yaml), `images`, `components` (kind Component:
 * deploy/monitoring) and `configMapGenerator` from files with fixed names, the only fields
 * deploy/ uses. Any other kustomization field makes it throw instead of building something
 * different, and deploy*.test.ts check that both builders give the same objects whenever
 * kubectl exists.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml, parseAllDocuments } from "yaml";

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
};

export const REPO_ROOT = resolve(import.meta.dirname, "../..");
export const DEPLOY_DIR = join(REPO_ROOT, "deploy");

/**
 * YAML 1.1, as kubectl and kustomize read it (go-yaml): `0440` is octal (a Secret's
 * defaultMode), and unquoted on/off/yes/no are booleans. The yaml package defaults to 1.2.
 */
export function parseManifests(text: string, source: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text, { version: "1.1" })) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value: unknown = doc.toJS({ maxAliasCount: 1000 });
    if (value === null || value === undefined) continue;
    if (typeof value !== "object" || Array.isArray(value)) throw new Error(`${source}: a document is not a mapping`);
    const obj = value as K8sObject;
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string" || typeof obj.metadata?.name !== "string") {
      throw new Error(`${source}: a document lacks apiVersion, kind or metadata.name`);
    }
    objects.push(obj);
  }
  return objects;
}

let kubectlAvailable: boolean | undefined;

/** Whether `kubectl kustomize` can run here. */
export function hasKubectl(): boolean {
  if (kubectlAvailable === undefined) {
    const r = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8", timeout: 30_000 });
    kubectlAvailable = r.status === 0;
  }
  return kubectlAvailable;
}

/** `kubectl kustomize <dir>`. */
export function kubectlKustomize(dir: string): K8sObject[] {
  const r = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000, maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`);
  return parseManifests(r.stdout, `kubectl kustomize ${dir}`);
}

interface ImageRule {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

const SUPPORTED_FIELDS = new Set(["apiVersion", "kind", "resources", "images", "components", "configMapGenerator"]);

interface ConfigMapGenerator {
  name: string;
  namespace?: string;
  files?: string[];
  options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string>; annotations?: Record<string, string> };
}

/** A configMapGenerator entry: files only (`key=path` or `path`), and no hash suffix (computing kustomize's hash is not worth it). */
function generateConfigMap(dir: string, file: string, gen: ConfigMapGenerator): K8sObject {
  for (const key of Object.keys(gen)) if (!["name", "namespace", "files", "options"].includes(key)) throw new Error(`${file}: configMapGenerator field ${key} is not in the built-in kustomize subset`);
  for (const key of Object.keys(gen.options ?? {})) if (!["disableNameSuffixHash", "labels", "annotations"].includes(key)) throw new Error(`${file}: configMapGenerator option ${key} is not in the built-in kustomize subset`);
  if (gen.options?.disableNameSuffixHash !== true) throw new Error(`${file}: configMapGenerator ${gen.name}: the built-in subset needs options.disableNameSuffixHash: true`);
  const data: Record<string, string> = {};
  for (const entry of gen.files ?? []) {
    const [key, path] = entry.includes("=") ? (entry.split("=", 2) as [string, string]) : [entry.split("/").pop() ?? entry, entry];
    data[key] = readFileSync(resolve(dir, path), "utf8");
  }
  const { labels, annotations } = gen.options;
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: gen.name, ...(gen.namespace && { namespace: gen.namespace }), ...(labels && { labels }), ...(annotations && { annotations }) },
    data,
  };
}

/** `registry/repo:tag@digest` → its name (without tag and digest). */
export function imageName(image: string): string {
  const withoutDigest = image.split("@")[0] ?? image;
  const lastSlash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.indexOf(":", lastSlash + 1);
  return colon < 0 ? withoutDigest : withoutDigest.slice(0, colon);
}

function applyImage(image: string, rule: ImageRule): string {
  const digestPart = image.includes("@") ? image.slice(image.indexOf("@")) : "";
  const withoutDigest = image.split("@")[0] ?? image;
  const name = imageName(image);
  const tagPart = withoutDigest.slice(name.length);
  const newName = rule.newName ?? name;
  if (rule.digest !== undefined) return `${newName}@${rule.digest}`;
  if (rule.newTag !== undefined) return `${newName}:${rule.newTag}`;
  return `${newName}${tagPart}${digestPart}`;
}

/** Every container list (containers, initContainers, ephemeralContainers) in a pod template or pod. */
export function containerLists(obj: K8sObject): Array<Array<Record<string, unknown>>> {
  const podSpec = podSpecOf(obj);
  if (!podSpec) return [];
  return ["containers", "initContainers", "ephemeralContainers"]
    .map((key) => podSpec[key])
    .filter((list): list is Array<Record<string, unknown>> => Array.isArray(list));
}

export function podSpecOf(obj: K8sObject): Record<string, unknown> | undefined {
  const spec = obj.spec as Record<string, unknown> | undefined;
  if (obj.kind === "Pod") return spec;
  if (obj.kind === "CronJob") {
    const jobTemplate = spec?.jobTemplate as { spec?: { template?: { spec?: Record<string, unknown> } } } | undefined;
    return jobTemplate?.spec?.template?.spec;
  }
  const template = spec?.template as { spec?: Record<string, unknown> } | undefined;
  return template?.spec;
}

/** The built-in subset of `kustomize build` described at the top of this file. */
export function miniKustomize(dir: string, kind: "Kustomization" | "Component" = "Kustomization"): K8sObject[] {
  const file = join(dir, "kustomization.yaml");
  const [doc] = parseManifestsLoose(readFileSync(file, "utf8"), file);
  const kustomization = (doc ?? {}) as { kind?: string; resources?: unknown; images?: unknown; components?: unknown; configMapGenerator?: ConfigMapGenerator[] };
  for (const key of Object.keys(kustomization)) {
    if (!SUPPORTED_FIELDS.has(key)) throw new Error(`${file}: field ${key} is not in the built-in kustomize subset (test/unit/deploy-manifests.ts); extend it or install kubectl`);
  }
  // kustomize: a Component only through `components`, and a Kustomization never there.
  if ((kustomization.kind ?? "Kustomization") !== kind) throw new Error(`${file}: is a ${kustomization.kind ?? "Kustomization"} where a ${kind} is expected`);
  const resources = (kustomization.resources ?? []) as unknown[];
  const objects: K8sObject[] = [];
  for (const entry of resources) {
    if (typeof entry !== "string") throw new Error(`${file}: resources entries must be paths`);
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new Error(`${file}: resource ${entry} does not exist`);
    if (statSync(path).isDirectory()) objects.push(...miniKustomize(path));
    else objects.push(...parseManifests(readFileSync(path, "utf8"), path));
  }
  for (const entry of (kustomization.components ?? []) as unknown[]) {
    if (typeof entry !== "string") throw new Error(`${file}: components entries must be paths`);
    objects.push(...miniKustomize(resolve(dir, entry), "Component"));
  }
  for (const gen of kustomization.configMapGenerator ?? []) objects.push(generateConfigMap(dir, file, gen));
  const images = (kustomization.images ?? []) as ImageRule[];
  for (const obj of objects) {
    for (const list of containerLists(obj)) {
      for (const container of list) {
        if (typeof container.image !== "string") continue;
        const rule = images.find((r) => r.name === imageName(container.image as string));
        if (rule) container.image = applyImage(container.image, rule);
      }
    }
  }
  return objects;
}

function parseManifestsLoose(text: string, source: string): unknown[] {
  return parseAllDocuments(text, { version: "1.1" }).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join("; ")}`);
    return doc.toJS() as unknown;
  });
}

const builds = new Map<string, K8sObject[]>();

/** What `kubectl apply -k <dir>` would apply: kubectl's kustomize when present, the subset otherwise. */
export function build(dir: string): K8sObject[] {
  let objects = builds.get(dir);
  if (!objects) {
    objects = hasKubectl() ? kubectlKustomize(dir) : miniKustomize(dir);
    builds.set(dir, objects);
  }
  return structuredClone(objects);
}

export function key(obj: K8sObject): string {
  return `${obj.apiVersion}/${obj.kind}/${obj.metadata.namespace ?? ""}/${obj.metadata.name}`;
}

export function find(objects: readonly K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0]!;
}

export function ofKind(objects: readonly K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

export interface ContainerInfo {
  readonly workload: K8sObject;
  readonly podSpec: Record<string, unknown>;
  readonly container: Record<string, unknown> & { name: string; image: string; args?: string[]; env?: Array<{ name: string; value?: string }> };
}

/** Every container of every workload, with its pod spec. */
export function containers(objects: readonly K8sObject[]): ContainerInfo[] {
  const out: ContainerInfo[] = [];
  for (const workload of objects) {
    const podSpec = podSpecOf(workload);
    if (!podSpec) continue;
    for (const list of containerLists(workload)) for (const container of list) out.push({ workload, podSpec, container: container as ContainerInfo["container"] });
  }
  return out;
}

/** zcsi's own containers: image name `zcsi` before the images transformer, its newName after. */
export function zcsiContainers(objects: readonly K8sObject[]): Array<ContainerInfo & { role: string }> {
  return containers(objects)
    .filter((c) => /(^|\/)zcsi(:|@|$)/.test(c.container.image))
    .map((c) => ({ ...c, role: c.container.args?.[0] ?? "" }));
}

/** The zcsi config document from the zcsi-config ConfigMap, parsed as zcsi parses it (loadConfig: YAML 1.2). */
export function configDocument(objects: readonly K8sObject[]): unknown {
  const cm = find(objects, "ConfigMap", "zcsi-config") as K8sObject & { data: Record<string, string> };
  const text = cm.data["config.yaml"];
  if (text === undefined) throw new Error("ConfigMap zcsi-config has no config.yaml");
  return parseYaml(text) as unknown;
}
