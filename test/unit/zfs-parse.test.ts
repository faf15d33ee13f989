import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { listColumns, ZPOOL_LIST_COLUMNS } from "../../src/zfs/argv.js";
import {
  GetOutputParser,
  ownProperty,
  ownUserPropertyValue,
  parseExactInteger,
  parseGet,
  parseOptionalInteger,
  parseRows,
  parseZfsVersion,
  PropertyView,
  userPropertyValue,
} from "../../src/zfs/parse.js";
import { fixture } from "../fixtures/zfs/load.js";

function internalMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!isZcsiError(err, "Internal")) throw err;
    return err.message;
  }
  throw new Error("expected Internal");
}

describe("parseGet on recorded zfs-fuse output", () => {
  it("reads every dataset and property of a batched get, with exact quota bytes", () => {
    const f = fixture("zfs-fuse", "get-created");
    const map = parseGet(f.stdout);
    expect([...map.keys()]).toEqual(["zrec/k8s/a", "zrec/k8s/b"]);
    const a = map.get("zrec/k8s/a");
    expect(a?.get("quota")).toEqual({ value: "1073741824", source: "local" });
    expect(parseExactInteger(a?.get("quota")?.value ?? "")).toBe(1073741824n);
    expect(a?.get("zcsi:name")).toEqual({ value: "pvc-a", source: "local" });
    expect(parseExactInteger(a?.get("used")?.value ?? "")).toBe(114688n);
  });

  it("shows an unset user property as value - with source -, and an inherited one with its origin", () => {
    const b = parseGet(fixture("zfs-fuse", "get-created").stdout).get("zrec/k8s/b");
    expect(b?.get("zcsi:capacity")).toEqual({ value: "-", source: "-" });
    expect(userPropertyValue(b?.get("zcsi:capacity"))).toBeUndefined();
    // User properties inherit: the child did not set zcsi:name, its parent did.
    expect(b?.get("zcsi:name")).toEqual({ value: "pvc-1", source: "inherited from zrec/k8s" });
    expect(userPropertyValue(b?.get("zcsi:name"))).toBe("pvc-1");
    expect(ownUserPropertyValue(b?.get("zcsi:name"))).toBeUndefined();
    expect(ownProperty(b, "zcsi:name")).toBeUndefined();
    expect(ownProperty(parseGet(fixture("zfs-fuse", "get-created").stdout).get("zrec/k8s/a"), "zcsi:name")).toBe("pvc-a");
    expect(ownProperty(undefined, "zcsi:name")).toBeUndefined();
    // An unset quota is 0 in -p mode (not "none").
    expect(b?.get("quota")).toEqual({ value: "0", source: "default" });
  });

  it("reads a depth-limited recursive get, parent included", () => {
    const map = parseGet(fixture("zfs-fuse", "get-recursive-depth1").stdout);
    expect([...map.keys()]).toEqual(["zrec/k8s", "zrec/k8s/a", "zrec/k8s/b"]);
    expect(map.get("zrec/k8s")?.get("type")?.value).toBe("filesystem");
  });

  it("reads snapshot properties", () => {
    const s = parseGet(fixture("zfs-fuse", "get-snapshot").stdout).get("zrec/k8s/a@s1");
    expect(s?.get("type")?.value).toBe("snapshot");
    expect(parseExactInteger(s?.get("creation")?.value ?? "")).toBeGreaterThan(1_600_000_000n);
    expect(ownUserPropertyValue(s?.get("zcsi:name"))).toBe("snap-1");
  });

  it("reads `get all`, including non-numeric values", () => {
    const a = parseGet(fixture("zfs-fuse", "get-all").stdout).get("zrec/k8s/a");
    expect(a?.get("compressratio")?.value).toBe("1.00x");
    expect(a?.get("mountpoint")?.source).toMatch(/^inherited from zrec/);
    expect(a?.size).toBeGreaterThan(30);
  });

  it("keeps the partial output of a get where one name was missing", () => {
    const f = fixture("zfs-fuse", "get-partial-missing");
    expect(f.exitCode).toBe(1);
    expect([...parseGet(f.stdout).keys()]).toEqual(["zrec/k8s/a"]);
  });

  it("tolerates a missing trailing newline and empty output", () => {
    expect(parseGet("").size).toBe(0);
    expect(parseGet("t\tused\t1\t-").get("t")?.get("used")?.value).toBe("1");
  });

  it.each([
    ["too few fields", "tank\tused\t1\n"],
    ["too many fields (tab in a value)", "tank\tzcsi:x\ta\tb\tlocal\n"],
    ["a value split by a newline", "tank\tzcsi:x\ta\nb\tlocal\n"],
    ["a blank line in the middle", "tank\tused\t1\t-\n\ntank\tquota\t0\tdefault\n"],
    ["spaces instead of tabs (no -H)", "NAME  PROPERTY  VALUE  SOURCE\n"],
  ])("throws Internal naming the line on %s", (_label, stdout) => {
    expect(internalMessage(() => parseGet(stdout))).toMatch(/expected 4 tab-separated fields, got \d+ in line/);
  });
});

