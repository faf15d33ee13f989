/**
 * Runs the image built by build.sh with podman, on this machine's constraints (see build.sh):
 * runc instead of crun (cgroup v1 with a controller in cgroup2: crun refuses), and rlimits no
 * higher than ours (no CAP_SYS_RESOURCE to raise them).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../../../src/util/package.js";
import { waitForBackgroundImage } from "./background.js";

const exec = promisify(execFile);

function hardLimit(name: string): string {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith(name));
  const hard = line?.trim().split(/\s{2,}/)[2];
  if (!hard) throw new Error(`no ${name} in /proc/self/limits`);
  return hard === "unlimited" ? "-1" : hard;
}

/** `podman run` flags every container of the tests gets. */
export function runtimeFlags(): string[] {
  const nofile = hardLimit("Max open files");
  return ["--runtime", "runc", "--ulimit", `nofile=${nofile}:${nofile}`, "--ulimit", "nproc=4096:4096"];
}

export interface PodmanResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** podman with argv (no shell); resolves with the exit code instead of throwing. */
export async function podman(args: readonly string[], timeoutMs = 120_000): Promise<PodmanResult> {
  try {
    const r = await exec("podman", [...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return { stdout: r.stdout, stderr: r.stderr, exitCode: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number | string };
    return { stdout: e.stdout ?? "", stderr: e.stderr ?? String(err), exitCode: typeof e.code === "number" ? e.code : -1 };
  }
}

/** podman that must succeed; its stdout. */
export async function podmanOk(args: readonly string[], timeoutMs?: number): Promise<string> {
  const r = await podman(args, timeoutMs);
  if (r.exitCode !== 0) throw new Error(`podman ${args.join(" ")}: exit ${r.exitCode}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * The image to test: $ZCSI_IMAGE when given; the one the run builds in the background
 * (scripts/test.sh: background.ts), once it is ready; else build.sh builds it now (cached:
 * seconds when nothing changed).
 */
export async function imageUnderTest(): Promise<string> {
  const given = process.env["ZCSI_IMAGE"];
  if (given) return given;
  const background = await waitForBackgroundImage();
  if (background !== undefined) return background;
  const r = await exec("bash", [join(packageRoot, "test", "hosts", "image", "build.sh")], { timeout: 1_800_000, maxBuffer: 16 << 20 });
  const image = r.stdout.trim().split("\n").pop();
  if (!image) throw new Error(`build.sh printed no image name: ${r.stderr}`);
  return image;
}
