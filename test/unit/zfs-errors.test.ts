import { describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import { classifyStderr, isBusy, isStaleResumeToken, isTargetModified, onlyMissingDatasets, ZfsBusyError, ZfsError, zfsError } from "../../src/zfs/errors.js";
import { allFixtures, type Fixture } from "../fixtures/zfs/load.js";

const failures = (source: Fixture["source"]): Fixture[] => allFixtures(source).filter((f) => f.expect !== "ok");

describe("classification of real zfs-fuse failures (recorded)", () => {
  const recorded = failures("zfs-fuse");

  it("has a recorded failure for every kind the table promises", () => {
    const kinds = new Set(recorded.map((f) => f.expect));
    for (const k of ["NotFound", "AlreadyExists", "Busy", "OutOfRange", "ResourceExhausted", "PermissionDenied", "FailedPrecondition", "InvalidArgument", "Unimplemented", "Unavailable"]) {
      expect(kinds).toContain(k);
    }
  });

  it.each(recorded.map((f) => [f.name, f] as const))("%s", (_name, f) => {
    expect(f.exitCode).not.toBe(0);
    const err = zfsError("host1", f.argv, f);
    if (f.expect === "Busy") {
      expect(err).toBeInstanceOf(ZfsBusyError);
      expect(isBusy(err)).toBe(true);
      expect(err.kind).toBe("Unavailable");
    } else {
      expect(isBusy(err)).toBe(false);
      expect(err.kind).toBe(f.expect);
    }
    // The stderr text stays in the message (the line that classified it) and whole in .stderr.
    expect(err.message).toContain(classifyStderr(f.stderr)?.line ?? "");
    expect(err.message.startsWith(`host1: ${f.argv[0] === "su" || f.argv[0] === "unshare" ? "" : f.argv.slice(0, 2).join(" ")}`)).toBe(true);
    expect(err.stderr).toBe(f.stderr);
    expect(err).toBeInstanceOf(ZcsiError);
  });
});

describe("classification of real OpenZFS 2.3 failures (recorded on the test VM)", () => {
  const recorded = failures("openzfs");

  it("has a recorded failure for every kind the table promises", () => {
    const kinds = new Set(recorded.map((f) => f.expect));
    for (const k of ["NotFound", "AlreadyExists", "Busy", "OutOfRange", "ResourceExhausted", "PermissionDenied", "FailedPrecondition", "InvalidArgument", "Unimplemented", "Unavailable"]) {
      expect(kinds).toContain(k);
    }
  });

  it.each(recorded.map((f) => [f.name, f] as const))("%s", (_name, f) => {
    expect(f.exitCode).not.toBe(0);
    const err = zfsError("h", f.argv, f);
    if (f.expect === "Busy") {
      expect(isBusy(err)).toBe(true);
    } else {
      expect(isBusy(err)).toBe(false);
      expect(err.kind).toBe(f.expect);
    }
    expect(err.message).toContain(classifyStderr(f.stderr)?.line ?? "");
  });

  it("every recorded success exited 0 with nothing on stderr", () => {
    for (const f of allFixtures("openzfs").filter((x) => x.expect === "ok" && x.name !== "zfs-version-no-module")) {
      expect([f.name, f.exitCode, f.stderr]).toEqual([f.name, 0, ""]);
    }
  });
});

describe("zfsError", () => {
  const argv = ["zfs", "create", "tank/a"];

  it("keeps the classifying line, not the first, in the message", () => {
    const err = zfsError("h", argv, {
      stdout: "",
      stderr: "umount: /m/a: target is busy.\ncannot unmount '/m/a': umount failed: umount child process failed\n",
      exitCode: 1,
    });
    expect(err.message).toBe("h: zfs create: umount: /m/a: target is busy.");
  });

  it("falls back to Internal with the first stderr line, trimmed", () => {
    const err = zfsError("h", argv, { stdout: "", stderr: "  something new went wrong  \nsecond line\n", exitCode: 1 });
    expect(err.kind).toBe("Internal");
    expect(err.message).toBe("h: zfs create: something new went wrong");
    expect(err.stderr).toContain("second line");
  });

  it("reports a silent failure and a signal as Internal", () => {
    expect(zfsError("h", argv, { stdout: "", stderr: "", exitCode: 3 }).message).toBe("h: zfs create: exited 3 with no error output");
    const killed = zfsError("h", argv, { stdout: "", stderr: "", exitCode: null, signal: "SIGABRT" });
    expect(killed.kind).toBe("Internal");
    expect(killed.message).toMatch(/killed by SIGABRT/);
  });

  it("names the zfs command even behind sudo -n", () => {
    const err = zfsError("h", ["sudo", "-n", "zfs", "destroy", "t/a"], { stdout: "", stderr: "sudo: a password is required\n", exitCode: 1 });
    expect(err.kind).toBe("PermissionDenied");
    expect(err.message).toBe("h: zfs destroy: sudo: a password is required");
    expect(err).toBeInstanceOf(ZfsError);
    expect(err.argv).toEqual(["sudo", "-n", "zfs", "destroy", "t/a"]);
  });

  it("does not let 'parent does not exist' look like NotFound", () => {
    expect(classifyStderr("cannot create 'p/x/y': parent does not exist")?.kind).toBe("FailedPrecondition");
  });

  it("prefers PermissionDenied over the library-init line that follows it", () => {
    expect(classifyStderr("connect: Permission denied\ninternal error: failed to initialize ZFS library\n")?.kind).toBe("PermissionDenied");
  });
});

describe("onlyMissingDatasets", () => {
  it("is true when every line names a missing dataset", () => {
    expect(onlyMissingDatasets("cannot open 'a/b': dataset does not exist\ncannot open 'a/c': dataset does not exist\n")).toBe(true);
  });
  it("is false for anything else", () => {
    expect(onlyMissingDatasets("")).toBe(false);
    expect(onlyMissingDatasets("cannot open 'a/b': dataset does not exist\nconnect: Permission denied\n")).toBe(false);
  });
});

describe("replication failures (seen on zfs-fuse 0.7.0 and OpenZFS 2.3.2)", () => {
  const fail = (argv: string[], stderr: string, exitCode = 1): ZfsError => zfsError("bob", argv, { stdout: "", stderr, exitCode });

  it("reads a modified target as FailedPrecondition, also when zfs-fuse wraps the line", () => {
    const fuse = fail(["zfs", "receive", "-u", "p/t/r"], "cannot receive incremental stream: destination p/t/r has been modified\nsince most recent snapshot\n");
    const openzfs = fail(["zfs", "receive", "-u", "-s", "p/t/r"], "cannot receive incremental stream: destination p/t/r has been modified since most recent snapshot\n");
    for (const e of [fuse, openzfs]) {
      expect(e.kind).toBe("FailedPrecondition");
      expect(isTargetModified(e)).toBe(true);
      expect(isStaleResumeToken(e)).toBe(false);
    }
  });

  it("reads a resume token the source no longer accepts as stale", () => {
    for (const stderr of [
      "cannot resume send: 'p/a@s1' used in the initial send no longer exists\n",
      "cannot resume send: resume token is corrupt (incorrect checksum)\n",
    ]) {
      const e = fail(["zfs", "send", "-t", "1-a-b-c"], stderr, 255);
      expect(e.kind).toBe("FailedPrecondition");
      expect(isStaleResumeToken(e)).toBe(true);
    }
    expect(isStaleResumeToken(fail(["zfs", "send", "p/a@s"], "cannot open 'p/a@s': dataset does not exist\n"))).toBe(false);
  });

  it("reads a release of a tag that is not there as NotFound, and a held snapshot's destroy as FailedPrecondition on OpenZFS", () => {
    expect(fail(["zfs", "release", "t", "p/a@s1"], "cannot release 't' from 'p/a@s1': no such tag on this dataset\n").kind).toBe("NotFound");
    expect(fail(["zfs", "destroy", "p/a@s1"], "cannot destroy snapshot p/a@s1: it's being held. Run 'zfs holds -r p/a@s1' to see holders.\n").kind).toBe("FailedPrecondition");
  });
});
