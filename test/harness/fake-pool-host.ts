/**
 * A pool host for unit tests of code that reads and writes ZFS properties: its datasets as
 * `zfs get -Hp` prints them (every value `local`; readonly too), `-d 1` listing the children of
 * a dataset, `zfs set` and `zfs inherit` changing them, `zpool list -H` of a pool in
 * `poolHealth`, and a switch that takes the host down (every command fails as over a dead
 * connection). No streams: sends are not its business.
 */
import { parseConfig } from "../../src/config.js";
import { isZcsiError, unavailable, type ErrorKind } from "../../src/errors.js";
import type { ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";

export class FakePoolHost implements Executor {
  /** Every command run, in order. */
  readonly commands: string[][] = [];
  /** The `zfs set` commands, in order. */
  readonly sets: string[][] = [];
  down = false;
  /** What `zpool list` says of any pool's health. */
  poolHealth = "ONLINE";
  /** When set, every `zfs set` fails with this stderr (a pool that cannot be written). */
  failSet: string | undefined;
  constructor(
    readonly host: string,
    readonly datasets: Map<string, Map<string, string>> = new Map(),
  ) {}

  async run(argv: readonly string[]): Promise<ExecResult> {
    if (this.down) throw unavailable(`ssh ${this.host}: connection refused`);
    this.commands.push([...argv]);
    if (argv[1] === "version") return ok("zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n");
    const name = argv[argv.length - 1]!;
    if (argv[0] === "zpool" && argv[1] === "list") return ok(`${name}\t${this.poolHealth}\t1G\t512M\t512M\n`);
    const ds = this.datasets.get(name);
    if (argv[1] === "get") {
      const props = argv[argv.length - 2]!.split(",");
      const line = (n: string, d: Map<string, string>, p: string): string => (d.has(p) ? `${n}\t${p}\t${d.get(p)}\t${p.includes(":") || p === "readonly" ? "local" : "-"}` : `${n}\t${p}\t-\t-`);
      if (argv.includes("-d")) return ok([...this.datasets].filter(([n]) => n.startsWith(`${name}/`)).flatMap(([n, d]) => props.map((p) => line(n, d, p))).join("\n") + "\n");
      if (!ds) return { stdout: "", stderr: `cannot open '${name}': dataset does not exist\n`, exitCode: 1 };
      return ok(props.map((p) => line(name, ds, p)).join("\n") + "\n");
    }
    if (argv[1] === "set" && this.failSet !== undefined) return { stdout: "", stderr: `${this.failSet}\n`, exitCode: 1 };
    if (argv[1] === "set" && ds) {
      this.sets.push([...argv]);
      for (const a of argv.slice(2, -1)) ds.set(a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1));
      return ok("");
    }
    if (argv[1] === "inherit" && ds) {
      ds.delete(argv[2]!);
      return ok("");
    }
    return { stdout: "", stderr: `unexpected ${argv.join(" ")}`, exitCode: 2 };
  }

  stream(): Promise<ExecStream> {
    return Promise.reject(new Error("no streams here"));
  }

  async close(): Promise<void> {}
}

function ok(stdout: string): ExecResult {
  return { stdout, stderr: "", exitCode: 0 };
}

/** The ZcsiError a promise rejects with, as kind and message; anything else (or no rejection) fails the test. */
export async function zcsiRejection(p: Promise<unknown>): Promise<{ kind: ErrorKind; message: string }> {
  try {
    await p;
  } catch (err) {
    if (isZcsiError(err)) return { kind: err.kind, message: err.message };
    throw err;
  }
  throw new Error("expected a rejection");
}

/** A host key in the pinned form the config wants; fake hosts are never dialled. */
export const FAKE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/** Two pool hosts, alice (tank/k8s) and bob (pool2/k8s), for tests over FakePoolHost executors. */
export const TWO_POOL_HOSTS = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [
    { name: "alice", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "tank/k8s", mountRoot: "/ma", hostKey: FAKE_HOST_KEY },
    { name: "bob", address: "127.0.0.1", port: 22, user: "zcsi", parentDataset: "pool2/k8s", mountRoot: "/mb", hostKey: FAKE_HOST_KEY },
  ],
});
