import { readFile } from "node:fs/promises";

/**
 * One line of /proc/<pid>/mountinfo (proc(5)):
 *
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2) (3)  (4)   (5)      (6)        (7)  (8) (9)    (10)         (11)
 *
 * Unlike /proc/mounts it carries the root of each mount inside its filesystem and the device,
 * which is what tells a bind mount of staging apart from any other mount of the same source.
 */
export interface MountInfo {
  readonly id: number;
  readonly parentId: number;
  /** `major:minor` of the filesystem; every bind of one filesystem shares it. */
  readonly device: string;
  /** The directory inside the filesystem that is mounted here (`/` for a whole filesystem). */
  readonly root: string;
  readonly mountPoint: string;
  /** Per-mount options (`ro`, `nosuid`, `noexec`, ...): what a bind remount changes. */
  readonly options: readonly string[];
  /** Propagation fields such as `shared:12` or `master:3`. */
  readonly optionalFields: readonly string[];
  /** `zfs`, `fuse.zfs` (zfs-fuse), `fuse.sshfs`, `ext4`, ... */
  readonly fsType: string;
  /** `tank/k8s/pvc-1` for ZFS, `user@host:/path` for SSHFS. */
  readonly source: string;
  readonly superOptions: readonly string[];
}

/**
 * The kernel escapes space, tab, newline and backslash in paths as three-digit octal
 * (`\040`, `\011`, `\012`, `\134`; fs/proc_namespace.c, `mangle`).
 */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** Parses one mountinfo line; undefined for a line that does not have the documented shape. */
export function parseMountInfoLine(line: string): MountInfo | undefined {
  const fields = line.split(" ");
  const dash = fields.indexOf("-", 6);
  if (fields.length < 10 || dash < 0 || fields.length < dash + 4) return undefined;
  const [id, parentId, device, root, mountPoint, options] = fields;
  if (!/^\d+$/.test(id ?? "") || !/^\d+$/.test(parentId ?? "") || !/^\d+:\d+$/.test(device ?? "")) return undefined;
  return {
    id: Number(id),
    parentId: Number(parentId),
    device: device ?? "",
    root: unescapeMountField(root ?? ""),
    mountPoint: unescapeMountField(mountPoint ?? ""),
    options: (options ?? "").split(","),
    optionalFields: fields.slice(6, dash),
    fsType: unescapeMountField(fields[dash + 1] ?? ""),
    source: unescapeMountField(fields[dash + 2] ?? ""),
    superOptions: (fields[dash + 3] ?? "").split(","),
  };
}

export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const mount = parseMountInfoLine(line);
    if (mount) mounts.push(mount);
  }
  return mounts;
}

export async function readMountInfo(path = "/proc/self/mountinfo"): Promise<MountInfo[]> {
  return parseMountInfo(await readFile(path, "utf8"));
}

/**
 * The mount a process sees at `path`: the last one listed there, since a mount stacked on
 * the same point later hides the ones below it.
 */
export function mountAt(mounts: readonly MountInfo[], path: string): MountInfo | undefined {
  for (let i = mounts.length - 1; i >= 0; i--) {
    const mount = mounts[i];
    if (mount?.mountPoint === path) return mount;
  }
  return undefined;
}

export function isReadOnly(mount: MountInfo): boolean {
  return mount.options.includes("ro");
}

/** True when two mounts show the same directory of the same filesystem (a bind of the other). */
export function sameView(a: MountInfo, b: MountInfo): boolean {
  return a.device === b.device && a.root === b.root;
}

/** OpenZFS (`zfs`) and zfs-fuse (`fuse.zfs`, or plain `fuse` on older libfuse). */
export function isZfsMount(mount: MountInfo): boolean {
  return mount.fsType === "zfs" || mount.fsType === "fuse.zfs" || mount.fsType === "fuse";
}

export function isSshfsMount(mount: MountInfo): boolean {
  return mount.fsType === "fuse.sshfs";
}
