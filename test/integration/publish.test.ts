/**
 * Attach-time home (issue 14, item 1) on real zfs-fuse, with the real controller and node
 * plugins over gRPC: ControllerPublishVolume names the serving host in publish_context and
 * records the publication on the dataset; NodeStageVolume mounts from publish_context (bind on
 * the pool host, SSHFS elsewhere), and from the volume id when there is none. Every test checks
 * what ZFS recorded (`zfs get`) and what is mounted (/proc/self/mountinfo), not only replies.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { PUBLISHED_TO_PROPERTY } from "../../src/volumes/publications.js";
import { uniqueName, startNodeEnv, type NodeEnv, type NodeHandle, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;

let env: NodeEnv;
let alice: NodeHandle;
let bob: RemoteNode;

beforeAll(async () => {
  env = await startNodeEnv();
  alice = env.local;
  bob = await env.startRemoteNode("bob");
});

afterAll(async () => {
  await env?.stop();
});

type Mode = "SINGLE_NODE_WRITER" | "MULTI_NODE_MULTI_WRITER";

const cap = (mode: Mode) => ({ mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode } });

async function code(p: Promise<unknown>): Promise<status> {
  try {
    await p;
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

function controllerPublish(volume: TestVolume, nodeId: string, mode: Mode = "MULTI_NODE_MULTI_WRITER", readonly = false) {
  return env.controller.controllerPublishVolume({ volumeId: volume.volumeId, nodeId, volumeCapability: cap(mode), readonly, volumeContext: volume.volumeContext });
}

function controllerUnpublish(volumeId: string, nodeId: string) {
  return env.controller.controllerUnpublishVolume({ volumeId, nodeId });
}

/** The publication record on the dataset, as ZFS has it (`-` when unset). */
async function publishedTo(volume: TestVolume): Promise<string> {
  return (await env.zfs("get", "-H", "-o", "value", PUBLISHED_TO_PROPERTY, volume.dataset)).trim();
}

async function mountOf(path: string) {
  return mountAt(await readMountInfo(), path);
}

function stage(node: NodeHandle, volume: TestVolume, stagingTargetPath: string, publishContext: Record<string, string> | undefined, mode: Mode = "MULTI_NODE_MULTI_WRITER") {
  return node.client.nodeStageVolume({
    volumeId: volume.volumeId,
    stagingTargetPath,
    volumeCapability: cap(mode),
    volumeContext: volume.volumeContext,
    ...(publishContext && { publishContext }),
  });
}

function unstage(node: NodeHandle, volume: TestVolume, stagingTargetPath: string) {
  return node.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath });
}

