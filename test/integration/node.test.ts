/**
 * The node service on real mounts: the pool host node binds the dataset, other nodes (zcsi
 * node processes in a network namespace) mount it over SSHFS. Every test checks what a pod
 * would see (files, errno) and /proc/self/mountinfo, not only the RPC's reply.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { execFile } from "node:child_process";
import { open, readFile, readdir, rm, stat, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { errnoOf, OWNER, RWX, UNKNOWN_OWNER, uniqueName, startNodeEnv, type NodeEnv, type NodeHandle, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;
const run = promisify(execFile);

let env: NodeEnv;
let alice: NodeHandle;
let bob: RemoteNode;
let carol: RemoteNode;

beforeAll(async () => {
  env = await startNodeEnv();
  alice = env.local;
  [bob, carol] = await Promise.all([env.startRemoteNode("bob"), env.startRemoteNode("carol")]);
});

afterAll(async () => {
  await env?.stop();
});

async function code(p: Promise<unknown>): Promise<status> {
  try {
    await p;
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

function cap(flags: string[] = [], mode: (typeof RWX)["accessMode"]["mode"] | "MULTI_NODE_READER_ONLY" = "MULTI_NODE_MULTI_WRITER") {
  return { mount: { fsType: "", mountFlags: flags }, accessMode: { mode } };
}

function stage(node: NodeHandle, volume: TestVolume, stagingTargetPath: string, flags: string[] = []) {
  return node.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath, volumeCapability: cap(flags), volumeContext: volume.volumeContext });
}

function publish(node: NodeHandle, volume: TestVolume, stagingTargetPath: string, targetPath: string, opts: { readonly?: boolean; flags?: string[] } = {}) {
  return node.client.nodePublishVolume({
    volumeId: volume.volumeId,
    stagingTargetPath,
    targetPath,
    volumeCapability: cap(opts.flags),
    readonly: opts.readonly ?? false,
    volumeContext: volume.volumeContext,
  });
}

/** Stage + publish on a node; returns the paths. */
async function attach(node: NodeHandle, volume: TestVolume, pod: string, opts: { readonly?: boolean; flags?: string[] } = {}) {
  const staging = await node.stagingPath(`${volume.volumeId.split("/").pop()}-${pod}`);
  await stage(node, volume, staging);
  const target = await node.targetPath(pod);
  await publish(node, volume, staging, target, opts);
  return { staging, target };
}

async function detach(node: NodeHandle, volume: TestVolume, paths: { staging: string; target: string }) {
  await node.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: paths.target });
  await node.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging });
}

async function mountOf(path: string) {
  return mountAt(await readMountInfo(), path);
}

describe("on the pool host node (bind mount)", () => {
  it("binds the dataset's mountpoint into staging and the pod target; a file written in the target is on the dataset", async () => {
    const volume = await env.createVolume(uniqueName("pvc-local"), 32 * MiB);
    const paths = await attach(alice, volume, "pod-local");
    const staging = await mountOf(paths.staging);
    expect(staging).toMatchObject({ source: volume.dataset, root: "/" });
    expect(["fuse.zfs", "fuse", "zfs"]).toContain(staging?.fsType);
    expect((await mountOf(paths.target))?.device).toBe(staging?.device);

    await writeFile(join(paths.target, "hello.txt"), "from a pod on alice\n");
    expect(await readFile(join(volume.mountpoint, "hello.txt"), "utf8")).toBe("from a pod on alice\n");

    await detach(alice, volume, paths);
    expect(await mountOf(paths.target)).toBeUndefined();
    expect(await mountOf(paths.staging)).toBeUndefined();
    // The plugin removes the target it created; the staging dir is kubelet's and stays.
    expect(await errnoOf(stat(paths.target))).toBe("ENOENT");
    expect((await stat(paths.staging)).isDirectory()).toBe(true);
    expect(await readFile(join(volume.mountpoint, "hello.txt"), "utf8")).toBe("from a pod on alice\n");
  });

  it("returns NOT_FOUND for a volume whose dataset is not mounted on the pool host, and mounts nothing", async () => {
    const name = uniqueName("pvc-missing");
    const ghost = { volumeId: `alice:${env.parent}/${name}`, volumeContext: {}, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) };
    const staging = await alice.stagingPath(name);
    expect(await code(stage(alice, ghost, staging))).toBe(status.NOT_FOUND);
    expect(await mountOf(staging)).toBeUndefined();
  });
});

