import { ZcsiError, type ErrorKind } from "../errors.js";

/**
 * The error table below zfs: what ssh, sshfs, mount and umount print when they fail, read as a
 * typed reason. Decisions are taken on the reason (`hasReason(err, "hostDisconnected")`), never
 * on the message, so a reworded message breaks one pattern here, with a test, not a caller.
 * zfs/errors.ts holds the zfs/zpool table and builds on this module's ClassifiedError.
 */

/** Why a command below zfs failed. */
export type ExecReason =
  /** ssh or sshfs lost the connection, or the server ended the session at once (sftp-server did not start). */
  | "hostDisconnected"
  /** Nothing listens at the address:port (sshd down). */
  | "connectionRefused"
  /** No route, no name, or no answer in time: the host cannot be reached. */
  | "hostUnreachable"
  /** The server's host key is not the pinned one. */
  | "hostKeyMismatch"
  /** The server refused our key. */
  | "authenticationFailed"
  /** sudo refused (no rule, or a password would be needed). */
  | "sudoRefused"
  /** A path (mountpoint, remote directory, program) does not exist. */
  | "noSuchFile"
  /** A mount or unmount refused because a process uses the mount. */
  | "busy"
  /** umount of something that is not a mount point. */
  | "notMounted"
  /** mount of something already mounted there. */
  | "alreadyMounted"
  /** Not allowed to mount or unmount (not root, no CAP_SYS_ADMIN). */
  | "permissionDenied"
  /** FUSE itself refused (no /dev/fuse, a non-empty mountpoint, a dead FUSE endpoint). */
  | "fuseFailure"
  /** No rule matched. */
  | "unclassified";

/** A ZcsiError whose cause one of the error tables named. `R` is that table's vocabulary. */
export class ClassifiedError<R extends string = string> extends ZcsiError {
  constructor(
    kind: ErrorKind,
    message: string,
    readonly reason: R,
    options?: { cause?: unknown },
  ) {
    super(kind, message, options);
  }
}

/** The reason an error table gave `err`, or undefined for an error no table classified. */
export function reasonOf(err: unknown): string | undefined {
  return err instanceof ClassifiedError ? err.reason : undefined;
}

/** True when `err` was classified with one of `reasons` (zfs/errors.ts has the wider `hasReason`). */
export function hasExecReason(err: unknown, ...reasons: readonly ExecReason[]): boolean {
  const reason = reasonOf(err);
  return reason !== undefined && (reasons as readonly string[]).includes(reason);
}

export interface ExecRule {
  readonly pattern: RegExp;
  readonly reason: ExecReason;
  /** Where the string comes from, for the reader (recorded strings: test/unit/exec-errors.test.ts). */
  readonly seen: string;
}

/** The kind each exec-level reason maps to (csi/errors.ts then maps the kind to a gRPC code). */
export const EXEC_REASON_KIND: Readonly<Record<ExecReason, ErrorKind>> = {
  hostDisconnected: "Unavailable",
  connectionRefused: "Unavailable",
  hostUnreachable: "Unavailable",
  // Configuration the operator must fix: retrying cannot help.
  hostKeyMismatch: "FailedPrecondition",
  authenticationFailed: "FailedPrecondition",
  sudoRefused: "FailedPrecondition",
  noSuchFile: "NotFound",
  busy: "Unavailable",
  notMounted: "FailedPrecondition",
  alreadyMounted: "FailedPrecondition",
  // The node plugin's own privileges, or the remote account's: configuration, like authentication.
  permissionDenied: "FailedPrecondition",
  fuseFailure: "Internal",
  // An sshfs that exits without a reason we know is most often a connection that went away.
  unclassified: "Unavailable",
};

/**
 * ssh, sshfs, mount and umount stderr → reason. Order matters: the first rule whose pattern
 * matches any line wins, so the cause ("Host key verification failed") comes before the
 * consequence ssh prints after it ("read: Connection reset by peer").
 */
