/**
 * The ZFS backend under test, chosen by `ZCSI_ZFS_BACKEND`:
 *
 * - `zfs-fuse` (default): a pool on the local zfs-fuse daemon (test/harness/zfs-pool.ts).
 *   Fast; pool version 23, no feature flags.
 * - `openzfs-vm`: a pool on OpenZFS 2.x in a qemu VM (test/hosts/openzfs-vm/vm.ts), reached
 *   over ssh. What operators run.
 *
 * (`both` is not a backend: vitest.config.ts turns it into one project per backend, each of
 * which sets this variable for its workers.)
 *
 * Suites written against `PoolHost` run unchanged on either: every command, file check and
 * file write on the pool host goes through `exec`, never through this machine's filesystem.
 */
import type { ExecResult, Executor } from "../../src/exec/executor.js";
import { leaseSharedVm } from "../hosts/openzfs-vm/shared.js";
import { startOpenZfsVm, type OpenZfsVm } from "../hosts/openzfs-vm/vm.js";
import { createTestPool, type TestPool } from "./zfs-pool.js";

export type ZfsBackendName = "zfs-fuse" | "openzfs-vm";
export const ZFS_BACKENDS: readonly ZfsBackendName[] = ["zfs-fuse", "openzfs-vm"];

export function zfsBackend(): ZfsBackendName {
  const value = process.env["ZCSI_ZFS_BACKEND"] ?? "";
  if (value === "" || value === "zfs-fuse") return "zfs-fuse";
  if (value === "openzfs-vm") return "openzfs-vm";
  throw new Error(`ZCSI_ZFS_BACKEND=${value}: a test process runs one backend, zfs-fuse or openzfs-vm (vitest.config.ts splits "both")`);
}

/** Files on the pool host, through its executor (the same commands on Debian and busybox). */
export interface PoolHostFiles {
  write(path: string, data: string | Buffer): Promise<void>;
  read(path: string): Promise<string>;
  exists(path: string): Promise<boolean>;
  stat(path: string): Promise<{ uid: number; gid: number; mode: number }>;
  /** Starts a process whose working directory is `dir` (so its mount is busy) until release(). */
  hold(dir: string): Promise<{ release(): Promise<void> }>;
  sync(): Promise<void>;
}

/** A test pool on a pool host of either backend. Extends TestPool so existing users keep working. */
export interface PoolHost extends TestPool {
  readonly backend: ZfsBackendName;
  /** Arguments for `zpool import ... <pool>` that find the pool's devices after an export. */
  readonly importArgs: readonly string[];
  readonly files: PoolHostFiles;
  /** The VM behind an openzfs-vm pool. */
  readonly vm?: OpenZfsVm;
}

async function must(exec: Executor, argv: string[], stdin?: string | Buffer): Promise<ExecResult> {
  const r = await exec.run(argv, stdin === undefined ? {} : { stdin });
  if (r.exitCode !== 0) throw new Error(`${exec.host}: ${argv.join(" ")}: exit ${r.exitCode}: ${r.stderr.trim()}`);
  return r;
}

export function poolHostFiles(exec: Executor): PoolHostFiles {
  return {
    write: async (path, data) => {
      await must(exec, ["sh", "-c", 'cat > "$1"', "sh", path], data);
    },
    read: async (path) => (await must(exec, ["cat", path])).stdout,
    exists: async (path) => (await exec.run(["test", "-e", path])).exitCode === 0,
    stat: async (path) => {
      const [uid, gid, mode] = (await must(exec, ["stat", "-c", "%u %g %a", path])).stdout.trim().split(" ");
      return { uid: Number(uid), gid: Number(gid), mode: Number.parseInt(mode ?? "", 8) };
    },
    hold: async (dir) => {
      const script = 'cd "$1" || exit 1; sleep 120 </dev/null >/dev/null 2>&1 & echo $!';
      const pid = (await must(exec, ["sh", "-c", script, "sh", dir])).stdout.trim();
      if (!/^\d+$/.test(pid)) throw new Error(`hold ${dir}: no pid (${pid})`);
      // No wait needed: the shell forked the sleep after its `cd`, so the sleep's working
      // directory is `dir` from its first instant, before `$!` could be printed.
      return {
        release: async () => {
          await exec.run(["kill", "-9", pid]);
          // Released once the process has exited (gone, or a zombie: neither holds a directory).
          for (const until = Date.now() + 30_000; ; ) {
            const stat = await exec.run(["cat", `/proc/${pid}/stat`]);
            const state = stat.stdout.slice(stat.stdout.lastIndexOf(")") + 2).split(" ")[0];
            if (stat.exitCode !== 0 || state === "Z" || state === "X") break;
            if (Date.now() > until) throw new Error(`hold ${dir}: process ${pid} survived kill -9`);
            await new Promise((r) => setTimeout(r, 20));
          }
        },
      };
    },
    sync: async () => {
      await must(exec, ["sync"]);
    },
  };
}

export interface PoolHostOptions {
  readonly sizeMiB?: number;
  /** VM name (openzfs-vm only), for logs. */
  readonly name?: string;
}

/**
 * A fresh pool on the selected backend; destroy() removes it again. On openzfs-vm the pool is
 * on one of the run's shared VMs (test/hosts/openzfs-vm/shared.ts) when one is free, else on a
 * VM of its own that destroy() stops.
 */
export async function createPoolHost(options: PoolHostOptions = {}, backend: ZfsBackendName = zfsBackend()): Promise<PoolHost> {
  const sizeMiB = options.sizeMiB ?? 512;
  if (backend === "zfs-fuse") {
    const tp = await createTestPool({ sizeMiB });
    return { ...tp, destroy: () => tp.destroy(), backend, importArgs: ["-d", tp.dir], files: poolHostFiles(tp.exec) };
  }
  const name = options.name === undefined ? {} : { name: options.name };
  const vm = (await leaseSharedVm({ sizeMiB, ...name })) ?? (await startOpenZfsVm({ diskMiB: sizeMiB, ...name }));
  const pool = vm.pool;
  const mountRoot = vm.mountRoot;
  if (pool === undefined || mountRoot === undefined) {
    await vm.stop();
    throw new Error("the VM made no pool");
  }
  return {
    pool,
    exec: vm.exec,
    mountRoot,
    // The host-side temp dir (disk images, keys); the pool is on the guest disk `vm.disk`.
    dir: vm.dir,
    destroy: () => vm.stop(),
    backend,
    // The guest's udev populates /dev/disk/by-*, where `zpool import` looks by default.
    importArgs: [],
    files: poolHostFiles(vm.exec),
    vm,
  };
}
