import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import {
  validatePropertyName,
  validatePropertyValue,
  zfsClone,
  zfsCreate,
  zfsDestroy,
  zfsGet,
  zfsHold,
  zfsHolds,
  zfsInherit,
  zfsList,
  zfsPromote,
  zfsReceive,
  zfsReceiveAbort,
  zfsRelease,
  zfsRename,
  zfsSend,
  zfsSendResume,
  zfsSet,
  zfsSnapshot,
  zfsUnmount,
  zfsVersion,
  zpoolList,
} from "../../src/zfs/argv.js";

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!isZcsiError(err, "InvalidArgument")) throw err;
    return err.message;
  }
  throw new Error("expected InvalidArgument");
}

describe("zfsCreate", () => {
  it("puts every property in the one call, in order, name last", () => {
    expect(zfsCreate("tank/k8s/a", { quota: "1073741824", "zcsi:name": "pvc-1", mountpoint: "/m/a" })).toEqual([
      "zfs", "create", "-o", "quota=1073741824", "-o", "zcsi:name=pvc-1", "-o", "mountpoint=/m/a", "tank/k8s/a",
    ]);
  });
  it("supports -p and no properties", () => {
    expect(zfsCreate("tank/a/b", {}, { parents: true })).toEqual(["zfs", "create", "-p", "tank/a/b"]);
  });
  it("keeps shell metacharacters in values as one argv word (no shell is involved)", () => {
    expect(zfsCreate("tank/a", { "zcsi:pvc": "ns/$(reboot); `x` 'y' \"z\"" })).toContain("zcsi:pvc=ns/$(reboot); `x` 'y' \"z\"");
  });
  it.each([
    [{ quota: "1\n2" }, /must not contain NUL, newline or tab/],
    [{ "zcsi:x": "a\0b" }, /must not contain NUL/],
    [{ "zcsi:x": "a\tb" }, /tab/],
    [{ "zcsi:x": "x".repeat(8193) }, /longer than 8192 bytes/],
    [{ Quota: "1" }, /invalid property name "Quota"/],
    [{ "-o": "1" }, /invalid property name/],
    [{ "quota=1 -o mountpoint": "/" }, /invalid property name/],
    [{ "": "1" }, /invalid property name ""/],
    [{ "zcsi:Bad": "1" }, /contains "B"/],
  ])("refuses bad properties %j", (props, why) => {
    expect(invalid(() => zfsCreate("tank/a", props))).toMatch(why);
  });
  it("refuses bad names", () => {
    expect(invalid(() => zfsCreate("-o", {}))).toMatch(/starts with "-"/);
    expect(invalid(() => zfsCreate("tank/a@s", {}))).toMatch(/snapshot/);
  });
});

describe("zfsDestroy", () => {
  it("builds plain, recursive and deferred forms", () => {
    expect(zfsDestroy("tank/a")).toEqual(["zfs", "destroy", "tank/a"]);
    expect(zfsDestroy("tank/a", { recursive: true })).toEqual(["zfs", "destroy", "-r", "tank/a"]);
    expect(zfsDestroy("tank/a@s", { deferred: true })).toEqual(["zfs", "destroy", "-d", "tank/a@s"]);
  });
  it("refuses -d on a filesystem", () => {
    expect(invalid(() => zfsDestroy("tank/a", { deferred: true }))).toMatch(/snapshots only/);
  });
});

describe("zfsGet", () => {
  it("always asks for -Hp and the four fixed columns, many names in one call", () => {
    expect(zfsGet(["tank/a", "tank/b@s"], ["quota", "used", "zcsi:name"])).toEqual([
      "zfs", "get", "-Hp", "-o", "name,property,value,source", "quota,used,zcsi:name", "tank/a", "tank/b@s",
    ]);
  });
  it("adds -r or -d N", () => {
    expect(zfsGet(["tank"], ["used"], { recursive: true })).toContain("-r");
    expect(zfsGet(["tank"], ["used"], { depth: 1 })).toEqual(["zfs", "get", "-Hp", "-o", "name,property,value,source", "-d", "1", "used", "tank"]);
  });
  it("never passes -t (zfs-fuse has none)", () => {
    expect(zfsGet(["tank"], ["type"])).not.toContain("-t");
  });
  it.each([
    [[], ["used"], /at least one dataset/],
    [["tank"], [], /at least one property/],
    [["tank"], ["used,quota"], /invalid property name/],
    [["tank"], ["all", "used"], /"all" cannot be combined/],
    [["tank;id"], ["used"], /contains ";"/],
  ] as const)("refuses %j %j", (names, props, why) => {
    expect(invalid(() => zfsGet(names, props))).toMatch(why);
  });
  it("refuses a negative or fractional depth", () => {
    expect(invalid(() => zfsGet(["tank"], ["used"], { depth: -1 }))).toMatch(/depth/);
    expect(invalid(() => zfsGet(["tank"], ["used"], { depth: 1.5 }))).toMatch(/depth/);
  });
  it("accepts all", () => {
    expect(zfsGet(["tank"], ["all"])).toContain("all");
  });
});