describe("ControllerPublishVolume", () => {
  it("advertises PUBLISH_UNPUBLISH_VOLUME", async () => {
    const caps = (await env.controller.controllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type);
    expect(caps).toEqual(expect.arrayContaining(["PUBLISH_UNPUBLISH_VOLUME", "PUBLISH_READONLY"]));
  });

  it("on the pool host's node: publish_context names the host, and NodeStageVolume binds the dataset", async () => {
    const volume = await env.createVolume(uniqueName("pvc-pub-local"), 32 * MiB);
    const { publishContext } = await controllerPublish(volume, "alice", "SINGLE_NODE_WRITER");
    expect(publishContext).toEqual({ poolHost: "alice", dataset: volume.dataset, mountpoint: volume.mountpoint, epoch: "1" });
    expect(await publishedTo(volume)).toBe("alice:snw");

    const staging = await alice.stagingPath(`${volume.volumeId.split("/").pop()}-pub`);
    await stage(alice, volume, staging, publishContext, "SINGLE_NODE_WRITER");
    const mount = await mountOf(staging);
    expect(mount).toMatchObject({ source: volume.dataset, root: "/" });
    expect(["fuse.zfs", "fuse", "zfs"]).toContain(mount?.fsType);
    await writeFile(join(staging, "local.txt"), "bound\n");
    expect(await readFile(join(volume.mountpoint, "local.txt"), "utf8")).toBe("bound\n");

    await unstage(alice, volume, staging);
    expect(await mountOf(staging)).toBeUndefined();
    await controllerUnpublish(volume.volumeId, "alice");
    expect(await publishedTo(volume)).toBe("-");
  });

  it("on another node: NodeStageVolume mounts over SSHFS from the host publish_context names", async () => {
    const volume = await env.createVolume(uniqueName("pvc-pub-remote"), 32 * MiB);
    const { publishContext } = await controllerPublish(volume, "bob");
    expect(publishContext.poolHost).toBe("alice");
    const staging = await bob.stagingPath(`${volume.volumeId.split("/").pop()}-pub`);
    await stage(bob, volume, staging, publishContext);
    expect(await mountOf(staging)).toMatchObject({ fsType: "fuse.sshfs", source: `${env.sshd.user}@${env.netns.hostAddress}:${volume.mountpoint}` });
    await writeFile(join(volume.mountpoint, "remote.txt"), "over sshfs\n");
    expect(await readFile(join(staging, "remote.txt"), "utf8")).toBe("over sshfs\n");
    await unstage(bob, volume, staging);
    expect(await mountOf(staging)).toBeUndefined();
    await controllerUnpublish(volume.volumeId, "bob");
  });

  it("stages from publish_context, not from the volume id, and unstages that mount without it", async () => {
    // A volume whose home is another dataset than the one its id names (what a move makes):
    // publish_context points at `home`'s dataset; the node must mount that one.
    const volume = await env.createVolume(uniqueName("pvc-moved"), 32 * MiB);
    const home = await env.createVolume(uniqueName("pvc-home"), 32 * MiB);
    await writeFile(join(home.mountpoint, "where.txt"), "the home\n");
    const context = { poolHost: "alice", dataset: home.dataset, mountpoint: home.mountpoint, epoch: "2" };
    for (const node of [alice, bob]) {
      const staging = await node.stagingPath(`${volume.volumeId.split("/").pop()}-${node.name}`);
      await stage(node, volume, staging, context);
      const mount = await mountOf(staging);
      if (node === alice) expect(mount?.source).toBe(home.dataset);
      else expect(mount?.source).toBe(`${env.sshd.user}@${env.netns.hostAddress}:${home.mountpoint}`);
      expect(await readFile(join(staging, "where.txt"), "utf8")).toBe("the home\n");
      // NodeGetVolumeStats and NodeUnstageVolume carry no publish_context: the stage record says where from.
      const stats = await node.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: staging });
      expect(stats.volumeCondition?.abnormal).toBe(false);
      await unstage(node, volume, staging);
      expect(await mountOf(staging)).toBeUndefined();
    }
  });

  it("honours a readonly publication: every pod target of it is read-only, even when NodePublishVolume does not ask", async () => {
    const volume = await env.createVolume(uniqueName("pvc-pub-ro"), 32 * MiB);
    const { publishContext } = await controllerPublish(volume, "bob", "MULTI_NODE_MULTI_WRITER", true);
    expect(publishContext.readonly).toBe("true");
    expect(await publishedTo(volume)).toBe("bob:mnmw:ro");
    const staging = await bob.stagingPath(`${volume.volumeId.split("/").pop()}-ro`);
    await stage(bob, volume, staging, publishContext);
    const target = await bob.targetPath("pod-pub-ro");
    await bob.client.nodePublishVolume({
      volumeId: volume.volumeId,
      stagingTargetPath: staging,
      targetPath: target,
      volumeCapability: cap("MULTI_NODE_MULTI_WRITER"),
      readonly: false,
      publishContext,
      volumeContext: volume.volumeContext,
    });
    expect((await mountOf(target))?.options).toContain("ro");
    await expect(writeFile(join(target, "nope.txt"), "x")).rejects.toMatchObject({ code: "EROFS" });
    await bob.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: target });
    await unstage(bob, volume, staging);
    await controllerUnpublish(volume.volumeId, "bob");
  });

  it("refuses a publish_context outside the configured pool hosts and parents, and mounts nothing", async () => {
    const volume = await env.createVolume(uniqueName("pvc-badctx"), 32 * MiB);
    const staging = await bob.stagingPath(`${volume.volumeId.split("/").pop()}-bad`);
    const good = { poolHost: "alice", dataset: volume.dataset, mountpoint: volume.mountpoint, epoch: "1" };
    expect(await code(stage(bob, volume, staging, { ...good, poolHost: "mallory" }))).toBe(status.FAILED_PRECONDITION);
    expect(await code(stage(bob, volume, staging, { ...good, dataset: env.parent }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(stage(bob, volume, staging, { ...good, mountpoint: "/etc" }))).toBe(status.INVALID_ARGUMENT);
    expect(await mountOf(staging)).toBeUndefined();
  });

  it("stages a volume without publish_context from its birth host, as before publishing existed", async () => {
    const volume = await env.createVolume(uniqueName("pvc-legacy"), 32 * MiB);
    const local = await alice.stagingPath(`${volume.volumeId.split("/").pop()}-legacy`);
    await stage(alice, volume, local, undefined);
    expect((await mountOf(local))?.source).toBe(volume.dataset);
    const remote = await bob.stagingPath(`${volume.volumeId.split("/").pop()}-legacy`);
    await stage(bob, volume, remote, undefined);
    expect((await mountOf(remote))?.source).toBe(`${env.sshd.user}@${env.netns.hostAddress}:${volume.mountpoint}`);
    // A stage record written by an older version has no host: unstage falls back to the birth host.
    const records = join(bob.stateDir, "staged");
    for (const name of await readdir(records)) {
      const path = join(records, name);
      const record = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
      if (record.volumeId !== volume.volumeId) continue;
      delete record.poolHost;
      delete record.dataset;
      await writeFile(path, JSON.stringify(record));
    }
    await unstage(bob, volume, remote);
    await unstage(alice, volume, local);
    expect(await mountOf(remote)).toBeUndefined();
    expect(await mountOf(local)).toBeUndefined();
  });

  it("keeps a single-node-writer volume on one node: a second node is FAILED_PRECONDITION and nothing changes", async () => {
    const volume = await env.createVolume(uniqueName("pvc-rwo"), 32 * MiB);
    await controllerPublish(volume, "alice", "SINGLE_NODE_WRITER");
    expect(await code(controllerPublish(volume, "bob", "SINGLE_NODE_WRITER"))).toBe(status.FAILED_PRECONDITION);
    expect(await publishedTo(volume)).toBe("alice:snw");
    // The same node again is idempotent; with another readonly flag it is ALREADY_EXISTS.
    expect((await controllerPublish(volume, "alice", "SINGLE_NODE_WRITER")).publishContext.poolHost).toBe("alice");
    expect(await code(controllerPublish(volume, "alice", "SINGLE_NODE_WRITER", true))).toBe(status.ALREADY_EXISTS);
    expect(await publishedTo(volume)).toBe("alice:snw");
    // Once alice lets go, bob may have it.
    await controllerUnpublish(volume.volumeId, "alice");
    await controllerPublish(volume, "bob", "SINGLE_NODE_WRITER");
    expect(await publishedTo(volume)).toBe("bob:snw");
  });

  it("publishes a multi-node volume on several nodes and records each", async () => {
    const volume = await env.createVolume(uniqueName("pvc-rwx"), 32 * MiB);
    await controllerPublish(volume, "bob");
    await controllerPublish(volume, "alice");
    await controllerPublish(volume, "carol", "MULTI_NODE_MULTI_WRITER", true);
    expect(await publishedTo(volume)).toBe("alice:mnmw,bob:mnmw,carol:mnmw:ro");
    // Unpublishing from every node at once (no node_id).
    await env.controller.controllerUnpublishVolume({ volumeId: volume.volumeId });
    expect(await publishedTo(volume)).toBe("-");
  });

  it("unpublishes idempotently: twice is OK, and so is a node that never had it", async () => {
    const volume = await env.createVolume(uniqueName("pvc-unpub"), 32 * MiB);
    await controllerPublish(volume, "bob");
    expect(await code(controllerUnpublish(volume.volumeId, "bob"))).toBe(status.OK);
    expect(await code(controllerUnpublish(volume.volumeId, "bob"))).toBe(status.OK);
    expect(await code(controllerUnpublish(volume.volumeId, "dave"))).toBe(status.OK);
    expect(await publishedTo(volume)).toBe("-");
  });

  it("answers NOT_FOUND for a volume that does not exist, and OK when unpublishing it", async () => {
    const name = uniqueName("pvc-ghost");
    const ghost: TestVolume = { volumeId: `alice:${env.parent}/${name}`, volumeContext: {}, dataset: `${env.parent}/${name}`, mountpoint: join(env.mountRoot, name) };
    expect(await code(controllerPublish(ghost, "bob"))).toBe(status.NOT_FOUND);
    expect(await code(env.controller.controllerPublishVolume({ volumeId: "nohost:tank/x", nodeId: "bob", volumeCapability: cap("SINGLE_NODE_WRITER") }))).toBe(status.NOT_FOUND);
    expect(await code(controllerUnpublish(ghost.volumeId, "bob"))).toBe(status.OK);
    expect(await code(controllerUnpublish("nohost:tank/x", "bob"))).toBe(status.OK);
  });

  it("refuses bad requests with INVALID_ARGUMENT (or NOT_FOUND for a node id that cannot be a node) and records nothing", async () => {
    const volume = await env.createVolume(uniqueName("pvc-badreq"), 32 * MiB);
    const base = { volumeId: volume.volumeId, nodeId: "bob", volumeCapability: cap("SINGLE_NODE_WRITER") };
    expect(await code(env.controller.controllerPublishVolume({ ...base, volumeId: "" }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.controller.controllerPublishVolume({ ...base, nodeId: "" }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.controller.controllerPublishVolume({ ...base, volumeCapability: null }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.controller.controllerPublishVolume({ ...base, volumeCapability: { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } } }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.controller.controllerPublishVolume({ ...base, volumeContext: { poolHost: "bob" } }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(env.controller.controllerPublishVolume({ ...base, nodeId: "no,such:node" }))).toBe(status.NOT_FOUND);
    expect(await code(env.controller.controllerUnpublishVolume({ volumeId: "", nodeId: "bob" }))).toBe(status.INVALID_ARGUMENT);
    expect(await publishedTo(volume)).toBe("-");
  });
});
