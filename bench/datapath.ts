import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, mkdir, open, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LocalExecutor } from "../src/exec/local.js";
import { quoteArgv } from "../src/exec/quote.js";
import { mountAt, readMountInfo } from "../src/mount/mountinfo.js";
import { knownHostsText, SSHFS_DEFAULTS, sshfsArgv, sshfsSource, type SshfsTuning } from "../src/mount/sshfs.js";
import { RWX, SFTP_SERVER, startNodeEnv, type NodeEnv } from "../test/harness/node-env.js";
import { appendResults, machineInfo, timeMs } from "./lib.js";

/**
 * The data path (issue 8 benchmark 4, issue 17 item 2): sequential write (1 MiB blocks, fsync
 * at the end) and read, and a small-file workload (create+write 4 KiB, then read each back),
 * through:
 * - the bind mount a pod on the pool host gets (NodeStageVolume on the pool host's node);
 * - SSHFS as zcsi mounts it: NodeStageVolume on a real `zcsi node` process in a network
 *   namespace (its traffic crosses a veth pair, as another node's would);
 * - a matrix of SSHFS option sets, each mounted by this script from the same namespace with
 *   the argv src/mount/sshfs.ts builds (plus, for candidates zcsi does not allow, the option
 *   under test), to see what each setting is worth;
 * - the raw ssh pipe: `ssh host dd of=FILE` fed from this process (and `dd if=FILE` read
 *   back), over the same sshd from the same namespace, per cipher: what the transport carries.
 *
 * Every path runs once per round, rounds interleave all paths, and every ratio is the median
 * of per-round ratios (paired samples: the machine is shared and its load swings by the
 * minute) with their spread.
 */
const MIB = 1 << 20;
const SEQ_MIB = Number(process.env.BENCH_DATA_MIB ?? 128);
const ROUNDS = Number(process.env.BENCH_DATA_ROUNDS ?? 5);
const SMALL_FILES = Number(process.env.BENCH_SMALL_FILES ?? 1000);
const SMALL_BYTES = 4096;
/** Issue 17's targets: SSHFS against the raw ssh pipe with the same cipher, small files against the bind mount. */
const TARGET = { write: 0.8, read: 0.9, small: 0.5 } as const;
const local = new LocalExecutor();

async function must(argv: string[]): Promise<string> {
  const r = await local.run(argv, { timeoutMs: 120_000 });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

const block = randomBytes(MIB); // incompressible, so Compression and ZFS compression cannot flatter a path

async function writeSeq(path: string, mib: number): Promise<number> {
  return timeMs(async () => {
    const fh = await open(path, "w");
    try {
      for (let i = 0; i < mib; i++) await fh.write(block, 0, MIB);
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

async function readSeq(path: string): Promise<{ ms: number; bytes: number }> {
  let bytes = 0;
  const buf = Buffer.alloc(MIB);
  const ms = await timeMs(async () => {
    const fh = await open(path, "r");
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, MIB, null);
        if (bytesRead === 0) break;
        bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
  });
  return { ms, bytes };
}

/** SMALL_FILES × create+write 4 KiB, then read each back (timed together), then remove them (not timed). */
async function smallFiles(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const data = randomBytes(SMALL_BYTES);
  const ms = await timeMs(async () => {
    for (let i = 0; i < SMALL_FILES; i++) await writeFile(join(dir, `f${i}`), data);
    for (let i = 0; i < SMALL_FILES; i++) {
      const got = await readFile(join(dir, `f${i}`));
      if (got.length !== SMALL_BYTES) throw new Error(`short read of ${dir}/f${i}`);
    }
  });
  await rm(dir, { recursive: true, force: true });
  return ms;
}

const mibps = (mib: number, ms: number): number => mib / (ms / 1000);

/** MiB/s for the sequential parts, files/s for the small files. */
interface Sample {
  readonly write: number;
  readonly read: number;
  readonly small?: number;
}

interface DataPath {
  readonly what: string;
  /** The ssh cipher, so a path is compared with the raw pipe of the same cipher. */
  readonly cipher?: string;
  /** Why this option set is, or is not, allowed (the correctness rules of docs/node.md). */
  readonly verdict: string;
  readonly small: boolean;
  run(): Promise<Sample>;
}

const middle = (xs: readonly number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
};

/** Runs a command in the namespace, feeding it `mib` MiB on stdin (or reading its stdout when mib is 0). */
function pipeThrough(argv: string[], mib: number): Promise<{ ms: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const [command, ...args] = argv as [string, ...string[]];
    const child = spawn(command, args, { stdio: [mib > 0 ? "pipe" : "ignore", "pipe", "pipe"] });
    let bytes = 0;
    let stderr = "";
    child.stdout?.on("data", (c: Buffer) => (bytes += c.length));
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) reject(new Error(`${argv.join(" ")} exited ${code}: ${stderr.trim()}`));
      else resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, bytes });
    });
    if (mib > 0 && child.stdin) {
      const stdin = child.stdin;
      let sent = 0;
      const pump = (): void => {
        while (sent < mib) {
          sent++;
          if (!stdin.write(block)) {
            stdin.once("drain", pump);
            return;
          }
        }
        stdin.end();
      };
      pump();
    }
  });
}

