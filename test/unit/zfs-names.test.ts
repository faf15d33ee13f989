import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import {
  isBelow,
  parentOf,
  poolOf,
  validateDataset,
  validatePool,
  validateSnapshot,
  validateUserProperty,
} from "../../src/zfs/names.js";

function rejection(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!isZcsiError(err, "InvalidArgument")) throw err;
    return err.message;
  }
  throw new Error("expected InvalidArgument, nothing was thrown");
}

// Hostile names: every one must be refused as a dataset, with a message that names the problem.
const HOSTILE: Array<[string, string, RegExp]> = [
  ["empty", "", /empty/],
  ["leading dash", "-rf", /starts with "-"/],
  ["dash component", "tank/-rf", /starts with "-"/],
  ["option-like pool", "--help", /starts with "-"/],
  ["semicolon", "tank/a;rm -rf /", /contains ";"/],
  ["ampersand", "tank/a&&b", /contains "&"/],
  ["pipe", "tank/a|b", /contains "\|"/],
  ["dollar", "tank/$HOME", /contains "\$"/],
  ["command substitution", "tank/$(id)", /contains "\$"/],
  ["backtick", "tank/`id`", /contains "`"/],
  ["single quote", "tank/a'b", /contains "'"/],
  ["double quote", 'tank/a"b', /contains "\\""/],
  ["backslash", "tank/a\\b", /contains "\\\\"/],
  ["glob star", "tank/*", /contains "\*"/],
  ["glob question", "tank/a?", /contains "\?"/],
  ["brackets", "tank/[ab]", /contains "\["/],
  ["braces", "tank/{a,b}", /contains "\{"/],
  ["redirect", "tank/a>b", /contains ">"/],
  ["tilde", "~/tank", /contains "~"/],
  ["hash (bookmark)", "tank/a#b", /bookmark/],
  ["newline", "tank/a\nb", /contains "\\n"/],
  ["carriage return", "tank/a\rb", /contains "\\r"/],
  ["tab", "tank/a\tb", /contains "\\t"/],
  ["NUL", "tank/a\0b", /contains "\\u0000"/],
  ["space (ZFS allows it, zcsi does not)", "tank/a b", /contains " "/],
  ["percent (reserved by ZFS)", "tank/a%recv", /contains "%"/],
  ["at sign in dataset", "tank/a@snap", /snapshot name/],
  ["dot-dot traversal", "tank/../etc", /"\.\." is not allowed/],
  ["dot-dot slash prefix", "../tank", /"\.\." is not allowed/],
  ["dot component", "tank/./a", /"\." is not allowed/],
  ["trailing slash", "tank/a/", /empty component/],
  ["leading slash", "/tank/a", /empty pool component/],
  ["double slash", "tank//a", /empty component/],
  ["300 characters", `tank/${"a".repeat(295)}`, /300 characters, the limit is 255/],
  ["256 characters", `tank/${"a".repeat(251)}`, /256 characters/],
  ["unicode letter", "tank/données", /contains "é"/],
  ["unicode lookalike slash", "tank∕a", /contains "∕"/],
  ["emoji", "tank/📦", /contains "\\ud83d"|contains "📦"/],
  ["zero-width space", "tank/a\u200bb", /contains/],
  ["pool starting with a digit", "1tank/a", /must start with a letter/],
  ["pool starting with underscore", "_tank", /must start with a letter/],
];

describe("validateDataset", () => {
  it.each(HOSTILE)("refuses %s", (_label, name, why) => {
    expect(rejection(() => validateDataset(name))).toMatch(why);
  });

  it("has at least 30 hostile names in its table", () => {
    expect(HOSTILE.length).toBeGreaterThanOrEqual(30);
  });

  it("refuses what is not a string", () => {
    expect(rejection(() => validateDataset(undefined as unknown as string))).toMatch(/not a string/);
  });

  it.each([
    "tank",
    "tank/k8s",
    "tank/k8s/pvc-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    "data/k8s/a_b.c:d-e",
    "t/.hidden",
    "t/a..b",
    `tank/${"a".repeat(250)}`, // exactly 255
  ])("accepts %s", (name) => {
    expect(validateDataset(name)).toBe(name);
  });
});

describe("validatePool", () => {
  it.each(["tank", "data", "zt0123abcd", "Pool_1.a:b-c"])("accepts %s", (name) => expect(validatePool(name)).toBe(name));
  it.each([
    ["mirror", /reserved/],
    ["raidz2", /reserved/],
    ["spare", /reserved/],
    ["log", /reserved/],
    ["draid1", /reserved/],
    ["c0t0d0", /reserved/],
    ["tank/a", /no "\/"/],
    ["9lives", /must start with a letter/],
    ["", /empty/],
  ])("refuses %s", (name, why) => expect(rejection(() => validatePool(name))).toMatch(why));
  it("allows names that merely contain a keyword", () => expect(validatePool("logs")).toBe("logs"));
});

describe("validateSnapshot", () => {
  it.each(["tank@s", "tank/k8s/a@zcsi-20240101T000000Z", "tank/a@snap.1:x_y-z"])("accepts %s", (name) => {
    expect(validateSnapshot(name)).toBe(name);
  });
  it.each([
    ["tank/a", /no "@"/],
    ["tank/a@", /empty snapshot component/],
    ["@snap", /dataset part: .*empty/],
    ["tank/a@s@t", /more than one "@"/],
    ["tank/a@s/t", /contains "\/"/],
    ["tank/a@-s", /starts with "-"/],
    ["tank/a@..", /is not allowed/],
    ["tank/a@s;reboot", /contains ";"/],
    ["tank/a@s\nx", /contains "\\n"/],
    ["tank/a b@s", /dataset part: .*contains " "/],
    [`tank/a@${"s".repeat(260)}`, /the limit is 255/],
  ])("refuses %s", (name, why) => expect(rejection(() => validateSnapshot(name))).toMatch(why));
});

describe("validateUserProperty", () => {
  it.each(["zcsi:name", "zcsi:csi-name", "com.example:a.b_c-d", "a:b", `zcsi:${"x".repeat(251)}`])("accepts %s", (name) => {
    expect(validateUserProperty(name)).toBe(name);
  });
  it.each([
    ["quota", /must contain ":"/],
    ["", /empty/],
    ["zcsi:Name", /contains "N"/],
    ["ZCSI:name", /contains "Z"/],
    ["-zcsi:name", /starts with "-"/],
    ["zcsi:na me", /contains " "/],
    ["zcsi:name=x", /contains "="/],
    ["zcsi:a,b", /contains ","/],
    ["zcsi:a\nb", /contains "\\n"/],
    [`zcsi:${"x".repeat(252)}`, /257 characters, the limit is 256/],
  ])("refuses %s", (name, why) => expect(rejection(() => validateUserProperty(name))).toMatch(why));
});

describe("isBelow", () => {
  it.each([
    ["tank/k8s", "tank/k8s/a", true],
    ["tank/k8s", "tank/k8s/a/b", true],
    ["tank", "tank/k8s", true],
    ["tank/k8s", "tank/k8s@s", true],
    ["tank/k8s", "tank/k8s/a@s", true],
    ["tank/k8s", "tank/k8s", false],
    ["tank/k8s", "tank/k8s2", false],
    ["tank/k8s", "tank/k8s2/a", false],
    ["tank/k8s", "tank/k8", false],
    ["tank/k8s", "tank", false],
    ["tank/k8s", "other/k8s/a", false],
    ["tank/k8s@s", "tank/k8s/a", false],
    ["", "tank", false],
  ] as const)("isBelow(%j, %j) is %s", (parent, child, want) => {
    expect(isBelow(parent, child)).toBe(want);
  });
});

describe("name helpers", () => {
  it("finds pool and parent", () => {
    expect(poolOf("tank/k8s/a@s")).toBe("tank");
    expect(parentOf("tank/k8s/a")).toBe("tank/k8s");
    expect(parentOf("tank")).toBeUndefined();
  });
});
