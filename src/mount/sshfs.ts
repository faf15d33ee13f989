import type { PoolHostConfig } from "../config.js";
import { invalidArgument } from "../errors.js";

/**
 * SSHFS settings a StorageClass (or PV) may change through `mountOptions`, each with its
 * validator. The names are the ones sshfs(1) and ssh_config(5) use, so a reader can look
 * them up; values are checked against a closed set or a numeric range, so no text from a
 * manifest ever reaches the sshfs command line unvalidated.
 */
export interface SshfsTuning {
  /** ssh cipher. aes128-gcm measured ~40% faster than the default here (ARCHITECTURE.md). */
  readonly Ciphers: string;
  readonly Compression: "yes" | "no";
  /** Seconds between keep-alives; with CountMax, how soon a silent dead link is noticed. */
  readonly ServerAliveInterval: number;
  readonly ServerAliveCountMax: number;
  readonly ConnectTimeout: number;
  /** Parallel SSH connections per mount (sshfs ≥ 3.7). */
  readonly max_conns: number;
  /**
   * Bytes per SFTP read / write request. sshfs splits each FUSE request into requests of
   * this size, all in flight at once; it caps both at 65536 (sshfs.c), the SFTP spec
   * promises 32768.
   */
  readonly max_read: number;
  readonly max_write: number;
  /**
   * Seconds sshfs caches directory entries and attributes. Short by default because a
   * volume may be shared by pods on several nodes (ReadWriteMany): another node's change
   * shows within about this long.
   */
  readonly dcache_timeout: number;
  /**
   * sshfs's own cache of attributes and directory entries (`dir_cache`). Off by default:
   * it measured no faster beyond the noise, and without it the only cache between nodes is
   * the kernel's one-second attribute cache.
   */
  readonly dir_cache: "yes" | "no";
  /**
   * Synchronous writes (`sshfs_sync`): each write() waits for the pool host's answer, so a
   * full volume fails the write() itself. Off by default: writes stream (sshfs answers
   * write() once the data is queued), a refusal fails the next write() once it is back, and
   * close() and fsync() always report it (sshfs's flush waits for every outstanding write
   * and returns its error); docs/node.md, "Full volumes".
   */
  readonly sshfs_sync: "yes" | "no";
}

export const SSHFS_DEFAULTS: SshfsTuning = {
  Ciphers: "aes128-gcm@openssh.com",
  Compression: "no",
  ServerAliveInterval: 15,
  ServerAliveCountMax: 3,
  ConnectTimeout: 10,
  max_conns: 1,
  max_read: 65536,
  max_write: 65536,
  dcache_timeout: 1,
  dir_cache: "no",
  sshfs_sync: "no",
};

interface Tunable<T> {
  parse(value: string, where: string): T;
}

function oneOf<T extends string>(allowed: readonly T[]): Tunable<T> {
  return {
    parse(value, where) {
      if (!(allowed as readonly string[]).includes(value)) throw invalidArgument(`${where}=${JSON.stringify(value)} must be one of ${allowed.join(", ")}`);
      return value as T;
    },
  };
}

function integer(min: number, max: number): Tunable<number> {
  return {
    parse(value, where) {
      if (!/^[0-9]{1,6}$/.test(value) || Number(value) < min || Number(value) > max) throw invalidArgument(`${where}=${JSON.stringify(value)} must be an integer from ${min} to ${max}`);
      return Number(value);
    },
  };
}

export const SSHFS_TUNABLES: { readonly [K in keyof SshfsTuning]: Tunable<SshfsTuning[K]> } = {
  Ciphers: oneOf(["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"]),
  Compression: oneOf(["yes", "no"] as const),
  ServerAliveInterval: integer(1, 600),
  ServerAliveCountMax: integer(1, 30),
  ConnectTimeout: integer(1, 600),
  max_conns: integer(1, 16),
  max_read: integer(4096, 65536),
  max_write: integer(4096, 65536),
  dcache_timeout: integer(0, 86400),
  dir_cache: oneOf(["yes", "no"] as const),
  sshfs_sync: oneOf(["yes", "no"] as const),
};

/** Who sftp-server runs as on the pool host: root (absent) or the volume's owner. */
export interface SshfsOwner {
  readonly uid: number;
  readonly gid: number;
}

export interface SshfsMount {
  readonly host: PoolHostConfig;
  /** The dataset's mountpoint on the pool host. */
  readonly remotePath: string;
  readonly mountPoint: string;
  /** The node's SSH private key (`-o IdentityFile`). */
  readonly identityFile: string;
  /** Generated from the pinned host keys (`knownHostsText`). */
  readonly knownHostsFile: string;
  readonly tuning: SshfsTuning;
  readonly owner?: SshfsOwner;
  /** Absolute paths on the pool host. */
  readonly sudoPath: string;
  readonly sftpServerPath: string;
}

