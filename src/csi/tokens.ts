import { aborted } from "../errors.js";

/**
 * Paging tokens (ListVolumes, ListSnapshots) are opaque to callers: base64url of
 * `<kind>:<listing generation>:<id of the last entry returned>`. The generation names the
 * listing the first page read (ListingCache holds it briefly), so the later pages come from that
 * one listing instead of listing everything again; the next page starts after the id in id
 * order. The kind keeps a ListVolumes token from being accepted by ListSnapshots and vice versa.
 */
export type TokenKind = "volumes" | "snapshots";

/** `v2`/`s2`: tokens since listings are held; a `v1:`/`s1:` token of an older zcsi is not ours any more (ABORTED, like any token we cannot use). */
const PREFIX: Record<TokenKind, string> = { volumes: "v2:", snapshots: "s2:" };

/** What ListingCache issues: short lowercase hex or base36, never a colon. */
const GENERATION = /^[0-9a-z]{1,32}$/;

export interface TokenPosition {
  /** The listing the token continues. */
  readonly generation: string;
  /** The id of the last entry already returned. */
  readonly lastId: string;
}

export function encodeToken(kind: TokenKind, generation: string, lastId: string): string {
  if (!GENERATION.test(generation)) throw new Error(`listing generation ${JSON.stringify(generation)} is not [0-9a-z]{1,32}`);
  return Buffer.from(`${PREFIX[kind]}${generation}:${lastId}`, "utf8").toString("base64url");
}

/** CSI spec, ListVolumes/ListSnapshots: a `starting_token` the plugin cannot use → ABORTED. */
export function decodeToken(kind: TokenKind, token: string): TokenPosition {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  const prefix = PREFIX[kind];
  const colon = text.indexOf(":", prefix.length);
  const generation = colon < 0 ? "" : text.slice(prefix.length, colon);
  const lastId = colon < 0 ? "" : text.slice(colon + 1);
  if (!text.startsWith(prefix) || !GENERATION.test(generation) || lastId === "" || Buffer.from(text, "utf8").toString("base64url") !== token) {
    throw aborted(`starting_token ${JSON.stringify(token.length > 80 ? token.slice(0, 80) + "…" : token)} is not a ${kind} token zcsi issued`);
  }
  return { generation, lastId };
}

/**
 * One page of `entries` (sorted by `id`) after `after` (undefined: from the start): at most
 * `maxEntries` (0 = all), and the id to continue after, undefined when this page is the last.
 * The start is found by binary search and only the page is copied, so a walk of a held listing
 * of n entries in pages of p costs O(n + (n/p)·log n), not O(n²/p) (10,000 volumes in pages of
 * 100 would otherwise filter and copy the listing 100 times).
 */
export function page<T>(entries: readonly T[], id: (entry: T) => string, maxEntries: number, after: string | undefined): { page: T[]; continueAfter: string | undefined } {
  const start = after === undefined ? 0 : firstAfter(entries, id, after);
  const end = maxEntries > 0 ? Math.min(entries.length, start + maxEntries) : entries.length;
  const slice = entries.slice(start, end);
  const last = slice[slice.length - 1];
  return { page: slice, continueAfter: last !== undefined && end < entries.length ? id(last) : undefined };
}

/** The index of the first entry whose id sorts after `after` (entries.length when none does). */
function firstAfter<T>(entries: readonly T[], id: (entry: T) => string, after: string): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (id(entries[mid] as T) > after) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
