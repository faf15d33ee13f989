import { resourceExhausted } from "../errors.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import type { PoolHost } from "./hosts.js";

/**
 * Which nodes a volume is published to (ControllerPublishVolume), recorded on the dataset that
 * serves it: no Kubernetes object is the source of truth (ARCHITECTURE, "Where a volume lives").
 *
 * The property holds `<node>:<mode>[:ro]` entries sorted by node, comma-separated, e.g.
 * `worker-1:snmw,worker-2:mnro:ro`, written with one `zfs set` (or removed with `zfs inherit`
 * when the last publication goes). Modes are short codes of the CSI access modes, so that a
 * volume published to a few hundred nodes stays below the 8192-byte limit of a user property.
 */
export const PUBLISHED_TO_PROPERTY = "zcsi:published-to";

/** CSI VolumeCapability.AccessMode.Mode names (csi.proto) that a publication can carry. */
export type PublishedMode =
  | "SINGLE_NODE_WRITER"
  | "SINGLE_NODE_READER_ONLY"
  | "MULTI_NODE_READER_ONLY"
  | "MULTI_NODE_SINGLE_WRITER"
  | "MULTI_NODE_MULTI_WRITER"
  | "SINGLE_NODE_SINGLE_WRITER"
  | "SINGLE_NODE_MULTI_WRITER";

const MODE_CODES: Readonly<Record<PublishedMode, string>> = {
  SINGLE_NODE_WRITER: "snw",
  SINGLE_NODE_READER_ONLY: "snro",
  MULTI_NODE_READER_ONLY: "mnro",
  MULTI_NODE_SINGLE_WRITER: "mnsw",
  MULTI_NODE_MULTI_WRITER: "mnmw",
  SINGLE_NODE_SINGLE_WRITER: "snsw",
  SINGLE_NODE_MULTI_WRITER: "snmw",
};
const MODES_BY_CODE = new Map(Object.entries(MODE_CODES).map(([mode, code]) => [code, mode as PublishedMode]));

export function isPublishedMode(mode: string): mode is PublishedMode {
  return Object.hasOwn(MODE_CODES, mode);
}

/**
 * Node ids as zcsi's node plugin accepts them (the Kubernetes node name; roles/node.ts): no
 * `,` or `:`, so they cannot break the record's format.
 */
export const NODE_ID = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$/;

export interface Publication {
  readonly node: string;
  readonly mode: PublishedMode;
  /** ControllerPublishVolume's readonly flag. */
  readonly readonly: boolean;
}

/** The record's text for a set of publications (sorted by node); "" for none. */
export function formatPublications(publications: readonly Publication[]): string {
  return [...publications]
    .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
    .map((p) => `${p.node}:${MODE_CODES[p.mode]}${p.readonly ? ":ro" : ""}`)
    .join(",");
}

/**
 * The publications a record holds. An entry that is not in the format (edited by hand) is
 * returned in `unreadable`, and kept as it is when the record is written again: zcsi does not
 * drop what it cannot read.
 */
export function parsePublications(text: string | undefined): { publications: Publication[]; unreadable: string[] } {
  const publications: Publication[] = [];
  const unreadable: string[] = [];
  for (const entry of (text ?? "").split(",")) {
    if (entry === "") continue;
    const [node = "", code = "", flag, ...rest] = entry.split(":");
    const mode = MODES_BY_CODE.get(code);
    if (!NODE_ID.test(node) || !mode || (flag !== undefined && flag !== "ro") || rest.length > 0) {
      unreadable.push(entry);
      continue;
    }
    publications.push({ node, mode, readonly: flag === "ro" });
  }
  return { publications, unreadable };
}

export interface PublicationRecord {
  readonly publications: Publication[];
  readonly unreadable: string[];
}

/** The record on a dataset (one `zfs get`). A dataset that is gone reads as no publications. */
export async function readPublications(host: PoolHost, dataset: string, property = PUBLISHED_TO_PROPERTY): Promise<PublicationRecord> {
  const props = (await host.zfs.get([dataset], [property], { missingOk: true })).get(dataset);
  return parsePublications(ownUserPropertyValue(props?.get(property)));
}

/** Writes the record: one `zfs set`, or one `zfs inherit` (removing the property) when it is empty. */
export async function writePublications(host: PoolHost, dataset: string, record: PublicationRecord, property = PUBLISHED_TO_PROPERTY): Promise<void> {
  const text = [formatPublications(record.publications), ...record.unreadable].filter((t) => t !== "").join(",");
  if (text === "") {
    await host.zfs.inherit(dataset, property);
    return;
  }
  if (Buffer.byteLength(text, "utf8") > 8192) {
    throw resourceExhausted(`dataset ${dataset} cannot record more publications (${record.publications.length} nodes fill its ${property} property)`);
  }
  await host.zfs.set(dataset, { [property]: text });
}
