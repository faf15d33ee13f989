import { invalidArgument } from "../errors.js";
import {
  datasetOf,
  isBelow,
  poolOf,
  validateDataset,
  validateDatasetOrSnapshot,
  validatePool,
  validateSnapshot,
  validateUserProperty,
} from "./names.js";

/**
 * Pure argv builders: validated names and properties in, `["zfs", ...]` out. Never a shell
 * string; quoting for SSH happens once, in exec/. Only forms accepted by both zfs-fuse 0.7
 * (pool version 23) and OpenZFS 2.x are emitted unless an option says otherwise.
 */

export type Props = Readonly<Record<string, string>>;
export type ListType = "filesystem" | "snapshot" | "volume" | "all";

/** Columns of every `zfs get` we run: one fixed shape for one parser. */
export const GET_COLUMNS = ["name", "property", "value", "source"] as const;
/** Columns of `zpoolList` (zfs-fuse has no `zpool get -H`, so `zpool list -H -o` it is). */
export const ZPOOL_LIST_COLUMNS = ["name", "health", "size", "free", "allocated"] as const;

// zfsprops(7): native property names are lowercase words with underscores (refquota,
// receive_resume_token). `userquota@...` style properties are not used by zcsi.
const NATIVE_PROPERTY = /^[a-z][a-z0-9_]*$/;
// zfsprops(7) "User Properties": values are at most 8192 bytes.
const MAX_USER_VALUE_BYTES = 8192;

/** A native property name or a valid user property; returns it. */
export function validatePropertyName(name: string): string {
  if (typeof name === "string" && name.includes(":")) return validateUserProperty(name);
  if (typeof name !== "string" || !NATIVE_PROPERTY.test(name)) {
    throw invalidArgument(`invalid property name ${JSON.stringify(name)}: expected a native name like "quota" or a user property like "zcsi:name"`);
  }
  return name;
}

/**
 * Property values are free text for ZFS, but not for us: NUL cannot pass through argv, and a
 * newline or tab would break the one-record-per-line, tab-separated `-H` output we parse back
 * (zfs-fuse stores `a\nb` without complaint and then prints it across two lines).
 */
export function validatePropertyValue(name: string, value: string): string {
  if (typeof value !== "string") throw invalidArgument(`property ${name}: value must be a string`);
  if (/[\0\n\r\t]/.test(value)) throw invalidArgument(`property ${name}: value must not contain NUL, newline or tab`);
  if (name.includes(":") && Buffer.byteLength(value, "utf8") > MAX_USER_VALUE_BYTES) {
    throw invalidArgument(`property ${name}: value is longer than ${MAX_USER_VALUE_BYTES} bytes`);
  }
  return value;
}

function propertyAssignments(props: Props): string[] {
  return Object.entries(props).map(([k, v]) => `${validatePropertyName(k)}=${validatePropertyValue(k, v)}`);
}

function dashO(props: Props): string[] {
  return propertyAssignments(props).flatMap((kv) => ["-o", kv]);
}

function propertyList(props: readonly string[]): string {
  if (props.length === 0) throw invalidArgument("at least one property is required");
  for (const p of props) if (p !== "all") validatePropertyName(p);
  if (props.includes("all") && props.length > 1) throw invalidArgument('"all" cannot be combined with other properties');
  return props.join(",");
}

function depthArgs(opts: { recursive?: boolean; depth?: number }): string[] {
  if (opts.depth !== undefined) {
    if (!Number.isSafeInteger(opts.depth) || opts.depth < 0) throw invalidArgument(`depth must be a non-negative integer, got ${opts.depth}`);
    // zfs-get(8)/zfs-list(8): -d implies recursion limited to that depth.
    return ["-d", String(opts.depth)];
  }
  return opts.recursive ? ["-r"] : [];
}

