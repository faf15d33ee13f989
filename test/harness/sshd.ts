/**
 * A real OpenSSH server for tests: its own config, host key and user key in a temp dir, on a
 * free port of a loopback (or test-made veth) address.
 *
 * Logins use a dedicated system user with `/bin/sh` as its shell, not root: sshd runs every
 * exec request through the login shell, and root's `.bashrc` on these machines runs
 * `pyenv init` (~70 ms per command). The user gets passwordless `sudo -n` for zfs and zpool
 * only — the same setup documented for a non-root pool-host user — so `sudo: true` in the
 * executor is the path under test.
 *
 * Usage:
 *   let sshd: Sshd;
 *   beforeAll(async () => { sshd = await startSshd(); });
 *   afterAll(() => sshd?.stop());   // safe to call twice; also runs at process exit
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { appendFile, chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { pidAlive } from "./process.js";

const run = promisify(execFile);

export interface SshdOptions {
  /** Address to listen on; default 127.0.0.1. Use only addresses the test itself owns. */
  readonly address?: string;
  /** Login user, created if absent (and removed again if this harness created it). */
  readonly user?: string;
  /** sshd's MaxSessions (channels per connection); default 10 like a stock sshd. */
  readonly maxSessions?: number;
  /** Absolute commands the user may run with `sudo -n`. */
  readonly sudoCommands?: readonly string[];
}

export interface Sshd {
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** The server's public key, `ssh-ed25519 AAAA... comment`, to pin in the executor config. */
  readonly hostKeyLine: string;
  readonly privateKey: Buffer;
  readonly privateKeyPath: string;
  /** The client key's public line, `ssh-ed25519 AAAA... zcsi-test-client`. */
  readonly publicKeyLine: string;
  /** A known_hosts file holding `knownHostsLine()`, for ssh/sshfs `-o UserKnownHostsFile=`. */
  readonly knownHostsPath: string;
  /** Milliseconds from the call to a listening server (user setup, keys, sshd start). */
  readonly startMs: number;
  /** `[address]:port ssh-ed25519 AAAA...`, the known_hosts form OpenSSH clients check. */
  knownHostsLine(): string;
  /**
   * Also accepts this public key line for the user (e.g. another harness's client key).
   * `keyOptions` are authorized_keys options put before it, such as
   * `restrict,command="/path/to/wrapper"` for a key limited to one forced command.
   */
  authorize(publicKeyLine: string, options?: { keyOptions?: string }): Promise<void>;
  /** Kills sshd and every session it runs, as a crash or power loss would; keys and port stay. */
  kill(): Promise<void>;
  /** Starts sshd again (killing it first if running) on the same port with the same keys. */
  restart(): Promise<void>;
  /** Kills everything and removes the temp dir, and the user and sudoers file if this created them. */
  stop(): Promise<void>;
}

const DEFAULT_USER = "zcsi-test";
const USER_MARKER = "zcsi test harness";
/** What the test user may run with `sudo -n` unless `sudoCommands` says otherwise. */
export const DEFAULT_SUDO_COMMANDS: readonly string[] = ["/usr/sbin/zfs", "/usr/sbin/zpool", "/usr/bin/id"];

