import { describe, expect, it } from "vitest";
import { capabilitiesFromProbe, capabilitiesFromUsage, compressionFamily, propertyLimits, usageEntries } from "../../src/zfs/capabilities.js";
import { zfsError } from "../../src/zfs/errors.js";
import { fixture, fixtureText } from "../fixtures/zfs/load.js";

describe("capabilities from `zfs version`", () => {
  it("recognises zfs-fuse from its recorded usage text: no list -p, no resumable send", () => {
    expect(capabilitiesFromProbe(fixture("zfs-fuse", "zfs-version"))).toEqual({
      implementation: "zfs-fuse",
      listParsable: false,
      resumableSend: false,
      bookmarks: false,
      getTypeFilter: false,
      multiPropertySet: false,
      multiSnapshot: false,
      channelPrograms: false,
    });
  });

  it("recognises OpenZFS 2.x by its recorded version line", () => {
    expect(capabilitiesFromProbe(fixture("openzfs", "zfs-version"))).toEqual({
      implementation: "openzfs",
      version: "2.3.2-2~bpo12+2",
      listParsable: true,
      resumableSend: true,
      bookmarks: true,
      getTypeFilter: true,
      multiPropertySet: true,
      multiSnapshot: true,
      channelPrograms: true,
    });
  });

  it("says nothing when the kernel module is missing: OpenZFS 2.3 prints no version then, and the error is Unavailable", () => {
    const probe = fixture("openzfs", "zfs-version-no-module");
    expect(probe.stdout).toBe("");
    expect(capabilitiesFromProbe(probe)).toBeUndefined();
    expect(zfsError("h", probe.argv, probe).kind).toBe("Unavailable");
  });

  it("still reads the userland version when a CLI prints it before failing on the module", () => {
    // Not recorded (2.3.2 checks the module first); the parser accepts it should a version do so.
    const caps = capabilitiesFromProbe({ stdout: "zfs-2.1.5-1\n", stderr: "zfs_version_kernel() failed: No such file or directory\n", exitCode: 1 });
    expect(caps?.implementation).toBe("openzfs");
  });

  it("reads a pre-0.8 CLI's features from its usage text", () => {
    const caps = capabilitiesFromUsage(fixtureText("openzfs", "usage-zol-0.7.txt"));
    expect(caps).toEqual({
      implementation: "unknown",
      listParsable: true,
      resumableSend: true,
      bookmarks: true,
      getTypeFilter: true,
      multiPropertySet: true,
      multiSnapshot: true,
      channelPrograms: false,
    });
  });

  it("says nothing for an unrelated failure (the caller classifies it)", () => {
    expect(capabilitiesFromProbe(fixture("zfs-fuse", "daemon-not-running"))).toBeUndefined();
    expect(capabilitiesFromProbe(fixture("zfs-fuse", "permission-denied-socket"))).toBeUndefined();
  });

  it("joins wrapped usage lines and aliases", () => {
    const usage = "\tget [-rHp] [-d max]\n\t    [-t type[,...]] <props>\n\tgetter x\n\treceive|recv [-vnsFu] <fs>\n";
    expect(usageEntries(usage, "get")).toEqual(["get [-rHp] [-d max] [-t type[,...]] <props>"]);
    expect(usageEntries(usage, "recv")).toEqual(["receive|recv [-vnsFu] <fs>"]);
  });
});

describe("property limits from the capabilities", () => {
  it("zfs-fuse: no lz4 or zstd, records up to 128K", () => {
    const limits = propertyLimits(capabilitiesFromProbe(fixture("zfs-fuse", "zfs-version"))!);
    expect(limits).toEqual({ compression: ["on", "off", "lzjb", "gzip", "zle"], maxRecordsizeBytes: 131072, what: "zfs-fuse (pool version 23)" });
  });

  it("OpenZFS: lz4 always, zstd from 2.0, records up to 1M, 16M from 2.2", () => {
    const at = (version: string) => propertyLimits({ implementation: "openzfs", version, listParsable: true, resumableSend: true, bookmarks: true, getTypeFilter: true, multiPropertySet: true, multiSnapshot: true, channelPrograms: true });
    expect(at("2.3.2-2~bpo12+2")).toMatchObject({ maxRecordsizeBytes: 16 * 1024 * 1024, what: "OpenZFS 2.3.2-2~bpo12+2" });
    expect(at("2.3.2-2~bpo12+2")?.compression).toContain("zstd");
    expect(at("2.1.5-1")).toMatchObject({ maxRecordsizeBytes: 1024 * 1024 });
    expect(at("0.8.6-1")?.compression).toContain("lz4");
    expect(at("0.8.6-1")?.compression).not.toContain("zstd");
  });

  it("an implementation it cannot name gets no limits (zfs decides)", () => {
    expect(propertyLimits(capabilitiesFromUsage(fixtureText("openzfs", "usage-zol-0.7.txt")))).toBeUndefined();
  });

  it("groups compression values into families", () => {
    expect(["gzip-9", "zstd-19", "zstd-fast", "zstd", "lz4", "on"].map(compressionFamily)).toEqual(["gzip", "zstd", "zstd", "zstd", "lz4", "on"]);
  });
});