describe("on another node (SSHFS)", () => {
  it("stages over SSHFS with the pinned host key; writes from the node land on the dataset and the reverse", async () => {
    const volume = await env.createVolume(uniqueName("pvc-remote"), 32 * MiB);
    const paths = await attach(bob, volume, "pod-remote");
    const staging = await mountOf(paths.staging);
    expect(staging).toMatchObject({ fsType: "fuse.sshfs", source: `${env.sshd.user}@${env.netns.hostAddress}:${volume.mountpoint}` });
    expect((await mountOf(paths.target))?.device).toBe(staging?.device);
    // known_hosts holds exactly the configured key.
    expect(await readFile(join(bob.stateDir, "known_hosts", "alice"), "utf8")).toBe(`[${env.netns.hostAddress}]:${env.sshd.port} ${env.sshd.hostKeyLine.split(" ").slice(0, 2).join(" ")}\n`);

    await writeFile(join(paths.target, "from-bob.txt"), "written on bob\n");
    expect(await readFile(join(volume.mountpoint, "from-bob.txt"), "utf8")).toBe("written on bob\n");
    await writeFile(join(volume.mountpoint, "from-alice.txt"), "written on the pool host\n");
    expect(await readFile(join(paths.target, "from-alice.txt"), "utf8")).toBe("written on the pool host\n");

    await detach(bob, volume, paths);
    expect(await mountOf(paths.staging)).toBeUndefined();
    expect(await mountOf(paths.target)).toBeUndefined();
  });

  it("creates files over SSHFS as the volume's owner (StorageClass uid/gid), as a pod on the pool host would", async () => {
    const volume = await env.createVolume(uniqueName("pvc-owned"), 32 * MiB, { uid: String(OWNER.uid), gid: String(OWNER.gid), mode: "0775" });
    const paths = await attach(bob, volume, "pod-owned");
    await writeFile(join(paths.target, "owned.txt"), "x");
    const onPool = await stat(join(volume.mountpoint, "owned.txt"));
    const onNode = await stat(join(paths.target, "owned.txt"));
    expect([onPool.uid, onPool.gid]).toEqual([OWNER.uid, OWNER.gid]);
    expect([onNode.uid, onNode.gid]).toEqual([OWNER.uid, OWNER.gid]);
    // A pod running as the owner writes through the mount (allow_other + real permissions).
    await run("sh", ["-c", 'echo ok > "$1"/as-owner.txt', "sh", paths.target], { uid: OWNER.uid, gid: OWNER.gid });
    expect(await readFile(join(volume.mountpoint, "as-owner.txt"), "utf8")).toBe("ok\n");
    // ... and another uid may not write into the owner's 0775 directory, as on the pool host.
    const other = await run("sh", ["-c", 'echo no > "$1"/as-other.txt', "sh", paths.target], { uid: 5555, gid: 5555 }).then(
      () => "written",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(other).toContain("Permission denied");
    await detach(bob, volume, paths);
  });

  it("returns FAILED_PRECONDITION, naming the fix, when the volume's owner has no account on the pool host", async () => {
    const volume = await env.createVolume(uniqueName("pvc-nouser"), 32 * MiB, { uid: String(UNKNOWN_OWNER.uid), gid: String(UNKNOWN_OWNER.gid) });
    const staging = await bob.stagingPath(uniqueName("nouser"));
    const err = await stage(bob, volume, staging).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(err?.code).toBe(status.FAILED_PRECONDITION);
    expect(err?.details).toMatch(/owner 4321:4321 .*needs an account there/);
    expect(await mountOf(staging)).toBeUndefined();
  });

  it("returns NOT_FOUND when the dataset's directory does not exist on the pool host", async () => {
    const name = uniqueName("pvc-nothere");
    const ghost = { volumeId: `alice:${env.parent}/${name}`, volumeContext: {}, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) };
    const staging = await bob.stagingPath(name);
    expect(await code(stage(bob, ghost, staging))).toBe(status.NOT_FOUND);
    expect(await mountOf(staging)).toBeUndefined();
  });
});

