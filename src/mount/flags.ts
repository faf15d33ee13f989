import { invalidArgument } from "../errors.js";
import { SSHFS_TUNABLES, type SshfsTuning } from "./sshfs.js";

/**
 * Mount flags arrive in the volume capability (CSI `MountVolume.mount_flags`, filled from a
 * StorageClass's or PV's `mountOptions`). Each flag must be on an allow-list: a flag is
 * either a per-mount option zcsi applies to the bind mount in the pod's target, or an SSHFS
 * tunable (see sshfs.ts) used when the volume is staged over SSHFS. Nothing else reaches
 * a command line.
 */
export const BIND_FLAGS = ["ro", "rw", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime"] as const;
export type BindFlag = (typeof BIND_FLAGS)[number];

export interface MountFlags {
  /** Per-mount flags for the bind in the target (without `ro`/`rw`: see `readOnly`). */
  readonly bind: readonly BindFlag[];
  /** `ro` was asked for. */
  readonly readOnly: boolean;
  /** SSHFS tunables that override the defaults for this volume. */
  readonly sshfs: Partial<SshfsTuning>;
}

const isBindFlag = (flag: string): flag is BindFlag => (BIND_FLAGS as readonly string[]).includes(flag);

/**
 * Validates mount flags. Kubernetes passes one flag per list entry, but a user may write
 * `noatime,nodev` in one entry: both forms are accepted. An unknown flag is
 * INVALID_ARGUMENT naming it and what is accepted.
 */
export function parseMountFlags(flags: readonly string[], field = "volume_capability.mount.mount_flags"): MountFlags {
  const bind = new Set<BindFlag>();
  let readOnly = false;
  const sshfs: Record<string, string | number | boolean> = {};
  for (const entry of flags) {
    for (const flag of entry.split(",").map((f) => f.trim())) {
      if (flag === "") continue;
      if (isBindFlag(flag)) {
        if (flag === "ro") readOnly = true;
        else if (flag !== "rw") bind.add(flag);
        continue;
      }
      const eq = flag.indexOf("=");
      const key = eq < 0 ? flag : flag.slice(0, eq);
      const tunable = Object.hasOwn(SSHFS_TUNABLES, key) ? SSHFS_TUNABLES[key as keyof SshfsTuning] : undefined;
      if (!tunable || eq < 0) {
        const shown = JSON.stringify(flag.length > 80 ? flag.slice(0, 80) + "…" : flag);
        throw invalidArgument(
          `${field}: ${shown} is not accepted; zcsi accepts ${BIND_FLAGS.join(", ")} and the SSHFS settings ${Object.keys(SSHFS_TUNABLES)
            .map((k) => `${k}=…`)
            .join(", ")} (see docs/node.md)`,
        );
      }
      sshfs[key] = tunable.parse(flag.slice(eq + 1), `${field}: ${key}`);
    }
  }
  return { bind: [...bind].sort(), readOnly, sshfs: sshfs as Partial<SshfsTuning> };
}
