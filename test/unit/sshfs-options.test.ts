import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { parseMountFlags } from "../../src/mount/flags.js";
import { SSHFS_DEFAULTS, knownHostsText, sftpServerCommand, sshfsArgv, sshfsSource, type SshfsMount } from "../../src/mount/sshfs.js";

const host = {
  name: "alice",
  address: "10.213.0.1",
  port: 2222,
  user: "zcsi",
  parentDataset: "tank/k8s",
  mountRoot: "/tank/k8s",
  hostKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc host-comment", "ecdsa-sha2-nistp256 AAAAE2VjZHNh"],
  sudo: false,
};

const mount: SshfsMount = {
  host,
  remotePath: "/tank/k8s/pvc-1",
  mountPoint: "/var/lib/kubelet/plugins/kubernetes.io/csi/zfs.zcsi.dev/abc/globalmount",
  identityFile: "/etc/zcsi/key",
  knownHostsFile: "/var/lib/zcsi/node/known_hosts/alice",
  tuning: SSHFS_DEFAULTS,
  sudoPath: "/usr/bin/sudo",
  sftpServerPath: "/usr/lib/openssh/sftp-server",
};

/** The -o values of an argv, in order. */
const options = (argv: string[]): string[] => argv.flatMap((a, i) => (argv[i - 1] === "-o" ? [a] : []));

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isZcsiError(err, "InvalidArgument")) return err.message;
    throw err;
  }
  throw new Error("expected InvalidArgument");
}

describe("sshfsArgv", () => {
  it("pins the host key, the key file and the safety options, and names source and mount point", () => {
    const argv = sshfsArgv(mount);
    expect(argv.slice(0, 7)).toEqual(["sshfs", "zcsi@10.213.0.1:/tank/k8s/pvc-1", mount.mountPoint, "-F", "/dev/null", "-p", "2222"]);
    expect(options(argv)).toEqual(
      expect.arrayContaining([
        "IdentityFile=/etc/zcsi/key",
        "UserKnownHostsFile=/var/lib/zcsi/node/known_hosts/alice",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "reconnect",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=3",
        "Ciphers=aes128-gcm@openssh.com",
        "allow_other",
        "default_permissions",
        "idmap=none",
        "max_read=65536",
        "max_write=65536",
        "dir_cache=no",
        "sftp_server=/usr/bin/sudo -n /usr/lib/openssh/sftp-server",
      ]),
    );
    // Asynchronous writes by default: close() and fsync() report a refused write (docs/node.md, "Full volumes").
    expect(options(argv)).not.toContain("sshfs_sync");
  });

  it("runs sftp-server as the volume's owner when it is not root, in the one shape the wrapper accepts", () => {
    expect(options(sshfsArgv({ ...mount, owner: { uid: 1000, gid: 2000 } }))).toContain("sftp_server=/usr/bin/sudo -n -u#1000 -g#2000 /usr/lib/openssh/sftp-server");
    expect(sftpServerCommand("/usr/bin/sudo", "/usr/lib/openssh/sftp-server", { uid: 0, gid: 0 })).toBe("/usr/bin/sudo -n /usr/lib/openssh/sftp-server");
  });

  it("applies tunables: synchronous writes, request sizes and sshfs's cache when asked", () => {
    const flags = ["Ciphers=chacha20-poly1305@openssh.com", "sshfs_sync=yes", "max_conns=4", "max_read=32768", "max_write=16384", "dir_cache=yes"];
    const argv = sshfsArgv({ ...mount, tuning: { ...SSHFS_DEFAULTS, ...parseMountFlags(flags).sshfs } });
    expect(options(argv)).toEqual(expect.arrayContaining(["Ciphers=chacha20-poly1305@openssh.com", "sshfs_sync", "max_conns=4", "max_read=32768", "max_write=16384", "dir_cache=yes"]));
    expect(options(argv)).not.toContain("dir_cache=no");
  });

  it("refuses a path with a comma, which sshfs would split into another option", () => {
    expect(invalid(() => sshfsArgv({ ...mount, identityFile: "/etc/key,allow_root" }))).toMatch(/comma/);
  });

  it("brackets IPv6 addresses in the source", () => {
    expect(sshfsSource({ user: "zcsi", address: "fd00::1" }, "/tank/k8s/a")).toBe("zcsi@[fd00::1]:/tank/k8s/a");
  });
});

describe("knownHostsText", () => {
  it("writes one line per pinned key in the [address]:port form, without comments", () => {
    expect(knownHostsText(host)).toBe("[10.213.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc\n[10.213.0.1]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNh\n");
    expect(knownHostsText({ ...host, port: 22, hostKeys: ["ssh-ed25519 AAAA"] })).toBe("10.213.0.1 ssh-ed25519 AAAA\n");
  });
});

describe("parseMountFlags", () => {
  it("splits bind flags, ro and SSHFS tunables, accepting comma-joined entries", () => {
    expect(parseMountFlags(["noatime,nodev", "ro", "rw", "ServerAliveInterval=5", "Compression=yes"])).toEqual({
      bind: ["noatime", "nodev"],
      readOnly: true,
      sshfs: { ServerAliveInterval: 5, Compression: "yes" },
    });
    expect(parseMountFlags([])).toEqual({ bind: [], readOnly: false, sshfs: {} });
  });

  it.each([
    ["an unknown flag", "suid"],
    ["a free-text ssh option", "ProxyCommand=sh -c evil"],
    ["an sshfs option outside the allow-list", "allow_root"],
    ["a tunable without a value", "Ciphers"],
    ["a cipher outside the list", "Ciphers=none"],
    ["a number out of range", "ServerAliveInterval=0"],
    ["a number with junk", "max_conns=2;id"],
    ["requests larger than sshfs sends", "max_write=131072"],
    ["a dir_cache other than yes or no", "dir_cache=1"],
    ["a prototype key", "__proto__=1"],
  ])("refuses %s with INVALID_ARGUMENT", (_, flag) => {
    expect(invalid(() => parseMountFlags([flag]))).toContain("mount_flags");
  });
});
