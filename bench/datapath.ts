import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, mkdir, open, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LocalExecutor } from "../src/exec/local.js";
import { quoteArgv } from "../src/exec/quote.js";
import { knownHostsText, SSHFS_DEFAULTS, sshfsArgv, sshfsSource, type SshfsTuning } from "../src/mount/sshfs.js";
import { RWX, SFTP_SERVER, startNodeEnv, type NodeEnv } from "../test/harness/node-env.js";
import { ratio, report, timeMs, type Row } from "./lib.js";

/**
 * Issue 8, benchmark 4: the data path. Sequential write (1 MiB blocks, fsync at the end) and
 * read, and a small-file workload, through:
 * - the bind mount a pod on the pool host gets (NodeStageVolume on the pool host's node);
 * - SSHFS as zcsi mounts it: NodeStageVolume on a real `zcsi node` process in a network
 *   namespace (its traffic crosses a veth pair, as another node's would);
 * - SSHFS with sshfs's own defaults (only what authentication needs), and zcsi's options with
 *   one setting changed, to see which defaults pay;
 * - the raw ssh pipe: `ssh host dd of=FILE` fed from this process (and `dd if=FILE` read back),
 *   over the same sshd from the same namespace: what the SSH transport itself can carry.
 */
const MIB = 1 << 20;
const SEQ_MIB = Number(process.env.BENCH_DATA_MIB ?? 512);
/** Variants of zcsi's options are measured with less data: they only need to show a difference. */
const VARIANT_MIB = Math.min(SEQ_MIB, Number(process.env.BENCH_VARIANT_MIB ?? 256));
// Small-file workload: 2000 files (the issue suggests 5000; 2000 keeps the whole run in budget).
const SMALL_FILES = Number(process.env.BENCH_SMALL_FILES ?? 2000);
const SMALL_BYTES = 4096;
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

/** 2000 × create+write 4 KiB, then read each back, then remove them (not timed). */
async function smallFiles(dir: string): Promise<{ write: number; read: number }> {
  await mkdir(dir, { recursive: true });
  const data = randomBytes(SMALL_BYTES);
  const write = await timeMs(async () => {
    for (let i = 0; i < SMALL_FILES; i++) await writeFile(join(dir, `f${i}`), data);
  });
  const read = await timeMs(async () => {
    for (let i = 0; i < SMALL_FILES; i++) {
      const got = await readFile(join(dir, `f${i}`));
      if (got.length !== SMALL_BYTES) throw new Error(`short read of ${dir}/f${i}`);
    }
  });
  await rm(dir, { recursive: true, force: true });
  return { write, read };
}

const mibps = (mib: number, ms: number): number => mib / (ms / 1000);

interface PathResult {
  readonly what: string;
  readonly write: number;
  readonly read: number;
  readonly small?: { write: number; read: number };
  readonly note: string;
}

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