/** One SSHFS option set of the matrix: zcsi's argv with `tuning` over the defaults, plus `extra` -o options zcsi does not allow. */
interface OptionSet {
  readonly name: string;
  readonly tuning: Partial<SshfsTuning>;
  readonly extra?: readonly string[];
  /** Kernel readahead of the FUSE mount (/sys/class/bdi/<dev>/read_ahead_kb), set after mounting. */
  readonly readAheadKiB?: number;
  readonly verdict: string;
}

/** What zcsi mounted with before issue 17: synchronous writes, sshfs's 32 KiB requests and its attribute cache. */
const BEFORE: Partial<SshfsTuning> = { Ciphers: "aes128-gcm@openssh.com", Compression: "no", max_conns: 1, max_read: 32768, max_write: 32768, dcache_timeout: 1, dir_cache: "yes", sshfs_sync: "yes" };
const ASYNC_RULES = "allowed: a full volume fails a later write() and always close()/fsync() (EIO)";
const SYNC_RULES = "allowed: a full volume fails the write() itself (EIO)";

/** zcsi's defaults with one thing changed each, what zcsi used before, and candidates zcsi does not allow. */
const OPTION_SETS: readonly OptionSet[] = [
  { name: "before: sshfs_sync, 32 KiB requests, dir_cache", tuning: BEFORE, verdict: SYNC_RULES },
  { name: "defaults but sshfs_sync=yes", tuning: { sshfs_sync: "yes" }, verdict: SYNC_RULES },
  { name: "defaults but 32 KiB requests (max_read/max_write=32768)", tuning: { max_read: 32768, max_write: 32768 }, verdict: ASYNC_RULES },
  { name: "defaults but dir_cache=yes", tuning: { dir_cache: "yes" }, verdict: `${ASYNC_RULES}; another node's change may show up to dcache_timeout later` },
  { name: "defaults but max_conns=2", tuning: { max_conns: 2 }, verdict: `${ASYNC_RULES}; two SSH connections per volume and node` },
  { name: "defaults but Ciphers=chacha20-poly1305", tuning: { Ciphers: "chacha20-poly1305@openssh.com" }, verdict: ASYNC_RULES },
  { name: "defaults and kernel readahead 1 MiB", tuning: {}, readAheadKiB: 1024, verdict: "not an sshfs option: the node would have to write /sys after each mount" },
  { name: "defaults and no kernel attribute cache (attr_timeout=0, entry_timeout=0)", tuning: {}, extra: ["attr_timeout=0", "entry_timeout=0"], verdict: "not offered: strict close-to-open, every open and stat asks the pool host" },
  { name: "defaults and kernel_cache", tuning: {}, extra: ["kernel_cache"], verdict: "not allowed: the page cache is kept across opens, so a file another node rewrote can read stale" },
];