describe("GetOutputParser: zfs get output read as it arrives", () => {
  const plain = (map: ReturnType<typeof parseGet>): unknown => [...map].map(([name, props]) => [name, [...props].map(([p, v]) => [p, v.value, v.source])]);
  const stdout = [fixture("zfs-fuse", "get-created").stdout, "zrec/k8s/ü\tzcsi:csi-name\tvölume-ü\tlocal\r\n", "zrec/k8s/ü\tmounted\tno\t-"].join("");

  it("reads the same datasets and properties in whatever pieces the output comes, a character's bytes split too", () => {
    const bytes = Buffer.from(stdout, "utf8");
    const whole = plain(parseGet(stdout));
    expect(whole).toContainEqual(["zrec/k8s/ü", [["zcsi:csi-name", "völume-ü", "local"], ["mounted", "no", "-"]]]);
    for (const size of [1, 2, 3, 7, 64, bytes.length]) {
      const parser = new GetOutputParser();
      for (let i = 0; i < bytes.length; i += size) parser.write(bytes.subarray(i, i + size));
      expect(plain(parser.end())).toEqual(whole);
    }
  });

  it("reports a malformed line at the end, not while the output is still arriving", () => {
    const parser = new GetOutputParser();
    expect(() => parser.write("tank\tused\t1\t-\ntank\tused\n")).not.toThrow();
    parser.write("tank\tquota\t0\tdefault\n");
    expect(internalMessage(() => parser.end())).toMatch(/expected 4 tab-separated fields, got 2 in line "tank\\tused"/);
  });

  it("reads an output of one newline as nothing, and a blank first line before more as malformed, like the whole-output parser did", () => {
    expect(parseGet("\n").size).toBe(0);
    expect(internalMessage(() => parseGet("\ntank\tused\t1\t-\n"))).toMatch(/got 1 in line ""/);
  });
});

describe("parseRows on recorded zfs-fuse list output", () => {
  it("reads filesystems (human sizes: zfs-fuse list has no -p)", () => {
    const rows = parseRows(fixture("zfs-fuse", "list-filesystems").stdout, listColumns(["used", "avail", "quota", "zcsi:name"]));
    expect(rows.map((r) => r.name)).toEqual(["zrec/k8s", "zrec/k8s/a", "zrec/k8s/b"]);
    expect(rows[1]).toEqual({ name: "zrec/k8s/a", used: "112K", avail: "9.66M", quota: "1G", "zcsi:name": "pvc-a" });
    expect(rows[2]?.quota).toBe("none");
  });

  it("reads snapshots and mixed types", () => {
    expect(parseRows(fixture("zfs-fuse", "list-snapshots").stdout, ["name", "used", "zcsi:name"]).map((r) => r.name)).toEqual([
      "zrec/k8s/a@s1",
      "zrec/k8s/a@s2",
    ]);
    expect(parseRows(fixture("zfs-fuse", "list-all-depth1").stdout, ["name", "type"]).map((r) => r.type)).toEqual([
      "filesystem",
      "snapshot",
      "snapshot",
    ]);
  });

  it("reads zpool list", () => {
    expect(parseRows(fixture("zfs-fuse", "zpool-list").stdout, ZPOOL_LIST_COLUMNS, "zpool list")).toEqual([
      { name: "zrec", health: "ONLINE", size: "250M", free: "249M", allocated: "1.12M" },
    ]);
  });

  it("throws Internal with the line on a wrong column count", () => {
    expect(internalMessage(() => parseRows("a\tb\n", ["name"]))).toMatch(/expected 1 tab-separated fields, got 2 in line "a\\tb"/);
  });
});

