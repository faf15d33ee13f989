/**
 * vitest globalSetup of the `openzfs-vm` project: makes sure the VM image exists before any
 * suite boots a VM (a cold build takes minutes, longer than any hook timeout), hands its
 * directory to the workers, and starts booting the run's shared VMs (shared.ts) without
 * waiting for them: in `both`, they boot while the zfs-fuse project runs. Refuses loudly when
 * the machine cannot run the VM backend: a backend that was asked for is never skipped in
 * silence.
 *
 * ZCSI_OPENZFS_VMS: how many shared VMs (default 3: the most pool hosts a suite holds at once,
 * controller.test.ts's one plus its two-host block); 0 boots a VM per pool host, as before.
 */
import { bootSharedVms } from "./shared.js";
import { openZfsImage, openZfsVmAvailable } from "./vm.js";

export default async function setup(): Promise<() => Promise<void>> {
  if (!openZfsVmAvailable()) {
    throw new Error("the openzfs-vm backend needs qemu-system-x86_64 and setpriv (scripts/setup.sh installs them); run ZCSI_ZFS_BACKEND=zfs-fuse for zfs-fuse only");
  }
  const t0 = performance.now();
  const image = await openZfsImage();
  process.env["ZCSI_OPENZFS_VM_IMAGE"] = image.dir;
  const packages = (image.manifest["packages"] ?? {}) as Record<string, string>;
  console.log(
    `openzfs-vm: image ${image.dir} (kernel ${String(image.manifest["kernel"])}, zfs ${packages["zfsutils-linux"] ?? "?"}) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const count = Number(process.env["ZCSI_OPENZFS_VMS"] ?? "3");
  if (!Number.isInteger(count) || count < 0 || count > 8) throw new Error(`ZCSI_OPENZFS_VMS=${process.env["ZCSI_OPENZFS_VMS"]}: expected 0 to 8 shared VMs`);
  return bootSharedVms(count);
}