describe("zfsList", () => {
  it("has no -p by default, name first, type and depth", () => {
    expect(zfsList("tank/k8s", { props: ["used", "zcsi:name"], type: "snapshot", depth: 1 })).toEqual([
      "zfs", "list", "-H", "-o", "name,used,zcsi:name", "-t", "snapshot", "-d", "1", "tank/k8s",
    ]);
  });
  it("adds -p only when asked (capability probed) and dedupes name", () => {
    expect(zfsList("tank", { props: ["name", "used", "used"], parsable: true, recursive: true })).toEqual([
      "zfs", "list", "-Hp", "-o", "name,used", "-t", "filesystem", "-r", "tank",
    ]);
  });
  it("refuses an unknown type", () => {
    expect(invalid(() => zfsList("tank", { props: [], type: "bookmark" as "all" }))).toMatch(/invalid list type/);
  });
});

describe("zfsSet / zfsInherit", () => {
  it("builds one assignment or many", () => {
    expect(zfsSet("tank/a", { refquota: "5" })).toEqual(["zfs", "set", "refquota=5", "tank/a"]);
    expect(zfsSet("tank/a@s", { "zcsi:a": "1", "zcsi:b": "x=y" })).toEqual(["zfs", "set", "zcsi:a=1", "zcsi:b=x=y", "tank/a@s"]);
  });
  it("refuses an empty set", () => {
    expect(invalid(() => zfsSet("tank/a", {}))).toMatch(/at least one property/);
  });
  it("inherits one property", () => {
    expect(zfsInherit("tank/a", "zcsi:x", { recursive: true })).toEqual(["zfs", "inherit", "-r", "zcsi:x", "tank/a"]);
  });
});

describe("zfsRename", () => {
  it("renames datasets and snapshots", () => {
    expect(zfsRename("tank/a", "tank/b")).toEqual(["zfs", "rename", "tank/a", "tank/b"]);
    expect(zfsRename("tank/a", "tank/x/b", { parents: true })).toEqual(["zfs", "rename", "-p", "tank/a", "tank/x/b"]);
    expect(zfsRename("tank/a@s", "tank/a@t")).toEqual(["zfs", "rename", "tank/a@s", "tank/a@t"]);
  });
  it.each([
    ["tank/a@s", "tank/b@s", /same dataset/],
    ["tank/a@s", "tank/b", /no "@"/],
    ["tank/a", "tank/a/b", /below itself/],
    ["tank/a", "other/a", /between pools/],
    ["tank/a", "tank/a", /to itself/],
  ])("refuses %s → %s", (from, to, why) => {
    expect(invalid(() => zfsRename(from, to))).toMatch(why);
  });
});

describe("snapshot, clone, promote, unmount, version, zpool list", () => {
  it("builds them", () => {
    expect(zfsSnapshot("tank/a@s", { "zcsi:name": "x" })).toEqual(["zfs", "snapshot", "-o", "zcsi:name=x", "tank/a@s"]);
    expect(zfsSnapshot("tank/a@s", {}, { recursive: true })).toEqual(["zfs", "snapshot", "-r", "tank/a@s"]);
    // Several names: one atomic snapshot of them all (OpenZFS), the properties on each.
    expect(zfsSnapshot(["tank/a@g", "tank/b@g"], { "zcsi:name": "g" })).toEqual(["zfs", "snapshot", "-o", "zcsi:name=g", "tank/a@g", "tank/b@g"]);
    expect(zfsClone("tank/a@s", "tank/b", { refquota: "1" })).toEqual(["zfs", "clone", "-o", "refquota=1", "tank/a@s", "tank/b"]);
    expect(zfsPromote("tank/b")).toEqual(["zfs", "promote", "tank/b"]);
    expect(zfsUnmount("tank/b")).toEqual(["zfs", "unmount", "tank/b"]);
    expect(zfsVersion()).toEqual(["zfs", "version"]);
    expect(zpoolList("tank")).toEqual(["zpool", "list", "-H", "-o", "name,health,size,free,allocated", "tank"]);
  });
  it("validates every input", () => {
    expect(invalid(() => zfsSnapshot("tank/a", {}))).toMatch(/no "@"/);
    expect(invalid(() => zfsSnapshot(["tank/a@g", "tank/b"], {}))).toMatch(/no "@"/);
    expect(invalid(() => zfsSnapshot([], {}))).toMatch(/at least one snapshot/);
    expect(invalid(() => zfsClone("tank/a", "tank/b"))).toMatch(/no "@"/);
    expect(invalid(() => zfsClone("tank/a@s", "tank/b@c"))).toMatch(/snapshot name/);
    expect(invalid(() => zfsPromote("tank/a@s"))).toMatch(/snapshot name/);
    expect(invalid(() => zpoolList("tank/a"))).toMatch(/no "\/"/);
  });
});

