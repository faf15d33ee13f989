import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./deploy-manifests.js";

/**
 * The Dockerfile, checked without a Docker engine (none runs on these machines): its form,
 * what it installs, and a rehearsal of its build stage on exactly the files the build context
 * holds, followed by the runtime layout it copies into the final image.
 */

const dockerfile = readFileSync(join(REPO_ROOT, "Dockerfile"), "utf8");
const packageVersion = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

/** Instructions with continuation lines joined and comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  const joined = text
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((l) => {
      const space = l.indexOf(" ");
      return { op: l.slice(0, space).toUpperCase(), args: l.slice(space + 1).trim() };
    });
}

const all = instructions(dockerfile);
const stages: Array<Array<{ op: string; args: string }>> = [];
for (const ins of all) {
  if (ins.op === "FROM") stages.push([]);
  stages.at(-1)?.push(ins);
}
const finalStage = stages.at(-1) ?? [];
const buildArgs = new Map(
  all.filter((i) => i.op === "ARG" && i.args.includes("=")).map((i) => [i.args.slice(0, i.args.indexOf("=")), i.args.slice(i.args.indexOf("=") + 1)] as const),
);
const expand = (s: string): string => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a: string | undefined, b: string | undefined) => buildArgs.get(a ?? b ?? "") ?? "");

/** .dockerignore as Docker reads it: the last matching pattern wins; `!` re-includes. */
function inContext(path: string): boolean {
  const patterns = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  let included = true;
  for (const pattern of patterns) {
    const negated = pattern.startsWith("!");
    const glob = (negated ? pattern.slice(1) : pattern).replace(/\/$/, "");
    const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}(/.*)?$`);
    if (re.test(path)) included = negated;
  }
  return included;
}

describe("Dockerfile", () => {
  it("is multi-stage on a base image pinned by version and digest", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) {
      const image = expand(stage[0]!.args.split(/\s+/)[0]!);
      expect(image, stage[0]!.args).toMatch(/^node:20\.[0-9]+\.[0-9]+-bookworm-slim@sha256:[0-9a-f]{64}$/);
    }
    expect(dockerfile).not.toMatch(/:latest\b/);
  });

  it("runs zcsi as the entrypoint, as a non-root user by default", () => {
    const user = finalStage.filter((i) => i.op === "USER").at(-1)?.args;
    expect(user).toMatch(/^[1-9][0-9]*(:[1-9][0-9]*)?$/);
    const entrypoint = JSON.parse(finalStage.find((i) => i.op === "ENTRYPOINT")!.args) as string[];
    expect(entrypoint.at(-1)).toBe("zcsi");
    expect(finalStage.some((i) => i.op === "RUN" && /ln -s \/app\/dist\/src\/cli\.js \/usr\/local\/bin\/zcsi/.test(i.args))).toBe(true);
  });

  it("installs what the roles run and nothing else", () => {
    const installs = finalStage
      .filter((i) => i.op === "RUN")
      .flatMap((i) => [...i.args.matchAll(/apt-get install ([^&;]+)/g)].flatMap((m) => m[1]!.split(/\s+/).filter((w) => w !== "" && !w.startsWith("-"))));
    expect(new Set(installs)).toEqual(new Set(["sshfs", "fuse3", "openssh-client", "mount", "systemd", "tini"]));
    expect(finalStage.some((i) => i.op === "RUN" && /--no-install-recommends/.test(i.args) && /rm -rf \/var\/lib\/apt\/lists/.test(i.args))).toBe(true);
    // No compiler, no npm install in the runtime stage: it gets built files only.
    expect(finalStage.filter((i) => i.op === "RUN").some((i) => /npm (ci|install)|tsc/.test(i.args))).toBe(false);
  });

  it("copies only files the build context holds, and the context holds no tests, builds or modules", () => {
    const sources = stages[0]!.filter((i) => i.op === "COPY").flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(join(REPO_ROOT, source)), source).toBe(true);
      expect(inContext(source.replace(/\/$/, "")), source).toBe(true);
    }
    for (const path of ["node_modules", "dist", "test", ".git", "deploy", "src/cli.ts", "proto/csi.proto", "id_ed25519"]) {
      expect(inContext(path), path).toBe(["src/cli.ts", "proto/csi.proto"].includes(path));
    }
  });
});

describe("Dockerfile build stage, rehearsed on the build context", () => {
  const dir = mkdtempSync(join(tmpdir(), "zcsi-image-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("compiles with the Dockerfile's command and runs from the layout the final stage copies", { timeout: 180_000 }, () => {
    // The build stage: COPY package.json package-lock.json tsconfig.json proto src; `npm ci`
    // is replaced by this checkout's node_modules (same lockfile).
    const context = join(dir, "build");
    for (const path of ["package.json", "package-lock.json", "tsconfig.json", "proto", "src"]) cpSync(join(REPO_ROOT, path), join(context, path), { recursive: true });
    symlinkSync(join(REPO_ROOT, "node_modules"), join(context, "node_modules"), "dir");
    // src/ compiles exactly as committed: no RUN rewrites a file of it.
    for (const run of all.filter((i) => i.op === "RUN")) expect(run.args, "a RUN that writes into src/").not.toMatch(/>\s*src\//);
    const tsc = spawnSync(process.execPath, [join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], { cwd: context, encoding: "utf8" });
    expect(tsc.stdout + tsc.stderr, "tsc in the build stage").toBe("");
    expect(tsc.status).toBe(0);

    // The final stage: package.json, node_modules, proto and dist/src, in /app.
    const app = join(dir, "app");
    for (const path of ["package.json", "proto", "dist/src"]) cpSync(join(context, path), join(app, path), { recursive: true });
    symlinkSync(join(REPO_ROOT, "node_modules"), join(app, "node_modules"), "dir");
    for (const role of ["controller", "node"]) expect(existsSync(join(app, `dist/src/roles/${role}.js`)), role).toBe(true);
    const version = spawnSync(process.execPath, [join(app, "dist/src/cli.js"), "--version"], { cwd: "/", encoding: "utf8" });
    expect(version.stderr).toBe("");
    expect(version.stdout.trim()).toBe(packageVersion);
    // The CSI proto is found relative to package.json, as at run time.
    const proto = spawnSync(process.execPath, ["--input-type=module", "-e", `const m = await import(${JSON.stringify(join(app, "dist/src/csi/proto.js"))}); console.log(typeof m.loadCsiProto().csi.v1.Controller)`], {
      cwd: "/",
      encoding: "utf8",
    });
    expect(proto.stderr).toBe("");
    expect(proto.stdout.trim()).toBe("function");
    // The demo is not a role of the image (it lives in scripts/, beside the harness it drives).
    const demo = spawnSync(process.execPath, [join(app, "dist/src/cli.js"), "demo"], { cwd: "/", encoding: "utf8" });
    expect(demo.status).not.toBe(0);
    expect(existsSync(join(app, "dist/scripts"))).toBe(false);
  });
});