export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const t0 = performance.now();
  const address = options.address ?? "127.0.0.1";
  const user = options.user ?? DEFAULT_USER;
  const dir = await mkdtemp(join(tmpdir(), "zcsi-sshd-"));
  // The user must traverse the dir: sshd reads authorized_keys with the user's privileges.
  await chmod(dir, 0o711);
  let userLease: (() => void) | undefined;
  const onExit = (): void => cleanupSync();
  let child: ChildProcess | undefined;
  let stopped = false;

  function cleanupSync(): void {
    if (child?.pid !== undefined) killTree(child.pid);
    child = undefined;
    rmSync(dir, { recursive: true, force: true });
    userLease?.();
    userLease = undefined;
  }

  // Runs if the test process exits without calling stop() (a crash, a forgotten afterAll).
  process.once("exit", onExit);
  try {
    const sudoCommands = options.sudoCommands ?? DEFAULT_SUDO_COMMANDS;
    userLease = await leaseUser(user, sudoCommands, dir);
    mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // privilege separation dir; system-owned, left in place
    const hostKeyPath = join(dir, "ssh_host_ed25519_key");
    const privateKeyPath = join(dir, "id_ed25519");
    await Promise.all([
      run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "zcsi-test-host", "-f", hostKeyPath]),
      run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "zcsi-test-client", "-f", privateKeyPath]),
    ]);
    const hostKeyLine = (await readFile(`${hostKeyPath}.pub`, "utf8")).trim();
    const authorizedKeys = join(dir, "authorized_keys");
    const publicKeyLine = (await readFile(`${privateKeyPath}.pub`, "utf8")).trim();
    await writeFile(authorizedKeys, `${publicKeyLine}\n`, { mode: 0o644 });
    const privateKey = await readFile(privateKeyPath);

    const configPath = join(dir, "sshd_config");
    const writeConfig = (port: number): Promise<void> =>
      writeFile(
        configPath,
        [
          `ListenAddress ${address.includes(":") ? `[${address}]` : address}:${port}`,
          `HostKey ${hostKeyPath}`,
          `PidFile ${join(dir, "sshd.pid")}`,
          `AuthorizedKeysFile ${authorizedKeys}`,
          `AllowUsers ${user}`,
          "PermitRootLogin no",
          "PubkeyAuthentication yes",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          "UsePAM no",
          "StrictModes no",
          "UseDNS no",
          "PrintMotd no",
          "PrintLastLog no",
          "X11Forwarding no",
          `MaxSessions ${options.maxSessions ?? 10}`,
          "MaxStartups 50:30:100",
          "Subsystem sftp internal-sftp",
          "LogLevel INFO",
          "",
        ].join("\n"),
      );

    let port = 0;
    // Pick a free port, then let sshd bind it; another process may grab it in between, so retry.
    for (let attempt = 0; ; attempt++) {
      port = await freePort(address);
      await writeConfig(port);
      try {
        child = await launch(configPath);
        break;
      } catch (e) {
        if (attempt >= 4 || !String(e).includes("Address already in use")) throw e;
      }
    }

    const knownHostsLine = (): string => `${port === 22 ? address : `[${address}]:${port}`} ${hostKeyLine}`;
    const knownHostsPath = join(dir, "known_hosts");
    await writeFile(knownHostsPath, `${knownHostsLine()}\n`);

    const kill = async (): Promise<void> => {
      const pid = child?.pid;
      const exited = child && child.exitCode === null && child.signalCode === null ? onceExit(child) : Promise.resolve();
      child = undefined;
      if (pid !== undefined) await waitGone(killTree(pid));
      await exited;
    };

    return {
      address,
      port,
      user,
      hostKeyLine,
      privateKey,
      privateKeyPath,
      publicKeyLine,
      knownHostsPath,
      startMs: performance.now() - t0,
      knownHostsLine,
      async authorize(line: string, { keyOptions }: { keyOptions?: string } = {}) {
        if (!/^[a-z0-9-]+ [A-Za-z0-9+/]+=*( [^\n]*)?$/.test(line.trim())) throw new Error("not a public key line");
        if (keyOptions !== undefined && !/^[A-Za-z0-9-]+(="[^"\n]*")?(,[A-Za-z0-9-]+(="[^"\n]*")?)*$/.test(keyOptions)) throw new Error("not an authorized_keys option list");
        await appendFile(authorizedKeys, `${keyOptions === undefined ? "" : `${keyOptions} `}${line.trim()}\n`);
      },
      kill,
      async restart() {
        if (stopped) throw new Error("sshd harness was stopped");
        await kill();
        // sshd sets SO_REUSEADDR, so the old connections in TIME_WAIT do not block the port.
        child = await launch(configPath);
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        process.removeListener("exit", onExit);
        await kill();
        await rm(dir, { recursive: true, force: true });
        userLease?.();
        userLease = undefined;
      },
    };
  } catch (e) {
    process.removeListener("exit", onExit);
    cleanupSync();
    throw e;
  }
}

/** Starts `sshd -D -e` and resolves once it listens; rejects with its stderr if it exits first. */
function launch(configPath: string): Promise<ChildProcess> {
  // sshd re-executes itself, so it must be started by absolute path.
  const proc = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => {
      killTree(proc.pid);
      reject(new Error(`sshd did not start within 30 s:\n${log}`));
    }, 30_000); // a bound that turns a hang into a failure, generous for a loaded machine
    proc.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`sshd exited (${code ?? signal}) before listening:\n${log}`));
    });
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (chunk: string) => {
      // Keep only the start of the log: per-connection lines follow for the server's lifetime.
      if (log.length < 8192) log += chunk;
      if (/Server listening on /.test(log)) {
        clearTimeout(timer);
        resolve(proc);
      }
    });
  });
}

