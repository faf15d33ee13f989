import { StringDecoder } from "node:string_decoder";
import { internal } from "../errors.js";
import { GET_COLUMNS } from "./argv.js";
import { parseJsonObject } from "../util/json.js";

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
 * alive: one dataset name kept from a 10 MB output kept all 10 MB. Concatenating and cutting
 * again flattens into a new string of the substring's length (measured in bench/listing-memory.ts).
 */
function detached(text: string): string {
  return text.length < 13 ? text : (" " + text).slice(1);
}

/**
 * Output of `zfs get -H[p] -o name,property,value,source ...`, fed as it arrives.
 *
 * A listing of 10,000 volumes is ~190,000 lines (~10 MB); splitting it into line and field
 * arrays made ~1 million short-lived strings and arrays, and kept a string and a
 * {value, source} object per line: the bulk of the controller's and the snapshotter's peak
 * memory (issue 17, item 5; bench/listing-memory.ts). So the output is read piece by piece as
 * the command prints it (Zfs.get hands it ExecOptions.onStdout), never held whole, and each
 * piece is scanned in place: a dataset's name is cut once for all its lines, property names and
 * sources (a handful of distinct ones) and repeated values are shared, and so is the
 * {value, source} object of a repeated pair (`-`/`-`, `0`/`default`, …): PropertyValues are
 * read-only. What is kept is copied out of the piece (see `detached`).
 */
export class GetOutputParser {
  private readonly result: PropertyMap = new Map();
  private readonly decoder = new StringDecoder("utf8");
  /** The start of a line whose end has not arrived yet. */
  private pending = "";
  private lines = 0;
  /** The output began with an empty line: fine when that is all of it (`\n`), an error when more follows. */
  private emptyFirst = false;
  private failure: unknown;
  private readonly shared = new Map<string, string>();
  private readonly pairs = new Map<string, Map<string, PropertyValue>>();
  /** The property names in the order the current dataset printed them so far: zfs prints the same order for each. */
  private readonly order: string[] = [];
  private name = "";
  private props: DatasetProperties | undefined;
  private index = 0;

  /** The next piece of output. Never throws: a malformed line fails `end()` (this runs inside a stream's data handler). */
  write(piece: Buffer | string): void {
    if (this.failure !== undefined || piece.length === 0) return;
    const text = this.pending + (typeof piece === "string" ? piece : this.decoder.write(piece));
    const last = text.lastIndexOf("\n");
    if (last < 0) {
      this.pending = text;
      return;
    }
    this.pending = text.slice(last + 1);
    try {
      this.consume(text, last);
    } catch (err) {
      this.failure = err;
    }
  }

  /** Every dataset → property → {value, source}, in the order zfs printed them; throws on a malformed line. */
  end(): PropertyMap {
    const rest = this.pending + this.decoder.end();
    this.pending = "";
    if (this.failure === undefined && rest !== "") {
      try {
        this.consume(rest + "\n", rest.length);
      } catch (err) {
        this.failure = err;
      }
    }
    if (this.failure !== undefined) throw this.failure;
    if (this.emptyFirst && this.lines > 1) this.malformed("");
    return this.result;
  }

  /** The lines of `text` up to the newline at `last`. */
  private consume(text: string, last: number): void {
    const at = (expected: string, from: number, to: number): boolean => to - from === expected.length && text.startsWith(expected, from);
    for (let start = 0; start <= last; ) {
      const stop = text.indexOf("\n", start);
      const lineEnd = stop > start && text.charCodeAt(stop - 1) === 13 ? stop - 1 : stop;
      this.lines += 1;
      if (stop === start && this.lines === 1) {
        this.emptyFirst = true;
        start = stop + 1;
        continue;
      }
      if (this.emptyFirst) this.malformed("");
      const t1 = text.indexOf("\t", start);
      const t2 = t1 < 0 ? -1 : text.indexOf("\t", t1 + 1);
      const t3 = t2 < 0 ? -1 : text.indexOf("\t", t2 + 1);
      const t4 = t3 < 0 ? -1 : text.indexOf("\t", t3 + 1);
      if (t1 < 0 || t1 >= lineEnd || t2 >= lineEnd || t3 < 0 || t3 >= lineEnd || (t4 >= 0 && t4 < lineEnd)) this.malformed(text.slice(start, lineEnd));
      if (t1 === start || t2 === t1 + 1) throw internal(`unexpected zfs get output: empty name or property in line ${JSON.stringify(text.slice(start, lineEnd))}`);
      if (this.props === undefined || !at(this.name, start, t1)) {
        this.name = detached(text.slice(start, t1));
        this.props = this.result.get(this.name);
        if (this.props === undefined) this.result.set(this.name, (this.props = new Map()));
        this.index = 0;
      }
      const expected = this.order[this.index];
      const property = expected !== undefined && at(expected, t1 + 1, t2) ? expected : (this.order[this.index] = this.share(text, t1 + 1, t2));
      this.index += 1;
      this.props.set(property, this.pair(this.share(text, t2 + 1, t3), this.share(text, t3 + 1, lineEnd)));
      start = stop + 1;
    }
  }

  private malformed(line: string): never {
    fields(line, GET_COLUMNS.length, "zfs get"); // throws, naming the line
    throw internal(`unexpected zfs get output in line ${JSON.stringify(line)}`);
  }

  private share(text: string, from: number, to: number): string {
    const cut = text.slice(from, to);
    const known = this.shared.get(cut);
    if (known !== undefined) return known;
    const own = detached(cut);
    this.shared.set(own, own);
    return own;
  }

  private pair(value: string, source: string): PropertyValue {
    let bySource = this.pairs.get(value);
    if (bySource === undefined) this.pairs.set(value, (bySource = new Map()));
    let entry = bySource.get(source);
    if (entry === undefined) bySource.set(source, (entry = { value, source }));
    return entry;
  }
}

/** Output of `zfs get -H[p] -o name,property,value,source ...` held whole (see GetOutputParser). */
export function parseGet(stdout: string): PropertyMap {
  const parser = new GetOutputParser();
  parser.write(stdout);
  return parser.end();
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

/** The user property `name` as zcsi set it on this dataset itself (ownUserPropertyValue of its entry in `props`). */
export function ownProperty(props: ReadonlyMap<string, PropertyValue> | undefined, name: string): string | undefined {
  return ownUserPropertyValue(props?.get(name));
}

/** The return value of a channel program from `zfs program -j` output (`{"return": ...}`); undefined when it returned nothing. */
export function parseProgramOutput(host: string, stdout: string): unknown {
  const parsed = stdout.trim() === "" ? {} : parseJsonObject(stdout);
  if (parsed === undefined) throw internal(`${host}: zfs program: expected a JSON object, got ${JSON.stringify(stdout.slice(0, 200))}`);
  return parsed["return"];
}

/** The first line of `zfs version` (OpenZFS ≥ 0.8): `zfs-2.3.2-2~bpo12+2` → `2.3.2-2~bpo12+2`. */
export function parseZfsVersion(stdout: string): string | undefined {
  const first = recordLines(stdout)[0]?.trim();
  const m = first === undefined ? null : /^zfs-(\d.*)$/.exec(first);
  return m?.[1];
}
