import { invalidArgument } from "../errors.js";

/**
 * The snapshot schedule of a volume, e.g. `hourly=24,daily=7,weekly=4`: which buckets to keep
 * and how many periods of each. One series of snapshots serves every bucket (a snapshot can
 * count as an hourly and a daily one); see retention.ts for the rule. docs/snapshots.md is the
 * user-facing description of this grammar.
 *
 *   schedule := "off" | "none" | bucket ("," bucket)*
 *   bucket   := name "=" count
 *   name     := "frequent" ["/" minutes "m"] | "hourly" | "daily" | "weekly" | "monthly" | "yearly"
 *   count    := 1..10000
 *   minutes  := a divisor of 60 below 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30); default 15
 *
 * Periods are UTC: frequent slots start at multiples of the interval past the hour, days at
 * 00:00, weeks on Monday (ISO 8601), months on the 1st, years on 1 January. Blanks around
 * tokens are allowed; the normal form (what is stored on the dataset) has none and lists the
 * buckets from finest to coarsest.
 */

export const BUCKET_NAMES = ["frequent", "hourly", "daily", "weekly", "monthly", "yearly"] as const;
export type BucketName = (typeof BUCKET_NAMES)[number];

export interface Bucket {
  readonly name: BucketName;
  /** How many periods of this bucket to keep a snapshot for. */
  readonly keep: number;
  /** Length of a `frequent` period in minutes (divides 60); absent for the calendar buckets. */
  readonly intervalMinutes?: number;
}

export interface RetentionPolicy {
  /** Finest first. Empty means `off`: the snapshotter neither takes nor prunes. */
  readonly buckets: readonly Bucket[];
}

export const MAX_KEEP = 10000;
export const DEFAULT_FREQUENT_MINUTES = 15;
const FREQUENT_MINUTES = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];
const MAX_POLICY_LENGTH = 256;

export const POLICY_OFF: RetentionPolicy = { buckets: [] };

const BUCKET = /^([a-z]+)(?:\/([0-9]+)m)?$/;

/**
 * Parses a schedule; throws InvalidArgument naming the part that is wrong, prefixed by `what`
 * (e.g. `parameter snapshotSchedule`), so a StorageClass author sees which token to fix.
 */
export function parsePolicy(text: string, what = "snapshot schedule"): RetentionPolicy {
  const fail = (why: string): never => {
    throw invalidArgument(`${what}=${JSON.stringify(text.length > 80 ? text.slice(0, 80) + "…" : text)}: ${why}`);
  };
  if (typeof text !== "string") return fail("must be a string");
  if (text.length > MAX_POLICY_LENGTH) return fail(`longer than ${MAX_POLICY_LENGTH} characters`);
  const trimmed = text.trim();
  if (trimmed === "") return fail('empty; give buckets such as "hourly=24,daily=7" or "off"');
  if (trimmed === "off" || trimmed === "none") return POLICY_OFF;
  const byName = new Map<BucketName, Bucket>();
  for (const rawPart of trimmed.split(",")) {
    const part = rawPart.trim();
    if (part === "") return fail('empty bucket (a doubled or trailing ",")');
    const eq = part.indexOf("=");
    if (eq < 0) return fail(`bucket ${JSON.stringify(part)} has no "=<count>"`);
    const rawName = part.slice(0, eq).trim();
    const rawCount = part.slice(eq + 1).trim();
    const m = BUCKET.exec(rawName);
    const name = m?.[1] as BucketName | undefined;
    if (!m || name === undefined || !(BUCKET_NAMES as readonly string[]).includes(name)) {
      return fail(`unknown bucket ${JSON.stringify(rawName)} in ${JSON.stringify(part)}; buckets are frequent[/<minutes>m], hourly, daily, weekly, monthly, yearly`);
    }
    const bucketName = name as BucketName;
    if (m[2] !== undefined && bucketName !== "frequent") return fail(`only frequent takes an interval, not ${JSON.stringify(rawName)}`);
    if (!/^[0-9]{1,6}$/.test(rawCount)) return fail(`count ${JSON.stringify(rawCount)} in ${JSON.stringify(part)} is not a whole number`);
    const keep = Number(rawCount);
    if (keep < 1 || keep > MAX_KEEP) return fail(`count ${keep} in ${JSON.stringify(part)} must be 1..${MAX_KEEP} (leave the bucket out to keep none)`);
    if (byName.has(bucketName)) return fail(`bucket ${bucketName} appears twice`);
    if (bucketName === "frequent") {
      const minutes = m[2] === undefined ? DEFAULT_FREQUENT_MINUTES : Number(m[2]);
      if (!FREQUENT_MINUTES.includes(minutes)) return fail(`frequent interval ${m[2]}m in ${JSON.stringify(part)} must divide the hour: one of ${FREQUENT_MINUTES.map((n) => `${n}m`).join(", ")}`);
      byName.set(bucketName, { name: bucketName, keep, intervalMinutes: minutes });
    } else {
      byName.set(bucketName, { name: bucketName, keep });
    }
  }
  return { buckets: BUCKET_NAMES.flatMap((n) => byName.get(n) ?? []) };
}

/** The normal form: `frequent/15m=4,hourly=24,daily=7`, or `off`. parsePolicy(formatPolicy(p)) equals p. */
export function formatPolicy(policy: RetentionPolicy): string {
  if (policy.buckets.length === 0) return "off";
  return policy.buckets.map((b) => (b.name === "frequent" ? `frequent/${b.intervalMinutes ?? DEFAULT_FREQUENT_MINUTES}m=${b.keep}` : `${b.name}=${b.keep}`)).join(",");
}

/** Validates and normalises in one step (the StorageClass parameter's normaliser). */
export function normalizePolicy(text: string, what?: string): string {
  return formatPolicy(parsePolicy(text, what));
}