function onceExit(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => proc.once("exit", () => resolve()));
}

/**
 * SIGKILLs a process and all its descendants. sshd puts each connection in a new session
 * (setsid), so a process-group kill would miss them and leave the sessions (and the commands
 * they run) alive; walking /proc finds them by parent pid.
 */
function killTree(root: number | undefined): number[] {
  if (root === undefined) return [];
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Field 4 is the parent pid; the command name in field 2 may contain spaces and parens.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // the process exited while we looked
    }
  }
  const order: number[] = [];
  const visit = (pid: number): void => {
    order.push(pid);
    for (const c of children.get(pid) ?? []) visit(c);
  };
  visit(root);
  for (const pid of order) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return order;
}

/** Waits until the killed processes are gone (or zombies waiting for init to reap them). */
async function waitGone(pids: readonly number[]): Promise<void> {
  const alive = (pid: number): boolean => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 200 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 10));
}

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, address, () => {
      const bound = server.address();
      const port = typeof bound === "object" && bound !== null ? bound.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// One user shared by every harness on the machine, and one sudoers drop-in per process (it
// allows the union of that process's sshds' commands). Test processes may overlap (a developer
// runs one suite while another runs), so the user is removed only when no live process still
// has a drop-in for it.
let userState: { user: string; refs: number; created: boolean; sudoersPath: string; commands: Set<string> } | undefined;

async function leaseUser(user: string, sudoCommands: readonly string[], dir: string): Promise<() => void> {
  if (userState && userState.user !== user) throw new Error(`harness already uses user ${userState.user}`);
  if (!userState) {
    let created = false;
    const existing = passwdEntry(user);
    if (existing === undefined) {
      // "*" (not useradd's default "!") so the account is not locked: with UsePAM no, sshd
      // refuses even key logins to a locked account. Home "/" exists for every sshd and
      // survives any one harness's temp dir.
      await run("useradd", ["--system", "--shell", "/bin/sh", "--home-dir", "/", "--no-create-home", "--comment", USER_MARKER, "--password", "*", user]);
      created = true;
    } else if (existing.includes(`:${USER_MARKER}:`)) {
      created = true; // left by an earlier run that died: ours to remove
    }
    userState = { user, refs: 0, created, sudoersPath: `${SUDOERS_DIR}/${dropInPrefix(user)}${process.pid}`, commands: new Set() };
  }
  const state = userState;
  state.refs += 1;
  const before = state.commands.size;
  for (const command of sudoCommands) state.commands.add(command);
  if (state.commands.size !== before) {
    const draft = join(dir, "sudoers");
    await writeFile(draft, `${user} ALL=(root) NOPASSWD: ${[...state.commands].join(", ")}\n`, { mode: 0o440 });
    await run("visudo", ["-cf", draft]); // a broken drop-in would break sudo for everyone
    await writeFile(state.sudoersPath, await readFile(draft), { mode: 0o440 });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    state.refs -= 1;
    if (state.refs > 0) return;
    userState = undefined;
    rmSync(state.sudoersPath, { force: true });
    if (state.created && passwdEntry(state.user) !== undefined && !otherProcessesUse(state.user)) {
      try {
        execFileSync("userdel", [state.user], { stdio: "ignore" });
      } catch {
        // a process of the user still exists (outside our sshd tree); leave the user for the next run
      }
    }
  };
}

const SUDOERS_DIR = "/etc/sudoers.d";
// sudo ignores drop-in names containing a dot, so none here.
const dropInPrefix = (user: string): string => `zcsi-harness-${user}-`;

/** Whether another live process holds a drop-in for `user`; drop-ins of dead processes are removed. */
function otherProcessesUse(user: string): boolean {
  let inUse = false;
  for (const name of existsSync(SUDOERS_DIR) ? readdirSync(SUDOERS_DIR) : []) {
    if (!name.startsWith(dropInPrefix(user))) continue;
    const pid = Number(name.slice(dropInPrefix(user).length));
    if (pidAlive(pid)) inUse = true;
    else rmSync(join(SUDOERS_DIR, name), { force: true });
  }
  return inUse;
}

function passwdEntry(user: string): string | undefined {
  if (!existsSync("/etc/passwd")) return undefined;
  return readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((line) => line.startsWith(`${user}:`));
}
