import { aborted } from "../errors.js";

/**
 * Paging tokens (ListVolumes, ListSnapshots) are opaque to callers: base64url of
 * `<kind>:<id of the last entry returned>`. The next page starts after that id in id order,
 * so entries created or deleted between pages neither repeat nor shift the rest. The kind
 * keeps a ListVolumes token from being accepted by ListSnapshots and vice versa.
 */
export type TokenKind = "volumes" | "snapshots";

const PREFIX: Record<TokenKind, string> = { volumes: "v1:", snapshots: "s1:" };

export function encodeToken(kind: TokenKind, lastId: string): string {
  return Buffer.from(`${PREFIX[kind]}${lastId}`, "utf8").toString("base64url");
}

/** CSI spec, ListVolumes/ListSnapshots: a `starting_token` the plugin cannot use → ABORTED. */
export function decodeToken(kind: TokenKind, token: string): string {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  const prefix = PREFIX[kind];
  if (!text.startsWith(prefix) || text.length <= prefix.length || Buffer.from(text, "utf8").toString("base64url") !== token) {
    throw aborted(`starting_token ${JSON.stringify(token.length > 80 ? token.slice(0, 80) + "…" : token)} is not a ${kind} token zcsi issued`);
  }
  return text.slice(prefix.length);
}

/**
 * One page of `entries` (sorted by `id`) after the token's id: at most `maxEntries` (0 = all),
 * and the token for the next page, "" when this page is the last.
 */
export function page<T>(entries: readonly T[], id: (entry: T) => string, kind: TokenKind, maxEntries: number, startingToken: string): { page: T[]; nextToken: string } {
  const after = startingToken ? decodeToken(kind, startingToken) : undefined;
  const rest = after === undefined ? entries : entries.filter((e) => id(e) > after);
  const slice = maxEntries > 0 ? rest.slice(0, maxEntries) : [...rest];
  const last = slice[slice.length - 1];
  return { page: slice, nextToken: last !== undefined && rest.length > slice.length ? encodeToken(kind, id(last)) : "" };
}
