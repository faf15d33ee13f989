import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import { withCallSignal } from "../../src/exec/call-context.js";
import { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import { SshExecutor, type SshExecutorOptions } from "../../src/exec/ssh.js";
import { ManualClock } from "../harness/fake-k8s.js";
import { DEFAULT_SUDO_COMMANDS, startSshd, type Sshd } from "../harness/sshd.js";

const run = promisify(execFile);
/** A decimal suffix unique to this run: two runs at once must not see each other's sleeps. */
const RUN_ID = String(process.pid);

let sshd: Sshd;
let scratch: string;
const executors: SshExecutor[] = [];

function executor(overrides: Partial<SshExecutorOptions> = {}, server: Sshd = sshd): SshExecutor {
  const ex = new SshExecutor({
    host: "alice",
    address: server.address,
    port: server.port,
    user: server.user,
    privateKey: server.privateKey,
    hostKeys: [server.hostKeyLine],
    ...overrides,
  });
  executors.push(ex);
  return ex;
}

async function rejection(promise: Promise<unknown>): Promise<ZcsiError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ZcsiError) return err;
    throw new Error(`expected a ZcsiError, got ${String(err)}`);
  }
  throw new Error("expected the call to reject");
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Live (non-zombie) processes, of any user, whose command line is exactly `args`. */
function processesRunning(args: string): string[] {
  const out = execFileSync("ps", ["-e", "-o", "stat=,args="], { encoding: "utf8" }).split("\n");
  return out.map((line) => line.trim()).filter((line) => line !== "" && !line.startsWith("Z") && line.replace(/^\S+\s+/, "") === args);
}

/** `ssh-keygen -lf` output's fingerprint: an independent check of our SHA256 formatting. */
async function keygenFingerprint(publicKeyLine: string): Promise<string> {
  const file = join(scratch, `fp-${Math.random().toString(36).slice(2)}.pub`);
  await writeFile(file, `${publicKeyLine}\n`);
  const { stdout } = await run("ssh-keygen", ["-lf", file]);
  const fp = stdout.split(" ")[1];
  if (!fp?.startsWith("SHA256:")) throw new Error(`unexpected ssh-keygen output ${stdout}`);
  return fp;
}

async function newKeyPair(name: string): Promise<{ privateKey: Buffer; publicKeyLine: string }> {
  const path = join(scratch, name);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path]);
  return { privateKey: await readFile(path), publicKeyLine: (await readFile(`${path}.pub`, "utf8")).trim() };
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "zcsi-ssh-test-"));
  // sleep via sudo: to check that a timeout kills the command behind sudo, not only sudo.
  sshd = await startSshd({ sudoCommands: [...DEFAULT_SUDO_COMMANDS, "/usr/bin/sleep"] });
});

afterAll(async () => {
  await Promise.all(executors.map((ex) => ex.close()));
  await sshd?.stop();
  await rm(scratch, { recursive: true, force: true });
});

describe("sshd harness", () => {
  it("is reachable with the OpenSSH client using its known_hosts line and strict host key checking", async () => {
    expect(sshd.knownHostsLine()).toBe(`[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}`);
    const { stdout } = await run("ssh", [
      "-i", sshd.privateKeyPath,
      "-o", `UserKnownHostsFile=${sshd.knownHostsPath}`,
      "-o", "StrictHostKeyChecking=yes",
      "-o", "BatchMode=yes",
      "-p", String(sshd.port),
      `${sshd.user}@127.0.0.1`,
      "echo ok",
    ]);
    expect(stdout).toBe("ok\n");
  });

  it("logs in with a plain /bin/sh environment (no rc files), so commands start fast", async () => {
    const ex = executor();
    const r = await ex.run(["sh", "-c", 'echo "$0|$HOME|$BASH_VERSION"']);
    expect(r.stdout).toBe("sh|/|\n");
  });

  it("stop removes its processes and temp dir, and is safe to call twice", async () => {
    const other = await startSshd();
    const dir = join(other.privateKeyPath, "..");
    expect(existsSync(dir)).toBe(true);
    await other.stop();
    await other.stop();
    expect(existsSync(dir)).toBe(false);
    const refused = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: other.address, port: other.port });
      socket.once("connect", () => resolve(socket.destroy() && false));
      socket.once("error", () => resolve(true));
    });
    expect(refused).toBe(true);
  });
});

