import type { ExecResult } from "../exec/executor.js";
import { parseZfsVersion } from "./parse.js";

/**
 * What the host's zfs CLI can do, from ONE probe: `zfs version`.
 *
 * - OpenZFS ≥ 0.8 has `zfs version` (2.3.2 prints `zfs-2.3.2-2~bpo12+2` and `zfs-kmod-2.3.2-2~bpo12+2`). Every feature
 *   below is in 0.8 (list -p, get -t, bookmarks: ZoL 0.6.x; resumable send and multi-property
 *   `zfs set`: 0.7.0; `zfs program`: 0.8.0), so a successful `zfs version` means all of them.
 * - Older CLIs answer "unrecognized command 'version'" followed by their full usage text on
 *   stderr, and the usage text lists the options that exist. We read the features from it
 *   instead of running one probe per feature (each probe is a round trip over SSH).
 * - zfs-fuse 0.7.0 prints exactly the OpenSolaris-era usage (`send [-RDp]`, `list [-rH]`, no
 *   bookmark command). No output names zfs-fuse itself while its daemon runs, so
 *   "zfs-fuse" is recognised by that usage signature: a heuristic, documented as one.
 */
export interface Capabilities {
  readonly implementation: "zfs-fuse" | "openzfs" | "unknown";
  /** Userland version from `zfs version` (OpenZFS only), e.g. `2.3.2-2~bpo12+2`. */
  readonly version?: string;
  /** `zfs list -p` (exact numbers). zfs-fuse: "invalid option 'p'". */
  readonly listParsable: boolean;
  /** `zfs send -t <token>` / `zfs receive -s` / the `receive_resume_token` property. */
  readonly resumableSend: boolean;
  /** `zfs bookmark`. */
  readonly bookmarks: boolean;
  /** `zfs get -t <type>`. zfs-fuse: "invalid option 't'". */
  readonly getTypeFilter: boolean;
  /** `zfs set a=b c=d <dataset>` in one call. zfs-fuse takes one assignment per call. */
  readonly multiPropertySet: boolean;
  /**
   * `zfs snapshot a@s b@s ...`: several snapshots in one atomic command (one txg; OpenZFS).
   * zfs-fuse takes one name; its atomic form for several datasets is `-r` of a common parent.
   */
  readonly multiSnapshot: boolean;
  /**
   * `zfs program` (channel programs, zfs-program(8)): Lua run in the kernel in one txg, so a
   * check and the change it guards are one atomic command (OpenZFS ≥ 0.8). Root only: a host
   * whose user is neither root nor behind sudo refuses it, and the client then falls back.
   * zfs-fuse and ZoL 0.7 have no `program` subcommand.
   */
  readonly channelPrograms: boolean;
}

export const OPENZFS_FEATURES = {
  listParsable: true,
  resumableSend: true,
  bookmarks: true,
  getTypeFilter: true,
  multiPropertySet: true,
  multiSnapshot: true,
  channelPrograms: true,
} as const;

/**
 * All usage entries for one subcommand: its line(s) plus continuation lines. zfs prints each
 * command as `\t<cmd> ...` and wraps long ones with `\t    ...` (tab then spaces).
 */
export function usageEntries(usage: string, command: string): string[] {
  const entries: string[] = [];
  let current: string[] | undefined;
  for (const line of usage.split("\n")) {
    const isContinuation = /^\t +\S/.test(line);
    if (current !== undefined && isContinuation) {
      current.push(line.trim());
      continue;
    }
    if (current !== undefined) entries.push(current.join(" "));
    current = undefined;
    const trimmed = line.trim();
    // FreeBSD's usage names aliases together: `receive|recv [-vnsFu] ...`.
    if (/^\t\S/.test(line) && (trimmed.split(" ")[0] ?? "").split("|").includes(command)) current = [trimmed];
  }
  if (current !== undefined) entries.push(current.join(" "));
  return entries;
}

