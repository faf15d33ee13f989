import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import { LocalExecutor } from "../../src/exec/local.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "zcsi-local-exec-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function running(args: string): boolean {
  return execFileSync("ps", ["-e", "-o", "stat=,args="], { encoding: "utf8" })
    .split("\n")
    .some((line) => !line.trim().startsWith("Z") && line.trim().replace(/^\S+\s+/, "") === args);
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(condition()).toBe(true);
}

describe("LocalExecutor, detached (how sshfs is started)", () => {
  it("sends the command's output to the file, not to the result, and reports its exit", async () => {
    const outputPath = join(dir, "out.log");
    const r = await new LocalExecutor().run(["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"], { detach: { outputPath } });
    expect(r).toMatchObject({ exitCode: 3, stdout: "", stderr: "" });
    expect((await readFile(outputPath, "utf8")).split("\n").sort()).toEqual(["", "to-stderr", "to-stdout"]);
  });

  it("leaves a daemon it started running after it exits", async () => {
    const outputPath = join(dir, "daemon.log");
    const r = await new LocalExecutor().run(["sh", "-c", "sleep 31.41 & echo $!; exit 0"], { detach: { outputPath } });
    expect(r.exitCode).toBe(0);
    await until(() => running("sleep 31.41"));
    process.kill(Number((await readFile(outputPath, "utf8")).trim()), "SIGKILL");
  });

  it("on timeout kills the whole process group and rejects DeadlineExceeded", async () => {
    const pending = new LocalExecutor().run(["sh", "-c", "sleep 31.42 & sleep 31.43"], { timeoutMs: 300, detach: { outputPath: join(dir, "slow.log") } });
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ZcsiError);
    expect((err as ZcsiError).kind).toBe("DeadlineExceeded");
    await until(() => !running("sleep 31.42") && !running("sleep 31.43"));
  });
});

describe("LocalExecutor, timeout", () => {
  it("rejects DeadlineExceeded at the deadline even when the killed command's pipes stay open (as a process stuck in D state keeps them)", async () => {
    // The setsid'd sleep is out of reach of the kill and holds stdout: the command never
    // closes, as when a zfs process hangs in the kernel on a wedged FUSE mount.
    const pidfile = join(dir, "stuck.pid");
    const err = await new LocalExecutor().run(["sh", "-c", 'setsid sleep 31.44 & echo $! > "$1"; exec sleep 31.45', "sh", pidfile], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as ZcsiError).kind).toBe("DeadlineExceeded");
    expect(running("sleep 31.44")).toBe(true); // rejected while the pipe's holder still runs
    process.kill(Number((await readFile(pidfile, "utf8")).trim()), "SIGKILL");
    await until(() => !running("sleep 31.44") && !running("sleep 31.45"));
  });
});