/** `zfs create [-p] -o k=v ... <dataset>`: all properties in the one call (see ARCHITECTURE "SSH latency"). */
export function zfsCreate(dataset: string, props: Props = {}, opts: { parents?: boolean } = {}): string[] {
  validateDataset(dataset);
  return ["zfs", "create", ...(opts.parents ? ["-p"] : []), ...dashO(props), dataset];
}

/**
 * `zfs destroy [-r] [-d] <name>`. `-d` (deferred, zfs-destroy(8)) applies to snapshots only:
 * a held or cloned snapshot is marked and destroyed when the last hold/clone goes.
 * `-R` (dependents outside the tree) is deliberately not offered.
 */
export function zfsDestroy(name: string, opts: { recursive?: boolean; deferred?: boolean } = {}): string[] {
  validateDatasetOrSnapshot(name);
  if (opts.deferred && !name.includes("@")) throw invalidArgument(`deferred destroy (-d) applies to snapshots only, not ${JSON.stringify(name)}`);
  return ["zfs", "destroy", ...(opts.recursive ? ["-r"] : []), ...(opts.deferred ? ["-d"] : []), name];
}

/**
 * `zfs get -Hp -o name,property,value,source [-r|-d N] <props> <names...>`: one call for many
 * datasets. `-p` gives exact integers and works on zfs-fuse and OpenZFS alike (zfs-get(8)).
 * No `-t`: zfs-fuse lacks it (ask for the `type` property and filter instead).
 */
export function zfsGet(names: readonly string[], props: readonly string[], opts: { recursive?: boolean; depth?: number } = {}): string[] {
  if (names.length === 0) throw invalidArgument("zfs get needs at least one dataset (an empty list would read every dataset on the host)");
  for (const n of names) validateDatasetOrSnapshot(n);
  return ["zfs", "get", "-Hp", "-o", GET_COLUMNS.join(","), ...depthArgs(opts), propertyList(props), ...names];
}

/**
 * `zfs list -H -o <columns> -t <type> [-r|-d N] <root>`. No `-p` unless asked: zfs-fuse answers
 * "invalid option 'p'", so only pass `parsable` when capabilities().listParsable says so.
 * `name` is always the first column.
 */
export function zfsList(
  root: string,
  opts: { props: readonly string[]; type?: ListType; recursive?: boolean; depth?: number; parsable?: boolean },
): string[] {
  validateDatasetOrSnapshot(root);
  const columns = listColumns(opts.props);
  for (const c of columns) if (c !== "name") validatePropertyName(c);
  const type = opts.type ?? "filesystem";
  if (!["filesystem", "snapshot", "volume", "all"].includes(type)) throw invalidArgument(`invalid list type ${JSON.stringify(type)}`);
  return ["zfs", "list", opts.parsable ? "-Hp" : "-H", "-o", columns.join(","), "-t", type, ...depthArgs(opts), root];
}

/** The columns zfsList asks for: `name` first, then the requested ones without duplicates. */
export function listColumns(props: readonly string[]): string[] {
  return ["name", ...props.filter((p, i) => p !== "name" && props.indexOf(p) === i)];
}

/**
 * `zfs set k=v [k=v ...] <name>`. Several assignments in one call need OpenZFS (≥ 0.7); zfs-fuse
 * takes exactly one (`set <property=value> <filesystem> ...`, a second `k=v` is read as a
 * dataset name: "cannot open 'refreservation=1M': invalid dataset name"). The client decides.
 */
export function zfsSet(name: string, props: Props): string[] {
  validateDatasetOrSnapshot(name);
  const assignments = propertyAssignments(props);
  if (assignments.length === 0) throw invalidArgument("zfs set needs at least one property");
  return ["zfs", "set", ...assignments, name];
}

/** `zfs inherit [-r] <property> <name>` (one property: zfs-fuse's inherit takes one). */
export function zfsInherit(name: string, property: string, opts: { recursive?: boolean } = {}): string[] {
  validateDatasetOrSnapshot(name);
  validatePropertyName(property);
  return ["zfs", "inherit", ...(opts.recursive ? ["-r"] : []), property, name];
}

