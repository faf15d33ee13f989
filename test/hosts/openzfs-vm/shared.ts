/**
 * OpenZFS VMs booted once per vitest run and lent to the test files one after the other,
 * instead of a boot (~20 s under TCG, two for a two-host suite) per pool host per file.
 *
 * - The `openzfs-vm` project's globalSetup calls `bootSharedVms(n, image)`: once the image is
 *   ready it writes its directory to `<dir>/image` (or the build's error to `image.error`),
 *   then boots n VMs in the background, one after the other (in `both` the zfs-fuse project
 *   runs beside), writes each one's address to `<dir>/<i>.json` (or the boot's error
 *   to `<i>.error`) and tells the workers `<dir>` in `$ZCSI_OPENZFS_SHARED_VMS`. Its teardown
 *   kills them. `waitForImage` (the project's setup file) waits for `<dir>/image`.
 * - A worker's `createPoolHost` calls `leaseSharedVm`: the first VM this process has not lent
 *   out yet, reset (see RESET) and given a fresh pool on its whole disk; giving it back
 *   destroys the pool. Test files run one at a time (`fileParallelism: false`), so a VM
 *   serves one file at a time; a file that needs more VMs at once than were booted, or a
 *   bigger disk, gets a VM of its own (`startOpenZfsVm`), as every file did before.
 *
 * Each file starts from what a fresh boot gives it: no pool but its own, no process left in
 * a pool's directory, the driver-facing sshd running, and only the harness's key authorized.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attachOpenZfsVm, type OpenZfsVm, type OpenZfsVmAddress } from "./client.js";
import { bootOpenZfsVm, type BootedOpenZfsVm, type OpenZfsImage } from "./vm.js";

const ENV = "ZCSI_OPENZFS_SHARED_VMS";
/**
 * The pool disks of a shared VM (sparse on the host), one per pool size the suites ask for:
 * a test may check its pool's size. A file gets the disk of its size; another size gets a VM
 * of its own.
 */
export const SHARED_DISKS_MIB = [256, 512, 1024, 2048];

/**
 * Once `image` is ready, boots `count` VMs of it in the background; returns at once with the
 * teardown that kills them.
 */
export function bootSharedVms(count: number, image: Promise<OpenZfsImage>): () => Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "zcsi-shared-vms-"));
  process.env[ENV] = dir;
  const booted: BootedOpenZfsVm[] = [];
  // Before any worker can look: a worker waits for a VM that is `pending`.
  for (let i = 0; i < count; i++) writeFileSync(join(dir, `${i}.pending`), "");
  const ready = image.then(
    // Written whole, then renamed: a waiting worker never reads half a path.
    async (img) => {
      await writeFile(join(dir, "image.tmp"), img.dir);
      await rename(join(dir, "image.tmp"), join(dir, "image"));
    },
    async (err: unknown) => {
      const message = `the OpenZFS VM image: ${err instanceof Error ? err.message : String(err)}`;
      await writeFile(join(dir, "image.error"), message);
      throw new Error(message);
    },
  );
  ready.catch(() => undefined); // awaited below, per VM; with none, nobody else would
  // One after the other: the first is ready soonest (three at once on two cores took 150 s
  // under load, each), and the others boot while the first file runs.
  let chain = Promise.resolve();
  const boots = Array.from({ length: count }, (_, i) => (chain = chain.then(async () => {
    try {
      await ready;
      const [first, ...more] = SHARED_DISKS_MIB;
      const vm = await bootOpenZfsVm({ name: `openzfs-vm-${i + 1}`, diskMiB: first, extraDisksMiB: more });
      booted.push(vm);
      await writeFile(join(dir, `${i}.json`), JSON.stringify(vm.address));
      console.log(`openzfs-vm: shared VM ${i + 1} of ${count} booted in ${(vm.address.bootMs / 1000).toFixed(1)} s`);
    } catch (err) {
      await writeFile(join(dir, `${i}.error`), err instanceof Error ? err.message : String(err));
    }
    await rm(join(dir, `${i}.pending`), { force: true });
  })));
  return async () => {
    await Promise.allSettled([ready, ...boots]);
    await Promise.allSettled(booted.map((vm) => vm.stop()));
    await rm(dir, { recursive: true, force: true });
  };
}

/**
 * What makes a lent VM as good as a fresh one, in one command (each costs ~0.2 s under TCG):
 * kill what a previous file left running in a pool (a `files.hold`, a `zfs receive`),
 * destroy every pool, restart the driver-facing sshd if a test killed it, trust only the
 * harness's key ($1), then create the new pool ($2) on the whole disk ($3) of the size asked for.
 */
