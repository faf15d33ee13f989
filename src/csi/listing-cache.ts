import { randomBytes } from "node:crypto";
import { aborted } from "../errors.js";
import { decodeToken, encodeToken, page, type TokenKind } from "./tokens.js";

/** How long a listing serves the pages after its first: long enough for a walk, short enough that a page is never far behind ZFS. */
export const LISTING_TTL_MS = 60_000;
/** Listings held at once; the oldest goes first. A few walkers (provisioner, health monitor, an operator) at a time. */
export const MAX_LISTINGS = 4;

export interface ListingCacheOptions {
  readonly ttlMs?: number;
  readonly maxListings?: number;
  /** ms since the epoch; tests inject a clock. */
  readonly now?: () => number;
  /** A new listing generation ([0-9a-z]{1,32}); random by default, so a token survives no restart of the controller. */
  readonly newGeneration?: () => string;
}

export interface ListingPage<L, T> {
  readonly listing: L;
  readonly page: T[];
  readonly nextToken: string;
}

interface Held<L> {
  readonly listing: L;
  /** The request's filter: a token continues only the query it was issued for. */
  readonly query: string;
  readonly listedAt: number;
}

/**
 * Paged listings that do not repeat. A walk's first page (no starting_token) runs the listing
 * (one `zfs get` per host) and, when more pages remain, holds it under a new generation that
 * the next_token carries; the later pages are cut from the held listing, running no command.
 * So a walk of P pages costs one listing, not P. A held listing lives `ttlMs` from when it was
 * read (a page is never older than that) and at most `maxListings` are held (the oldest is
 * evicted); it is dropped once its last page is served. A token whose listing is gone is
 * ABORTED: the CSI spec's answer to a starting_token the plugin cannot use, and the
 * caller's cue to restart the walk (a malformed token is ABORTED as well, before any command).
 */
export class ListingCache<L, T> {
  private readonly held = new Map<string, Held<L>>();
  private readonly ttlMs: number;
  private readonly maxListings: number;
  private readonly now: () => number;
  private readonly newGeneration: () => string;

  constructor(
    private readonly kind: TokenKind,
    private readonly entriesOf: (listing: L) => readonly T[],
    private readonly idOf: (entry: T) => string,
    options: ListingCacheOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? LISTING_TTL_MS;
    this.maxListings = Math.max(1, options.maxListings ?? MAX_LISTINGS);
    this.now = options.now ?? Date.now;
    this.newGeneration = options.newGeneration ?? (() => randomBytes(8).toString("hex"));
  }

  /** Listings held now (for tests and the memory bound). */
  get size(): number {
    this.expire();
    return this.held.size;
  }

  /**
   * One page: `maxEntries` at most (0 = all) after the token's position, from the listing the
   * token names, or from a new `list()` when there is no token. `query` is the request's
   * filter; a token used with another filter is ABORTED.
   */
  async page(request: { readonly maxEntries: number; readonly startingToken: string }, list: () => Promise<L>, query = ""): Promise<ListingPage<L, T>> {
    this.expire();
    if (request.startingToken === "") {
      const listing = await list();
      const first = page(this.entriesOf(listing), this.idOf, request.maxEntries, undefined);
      if (first.continueAfter === undefined) return { listing, page: first.page, nextToken: "" };
      const generation = this.hold(listing, query);
      return { listing, page: first.page, nextToken: encodeToken(this.kind, generation, first.continueAfter) };
    }
    const position = decodeToken(this.kind, request.startingToken);
    const held = this.held.get(position.generation);
    if (!held) {
      throw aborted(
        `starting_token continues a ${this.kind} listing that is no longer held (listings are kept ${Math.round(this.ttlMs / 1000)} s, at most ${this.maxListings} at once); start again without a starting_token`,
      );
    }
    if (held.query !== query) throw aborted(`starting_token was issued for a ${this.kind} listing with other filters; start again without a starting_token`);
    const next = page(this.entriesOf(held.listing), this.idOf, request.maxEntries, position.lastId);
    if (next.continueAfter === undefined) {
      this.held.delete(position.generation); // the walk is done: free its memory now
      return { listing: held.listing, page: next.page, nextToken: "" };
    }
    return { listing: held.listing, page: next.page, nextToken: encodeToken(this.kind, position.generation, next.continueAfter) };
  }

  private hold(listing: L, query: string): string {
    let generation = this.newGeneration();
    while (this.held.has(generation)) generation = this.newGeneration();
    // Map keeps insertion order: the first key is the oldest listing.
    while (this.held.size >= this.maxListings) {
      const oldest = this.held.keys().next().value;
      if (oldest === undefined) break;
      this.held.delete(oldest);
    }
    this.held.set(generation, { listing, query, listedAt: this.now() });
    return generation;
  }

  private expire(): void {
    const now = this.now();
    for (const [generation, held] of this.held) if (now - held.listedAt >= this.ttlMs) this.held.delete(generation);
  }
}