/**
 * `zfs rename [-p] <from> <to>`: both datasets, or both snapshots of the same dataset
 * (zfs-rename(8); zfs-fuse: "snapshots must be part of same dataset").
 */
export function zfsRename(from: string, to: string, opts: { parents?: boolean } = {}): string[] {
  const fromSnap = from.includes("@");
  if (fromSnap) {
    validateSnapshot(from);
    validateSnapshot(to);
    if (datasetOf(from) !== datasetOf(to)) throw invalidArgument(`cannot rename ${from} to ${to}: snapshots must stay in the same dataset`);
    if (opts.parents) throw invalidArgument("rename -p applies to datasets only");
  } else {
    validateDataset(from);
    validateDataset(to);
    if (isBelow(from, to)) throw invalidArgument(`cannot rename ${from} below itself (${to})`);
    if (poolOf(from) !== poolOf(to)) throw invalidArgument(`cannot rename ${from} to ${to}: datasets cannot move between pools`);
  }
  if (from === to) throw invalidArgument(`cannot rename ${from} to itself`);
  return ["zfs", "rename", ...(opts.parents ? ["-p"] : []), from, to];
}

/**
 * `zfs snapshot [-r] -o k=v ... <dataset@snap>...` (zfs-fuse accepts -o on snapshot, measured).
 * Several names make one atomic snapshot of them all (zfs-snapshot(8), OpenZFS only: see
 * Capabilities.multiSnapshot); the properties go on every one.
 */
export function zfsSnapshot(snapshot: string | readonly string[], props: Props = {}, opts: { recursive?: boolean } = {}): string[] {
  const names = typeof snapshot === "string" ? [snapshot] : snapshotsArgs(snapshot, "snapshot");
  for (const name of names) validateSnapshot(name);
  return ["zfs", "snapshot", ...(opts.recursive ? ["-r"] : []), ...dashO(props), ...names];
}

/** `zfs clone [-p] -o k=v ... <snapshot> <target>`. */
export function zfsClone(snapshot: string, target: string, props: Props = {}, opts: { parents?: boolean } = {}): string[] {
  validateSnapshot(snapshot);
  validateDataset(target);
  return ["zfs", "clone", ...(opts.parents ? ["-p"] : []), ...dashO(props), snapshot, target];
}

/**
 * Stream options of OpenZFS (zfs-send(8)); zfs-fuse has none of them, so callers ask only
 * when both ends are OpenZFS. `-L` keeps blocks over 128 KiB whole, `-e` sends embedded
 * (tiny, compressed-in-pointer) blocks as they are, `-c` sends compressed blocks without
 * decompressing them, `-w` sends an encrypted dataset raw (still encrypted, no key needed).
 */
export interface SendFlags {
  readonly largeBlocks?: boolean;
  readonly embedded?: boolean;
  readonly compressed?: boolean;
  readonly raw?: boolean;
}

function sendFlags(opts: SendFlags): string[] {
  return [...(opts.largeBlocks ? ["-L"] : []), ...(opts.embedded ? ["-e"] : []), ...(opts.compressed ? ["-c"] : []), ...(opts.raw ? ["-w"] : [])];
}

/**
 * `zfs send [-L] [-e] [-c] [-w] [-i <from>] <snapshot>`: a full stream of one snapshot, or with `incrementalFrom`
 * the increment from an earlier snapshot of the same dataset (`-i`: only the two snapshots,
 * not the ones in between; zfs-send(8)). No properties (`-p` would carry the source's zcsi:*
 * user properties along). Its stdout is the stream.
 */
