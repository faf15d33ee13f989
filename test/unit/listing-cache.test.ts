import { describe, expect, it } from "vitest";
import { ListingCache } from "../../src/csi/listing-cache.js";
import { decodeToken, encodeToken, page } from "../../src/csi/tokens.js";

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `id-${String(i).padStart(3, "0")}`);

/** A cache over plain string lists, with a clock the test moves and a counter of listings run. */
function fixture(options: { ttlMs?: number; maxListings?: number } = {}) {
  let now = 1_000_000;
  let generation = 0;
  let listings = 0;
  const cache = new ListingCache<string[], string>("volumes", (l) => l, (x) => x, {
    ...options,
    now: () => now,
    newGeneration: () => (++generation).toString(36),
  });
  const source = { entries: ids(10) };
  const list = async (): Promise<string[]> => {
    listings++;
    return [...source.entries];
  };
  return {
    cache,
    source,
    list,
    listings: () => listings,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    return (err as { kind?: string }).kind ?? String(err);
  }
}

describe("paging tokens", () => {
  it("round-trip the listing generation and the last id, and are opaque", () => {
    const token = encodeToken("snapshots", "k3f9", "alice:tank/k8s/pvc-1@snapshot-1");
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeToken("snapshots", token)).toEqual({ generation: "k3f9", lastId: "alice:tank/k8s/pvc-1@snapshot-1" });
  });
  it.each([
    "",
    "bogus!",
    "eA",
    "czI6",
    Buffer.from("s1:alice:tank/k8s/pvc-1@s").toString("base64url"), // a token of the zcsi before held listings
    Buffer.from("s2:abc").toString("base64url"), // no last id
    Buffer.from("s2::x").toString("base64url"), // no generation
    Buffer.from("s2:AB:x").toString("base64url"),
    Buffer.from("s2:ab:x").toString("base64") + "=",
  ])("a malformed token %j is ABORTED", (token) => {
    expect(() => decodeToken("snapshots", token)).toThrow(expect.objectContaining({ kind: "Aborted" }));
  });
  it("keep volume and snapshot tokens apart", () => {
    expect(() => decodeToken("volumes", encodeToken("snapshots", "1", "a"))).toThrow(expect.objectContaining({ kind: "Aborted" }));
    expect(decodeToken("volumes", encodeToken("volumes", "1", "a:b:c"))).toEqual({ generation: "1", lastId: "a:b:c" });
  });
  it("page after the last id, continuing only when more remain", () => {
    const all = ["a", "b", "c", "d", "e"];
    expect(page(all, (x) => x, 2, undefined)).toEqual({ page: ["a", "b"], continueAfter: "b" });
    expect(page(all, (x) => x, 2, "d")).toEqual({ page: ["e"], continueAfter: undefined });
    expect(page(all, (x) => x, 0, undefined)).toEqual({ page: all, continueAfter: undefined });
    // An id no longer listed shifts nothing: the page starts after where it was.
    expect(page(["a", "c", "d"], (x) => x, 2, "b").page).toEqual(["c", "d"]);
  });
  it("walk 10,000 entries in pages of 100 reading fewer ids than there are entries (no rescan per page)", () => {
    const all = Array.from({ length: 10_000 }, (_, i) => `vol-${String(i).padStart(5, "0")}`);
    let reads = 0;
    const id = (x: string): string => (reads++, x);
    const seen: string[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const p = page(all, id, 100, after);
      seen.push(...p.page);
      after = p.continueAfter;
      pages++;
    } while (after !== undefined);
    expect(pages).toBe(100);
    expect(seen).toEqual(all);
    // A binary search per page: ~100 × (log2 10,000 + 1) reads; a filter per page would read 1,000,000.
    expect(reads).toBeLessThan(all.length / 2);
  });
});

