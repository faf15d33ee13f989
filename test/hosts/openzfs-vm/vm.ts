/**
 * An OpenZFS 2.x pool host for tests: a qemu VM (TCG: no KVM here) booting the Debian kernel
 * and the busybox initramfs that `build.sh` makes, reached over ssh on loopback ports.
 *
 *   const vm = await startOpenZfsVm();            // boots (~15-25 s), creates a pool on its disk
 *   await vm.exec.run(["zfs", "list"]);           // SshExecutor to the guest, as root
 *   await vm.stop();                              // kills qemu, removes the temp dir; idempotent
 *
 * Each VM has its own temp dir (disk image, client key, console log) and its own host ports,
 * so several can run at once. The guest runs two sshds on one host key: `port` (22 in the
 * guest) for the harness, and `servicePort` (2222) for the driver under test, which a test can
 * kill and restart through the first (`killServiceSshd`, `startServiceSshd`).
 *
 * `bootOpenZfsVm` boots without making a pool (shared.ts boots the run's shared VMs with it);
 * `attachOpenZfsVm` (client.ts) reaches a booted VM from any process.
 *
 * Cleanup: stop() in afterAll; an exit hook kills qemu if the process exits without it; and
 * qemu runs under `setpriv --pdeathsig SIGKILL`, so even a SIGKILLed test process takes its
 * VMs with it.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { SshExecutor } from "../../../src/exec/ssh.js";
import { attachOpenZfsVm, createVmPool, vmExecutor, type OpenZfsVm, type OpenZfsVmAddress } from "./client.js";

export type { OpenZfsVm, OpenZfsVmAddress } from "./client.js";

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));

export interface OpenZfsVmOptions {
  /** For logs and the executor's host name; default `openzfs-vm`. */
  readonly name?: string;
  /** Guest memory; default 1024 MiB (the ARC is capped at a quarter of it). */
  readonly memoryMiB?: number;
  /** Size of the sparse virtio disk the pool lives on (/dev/vda); default 512 MiB. */
  readonly diskMiB?: number;
  /**
   * More disks, by size (bootOpenZfsVm only): `/dev/disk/by-id/virtio-zcsi-<MiB>`, so a shared
   * VM can give each file a pool of the exact size it asked for.
   */
  readonly extraDisksMiB?: readonly number[];
  /** Pool name on the disk (created at start); default `zt` + 10 hex digits. `false`: no pool. */
  readonly pool?: string | false;
  /** Milliseconds to wait for the guest's sshd; default 180 s (TCG on a busy 2-core host). */
  readonly bootTimeoutMs?: number;
}

export interface OpenZfsImage {
  readonly dir: string;
  readonly kernel: string;
  readonly initramfs: string;
  /** manifest.json: kernel release, package versions, build time. */
  readonly manifest: Record<string, unknown>;
}

let imagePromise: Promise<OpenZfsImage> | undefined;

/**
 * The image to boot: `$ZCSI_OPENZFS_VM_IMAGE` (a directory build.sh printed) when set, else
 * build.sh's answer (a cache hit costs an apt lists refresh, ~1-3 s; a cold build minutes).
 * Once per process. The build runs at a lower CPU priority (nice 10): in a `both` run it
 * builds while the zfs-fuse project's files run (global-setup.ts).
 */