export async function benchDataPath(): Promise<void> {
  const env: NodeEnv = await startNodeEnv({ poolSizeMiB: 4096 });
  const mounted: string[] = [];
  try {
    const volume = await env.createVolume("bench-data", 8 * SEQ_MIB * MIB);
    const host = env.nodeConfig.poolHosts[0]!;
    const sshd = env.sshd;
    const inDir = (what: string, dir: string, cipher: string | undefined, verdict: string): DataPath => ({
      what,
      verdict,
      small: true,
      ...(cipher && { cipher }),
      async run() {
        const file = join(dir, `seq-${randomBytes(3).toString("hex")}`);
        const write = mibps(SEQ_MIB, await writeSeq(file, SEQ_MIB));
        const r = await readSeq(file);
        if (r.bytes !== SEQ_MIB * MIB) throw new Error(`${what}: read ${r.bytes} bytes of ${SEQ_MIB * MIB}`);
        await rm(file, { force: true });
        const smallMs = await smallFiles(join(dir, `small-${randomBytes(3).toString("hex")}`));
        return { write, read: mibps(SEQ_MIB, r.ms), small: (SMALL_FILES / smallMs) * 1000 };
      },
    });

    // Native: the pool host's own node bind-mounts the dataset.
    const aliceStaging = await env.local.stagingPath("bench-data");
    await env.local.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    // zcsi's SSHFS: a remote node stages the volume with zcsi's defaults.
    const bob = await env.startRemoteNode("bob");
    const bobStaging = await bob.stagingPath("bench-data");
    await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });

    const knownHosts = join(env.dir, "bench_known_hosts");
    await writeFile(knownHosts, knownHostsText(host));
    const mountHere = async (name: string, argv: string[], readAheadKiB?: number): Promise<string> => {
      const mountPoint = join(env.dir, "bench-mnt", name.replace(/[^a-z0-9]+/gi, "-"));
      await mkdir(mountPoint, { recursive: true });
      argv[2] = mountPoint;
      await must(env.netns.enter(argv));
      mounted.push(mountPoint);
      if (readAheadKiB !== undefined) {
        const device = mountAt(await readMountInfo(), mountPoint)?.device;
        await writeFile(`/sys/class/bdi/${device}/read_ahead_kb`, String(readAheadKiB));
      }
      return mountPoint;
    };
    const zcsiArgv = (set: OptionSet): string[] => {
      const argv = sshfsArgv({ host, remotePath: volume.mountpoint, mountPoint: "", identityFile: env.nodeKeyPath, knownHostsFile: knownHosts, tuning: { ...SSHFS_DEFAULTS, ...set.tuning }, sudoPath: "/usr/bin/sudo", sftpServerPath: SFTP_SERVER });
      return [...argv, ...(set.extra ?? []).flatMap((o) => ["-o", o])];
    };
    // Only what authentication and root's sftp-server need; everything else is sshfs's default.
    const sshfsDefaultsArgv = [
      "sshfs",
      sshfsSource(host, volume.mountpoint),
      "",
      "-p",
      String(host.port),
      ...[`IdentityFile=${env.nodeKeyPath}`, `UserKnownHostsFile=${knownHosts}`, "StrictHostKeyChecking=yes", "BatchMode=yes", `sftp_server=/usr/bin/sudo -n ${SFTP_SERVER}`].flatMap((o) => ["-o", o]),
    ];

    // The raw ssh pipe, into a directory of the same dataset the ssh user may write.
    const pipeDir = join(volume.mountpoint, "raw-pipe");
    await mkdir(pipeDir);
    const uid = Number((await must(["id", "-u", sshd.user])).trim());
    await chown(pipeDir, uid, -1);
    const ssh = (cipher: string, remote: string[]): string[] =>
      env.netns.enter([
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        sshd.privateKeyPath,
        ...["-o", `UserKnownHostsFile=${knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", `Ciphers=${cipher}`],
        "-p",
        String(host.port),
        `${host.user}@${host.address}`,
        // ssh hands the remote side one command line: quoted by the project's one quoting function.
        quoteArgv(remote),
      ]);
    const pipePath = (cipher: string): DataPath => ({
      what: `raw ssh pipe, ${cipher}`,
      verdict: "`ssh host dd of=FILE conv=fsync`, then `ssh host dd if=FILE`, minus a timed `ssh host true` of the same round (SSHFS had connected before its clock started)",
      small: false,
      async run() {
        const handshake = await timeMs(() => must(ssh(cipher, ["true"])));
        const file = join(pipeDir, `pipe-${randomBytes(3).toString("hex")}`);
        const w = await pipeThrough(ssh(cipher, ["dd", `of=${file}`, "bs=1M", "conv=fsync", "status=none"]), SEQ_MIB);
        const r = await pipeThrough(ssh(cipher, ["dd", `if=${file}`, "bs=1M", "status=none"]), 0);
        if (r.bytes !== SEQ_MIB * MIB) throw new Error(`raw pipe read ${r.bytes} bytes of ${SEQ_MIB * MIB}`);
        await rm(file, { force: true });
        return { write: mibps(SEQ_MIB, w.ms - handshake), read: mibps(SEQ_MIB, r.ms - handshake) };
      },
    });

    const native = inDir("bind mount on the pool host (native zfs-fuse)", aliceStaging, undefined, "NodeStageVolume on the pool host's node");
    const defaultsNote = Object.entries(SSHFS_DEFAULTS)
      .filter(([k]) => !k.startsWith("Server") && k !== "ConnectTimeout")
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
    const zcsi = inDir("zcsi defaults: NodeStageVolume on a remote node", bobStaging, SSHFS_DEFAULTS.Ciphers, defaultsNote);
    const ciphers = [...new Set([SSHFS_DEFAULTS.Ciphers, ...OPTION_SETS.map((s) => s.tuning.Ciphers ?? SSHFS_DEFAULTS.Ciphers), "chacha20-poly1305@openssh.com"])];
    const pipes = new Map(ciphers.map((c) => [c, pipePath(c)]));
    const paths: DataPath[] = [native, zcsi, ...pipes.values()];
    for (const set of OPTION_SETS) {
      paths.push(inDir(set.name, await mountHere(set.name, zcsiArgv(set), set.readAheadKiB), set.tuning.Ciphers ?? SSHFS_DEFAULTS.Ciphers, set.verdict));
    }
    paths.push(inDir("sshfs's own defaults", await mountHere("sshfs-defaults", sshfsDefaultsArgv), "chacha20-poly1305@openssh.com", "default cipher, async writes, 32 KiB requests, 20 s dcache: not zcsi's"));

    const samples = new Map<DataPath, Sample[]>(paths.map((p) => [p, []]));
    const t0 = Date.now();
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts one path later, so no path always runs first (or right after another).
      for (let i = 0; i < paths.length; i++) {
        const p = paths[(i + round) % paths.length]!;
        samples.get(p)!.push(await p.run());
      }
      console.log(`datapath: round ${round + 1}/${ROUNDS} done after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }

    /** Per-round ratios of p to q (paired), their median and spread. */
    const paired = (p: DataPath, q: DataPath, key: keyof Sample, invert = false): { median: number; text: string } => {
      const a = samples.get(p)!;
      const b = samples.get(q)!;
      const each = a.map((s, i) => (s[key] ?? NaN) / (b[i]?.[key] ?? NaN)).map((r) => (invert ? 1 / r : r));
      const median = middle(each);
      return { median, text: `${median.toFixed(2)}× (${Math.min(...each).toFixed(2)}–${Math.max(...each).toFixed(2)})` };
    };
    const med = (p: DataPath, key: keyof Sample): string => middle(samples.get(p)!.map((s) => s[key] ?? NaN)).toFixed(0);
    const lines = [
      `## Data path: SSHFS option matrix (sequential ${SEQ_MIB} MiB in 1 MiB blocks with fsync; ${SMALL_FILES} × 4 KiB create+write, then read)`,
      "",
      `Machine: ${machineInfo()}. ${ROUNDS} rounds; every path runs once per round, in turn.`,
      "",
      "| path / option set | write MiB/s | write × pipe | read MiB/s | read × pipe | small files/s | small × bind | rules |",
      "|---|---:|---:|---:|---:|---:|---:|---|",
      ...paths.map((p) => {
        const pipe = p.cipher ? pipes.get(p.cipher) : undefined;
        const vsPipe = (key: "write" | "read"): string => (pipe ? paired(p, pipe, key).text : "");
        const small = p.small ? `${med(p, "small")} | ${paired(p, native, "small").text}` : " | ";
        return `| ${p.what} | ${med(p, "write")} | ${vsPipe("write")} | ${med(p, "read")} | ${vsPipe("read")} | ${small} | ${p.verdict} |`;
      }),
      "",
      `- ratios: the median of ${ROUNDS} per-round ratios (min–max in brackets), each against the raw ssh pipe with the path's own cipher, or the bind mount, measured in the same round.`,
    ];
    const zcsiPipe = pipes.get(SSHFS_DEFAULTS.Ciphers)!;
    // One verdict a line, so bench/targets.ts lists each target on its own.
    const verdict = (what: string, r: number, target: number, whyMissed: string): string =>
      `- zcsi defaults, ${what} ${r.toFixed(2)}× (target ≥ ${target}×): ${r >= target ? "met" : `MISSED: ${whyMissed}`}`;
    const noOption = "no option set in the matrix above that keeps a full volume's error and cross-node freshness reaches it";
    lines.push(
      verdict("sequential write", paired(zcsi, zcsiPipe, "write").median, TARGET.write, noOption),
      verdict("sequential read", paired(zcsi, zcsiPipe, "read").median, TARGET.read, noOption),
      verdict("small files vs the bind mount", paired(zcsi, native, "small").median, TARGET.small, `each file is several SFTP round trips (open, write, close, stat: FUSE → sshfs → ssh → sftp-server) where the bind mount has none; ${noOption}`),
      `- reads may come from the pool host's ARC on every path alike (the file was just written); page caches on this side are not dropped (a shared machine).`,
      "",
    );
    const text = lines.join("\n");
    console.log(text);
    appendResults(text);
    await bob.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging });
    await env.local.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging });
  } finally {
    for (const m of mounted) await local.run(["umount", "--", m], { timeoutMs: 30_000 }).catch(() => undefined);
    await env.stop();
  }
}
