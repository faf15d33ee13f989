import * as k8s from "@kubernetes/client-node";
import { key, type K8sObject } from "./deploy-manifests.js";

/**
 * Schema validation of Kubernetes objects, shared by the deploy/ tests and every test of an
 * object zcsi writes (`zcsi adopt --dry-run`): kubernetes-models (JSON-schema validators
 * generated from the Kubernetes OpenAPI spec; types, required fields, formats) plus the
 * OpenAPI-generated models of @kubernetes/client-node for unknown fields (the OpenAPI schemas
 * allow additional properties, so a misspelt `mountPropogation` would otherwise pass, as it
 * would with `kubectl apply --validate=false`).
 */

type Validatable = new (data: unknown) => { validate(): void };

async function schemaModel(apiVersion: string, kind: string): Promise<Validatable | undefined> {
  const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
  const path = group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(path)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  return mod[kind] as Validatable | undefined;
}

interface Attribute {
  readonly baseName: string;
  readonly type: string;
}
type ModelClass = { getAttributeTypeMap?: () => Attribute[]; attributeTypeMap?: Attribute[] };

const clientModels = k8s as unknown as Record<string, ModelClass | undefined>;

/** client-node's model class for a kind: `apps/v1` Deployment → V1Deployment. */
function clientModelName(apiVersion: string, kind: string): string {
  const version = apiVersion.split("/").pop() ?? apiVersion;
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
}

/** Paths of fields the Kubernetes API does not define, walking client-node's OpenAPI models. */
function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) unknownFields(v, map[1]!, `${path}.${k}`, out);
    return;
  }
  const model = clientModels[type];
  const attributes = model?.getAttributeTypeMap?.() ?? model?.attributeTypeMap;
  // A primitive (string, number, IntOrString, ...): its type is kubernetes-models' job.
  if (!attributes || value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [field, child] of Object.entries(value)) {
    const attribute = attributes.find((a) => a.baseName === field);
    if (!attribute) out.push(`${path}.${field}`);
    else unknownFields(child, attribute.type, `${path}.${field}`, out);
  }
}

/**
 * Kinds newer than the kubernetes-models release reachable here (4.5.1 predates
 * storage.k8s.io/v1 VolumeAttributesClass, GA in Kubernetes 1.34): their required fields and
 * value types, from the API reference, checked by hand. Unknown fields are still caught by
 * client-node's model, which has the kind.
 */
const HAND_SCHEMAS: Readonly<Record<string, (obj: K8sObject) => string[]>> = {
  "storage.k8s.io/v1 VolumeAttributesClass": (obj) => {
    const problems: string[] = [];
    if (typeof obj.driverName !== "string" || obj.driverName === "") problems.push("must have required property 'driverName'");
    const params = obj.parameters ?? {};
    if (typeof params !== "object" || Array.isArray(params)) problems.push("parameters must be object");
    else for (const [k, v] of Object.entries(params)) if (typeof v !== "string") problems.push(`parameters.${k} must be string`);
    return problems;
  },
};

/** Schema problems of one object; empty when it is valid. */
export async function schemaProblems(obj: K8sObject): Promise<string[]> {
  const Model = await schemaModel(obj.apiVersion, obj.kind);
  const modelName = clientModelName(obj.apiVersion, obj.kind);
  const byHand = HAND_SCHEMAS[`${obj.apiVersion} ${obj.kind}`];
  if ((!Model && !byHand) || !clientModels[modelName]) return [`${key(obj)}: no schema for ${obj.apiVersion} ${obj.kind}`];
  const problems: string[] = [];
  try {
    if (Model) new Model(obj).validate();
    else problems.push(...(byHand?.(obj) ?? []).map((p) => `${key(obj)}: ${p}`));
  } catch (err) {
    problems.push(`${key(obj)}: ${(err as Error).message}`);
  }
  const unknown: string[] = [];
  unknownFields(obj, modelName, "", unknown);
  for (const field of unknown) problems.push(`${key(obj)}: unknown field ${field.slice(1)}`);
  return problems;
}
