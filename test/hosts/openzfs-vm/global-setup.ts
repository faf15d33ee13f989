/**
 * vitest globalSetup of the `openzfs-vm` project: makes sure the VM image exists before any
 * suite boots a VM (a cold build takes minutes, longer than any hook timeout), and hands its
 * directory to the workers. Refuses loudly when the machine cannot run the VM backend: a
 * backend that was asked for is never skipped in silence.
 */
import { openZfsImage, openZfsVmAvailable } from "./vm.js";

export default async function setup(): Promise<void> {
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
}