describe("pods move and share", () => {
  it("a pod moving from a remote node to the pool host finds its files with the same content and ownership", async () => {
    const volume = await env.createVolume(uniqueName("pvc-move"), 32 * MiB);
    const onBob = await attach(bob, volume, "pod-move-1");
    await writeFile(join(onBob.target, "state.db"), "rows: 42\n");
    const before = await stat(join(onBob.target, "state.db"));
    await detach(bob, volume, onBob);

    const onAlice = await attach(alice, volume, "pod-move-2");
    expect(await readFile(join(onAlice.target, "state.db"), "utf8")).toBe("rows: 42\n");
    const after = await stat(join(onAlice.target, "state.db"));
    expect([after.uid, after.gid, after.mode, after.size]).toEqual([before.uid, before.gid, before.mode, before.size]);
    await writeFile(join(onAlice.target, "state.db"), "rows: 43\n");
    await detach(alice, volume, onAlice);

    // And back to another remote node.
    const onCarol = await attach(carol, volume, "pod-move-3");
    expect(await readFile(join(onCarol.target, "state.db"), "utf8")).toBe("rows: 43\n");
    await detach(carol, volume, onCarol);
  });

  it("ReadWriteMany: pods on three nodes publish one volume and see each other's writes", async () => {
    const volume = await env.createVolume(uniqueName("pvc-rwx"), 32 * MiB);
    const nodes = [alice, bob, carol];
    const attached = await Promise.all(nodes.map((n) => attach(n, volume, `pod-rwx-${n.name}`)));
    for (const [i, n] of nodes.entries()) await writeFile(join(attached[i]!.target, `by-${n.name}.txt`), `hello from ${n.name}\n`);
    for (const paths of attached) {
      expect((await readdir(paths.target)).sort()).toEqual(["by-alice.txt", "by-bob.txt", "by-carol.txt"]);
      for (const n of nodes) expect(await readFile(join(paths.target, `by-${n.name}.txt`), "utf8")).toBe(`hello from ${n.name}\n`);
    }
    await Promise.all(nodes.map((n, i) => detach(n, volume, attached[i]!)));
  });
});

describe("read-only publish", () => {
  it.each([
    ["the pool host", () => alice],
    ["a remote node", () => bob],
  ])("on %s refuses writes with EROFS while a read-write target of the same staging still writes", async (_, node) => {
    const volume = await env.createVolume(uniqueName("pvc-ro"), 32 * MiB);
    await writeFile(join(volume.mountpoint, "seed.txt"), "seed\n");
    const paths = await attach(node(), volume, "pod-ro", { readonly: true });
    expect((await mountOf(paths.target))?.options).toContain("ro");
    expect(await readFile(join(paths.target, "seed.txt"), "utf8")).toBe("seed\n");
    expect(await errnoOf(writeFile(join(paths.target, "nope.txt"), "x"))).toBe("EROFS");
    expect(await errnoOf(rm(join(paths.target, "seed.txt")))).toBe("EROFS");

    const rwTarget = await node().targetPath("pod-rw");
    await publish(node(), volume, paths.staging, rwTarget, { flags: ["noexec", "nosuid"] });
    expect((await mountOf(rwTarget))?.options).toEqual(expect.arrayContaining(["rw", "noexec", "nosuid"]));
    await writeFile(join(rwTarget, "yes.txt"), "y");
    expect(await readFile(join(volume.mountpoint, "yes.txt"), "utf8")).toBe("y");

    // A reader-only access mode is read-only too, whatever the readonly field says.
    const roByMode = await node().targetPath("pod-ro-mode");
    await node().client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: paths.staging, targetPath: roByMode, volumeCapability: cap([], "MULTI_NODE_READER_ONLY"), readonly: false });
    expect(await errnoOf(writeFile(join(roByMode, "nope.txt"), "x"))).toBe("EROFS");

    for (const target of [rwTarget, roByMode]) await node().client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: target });
    await detach(node(), volume, paths);
  });
});