describe("SshExecutor.run", () => {
  it("returns stdout, stderr and the exit code", async () => {
    const r = await executor().run(["sh", "-c", "echo out; echo err >&2"]);
    expect(r).toEqual({ stdout: "out\n", stderr: "err\n", exitCode: 0, signal: null });
  });

  it("reports a non-zero exit as a result, not an exception", async () => {
    const ex = executor();
    expect((await ex.run(["sh", "-c", "exit 3"])).exitCode).toBe(3);
    expect((await ex.run(["false"])).exitCode).toBe(1);
    const missing = await ex.run(["/nonexistent/zfs", "list"]);
    expect(missing.exitCode).toBe(127);
  });

  it("keeps the exit status of a command that finished while the event loop was busy", async () => {
    // With the event loop blocked, the exec reply, exit-status and CLOSE arrive in one read, and
    // ssh2 emits them all before a listener attached after the exec callback could hear them.
    // Before the fix this failed about one time in six with "closed without an exit status".
    const ex = executor();
    await ex.run(["true"]); // connect first, so only the command's own packets are in flight
    for (let i = 0; i < 15; i++) {
      const pending = ex.run(["sh", "-c", "exit 3"]);
      await new Promise((r) => setTimeout(r, 5)); // the exec request goes out
      for (const until = Date.now() + 100; Date.now() < until; ); // busy: the replies pile up unread
      expect((await pending).exitCode).toBe(3);
    }
  });

  it("passes stdin through, including a large one", async () => {
    const ex = executor();
    expect((await ex.run(["cat"], { stdin: "hello\nwörld\n" })).stdout).toBe("hello\nwörld\n");
    const big = Buffer.alloc(4 << 20, "z");
    const r = await ex.run(["wc", "-c"], { stdin: big });
    expect(r.stdout.trim()).toBe(String(big.length));
  });

  it("delivers hostile arguments unchanged through sshd and the remote login shell", async () => {
    const args = ["", "it's", "$(id)", "`id`", "a;b|c&&d", "line\nbreak", "*", "~", "-n", "ünï 🚀", "x".repeat(300)];
    const r = await executor().run(["printf", "%s\\0", ...args]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split("\0").slice(0, -1)).toEqual(args);
  });

  it("rejects an empty argv or a NUL byte with InvalidArgument before connecting", async () => {
    const ex = executor();
    expect((await rejection(ex.run([]))).kind).toBe("InvalidArgument");
    expect((await rejection(ex.run(["echo", "a\0b"]))).kind).toBe("InvalidArgument");
    expect(ex.stats().connects).toBe(0);
    expect(ex.stats().openChannels).toBe(0);
  });

  it("runs 30 concurrent commands on one connection, never more than maxChannels (8) channels at once", async () => {
    const ex = executor({ maxChannels: 8 });
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => ex.run(["sh", "-c", `sleep 0.2; echo ${i}`])));
    expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 30 }, (_, i) => `${i}\n`));
    const stats = ex.stats();
    expect(stats.peakChannels).toBe(8);
    expect(stats.openChannels).toBe(0);
    expect(stats.queued).toBe(0);
    expect(stats.connects).toBe(1);
  });

  it("retries a channel the server refuses at MaxSessions instead of losing the command", async () => {
    const small = await startSshd({ maxSessions: 2 });
    try {
      const ex = executor({ maxChannels: 8 }, small);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => ex.run(["sh", "-c", `sleep 0.1; echo ${i}`])));
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 10 }, (_, i) => `${i}\n`));
      expect(ex.stats().channelOpenRetries).toBeGreaterThan(0);
      await ex.close();
    } finally {
      await small.stop();
    }
  });

  it("kills a command that overruns its timeout, rejects DeadlineExceeded and frees the channel", async () => {
    const ex = executor({ maxChannels: 1 });
    await ex.run(["true"]); // connected first: the timeout below is the command's alone
    // A sleep far longer than the test: only the timeout can end it, so its end proves the kill.
    const pending = rejection(ex.run(["sleep", `7310.${RUN_ID}`], { timeoutMs: 3000 }));
    await waitFor(() => processesRunning(`sleep 7310.${RUN_ID}`).length > 0, 30_000);
    const err = await pending;
    expect(err.kind).toBe("DeadlineExceeded");
    expect(err.message).toContain("alice");
    await waitFor(() => ex.stats().openChannels === 0, 30_000);
    await waitFor(() => processesRunning(`sleep 7310.${RUN_ID}`).length === 0, 30_000);
    // The only slot is free again.
    expect((await ex.run(["echo", "after"])).stdout).toBe("after\n");
  });

  it("on timeout kills the command behind sudo, not only sudo", async () => {
    const ex = executor({ sudo: true });
    await ex.run(["true"]);
    const pending = rejection(ex.run(["sleep", `7320.${RUN_ID}`], { timeoutMs: 3000 }));
    await waitFor(() => processesRunning(`sleep 7320.${RUN_ID}`).length > 0, 30_000); // it did start, as root
    const err = await pending;
    expect(err.kind).toBe("DeadlineExceeded");
    await waitFor(() => ex.stats().openChannels === 0, 30_000);
    await waitFor(() => processesRunning(`sleep 7320.${RUN_ID}`).length === 0 && processesRunning(`sudo -n sleep 7320.${RUN_ID}`).length === 0, 30_000);
  });

  it("a command past its timeout keeps its slot until it has exited on the host; the next command waits for that", async () => {
    // The setsid'd child is out of reach of the kill (as a zfs stuck in the kernel on a
    // wedged FUSE mount is) and holds the command's stdout until it has written the marker.
    const ex = executor({ maxCommands: 1 });
    // In /tmp: the sshd user cannot write to this test's private scratch dir.
    const marker = `/tmp/zcsi-survivor-${RUN_ID}-${Date.now()}`;
    const script = 'setsid sh -c "sleep 1.5; touch \\"\\$1\\"" sh "$1" & exec sleep 7330';
    try {
      const err = await rejection(ex.run(["sh", "-c", script, "sh", marker], { timeoutMs: 500 }));
      expect(err.kind).toBe("DeadlineExceeded");
      expect(ex.stats()).toMatchObject({ runningCommands: 1, abandonedCommands: 1 });
      // Starts only once the survivor has exited, so it finds the marker.
      expect((await ex.run(["test", "-e", marker])).exitCode).toBe(0);
      expect(ex.stats()).toMatchObject({ runningCommands: 0, abandonedCommands: 0 });
    } finally {
      await ex.run(["rm", "-f", marker]);
    }
  });

  it("close() lets a command still running on the host finish before it drops the connection", async () => {
    const ex = executor();
    const started = `/tmp/zcsi-draining-${RUN_ID}-${Date.now()}`;
    const pending = ex.run(["sh", "-c", 'touch "$1"; sleep 0.5; rm "$1"; echo finished', "sh", started]);
    await waitFor(() => existsSync(started), 10_000); // on the host now
    await ex.close();
    expect(await pending).toMatchObject({ exitCode: 0, stdout: "finished\n" });
    expect((await rejection(ex.run(["true"]))).kind).toBe("Unavailable");
  });

  it("counts queueing time against the timeout", async () => {
    const ex = executor({ maxChannels: 1 });
    const blocker = ex.run(["sleep", "1"]);
    const err = await rejection(ex.run(["true"], { timeoutMs: 200 }));
    expect(err.kind).toBe("DeadlineExceeded");
    expect((await blocker).exitCode).toBe(0);
    expect(ex.stats().queued).toBe(0);
  });

  it("runs at most maxCommands commands at once; the rest wait their turn and all complete", async () => {
    const ex = executor({ maxChannels: 8, maxCommands: 2 });
    const dir = `/tmp/zcsi-running-${process.pid}-${Date.now()}`;
    await ex.run(["mkdir", dir]);
    // Each command reports how many others were running when it started.
    const script = 'n=$(ls "$1" | wc -l); touch "$1/$$"; sleep 0.2; rm "$1/$$"; echo $n';
    const results = await Promise.all(Array.from({ length: 8 }, () => ex.run(["sh", "-c", script, "sh", dir])));
    await ex.run(["rmdir", dir]);
    expect(results.every((r) => r.exitCode === 0)).toBe(true);
    expect(Math.max(...results.map((r) => Number(r.stdout.trim())))).toBeLessThanOrEqual(1);
    expect(ex.stats()).toMatchObject({ peakCommands: 2, runningCommands: 0, queued: 0 });
  });

  it("a command whose call is cancelled while it waits for a slot never starts and rejects Unavailable", async () => {
    const ex = executor({ maxCommands: 1 });
    const marker = `/tmp/zcsi-never-${process.pid}-${Date.now()}`;
    const blocker = ex.run(["sleep", "1"]);
    const call = new AbortController();
    const pending = rejection(withCallSignal(call.signal, () => ex.run(["touch", marker])));
    await waitFor(() => ex.stats().queued === 1, 2000);
    call.abort(new Error("the call's deadline passed"));
    const err = await pending;
    expect(err.kind).toBe("Unavailable");
    expect(err.message).toMatch(/alice .*touch was not started: the call's deadline passed while it waited for the pool host \(1 commands running, 0 waiting\)/);
    expect((await blocker).exitCode).toBe(0);
    expect((await ex.run(["test", "-e", marker])).exitCode).toBe(1);
    expect(ex.stats().queued).toBe(0);
  });

  it("runs through sudo -n when configured", async () => {
    const ex = executor({ sudo: true });
    const id = await ex.run(["id", "-u"]);
    expect(id).toMatchObject({ stdout: "0\n", exitCode: 0 });
    // zpool by bare name: sudo's secure_path finds /usr/sbin/zpool, which the sudoers rule allows.
    const zpool = await ex.run(["zpool", "list", "-H", "-o", "name"]);
    expect(zpool.stderr).not.toMatch(/sudo:/);
    // A command outside the rule fails at once (-n never prompts) and is a result.
    const denied = await ex.run(["cat", "/etc/shadow"]);
    expect(denied.exitCode).toBe(1);
    expect(denied.stderr).toMatch(/sudo: a password is required/);
  });
});