const ABSOLUTE_PATH = /^\/[A-Za-z0-9._/+-]*$/;

export function checkRemoteCommandPath(path: string, what: string): string {
  if (!ABSOLUTE_PATH.test(path) || path.split("/").includes("..")) throw invalidArgument(`${what} ${JSON.stringify(path)} must be an absolute path of [A-Za-z0-9._/+-]`);
  return path;
}

/** `user@host:/path`, the form sshfs takes and the source mountinfo shows for the mount. */
export function sshfsSource(host: Pick<PoolHostConfig, "user" | "address">, remotePath: string): string {
  const address = host.address.includes(":") ? `[${host.address}]` : host.address;
  return `${host.user}@${address}:${remotePath}`;
}

/**
 * known_hosts lines for the pinned keys, so ssh checks the pool host's key against the
 * config and nothing else (`GlobalKnownHostsFile=/dev/null`). Comments are dropped: only
 * `type base64` is part of the key.
 */
export function knownHostsText(host: Pick<PoolHostConfig, "address" | "port" | "hostKeys">): string {
  const name = host.port === 22 ? host.address : `[${host.address}]:${host.port}`;
  return host.hostKeys.map((key) => `${name} ${key.split(/\s+/).slice(0, 2).join(" ")}\n`).join("");
}

/**
 * The remote command sshfs runs instead of the `sftp` subsystem: sftp-server through
 * `sudo -n`, as root or as the volume's owner, so files written over SSHFS belong to the
 * same uid/gid as files written by a pod on the pool host itself. `-u#N` is one word on
 * purpose: the remote shell would read a separate `#N` as a comment. The forced-command
 * wrapper (deploy/pool-host/zcsi-sftp) accepts exactly these two shapes.
 */
export function sftpServerCommand(sudoPath: string, sftpServerPath: string, owner?: SshfsOwner): string {
  const runAs = owner && (owner.uid !== 0 || owner.gid !== 0) ? ` -u#${owner.uid} -g#${owner.gid}` : "";
  return `${sudoPath} -n${runAs} ${sftpServerPath}`;
}

/**
 * The sshfs argv. Fixed options, not overridable:
 * - `-F /dev/null`, `GlobalKnownHostsFile=/dev/null`, `StrictHostKeyChecking=yes`,
 *   `IdentitiesOnly`, `BatchMode`: only the pinned host key and the configured private key
 *   count; no config file, agent or prompt on the node changes that.
 * - `reconnect`: a broken connection (pool host sshd restarted) is re-established on the
 *   next request instead of leaving the mount dead.
 * - `allow_other`: pods run as other users than the root that mounts.
 * - `default_permissions` + `idmap=none`: the kernel checks mode bits against the real
 *   numeric owners, as on the pool host's bind mount, so a pod sees the same permissions on
 *   every node.
 */
export function sshfsArgv(mount: SshfsMount): string[] {
  const { host, tuning } = mount;
  const options = [
    `IdentityFile=${mount.identityFile}`,
    `UserKnownHostsFile=${mount.knownHostsFile}`,
    "GlobalKnownHostsFile=/dev/null",
    "StrictHostKeyChecking=yes",
    "UpdateHostKeys=no",
    "BatchMode=yes",
    "IdentitiesOnly=yes",
    "PasswordAuthentication=no",
    `Ciphers=${tuning.Ciphers}`,
    `Compression=${tuning.Compression}`,
    `ServerAliveInterval=${tuning.ServerAliveInterval}`,
    `ServerAliveCountMax=${tuning.ServerAliveCountMax}`,
    `ConnectTimeout=${tuning.ConnectTimeout}`,
    "reconnect",
    "allow_other",
    "default_permissions",
    "idmap=none",
    `max_conns=${tuning.max_conns}`,
    `max_read=${tuning.max_read}`,
    `max_write=${tuning.max_write}`,
    `dcache_timeout=${tuning.dcache_timeout}`,
    `dir_cache=${tuning.dir_cache}`,
    ...(tuning.sshfs_sync === "yes" ? ["sshfs_sync"] : []),
    `sftp_server=${sftpServerCommand(mount.sudoPath, mount.sftpServerPath, mount.owner)}`,
  ];
  for (const option of options) {
    // sshfs splits -o values at commas; every value above comes from validated parts.
    if (option.includes(",")) throw invalidArgument(`sshfs option ${JSON.stringify(option)} must not contain a comma`);
  }
  return ["sshfs", sshfsSource(host, mount.remotePath), mount.mountPoint, "-F", "/dev/null", "-p", String(host.port), ...options.flatMap((o) => ["-o", o])];
}
