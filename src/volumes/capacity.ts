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
