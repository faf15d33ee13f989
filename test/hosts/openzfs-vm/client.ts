/**
 * The harness's side of an OpenZFS test VM (vm.ts boots them): an ssh executor into the guest
 * as root and the guest-side helpers, for a VM booted in this process or in another one (the
 * shared VMs of shared.ts are booted by vitest's globalSetup and attached to by each worker).
 */
import { readFile } from "node:fs/promises";
import type { Executor } from "../../../src/exec/executor.js";
import { SshExecutor } from "../../../src/exec/ssh.js";
import { openZfsImage, type OpenZfsImage } from "./vm.js";

export interface OpenZfsVm {
  readonly name: string;
  readonly address: "127.0.0.1";
  /** Host port of the harness's sshd (guest port 22). */
  readonly port: number;
  /** Host port of the sshd the driver under test uses (guest port 2222). */
  readonly servicePort: number;
  readonly user: "root";
  /** This VM's temp dir on the host: disk image, client key, known_hosts, console.log. */
  readonly dir: string;
  /** The guest's host key, `ssh-ed25519 AAAA... openzfs-vm`, to pin. */
  readonly hostKeyLine: string;
  readonly privateKeyPath: string;
  readonly privateKey: Buffer;
  /** A known_hosts file for both ports, for ssh/sshfs `-o UserKnownHostsFile=`. */
  readonly knownHostsPath: string;
  /** Runs commands in the guest as root (over the harness's sshd). */
  readonly exec: Executor;
  /** The pool created at start (undefined with `pool: false`). */
  readonly pool: string | undefined;
  /** Where the pool's root dataset is mounted in the guest: `/mnt/<pool>`. */
  readonly mountRoot: string | undefined;
  /** The guest's whole disk the pool lives on (/dev/vda on a VM of its own). */
  readonly disk: string;
  readonly image: OpenZfsImage;
  /** Milliseconds from starting qemu to a guest answering over ssh (image lookup and pool creation not included). */
  readonly bootMs: number;
  /** Everything the guest printed on its serial console so far. */
  console(): string;
  /** Kills the driver-facing sshd and all its sessions (SIGKILL, like a crash). */
  killServiceSshd(): Promise<void>;
  /** Starts the driver-facing sshd again (same port, same host key). */
  startServiceSshd(): Promise<void>;
  /** Appends a line (`[options] type base64 [comment]`) to the guest's authorized keys (both sshds read it). */
  authorize(publicKeyLine: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * What reaches a booted VM, as plain data: enough for another process (a vitest worker) to
 * attach to a VM that the globalSetup booted (see shared.ts).
 */
export interface OpenZfsVmAddress {
  readonly name: string;
  readonly port: number;
  readonly servicePort: number;
  readonly dir: string;
  readonly hostKeyLine: string;
  readonly privateKeyPath: string;
  readonly knownHostsPath: string;
  readonly bootMs: number;
  /** The guest's disks for pools: /dev/vda first, then any `extraDisksMiB`. */
  readonly disks: readonly { readonly path: string; readonly mib: number }[];
}

export function vmExecutor(address: Pick<OpenZfsVmAddress, "port" | "hostKeyLine">, name: string, privateKey: Buffer): SshExecutor {
  return new SshExecutor({
    host: name,
    address: "127.0.0.1",
    port: address.port,
    user: "root",
    privateKey,
    hostKeys: [address.hostKeyLine],
    defaultTimeoutMs: 120_000,
    connectTimeoutMs: 20_000,
  });
}

/**
 * An `OpenZfsVm` for a booted VM, from this process or another: its own connection to the
 * harness sshd. `stop` is what the caller says it is (the owner kills qemu; a borrower of a
 * shared VM gives it back); `name` names the executor's host in logs and errors.
 */
export async function attachOpenZfsVm(
  address: OpenZfsVmAddress,
  how: { name?: string; pool?: string; disk: string; console?: () => string; stop: () => Promise<void> },
): Promise<OpenZfsVm> {
  const name = how.name ?? address.name;
  const image = await openZfsImage();
  const privateKey = await readFile(address.privateKeyPath);
  const exec = vmExecutor(address, name, privateKey);
  const must = async (argv: string[]): Promise<string> => {
    const r = await exec.run(argv);
    if (r.exitCode !== 0) throw new Error(`${name}: ${argv.join(" ")}: exit ${r.exitCode}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  let stopped: Promise<void> | undefined;
  return {
    name,
    address: "127.0.0.1",
    port: address.port,
    servicePort: address.servicePort,
    user: "root",
    dir: address.dir,
    hostKeyLine: address.hostKeyLine,
    privateKeyPath: address.privateKeyPath,
    privateKey,
    knownHostsPath: address.knownHostsPath,
    exec,
    pool: how.pool,
    mountRoot: how.pool === undefined ? undefined : `/mnt/${how.pool}`,
    disk: how.disk,
    image,
    bootMs: address.bootMs,
    console: how.console ?? (() => ""),
    killServiceSshd: async () => {
      await must(["/usr/sbin/zcsi-service-sshd", "kill"]);
    },
    startServiceSshd: async () => {
      await must(["/usr/sbin/zcsi-service-sshd", "start"]);
    },
    authorize: async (line: string) => {
      // One authorized_keys line: optional key options, then the key.
      if (/[\n\r]/.test(line.trim()) || !/(^|[ ,])[a-z0-9-]+ [A-Za-z0-9+/]+=*( [^ ]*)?$/.test(line.trim())) throw new Error("not an authorized_keys line");
      await must(["sh", "-c", 'printf "%s\\n" "$1" >> /etc/ssh/authorized_keys', "sh", line.trim()]);
    },
    stop: () => {
      // The caller's stop first: a borrower still uses this connection to give the VM back.
      stopped ??= (async () => {
        try {
          await how.stop();
        } finally {
          await exec.close().catch(() => undefined);
        }
      })();
      return stopped;
    },
  };
}

/** Creates `pool` on a whole disk of the VM, mounted at `/mnt/<pool>`. */
export async function createVmPool(exec: Executor, pool: string, disk: string): Promise<void> {
  // Whole disk: zpool writes a GPT and waits for udev to announce the partition.
  const r = await exec.run(["zpool", "create", "-f", "-m", `/mnt/${pool}`, pool, disk]);
  if (r.exitCode !== 0) throw new Error(`${exec.host}: zpool create ${pool}: exit ${r.exitCode}: ${r.stderr.trim()}`);
}

