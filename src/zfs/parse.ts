import { internal } from "../errors.js";
import { GET_COLUMNS } from "./argv.js";

/**
 * Parsers for `-H` output: one record per line, fields separated by a single tab
 * (zfs-get(8), zfs-list(8): "-H Used for scripting mode. Do not print headers and separate
 * fields by a single tab instead of arbitrary white space"). A trailing newline is normal; any
 * line with the wrong number of fields is an error carrying the line, never silently skipped.
 */

export interface PropertyValue {
  readonly value: string;
  /** `local`, `default`, `inherited from <dataset>`, `received`, `temporary`, or `-` (read-only/unset user property). */
  readonly source: string;
}

/** property → {value, source} of one dataset. */
export type DatasetProperties = Map<string, PropertyValue>;
/** dataset → property → {value, source}, in the order zfs printed them. */
export type PropertyMap = Map<string, DatasetProperties>;

function recordLines(stdout: string): string[] {
  const body = stdout.endsWith("\n") ? stdout.slice(0, -1) : stdout;
  if (body.length === 0) return [];
  return body.split("\n").map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

function fields(line: string, count: number, what: string): string[] {
  const parts = line.split("\t");
  if (parts.length !== count) {
    throw internal(`unexpected ${what} output: expected ${count} tab-separated fields, got ${parts.length} in line ${JSON.stringify(line)}`);
  }
  return parts;
}

/**
 * A copy of `text` that does not refer to the string it was cut from. V8 makes a substring of
 * 13 or more characters a view of its parent (a "sliced string"), which keeps the whole parent
 * alive: one dataset name kept from a 10 MB listing kept all 10 MB. Concatenating and cutting
 * again flattens into a new string of the substring's length (measured in bench/listing-memory.ts).
 */
function detached(text: string): string {
  return text.length < 13 ? text : (" " + text).slice(1);
}

/**
 * Output of `zfs get -H[p] -o name,property,value,source ...`.
 *
 * A listing of 10,000 volumes is ~190,000 lines (~10 MB); splitting it into line and field
 * arrays made ~1 million short-lived strings and arrays, and kept a string and a
 * {value, source} object per line: the bulk of the controller's and the snapshotter's peak
 * memory (issue 17, item 5; bench/listing-memory.ts). So the output is scanned in place: a
 * dataset's name is cut once for all its lines, property names and sources (a handful of
 * distinct ones) and repeated values are shared, and so is the {value, source} object of a
 * repeated pair (`-`/`-`, `0`/`default`, …). PropertyValues are read-only: sharing is safe.
 * What is kept is copied out of the output (see `detached`), so a listing held afterwards
 * (VolumeService's last listing, a held page listing) does not keep the whole output alive.
 */
export function parseGet(stdout: string): PropertyMap {
  const result: PropertyMap = new Map();
  const end = stdout.endsWith("\n") ? stdout.length - 1 : stdout.length;
  if (end === 0) return result;
  const shared = new Map<string, string>();
  const share = (from: number, to: number): string => {
    const text = stdout.slice(from, to);
    const known = shared.get(text);
    if (known !== undefined) return known;
    const own = detached(text);
    shared.set(own, own);
    return own;
  };
  const pairs = new Map<string, Map<string, PropertyValue>>();
  const pair = (value: string, source: string): PropertyValue => {
    let bySource = pairs.get(value);
    if (bySource === undefined) pairs.set(value, (bySource = new Map()));
    let entry = bySource.get(source);
    if (entry === undefined) bySource.set(source, (entry = { value, source }));
    return entry;
  };
  // The property names in the order the previous dataset printed them: zfs prints the same order for each.
  const order: string[] = [];
  let name = "";
  let props: DatasetProperties | undefined;
  let index = 0;
  const at = (text: string, from: number, to: number): boolean => to - from === text.length && stdout.startsWith(text, from);
  for (let start = 0; start <= end; ) {
    const newline = stdout.indexOf("\n", start);
    const stop = newline < 0 || newline > end ? end : newline;
    const lineEnd = stop > start && stdout.charCodeAt(stop - 1) === 13 ? stop - 1 : stop;
    const t1 = stdout.indexOf("\t", start);
    const t2 = t1 < 0 ? -1 : stdout.indexOf("\t", t1 + 1);
    const t3 = t2 < 0 ? -1 : stdout.indexOf("\t", t2 + 1);
    const t4 = t3 < 0 ? -1 : stdout.indexOf("\t", t3 + 1);
    if (t1 < 0 || t1 >= lineEnd || t2 >= lineEnd || t3 < 0 || t3 >= lineEnd || (t4 >= 0 && t4 < lineEnd)) {
      fields(stdout.slice(start, lineEnd), GET_COLUMNS.length, "zfs get"); // throws, naming the line
    }
    if (t1 === start || t2 === t1 + 1) throw internal(`unexpected zfs get output: empty name or property in line ${JSON.stringify(stdout.slice(start, lineEnd))}`);
    if (props === undefined || !at(name, start, t1)) {
      name = detached(stdout.slice(start, t1));
      props = result.get(name);
      if (props === undefined) result.set(name, (props = new Map()));
      index = 0;
    }
    const expected = order[index];
    const property = expected !== undefined && at(expected, t1 + 1, t2) ? expected : (order[index] = share(t1 + 1, t2));
    index += 1;
    props.set(property, pair(share(t2 + 1, t3), share(t3 + 1, lineEnd)));
    start = stop + 1;
  }
  return result;
}

/** Output of `zfs list -H -o <columns>` / `zpool list -H -o <columns>`: one record per row. */
export function parseRows(stdout: string, columns: readonly string[], what = "zfs list"): Array<Record<string, string>> {
  if (columns.length === 0) throw internal(`${what}: no columns requested`);
  return recordLines(stdout).map((line) => {
    const parts = fields(line, columns.length, what);
    const row: Record<string, string> = {};
    columns.forEach((c, i) => {
      row[c] = parts[i] ?? "";
    });
    return row;
  });
}

/**
 * An exact byte count or other integer from `-p` output. zfs-fuse without -p prints human
 * sizes such as `9.89M`, which are rounded and therefore refused here: numbers come from
 * `zfs get -Hp` only.
 */
export function parseExactInteger(value: string, what = "value"): bigint {
  if (!/^[0-9]+$/.test(value)) throw internal(`expected an exact integer for ${what}, got ${JSON.stringify(value)} (human-readable output? use zfs get -Hp)`);
  return BigInt(value);
}

/**
 * Like parseExactInteger, but `-` (not applicable, e.g. `available` of a snapshot) and `none`
 * become null. Note that `-p` prints an unset quota as `0` (measured on zfs-fuse), not `none`.
 */
export function parseOptionalInteger(value: string, what = "value"): bigint | null {
  if (value === "-" || value === "none" || value === "") return null;
  return parseExactInteger(value, what);
}

/**
 * A value that says "nothing here": `-` (zfs's "not applicable", and an unset user property's
 * value) or empty (a user property set to ""; zcsi never writes one on purpose).
 */
function meaningful(value: string | undefined): string | undefined {
  return value === undefined || value === "-" || value === "" ? undefined : value;
}

/**
 * Which property sources count as zcsi's own: `local` only. Everything zcsi writes is local
 * (`zfs create -o`, `zfs set`, `zfs snapshot -o`, `zfs receive -o`). An inherited value belongs
 * to an ancestor (measured: a child shows `zcsi:name pvc-1 inherited from zrec/k8s`, a snapshot
 * shows its dataset's value), and a `received` one was written by some other host about the
 * dataset a stream came from (`zfs send -p`; zcsi never sends properties): on a replica it
 * would name the source volume, not this copy. `default` and `temporary` are never zcsi's.
 */
export const OWN_SOURCE = "local";

/**
 * One dataset's properties, read the same way everywhere:
 * - `text(name)`: the value whatever its source; undefined when absent, `-` or empty;
 * - `own(name)`: the value only when zcsi set it on this dataset itself (see OWN_SOURCE);
 * - `integer(name)`: an exact integer (`-p` output) or an Internal error naming the property,
 *   the dataset and the host: a garbled `available` must never read as "0 bytes free";
 * - `optionalInteger(name)`: like integer, but absent, `-` and `none` are undefined.
 */
export class PropertyView {
  constructor(
    readonly dataset: string,
    private readonly props: ReadonlyMap<string, PropertyValue> | undefined,
    /** The pool host the output came from, for error messages. */
    readonly host?: string,
  ) {}

  /** The view of `dataset` in one `zfs get` result (absent datasets give an empty view). */
  static of(map: ReadonlyMap<string, ReadonlyMap<string, PropertyValue>>, dataset: string, host?: string): PropertyView {
    return new PropertyView(dataset, map.get(dataset), host);
  }

  /** True when the output had a line for this dataset at all. */
  get exists(): boolean {
    return this.props !== undefined;
  }

  text(name: string): string | undefined {
    return meaningful(this.props?.get(name)?.value);
  }

  own(name: string): string | undefined {
    const entry = this.props?.get(name);
    return entry?.source === OWN_SOURCE ? meaningful(entry.value) : undefined;
  }

  integer(name: string): bigint {
    const value = this.props?.get(name)?.value;
    if (value === undefined) throw internal(`${this.where()}: property ${name} is missing from zfs output`);
    return parseExactInteger(value, `${this.where()}: property ${name}`);
  }

  optionalInteger(name: string): bigint | undefined {
    const value = this.props?.get(name)?.value;
    if (value === undefined) return undefined;
    return parseOptionalInteger(value, `${this.where()}: property ${name}`) ?? undefined;
  }

  private where(): string {
    return this.host === undefined ? this.dataset : `${this.host}: ${this.dataset}`;
  }
}

/** A user property's value whatever its source, or undefined when unset. Same as PropertyView.text. */
export function userPropertyValue(entry: PropertyValue | undefined): string | undefined {
  return meaningful(entry?.value);
}

/** A user property zcsi set on this dataset itself (source OWN_SOURCE), or undefined. Same as PropertyView.own. */
export function ownUserPropertyValue(entry: PropertyValue | undefined): string | undefined {
  return entry?.source === OWN_SOURCE ? meaningful(entry.value) : undefined;
}

/** The return value of a channel program from `zfs program -j` output (`{"return": ...}`); undefined when it returned nothing. */
export function parseProgramOutput(host: string, stdout: string): unknown {
  let parsed: unknown;
  try {
    parsed = stdout.trim() === "" ? {} : JSON.parse(stdout);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw internal(`${host}: zfs program: expected a JSON object, got ${JSON.stringify(stdout.slice(0, 200))}`);
  return (parsed as Record<string, unknown>)["return"];
}

/** The first line of `zfs version` (OpenZFS ≥ 0.8): `zfs-2.3.2-2~bpo12+2` → `2.3.2-2~bpo12+2`. */
export function parseZfsVersion(stdout: string): string | undefined {
  const first = recordLines(stdout)[0]?.trim();
  const m = first === undefined ? null : /^zfs-(\d.*)$/.exec(first);
  return m?.[1];
}