describe("held listings", () => {
  it("a walk of 10 entries in pages of 3 lists once and returns each entry once, in order", async () => {
    const f = fixture();
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const p = await f.cache.page({ maxEntries: 3, startingToken: token }, f.list);
      seen.push(...p.page);
      token = p.nextToken;
      pages++;
    } while (token !== "");
    expect(pages).toBe(4);
    expect(seen).toEqual(ids(10));
    expect(f.listings()).toBe(1);
    expect(f.cache.size).toBe(0); // the finished walk's listing is freed
  });

  it("serves later pages from the first page's listing, not from what was created since", async () => {
    const f = fixture();
    const first = await f.cache.page({ maxEntries: 4, startingToken: "" }, f.list);
    f.source.entries = [...ids(10), "id-005a"];
    const second = await f.cache.page({ maxEntries: 4, startingToken: first.nextToken }, f.list);
    expect(second.page).toEqual(["id-004", "id-005", "id-006", "id-007"]);
    expect(f.listings()).toBe(1);
  });

  it("holds nothing when the first page is the whole listing", async () => {
    const f = fixture();
    const all = await f.cache.page({ maxEntries: 0, startingToken: "" }, f.list);
    expect(all).toMatchObject({ page: ids(10), nextToken: "" });
    expect(f.cache.size).toBe(0);
  });

  it("a token whose listing expired is ABORTED, and runs no listing", async () => {
    const f = fixture({ ttlMs: 60_000 });
    const first = await f.cache.page({ maxEntries: 3, startingToken: "" }, f.list);
    f.advance(59_999);
    const second = await f.cache.page({ maxEntries: 3, startingToken: first.nextToken }, f.list);
    expect(second.page).toEqual(["id-003", "id-004", "id-005"]);
    f.advance(1); // 60 s after the listing was read, however recently a page was served
    expect(await code(f.cache.page({ maxEntries: 3, startingToken: second.nextToken }, f.list))).toBe("Aborted");
    expect(f.cache.size).toBe(0);
    expect(f.listings()).toBe(1);
  });

  it("holds at most maxListings: the oldest is evicted and its token ABORTED, the others go on", async () => {
    const f = fixture({ maxListings: 2 });
    const a = await f.cache.page({ maxEntries: 3, startingToken: "" }, f.list);
    const b = await f.cache.page({ maxEntries: 3, startingToken: "" }, f.list);
    const c = await f.cache.page({ maxEntries: 3, startingToken: "" }, f.list);
    expect(f.cache.size).toBe(2);
    expect(await code(f.cache.page({ maxEntries: 3, startingToken: a.nextToken }, f.list))).toBe("Aborted");
    expect((await f.cache.page({ maxEntries: 3, startingToken: b.nextToken }, f.list)).page).toEqual(["id-003", "id-004", "id-005"]);
    expect((await f.cache.page({ maxEntries: 3, startingToken: c.nextToken }, f.list)).page).toEqual(["id-003", "id-004", "id-005"]);
    expect(f.listings()).toBe(3);
  });

  it("a token from another listing continues that listing: two walks at once do not mix", async () => {
    const f = fixture();
    const one = await f.cache.page({ maxEntries: 5, startingToken: "" }, f.list);
    f.source.entries = ["x-1", "x-2", "x-3", "x-4", "x-5", "x-6"];
    const two = await f.cache.page({ maxEntries: 5, startingToken: "" }, f.list);
    expect(two.page).toEqual(["x-1", "x-2", "x-3", "x-4", "x-5"]);
    expect((await f.cache.page({ maxEntries: 5, startingToken: one.nextToken }, f.list)).page).toEqual(ids(10).slice(5));
    expect((await f.cache.page({ maxEntries: 5, startingToken: two.nextToken }, f.list)).page).toEqual(["x-6"]);
  });

  it("a token issued by another controller (or before a restart) is ABORTED", async () => {
    const f = fixture();
    const foreign = encodeToken("volumes", "zzzz", "id-002");
    expect(await code(f.cache.page({ maxEntries: 3, startingToken: foreign }, f.list))).toBe("Aborted");
    expect(f.listings()).toBe(0);
  });

  it("a token used with other filters than its listing's is ABORTED", async () => {
    const f = fixture();
    const first = await f.cache.page({ maxEntries: 3, startingToken: "" }, f.list, "source=a");
    expect(await code(f.cache.page({ maxEntries: 3, startingToken: first.nextToken }, f.list, "source=b"))).toBe("Aborted");
    expect((await f.cache.page({ maxEntries: 3, startingToken: first.nextToken }, f.list, "source=a")).page).toEqual(["id-003", "id-004", "id-005"]);
  });

  it("a malformed or other-kind token is ABORTED before any listing", async () => {
    const f = fixture();
    for (const token of ["bogus!", encodeToken("snapshots", "1", "id-001")]) {
      expect(await code(f.cache.page({ maxEntries: 3, startingToken: token }, f.list))).toBe("Aborted");
    }
    expect(f.listings()).toBe(0);
  });
});