export const EXEC_CLASSIFICATION_TABLE: readonly ExecRule[] = [
  { pattern: /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i, reason: "hostKeyMismatch", seen: "ssh (sshfs): Host key verification failed." },
  { pattern: /Permission denied \(|Too many authentication failures/i, reason: "authenticationFailed", seen: "ssh (sshfs): zcsi@10.213.0.1: Permission denied (publickey)." },
  { pattern: /sudo: /i, reason: "sudoRefused", seen: "sudo -n: sudo: a password is required" },
  { pattern: /Connection refused/i, reason: "connectionRefused", seen: "ssh: connect to host 10.213.0.1 port 2222: Connection refused" },
  { pattern: /timed out|No route to host|Network is unreachable|Could not resolve/i, reason: "hostUnreachable", seen: "ssh: connect to host 10.0.0.9 port 22: Connection timed out" },
  { pattern: /remote host has disconnected|Connection reset|Connection closed|connection lost|Broken pipe/i, reason: "hostDisconnected", seen: "sshfs 3.7: remote host has disconnected; read: Connection reset by peer; write: Broken pipe (ssh ended before the sftp handshake)" },
  { pattern: /target is busy|device or resource busy/i, reason: "busy", seen: "util-linux 2.38: umount: /m/a: target is busy." },
  { pattern: /: not mounted\.?$|not a mount ?point/i, reason: "notMounted", seen: "util-linux 2.38: umount: /m/a: not mounted." },
  { pattern: /already mounted/i, reason: "alreadyMounted", seen: "mount: /m/a: /src already mounted on /m/a." },
  { pattern: /fuse: |mountpoint is not empty|Transport endpoint/i, reason: "fuseFailure", seen: "sshfs: fuse: mountpoint is not empty" },
  { pattern: /must be superuser|Operation not permitted|permission denied/i, reason: "permissionDenied", seen: "umount: /m/a: must be superuser to unmount." },
  { pattern: /No such file or directory|mount point does not exist|special device .* does not exist/i, reason: "noSuchFile", seen: "sshfs: remote: No such file or directory; mount: /m/a: special device /s does not exist." },
];

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

/** Which reason a stderr (or sshfs log) text means, and the line that said so. */
export function classifyExecStderr(stderr: string): { reason: ExecReason; line: string | undefined } {
  const all = lines(stderr);
  for (const rule of EXEC_CLASSIFICATION_TABLE) {
    const line = all.find((l) => rule.pattern.test(l));
    if (line !== undefined) return { reason: rule.reason, line };
  }
  return { reason: "unclassified", line: undefined };
}

/**
 * An sshfs (or its ssh) that did not mount, as a typed error: `<context>: <last lines of its
 * log>`. The last five lines, joined: sshfs writes its cause last.
 */
export function sshfsError(log: string, context: string): ClassifiedError<ExecReason> {
  const text = lines(log).slice(-5).join("; ") || "sshfs exited without a message";
  const { reason } = classifyExecStderr(log);
  return new ClassifiedError(EXEC_REASON_KIND[reason], `${context}: ${text}`, reason);
}

/** A mount/umount/ssh command's failure, as a typed error `<context>: <stderr>`. */
export function execError(stderr: string, context: string): ClassifiedError<ExecReason> {
  const { reason, line } = classifyExecStderr(stderr);
  const text = line ?? (lines(stderr)[0] || "failed without a message");
  return new ClassifiedError(EXEC_REASON_KIND[reason], `${context}: ${text}`, reason);
}

/**
 * An ssh2 library error that refused a channel (RFC 4254 §5.1 SSH_MSG_CHANNEL_OPEN_FAILURE,
 * e.g. sshd at MaxSessions): the command never started. ssh2 marks these with a `reason`
 * property (the RFC's code, or "" when the server closed the channel instead).
 */
export function isChannelOpenFailure(err: unknown): boolean {
  return err instanceof Error && "reason" in err && (typeof err.reason === "number" || err.reason === "");
}