describe("idempotency and conflicts", () => {
  let volume: TestVolume;
  let other: TestVolume;
  let paths: { staging: string; target: string };

  beforeAll(async () => {
    [volume, other] = await Promise.all([env.createVolume(uniqueName("pvc-idem"), 32 * MiB), env.createVolume(uniqueName("pvc-other"), 32 * MiB)]);
    paths = await attach(bob, volume, "pod-idem");
  });

  afterAll(async () => {
    if (paths) await detach(bob, volume, paths);
  });

  it("a repeated stage or publish is OK and mounts nothing twice", async () => {
    expect(await code(stage(bob, volume, paths.staging))).toBe(status.OK);
    expect(await code(publish(bob, volume, paths.staging, paths.target))).toBe(status.OK);
    const mounts = await readMountInfo();
    expect(mounts.filter((m) => m.mountPoint === paths.staging)).toHaveLength(1);
    expect(mounts.filter((m) => m.mountPoint === paths.target)).toHaveLength(1);
  });

  it("returns ALREADY_EXISTS for the same target with another volume or another readonly flag", async () => {
    const otherStaging = await bob.stagingPath(`other-${other.volumeId.split("/").pop()}`);
    await stage(bob, other, otherStaging);
    try {
      expect(await code(publish(bob, other, otherStaging, paths.target))).toBe(status.ALREADY_EXISTS);
      expect(await code(publish(bob, volume, paths.staging, paths.target, { readonly: true }))).toBe(status.ALREADY_EXISTS);
      // The other volume's staging path cannot take this volume either.
      expect(await code(stage(bob, volume, otherStaging))).toBe(status.ALREADY_EXISTS);
      expect((await mountOf(paths.target))?.options).toContain("rw");
    } finally {
      await bob.client.nodeUnstageVolume({ volumeId: other.volumeId, stagingTargetPath: otherStaging });
    }
  });

  it("returns FAILED_PRECONDITION to publish from a staging path that is not staged, or to stage into a missing directory", async () => {
    const unstaged = await bob.stagingPath("never-staged");
    const target = await bob.targetPath("pod-unstaged");
    expect(await code(publish(bob, other, unstaged, target))).toBe(status.FAILED_PRECONDITION);
    expect(await errnoOf(stat(target))).toBe("ENOENT");
    expect(await code(stage(bob, other, join(unstaged, "does-not-exist")))).toBe(status.FAILED_PRECONDITION);
  });

  it("returns FAILED_PRECONDITION when unpublish or unstage meets a mount that is not this volume's, and leaves it", async () => {
    expect(await code(bob.client.nodeUnpublishVolume({ volumeId: other.volumeId, targetPath: paths.target }))).toBe(status.FAILED_PRECONDITION);
    expect(await code(bob.client.nodeUnstageVolume({ volumeId: other.volumeId, stagingTargetPath: paths.staging }))).toBe(status.FAILED_PRECONDITION);
    expect(await mountOf(paths.target)).toBeDefined();
    expect(await mountOf(paths.staging)).toBeDefined();
  });

  it("returns NOT_FOUND for a volume of an unknown pool host", async () => {
    const ghost = { ...volume, volumeId: `nobody:${env.parent}/x`, volumeContext: {} };
    expect(await code(stage(bob, ghost, await bob.stagingPath("ghost")))).toBe(status.NOT_FOUND);
    expect(await code(bob.client.nodeUnpublishVolume({ volumeId: ghost.volumeId, targetPath: paths.target }))).toBe(status.NOT_FOUND);
    expect(await code(bob.client.nodeGetVolumeStats({ volumeId: ghost.volumeId, volumePath: paths.target }))).toBe(status.NOT_FOUND);
  });

  it("checks the volume before the path: an unknown volume with an odd path is NOT_FOUND, a known one INVALID_ARGUMENT", async () => {
    const unknownHost = `nobody:${env.parent}/x`;
    const notHere = `${other.volumeId}-never-created`;
    for (const volumeId of [unknownHost, notHere]) {
      expect(await code(bob.client.nodeGetVolumeStats({ volumeId, volumePath: "relative/path" }))).toBe(status.NOT_FOUND);
      expect(await code(bob.client.nodeExpandVolume({ volumeId, volumePath: "/tmp/../etc" }))).toBe(status.NOT_FOUND);
    }
    expect(await code(bob.client.nodeUnpublishVolume({ volumeId: unknownHost, targetPath: "relative/path" }))).toBe(status.NOT_FOUND);
    expect(await code(bob.client.nodeUnstageVolume({ volumeId: unknownHost, stagingTargetPath: "" }))).toBe(status.NOT_FOUND);
    expect(await code(stage(bob, { ...volume, volumeId: unknownHost, volumeContext: {} }, "relative/path"))).toBe(status.NOT_FOUND);
    // volume is published at paths.target on bob, so the odd path is the request's fault.
    expect(await code(bob.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: "relative/path" }))).toBe(status.INVALID_ARGUMENT);
  });

  it.each([
    ["no volume_id", { volumeId: "" }],
    ["a relative staging path", { stagingTargetPath: "relative/path" }],
    ["a staging path with ..", { stagingTargetPath: "/tmp/../etc" }],
    ["a block volume", { volumeCapability: { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } } }],
    ["an unknown mount flag", { volumeCapability: cap(["suid"]) }],
    ["a free-text ssh option", { volumeCapability: cap(["ProxyCommand=sh -c id"]) }],
    ["a volume_context pointing elsewhere", { volumeContext: { mountpoint: "/etc" } }],
  ])("returns INVALID_ARGUMENT for %s and mounts nothing", async (_, change) => {
    const staging = await bob.stagingPath(uniqueName("invalid"));
    const req = { volumeId: other.volumeId, stagingTargetPath: staging, volumeCapability: cap(), volumeContext: other.volumeContext, ...change };
    expect(await code(bob.client.nodeStageVolume(req))).toBe(status.INVALID_ARGUMENT);
    expect(await mountOf(staging)).toBeUndefined();
  });

  it("returns ABORTED for a second call on the same volume while the first is in flight", async () => {
    const staging = await bob.stagingPath(uniqueName("concurrent"));
    const [first, second] = await Promise.all([code(stage(bob, other, staging)), code(stage(bob, other, staging))]);
    expect([first, second].sort()).toEqual([status.OK, status.ABORTED].sort());
    await bob.client.nodeUnstageVolume({ volumeId: other.volumeId, stagingTargetPath: staging });
  });

  it("a repeated unpublish or unstage is OK", async () => {
    const extra = await bob.targetPath("pod-twice");
    await publish(bob, volume, paths.staging, extra);
    for (let i = 0; i < 2; i++) expect(await code(bob.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: extra }))).toBe(status.OK);
    const staging = await bob.stagingPath(uniqueName("twice"));
    await stage(bob, other, staging);
    for (let i = 0; i < 2; i++) expect(await code(bob.client.nodeUnstageVolume({ volumeId: other.volumeId, stagingTargetPath: staging }))).toBe(status.OK);
    expect(await mountOf(staging)).toBeUndefined();
  });
});

