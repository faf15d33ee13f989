import { invalidArgument, outOfRange } from "../errors.js";

/** ZFS refuses a quota below what a fresh dataset already uses; 1 MiB is a safe floor. */
export const MIN_VOLUME_BYTES = 1n << 20n;

export interface CapacityRangeInput {
  readonly requiredBytes?: string | number | null;
  readonly limitBytes?: string | number | null;
}

function bytes(value: string | number | null | undefined, field: string): bigint {
  if (value === undefined || value === null || value === "") return 0n;
  const text = String(value);
  if (!/^-?[0-9]+$/.test(text)) throw invalidArgument(`capacity_range.${field} must be an integer`);
  const n = BigInt(text);
  if (n < 0n) throw invalidArgument(`capacity_range.${field} must not be negative`);
  return n;
}

/**
 * The size a volume gets for a capacity_range (CSI spec, CapacityRange): at least
 * required_bytes, at most limit_bytes; with neither, the configured default (capped by the
 * limit). Sizes below MIN_VOLUME_BYTES are rounded up to it when the limit allows.
 */
export function resolveCapacity(range: CapacityRangeInput | null | undefined, defaultBytes: bigint): bigint {
  const required = bytes(range?.requiredBytes, "required_bytes");
  const limit = bytes(range?.limitBytes, "limit_bytes");
  if (limit > 0n && required > limit) throw outOfRange(`capacity_range: required_bytes ${required} exceeds limit_bytes ${limit}`);
  let size = required > 0n ? required : defaultBytes;
  if (limit > 0n && size > limit) size = limit;
  if (size < MIN_VOLUME_BYTES) size = MIN_VOLUME_BYTES;
  if (limit > 0n && size > limit) throw outOfRange(`capacity_range: limit_bytes ${limit} is below the smallest volume zcsi makes (${MIN_VOLUME_BYTES} bytes)`);
  return size;
}

/** Whether an existing volume of `size` satisfies a retried request's capacity_range. */
export function capacityFits(size: bigint, range: CapacityRangeInput | null | undefined): boolean {
  const required = bytes(range?.requiredBytes, "required_bytes");
  const limit = bytes(range?.limitBytes, "limit_bytes");
  return size >= required && (limit === 0n || size <= limit);
}

/**
 * The size of a volume made from a snapshot or another volume, which must hold `contentBytes`
 * (the snapshot's size_bytes, or what the source volume references). Asked for less
 * (required_bytes or limit_bytes below it) → OUT_OF_RANGE; asked for more → the larger size,
 * which becomes the new volume's quota. With no required_bytes, the larger of `defaultBytes`
 * and the content, capped by limit_bytes.
 */
export function resolveRestoreCapacity(range: CapacityRangeInput | null | undefined, defaultBytes: bigint, contentBytes: bigint, what: string): bigint {
  const required = bytes(range?.requiredBytes, "required_bytes");
  const limit = bytes(range?.limitBytes, "limit_bytes");
  if (required > 0n && required < contentBytes) throw outOfRange(`capacity_range: required_bytes ${required} is smaller than ${what} (${contentBytes} bytes)`);
  if (limit > 0n && limit < contentBytes) throw outOfRange(`capacity_range: limit_bytes ${limit} is smaller than ${what} (${contentBytes} bytes)`);
  // Both bounds are at least the content now, so the result is too.
  return resolveCapacity(range, defaultBytes > contentBytes ? defaultBytes : contentBytes);
}