export function zfsSend(snapshot: string, opts: { incrementalFrom?: string } & SendFlags = {}): string[] {
  validateSnapshot(snapshot);
  const flags = sendFlags(opts);
  if (opts.incrementalFrom === undefined) return ["zfs", "send", ...flags, snapshot];
  validateSnapshot(opts.incrementalFrom);
  if (datasetOf(opts.incrementalFrom) !== datasetOf(snapshot)) {
    throw invalidArgument(`incremental send from ${opts.incrementalFrom} to ${snapshot}: both must be snapshots of the same dataset`);
  }
  if (opts.incrementalFrom === snapshot) throw invalidArgument(`incremental send from ${snapshot} to itself`);
  return ["zfs", "send", ...flags, "-i", opts.incrementalFrom, snapshot];
}

// A receive_resume_token is a version number, a checksum, the length and the hex of a
// compressed nvlist, joined by "-" (libzfs zfs_send_resume_token_to_nvlist). Anything else
// never came from zfs and must not reach an argv.
const RESUME_TOKEN = /^[0-9]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/;
const MAX_RESUME_TOKEN_LENGTH = 64 * 1024;

/** A `receive_resume_token` value as zfs prints it; returns it. */
export function validateResumeToken(token: string): string {
  if (typeof token !== "string" || token.length > MAX_RESUME_TOKEN_LENGTH || !RESUME_TOKEN.test(token)) {
    const shown = typeof token === "string" ? JSON.stringify(token.length > 40 ? `${token.slice(0, 40)}…` : token) : `(${typeof token})`;
    throw invalidArgument(`invalid receive_resume_token ${shown}: expected <version>-<hex>-<hex>-<hex>`);
  }
  return token;
}

/** `zfs send -t <token>`: the rest of an interrupted stream (OpenZFS ≥ 0.7; zfs-send(8)). */
export function zfsSendResume(token: string): string[] {
  return ["zfs", "send", "-t", validateResumeToken(token)];
}

/**
 * `zfs receive -u [-s] [-o k=v ...] <dataset>`: a stream into `dataset`, left unmounted (`-u`;
 * zfs-fuse accepts it though its usage text does not list it). A full stream creates the
 * dataset; an incremental one needs it to exist with the stream's base as its newest snapshot.
 * `resumable` (`-s`, OpenZFS ≥ 0.7) keeps a cut stream's partial state and publishes
 * receive_resume_token. `props` (`-o`, OpenZFS ≥ 0.8) are set as local properties of the
 * received dataset; zfs-fuse has no `-o`, so there callers set them afterwards.
 * No `-F`: never roll back or overwrite what exists.
 */
export function zfsReceive(dataset: string, opts: { resumable?: boolean; props?: Props } = {}): string[] {
  validateDataset(dataset);
  return ["zfs", "receive", "-u", ...(opts.resumable ? ["-s"] : []), ...dashO(opts.props ?? {}), dataset];
}

/**
 * `zfs receive -A <dataset>`: discards the partial state of an interrupted resumable receive
 * (zfs-receive(8)). For an interrupted first (full) receive that state IS the dataset, which
 * goes with it; callers must know it is theirs.
 */
export function zfsReceiveAbort(dataset: string): string[] {
  validateDataset(dataset);
  return ["zfs", "receive", "-A", dataset];
}

/**
 * Hold tags are free text for ZFS (zfs-hold(8)); ours are one harmless argv word and one `-H`
 * column: the dataset component charset, no leading "-", at most 200 characters.
 */
export function validateHoldTag(tag: string): string {
  if (typeof tag !== "string" || tag.length === 0 || tag.length > 200 || tag.startsWith("-") || !/^[A-Za-z0-9_.:-]+$/.test(tag)) {
    throw invalidArgument(`invalid hold tag ${JSON.stringify(tag)}: expected 1-200 of A-Z a-z 0-9 _ . : - not starting with "-"`);
  }
  return tag;
}

function snapshotsArgs(snapshots: readonly string[], what: string): readonly string[] {
  if (snapshots.length === 0) throw invalidArgument(`zfs ${what} needs at least one snapshot`);
  for (const s of snapshots) validateSnapshot(s);
  return snapshots;
}

