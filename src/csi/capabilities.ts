import { invalidArgument } from "../errors.js";
import type { VolumeCapability__Output } from "../gen/csi/v1/VolumeCapability.js";

/**
 * zcsi serves filesystems only (a dataset, bind-mounted or over SSHFS); every access mode
 * is possible because SSHFS lets many nodes mount one dataset. Returns the reason a
 * capability is unsupported, or undefined when it is fine.
 */
export function capabilityProblem(cap: VolumeCapability__Output): string | undefined {
  if (cap.block || cap.accessType === "block") return "block volumes are not supported: zcsi provides filesystem volumes (ZFS datasets)";
  if (!cap.mount && cap.accessType !== "mount") return "volume_capability needs access_type mount";
  const fsType = cap.mount?.fsType ?? "";
  if (fsType !== "" && fsType !== "zfs") return `fs_type ${JSON.stringify(fsType)} is not supported: zcsi volumes are ZFS datasets (leave fs_type empty or "zfs")`;
  const mode = cap.accessMode?.mode;
  if (mode === undefined || mode === "UNKNOWN") return "volume_capability.access_mode is required";
  return undefined;
}

/** For requests where an unsupported capability is a caller error (CreateVolume, expand). */
export function requireCapabilities(caps: readonly VolumeCapability__Output[], field = "volume_capabilities"): void {
  if (caps.length === 0) throw invalidArgument(`${field} is required`);
  for (const cap of caps) {
    const problem = capabilityProblem(cap);
    if (problem) throw invalidArgument(`${field}: ${problem}`);
  }
}
