import type { LeaseSpec, StoredLease } from "./lease.js";

/**
 * Leases by name in one namespace, used as records that exist while an operation runs (the
 * per-volume move lock, mobility/move-lock.ts): the API server's create is atomic, so of two
 * creators exactly one succeeds; replace and delete carry the resourceVersion that was read.
 * client.ts implements it with client-node; tests use it against the fake API server.
 */
export interface NamedLeases {
  readonly namespace: string;
  /** Undefined when there is no such Lease (404). */
  get(name: string): Promise<StoredLease | undefined>;
  /** AlreadyExists (HTTP 409) when a Lease of that name exists. */
  create(name: string, spec: LeaseSpec, annotations: Readonly<Record<string, string>>, labels?: Readonly<Record<string, string>>): Promise<StoredLease>;
  /** Aborted (HTTP 409) when it changed since `current` was read; NotFound when it is gone. */
  replace(current: StoredLease, spec: LeaseSpec, annotations: Readonly<Record<string, string>>): Promise<StoredLease>;
  /** Deletes it if it is still `current` (precondition on resourceVersion): false when it was gone; Aborted when it changed. */
  delete(current: StoredLease): Promise<boolean>;
}
