import { ZcsiError, type ErrorKind } from "../errors.js";
import type { ExecResult } from "../exec/executor.js";

/**
 * The one place where zfs/zpool stderr becomes a typed error. Every pattern here was seen on a
 * real system; the recorded strings live in test/fixtures/zfs/ and test/unit/zfs-errors.test.ts
 * replays them. Order matters: the first rule whose pattern matches any stderr line wins, so
 * specific rules ("parent does not exist") come before general ones ("does not exist").
 */

/** A zfs/zpool command that failed, classified. Keeps the full stderr for logs. */
export class ZfsError extends ZcsiError {
  constructor(
    kind: ErrorKind,
    message: string,
    readonly argv: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(kind, message);
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
    super("Unavailable", message, argv, stderr, exitCode);
  }
}

export function isBusy(err: unknown): err is ZfsBusyError {
  return err instanceof ZfsBusyError;
}

/** "Busy" is not an ErrorKind of its own: it is an Unavailable that callers may retry. */
export type Classification = ErrorKind | "Busy";

interface Rule {
  readonly pattern: RegExp;
  readonly kind: Classification;
  /** Where the string comes from, for the reader (zfs-fuse 0.7.0 and OpenZFS 2.3.2, both recorded). */
  readonly seen: string;
}

export const CLASSIFICATION_TABLE: readonly Rule[] = [
  // Permission first: zfs-fuse reports a refused daemon socket as
  // "connect: Permission denied" followed by "internal error: failed to initialize ZFS library".
  { pattern: /permission denied/i, kind: "PermissionDenied", seen: "zfs-fuse: connect: Permission denied; OpenZFS: cannot create 'x': permission denied" },
  { pattern: /a password is required/i, kind: "PermissionDenied", seen: "sudo -n: sudo: a password is required" },
  { pattern: /must be run as root|operation not permitted|insufficient privileges/i, kind: "PermissionDenied", seen: "OpenZFS as non-root" },
  { pattern: /dataset is busy|pool or dataset is busy|pool is busy|target is busy|device or resource busy/i, kind: "Busy", seen: "zfs-fuse: cannot destroy 'p/a': dataset is busy; umount: /m/a: target is busy." },
  // A missing parent is a configuration problem, not a missing object: keep it out of NotFound so
  // that callers treating NotFound as "already gone" are never fooled by it.
  { pattern: /parent does not exist/i, kind: "FailedPrecondition", seen: "zfs-fuse: cannot create 'p/x/y': parent does not exist" },
  // A hold tag that is not on the snapshot (zfs release): the hold is already gone.
  { pattern: /no such tag on this dataset/i, kind: "NotFound", seen: "zfs-fuse: cannot release 'zcsi-repl-j2' from 'p/a@s1': no such tag on this dataset" },
  // An incremental receive into a target written since its newest snapshot (without -F, which
  // would roll it back). zfs-fuse wraps it: "...has been modified" / "since most recent snapshot".
  { pattern: /has been modified$|has been modified since most recent snapshot/i, kind: "FailedPrecondition", seen: "zfs-fuse: cannot receive incremental stream: destination p/t/r has been modified\nsince most recent snapshot" },
  // `zfs send -t` whose token no longer fits the source (libzfs zfs_send_resume_impl): the
  // snapshot it names was destroyed or replaced, or the token is damaged.
  { pattern: /cannot resume send|resume token is corrupt|resume token version/i, kind: "FailedPrecondition", seen: "OpenZFS 2.3: cannot resume send: 'p/a@s' used in the initial send no longer exists" },
  { pattern: /does not exist|no such pool|no such dataset|could not find any snapshots/i, kind: "NotFound", seen: "zfs-fuse: cannot open 'p/x': dataset does not exist; cannot open 'x': no such pool; OpenZFS: could not find any snapshots to destroy; check snapshot names." },
  { pattern: /already exists|^cannot receive new filesystem stream: destination '[^']*' exists$/i, kind: "AlreadyExists", seen: "zfs-fuse: cannot create 'p/a': dataset already exists; OpenZFS 2.3: cannot receive new filesystem stream: destination 'p/d' exists" },
  // Shrinking a quota below what is used: the request is out of the valid range for this dataset.
  { pattern: /size is less than current used or reserved space/i, kind: "OutOfRange", seen: "zfs-fuse: cannot set property for 'p/a': size is less than current used or reserved space" },
  { pattern: /out of space|quota exceeded|size is greater than available space|no space left on device/i, kind: "ResourceExhausted", seen: "zfs-fuse: cannot create 'p/b': out of space; cannot set property for 'p/q': size is greater than available space" },
  // A snapshot with a user hold (`zfs hold`) stays until released: not transient, so not Busy.
  { pattern: /has children|has dependent clones|not a cloned filesystem|snapshots must be part of same dataset|not currently mounted|it's being held/i, kind: "FailedPrecondition", seen: "zfs-fuse: filesystem has children; snapshot has dependent clones; cannot promote 'p/a': not a cloned filesystem; OpenZFS 2.3: cannot destroy snapshot p/a@s1: it's being held. Run 'zfs holds -r p/a@s1' to see holders." },
  { pattern: /invalid property|bad numeric value|bad property value|invalid dataset name|invalid character|cannot be inherited|name is too long|snapshot delimiter/i, kind: "InvalidArgument", seen: "zfs-fuse: cannot create 'p/q': bad numeric value 'abc'; invalid property 'nosuchprop'; 'quota' property cannot be inherited" },
  // The host's zfs lacks an option or subcommand we used: a capability we should have probed.
  { pattern: /invalid option|unrecognized command|unknown option|function not implemented|operation not supported/i, kind: "Unimplemented", seen: "zfs-fuse: invalid option 'p'; unrecognized command 'version'; internal error: Function not implemented (zfs create -V)" },
  { pattern: /daemon is running|failed to initialize zfs library|connection refused|modules are not loaded|modules cannot be auto-loaded|\/dev\/zfs/i, kind: "Unavailable", seen: "zfs-fuse without daemon: connect: No such file or directory / Please make sure that the zfs-fuse daemon is running.; OpenZFS 2.3 without its module: The ZFS modules cannot be auto-loaded." },
];

function lines(stderr: string): string[] {
  return stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

/** Which kind a stderr text means, and the line that said so (undefined: no rule matched). */
export function classifyStderr(stderr: string): { kind: Classification; line: string } | undefined {
  const all = lines(stderr);
  for (const rule of CLASSIFICATION_TABLE) {
    const line = all.find((l) => rule.pattern.test(l));
    if (line !== undefined) return { kind: rule.kind, line };
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
    return new ZfsError("Internal", msg, argv, stderr, null);
  }
  const found = classifyStderr(stderr);
  if (found === undefined) {
    const first = lines(stderr)[0];
    const msg = `${host}: ${cmd}: ${first ?? `exited ${result.exitCode} with no error output`}`;
    return new ZfsError("Internal", msg, argv, stderr, result.exitCode);
  }
  const msg = `${host}: ${cmd}: ${found.line}`;
  if (found.kind === "Busy") return new ZfsBusyError(msg, argv, stderr, result.exitCode);
  return new ZfsError(found.kind, msg, argv, stderr, result.exitCode);
}

/** True when every stderr line says some named dataset does not exist (and nothing else). */
export function onlyMissingDatasets(stderr: string): boolean {
  const all = lines(stderr);
  return all.length > 0 && all.every((l) => /^cannot open '[^']*': dataset does not exist$/.test(l));
}

/** A `zfs send -t` refused because its resume token no longer fits the source (see the table). */
export function isStaleResumeToken(err: unknown): boolean {
  return err instanceof ZfsError && err.kind === "FailedPrecondition" && /cannot resume send|resume token is corrupt|resume token version/i.test(err.stderr);
}

/** An incremental receive refused because the target was written after its newest snapshot. */
export function isTargetModified(err: unknown): boolean {
  return err instanceof ZfsError && /has been modified/i.test(err.stderr);
}
