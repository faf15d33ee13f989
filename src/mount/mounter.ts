import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { deadlineExceeded, failedPrecondition, internal, isZcsiError, notFound, unavailable, ZcsiError } from "../errors.js";
import { sshfsError } from "../exec/errors.js";
import type { Executor } from "../exec/executor.js";
import type { Logger } from "../log.js";

/** What statfs(2) says about a mounted volume, in bytes and inodes. */
export interface FsStats {
  readonly totalBytes: bigint;
  readonly availableBytes: bigint;
  readonly usedBytes: bigint;
  readonly totalInodes: bigint;
  readonly freeInodes: bigint;
  readonly usedInodes: bigint;
}

/** A filesystem that answered, or the reason it did not (ENOTCONN, EIO, a timeout). */
export type Probe = { readonly ok: true; readonly stats: FsStats } | { readonly ok: false; readonly problem: string };

/**
 * How sshfs is started so that it outlives the plugin process:
 * - `systemd`: inside a transient scope of the host's systemd (`systemd-run --scope`), so a
 *   container runtime tearing down the plugin's cgroup does not take the FUSE server along
 *   (the same trick kubelet's mount-utils use for FUSE mounts);
 * - `detached`: in its own session; sshfs then daemonizes, so it is re-parented to init and
 *   neither SIGKILL of the plugin nor a kill of its process group reaches it.
 * `auto` picks `systemd` when systemd runs the host (/run/systemd/system exists).
 */
export type SshfsLauncher = "auto" | "systemd" | "detached";

export interface MounterOptions {
  /** Per command; also bounds statfs on a hung mount. */
  readonly timeoutMs?: number;
  readonly launcher?: SshfsLauncher;
}

const SYSTEMD_RUN = ["/usr/bin/systemd-run", "/bin/systemd-run"];

/**
 * Mount primitives, each one argv through the Executor (no shell). Every path it is given
 * was validated as absolute by csi/node.ts; `--` still ends option parsing before it.
 */
export class Mounter {
  private readonly timeoutMs: number;
  readonly launcher: Exclude<SshfsLauncher, "auto">;

  constructor(
    private readonly exec: Executor,
    private readonly logger: Logger,
    options: MounterOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 30_000;
    const launcher = options.launcher ?? "auto";
    this.launcher = launcher === "auto" ? (existsSync("/run/systemd/system") && SYSTEMD_RUN.some((p) => existsSync(p)) ? "systemd" : "detached") : launcher;
  }

  private async run(argv: string[], timeoutMs = this.timeoutMs): Promise<{ ok: boolean; stderr: string; stdout: string }> {
    const result = await this.exec.run(argv, { timeoutMs });
    return { ok: result.exitCode === 0, stderr: result.stderr.trim(), stdout: result.stdout };
  }

  /** `mount --bind`: not `--rbind`, so mounts below the source are not carried along. */
  async bind(source: string, target: string): Promise<void> {
    const r = await this.run(["mount", "--bind", "--", source, target]);
    if (!r.ok) throw internal(`bind mount of ${source} on ${target} failed: ${r.stderr}`);
  }

  /**
   * Sets the per-mount flags of a bind mount (mount(2) MS_REMOUNT|MS_BIND): the flags
   * given replace the mount's flags, so the caller passes every flag to keep.
   */
  async remountBind(target: string, flags: readonly string[]): Promise<void> {
    const r = await this.run(["mount", "-o", ["remount", "bind", ...flags].join(","), "--", target]);
    if (!r.ok) throw internal(`remount of ${target} with ${flags.join(",")} failed: ${r.stderr}`);
  }