describe("OpenZFS 2.3 output (recorded on the test VM)", () => {
  it("reads list -p exact numbers", () => {
    const rows = parseRows(fixture("openzfs", "list-parsable").stdout, listColumns(["used", "avail", "quota", "zcsi:name"]));
    expect(rows.map((r) => r.name)).toEqual(["tank/k8s", "tank/k8s/a", "tank/k8s/b"]);
    expect(parseExactInteger(rows[1]?.quota ?? "")).toBe(1073741824n);
    expect(parseExactInteger(rows[0]?.quota ?? "")).toBe(10485760n);
    expect(parseExactInteger(rows[0]?.avail ?? "")).toBe(10412032n);
    // An unset quota is 0 under -p (not "none"), as on zfs-fuse.
    expect(rows[2]?.quota).toBe("0");
  });
  it("reads human-readable list output too (what the client asks for without -p)", () => {
    const rows = parseRows(fixture("openzfs", "list-filesystems").stdout, listColumns(["used", "avail", "quota", "zcsi:name"]));
    expect(rows.map((r) => r.quota)).toEqual(["10M", "1G", "none"]);
  });
  it("reads 64-bit guids exactly (beyond 2^53)", () => {
    const rows = parseRows(fixture("openzfs", "list-snapshots-parsable").stdout, ["name", "used", "creation", "guid"]);
    expect(rows.map((r) => r.name)).toEqual(["tank/k8s/a@s1", "tank/k8s/a@s2"]);
    expect(parseExactInteger(rows[1]?.guid ?? "")).toBe(13176210880262315044n);
    expect(parseExactInteger(rows[1]?.guid ?? "")).toBeGreaterThan(BigInt(Number.MAX_SAFE_INTEGER));
  });
  it("reads get: unset receive_resume_token, inherited user properties", () => {
    const map = parseGet(fixture("openzfs", "get-created").stdout);
    expect(map.get("tank/k8s/a")?.get("receive_resume_token")).toEqual({ value: "-", source: "-" });
    expect(map.get("tank/k8s/b")?.get("zcsi:name")).toEqual({ value: "pvc-1", source: "inherited from tank/k8s" });
    expect(ownUserPropertyValue(map.get("tank/k8s/b")?.get("zcsi:name"))).toBeUndefined();
    expect(map.get("tank/k8s/b")?.get("quota")).toEqual({ value: "0", source: "default" });
  });
  it("reads a receive_resume_token left by an interrupted receive -s", () => {
    const token = parseGet(fixture("openzfs", "get-resume-token").stdout).get("tank/dst")?.get("receive_resume_token");
    expect(token?.source).toBe("-");
    expect(token?.value).toMatch(/^1-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/);
  });
  it("reads get -t (a type filter zfs-fuse lacks)", () => {
    const map = parseRows(fixture("openzfs", "get-t").stdout, ["name", "value"]);
    expect(map).toEqual([
      { name: "tank/k8s/a@s1", value: "snapshot" },
      { name: "tank/k8s/a@s2", value: "snapshot" },
    ]);
  });
  it("reads every property of get all", () => {
    const props = parseGet(fixture("openzfs", "get-all").stdout).get("tank/k8s/a");
    expect(props?.get("type")?.value).toBe("filesystem");
    expect(props?.get("refquota")?.value).toBe("0");
    expect(props?.get("zcsi:capacity")).toEqual({ value: "1073741824", source: "local" });
    expect(props?.size).toBeGreaterThan(60);
  });
  it("reads zpool list, with -p exact and without it rounded", () => {
    const [exact] = parseRows(fixture("openzfs", "zpool-list-parsable").stdout, ZPOOL_LIST_COLUMNS);
    expect(exact).toMatchObject({ name: "tank", health: "ONLINE" });
    expect(parseExactInteger(exact?.size ?? "")).toBe(503316480n);
    const [rounded] = parseRows(fixture("openzfs", "zpool-list").stdout, ZPOOL_LIST_COLUMNS);
    expect(rounded?.size).toBe("480M");
  });
  it("reads the zfs version line", () => {
    expect(parseZfsVersion(fixture("openzfs", "zfs-version").stdout)).toBe("2.3.2-2~bpo12+2");
    expect(parseZfsVersion(fixture("zfs-fuse", "zfs-version").stdout)).toBeUndefined();
  });
});

describe("exact integers", () => {
  it("parses beyond 2^53 exactly", () => {
    expect(parseExactInteger("18446744073709551615")).toBe(18446744073709551615n);
  });
  it.each(["9.89M", "1G", "-1", "1e6", " 1", "", "0x10", "none"])("refuses %j", (value) => {
    expect(internalMessage(() => parseExactInteger(value, "quota"))).toMatch(/expected an exact integer for quota/);
  });
  it("maps - and none to null", () => {
    expect(parseOptionalInteger("-")).toBeNull();
    expect(parseOptionalInteger("none")).toBeNull();
    expect(parseOptionalInteger("0")).toBe(0n);
  });
});