describe("property names", () => {
  it.each(["quota", "refquota", "receive_resume_token", "zcsi:name"])("accepts %s", (p) => expect(validatePropertyName(p)).toBe(p));
  it("accepts a value with = and spaces", () => expect(validatePropertyValue("zcsi:x", "a = b")).toBe("a = b"));
});

describe("replication: send, receive, resume, holds", () => {
  it("sends a full stream, or the increment from an earlier snapshot of the same dataset with -i", () => {
    expect(zfsSend("tank/k8s/a@zcsi-repl-2")).toEqual(["zfs", "send", "tank/k8s/a@zcsi-repl-2"]);
    expect(zfsSend("tank/k8s/a@s2", { incrementalFrom: "tank/k8s/a@s1" })).toEqual(["zfs", "send", "-i", "tank/k8s/a@s1", "tank/k8s/a@s2"]);
  });
  it("puts OpenZFS stream options before the snapshots, only when asked", () => {
    expect(zfsSend("tank/a@s2", { incrementalFrom: "tank/a@s1", largeBlocks: true, embedded: true, compressed: true, raw: true })).toEqual([
      "zfs", "send", "-L", "-e", "-c", "-w", "-i", "tank/a@s1", "tank/a@s2",
    ]);
    expect(zfsSend("tank/a@s2", { compressed: true })).toEqual(["zfs", "send", "-c", "tank/a@s2"]);
    expect(zfsSend("tank/a@s2", { raw: false })).toEqual(["zfs", "send", "tank/a@s2"]);
  });
  it("refuses an increment across datasets, onto itself, or from a non-snapshot", () => {
    expect(invalid(() => zfsSend("tank/a@s2", { incrementalFrom: "tank/b@s1" }))).toContain("same dataset");
    expect(invalid(() => zfsSend("tank/a@s1", { incrementalFrom: "tank/a@s1" }))).toContain("itself");
    invalid(() => zfsSend("tank/a@s2", { incrementalFrom: "tank/a" }));
    invalid(() => zfsSend("tank/a@s2", { incrementalFrom: "-R" }));
  });
  it("resumes with -t and a token of zfs's own shape only", () => {
    const token = "1-a1cb6b92d-c0-789c636064000310a500c4ec50360710e72765a526973030";
    expect(zfsSendResume(token)).toEqual(["zfs", "send", "-t", token]);
    for (const bad of ["", "-t", "1-abc", "1-ab-c0-78 9c", "1-ab-c0-78;id", "$(id)", `1-a-b-${"c".repeat(70_000)}`]) invalid(() => zfsSendResume(bad));
  });
  it("receives unmounted, with -s and -o only when asked, never with -F", () => {
    expect(zfsReceive("tank/k8s/r")).toEqual(["zfs", "receive", "-u", "tank/k8s/r"]);
    expect(zfsReceive("tank/k8s/r", { resumable: true, props: { "zcsi:replica-of": "alice:tank/k8s/a", readonly: "on" } })).toEqual([
      "zfs", "receive", "-u", "-s", "-o", "zcsi:replica-of=alice:tank/k8s/a", "-o", "readonly=on", "tank/k8s/r",
    ]);
    expect(zfsReceive("tank/k8s/r", { resumable: true })).not.toContain("-F");
    invalid(() => zfsReceive("tank/k8s/r@s"));
    invalid(() => zfsReceive("tank/k8s/r", { props: { "bad key": "x" } }));
  });
  it("aborts an interrupted receive with -A on a dataset", () => {
    expect(zfsReceiveAbort("tank/k8s/r")).toEqual(["zfs", "receive", "-A", "tank/k8s/r"]);
    invalid(() => zfsReceiveAbort("-F"));
  });
  it("holds, releases and lists holds with validated tags and snapshots", () => {
    expect(zfsHold("zcsi-repl-job-1", ["tank/a@s1"])).toEqual(["zfs", "hold", "zcsi-repl-job-1", "tank/a@s1"]);
    expect(zfsRelease("zcsi-repl-job-1", ["tank/a@s1", "tank/a@s2"])).toEqual(["zfs", "release", "zcsi-repl-job-1", "tank/a@s1", "tank/a@s2"]);
    expect(zfsHolds(["tank/a@s1"])).toEqual(["zfs", "holds", "-H", "tank/a@s1"]);
    for (const tag of ["", "-r", "a b", "a;b", "x".repeat(201)]) invalid(() => zfsHold(tag, ["tank/a@s1"]));
    invalid(() => zfsHold("t", []));
    invalid(() => zfsRelease("t", ["tank/a"]));
    invalid(() => zfsHolds([]));
  });
});
