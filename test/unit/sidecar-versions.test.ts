import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { build, configDocument, containers, DEPLOY_DIR } from "./deploy-manifests.js";

const buildBase = () => build(DEPLOY_DIR);

/**
 * Sidecars that exist and work (deploy/README.md, "Sidecar versions"): every upstream sidecar
 * pin says in a comment which release notes it was checked against, the comment names the
 * pinned release, each pin is at least the minimum the README states, and the shipped config
 * does not advertise the alpha GET_SNAPSHOT that older sidecars crash on.
 */

const UPSTREAM: Record<string, string> = {
  "csi-provisioner": "external-provisioner",
  "csi-snapshotter": "external-snapshotter",
  "csi-resizer": "external-resizer",
  "csi-attacher": "external-attacher",
  livenessprobe: "livenessprobe",
  "csi-node-driver-registrar": "node-driver-registrar",
};

const version = (v: string): number[] => v.replace(/^v/, "").split(".").map(Number);
const atLeast = (a: string, b: string): boolean => {
  const [x, y] = [version(a), version(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
  return true;
};

/** The README table: sidecar → [pinned, minimum]. */
function readmeTable(): Map<string, { pinned: string; minimum: string }> {
  const text = readFileSync(join(DEPLOY_DIR, "README.md"), "utf8");
  const rows = new Map<string, { pinned: string; minimum: string }>();
  for (const line of text.split("\n")) {
    const m = /^\| (\S+) \| (v[\d.]+) \| (v[\d.]+|any) \|/.exec(line);
    if (m) rows.set(m[1]!, { pinned: m[2]!, minimum: m[3]! });
  }
  return rows;
}

describe("sidecar pins", () => {
  const manifests = ["base/controller.yaml", "base/node.yaml"].map((f) => ({ file: f, lines: readFileSync(join(DEPLOY_DIR, f), "utf8").split("\n") }));
  const pins = manifests.flatMap(({ file, lines }) =>
    lines.flatMap((line, i) => {
      const m = /^\s*image: registry\.k8s\.io\/sig-storage\/([a-z-]+):(v[\d.]+)$/.exec(line);
      return m ? [{ file, image: m[1]!, tag: m[2]!, comment: lines.slice(Math.max(0, i - 3), i).join(" ") }] : [];
    }),
  );

  it("covers every upstream sidecar deploy/ runs", () => {
    const images = containers(buildBase()).map((c) => c.container.image).filter((i) => i.startsWith("registry.k8s.io/sig-storage/"));
    expect(images.length).toBeGreaterThanOrEqual(6);
    for (const image of images) expect(pins.map((p) => `registry.k8s.io/sig-storage/${p.image}:${p.tag}`)).toContain(image);
  });

  it("says above each pin which upstream release notes name that release", () => {
    for (const pin of pins) {
      const [major, minor] = version(pin.tag);
      const upstream = UPSTREAM[pin.image];
      expect(upstream, `${pin.image} has no known upstream project`).toBeDefined();
      expect(pin.comment, `${pin.file}: ${pin.image}:${pin.tag}`).toContain(`kubernetes-csi/${upstream} CHANGELOG/CHANGELOG-${major}.${minor}.md`);
      expect(pin.comment, `${pin.file}: ${pin.image}:${pin.tag}`).toMatch(new RegExp(`Release notes for v?${pin.tag.slice(1).replace(/\./g, "\\.")}"`));
    }
  });

  it("pins what deploy/README.md says, at or above the minimum it states", () => {
    const table = readmeTable();
    for (const pin of pins) {
      const row = table.get(pin.image);
      expect(row, `deploy/README.md has no row for ${pin.image}`).toBeDefined();
      expect(row!.pinned).toBe(pin.tag);
      if (row!.minimum !== "any") expect(atLeast(pin.tag, row!.minimum), `${pin.image}:${pin.tag} below ${row!.minimum}`).toBe(true);
    }
  });
});

describe("GET_SNAPSHOT (alpha) is advertised only when configured", () => {
  const minimal = { privateKeyFile: "/k", poolHosts: [{ name: "pool-1", address: "192.0.2.1", parentDataset: "tank/k8s", mountRoot: "/tank/k8s", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl" }] };

  it("is off by default, on with advertiseGetSnapshot: true, and refuses anything but a boolean", () => {
    expect(parseConfig(minimal).advertiseGetSnapshot).toBe(false);
    expect(parseConfig({ ...minimal, advertiseGetSnapshot: true }).advertiseGetSnapshot).toBe(true);
    expect(() => parseConfig({ ...minimal, advertiseGetSnapshot: "yes" })).toThrow(/advertiseGetSnapshot must be true or false/);
  });

  it("is off in the config deploy/ ships", () => {
    expect(parseConfig(configDocument(buildBase())).advertiseGetSnapshot).toBe(false);
  });
});