/** `zfs hold <tag> <snapshot...>`: a held snapshot cannot be destroyed (zfs-hold(8); pool version 18+). */
export function zfsHold(tag: string, snapshots: readonly string[]): string[] {
  return ["zfs", "hold", validateHoldTag(tag), ...snapshotsArgs(snapshots, "hold")];
}

/** `zfs release <tag> <snapshot...>`. */
export function zfsRelease(tag: string, snapshots: readonly string[]): string[] {
  return ["zfs", "release", validateHoldTag(tag), ...snapshotsArgs(snapshots, "release")];
}

/**
 * `zfs holds -H <snapshot...>`: `name<TAB>tag<TAB>timestamp` per hold. OpenZFS only in practice:
 * zfs-fuse's `holds` is a python script it does not ship ("pyzfs.py not found"); there the
 * `userrefs` property (the number of holds) is what can be read.
 */
export function zfsHolds(snapshots: readonly string[]): string[] {
  return ["zfs", "holds", "-H", ...snapshotsArgs(snapshots, "holds")];
}

/**
 * `zfs rollback [-r] <snapshot>`: the dataset's data and the writes since `snapshot` are
 * discarded (zfs-rollback(8)). Without `-r` only the newest snapshot can be the target; `-r`
 * destroys the later snapshots too. Never `-R` (it would destroy their clones). Only behind an
 * operator's explicit command (`zcsi rollback`; `-r` only with `--destroy-newer`).
 */
export function zfsRollback(snapshot: string, opts: { destroyNewer?: boolean } = {}): string[] {
  validateSnapshot(snapshot);
  return ["zfs", "rollback", ...(opts.destroyNewer ? ["-r"] : []), snapshot];
}

/** `zfs promote <clone>`. */
export function zfsPromote(dataset: string): string[] {
  validateDataset(dataset);
  return ["zfs", "promote", dataset];
}

/**
 * `zfs unmount <dataset>`. No `-f` by default: forcing an unmount under a running pod is worse
 * than failing the delete with "busy".
 */
export function zfsUnmount(dataset: string, opts: { force?: boolean } = {}): string[] {
  validateDataset(dataset);
  return ["zfs", "unmount", ...(opts.force ? ["-f"] : []), dataset];
}

/** `zfs mount <dataset>` (mounts at its mountpoint property). */
export function zfsMount(dataset: string): string[] {
  validateDataset(dataset);
  return ["zfs", "mount", dataset];
}

/** `zfs version` (OpenZFS ≥ 0.8; zfs-fuse prints "unrecognized command 'version'" and its usage). */
/**
 * `zfs program -j <pool> - <args...>` (zfs-program(8), OpenZFS ≥ 0.8): runs the channel program
 * read from stdin (`-`) in the pool's kernel, in one txg; the script sees `args` as its `argv`
 * table, so a dataset name reaches it as data and never becomes Lua source. `-j` prints the
 * script's return value as JSON (`{"return": ...}`). An argument may not start with `-`: it
 * would read as an option, as the CLI's getopt permutes.
 */
export function zfsProgram(pool: string, args: readonly string[]): string[] {
  validatePool(pool);
  for (const a of args) {
    if (typeof a !== "string" || a.startsWith("-") || a.includes("\0")) throw invalidArgument(`channel program argument ${JSON.stringify(a)}: must not start with "-" or contain NUL`);
  }
  return ["zfs", "program", "-j", pool, "-", ...args];
}

export function zfsVersion(): string[] {
  return ["zfs", "version"];
}

/** `zpool list -H -o name,health,size,free,allocated <pool>` (sizes human-readable on zfs-fuse: no -p). */
export function zpoolList(pool: string, opts: { parsable?: boolean } = {}): string[] {
  validatePool(pool);
  return ["zpool", "list", opts.parsable ? "-Hp" : "-H", "-o", ZPOOL_LIST_COLUMNS.join(","), pool];
}