describe("stats, expansion and quota", () => {
  it("reports bytes and inodes of the volume through both paths, and the grown size after expansion", async () => {
    const volume = await env.createVolume(uniqueName("pvc-stats"), 32 * MiB);
    const remote = await attach(bob, volume, "pod-stats-r");
    const local = await attach(alice, volume, "pod-stats-l");
    await writeFile(join(remote.target, "blob"), Buffer.alloc(4 * MiB, 7));
    for (const [node, paths] of [
      [bob, remote],
      [alice, local],
    ] as const) {
      const res = await node.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: paths.target });
      expect(res.volumeCondition).toEqual({ abnormal: false, message: "" });
      const bytes = res.usage.find((u) => u.unit === "BYTES");
      const inodes = res.usage.find((u) => u.unit === "INODES");
      expect(Number(bytes?.total)).toBeLessThanOrEqual(32 * MiB);
      expect(Number(bytes?.total)).toBeGreaterThan(28 * MiB);
      expect(Number(bytes?.used)).toBeGreaterThanOrEqual(3 * MiB);
      expect(Number(bytes?.available)).toBeLessThan(Number(bytes?.total) - 3 * MiB);
      expect(Number(inodes?.total)).toBeGreaterThan(0);
      expect(Number(inodes?.used)).toBeGreaterThan(0);
    }

    await env.controller.controllerExpandVolume({ volumeId: volume.volumeId, capacityRange: { requiredBytes: String(64 * MiB) } });
    for (const [node, paths] of [
      [bob, remote],
      [alice, local],
    ] as const) {
      const expanded = await node.client.nodeExpandVolume({ volumeId: volume.volumeId, volumePath: paths.target, capacityRange: { requiredBytes: String(64 * MiB) } });
      expect(Number(expanded.capacityBytes)).toBeGreaterThan(60 * MiB);
      // What the pod's df shows.
      const fs = await statfs(paths.target);
      expect(fs.blocks * fs.bsize).toBeGreaterThan(60 * MiB);
    }
    await detach(bob, volume, remote);
    await detach(alice, volume, local);
  });

  it.each([
    ["the pool host", () => alice, ["ENOSPC", "EDQUOT"]],
    // SFTP (v3) has no code for a full disk: sftp-server answers SSH_FX_FAILURE, which sshfs
    // turns into EIO (or EPERM); the write still fails, at a later write() or at close()
    // (sshfs-semantics.test.ts pins down which call, per write mode).
    ["a remote node", () => bob, ["ENOSPC", "EDQUOT", "EIO", "EPERM"]],
  ])("writing past the volume's size through %s fails and leaves the dataset intact", async (_, node, codes) => {
    const volume = await env.createVolume(uniqueName("pvc-full"), 16 * MiB);
    const paths = await attach(node(), volume, "pod-full");
    const file = await open(join(paths.target, "big"), "w");
    let failure = "OK";
    try {
      for (let i = 0; i < 40 && failure === "OK"; i++) failure = await errnoOf(file.write(Buffer.alloc(MiB, 1)));
      if (failure === "OK") failure = await errnoOf(file.sync());
    } finally {
      const closed = await errnoOf(file.close());
      if (failure === "OK") failure = closed;
    }
    expect(codes).toContain(failure);
    const referenced = Number((await env.zfs("get", "-Hp", "-o", "value", "referenced", volume.dataset)).trim());
    expect(referenced).toBeLessThanOrEqual(17 * MiB);
    // Freeing space makes the volume writable again through the same mount.
    await rm(join(paths.target, "big"));
    await writeFile(join(paths.target, "after.txt"), "still fine\n");
    expect(await readFile(join(volume.mountpoint, "after.txt"), "utf8")).toBe("still fine\n");
    await detach(node(), volume, paths);
  });
});

