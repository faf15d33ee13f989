import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { SshExecutor } from "../src/exec/ssh.js";
import type { InstrumentedExecutor } from "../src/exec/instrumented.js";
import { startControllerEnv } from "../test/harness/controller.js";
import { median, percentile, ratio, report, timeMs } from "./lib.js";

/**
 * Issue 8, benchmarks 1 and 2: CreateVolume+DeleteVolume through gRPC → SSH → zfs, against
 * (a) the same `zfs create`/`zfs destroy` on an already-open ssh2 connection (the floor), and
 * (b) a fresh `ssh host zfs ...` per call (how a shell script does it); then 100 parallel
 * CreateVolumes against 100 sequential raw creates on one connection.
 */
const run = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 50);
const CAP = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };

export async function benchProvision(): Promise<void> {
  const env = await startControllerEnv({ poolSizeMiB: 1024 });
  const host = env.hosts[0]!;
  const raw = new SshExecutor({
    host: "raw",
    address: host.sshd.address,
    port: host.sshd.port,
    user: host.sshd.user,
    privateKey: host.sshd.privateKey,
    hostKeys: [host.sshd.hostKeyLine],
    sudo: true,
  });
  const freshSsh = (args: string[]) =>
    run("ssh", ["-i", host.sshd.privateKeyPath, "-o", `UserKnownHostsFile=${host.sshd.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", String(host.sshd.port), `${host.sshd.user}@${host.sshd.address}`, ...args]);
  const exec = env.poolHosts.get("alice").exec as InstrumentedExecutor;
  try {
    await raw.run(["true"]);
    const driver: number[] = [];
    const floor: number[] = [];
    const fresh: number[] = [];
    exec.reset();
    for (let i = 0; i < ITERATIONS; i++) {
      driver.push(
        await timeMs(async () => {
          const res = await env.client.createVolume({ name: `bench-${i}`, capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] });
          await env.client.deleteVolume({ volumeId: res.volume!.volumeId });
        }),
      );
      const ds = `${host.parent}/raw-${i}`;
      floor.push(
        await timeMs(async () => {
          const c = await raw.run(["zfs", "create", "-o", `refquota=${8 << 20}`, ds]);
          if (c.exitCode !== 0) throw new Error(c.stderr);
          // The same busy-retry the driver does (zfs-fuse answers "busy" right after create).
          for (let t = 0; ; t++) {
            const d = await raw.run(["zfs", "destroy", ds]);
            if (d.exitCode === 0) break;
            if (t > 100 || !/busy/.test(d.stderr)) throw new Error(d.stderr);
            await new Promise((r) => setTimeout(r, 50));
          }
        }),
      );
      if (i < Math.min(ITERATIONS, 20)) {
        const fds = `${host.parent}/fresh-${i}`;
        fresh.push(
          await timeMs(async () => {
            await freshSsh(["sudo", "-n", "zfs", "create", "-o", `refquota=${8 << 20}`, fds]);
            for (let t = 0; ; t++) {
              const ok = await freshSsh(["sudo", "-n", "zfs", "destroy", fds]).then(() => true, () => false);
              if (ok) break;
              if (t > 100) throw new Error("fresh destroy kept failing");
              await new Promise((r) => setTimeout(r, 50));
            }
          }),
        );
      }
    }
    const perPair = exec.count / ITERATIONS;
    const commands = [...exec.counts.entries()].map(([k, v]) => `${k}×${(v / ITERATIONS).toFixed(1)}`).join(", ");
    const m = { driver: median(driver), floor: median(floor), fresh: median(fresh) };
    report(
      "Provisioning overhead: CreateVolume + DeleteVolume",
      [
        { what: "zcsi CreateVolume+DeleteVolume (gRPC → SSH → zfs)", median: m.driver, p95: percentile(driver, 95), unit: "ms", ratio: "1.00×", note: `${perPair.toFixed(1)} commands per pair: ${commands}` },
        { what: "floor: zfs create + destroy on an open ssh2 connection", median: m.floor, p95: percentile(floor, 95), unit: "ms", ratio: ratio(m.floor, m.driver), note: "2 commands (+ busy retries)" },
        { what: "fresh `ssh host sudo zfs ...` per call", median: m.fresh, p95: percentile(fresh, 95), unit: "ms", ratio: ratio(m.fresh, m.driver), note: `${fresh.length} iterations` },
      ],
      [
        `driver / floor = ${ratio(m.driver, m.floor)} (target ≤ 1.1×): ${m.driver <= 1.1 * m.floor ? "met" : "MISSED: the driver runs one zfs get before each create (does the name exist? is there room?) and one before each destroy (is the dataset ours?); those two round trips are the gap, and they are what makes retries idempotent and deletes safe"}`,
        `driver / fresh ssh = ${ratio(m.driver, m.fresh)} (target ≤ 0.3×): ${m.driver <= 0.3 * m.fresh ? "met" : "MISSED"}`,
      ],
    );

    // Concurrency: 100 parallel creates vs 100 sequential raw creates on one connection.
    const N = 100;
    const seq = await timeMs(async () => {
      for (let i = 0; i < N; i++) {
        const c = await raw.run(["zfs", "create", "-o", `refquota=${8 << 20}`, `${host.parent}/seq-${i}`]);
        if (c.exitCode !== 0) throw new Error(c.stderr);
      }
    });
    let failures = 0;
    const par = await timeMs(async () => {
      const results = await Promise.allSettled(
        Array.from({ length: N }, (_, i) => env.client.createVolume({ name: `par-${i}`, capacityRange: { requiredBytes: String(8 << 20) }, volumeCapabilities: [CAP] })),
      );
      failures = results.filter((r) => r.status === "rejected").length;
    });
    report(
      "Concurrency: 100 CreateVolume in parallel",
      [
        { what: "zcsi: 100 parallel CreateVolume (distinct names)", median: par, unit: "ms total", ratio: "1.00×", note: `${failures} failed` },
        { what: "raw: 100 sequential zfs create on one connection", median: seq, unit: "ms total", ratio: ratio(seq, par) },
      ],
      [`parallel / sequential raw = ${ratio(par, seq)} (target ≤ 1.0×): ${par <= seq ? "met" : "MISSED"}; channel errors: ${failures === 0 ? "none" : failures}`],
    );
  } finally {
    await raw.close();
    await env.stop();
  }
}