const RESET = `
for p in /proc/[0-9]*; do
  comm=$(cat "$p/comm" 2>/dev/null) || continue
  case "$comm:$(readlink "$p/cwd" 2>/dev/null)" in
    zfs:* | zpool:* | sftp-server:* | *:/mnt/*) kill -9 "\${p#/proc/}" 2>/dev/null ;;
  esac
done
for pool in $(zpool list -H -o name); do zpool destroy -f "$pool" || exit 1; done
if grep -q ' /mnt/' /proc/mounts; then echo "still mounted under /mnt:" >&2; grep ' /mnt/' /proc/mounts >&2; exit 1; fi
rm -rf /mnt/* /usr/local/libexec
printf '%s\\n' "$1" >/etc/ssh/authorized_keys
pid=$(cat /run/sshd-service.pid 2>/dev/null)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then /usr/sbin/zcsi-service-sshd start || exit 1; fi
zpool create -f -m "/mnt/$2" "$2" "$3"
`;

/** Shared VMs this process holds now (by their host dir). */
const lent = new Set<string>();

/**
 * A shared VM with a fresh pool, or undefined when there is none for this request (no shared
 * VMs in this run, all lent out in this process, or no disk of `sizeMiB`); stop()
 * destroys the pool and gives the VM back.
 */
export async function leaseSharedVm(options: { name?: string; sizeMiB: number }): Promise<OpenZfsVm | undefined> {
  const dir = process.env[ENV];
  if (dir === undefined || dir === "" || !existsSync(dir) || !SHARED_DISKS_MIB.includes(options.sizeMiB)) return undefined;
  const address = await nextFree(dir);
  if (address === undefined) return undefined;
  const disk = address.disks.find((d) => d.mib === options.sizeMiB)?.path;
  if (disk === undefined) return undefined;
  lent.add(address.dir);
  const pool = `zt${randomBytes(5).toString("hex")}`;
  let vm: OpenZfsVm | undefined;
  try {
    vm = await attachOpenZfsVm(address, {
      ...(options.name !== undefined && { name: options.name }),
      pool,
      disk,
      stop: async () => {
        // Best effort: the next lease's RESET destroys whatever is left, and says why it cannot.
        await vm?.exec.run(["zpool", "destroy", "-f", pool]).catch(() => undefined);
        lent.delete(address.dir);
      },
    });
    const authKey = (await readFile(`${address.privateKeyPath}.pub`, "utf8")).trim();
    const r = await vm.exec.run(["sh", "-c", RESET, "sh", authKey, pool, disk]);
    if (r.exitCode !== 0) throw new Error(`${address.name}: resetting the shared VM failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
    return vm;
  } catch (err) {
    if (vm) await vm.stop().catch(() => undefined);
    lent.delete(address.dir);
    throw err;
  }
}

/** The first booted VM not lent out here, waiting for the boots still running; undefined when all are lent. */
async function nextFree(dir: string): Promise<OpenZfsVmAddress | undefined> {
  for (const until = Date.now() + 600_000; ; ) {
    let pending = false;
    const errors: string[] = [];
    for (let i = 0; existsSync(join(dir, `${i}.json`)) || existsSync(join(dir, `${i}.error`)) || existsSync(join(dir, `${i}.pending`)); i++) {
      if (existsSync(join(dir, `${i}.pending`))) {
        pending = true;
      } else if (existsSync(join(dir, `${i}.json`))) {
        const address = JSON.parse(readFileSync(join(dir, `${i}.json`), "utf8")) as OpenZfsVmAddress;
        if (!lent.has(address.dir)) return address;
      } else if (existsSync(join(dir, `${i}.error`))) {
        errors.push(readFileSync(join(dir, `${i}.error`), "utf8"));
      }
    }
    if (!pending) {
      if (errors.length > 0) throw new Error(`no shared OpenZFS VM: ${errors.join("\n")}`);
      return undefined;
    }
    if (Date.now() > until) throw new Error(`the shared OpenZFS VMs in ${dir} did not boot within 10 minutes`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * In a worker of the VM project (its setup file, image-ready.ts): waits for the image that the
 * globalSetup finds or builds, and hands its directory to `openZfsImage` through
 * `$ZCSI_OPENZFS_VM_IMAGE`. A cold build takes longer than any hook may, hence here.
 */
export async function waitForImage(): Promise<void> {
  const dir = process.env[ENV];
  if ((process.env["ZCSI_OPENZFS_VM_IMAGE"] ?? "") !== "" || dir === undefined || dir === "") return;
  for (;;) {
    if (existsSync(join(dir, "image"))) {
      process.env["ZCSI_OPENZFS_VM_IMAGE"] = readFileSync(join(dir, "image"), "utf8");
      return;
    }
    if (existsSync(join(dir, "image.error"))) throw new Error(readFileSync(join(dir, "image.error"), "utf8"));
    if (!existsSync(dir)) throw new Error(`${dir} is gone: the run's globalSetup ended`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}