export async function benchDataPath(): Promise<void> {
  const env: NodeEnv = await startNodeEnv({ poolSizeMiB: 4096 });
  const results: PathResult[] = [];
  const notes: string[] = [];
  try {
    const volume = await env.createVolume("bench-data", 3 * SEQ_MIB * MIB);
    const host = env.nodeConfig.poolHosts[0]!;
    const sshd = env.sshd;

    // 1. Native: the pool host's own node bind-mounts the dataset.
    const aliceStaging = await env.local.stagingPath("bench-data");
    await env.local.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    const measure = async (what: string, dir: string, mib: number, note: string, withSmall = true, record = true): Promise<PathResult> => {
      const file = join(dir, `seq-${randomBytes(3).toString("hex")}`);
      const write = mibps(mib, await writeSeq(file, mib));
      const r = await readSeq(file);
      if (r.bytes !== mib * MIB) throw new Error(`${what}: read ${r.bytes} bytes of ${mib * MIB}`);
      await rm(file, { force: true });
      const small = withSmall ? await smallFiles(join(dir, `small-${randomBytes(3).toString("hex")}`)) : undefined;
      const result: PathResult = { what, write, read: mibps(mib, r.ms), ...(small && { small }), note };
      if (record) results.push(result);
      return result;
    };
    const native = await measure("bind mount on the pool host (native zfs-fuse)", aliceStaging, SEQ_MIB, "NodeStageVolume on the pool host's node");

    // 2. zcsi's SSHFS: a remote node stages the volume.
    const bob = await env.startRemoteNode("bob");
    const bobStaging = await bob.stagingPath("bench-data");
    await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    const zcsi = await measure(
      "SSHFS, zcsi defaults (NodeStageVolume on a remote node)",
      bobStaging,
      SEQ_MIB,
      `Ciphers=${SSHFS_DEFAULTS.Ciphers}, max_conns=${SSHFS_DEFAULTS.max_conns}, sshfs_sync=${SSHFS_DEFAULTS.sshfs_sync}, dcache_timeout=${SSHFS_DEFAULTS.dcache_timeout}`,
    );

    // 3. sshfs mounts made here with sshfs's defaults, or zcsi's argv with one option changed.
    const knownHosts = join(env.dir, "bench_known_hosts");
    await writeFile(knownHosts, knownHostsText(host));
    const mountWith = async (name: string, argv: string[]): Promise<string> => {
      await must(env.netns.enter(argv));
      return argv[2]!;
    };
    const unmount = (mountPoint: string): Promise<string> => must(["umount", "--", mountPoint]);
    const zcsiArgv = async (name: string, tuning: Partial<SshfsTuning>): Promise<string[]> => {
      const mountPoint = join(env.dir, "bench-mnt", name);
      await mkdir(mountPoint, { recursive: true });
      return sshfsArgv({
        host,
        remotePath: volume.mountpoint,
        mountPoint,
        identityFile: env.nodeKeyPath,
        knownHostsFile: knownHosts,
        tuning: { ...SSHFS_DEFAULTS, ...tuning },
        sudoPath: "/usr/bin/sudo",
        sftpServerPath: SFTP_SERVER,
      });
    };
    {
      const mountPoint = join(env.dir, "bench-mnt", "sshfs-defaults");
      await mkdir(mountPoint, { recursive: true });
      // Only what authentication and root's sftp-server need; everything else is sshfs's default.
      const argv = [
        "sshfs",
        sshfsSource(host, volume.mountpoint),
        mountPoint,
        "-p",
        String(host.port),
        ...["IdentityFile=" + env.nodeKeyPath, `UserKnownHostsFile=${knownHosts}`, "StrictHostKeyChecking=yes", "BatchMode=yes", `sftp_server=/usr/bin/sudo -n ${SFTP_SERVER}`].flatMap((o) => ["-o", o]),
      ];
      await mountWith("sshfs-defaults", argv);
      try {
        await measure("SSHFS, sshfs defaults", mountPoint, SEQ_MIB, "default cipher (chacha20-poly1305), max_conns=1, asynchronous writes, sshfs's caches");
      } finally {
        await unmount(mountPoint);
      }
    }
    // zcsi's argv with one option changed, in rounds with zcsi's own argv (mounted the same way)
    // so that load from other users of the machine falls on all of them alike.
    const variants: { name: string; tuning: Partial<SshfsTuning>; small: boolean }[] = [
      { name: "zcsi options (same argv, mounted here)", tuning: {}, small: true },
      { name: "zcsi options but async writes (sshfs_sync=no)", tuning: { sshfs_sync: "no" }, small: true },
      { name: "zcsi options but max_conns=4", tuning: { max_conns: 4 }, small: true },
      { name: "zcsi options but Ciphers=chacha20-poly1305@openssh.com", tuning: { Ciphers: "chacha20-poly1305@openssh.com" }, small: false },
      { name: "zcsi options but Ciphers=aes256-gcm@openssh.com", tuning: { Ciphers: "aes256-gcm@openssh.com" }, small: false },
    ];
    const ROUNDS = 2;
    const samples = new Map<string, PathResult[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of variants) {
        const argv = await zcsiArgv(v.name.replace(/[^a-z0-9]+/gi, "-"), v.tuning);
        const mountPoint = await mountWith(v.name, argv);
        try {
          const r = await measure(`SSHFS, ${v.name}`, mountPoint, VARIANT_MIB, "", v.small && round === 0, false);
          samples.set(v.name, [...(samples.get(v.name) ?? []), r]);
        } finally {
          await unmount(mountPoint);
        }
      }
    }
    const baseline = samples.get(variants[0]!.name)!;
    const med = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
    const variantRows: Row[] = [];
    for (const v of variants) {
      const s = samples.get(v.name)!;
      const w = med(s.map((r) => r.write));
      const rd = med(s.map((r) => r.read));
      const bw = med(baseline.map((r) => r.write));
      const br = med(baseline.map((r) => r.read));
      const small = s[0]?.small;
      variantRows.push(
        { what: `SSHFS, ${v.name}: sequential write`, median: w, unit: "MiB/s", ratio: ratio(w, bw), note: `${VARIANT_MIB} MiB × ${ROUNDS} rounds; ratio to zcsi's argv` },
        { what: `SSHFS, ${v.name}: sequential read`, median: rd, unit: "MiB/s", ratio: ratio(rd, br) },
        ...(small && baseline[0]?.small
          ? [{ what: `SSHFS, ${v.name}: ${SMALL_FILES} × 4 KiB create+write, then read`, median: (SMALL_FILES / (small.write + small.read)) * 1000, unit: "files/s", ratio: ratio(baseline[0].small.write + baseline[0].small.read, small.write + small.read), note: `write ${small.write.toFixed(0)} ms, read ${small.read.toFixed(0)} ms` }]
          : []),
      );
    }

    // 4. The raw ssh pipe, into a directory of the same dataset the ssh user may write.
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
        "-o",
        `UserKnownHostsFile=${knownHosts}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        `Ciphers=${cipher}`,
        "-p",
        String(host.port),
        `${host.user}@${host.address}`,
        // ssh hands the remote side one command line: quoted by the project's one quoting function.
        quoteArgv(remote),
      ]);
    const pipes: Record<string, PathResult> = {};
    const handshake = await timeMs(() => must(ssh(SSHFS_DEFAULTS.Ciphers, ["true"])));
    for (const cipher of [SSHFS_DEFAULTS.Ciphers, "chacha20-poly1305@openssh.com"]) {
      const file = join(pipeDir, `pipe-${randomBytes(3).toString("hex")}`);
      const w = await pipeThrough(ssh(cipher, ["dd", `of=${file}`, "bs=1M", "conv=fsync", "status=none"]), SEQ_MIB);
      const r = await pipeThrough(ssh(cipher, ["dd", `if=${file}`, "bs=1M", "status=none"]), 0);
      if (r.bytes !== SEQ_MIB * MIB) throw new Error(`raw pipe read ${r.bytes} bytes of ${SEQ_MIB * MIB}`);
      await rm(file, { force: true });
      const result: PathResult = { what: `raw ssh pipe, ${cipher}`, write: mibps(SEQ_MIB, w.ms - handshake), read: mibps(SEQ_MIB, r.ms - handshake), note: `\`ssh host dd of=FILE conv=fsync\` / \`dd if=FILE\`; the handshake (${handshake.toFixed(0)} ms, a timed \`ssh host true\`) is subtracted, as SSHFS mounted before its clock started` };
      pipes[cipher] = result;
      results.push(result);
    }

    const pipe = pipes[SSHFS_DEFAULTS.Ciphers]!;
    const rows: Row[] = results.flatMap((r) => [
      { what: `${r.what}: sequential write`, median: r.write, unit: "MiB/s", ratio: ratio(r.write, pipe.write), note: r.note },
      { what: `${r.what}: sequential read`, median: r.read, unit: "MiB/s", ratio: ratio(r.read, pipe.read) },
      ...(r.small
        ? [{ what: `${r.what}: ${SMALL_FILES} × 4 KiB create+write, then read`, median: (SMALL_FILES / (r.small.write + r.small.read)) * 1000, unit: "files/s", ratio: native.small ? ratio(native.small.write + native.small.read, r.small.write + r.small.read) : "", note: `write ${r.small.write.toFixed(0)} ms, read ${r.small.read.toFixed(0)} ms; ratio to native` }]
        : []),
    ]);
    rows.push(...variantRows);
    const seqMet = (x: number, y: number): string => (x >= 0.8 * y ? "met" : "MISSED");
    notes.push(
      `sequential ratios are to the raw ssh pipe with zcsi's cipher (${SSHFS_DEFAULTS.Ciphers}); small-file ratios are to native. ${SEQ_MIB} MiB per sequential run${SEQ_MIB < 512 ? " (less than the issue's 512 MiB, to fit the time budget)" : ""}, one run per path: read the ratios, not the digits (2 shared cores).`,
      `zcsi SSHFS / raw ssh pipe, sequential write: ${ratio(zcsi.write, pipe.write)} (target ≥ 0.8×): ${seqMet(zcsi.write, pipe.write)}`,
      `zcsi SSHFS / raw ssh pipe, sequential read: ${ratio(zcsi.read, pipe.read)} (target ≥ 0.8×): ${seqMet(zcsi.read, pipe.read)}`,
      `reads may come from the pool host's ARC on every path alike (the file was just written); page caches on this side are not dropped (a shared machine).`,
    );
    report(`Data path: ${SEQ_MIB} MiB sequential (1 MiB blocks, fsync) and ${SMALL_FILES} small files`, rows, notes);
    await bob.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging });
    await env.local.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging });
  } finally {
    await env.stop();
  }
}
