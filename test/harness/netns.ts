/**
 * A network namespace standing in for another node: a veth pair with a private /30 from
 * 10.213.0.0/16, the host side in the test's namespace (sshd of the pool host listens there)
 * and the other side in the new namespace.
 *
 * Processes for the "remote node" run with `nsenter --net=<path>`: they get the namespace's
 * network but keep this mount namespace, so the SSHFS mounts they make are visible to the
 * test (`ip netns exec` would also unshare mounts; ARCHITECTURE.md, "Remote nodes in tests").
 *
 * Only the addresses of namespaces this harness made are ever used as network targets.
 * destroy() removes the namespace and the veth pair; an exit hook does it if a test forgets.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { LocalExecutor } from "../../src/exec/local.js";

export interface NetNs {
  readonly name: string;
  /** `/run/netns/<name>`, for `nsenter --net=`. */
  readonly path: string;
  /** The host side of the veth pair: where services for the remote node listen. */
  readonly hostAddress: string;
  /** The namespace side: the remote node's own address. */
  readonly nsAddress: string;
  /** argv prefix that runs a command inside the namespace's network. */
  enter(argv: readonly string[]): string[];
  destroy(): Promise<void>;
}

const local = new LocalExecutor();

async function ip(...args: string[]): Promise<void> {
  const r = await local.run(["ip", ...args], { timeoutMs: 10_000 });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
}

function addressesInUse(): string {
  return execFileSync("ip", ["-o", "addr"], { encoding: "utf8" });
}

const live = new Set<string>();
let hookInstalled = false;

function removeSync(name: string, hostIf: string): void {
  for (const argv of [
    ["netns", "del", name],
    ["link", "del", hostIf],
  ]) {
    try {
      execFileSync("ip", argv, { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
}

export async function createNetNs(): Promise<NetNs> {
  if (!hookInstalled) {
    hookInstalled = true;
    process.once("exit", () => {
      for (const entry of live) {
        const [name, hostIf] = entry.split(" ") as [string, string];
        removeSync(name, hostIf);
      }
    });
  }
  const id = randomBytes(4).toString("hex");
  const name = `zcsi-test-${id}`;
  // Interface names are at most 15 characters.
  const hostIf = `zv${id}h`;
  const nsIf = `zv${id}n`;
  // A /30 whose addresses nobody uses yet: .1 host side, .2 namespace side.
  const used = addressesInUse();
  let base = "";
  for (let attempt = 0; attempt < 20 && base === ""; attempt++) {
    const block = randomInt(0, 16384);
    const candidate = `10.213.${block >> 6}.${(block & 63) << 2}`;
    const prefix = candidate.slice(0, candidate.lastIndexOf(".") + 1);
    const last = Number(candidate.slice(candidate.lastIndexOf(".") + 1));
    if (!used.includes(`${prefix}${last + 1}/`) && !used.includes(`${prefix}${last + 2}/`)) base = candidate;
  }
  if (base === "") throw new Error("no free /30 in 10.213.0.0/16");
  const prefix = base.slice(0, base.lastIndexOf(".") + 1);
  const last = Number(base.slice(base.lastIndexOf(".") + 1));
  const hostAddress = `${prefix}${last + 1}`;
  const nsAddress = `${prefix}${last + 2}`;
  live.add(`${name} ${hostIf}`);
  try {
    await ip("netns", "add", name);
    await ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
    await ip("link", "set", nsIf, "netns", name);
    await ip("addr", "add", `${hostAddress}/30`, "dev", hostIf);
    await ip("link", "set", hostIf, "up");
    await ip("-n", name, "addr", "add", `${nsAddress}/30`, "dev", nsIf);
    await ip("-n", name, "link", "set", nsIf, "up");
    await ip("-n", name, "link", "set", "lo", "up");
  } catch (err) {
    removeSync(name, hostIf);
    live.delete(`${name} ${hostIf}`);
    throw err;
  }
  let destroyed = false;
  return {
    name,
    path: `/run/netns/${name}`,
    hostAddress,
    nsAddress,
    enter: (argv) => ["nsenter", `--net=/run/netns/${name}`, "--", ...argv],
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      removeSync(name, hostIf);
      live.delete(`${name} ${hostIf}`);
    },
  };
}
