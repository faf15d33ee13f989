import type { ErrorKind } from "../errors.js";
import { ClassifiedError, reasonOf, type ExecReason } from "../exec/errors.js";
import type { ExecResult } from "../exec/executor.js";

/**
 * The one place where zfs/zpool stderr becomes a typed error: each rule names a REASON (why it
 * failed: `dependentClones`, `tagExists`, `busy`, ...), and each reason maps to one ErrorKind
 * (the gRPC-ish code). Callers decide on the reason with `hasReason(err, "dependentClones")`,
 * never on the message, so a zfs version that rewords a message breaks one pattern here, caught
 * by the recorded fixtures, not a decision somewhere else. Every pattern was seen on a real
 * system; the recorded strings live in test/fixtures/zfs/ and test/unit/zfs-errors.test.ts
 * replays them. Order matters: the first rule whose pattern matches any stderr line wins, so
 * specific rules ("parent does not exist") come before general ones ("does not exist").
 * The table for ssh, sshfs, mount and umount is exec/errors.ts.
 */

/** Why a zfs/zpool command failed: the table's vocabulary, on which callers decide. */
export type ZfsReason =
  | "permissionDenied"
  | "busy"
  | "parentMissing"
  | "noSuchTag"
  | "tagExists"
  | "held"
  | "targetModified"
  | "staleResumeToken"
  | "notFound"
  | "alreadyExists"
  | "sizeBelowUsed"
  | "outOfSpace"
  | "hasChildren"
  | "dependentClones"
  | "notAClone"
  | "crossDatasetRename"
  | "notMounted"
  | "alreadyMounted"
  | "badProperty"
  | "badName"
  | "unsupported"
  | "zfsUnavailable"
  /** Killed by a signal. */
  | "killed"
  /** No rule matched: the kind is Internal. */
  | "unclassified";

/** Every reason a classified error can carry, zfs or below (exec/errors.ts). */
export type Reason = ZfsReason | ExecReason;

/** A zfs/zpool command that failed, classified. Keeps the full stderr for logs. */
export class ZfsError extends ClassifiedError<ZfsReason> {
  constructor(
    kind: ErrorKind,
    message: string,
    reason: ZfsReason,
    readonly argv: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(kind, message, reason);
  }
}

/**
 * "dataset is busy" (and an unmount refused with "target is busy"). Kind `Unavailable`: it is
 * usually transient (zfs-fuse answers it for ~50-100 ms after `zfs create` while the mount
 * settles), and `Zfs.destroy` retries it with a bounded backoff. When the retries run out the
 * error reaches the caller still as ZfsBusyError; for DeleteVolume the CSI layer may prefer
 * FAILED_PRECONDITION ("volume in use", CSI spec DeleteVolume errors) — test with `isBusy`.
 */
export class ZfsBusyError extends ZfsError {
  readonly busy = true;
  constructor(message: string, argv: readonly string[], stderr: string, exitCode: number | null) {
    super("Unavailable", message, "busy", argv, stderr, exitCode);
  }
}

/** True when `err` was classified (by this table or exec's) with one of `reasons`. */
export function hasReason(err: unknown, ...reasons: readonly Reason[]): boolean {
  const reason = reasonOf(err);
  return reason !== undefined && (reasons as readonly string[]).includes(reason);
}

export function isBusy(err: unknown): err is ZfsBusyError {
  return err instanceof ZfsBusyError;
}

/** "Busy" is not an ErrorKind of its own: it is an Unavailable that callers may retry. */
export type Classification = ErrorKind | "Busy";

/** The kind each reason maps to (csi/errors.ts then maps the kind to a gRPC code). */
export const ZFS_REASON_KIND: Readonly<Record<ZfsReason, Classification>> = {
  permissionDenied: "PermissionDenied",
  busy: "Busy",
  // A missing parent is a configuration problem, not a missing object: keep it out of NotFound so
  // that callers treating NotFound as "already gone" are never fooled by it.
  parentMissing: "FailedPrecondition",
  // A hold tag that is not on the snapshot (zfs release): the hold is already gone.
  noSuchTag: "NotFound",
  tagExists: "AlreadyExists",
  // A snapshot with a user hold (`zfs hold`) stays until released: not transient, so not Busy.
  held: "FailedPrecondition",
  targetModified: "FailedPrecondition",
  staleResumeToken: "FailedPrecondition",
  notFound: "NotFound",
  alreadyExists: "AlreadyExists",
  // Shrinking a quota below what is used: the request is out of the valid range for this dataset.
  sizeBelowUsed: "OutOfRange",
  outOfSpace: "ResourceExhausted",
  hasChildren: "FailedPrecondition",
  dependentClones: "FailedPrecondition",
  notAClone: "FailedPrecondition",
  crossDatasetRename: "FailedPrecondition",
  notMounted: "FailedPrecondition",
  alreadyMounted: "FailedPrecondition",
  badProperty: "InvalidArgument",
  badName: "InvalidArgument",
  // The host's zfs lacks an option or subcommand we used: a capability we should have probed.
  unsupported: "Unimplemented",
  zfsUnavailable: "Unavailable",
  killed: "Internal",
  unclassified: "Internal",
};

