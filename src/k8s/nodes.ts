import { invalidArgument } from "../errors.js";

/**
 * What zcsi reads of Kubernetes Nodes: name, labels and annotations (the replicator's node
 * annotations, replication/jobs.ts, are the only reader today). Behind NodeSource, so the
 * role is tested with recorded-shape Node objects and client.ts implements it with client-node.
 */

export interface NodeInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

/** Lists the nodes that match a label selector (`key=value`). Throws Unavailable when the API cannot be read. */
export interface NodeSource {
  listNodes(labelSelector: string): Promise<NodeInfo[]>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function stringMap(v: unknown): Record<string, string> {
  if (!isObject(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** A Node as the API returns it (`kubectl get node -o json`, or client-node's V1Node) → NodeInfo. */
export function nodeFromObject(obj: unknown): NodeInfo {
  if (!isObject(obj) || !isObject(obj.metadata) || typeof obj.metadata.name !== "string") throw invalidArgument("not a Node object (no metadata.name)");
  return { name: obj.metadata.name, labels: stringMap(obj.metadata.labels), annotations: stringMap(obj.metadata.annotations) };
}

/** `kubectl get nodes -o json` (a v1 List or NodeList) → NodeInfo[]. */
export function nodesFromList(list: unknown): NodeInfo[] {
  if (!isObject(list) || !Array.isArray(list.items)) throw invalidArgument("not a list of Nodes (no items)");
  return list.items.map(nodeFromObject);
}
