import { describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import { reasonOf } from "../../src/exec/errors.js";
import { classifyStderr, hasReason, isBusy, isStaleResumeToken, isTargetModified, onlyMissingDatasets, ZFS_REASON_KIND, ZfsBusyError, ZfsError, zfsError, type ZfsReason } from "../../src/zfs/errors.js";
import { allFixtures, fixture, type Fixture } from "../fixtures/zfs/load.js";

const failures = (source: Fixture["source"]): Fixture[] => allFixtures(source).filter((f) => f.expect !== "ok");

/** Reasons a table rule can give (not `killed`/`unclassified`, which no stderr pattern yields). */
const TABLE_REASONS = (Object.keys(ZFS_REASON_KIND) as ZfsReason[]).filter((r) => r !== "killed" && r !== "unclassified");

/**
 * Reasons a backend has no string of its own for, each with why. Every other reason must have a
 * recorded failure on that backend, so a zfs version that rewords one fails here.
 */
const NOT_ON_BACKEND: Record<Fixture["source"], Partial<Record<ZfsReason, string>>> = {
  "zfs-fuse": {
    held: "zfs-fuse answers the destroy of a held snapshot with \"dataset is busy\" (recorded: destroy-held-snapshot reads as busy)",
    staleResumeToken: "zfs-fuse has no resumable send: `zfs send -t` is an unknown option (recorded: send-resume-token reads as unsupported)",
  },
  openzfs: {},
};

describe.each(["zfs-fuse", "openzfs"] as const)("recorded %s failures cover the reason table", (source) => {
  const recorded = failures(source);

  it("has a recorded failure for every reason, except those the backend has no string for", () => {
    const reasons = new Set(recorded.map((f) => f.reason));
    const missing = TABLE_REASONS.filter((r) => !reasons.has(r) && NOT_ON_BACKEND[source][r] === undefined);
    expect(missing).toEqual([]);
  });

  it("names a reason in every failure fixture, and the table gives that reason and its kind", () => {
    for (const f of recorded) {
      const err = zfsError("h", f.argv, f);
      expect([f.name, err.reason]).toEqual([f.name, f.reason]);
      expect([f.name, ZFS_REASON_KIND[err.reason]]).toEqual([f.name, f.expect]);
      expect(hasReason(err, err.reason)).toBe(true);
      expect(reasonOf(err)).toBe(f.reason);
    }
  });
});

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
    const silent = zfsError("h", argv, { stdout: "", stderr: "", exitCode: 3 });
    expect(silent.message).toBe("h: zfs create: exited 3 with no error output");
    expect(silent.reason).toBe("unclassified");
    const killed = zfsError("h", argv, { stdout: "", stderr: "", exitCode: null, signal: "SIGABRT" });
    expect(killed.kind).toBe("Internal");
    expect(killed.reason).toBe("killed");
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
  it("reads the recorded partial `zfs get` of both backends as only missing datasets", () => {
    expect(onlyMissingDatasets(fixture("zfs-fuse", "get-partial-missing").stderr)).toBe(true);
    expect(onlyMissingDatasets(fixture("openzfs", "get-partial-missing").stderr)).toBe(true);
  });
  it("is false for anything else", () => {
    expect(onlyMissingDatasets("")).toBe(false);
    expect(onlyMissingDatasets("cannot create 'p/x/y': parent does not exist\n")).toBe(false);
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

  it("tells a hold tag that exists from a dataset that exists, though both are AlreadyExists", () => {
    const tag = fail(["zfs", "hold", "t", "p/a@s1"], "cannot hold 'p/a@s1': tag already exists on this dataset\n");
    const dataset = fail(["zfs", "create", "p/a"], "cannot create 'p/a': dataset already exists\n");
    expect([tag.kind, dataset.kind]).toEqual(["AlreadyExists", "AlreadyExists"]);
    expect(hasReason(tag, "tagExists")).toBe(true);
    expect(hasReason(dataset, "tagExists")).toBe(false);
    expect(hasReason(dataset, "tagExists", "alreadyExists")).toBe(true);
  });

  it("tells children from dependent clones, though both are FailedPrecondition", () => {
    const children = zfsError("h", fixture("zfs-fuse", "destroy-has-children").argv, fixture("zfs-fuse", "destroy-has-children"));
    const clones = zfsError("h", fixture("openzfs", "destroy-snapshot-dependent-clones").argv, fixture("openzfs", "destroy-snapshot-dependent-clones"));
    expect([children.reason, clones.reason]).toEqual(["hasChildren", "dependentClones"]);
    expect(hasReason(children, "dependentClones")).toBe(false);
  });

  it("gives no reason to errors no table classified", () => {
    expect(hasReason(new Error("dataset is busy"), "busy")).toBe(false);
    expect(reasonOf(new ZcsiError("Unavailable", "has dependent clones"))).toBeUndefined();
  });
});
