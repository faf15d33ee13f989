import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, posix, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * ARCHITECTURE.md's one-way dependencies, enforced: `cli → roles → (csi | snapshots |
 * replication | status) → volumes → zfs → exec`, with `mount` below csi's node side, `k8s`
 * used by the roles and the sidecar loops, and the base (util, config, errors, log, metrics,
 * the generated CSI types) at the bottom. Domain packages never import each other sideways or
 * upward, and nothing in src/ imports test/ (or anything else outside src/).
 */

const SRC = join(dirname(fileURLToPath(import.meta.url)), "../../src");

/** What each package may import, besides itself and the base. */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  cli: ["roles"],
  roles: ["csi", "snapshots", "replication", "mobility", "status", "volumes", "zfs", "exec", "mount", "k8s"],
  csi: ["volumes", "zfs", "exec", "mount"],
  snapshots: ["volumes", "zfs", "exec", "k8s"],
  replication: ["volumes", "zfs", "exec", "k8s"],
  // Planned moves, failover, resync: they drive replication (seed, catch up) and Kubernetes
  // (attachments, pods, the per-volume move Lease); nothing below imports them.
  mobility: ["replication", "volumes", "zfs", "exec", "k8s"],
  status: ["volumes", "zfs", "exec"],
  volumes: ["zfs", "exec"],
  mount: ["exec"],
  zfs: ["exec"],
  k8s: [],
  exec: [],
  base: [],
};
const BASE_FILES = new Set(["config", "errors", "log", "metrics"]);
const BASE_DIRS = new Set(["util", "gen"]);

/** The package of a path relative to src/ (`volumes/service.ts` → volumes; `errors.ts` → base). */
export function packageOf(path: string): string | undefined {
  const [first, ...rest] = path.split("/");
  if (first === undefined || first === "..") return undefined;
  if (rest.length === 0) {
    const stem = first.replace(/\.[jt]s$/, "");
    return stem === "cli" ? "cli" : BASE_FILES.has(stem) ? "base" : stem;
  }
  return BASE_DIRS.has(first) ? "base" : first;
}

/** The relative module specifiers a source file imports (static, re-exports and dynamic). */
export function importsOf(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*"([^"]+)"|\bimport\(\s*"([^"]+)"\s*\)|(?:^|\n)\s*import\s*"([^"]+)"/g)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec !== undefined && spec.startsWith(".")) found.push(spec);
  }
  return found;
}

/** Every import of `file` (relative to src/) that breaks the rules, as `file → target (why)`. */
export function violations(file: string, source: string): string[] {
  const from = packageOf(file);
  const out: string[] = [];
  for (const spec of importsOf(source)) {
    const target = posix.normalize(posix.join(posix.dirname(file), spec));
    const to = packageOf(target);
    if (to === undefined) {
      out.push(`${file} → ${spec} (outside src/)`);
      continue;
    }
    if (from === undefined || to === from || to === "base") continue;
    const allowed = ALLOWED[from];
    if (allowed === undefined) out.push(`${file} → ${target} (package ${from} is not in the layering table)`);
    else if (!allowed.includes(to)) out.push(`${file} → ${target} (${from} may not import ${to})`);
  }
  return out;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));
}

describe("src/ layering", () => {
  it("has no import that points upward, sideways between domain packages, or out of src/", () => {
    const files = sources(SRC);
    expect(files.length).toBeGreaterThan(40);
    const bad = files.flatMap((f) => violations(relative(SRC, f).split("\\").join("/"), readFileSync(f, "utf8")));
    expect(bad).toEqual([]);
  });

  it("keeps every hand-written file in src/ under 400 lines", () => {
    const long = sources(SRC)
      .filter((f) => !relative(SRC, f).startsWith("gen/"))
      .map((f) => ({ file: relative(SRC, f), lines: readFileSync(f, "utf8").split("\n").length }))
      .filter((f) => f.lines > 400);
    expect(long).toEqual([]);
  });

  it("knows every package under src/", () => {
    const packages = new Set(sources(SRC).map((f) => packageOf(relative(SRC, f))));
    for (const p of packages) expect(ALLOWED, `package ${String(p)}`).toHaveProperty(String(p));
  });

  // The cycles this test was written against; each must be named if it ever comes back.
  it.each([
    ["volumes/service.ts", 'import { REPLICATION_SNAPSHOT_PREFIX } from "../replication/plan.js";', "volumes may not import replication"],
    ["volumes/parameters.ts", 'import { normalizePolicy } from "../snapshots/policy.js";', "volumes may not import snapshots"],
    ["replication/jobs.ts", 'import { SOURCE } from "../roles/replicator.js";', "replication may not import roles"],
    ["snapshots/scheduler.ts", 'const { x } = await import("../replication/engine.js");', "snapshots may not import replication"],
    ["csi/node.ts", 'export { k } from "../k8s/nodes.js";', "csi may not import k8s"],
    ["zfs/client.ts", 'import type { PoolHost } from "../volumes/hosts.js";', "zfs may not import volumes"],
    ["cli.ts", 'const { startNodeEnv } = await import("../test/harness/node-env.js");', "outside src/"],
    ["util/periodic.ts", 'import { PROP } from "../volumes/properties.js";', "base may not import volumes"],
  ])("names %s importing what it must not", (file, line, why) => {
    const bad = violations(file, `${line}\n`);
    expect(bad).toHaveLength(1);
    expect(bad[0]).toContain(why);
  });

  it("allows downward imports and the base", () => {
    expect(violations("roles/replicator.ts", 'import { x } from "../replication/jobs.js";\nimport { y } from "../util/units.js";\nimport { Registry } from "prom-client";\n')).toEqual([]);
    expect(violations("replication/jobs.ts", 'import type { NodeInfo } from "../k8s/nodes.js";\nimport { PROP } from "../volumes/properties.js";\n')).toEqual([]);
  });
});