export function openZfsImage(): Promise<OpenZfsImage> {
  imagePromise ??= (async () => {
    let dir = process.env["ZCSI_OPENZFS_VM_IMAGE"];
    if (dir === undefined || dir === "") {
      const { stdout } = await run("nice", ["-n", "10", "bash", join(HERE, "build.sh")], { maxBuffer: 16 << 20, timeout: 40 * 60_000 });
      dir = stdout.trim().split("\n").pop() ?? "";
    }
    const kernel = join(dir, "vmlinuz");
    const initramfs = join(dir, "initramfs.cpio.zst");
    if (!existsSync(kernel) || !existsSync(initramfs)) throw new Error(`no OpenZFS VM image in ${JSON.stringify(dir)}`);
    const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as Record<string, unknown>;
    return { dir, kernel, initramfs, manifest };
  })();
  imagePromise.catch(() => {
    imagePromise = undefined;
  });
  return imagePromise;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const bound = server.address();
      const port = typeof bound === "object" && bound !== null ? bound.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Live VMs of this process, for the exit hook. */
const live = new Map<number, { pid: number; dir: string }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const { pid, dir } of live.values()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

function qemuArgs(image: OpenZfsImage, o: { disks: readonly { file: string; serial: string }[]; port: number; servicePort: number; memoryMiB: number; authKey: string }): string[] {
  const [type, blob] = o.authKey.trim().split(/\s+/);
  const append = [
    "console=ttyS0",
    "loglevel=3",
    "panic=-1",
    "rdinit=/init",
    `zcsi.authkey=${type}:${blob}`,
    `zcsi.arcmax=${Math.floor((o.memoryMiB * 1024 * 1024) / 4)}`,
  ].join(" ");
  return [
    "-accel", "tcg,thread=multi",
    // Westmere (SSE4.2, AES-NI, PCLMUL; no AVX), not `max`: under TCG the guest runs 1.5-2x
    // faster without the AVX/AVX2 code paths `max` makes glibc and the kernel pick (measured:
    // `zfs version` 0.21 s vs 0.46 s, zfs create+destroy 1.7 s vs 2.7 s, boot 30 s vs 55 s,
    // 8 MiB over ssh stdin 8 s vs 14 s). AES-NI stays for sshd's AES-GCM and ZFS's.
    "-cpu", "Westmere",
    "-smp", "2",
    "-m", String(o.memoryMiB),
    "-nodefaults", "-no-user-config", "-no-reboot",
    "-display", "none",
    "-serial", "stdio",
    "-monitor", "none",
    "-kernel", image.kernel,
    "-initrd", image.initramfs,
    "-append", append,
    ...o.disks.flatMap(({ file, serial }, i) => [
      "-drive", `file=${file},if=none,format=raw,id=disk${i},cache=unsafe,discard=unmap`,
      "-device", `virtio-blk-pci,drive=disk${i},serial=${serial}`,
    ]),
    // restrict=on: the guest reaches nothing (not the host, not the outside); the forwards
    // below still carry the host's connections in.
    "-netdev", `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${o.port}-:22,hostfwd=tcp:127.0.0.1:${o.servicePort}-:2222`,
    "-device", "virtio-net-pci,netdev=net0",
    // Free-page reporting hands memory the guest frees back to the host.
    "-device", "virtio-balloon-pci,free-page-reporting=on",
    "-device", "virtio-rng-pci",
  ];
}

/**
 * Removes temp dirs of VMs whose test process was SIGKILLed (pdeathsig took qemu along, but no
 * exit hook ran to remove the dir): those whose qemu pid file names a dead process, and those
 * without one (a start that died early) older than ten minutes.
 */
function sweepStaleDirs(): void {
  const root = tmpdir();
  for (const entry of readdirSync(root)) {
    if (!entry.startsWith("zcsi-vm-")) continue;
    const dir = join(root, entry);
    try {
      const pidFile = join(dir, "qemu.pid");
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, "utf8").trim());
        if (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`)) continue;
      } else if (Date.now() - statSync(dir).mtimeMs < 10 * 60_000) {
        continue;
      }
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // another process removed it first
    }
  }
}

/** A VM with no pool yet, and what only its owner (the process running qemu) can do. */
export interface BootedOpenZfsVm {
  readonly address: OpenZfsVmAddress;
  console(): string;
  stop(): Promise<void>;
}

/** Boots a VM and waits until its harness sshd answers; no pool (see `startOpenZfsVm`). */
export async function bootOpenZfsVm(options: Omit<OpenZfsVmOptions, "pool"> = {}): Promise<BootedOpenZfsVm> {
  const name = options.name ?? "openzfs-vm";
  const memoryMiB = options.memoryMiB ?? 1024;
  const image = await openZfsImage();
  const t0 = performance.now();
  installExitHook();
  sweepStaleDirs();
  const dir = await mkdtemp(join(tmpdir(), "zcsi-vm-"));
  let qemu: ChildProcess | undefined;
  let exec: SshExecutor | undefined;
  let consoleText = "";
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await exec?.close().catch(() => undefined);
      const proc = qemu;
      if (proc?.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once("exit", () => r()));
        proc.kill("SIGKILL");
        await exited;
      }
      if (proc?.pid !== undefined) live.delete(proc.pid);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  try {
    const privateKeyPath = join(dir, "id_ed25519");
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "zcsi-vm-harness", "-f", privateKeyPath]);
    const privateKey = await readFile(privateKeyPath);
    const authKey = (await readFile(`${privateKeyPath}.pub`, "utf8")).trim();
    const disks = [{ file: join(dir, "disk.raw"), serial: "zcsi-pool", mib: options.diskMiB ?? 512 }];
    for (const mib of options.extraDisksMiB ?? []) disks.push({ file: join(dir, `disk-${mib}.raw`), serial: `zcsi-${mib}`, mib });
    for (const { file, mib } of disks) {
      const fh = await open(file, "w");
      await fh.truncate(mib * 1024 * 1024); // sparse
      await fh.close();
    }

    // Ports: pick free ones, let qemu bind them; another process may take one in between, so retry.
    let port = 0;
    let servicePort = 0;
    let hostKeyLine = "";
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      servicePort = await freePort();
      if (port === servicePort) continue;
      consoleText = "";
      const proc = spawn(
        "setpriv",
        ["--pdeathsig", "SIGKILL", "--", "qemu-system-x86_64", ...qemuArgs(image, { disks, port, servicePort, memoryMiB, authKey })],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      qemu = proc;
      if (proc.pid !== undefined) {
        live.set(proc.pid, { pid: proc.pid, dir });
        // setpriv execs qemu, so this pid is qemu's. Synchronous: no await before the exit
        // listener below, or a qemu that fails at once (a port clash) would go unnoticed.
        writeFileSync(join(dir, "qemu.pid"), `${proc.pid}\n`);
      }
      proc.stdout?.setEncoding("utf8");
      proc.stderr?.setEncoding("utf8");
      const debug = process.env["ZCSI_VM_DEBUG"] === "1";
      proc.stdout?.on("data", (s: string) => {
        if (consoleText.length < 1 << 20) consoleText += s;
        if (debug) process.stderr.write(s.replace(/^/gm, `[${name} ${((performance.now() - t0) / 1000).toFixed(1)}s] `));
      });
      let qemuErr = "";
      proc.stderr?.on("data", (s: string) => {
        if (qemuErr.length < 65536) qemuErr += s;
      });
      const outcome = await new Promise<{ ready: string } | { exit: string }>((resolve) => {
        const timeoutMs = options.bootTimeoutMs ?? 180_000;
        const timer = setTimeout(() => resolve({ exit: `no "ready" on the console within ${timeoutMs} ms` }), timeoutMs);
        const onData = (): void => {
          // The whole line: the serial output arrives in chunks that may end inside the key.
          const m = /zcsi-vm: ready (ssh-ed25519 [A-Za-z0-9+/=]+) openzfs-vm\r?\n/.exec(consoleText);
          if (m?.[1]) {
            clearTimeout(timer);
            proc.stdout?.off("data", onData);
            resolve({ ready: m[1] });
          }
        };
        proc.stdout?.on("data", onData);
        proc.once("error", (e) => {
          clearTimeout(timer);
          resolve({ exit: `cannot run qemu: ${e.message}` });
        });
        proc.once("exit", (code, signal) => {
          clearTimeout(timer);
          resolve({ exit: `qemu exited (${code ?? signal}): ${qemuErr.trim()}` });
        });
      });
      if ("ready" in outcome) {
        hostKeyLine = `${outcome.ready} ${name}`;
        break;
      }
      // This qemu is done: kill it (if it still runs) before deciding whether to try again.
      if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
        const exited = new Promise<void>((r) => proc.once("exit", () => r()));
        proc.kill("SIGKILL");
        await exited;
      }
      if (proc.pid !== undefined) live.delete(proc.pid);
      qemu = undefined;
      // Another process took a port between freePort() and qemu's bind: try other ports.
      if (attempt < 3 && /Could not set up host forwarding rule/.test(outcome.exit)) continue;
      throw new Error(`openzfs-vm ${name}: ${outcome.exit}\n--- console (last 4000 chars) ---\n${consoleText.slice(-4000)}`);
    }
    await writeFile(join(dir, "console.log"), consoleText);
    const knownHostsPath = join(dir, "known_hosts");
    await writeFile(knownHostsPath, `[127.0.0.1]:${port} ${hostKeyLine}\n[127.0.0.1]:${servicePort} ${hostKeyLine}\n`);
    exec = vmExecutor({ port, hostKeyLine }, name, privateKey);
    // "ready" is printed after sshd forked; its listener may still be a moment away.
    for (let i = 0; ; i++) {
      try {
        const r = await exec.run(["true"]);
        if (r.exitCode === 0) break;
        throw new Error(r.stderr);
      } catch (err) {
        if (i >= 40) throw err;
        await sleep(250);
      }
    }
    await exec.close();
    exec = undefined;
    return {
      address: {
        name, port, servicePort, dir, hostKeyLine, privateKeyPath, knownHostsPath, bootMs: performance.now() - t0,
        disks: disks.map(({ serial, mib }) => ({ path: serial === "zcsi-pool" ? "/dev/vda" : `/dev/disk/by-id/virtio-${serial}`, mib })),
      },
      console: () => consoleText,
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** A fresh VM of its own (booted here, killed by stop()) with a pool on its disk unless `pool: false`. */
export async function startOpenZfsVm(options: OpenZfsVmOptions = {}): Promise<OpenZfsVm> {
  const booted = await bootOpenZfsVm(options);
  const pool = options.pool === false ? undefined : (options.pool ?? `zt${randomBytes(5).toString("hex")}`);
  const vm = await attachOpenZfsVm(booted.address, { ...(pool !== undefined && { pool }), disk: "/dev/vda", console: booted.console, stop: booted.stop });
  try {
    if (pool !== undefined) await createVmPool(vm.exec, pool, "/dev/vda");
    return vm;
  } catch (err) {
    await vm.stop().catch(() => undefined);
    throw err;
  }
}

/** Whether this machine can run the VM backend at all (qemu and setpriv present). */
export function openZfsVmAvailable(): boolean {
  return spawnSync("qemu-system-x86_64", ["--version"], { stdio: "ignore" }).status === 0 && existsSync("/usr/bin/setpriv");
}