describe("identity and node info", () => {
  it("describes the node: id, topology, volume limit and capabilities", async () => {
    expect((await bob.client.probe({})).ready?.value).toBe(true);
    expect(await bob.client.getPluginInfo({})).toMatchObject({ name: env.nodeConfig.driverName });
    expect(await bob.client.nodeGetInfo({})).toEqual({
      nodeId: "bob",
      maxVolumesPerNode: "128",
      // Where the node is, and the key every zcsi node carries (every volume's accessible_topology).
      accessibleTopology: { segments: { [`${env.nodeConfig.driverName}/node`]: "bob", [`${env.nodeConfig.driverName}/access`]: "any-node" } },
    });
    const plugin = (await bob.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type).filter(Boolean);
    expect(plugin).toEqual(["VOLUME_ACCESSIBILITY_CONSTRAINTS"]);
    const caps = (await alice.client.nodeGetCapabilities({})).capabilities.map((c) => c.rpc?.type);
    expect(caps.sort()).toEqual(["EXPAND_VOLUME", "GET_VOLUME_STATS", "SINGLE_NODE_MULTI_WRITER", "STAGE_UNSTAGE_VOLUME", "VOLUME_CONDITION"]);
  });

  it("the node's key can start sftp-server only: running zfs with it is refused", async () => {
    const ssh = ["-F", "/dev/null", "-i", env.nodeKeyPath, "-p", String(env.sshd.port), "-o", "BatchMode=yes", "-o", `UserKnownHostsFile=${join(bob.stateDir, "known_hosts", "alice")}`];
    const attempt = await run("ssh", [...ssh, `${env.sshd.user}@${env.netns.hostAddress}`, "/usr/sbin/zfs", "list"]).then(
      () => ({ ok: true, stderr: "" }),
      (err: { stderr?: string }) => ({ ok: false, stderr: err.stderr ?? "" }),
    );
    expect(attempt.ok).toBe(false);
    expect(attempt.stderr).toContain("zcsi-sftp: refused");
    // And the node processes never ran a zfs command.
    const argvs = (await bob.logs()).filter((l) => Array.isArray(l.argv)).map((l) => (l.argv as string[])[0]);
    expect(argvs).not.toContain("zfs");
    expect(argvs).toContain("sshfs");
  });
});
