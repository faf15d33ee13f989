/**
 * Units zcsi reads from people (StorageClass parameters, flags) and writes back (annotations):
 * durations such as `1h30m` and byte rates such as `50Mi`. Pure; callers wrap a refusal in the
 * error that names their own field.
 */

const DURATION = /^([0-9]{1,7}[smhd])+$/;
const UNIT_SECONDS: Readonly<Record<string, number>> = { d: 86400, h: 3600, m: 60, s: 1 };
/** A Kubernetes-style quantity of bytes: `50Mi`, `10M`, `1Gi`, `500000`. */
const QUANTITY = /^([1-9][0-9]{0,12})(Ki|Mi|Gi|k|M|G)?$/;
const QUANTITY_UNIT: Readonly<Record<string, number>> = { "": 1, k: 1e3, M: 1e6, G: 1e9, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 };

/** `15m`, `1h30m`, `90s`, `1d` → seconds; undefined when the text is not a duration. */
export function durationSeconds(text: string): number | undefined {
  if (!DURATION.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/([0-9]+)([smhd])/g)) total += Number(m[1]) * (UNIT_SECONDS[m[2] ?? "s"] ?? 1);
  return total;
}

/** Seconds in the normal form `1d2h3m4s` (zero parts left out; `0s` for zero). */
export function formatDuration(seconds: number): string {
  let rest = Math.max(0, Math.floor(seconds));
  let out = "";
  for (const [unit, size] of Object.entries(UNIT_SECONDS)) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out === "" ? "0s" : out;
}

/** `50Mi` → 52428800; undefined when the text is not a positive whole quantity of bytes. */
export function quantityBytes(text: string): number | undefined {
  const m = QUANTITY.exec(text.trim());
  const bytes = m ? Number(m[1]) * (QUANTITY_UNIT[m[2] ?? ""] ?? NaN) : NaN;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
