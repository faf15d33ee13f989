import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SIZE_PROPERTIES } from "../../src/volumes/size-modes.js";
import { REPO_ROOT } from "./deploy-manifests.js";

/**
 * docs/pool-host.md tells operators which `zfs allow` permissions zcsi needs. The list must be
 * what src/ runs, so it is derived here from the code: the zfs subcommands zcsi has argv
 * builders for (src/zfs/argv.ts), and the properties it sets on datasets.
 */

const read = (path: string): string => readFileSync(join(REPO_ROOT, path), "utf8");

/** zfs-allow(8): the permission each subcommand needs. Builders of read-only commands need none. */
const SUBCOMMAND_PERMISSION: Readonly<Record<string, readonly string[]>> = {
  create: ["create", "mount"], // zfs create mounts the new filesystem
  destroy: ["destroy", "mount"], // destroying a mounted filesystem unmounts it
  snapshot: ["snapshot"],
  clone: ["clone", "create", "mount"],
  promote: ["promote", "mount"],
  rename: ["rename", "create", "mount"],
  mount: ["mount"],
  unmount: ["mount"],
  send: ["send"],
  sendresume: ["send"], // zfs send -t <token>
  receive: ["receive", "create", "mount"],
  receiveabort: ["receive"], // zfs receive -A
  recv: ["receive", "create", "mount"],
  hold: ["hold"],
  release: ["release"],
  bookmark: ["bookmark"],
  rollback: ["rollback", "mount"],
  diff: ["diff"],
};
/**
 * Builders that need no permission of their own (set/inherit need the property's; see below).
 * `zfs program` cannot be delegated at all (root only): without sudo it is refused and the
 * caller falls back to commands on this list (docs/pool-host.md says so).
 */
const NO_PERMISSION = new Set(["get", "list", "version", "set", "inherit", "holds", "program"]);

function requiredPermissions(): Set<string> {
  const argv = read("src/zfs/argv.ts");
  const builders = [...argv.matchAll(/^export function zfs([A-Z]\w*)\(/gm)].map((m) => m[1]!.toLowerCase());
  expect(builders.length).toBeGreaterThan(5);
  const needed = new Set<string>();
  for (const builder of builders) {
    if (NO_PERMISSION.has(builder)) continue;
    const permissions = SUBCOMMAND_PERMISSION[builder];
    if (!permissions) throw new Error(`src/zfs/argv.ts has a builder for "zfs ${builder}": add its zfs-allow permission to this test and to docs/pool-host.md`);
    for (const p of permissions) needed.add(p);
  }
  // Properties zcsi sets: the native StorageClass ones, the size, the mountpoint, and user properties.
  const native = /const ZFS_NATIVE = \[([^\]]*)\]/.exec(read("src/volumes/parameters.ts"));
  expect(native, "ZFS_NATIVE in src/volumes/parameters.ts").not.toBeNull();
  for (const m of native![1]!.matchAll(/"([a-z_]+)"/g)) needed.add(m[1]!);
  // Every size mode's native properties (the user property of `thin` falls under userprop).
  for (const p of SIZE_PROPERTIES) if (!p.includes(":")) needed.add(p);
  expect(read("src/volumes/service.ts")).toMatch(/\bmountpoint: `\$\{host\.config\.mountRoot\}/);
  needed.add("mountpoint");
  expect(read("src/volumes/properties.ts")).toMatch(/"zcsi:[a-z-]+"/);
  needed.add("userprop");
  return needed;
}

describe("docs/pool-host.md", () => {
  const doc = read("docs/pool-host.md");

  it("lists exactly the zfs allow permissions src/ needs", () => {
    const line = /^zfs allow -u zcsi (\S+) tank\/k8s$/m.exec(doc);
    expect(line, "the zfs allow line").not.toBeNull();
    const documented = line![1]!.split(",");
    expect(new Set(documented).size).toBe(documented.length);
    expect([...documented].sort()).toEqual([...requiredPermissions()].sort());
  });

  it("gives the sudoers rule of the README and the test harness", () => {
    const readme = read("README.md");
    const rule = /^zcsi ALL=\(root\) NOPASSWD: .+$/m.exec(readme)?.[0];
    expect(rule).toBeDefined();
    expect(doc).toContain(rule);
    const harness = read("test/harness/controller.ts");
    for (const command of rule!.replace(/^.*NOPASSWD: /, "").split(", ")) expect(harness).toContain(`"${command}"`);
  });

  it("gives the authorized_keys lines: a restricted controller key and the SFTP-only node key with the wrapper this repository ships", () => {
    expect(doc).toMatch(/^restrict,from="[^"]+" ssh-ed25519 \S+ zcsi-controller$/m);
    expect(doc).toMatch(/^restrict,command="\/usr\/local\/libexec\/zcsi-sftp" ssh-ed25519 \S+ zcsi-node$/m);
    expect(doc).toContain("install -m 0755 deploy/pool-host/zcsi-sftp /usr/local/libexec/zcsi-sftp");
    expect(read("deploy/pool-host/zcsi-sftp")).toMatch(/^#!\/bin\/sh/);
  });

  it("names the paths the manifests use", () => {
    const config = read("deploy/base/config.yaml");
    for (const path of ["tank/k8s", "/tank/k8s"]) {
      expect(doc).toContain(path);
      expect(config).toContain(path);
    }
  });
});
