import { invalidArgument } from "../errors.js";

/**
 * What the replicator reads of Kubernetes Nodes (the z8r model of replication by node
 * annotations, docs/replication.md): name, labels and annotations. Behind NodeSource, so the
 * role is tested with recorded-shape Node objects and client.ts implements it with client-node.
 */

/** The label that opts a node in: only labelled nodes are read for replication annotations. */
export const REPLICATION_LABEL = "zcsi.dev/replication";
/** On a source node: the datasets it masters, comma-separated (`tank/db,tank/www`). */
export const SOURCE_ANNOTATION = "zcsi.dev/replication-source";
/** On a replica node: the datasets it receives (`tank/db`, or `tank/db=backup/db` to receive under another name). */
export const REPLICA_ANNOTATION = "zcsi.dev/replication-replica";

export interface NodeInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

/** Lists the nodes labelled `zcsi.dev/replication=true`. Throws Unavailable when the API cannot be read. */
export interface NodeSource {
  listReplicationNodes(): Promise<NodeInfo[]>;
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

/** The label selector that NodeSource implementations use. */
export const REPLICATION_NODE_SELECTOR = `${REPLICATION_LABEL}=true`;
