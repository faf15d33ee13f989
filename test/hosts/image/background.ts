/**
 * The container image built in the background while the tests run (scripts/test.sh sets
 * ZCSI_IMAGE_BACKGROUND=1): a cold build (debootstrap base, then the Dockerfile without layer
 * cache) takes minutes of mostly network and CPU work that no test needs until image.test.ts,
 * which the run's sequencer (test/harness/sequencer.ts) puts last in its project.
 *
 * The zfs-fuse project's globalSetup calls `startImageBuild`: `nice -n 10 build.sh` in its own
 * process group, its result written to a temp dir named by $ZCSI_IMAGE_BUILD (inherited by the
 * test workers): `image` (the name, written whole then renamed) or `image.error`. The worker's
 * `imageUnderTest` waits for one of them (`waitForBackgroundImage`). Teardown stops a build
 * still running (a run that never reached image.test.ts) and removes the dir.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../../../src/util/package.js";

const ENV = "ZCSI_IMAGE_BUILD";

/** Starts build.sh in the background when asked (ZCSI_IMAGE_BACKGROUND=1 and no ZCSI_IMAGE); returns the teardown. */
export function startImageBuild(): () => Promise<void> {
  if (process.env["ZCSI_IMAGE_BACKGROUND"] !== "1" || (process.env["ZCSI_IMAGE"] ?? "") !== "") return async () => undefined;
  const dir = mkdtempSync(join(tmpdir(), "zcsi-image-build-"));
  process.env[ENV] = dir;
  const t0 = performance.now();
  const child = spawn("nice", ["-n", "10", "bash", join(packageRoot, "test", "hosts", "image", "build.sh")], {
    cwd: packageRoot,
    detached: true, // its own process group: teardown stops buildah and its children too
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => {
    if (stderr.length < 65536) stderr += b.toString();
  });
  const done = new Promise<void>((resolve) => {
    const finish = async (result: { image: string } | { error: string }): Promise<void> => {
      if ("image" in result) {
        console.log(`image: ${result.image} ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (built in the background)`);
        await writeFile(join(dir, "image.tmp"), result.image);
        await rename(join(dir, "image.tmp"), join(dir, "image"));
      } else {
        await writeFile(join(dir, "image.error"), result.error);
      }
      resolve();
    };
    child.once("error", (err) => void finish({ error: `cannot run build.sh: ${err.message}` }));
    child.once("close", (code, signal) => {
      const image = stdout.trim().split("\n").pop() ?? "";
      void finish(code === 0 && image !== "" ? { image } : { error: `test/hosts/image/build.sh exited ${code ?? signal}: ${stderr.trim().split("\n").slice(-20).join("\n")}` });
    });
  });
  return async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    await done;
    await rm(dir, { recursive: true, force: true });
  };
}

/** In a test worker: the background build's image, once it is ready (undefined when none runs). */
export async function waitForBackgroundImage(): Promise<string | undefined> {
  const dir = process.env[ENV];
  if (dir === undefined || dir === "") return undefined;
  for (;;) {
    if (existsSync(join(dir, "image"))) return readFileSync(join(dir, "image"), "utf8");
    if (existsSync(join(dir, "image.error"))) throw new Error(readFileSync(join(dir, "image.error"), "utf8"));
    if (!existsSync(dir)) throw new Error(`${dir} is gone: the run's globalSetup ended`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}