describe("SshExecutor transport failures", () => {
  it("refuses a server whose host key is not pinned, naming the host and both fingerprints; nothing runs", async () => {
    const wrong = await newKeyPair("not-the-host-key");
    const ex = executor({ hostKeys: [wrong.publicKeyLine] });
    const marker = join(scratch, "must-not-exist");
    const err = await rejection(ex.run(["touch", marker]));
    expect(err.kind).toBe("Unavailable");
    expect(err.message).toContain(`alice (127.0.0.1:${sshd.port})`);
    expect(err.message).toContain(await keygenFingerprint(wrong.publicKeyLine));
    expect(err.message).toContain(await keygenFingerprint(sshd.hostKeyLine));
    expect(err.message).toMatch(/host key mismatch/);
    expect(existsSync(marker)).toBe(false);
  });

  it("accepts the server when one of several pinned keys matches", async () => {
    const other = await newKeyPair("another-host-key");
    const ex = executor({ hostKeys: [other.publicKeyLine, sshd.hostKeyLine] });
    expect((await ex.run(["true"])).exitCode).toBe(0);
  });

  it("reports a refused connection as Unavailable naming host:port", async () => {
    const port = await new Promise<number>((resolve) => {
      const server = createServer();
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        const p = typeof address === "object" && address ? address.port : 0;
        server.close(() => resolve(p));
      });
    });
    const ex = executor({ port });
    const err = await rejection(ex.run(["true"]));
    expect(err.kind).toBe("Unavailable");
    expect(err.message).toContain(`alice (127.0.0.1:${port})`);
    expect(err.message).toMatch(/connection refused/);
  });

  it("reports a key the server does not accept as an authentication failure", async () => {
    const stranger = await newKeyPair("stranger");
    const err = await rejection(executor({ privateKey: stranger.privateKey }).run(["true"]));
    expect(err.kind).toBe("Unavailable");
    expect(err.message).toMatch(/authentication as zcsi-test failed/);
  });

  it("fails a command in flight when sshd dies, backs off, and reconnects after sshd returns", async () => {
    const server = await startSshd();
    try {
      // The backoff reads this clock, so "within the backoff window" is a state the test sets.
      const clock = new ManualClock(Date.parse("2026-01-01T00:00:00Z"));
      const ex = executor({ backoffInitialMs: 300, backoffMaxMs: 1000, clock }, server);
      expect((await ex.run(["true"])).exitCode).toBe(0);
      const inFlight = rejection(ex.run(["sleep", `5.41${RUN_ID}`]));
      await waitFor(() => processesRunning(`sleep 5.41${RUN_ID}`).length > 0, 30_000);
      await server.kill();
      const lost = await inFlight;
      expect(lost.kind).toBe("Unavailable");
      expect(lost.message).toMatch(/connection lost|did not complete/);

      const refused = await rejection(ex.run(["true"]));
      expect(refused.kind).toBe("Unavailable");
      expect(refused.message).toMatch(/connection refused/);
      // Within the backoff window a call fails at once, without a connection attempt, saying when the next one is.
      const connectsBefore = ex.stats().connects;
      clock.advance(100);
      const fast = await rejection(ex.run(["true"]));
      expect(fast.message).toMatch(/next connection attempt in 200 ms/);
      expect(ex.stats().connects).toBe(connectsBefore);

      await server.restart();
      // Still inside the window: the restarted sshd is not tried yet.
      expect((await rejection(ex.run(["true"]))).message).toMatch(/next connection attempt in 200 ms/);
      expect(ex.stats().connects).toBe(connectsBefore);
      clock.advance(200);
      expect((await ex.run(["echo", "back"])).stdout).toBe("back\n");
      expect(ex.stats().connects).toBe(connectsBefore + 1);
      expect(ex.stats().openChannels).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it("close() rejects queued and running work and later calls", async () => {
    const ex = executor({ maxChannels: 1 });
    // Longer than any wait here: only close() can end it while the test looks.
    const running = rejection(ex.run(["sleep", "20"]));
    const queued = rejection(ex.run(["true"]));
    await waitFor(() => ex.stats().queued === 1, 30_000);
    await ex.close();
    expect((await queued).kind).toBe("Unavailable");
    expect((await running).kind).toBe("Unavailable");
    expect((await rejection(ex.run(["true"]))).message).toMatch(/closed/);
  });
});

describe("SshExecutor.stream", () => {
  it("applies backpressure: a paused reader holds the remote writer back", async () => {
    const ex = executor();
    const total = 64 << 20;
    const s = await ex.stream(["head", "-c", String(total), "/dev/zero"]);
    s.stdin.end();
    s.stderr.resume();
    s.stdout.pause();
    // Wait until data has arrived and the buffer stops growing: the writer is held back (or,
    // without flow control, has sent everything).
    let last = -1;
    await waitFor(async () => {
      const now = s.stdout.readableLength;
      const settled = now > 0 && now === last;
      last = now;
      if (!settled) await new Promise((r) => setTimeout(r, 200));
      return settled;
    }, 60_000);
    // SSH flow control: roughly one channel window (2 MiB) plus the stream buffer, not 64 MiB.
    expect(s.stdout.readableLength).toBeLessThan(8 << 20);
    let received = 0;
    s.stdout.on("data", (chunk: Buffer) => (received += chunk.length));
    s.stdout.resume();
    const result = await s.done;
    expect(result.exitCode).toBe(0);
    expect(received).toBe(total);
  });

  it("pipes stdin to stdout and kill() stops the command", async () => {
    const ex = executor();
    const s = await ex.stream(["cat"]);
    const chunks: Buffer[] = [];
    s.stdout.on("data", (c: Buffer) => chunks.push(c));
    s.stderr.resume();
    s.stdin.write("ping\n");
    await waitFor(() => Buffer.concat(chunks).toString() === "ping\n", 30_000);
    s.kill();
    const result = await s.done;
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBe("SIGTERM");
    await waitFor(() => ex.stats().openChannels === 0, 30_000);
  });
});

describe("InstrumentedExecutor over SSH", () => {
  it("logs one line per command, counts by command, and never logs stdin or the private key", async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(chunk.toString("utf8"));
        callback();
      },
    });
    const logger = pino({ level: "trace" }, sink);
    const ssh = executor({ logger, sudo: false });
    const ex = new InstrumentedExecutor(ssh, logger);
    await ex.run(["cat"], { stdin: "TOP-SECRET-STDIN-4711" });
    await ex.run(["sh", "-c", "exit 2"]);
    await ex.run(["id", "-u"]);
    // Failures also pass through the logger: timeout, wrong host key, bad auth, refused port.
    await ex.run(["sleep", "5"], { timeoutMs: 200 }).catch(() => undefined);
    const wrongKey = new InstrumentedExecutor(executor({ logger, hostKeys: [(await newKeyPair("wrong2")).publicKeyLine] }), logger);
    await wrongKey.run(["true"]).catch(() => undefined);
    const stranger = new InstrumentedExecutor(executor({ logger, privateKey: (await newKeyPair("stranger2")).privateKey }), logger);
    await stranger.run(["true"]).catch(() => undefined);

    logger.info({ executor: ssh, wrapped: ex }, "objects that hold the key must not serialise it");
    const records = lines.join("").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
    const execs = records.filter((r) => r.op === "exec");
    expect(execs.length).toBe(6);
    expect(execs[0]).toMatchObject({ host: "alice", argv: ["cat"], exitCode: 0, level: 20, stdinBytes: 21 });
    expect(typeof execs[0]?.durationMs).toBe("number");
    expect(execs[1]).toMatchObject({ argv: ["sh", "-c", "exit 2"], exitCode: 2, level: 40 });
    expect(execs[3]).toMatchObject({ argv: ["sleep", "5"], exitCode: null, level: 40, errorKind: "DeadlineExceeded" });
    expect(execs[4]).toMatchObject({ errorKind: "Unavailable" });
    expect(ex.count).toBe(4);
    expect(Object.fromEntries(ex.counts)).toEqual({ cat: 1, sh: 1, id: 1, sleep: 1 });

    const text = lines.join("");
    expect(text).not.toContain("TOP-SECRET-STDIN-4711");
    // Slices of the key file's base64 body, and the raw key bytes in hex and base64.
    const body = sshd.privateKey.toString("utf8").split("\n").filter((l) => l !== "" && !l.startsWith("-----"));
    for (const line of body) expect(text).not.toContain(line.slice(10, 40));
    expect(text).not.toContain(sshd.privateKey.toString("hex").slice(100, 140));
    expect(text).not.toContain(sshd.privateKey.toString("base64").slice(100, 140));
  });

  it("counts zfs subcommands separately", () => {
    const ex = new InstrumentedExecutor(executor(), pino({ level: "silent" }));
    // Count is taken at the call, before any I/O, so failed starts are counted too.
    void ex.run(["zfs", "create", "-o", "a=b", "tank/x"]).catch(() => undefined);
    void ex.run(["zfs", "list", "-H"]).catch(() => undefined);
    void ex.run(["/usr/sbin/zfs", "list"]).catch(() => undefined);
    expect(Object.fromEntries(ex.counts)).toEqual({ "zfs create": 1, "zfs list": 2 });
  });
});