interface Rule {
  readonly pattern: RegExp;
  readonly reason: ZfsReason;
  /** Where the string comes from, for the reader (zfs-fuse 0.7.0 and OpenZFS 2.3.2, both recorded). */
  readonly seen: string;
}

export const CLASSIFICATION_TABLE: readonly Rule[] = [
  // Permission first: zfs-fuse reports a refused daemon socket as
  // "connect: Permission denied" followed by "internal error: failed to initialize ZFS library".
  { pattern: /permission denied/i, reason: "permissionDenied", seen: "zfs-fuse: connect: Permission denied; OpenZFS: cannot create 'x': permission denied" },
  { pattern: /a password is required/i, reason: "permissionDenied", seen: "sudo -n: sudo: a password is required" },
  { pattern: /must be run as root|operation not permitted|insufficient privileges/i, reason: "permissionDenied", seen: "OpenZFS as non-root" },
  { pattern: /dataset is busy|pool or dataset is busy|pool is busy|target is busy|device or resource busy/i, reason: "busy", seen: "zfs-fuse: cannot destroy 'p/a': dataset is busy; umount: /m/a: target is busy." },
  { pattern: /parent does not exist/i, reason: "parentMissing", seen: "zfs-fuse: cannot create 'p/x/y': parent does not exist" },
  { pattern: /no such tag on this dataset/i, reason: "noSuchTag", seen: "zfs-fuse: cannot release 'zcsi-repl-j2' from 'p/a@s1': no such tag on this dataset" },
  { pattern: /tag already exists on this dataset/i, reason: "tagExists", seen: "cannot hold snapshot 'p/a@s1': tag already exists on this dataset" },
  { pattern: /it's being held|snapshot is held/i, reason: "held", seen: "OpenZFS 2.3: cannot destroy snapshot p/a@s1: it's being held. Run 'zfs holds -r p/a@s1' to see holders." },
  // An incremental receive into a target written since its newest snapshot (without -F, which
  // would roll it back). zfs-fuse wraps it: "...has been modified" / "since most recent snapshot".
  { pattern: /has been modified$|has been modified since most recent snapshot/i, reason: "targetModified", seen: "zfs-fuse: cannot receive incremental stream: destination p/t/r has been modified\nsince most recent snapshot" },
  // `zfs send -t` whose token no longer fits the source (libzfs zfs_send_resume_impl): the
  // snapshot it names was destroyed or replaced, or the token is damaged.
  { pattern: /cannot resume send|resume token is corrupt|resume token version/i, reason: "staleResumeToken", seen: "OpenZFS 2.3: cannot resume send: 'p/a@s' used in the initial send no longer exists" },
  { pattern: /does not exist|no such pool|no such dataset|could not find any snapshots/i, reason: "notFound", seen: "zfs-fuse: cannot open 'p/x': dataset does not exist; cannot open 'x': no such pool; OpenZFS: could not find any snapshots to destroy; check snapshot names." },
  { pattern: /already mounted/i, reason: "alreadyMounted", seen: "cannot mount 'p/a': filesystem already mounted" },
  { pattern: /already exists|^cannot receive new filesystem stream: destination '[^']*' exists$/i, reason: "alreadyExists", seen: "zfs-fuse: cannot create 'p/a': dataset already exists; OpenZFS 2.3: cannot receive new filesystem stream: destination 'p/d' exists" },
  { pattern: /size is less than current used or reserved space/i, reason: "sizeBelowUsed", seen: "zfs-fuse: cannot set property for 'p/a': size is less than current used or reserved space" },
  { pattern: /out of space|quota exceeded|size is greater than available space|no space left on device/i, reason: "outOfSpace", seen: "zfs-fuse: cannot create 'p/b': out of space; cannot set property for 'p/q': size is greater than available space" },
  { pattern: /has children/i, reason: "hasChildren", seen: "zfs-fuse: cannot destroy 'p/k8s': filesystem has children" },
  { pattern: /has dependent clones/i, reason: "dependentClones", seen: "zfs-fuse: cannot destroy 'p/a@s2': snapshot has dependent clones" },
  { pattern: /not a cloned filesystem/i, reason: "notAClone", seen: "zfs-fuse: cannot promote 'p/a': not a cloned filesystem" },
  { pattern: /snapshots must be part of same dataset/i, reason: "crossDatasetRename", seen: "zfs-fuse: cannot rename to 'p/b@s1': snapshots must be part of same dataset" },
  { pattern: /not currently mounted/i, reason: "notMounted", seen: "zfs-fuse: cannot unmount 'p/a': not currently mounted" },
  { pattern: /invalid property|bad numeric value|bad property value|cannot be inherited/i, reason: "badProperty", seen: "zfs-fuse: cannot create 'p/q': bad numeric value 'abc'; invalid property 'nosuchprop'; 'quota' property cannot be inherited" },
  { pattern: /invalid dataset name|invalid character|name is too long|snapshot delimiter/i, reason: "badName", seen: "zfs-fuse: cannot open 'zcsi:x=1': invalid dataset name" },
  { pattern: /invalid option|unrecognized command|unknown option|function not implemented|operation not supported/i, reason: "unsupported", seen: "zfs-fuse: invalid option 'p'; unrecognized command 'version'; internal error: Function not implemented (zfs create -V)" },
  { pattern: /daemon is running|failed to initialize zfs library|connection refused|modules are not loaded|modules cannot be auto-loaded|\/dev\/zfs/i, reason: "zfsUnavailable", seen: "zfs-fuse without daemon: connect: No such file or directory / Please make sure that the zfs-fuse daemon is running.; OpenZFS 2.3 without its module: The ZFS modules cannot be auto-loaded." },
];

function lines(stderr: string): string[] {
  return stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

/** Which reason (and kind) a stderr text means, and the line that said so (undefined: no rule matched). */
export function classifyStderr(stderr: string): { reason: ZfsReason; kind: Classification; line: string } | undefined {
  const all = lines(stderr);
  for (const rule of CLASSIFICATION_TABLE) {
    const line = all.find((l) => rule.pattern.test(l));
    if (line !== undefined) return { reason: rule.reason, kind: ZFS_REASON_KIND[rule.reason], line };
  }
  return undefined;
}

/** `zfs destroy`, `zpool list`: the command and subcommand, for messages. */
function commandName(argv: readonly string[]): string {
  const i = argv.findIndex((a) => a === "zfs" || a === "zpool");
  const from = i < 0 ? 0 : i;
  return argv.slice(from, from + 2).join(" ");
}

/**
 * Turns a failed command into a typed error. The message is `<host>: <command>: <stderr line>`
 * (the line that matched a rule, or the first stderr line); `stderr` keeps everything.
 */
export function zfsError(host: string, argv: readonly string[], result: ExecResult): ZfsError {
  const cmd = commandName(argv);
  const stderr = result.stderr;
  if (result.exitCode === null) {
    const msg = `${host}: ${cmd}: killed by ${result.signal ?? "a signal"}${stderr.trim() ? `: ${lines(stderr)[0]}` : ""}`;
    return new ZfsError("Internal", msg, "killed", argv, stderr, null);
  }
  const found = classifyStderr(stderr);
  if (found === undefined) {
    const first = lines(stderr)[0];
    const msg = `${host}: ${cmd}: ${first ?? `exited ${result.exitCode} with no error output`}`;
    return new ZfsError("Internal", msg, "unclassified", argv, stderr, result.exitCode);
  }
  const msg = `${host}: ${cmd}: ${found.line}`;
  if (found.kind === "Busy") return new ZfsBusyError(msg, argv, stderr, result.exitCode);
  return new ZfsError(found.kind, msg, found.reason, argv, stderr, result.exitCode);
}

/**
 * True when every stderr line is one the table reads as `notFound` (e.g. `zfs get a b` where
 * some names do not exist), and nothing else went wrong.
 */
export function onlyMissingDatasets(stderr: string): boolean {
  const all = lines(stderr);
  return all.length > 0 && all.every((l) => classifyStderr(l)?.reason === "notFound");
}

/** A `zfs send -t` refused because its resume token no longer fits the source. Same as `hasReason(err, "staleResumeToken")`. */
export function isStaleResumeToken(err: unknown): boolean {
  return hasReason(err, "staleResumeToken");
}

/** An incremental receive refused because the target was written after its newest snapshot. Same as `hasReason(err, "targetModified")`. */
export function isTargetModified(err: unknown): boolean {
  return hasReason(err, "targetModified");
}
