import { describe, expect, it } from "vitest";
import { isReadOnly, isSshfsMount, isZfsMount, mountAt, parseMountInfo, parseMountInfoLine, sameView, unescapeMountField } from "../../src/mount/mountinfo.js";

// Lines recorded on the test machine (zfs-fuse pools, an SSHFS staging mount and a read-only
// bind of it in a directory with a space), plus an OpenZFS and a kubelet-style line with
// propagation fields in the format proc(5) documents.
const RECORDED = [
  "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534",
  "42 27 0:39 / /tmp/p1mnt rw,relatime - fuse.zfs ztest1 rw,user_id=0,group_id=0,default_permissions,allow_other",
  "43 42 0:40 / /tmp/p1mnt/k8s rw,relatime - fuse.zfs ztest1/k8s rw,user_id=0,group_id=0,default_permissions,allow_other",
  "45 27 0:42 / /tmp/zexp/stage rw,nosuid,nodev,relatime - fuse.sshfs zexp@127.0.0.1:/tmp/zexp/data/vol rw,user_id=0,group_id=0,default_permissions,allow_other",
  "47 27 0:42 / /tmp/zexp/pod\\040a/t ro,nosuid,nodev,relatime - fuse.sshfs zexp@127.0.0.1:/tmp/zexp/data/vol rw,user_id=0,group_id=0,default_permissions,allow_other",
  "112 29 0:56 / /tank/k8s/pvc-1 rw,noatime shared:62 - zfs tank/k8s/pvc-1 rw,xattr,posixacl",
  "530 29 0:56 / /var/lib/kubelet/pods/0f1e/volumes/kubernetes.io~csi/pvc-1/mount rw,noatime shared:62 master:7 - zfs tank/k8s/pvc-1 rw,xattr,posixacl",
  "61 27 0:44 / /old/zfs-fuse rw,relatime - fuse tank/k8s/pvc-2 rw,user_id=0,group_id=0,allow_other",
].join("\n");

describe("parseMountInfo", () => {
  const mounts = parseMountInfo(RECORDED + "\n");

  it("reads every documented field of a line", () => {
    expect(parseMountInfoLine(RECORDED.split("\n")[3] ?? "")).toEqual({
      id: 45,
      parentId: 27,
      device: "0:42",
      root: "/",
      mountPoint: "/tmp/zexp/stage",
      options: ["rw", "nosuid", "nodev", "relatime"],
      optionalFields: [],
      fsType: "fuse.sshfs",
      source: "zexp@127.0.0.1:/tmp/zexp/data/vol",
      superOptions: ["rw", "user_id=0", "group_id=0", "default_permissions", "allow_other"],
    });
  });

  it("decodes octal escapes in mount points (\\040 is a space)", () => {
    expect(mounts[4]?.mountPoint).toBe("/tmp/zexp/pod a/t");
    expect(unescapeMountField("a\\011b\\012c\\134d\\040e")).toBe("a\tb\nc\\d e");
  });

  it("keeps propagation fields apart from the fields after the separator", () => {
    const kubelet = mounts[6];
    expect(kubelet?.optionalFields).toEqual(["shared:62", "master:7"]);
    expect(kubelet?.fsType).toBe("zfs");
    expect(kubelet?.source).toBe("tank/k8s/pvc-1");
  });

  it("skips lines that do not have the documented shape", () => {
    expect(parseMountInfo("garbage\n1 2 3\n\n" + RECORDED)).toHaveLength(8);
    expect(parseMountInfoLine("x 27 0:42 / /a rw - ext4 /dev/x rw")).toBeUndefined();
  });

  it("recognises OpenZFS, zfs-fuse (fuse.zfs and plain fuse) and SSHFS mounts", () => {
    expect(mounts.filter(isZfsMount).map((m) => m.source)).toEqual(["ztest1", "ztest1/k8s", "tank/k8s/pvc-1", "tank/k8s/pvc-1", "tank/k8s/pvc-2"]);
    expect(mounts.filter(isSshfsMount).map((m) => m.mountPoint)).toEqual(["/tmp/zexp/stage", "/tmp/zexp/pod a/t"]);
  });

  it("tells a bind of a mount by device and root, and reads the per-mount ro flag", () => {
    const [staging, bind] = [mounts[3], mounts[4]];
    if (!staging || !bind) throw new Error("fixture");
    expect(sameView(staging, bind)).toBe(true);
    expect(sameView(staging, mounts[1] ?? staging)).toBe(false);
    expect(isReadOnly(bind)).toBe(true);
    expect(isReadOnly(staging)).toBe(false);
  });
});

describe("mountAt", () => {
  it("returns the topmost mount stacked at a path", () => {
    const stacked = parseMountInfo(
      ["27 1 254:0 / / rw - ext4 /dev/vda rw", "50 27 0:50 / /t rw - fuse.sshfs a@h:/x rw", "51 50 0:51 / /t rw - fuse.sshfs a@h:/y rw"].join("\n"),
    );
    expect(mountAt(stacked, "/t")?.source).toBe("a@h:/y");
    expect(mountAt(stacked, "/t/")).toBeUndefined();
    expect(mountAt(stacked, "/nothing")).toBeUndefined();
  });
});
