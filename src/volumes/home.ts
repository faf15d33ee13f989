import { FIRST_EPOCH, type Role } from "./properties.js";

/**
 * Where a volume is served from, decided from what its copies say about themselves (pure: the
 * copies are read by homes.ts). ARCHITECTURE, "Where a volume lives": every copy carries the
 * volume's identity, its role and an epoch that each promotion increments; the home is the
 * primary with the highest epoch among reachable copies. Never guessed: two live primaries at
 * the newest epoch is a split brain, and no home.
 */

/** What one dataset says about itself: its own (local or received) zcsi values and readonly. */
export interface CopyFacts {
  readonly host: string;
  readonly dataset: string;
  readonly csiName?: string | undefined;
  readonly volume?: string | undefined;
  readonly role?: string | undefined;
  readonly epoch?: string | undefined;
  readonly replicaOf?: string | undefined;
  readonly fenced?: string | undefined;
  readonly moving?: string | undefined;
  readonly readonly: boolean;
  readonly mountpoint?: string | undefined;
}

/** A copy of the volume, classified. */
export interface Copy {
  readonly host: string;
  readonly dataset: string;
  readonly role: Role;
  readonly epoch: number;
  /** The volume id the copy belongs to. */
  readonly identity: string;
  readonly readonly: boolean;
  /** zcsi:fenced: why it was fenced, when it was. */
  readonly fenced?: string;
  /** zcsi:moving: a planned move blocks this copy's attaches (`<target>@<time>`). */
  readonly moving?: string;
  readonly mountpoint: string;
}

/** A stale primary: it lost its home to a newer epoch (or was fenced already). */
export interface StaleCopy extends Copy {
  /** Why it is stale (the value its zcsi:fenced gets). */
  readonly reason: string;
  /** Not yet both readonly=on and marked zcsi:fenced: the caller fences it. */
  readonly needsFence: boolean;
}

export interface HomeDecision {
  readonly home?: Copy;
  /** The unfenced primaries at the newest epoch: the home when it is alone, a split brain when not. */
  readonly live: readonly Copy[];
  readonly stale: readonly StaleCopy[];
  readonly replicas: readonly Copy[];
  /** Hosts that could not be asked, with why: their copies are unknown, never called stale. */
  readonly unknown: readonly { readonly host: string; readonly reason: string }[];
  /** Why there is no home, or what else is wrong (split brain, unreadable role or epoch). */
  readonly problems: readonly string[];
}

const EPOCH = /^[1-9][0-9]{0,14}$/;

/** `<host>:<dataset>`, as in volume ids and zcsi:replica-of. */
export function copyName(c: { readonly host: string; readonly dataset: string }): string {
  return `${c.host}:${c.dataset}`;
}

/**
 * Whether a dataset is a copy of `volumeId` (born as `birth`), and which: a copy carrying
 * zcsi:volume is identified by it; one carrying none predates roles, and is the volume on its
 * birth host or a replica whose zcsi:replica-of names the birth dataset. A copy with no
 * zcsi:role is a replica when it has zcsi:replica-of, else the primary; with no zcsi:epoch,
 * epoch 1. `undefined`: not a copy of this volume; `{ problem }`: a copy whose role or epoch
 * cannot be read (it blocks a decision rather than being ignored).
 */
export function classifyCopy(volumeId: string, birth: { readonly host: string; readonly dataset: string }, facts: CopyFacts): Copy | { readonly problem: string } | undefined {
  const name = copyName(facts);
  if (facts.volume !== undefined) {
    if (facts.volume !== volumeId) return undefined;
  } else if (facts.replicaOf !== undefined) {
    if (facts.replicaOf !== copyName(birth)) return undefined;
  } else if (facts.host !== birth.host || facts.dataset !== birth.dataset || facts.csiName === undefined) {
    return undefined;
  }
  const role = facts.role ?? (facts.replicaOf !== undefined ? "replica" : "primary");
  if (role !== "primary" && role !== "replica") return { problem: `copy ${name} of ${volumeId} has zcsi:role=${JSON.stringify(role)}, neither primary nor replica` };
  if (facts.epoch !== undefined && !EPOCH.test(facts.epoch)) return { problem: `copy ${name} of ${volumeId} has zcsi:epoch=${JSON.stringify(facts.epoch)}, not a positive integer` };
  return {
    host: facts.host,
    dataset: facts.dataset,
    role,
    epoch: facts.epoch === undefined ? FIRST_EPOCH : Number(facts.epoch),
    identity: volumeId,
    readonly: facts.readonly,
    ...(facts.fenced !== undefined && { fenced: facts.fenced }),
    ...(facts.moving !== undefined && { moving: facts.moving }),
    mountpoint: facts.mountpoint ?? "",
  };
}

const byName = (a: Copy, b: Copy): number => (copyName(a) < copyName(b) ? -1 : copyName(a) > copyName(b) ? 1 : 0);

/**
 * The decision. The newest epoch is the highest any reachable copy carries, replicas
 * included: a replica at epoch 2 proves a promotion happened, so a primary at epoch 1 is stale
 * even while the epoch-2 primary is unreachable. A primary is stale when it is fenced or
 * older than the newest epoch; the home is the one primary left, if exactly one is.
 * `problems` is non-empty whenever there is no home (besides no copy at all).
 */
export function decideHome(volumeId: string, classified: readonly (Copy | { readonly problem: string })[], unknown: readonly { readonly host: string; readonly reason: string }[] = []): HomeDecision {
  const problems = classified.flatMap((c) => ("problem" in c ? [c.problem] : []));
  const copies = classified.flatMap((c) => ("problem" in c ? [] : [c])).sort(byName);
  const replicas = copies.filter((c) => c.role === "replica");
  const primaries = copies.filter((c) => c.role === "primary");
  const newest = Math.max(0, ...copies.map((c) => c.epoch));
  const carrier = primaries.find((c) => c.epoch === newest && c.fenced === undefined) ?? copies.find((c) => c.epoch === newest);
  const stale: StaleCopy[] = [];
  const live: Copy[] = [];
  for (const p of primaries) {
    if (p.fenced !== undefined) stale.push({ ...p, reason: p.fenced, needsFence: !p.readonly });
    else if (p.epoch < newest) stale.push({ ...p, reason: `superseded by epoch ${newest} on ${carrier ? copyName(carrier) : "?"}`, needsFence: true });
    else live.push(p);
  }
  const unreachable = unknown.length > 0 ? ` (not reachable: ${unknown.map((u) => u.host).join(", ")})` : "";
  if (live.length > 1) problems.push(`split brain: ${live.map(copyName).join(" and ")} are all primary at epoch ${newest}; no home until an operator resolves it`);
  else if (live.length === 0 && copies.length > 0) problems.push(`no live primary of ${volumeId} among reachable copies at epoch ${newest}${unreachable}`);
  const home = problems.length === 0 && live.length === 1 ? live[0] : undefined;
  return { ...(home && { home }), live, stale, replicas, unknown: [...unknown], problems };
}
