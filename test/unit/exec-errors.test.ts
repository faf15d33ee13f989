import { describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import { classifyExecStderr, EXEC_CLASSIFICATION_TABLE, EXEC_REASON_KIND, execError, hasExecReason, isChannelOpenFailure, reasonOf, sshfsError, type ExecReason } from "../../src/exec/errors.js";

/**
 * Strings recorded on this machine (util-linux 2.38.1, SSHFS 3.7.3 / FUSE 3.14.0, OpenSSH 9.2p1),
 * each with the reason the table must give it. Not recorded here, kept from the mounter's earlier
 * table and the sshfs logs of the integration tests: host key, publickey, refused, sudo, the
 * "remote host has disconnected" of an sftp-server that does not start, "timed out", "fuse:".
 */
const RECORDED: ReadonlyArray<readonly [string, ExecReason]> = [
  ["umount: /tmp/h4m/a: not mounted.\n", "notMounted"],
  ["umount: /tmp/h4m/a: target is busy.\n", "busy"],
  ["mount: /tmp/h4m/a: special device /tmp/h4m/nope does not exist.\n       dmesg(1) may have more information after failed mount system call.\n", "noSuchFile"],
  // sshfs whose ssh ends before the sftp handshake (ssh_command=true / false), and after it.
  ["write: Broken pipe\n", "hostDisconnected"],
  ["read: Connection reset by peer\n", "hostDisconnected"],
  ["remote host has disconnected\n", "hostDisconnected"],
  ["Host key verification failed.\nread: Connection reset by peer\n", "hostKeyMismatch"],
  ["zcsi@10.213.0.1: Permission denied (publickey).\nread: Connection reset by peer\n", "authenticationFailed"],
  ["ssh: connect to host 10.213.0.1 port 2222: Connection refused\nread: Connection reset by peer\n", "connectionRefused"],
  ["sudo: a password is required\nremote host has disconnected\n", "sudoRefused"],
  ["remote: No such file or directory\n", "noSuchFile"],
  ["mount: /tmp/h4m/a: /dev/loop0 already mounted on /tmp/h4m/a.\n       dmesg(1) may have more information after failed mount system call.\n", "alreadyMounted"],
  ["umount: /tmp/h4m/a: must be superuser to unmount.\n", "permissionDenied"],
  ["fuse: mountpoint is not empty\n", "fuseFailure"],
  ["ssh: connect to host 10.0.0.9 port 22: Connection timed out\n", "hostUnreachable"],
];

describe("the exec error table (ssh, sshfs, mount, umount)", () => {
  it.each(RECORDED)("reads %j as %s", (stderr, reason) => {
    expect(classifyExecStderr(stderr).reason).toBe(reason);
  });

  it("has a string for every reason it can give", () => {
    const covered = new Set(RECORDED.map(([, r]) => r));
    const reasons = new Set(EXEC_CLASSIFICATION_TABLE.map((r) => r.reason));
    expect([...reasons].filter((r) => !covered.has(r))).toEqual([]);
    expect(Object.keys(EXEC_REASON_KIND).sort()).toEqual([...reasons, "unclassified"].sort());
  });

  it("reads the cause ssh prints first, not the reset that follows it", () => {
    expect(classifyExecStderr("Host key verification failed.\nread: Connection reset by peer").line).toBe("Host key verification failed.");
  });
});

describe("sshfsError", () => {
  it.each([
    ["remote: No such file or directory", "NotFound"],
    ["Host key verification failed.\nread: Connection reset by peer", "FailedPrecondition"],
    ["zcsi@10.213.0.1: Permission denied (publickey).\nread: Connection reset by peer", "FailedPrecondition"],
    ["ssh: connect to host 10.213.0.1 port 2222: Connection refused\nread: Connection reset by peer", "Unavailable"],
    ["", "Unavailable"],
  ])("maps %j to %s, as the mounter always did", (log, kind) => {
    expect(sshfsError(log, "ctx").kind).toBe(kind);
  });

  it("keeps the context and the log's last lines in the message, and the reason on the error", () => {
    const err = sshfsError("line1\nline2\nline3\nline4\nline5\nremote host has disconnected\n", "volume v: sshfs from alice");
    expect(err.message).toBe("volume v: sshfs from alice: line2; line3; line4; line5; remote host has disconnected");
    expect(err).toBeInstanceOf(ZcsiError);
    expect(hasExecReason(err, "hostDisconnected")).toBe(true);
    expect(hasExecReason(err, "connectionRefused", "hostDisconnected")).toBe(true);
    expect(hasExecReason(err, "connectionRefused")).toBe(false);
    expect(sshfsError("", "ctx").message).toBe("ctx: sshfs exited without a message");
  });
});

describe("execError", () => {
  it("names the line that classified it, or the first line", () => {
    expect(execError("umount: /m/a: not mounted.\n", "unstage v").message).toBe("unstage v: umount: /m/a: not mounted.");
    const odd = execError("something new\nsecond\n", "ctx");
    expect([odd.message, odd.reason, odd.kind]).toEqual(["ctx: something new", "unclassified", "Unavailable"]);
  });
});

describe("reasons are never read from plain errors", () => {
  it("has no reason for an error no table classified, whatever its message", () => {
    expect(reasonOf(new ZcsiError("Unavailable", "remote host has disconnected"))).toBeUndefined();
    expect(hasExecReason(new Error("remote host has disconnected"), "hostDisconnected")).toBe(false);
  });
});

describe("isChannelOpenFailure", () => {
  it("recognises ssh2's refused channel by its reason code, not its text", () => {
    const refused = Object.assign(new Error("(SSH) Channel open failure: open failed"), { reason: 2 });
    const closed = Object.assign(new Error("(SSH) Channel open failure: server closed channel unexpectedly"), { reason: "" });
    expect(isChannelOpenFailure(refused)).toBe(true);
    expect(isChannelOpenFailure(closed)).toBe(true);
    expect(isChannelOpenFailure(new Error("(SSH) Channel open failure: open failed"))).toBe(false);
    expect(isChannelOpenFailure(new Error("Not connected"))).toBe(false);
  });
});
