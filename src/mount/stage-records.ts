import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import { parseMountFlags } from "./flags.js";
import type { SshfsOwner, SshfsTuning } from "./sshfs.js";

/**
 * What NodeStageVolume set up, kept in stateDir so a restarted plugin can mount a dead
 * SSHFS staging again with the same settings (they are not derivable from the mount table).
 */
export interface StageRecord {
  readonly volumeId: string;
  readonly stagingPath: string;
  readonly mountpoint: string;
  /** The pool host and dataset staged from (publish_context's home); absent in records of older versions: the birth host. */
  readonly poolHost?: string;
  readonly dataset?: string;
  readonly tuning?: Partial<SshfsTuning>;
  readonly owner?: SshfsOwner;
}

/** Where a volume was staged from, per its stage record. */
export interface StagedSource {
  readonly poolHost: string;
  readonly dataset: string;
  readonly mountpoint: string;
}

/** The source a record names; undefined for a record of an older version (staged from the birth host). */
export function sourceOf(record: StageRecord): StagedSource | undefined {
  return record.poolHost !== undefined && record.dataset !== undefined ? { poolHost: record.poolHost, dataset: record.dataset, mountpoint: record.mountpoint } : undefined;
}

const errno = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** Writes through a temporary file and a rename, so a reader never sees half a file. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp${process.pid}`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

/**
 * Stage records and the sshfs log of each staging path, one file each under the state
 * directory, named by a hash of the staging path. What is read back passes the same checks as
 * a request: a record is data from disk, not trusted input.
 */
export class StageRecords {
  private readonly recordDir: string;
  private readonly logDir: string;

  constructor(
    stateDir: string,
    private readonly logger: Logger,
  ) {
    this.recordDir = join(stateDir, "staged");
    this.logDir = join(stateDir, "sshfs");
  }

  async init(): Promise<void> {
    await Promise.all([this.recordDir, this.logDir].map((d) => mkdir(d, { recursive: true, mode: 0o700 })));
  }

  /** Where sshfs writes its (and its ssh's) output for the mount at `stagingPath`. */
  logPath(stagingPath: string): string {
    return join(this.logDir, `${key(stagingPath)}.log`);
  }

  async save(record: StageRecord): Promise<void> {
    await writeAtomically(this.recordPath(record.stagingPath), JSON.stringify(record) + "\n");
  }

  read(stagingPath: string): Promise<StageRecord | undefined> {
    return this.parse(this.recordPath(stagingPath));
  }

  async list(): Promise<StageRecord[]> {
    const names = (await readdir(this.recordDir).catch(() => [] as string[])).filter((n) => n.endsWith(".json"));
    const records = await Promise.all(names.map((n) => this.parse(join(this.recordDir, n))));
    return records.filter((r): r is StageRecord => r !== undefined);
  }

  /** Where a volume was staged from: the record at `stagingPath`, else any of the volume's. */
  async stagedFrom(volumeId: string, stagingPath?: string): Promise<StagedSource | undefined> {
    const records = stagingPath !== undefined ? [await this.read(stagingPath)] : await this.list();
    for (const record of records) {
      const source = record?.volumeId === volumeId ? sourceOf(record) : undefined;
      if (source) return source;
    }
    return undefined;
  }

  /** Drops the record and the sshfs log of a staging path. */
  async remove(stagingPath: string): Promise<void> {
    await rm(this.recordPath(stagingPath), { force: true });
    await rm(this.logPath(stagingPath), { force: true });
  }

  private recordPath(stagingPath: string): string {
    return join(this.recordDir, `${key(stagingPath)}.json`);
  }

  private async parse(path: string): Promise<StageRecord | undefined> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if (errno(err) === "ENOENT") return undefined;
      throw err;
    }
    try {
      const value = JSON.parse(text) as Partial<StageRecord>;
      if (typeof value.volumeId !== "string" || typeof value.stagingPath !== "string" || typeof value.mountpoint !== "string") throw new Error("fields missing");
      // Settings from disk pass the same allow-list as settings from a request.
      const tuning = value.tuning ? parseMountFlags(Object.entries(value.tuning).map(([k, v]) => `${k}=${String(v)}`)).sshfs : undefined;
      const owner = value.owner;
      if (owner !== undefined && !(Number.isInteger(owner.uid) && Number.isInteger(owner.gid) && owner.uid >= 0 && owner.gid >= 0)) throw new Error("bad owner");
      const source = typeof value.poolHost === "string" && typeof value.dataset === "string" ? { poolHost: value.poolHost, dataset: value.dataset } : {};
      return { volumeId: value.volumeId, stagingPath: value.stagingPath, mountpoint: value.mountpoint, ...source, ...(tuning && { tuning }), ...(owner && { owner }) };
    } catch (err) {
      this.logger.warn({ op: "records", path, err: errorMessage(err) }, "unreadable stage record ignored");
      return undefined;
    }
  }
}

function key(stagingPath: string): string {
  return createHash("sha256").update(stagingPath).digest("hex").slice(0, 32);
}
