import { mkdir, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { PoolHostConfig } from "../config.js";
import { alreadyExists, errorMessage, failedPrecondition, internal, isZcsiError, notFound } from "../errors.js";
import { hasExecReason } from "../exec/errors.js";
import type { Logger } from "../log.js";
import { BIND_FLAGS, type BindFlag } from "./flags.js";
import type { FsStats, Mounter } from "./mounter.js";
import { isReadOnly, isSshfsMount, isZfsMount, mountAt, readMountInfo, sameView, type MountInfo } from "./mountinfo.js";
import { SSHFS_DEFAULTS, knownHostsText, sshfsArgv, sshfsSource, type SshfsOwner, type SshfsTuning } from "./sshfs.js";
import { sourceOf, StageRecords, writeAtomically, type StagedSource, type StageRecord } from "./stage-records.js";

export type { StagedSource } from "./stage-records.js";

/** A volume as the node sees it: where its data lives and whether that is this machine. */
export interface NodeVolume {
  readonly id: string;
  readonly host: PoolHostConfig;
  readonly dataset: string;
  /** The dataset's mountpoint on the pool host. */
  readonly mountpoint: string;
  /** This node is the pool host: bind mount; otherwise SSHFS. */
  readonly local: boolean;
}

export interface VolumeMountsOptions {
  readonly nodeId: string;
  /** Survives plugin restarts (a hostPath in a cluster): stage records, known_hosts, sshfs logs. */
  readonly stateDir: string;
  /** The node's SSH key; may be an SFTP-only key (docs/node.md). */
  readonly privateKeyFile: string;
  readonly sudoPath: string;
  readonly sftpServerPath: string;
  /** How long statfs may take before a mount counts as dead. */
  readonly probeTimeoutMs: number;
}

export interface RepairReport {
  readonly checked: number;
  readonly repaired: string[];
  readonly failed: { volumeId: string; stagingPath: string; error: string }[];
}

type ErrnoError = NodeJS.ErrnoException;
const errno = (err: unknown): string | undefined => (err as ErrnoError | undefined)?.code;


function describe(mount: MountInfo): string {
  return `a ${mount.fsType} mount of ${mount.source}${mount.root === "/" ? "" : ` (${mount.root})`}`;
}

/** The bind flags (and `ro`) a mount carries, to carry them over to a new bind. */
function bindFlagsOf(mount: MountInfo): string[] {
  return [isReadOnly(mount) ? "ro" : "rw", ...mount.options.filter((o): o is BindFlag => (BIND_FLAGS as readonly string[]).includes(o) && o !== "ro" && o !== "rw")];
}

/**
 * Stages and publishes volumes on this node. Every step reads /proc/self/mountinfo first,
 * so a retried call finds its own work done and returns; a mount that is in the way but is
 * not this volume's is never touched.
 */
export class VolumeMounts {
  private readonly records: StageRecords;
  private readonly knownHostsDir: string;

  constructor(
    readonly hosts: readonly PoolHostConfig[],
    private readonly mounter: Mounter,
    private readonly options: VolumeMountsOptions,
    private readonly logger: Logger,
  ) {
    this.records = new StageRecords(options.stateDir, logger);
    this.knownHostsDir = join(options.stateDir, "known_hosts");
  }

  /** Creates the state dirs and writes one known_hosts file per remote pool host from its pinned keys. */
  async init(): Promise<void> {
    await this.records.init();
    await mkdir(this.knownHostsDir, { recursive: true, mode: 0o700 });
    for (const host of this.hosts) {
      if (host.name !== this.options.nodeId) await writeAtomically(this.knownHostsFile(host), knownHostsText(host));
    }
  }

  private knownHostsFile(host: PoolHostConfig): string {
    return join(this.knownHostsDir, host.name);
  }

  /** True when `mount` is this volume's: a dataset mount (pool host) or its SSHFS mount. */
  matches(mount: MountInfo, volume: NodeVolume): boolean {
    if (volume.local) return isZfsMount(mount) && mount.source === volume.dataset;
    return isSshfsMount(mount) && mount.source === sshfsSource(volume.host, volume.mountpoint);
  }

  // ---- stage ------------------------------------------------------------------------------

  async stage(volume: NodeVolume, stagingPath: string, tuning: Partial<SshfsTuning>): Promise<"staged" | "already staged" | "repaired"> {
    const mounts = await readMountInfo();
    const current = mountAt(mounts, stagingPath);
    // stat(2) only where nothing is mounted: on a hung FUSE mount it would block.
    if (!current) await this.requireDirectory(stagingPath, "staging_target_path");
    const record: StageRecord = { volumeId: volume.id, stagingPath, mountpoint: volume.mountpoint, poolHost: volume.host.name, dataset: volume.dataset, ...(volume.local ? {} : { tuning }) };
    if (current) {
      if (!this.matches(current, volume)) throw alreadyExists(`staging_target_path ${stagingPath} already holds ${describe(current)}, not volume ${volume.id}`);
      if ((await this.mounter.statfs(stagingPath, this.options.probeTimeoutMs)).ok) {
        // A lost record is written again, so a later repair knows the volume.
        if ((await this.records.read(stagingPath))?.volumeId !== volume.id) await this.records.save(record);
        return "already staged";
      }
      await this.repairStaging(volume, (await this.records.read(stagingPath)) ?? record, current, mounts);
      return "repaired";
    }
    // The record comes first: a plugin that dies right after the mount still finds it.
    await this.records.save(record);
    try {
      const owner = await this.mountStaging(volume, record, mounts);
      if (owner) await this.records.save({ ...record, owner });
    } catch (err) {
      await this.records.remove(stagingPath);
      throw err;
    }
    return "staged";
  }

  /**
   * Mounts the volume at the staging path. Pool host: bind of the dataset's mountpoint,
   * after checking the dataset really is mounted there (an unmounted dataset leaves an
   * empty directory of the parent dataset, and data written there would land in the
   * parent). Elsewhere: SSHFS, first as root to read the owner of the volume's root
   * directory, then — when that is not root — again with sftp-server running as that
   * owner, so files created over SSHFS belong to the volume's uid/gid like files a pod
   * creates on the pool host. Returns the owner for the stage record.
   */
  private async mountStaging(volume: NodeVolume, record: StageRecord, mounts: readonly MountInfo[]): Promise<SshfsOwner | undefined> {
    const stagingPath = record.stagingPath;
    if (volume.local) {
      const dataset = mountAt(mounts, volume.mountpoint);
      if (!dataset) {
        throw notFound(`volume ${volume.id}: dataset ${volume.dataset} is not mounted at ${volume.mountpoint} on pool host ${volume.host.name} (deleted, or not mounted)`);
      }
      if (!this.matches(dataset, volume)) throw failedPrecondition(`volume ${volume.id}: ${volume.mountpoint} holds ${describe(dataset)}, not dataset ${volume.dataset}; refusing to expose it`);
      await this.mounter.bind(volume.mountpoint, stagingPath);
      return undefined;
    }
    const mountSshfs = async (owner: SshfsOwner | undefined): Promise<void> => {
      const argv = sshfsArgv({
        host: volume.host,
        remotePath: volume.mountpoint,
        mountPoint: stagingPath,
        identityFile: this.options.privateKeyFile,
        knownHostsFile: this.knownHostsFile(volume.host),
        tuning: { ...SSHFS_DEFAULTS, ...record.tuning },
        ...(owner && { owner }),
        sudoPath: this.options.sudoPath,
        sftpServerPath: this.options.sftpServerPath,
      });
      await this.mounter.sshfs(argv, this.records.logPath(stagingPath), `volume ${volume.id}: sshfs from ${volume.host.name}`);
    };
    if (record.owner) {
      await mountSshfs(record.owner);
      return record.owner;
    }
    await mountSshfs(undefined);
    const owner = await this.mounter.owner(stagingPath);
    if (owner.uid === 0 && owner.gid === 0) return owner;
    await this.mounter.unmount(stagingPath);
    try {
      await mountSshfs(owner);
    } catch (err) {
      // The same key and host mounted as root a moment ago, so a session that ends at once
      // means sftp-server would not start as the owner. sshfs does not pass on its reason
      // (sftp-server: "No user found for uid N"; sudo: not allowed to run as that user).
      if (hasExecReason(err, "hostDisconnected")) {
        throw failedPrecondition(
          `volume ${volume.id}: sftp-server could not start as the volume's owner ${owner.uid}:${owner.gid} on pool host ${volume.host.name}: ` +
            `the uid needs an account there, and sudo must allow sftp-server as other users (docs/node.md, "Volume owners")`,
          { cause: err },
        );
      }
      throw err;
    }
    return owner;
  }

  /**
   * A staging mount that no longer answers (sshfs killed: ENOTCONN; dataset remounted on
   * the pool host) is replaced, and every pod target bound to the dead one is bound to the
   * new one with the flags it had. Targets are found by device: a bind shares it.
   */
  private async repairStaging(volume: NodeVolume, record: StageRecord, dead: MountInfo, mounts: readonly MountInfo[]): Promise<void> {
    // On the pool host the dataset's own mount shares the device: it is the source, not a target.
    const targets = mounts.filter((m) => m.device === dead.device && m.root === dead.root && m.mountPoint !== record.stagingPath && m.mountPoint !== volume.mountpoint);
    this.logger.warn({ op: "repair", volumeId: volume.id, stagingPath: record.stagingPath, targets: targets.map((t) => t.mountPoint) }, "staging mount is dead; mounting it again");
    await this.mounter.unmount(record.stagingPath);
    const owner = await this.mountStaging(volume, record, await readMountInfo());
    if (owner && !record.owner) await this.records.save({ ...record, owner });
    for (const target of targets) {
      await this.mounter.unmount(target.mountPoint);
      await this.mounter.bind(record.stagingPath, target.mountPoint);
      await this.mounter.remountBind(target.mountPoint, bindFlagsOf(target));
    }
  }

  // ---- unstage ----------------------------------------------------------------------------

  async unstage(volume: NodeVolume, stagingPath: string): Promise<void> {
    await this.unmountOwn(volume, stagingPath, "staging_target_path");
    // The staging directory belongs to the CO (CSI spec, NodeStageVolume); only our record goes.
    await this.records.remove(stagingPath);
  }

  /** Unmounts every mount of this volume stacked at `path`; refuses at anything else. */
  private async unmountOwn(volume: NodeVolume, path: string, field: string): Promise<void> {
    for (let guard = 0; guard < 16; guard++) {
      const top = mountAt(await readMountInfo(), path);
      if (!top) return;
      if (!this.matches(top, volume)) throw failedPrecondition(`${field} ${path} holds ${describe(top)}, which is not volume ${volume.id}; leaving it alone`);
      await this.mounter.unmount(path);
    }
    throw failedPrecondition(`${field} ${path} still has mounts of volume ${volume.id} after 16 unmounts`);
  }

  // ---- publish ----------------------------------------------------------------------------

  async publish(volume: NodeVolume, stagingPath: string, targetPath: string, access: { readOnly: boolean; bindFlags: readonly BindFlag[] }): Promise<"published" | "already published"> {
    let mounts = await readMountInfo();
    let staging = mountAt(mounts, stagingPath);
    if (!staging || !this.matches(staging, volume)) {
      throw failedPrecondition(`volume ${volume.id} is not staged at ${stagingPath}${staging ? ` (it holds ${describe(staging)})` : ""}; NodeStageVolume comes first`);
    }
    if (!(await this.mounter.statfs(stagingPath, this.options.probeTimeoutMs)).ok) {
      const record = await this.records.read(stagingPath);
      if (!record || record.volumeId !== volume.id) throw failedPrecondition(`the staging mount of volume ${volume.id} at ${stagingPath} is dead and has no stage record to repair it from; stage it again`);
      await this.repairStaging(volume, record, staging, mounts);
      mounts = await readMountInfo();
      staging = mountAt(mounts, stagingPath);
      if (!staging) throw failedPrecondition(`volume ${volume.id} vanished from ${stagingPath} during repair`);
    }
    const target = mountAt(mounts, targetPath);
    if (target) {
      if (sameView(target, staging)) {
        if (isReadOnly(target) !== access.readOnly) {
          throw alreadyExists(`target_path ${targetPath} already publishes volume ${volume.id} ${isReadOnly(target) ? "read-only" : "read-write"}; this request asks for ${access.readOnly ? "read-only" : "read-write"}`);
        }
        return "already published";
      }
      if (!this.matches(target, volume)) throw alreadyExists(`target_path ${targetPath} already holds ${describe(target)}, not volume ${volume.id}`);
      // This volume, but bound to a staging mount that was replaced: bind it again.
      await this.mounter.unmount(targetPath);
    }
    try {
      await mkdir(targetPath, { mode: 0o750 });
    } catch (err) {
      if (errno(err) === "ENOENT") throw failedPrecondition(`the parent directory of target_path ${targetPath} does not exist (the CO creates it)`);
      if (errno(err) !== "EEXIST") throw err;
    }
    await this.mounter.bind(stagingPath, targetPath);
    // A bind copies the source's flags; set ro and the requested flags, keeping nosuid/nodev
    // that FUSE mounts always carry (a bind remount replaces the whole set).
    const inherited: string[] = staging.options.filter((o) => o === "nosuid" || o === "nodev" || o === "noexec");
    const flags = [...new Set([access.readOnly ? "ro" : "rw", ...inherited, ...access.bindFlags])];
    try {
      if (access.readOnly || access.bindFlags.some((f) => !inherited.includes(f))) await this.mounter.remountBind(targetPath, flags);
      // Read-only is enforced or the publish fails: trust the mount table, not mount's exit code.
      const published = mountAt(await readMountInfo(), targetPath);
      if (access.readOnly && (!published || !isReadOnly(published))) throw internal(`the bind of volume ${volume.id} at ${targetPath} is not read-only after the remount`);
    } catch (err) {
      await this.withdrawBind(volume, targetPath, err);
      throw err;
    }
    return "published";
  }

  /**
   * Takes back a bind that failed to get its flags, so no read-write bind stays where
   * read-only was asked for. When that fails too, the error says both: the caller must know
   * the target may still hold a read-write bind.
   */
  private async withdrawBind(volume: NodeVolume, targetPath: string, cause: unknown): Promise<void> {
    let cleanup: unknown;
    try {
      await this.unmountOwn(volume, targetPath, "target_path");
    } catch (err) {
      cleanup = err;
    }
    const left = mountAt(await readMountInfo(), targetPath);
    if (cleanup === undefined && (!left || !this.matches(left, volume))) return;
    throw internal(
      `publishing volume ${volume.id} at ${targetPath} failed (${errorMessage(cause)}), and removing its bind failed too` +
        `${cleanup === undefined ? "" : ` (${errorMessage(cleanup)})`}: ${left && this.matches(left, volume) ? `${targetPath} still holds a ${isReadOnly(left) ? "read-only" : "read-write"} bind of it; unmount it by hand` : "check the target by hand"}`,
      { cause },
    );
  }

  async unpublish(volume: NodeVolume, targetPath: string): Promise<void> {
    await this.unmountOwn(volume, targetPath, "target_path");
    try {
      // CSI spec, NodeUnpublishVolume: the SP deletes what it created at target_path.
      // rmdir, never a recursive delete: a non-empty directory is not ours to remove.
      await rmdir(targetPath);
    } catch (err) {
      if (errno(err) === "ENOENT") return;
      if (errno(err) === "ENOTEMPTY" || errno(err) === "EEXIST") throw failedPrecondition(`target_path ${targetPath} is not mounted but not empty; zcsi did not create its content and leaves it alone`);
      if (errno(err) === "ENOTDIR") throw failedPrecondition(`target_path ${targetPath} is not a directory; zcsi did not create it`);
      throw err;
    }
  }

  // ---- stats ------------------------------------------------------------------------------

  /**
   * Usage of the volume at a published or staged path, or why it cannot be read. A path
   * that does not exist, or that holds another volume, is NOT_FOUND (CSI spec,
   * NodeGetVolumeStats); a path of this volume that is not mounted any more is a problem.
   */
  async usage(volume: NodeVolume, path: string): Promise<{ stats: FsStats } | { problem: string }> {
    const top = mountAt(await readMountInfo(), path);
    if (!top) {
      // Nothing mounted here, so stat(2) reads the parent filesystem and cannot hang on FUSE.
      try {
        await stat(path);
      } catch (err) {
        if (errno(err) === "ENOENT") throw notFound(`volume_path ${path} does not exist`);
        throw err;
      }
      return { problem: `volume ${volume.id} is not mounted at ${path} any more` };
    }
    if (!this.matches(top, volume)) throw notFound(`volume_path ${path} holds ${describe(top)}, not volume ${volume.id}`);
    const probe = await this.mounter.statfs(path, this.options.probeTimeoutMs);
    if (probe.ok) return { stats: probe.stats };
    const remote = volume.local ? "" : ` (SSHFS from ${volume.host.name})`;
    return { problem: `volume ${volume.id} at ${path}${remote} does not answer: ${probe.problem}` };
  }

  // ---- start-up repair --------------------------------------------------------------------

  /**
   * Checks every volume this node staged (per stage record) and mounts dead ones again,
   * re-binding their pod targets. Records whose staging directory is gone are dropped
   * (the volume was unstaged while the plugin was down, or the node rebooted and kubelet
   * cleaned up); a staging path with nothing mounted is left to kubelet, which stages
   * again when a pod needs it.
   */
  async repairAll(resolve: (volumeId: string, mountpoint: string, source?: StagedSource) => NodeVolume): Promise<RepairReport> {
    const records = await this.records.list();
    const report: RepairReport = { checked: records.length, repaired: [], failed: [] };
    const mounts = await readMountInfo();
    await Promise.all(
      records.map(async (record) => {
        try {
          const current = mountAt(mounts, record.stagingPath);
          if (!current) {
            const exists = await stat(record.stagingPath).then(
              () => true,
              (err: unknown) => errno(err) !== "ENOENT",
            );
            if (!exists) await this.records.remove(record.stagingPath);
            return;
          }
          const volume = resolve(record.volumeId, record.mountpoint, sourceOf(record));
          if (!this.matches(current, volume)) return;
          if ((await this.mounter.statfs(record.stagingPath, this.options.probeTimeoutMs)).ok) return;
          await this.repairStaging(volume, record, current, mounts);
          report.repaired.push(record.volumeId);
        } catch (err) {
          report.failed.push({ volumeId: record.volumeId, stagingPath: record.stagingPath, error: errorMessage(err) });
        }
      }),
    );
    return report;
  }

  /**
   * Where this node staged a volume from, per its stage record (at `stagingPath`, else any of
   * the volume's): calls without publish_context (unstage, unpublish, stats) find the mount
   * of a volume served from another host than its birth host this way. Undefined for a
   * record of an older version, which staged from the birth host.
   */
  stagedFrom(volumeId: string, stagingPath?: string): Promise<StagedSource | undefined> {
    return this.records.stagedFrom(volumeId, stagingPath);
  }

  private async requireDirectory(path: string, field: string): Promise<void> {
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      if (errno(err) === "ENOENT") throw failedPrecondition(`${field} ${path} does not exist; the CO creates it (CSI spec, NodeStageVolume)`);
      throw err;
    }
    if (!info.isDirectory()) throw failedPrecondition(`${field} ${path} is not a directory`);
  }
}
