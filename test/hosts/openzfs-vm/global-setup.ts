/**
 * vitest globalSetup of the `openzfs-vm` project. vitest runs every project's globalSetup, one
 * after the other, before the first test file of any project, so this returns at once and
 * works in the background: it finds (warm: an apt lists refresh, seconds) or builds (cold:
 * about ten minutes) the VM image, then boots the run's shared VMs (shared.ts). In `both`, all
 * of it happens while the zfs-fuse project runs. The VM project's setup file (image-ready.ts)
 * makes each of its files wait for the image, outside any hook's timeout. Refuses loudly when
 * the machine cannot run the VM backend: a backend that was asked for is never skipped in
 * silence.
 *
 * ZCSI_OPENZFS_VMS: how many shared VMs (default 3: the most pool hosts a suite holds at once,
 * controller.test.ts's one plus its two-host block); 0 boots a VM per pool host, as before.
 */
import { bootSharedVms } from "./shared.js";
import { openZfsImage, openZfsVmAvailable } from "./vm.js";

export default function setup(): () => Promise<void> {
  if (!openZfsVmAvailable()) {
    throw new Error("the openzfs-vm backend needs qemu-system-x86_64 and setpriv (scripts/setup.sh installs them); run ZCSI_ZFS_BACKEND=zfs-fuse for zfs-fuse only");
  }
  const count = Number(process.env["ZCSI_OPENZFS_VMS"] ?? "3");
  if (!Number.isInteger(count) || count < 0 || count > 8) throw new Error(`ZCSI_OPENZFS_VMS=${process.env["ZCSI_OPENZFS_VMS"]}: expected 0 to 8 shared VMs`);
  const t0 = performance.now();
  const image = openZfsImage().then((image) => {
    const packages = (image.manifest["packages"] ?? {}) as Record<string, string>;
    console.log(
      `openzfs-vm: image ${image.dir} (kernel ${String(image.manifest["kernel"])}, zfs ${packages["zfsutils-linux"] ?? "?"}) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    return image;
  });
  return bootSharedVms(count, image);
}
