import { createHash } from "node:crypto";
import type { ServerHostKeyAlgorithm } from "ssh2";
import { invalidArgument } from "../errors.js";

/** A pinned host key: what the server must present, and its fingerprint for messages. */
export interface PinnedKey {
  readonly type: string;
  readonly blob: Buffer;
  readonly fingerprint: string;
}

/** OpenSSH's fingerprint form (`ssh-keygen -l`): `SHA256:` + unpadded base64 of the key blob's SHA-256. */
export function fingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** The algorithm name inside an SSH public key blob (RFC 4253 §6.6: a length-prefixed string first). */
export function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  return length > 0 && length < 64 && blob.length >= 4 + length ? blob.subarray(4, 4 + length).toString("latin1") : undefined;
}

// The server presents one host key, picked from the algorithms the client offers. Offering
// only the pinned keys' algorithms makes a server with several key types present the pinned one.
const HOST_KEY_ALGORITHMS: Readonly<Record<string, readonly ServerHostKeyAlgorithm[]>> = {
  "ssh-ed25519": ["ssh-ed25519"],
  "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
  "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
  "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
};

/** `ssh-ed25519 AAAA... comment` → the pinned key; anything else is a configuration error. */
export function parseHostKey(line: string, host: string): PinnedKey {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? "", "base64");
  const type = blobType(blob);
  if (type === undefined || HOST_KEY_ALGORITHMS[type] === undefined) {
    throw invalidArgument(`${host}: pinned host key ${JSON.stringify(line.slice(0, 40))}... is not an ed25519, ecdsa or rsa public key line`);
  }
  return { type, blob, fingerprint: fingerprint(blob) };
}

/** The host key algorithms to offer: exactly those of the pinned keys. */
export function hostKeyAlgorithms(pinned: readonly PinnedKey[]): ServerHostKeyAlgorithm[] {
  return [...new Set(pinned.flatMap((k) => HOST_KEY_ALGORITHMS[k.type] ?? []))];
}

/** "expected ssh-ed25519 SHA256:… , server presented …": what an operator compares with `ssh-keygen -lf`. */
export function hostKeyMismatch(pinned: readonly PinnedKey[], presented: Buffer): string {
  const expected = pinned.map((k) => `${k.type} ${k.fingerprint}`).join(" or ");
  return (
    `host key mismatch: expected ${expected}, server presented ${blobType(presented) ?? "unknown"} ${fingerprint(presented)}; ` +
    "refusing to connect (if the host was re-keyed on purpose, update hostKeys in the pool host config)"
  );
}