  /**
   * Unmounts the top mount at `target`. A busy or dead mount falls back to a lazy unmount
   * (umount -l), which detaches it now and frees it when its last user lets go.
   */
  async unmount(target: string): Promise<void> {
    const r = await this.run(["umount", "--", target]);
    if (r.ok) return;
    const lazy = await this.run(["umount", "-l", "--", target]);
    if (!lazy.ok) throw internal(`unmount of ${target} failed: ${r.stderr}; lazy unmount: ${lazy.stderr}`);
    this.logger.warn({ op: "unmount", target, err: r.stderr }, "unmounted lazily");
  }

  /**
   * statfs(2) in a child process with a timeout: a hung FUSE mount blocks the caller, and
   * in this process it would block a libuv pool thread for good.
   */
  async statfs(path: string, timeoutMs = this.timeoutMs): Promise<Probe> {
    let r;
    try {
      // %S fundamental block size, %b blocks, %f free, %a available to users, %c inodes, %d free inodes
      r = await this.run(["stat", "--file-system", "--format", "%S %b %f %a %c %d", "--", path], timeoutMs);
    } catch (err) {
      return { ok: false, problem: `${path} did not answer statfs within ${timeoutMs} ms (${(err as Error).message})` };
    }
    if (!r.ok) return { ok: false, problem: r.stderr.replace(/^stat: /, "") || `statfs of ${path} failed` };
    const numbers = r.stdout.trim().split(" ");
    if (numbers.length !== 6 || !numbers.every((n) => /^[0-9]+$/.test(n))) return { ok: false, problem: `unexpected statfs output for ${path}: ${r.stdout.trim()}` };
    const [bsize, blocks, bfree, bavail, files, ffree] = numbers.map(BigInt) as [bigint, bigint, bigint, bigint, bigint, bigint];
    return {
      ok: true,
      stats: {
        totalBytes: blocks * bsize,
        availableBytes: bavail * bsize,
        usedBytes: (blocks - bfree) * bsize,
        totalInodes: files,
        freeInodes: ffree,
        usedInodes: files > ffree ? files - ffree : 0n,
      },
    };
  }

  /** Numeric owner of a path (stat(1) in a child, for the same reason as statfs). */
  async owner(path: string): Promise<{ uid: number; gid: number }> {
    const r = await this.run(["stat", "--format", "%u %g", "--", path]);
    const m = /^(\d+) (\d+)$/.exec(r.stdout.trim());
    if (!r.ok || !m) throw unavailable(`cannot read the owner of ${path}: ${r.stderr || r.stdout.trim()}`);
    return { uid: Number(m[1]), gid: Number(m[2]) };
  }

  /**
   * Starts sshfs (argv from sshfs.ts) so that the FUSE server outlives this process, and
   * waits for the mount to be in place (sshfs exits 0 once it is, leaving its daemon). It
   * runs through the executor like every command (logged, counted), detached: in its own
   * session, its and its ssh's output in `logPath`, not a pipe (ssh lives on after we exit,
   * and a write to a pipe whose reader is gone would kill it with SIGPIPE).
   */
  async sshfs(argv: readonly string[], logPath: string, context: string): Promise<void> {
    const full = this.launcher === "systemd" ? ["systemd-run", "--scope", "--quiet", "--collect", `--description=zcsi sshfs ${argv[2] ?? ""}`, "--", ...argv] : [...argv];
    let result;
    try {
      result = await this.exec.run(full, { timeoutMs: this.timeoutMs, detach: { outputPath: logPath } });
    } catch (err) {
      if (isZcsiError(err, "DeadlineExceeded")) throw deadlineExceeded(`${context}: sshfs did not mount within ${this.timeoutMs} ms`, { cause: err });
      if (isZcsiError(err)) throw new ZcsiError(err.kind, `${context}: ${err.message}`, { cause: err });
      throw err;
    }
    if (result.exitCode === 0) return;
    const text = await readFile(logPath, "utf8").catch(() => "");
    this.logger.warn({ op: "sshfs", exitCode: result.exitCode, signal: result.signal, output: text.slice(0, 500) }, "sshfs failed");
    throw sshfsError(text, context);
  }
}