describe("PropertyView: one way to read a dataset's properties", () => {
  const view = (stdout: string, dataset: string): PropertyView => PropertyView.of(parseGet(stdout), dataset, "alice");

  it("reads exact integers, and refuses a garbled one naming the host, dataset and property", () => {
    const a = PropertyView.of(parseGet(fixture("zfs-fuse", "get-created").stdout), "zrec/k8s/a", "alice");
    expect(a.integer("quota")).toBe(1073741824n);
    // `available` garbled (a human-readable size, or junk) must not read as 0 bytes free.
    const garbled = view("p/k8s\tavailable\t9.89M\t-\n", "p/k8s");
    expect(internalMessage(() => garbled.integer("available"))).toMatch(/^expected an exact integer for alice: p\/k8s: property available, got "9\.89M"/);
    expect(internalMessage(() => view("p/k8s\tavailable\t\t-\n", "p/k8s").integer("available"))).toContain("alice: p/k8s: property available");
    expect(internalMessage(() => view("p/k8s\tavailable\t-12\t-\n", "p/k8s").integer("available"))).toContain('got "-12"');
  });

  it("refuses a property zfs did not print at all, instead of reading it as 0", () => {
    const a = view("p/k8s\tused\t5\t-\n", "p/k8s");
    expect(internalMessage(() => a.integer("available"))).toBe("alice: p/k8s: property available is missing from zfs output");
    expect(internalMessage(() => view("", "p/k8s").integer("used"))).toBe("alice: p/k8s: property used is missing from zfs output");
  });

  it("reads not-applicable integers as undefined, and still refuses garbled ones", () => {
    const s = view("p/a@s\tavailable\t-\t-\np/a@s\twritten\t4096\t-\np/a@s\tcreatetxg\tx1\t-\n", "p/a@s");
    expect(s.optionalInteger("available")).toBeUndefined();
    expect(s.optionalInteger("missing")).toBeUndefined();
    expect(s.optionalInteger("written")).toBe(4096n);
    expect(internalMessage(() => s.optionalInteger("createtxg"))).toContain("property createtxg");
  });

  it("counts only local values as zcsi's own: not inherited, not received, not default", () => {
    const out = [
      "p/r\tzcsi:csi-name\tpvc-1\tlocal",
      "p/r\tzcsi:replica-of\talice:p/a\treceived",
      "p/r\tzcsi:state\tready\tinherited from p",
      "p/r\tzcsi:empty\t\tlocal",
      "p/r\tzcsi:unset\t-\t-",
      "p/r\tcompression\toff\tdefault",
      "",
    ].join("\n");
    const r = view(out, "p/r");
    expect(r.own("zcsi:csi-name")).toBe("pvc-1");
    expect(r.own("zcsi:replica-of")).toBeUndefined();
    expect(r.own("zcsi:state")).toBeUndefined();
    expect(r.own("zcsi:empty")).toBeUndefined();
    expect(r.own("zcsi:unset")).toBeUndefined();
    expect(r.own("compression")).toBeUndefined();
    // text() reads the value whatever its source.
    expect([r.text("zcsi:replica-of"), r.text("zcsi:state"), r.text("compression"), r.text("zcsi:unset"), r.text("zcsi:empty")]).toEqual(["alice:p/a", "ready", "off", undefined, undefined]);
    // The free functions follow the same rule.
    const props = parseGet(out).get("p/r");
    expect(ownUserPropertyValue(props?.get("zcsi:replica-of"))).toBeUndefined();
    expect(ownUserPropertyValue(props?.get("zcsi:csi-name"))).toBe("pvc-1");
  });

  it("reads what `zfs receive -o` set (as the replicator marks a replica) as zcsi's own on OpenZFS", () => {
    const f = fixture("openzfs", "get-receive-o-property");
    const rx = PropertyView.of(parseGet(f.stdout), "tank/rx");
    expect(rx.own("zcsi:replica-of")).toBe("alice:tank/src");
  });

  it("knows whether zfs printed the dataset at all", () => {
    expect(view("p/a\tused\t1\t-\n", "p/a").exists).toBe(true);
    expect(view("p/a\tused\t1\t-\n", "p/b").exists).toBe(false);
  });
});