/** Reads the features from the usage text an old zfs prints after "unrecognized command". */
export function capabilitiesFromUsage(usage: string): Capabilities {
  const list = usageEntries(usage, "list");
  const get = usageEntries(usage, "get");
  const send = usageEntries(usage, "send");
  const receive = usageEntries(usage, "receive");
  const set = usageEntries(usage, "set");
  const hasFlag = (entries: string[], flag: string): boolean =>
    entries.some((e) => new RegExp(`\\[-[A-Za-z]*${flag}[A-Za-z]*\\]`).test(e));
  const listParsable = hasFlag(list, "p");
  const resumableSend = send.some((e) => /-t\b|receive_resume_token/.test(e)) || receive.some((e) => hasFlag([e], "s"));
  const bookmarks = usageEntries(usage, "bookmark").length > 0;
  const getTypeFilter = get.some((e) => /-t type/.test(e));
  const multiPropertySet = set.some((e) => /<property=value> \.\.\./.test(e));
  // OpenZFS: `<filesystem|volume>@<snap> ...`; zfs-fuse: `<filesystem@snapname|volume@snapname>` (one).
  const multiSnapshot = usageEntries(usage, "snapshot").some((e) => /@\S*\s+\.\.\.\s*$/.test(e));
  const channelPrograms = usageEntries(usage, "program").length > 0;
  const looksLikeZfsFuse =
    send.length === 1 && /^send \[-RDp\] \[-\[iI\] snapshot\] <snapshot>$/.test(send[0] ?? "") && !listParsable && !bookmarks;
  return {
    implementation: looksLikeZfsFuse ? "zfs-fuse" : "unknown",
    listParsable,
    resumableSend,
    bookmarks,
    getTypeFilter,
    multiPropertySet,
    multiSnapshot,
    channelPrograms,
  };
}

/**
 * Interprets the result of `zfs version`. Returns undefined when the result says nothing about
 * capabilities (the command failed for another reason: the caller classifies that error).
 */
export function capabilitiesFromProbe(result: ExecResult): Capabilities | undefined {
  const version = parseZfsVersion(result.stdout);
  // Some versions print the userland line before asking the kernel module; 2.3.2 (measured)
  // checks the module first and prints nothing but "The ZFS modules cannot be auto-loaded"
  // (exit 1): that says nothing about capabilities, and the caller classifies it Unavailable.
  if (version !== undefined) return { implementation: "openzfs", version, ...OPENZFS_FEATURES };
  if (result.exitCode === 0) return { implementation: "openzfs", ...OPENZFS_FEATURES };
  if (/unrecognized command/i.test(result.stderr)) return capabilitiesFromUsage(result.stderr);
  return undefined;
}

/**
 * What StorageClass properties a host can honour, for CreateVolume to refuse up front what
 * `zfs create` would refuse later (as INTERNAL): compression algorithms and the largest
 * recordsize. Undefined when the implementation is not known well enough to say (then zfs
 * itself decides).
 *
 * - zfs-fuse 0.7.0 (pool version 23, zfsprops of that era): compression on, off, lzjb, gzip,
 *   gzip-1..9, zle; recordsize 512 to 128K ("512 to 128k, power of 2" in its usage table).
 * - OpenZFS: lz4 everywhere (0.6.x), zstd from 2.0, recordsize up to 1M (large_blocks), 16M
 *   from 2.2 (zfs_max_recordsize's default). Read from the CLI version; the pool's feature
 *   flags are not probed (a pool created with `-d` or an old `compatibility` can still refuse
 *   zstd or large blocks, and zfs then says so).
 */
export interface PropertyLimits {
  /** Compression families the host accepts (`gzip` covers gzip-1..9, `zstd` zstd-N and zstd-fast). */
  readonly compression: readonly string[];
  readonly maxRecordsizeBytes: number;
  /** How the host is named in an error: `zfs-fuse (pool version 23)`, `OpenZFS 2.1.5`. */
  readonly what: string;
}

export function propertyLimits(caps: Capabilities): PropertyLimits | undefined {
  if (caps.implementation === "zfs-fuse") return { compression: ["on", "off", "lzjb", "gzip", "zle"], maxRecordsizeBytes: 128 * 1024, what: "zfs-fuse (pool version 23)" };
  if (caps.implementation !== "openzfs" || caps.version === undefined) return undefined;
  const m = /^(\d+)\.(\d+)/.exec(caps.version);
  if (!m) return undefined;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const atLeast = (a: number, b: number): boolean => major > a || (major === a && minor >= b);
  return {
    compression: ["on", "off", "lzjb", "gzip", "zle", "lz4", ...(atLeast(2, 0) ? ["zstd"] : [])],
    maxRecordsizeBytes: atLeast(2, 2) ? 16 * 1024 * 1024 : 1024 * 1024,
    what: `OpenZFS ${caps.version}`,
  };
}

/** `gzip-9` → gzip, `zstd-fast` / `zstd-3` → zstd: the family a compression value belongs to. */
export function compressionFamily(value: string): string {
  return value.replace(/-(fast|[0-9]+)$/, "").replace(/-fast$/, "");
}
