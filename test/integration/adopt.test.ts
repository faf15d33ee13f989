/**
 * `zcsi adopt` on a real pool (issue 16 item 2): datasets the operator made, outside zcsi's
 * parent, adopted as PVs (Kubernetes through the API fake), then served by the real controller
 * and nodes: bound on the pool host, SSHFS from a node in its own network namespace,
 * read-only everywhere for a read-only adoption, and never destroyed by DeleteVolume.
 */
import { status } from "@grpc/grpc-js";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { kubeConfigFor } from "../../src/k8s/client.js";
import { KubeAdoptionApi } from "../../src/k8s/kube-adopt.js";
import { isReadOnly, mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { adopt, type AdoptFlags } from "../../src/roles/adopt.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import { grpcCode } from "../harness/csi-client.js";
import { startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";
import { POOL_HOST, RWX, startNodeEnv, type NodeEnv, type NodeHandle, type RemoteNode } from "../harness/node-env.js";

const RO = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "MULTI_NODE_READER_ONLY" as const } };

let env: NodeEnv;
let api: FakeApiServer;
let hosts: PoolHosts;
let bob: RemoteNode;
let apps: string;
const logger = pino({ level: "silent" });

beforeAll(async () => {
  env = await startNodeEnv({ adoptRoots: (pool) => [`${pool}/apps`] });
  api = await startFakeApiServer();
  hosts = connectPoolHosts(env.controllerConfig, logger);
  apps = `${env.pool.pool}/apps`;
  // What an operator had before zcsi: datasets with data in them, mounted where hostPath pointed.
  for (const ds of [apps, `${apps}/mysql`, `${apps}/shared`, `${apps}/novix`, `${env.pool.pool}/other`]) await env.zfs("create", ds);
  await writeFile(join(env.pool.mountRoot, "apps", "mysql", "ibdata1"), "rows\n");
  await writeFile(join(env.pool.mountRoot, "apps", "shared", "README"), "shared\n");
  bob = await env.startRemoteNode("bob");
}, 240_000);

afterAll(async () => {
  await hosts?.close();
  await api?.close();
  await env?.stop();
}, 180_000);

const output: string[] = [];
function run(flags: AdoptFlags): Promise<number> {
  return adopt(env.controllerConfig, flags, { hosts, api: new KubeAdoptionApi(kubeConfigFor(api.url, { skipTLSVerify: true })), logger }, (t) => output.push(t));
}

async function refusal(flags: AdoptFlags): Promise<string> {
  try {
    await run(flags);
  } catch (err) {
    if (isZcsiError(err)) return `${err.kind}: ${err.message}`;
    throw err;
  }
  throw new Error(`adopt ${flags.dataset} was not refused`);
}

const mark = async (dataset: string): Promise<string> => (await env.zfs("get", "-H", "-o", "value,source", "zcsi:adopted", dataset)).trim();

const code = grpcCode;

/** ControllerPublish then NodeStage + NodePublish on `node`, as the attacher and kubelet do. */
async function mountOn(node: NodeHandle, volumeId: string, volumeContext: Record<string, string>, pod: string, cap: typeof RWX | typeof RO, readonly = false) {
  const published = await env.controller.controllerPublishVolume({ volumeId, nodeId: node.name, volumeCapability: cap, readonly, volumeContext });
  const publishContext = published.publishContext ?? {};
  const stagingTargetPath = await node.stagingPath(`${pod}-vol`);
  await node.client.nodeStageVolume({ volumeId, stagingTargetPath, volumeCapability: cap, volumeContext, publishContext });
  const targetPath = await node.targetPath(pod);
  await node.client.nodePublishVolume({ volumeId, stagingTargetPath, targetPath, volumeCapability: cap, readonly, volumeContext, publishContext });
  return { publishContext, stagingTargetPath, targetPath };
}

describe("zcsi adopt on a real pool", () => {
  it("adopts a dataset below adoptRoots: marks it, and the PV names its real mountpoint", async () => {
    expect(await run({ dataset: `${apps}/mysql`, pvc: "db/mysql" })).toBe(0);
    expect(await mark(`${apps}/mysql`)).toBe("read-write\tlocal");
    const pv = [...api.pvs.values()].find((p) => JSON.stringify(p).includes(`${apps}/mysql#adopted`)) as unknown as { spec: { csi: { volumeAttributes: Record<string, string> }; persistentVolumeReclaimPolicy: string } };
    expect(pv.spec.csi.volumeAttributes).toMatchObject({ poolHost: POOL_HOST, dataset: `${apps}/mysql`, mountpoint: join(env.pool.mountRoot, "apps", "mysql") });
    expect(pv.spec.persistentVolumeReclaimPolicy).toBe("Retain");
  });

  it("refuses, marking nothing: outside adoptRoots, the pool's root, the adopt root itself, zcsi's parent, a volume of zcsi, a dataset already adopted", async () => {
    const volume = await env.createVolume("pvc-owned", 16 << 20);
    const cases: [string, RegExp][] = [
      [`${env.pool.pool}/other`, /not below any of pool host alice's adoptRoots/],
      [env.pool.pool, /pool's root/],
      [apps, /not below any/],
      [env.parent, /zcsi's own parent dataset/],
      [volume.dataset, /inside .*zcsi's own parent dataset/],
      [`${apps}/mysql`, /already adopts it for db\/mysql; nothing was changed/],
    ];
    const posts = api.requests.filter((r) => r.method === "POST").length;
    for (const [dataset, message] of cases) {
      expect(await refusal({ dataset, pvc: "other/x", host: POOL_HOST })).toMatch(message);
      if (dataset !== `${apps}/mysql`) expect((await mark(dataset)).split("\t")[1], dataset).not.toBe("local");
    }
    expect(api.requests.filter((r) => r.method === "POST").length).toBe(posts);
  });

  it("serves an adopted dataset: bind on the pool host, SSHFS on another node, both see and write the operator's files", async () => {
    const volumeId = `${POOL_HOST}:${apps}/mysql#adopted`;
    const context = { poolHost: POOL_HOST, dataset: `${apps}/mysql`, mountpoint: join(env.pool.mountRoot, "apps", "mysql"), placement: "adopted" };
    const got = await env.controller.controllerGetVolume({ volumeId });
    expect(got.volume?.volumeContext).toEqual(context);
    const local = await mountOn(env.local, volumeId, context, "pod-local", RWX);
    expect(local.publishContext.mountpoint).toBe(context.mountpoint);
    const mounts = await readMountInfo();
    expect(mountAt(mounts, local.stagingTargetPath)?.fsType).not.toMatch(/sshfs/);
    expect(await readFile(join(local.targetPath, "ibdata1"), "utf8")).toBe("rows\n");
    const remote = await mountOn(bob, volumeId, context, "pod-remote", RWX);
    expect(mountAt(await readMountInfo(), remote.stagingTargetPath)?.fsType).toMatch(/sshfs/);
    expect(await readFile(join(remote.targetPath, "ibdata1"), "utf8")).toBe("rows\n");
    await writeFile(join(remote.targetPath, "from-bob"), "hi\n");
    expect(await readFile(join(env.pool.mountRoot, "apps", "mysql", "from-bob"), "utf8")).toBe("hi\n");
  });

  it("VolumeSnapshots of an adopted volume: ZFS snapshots of the dataset; DeleteSnapshot removes only those zcsi took", async () => {
    const volumeId = `${POOL_HOST}:${apps}/mysql#adopted`;
    await env.zfs("snapshot", `${apps}/mysql@nightly-1`); // the operator's own, from before zcsi
    const made = await env.controller.createSnapshot({ name: "snapshot-4d2a", sourceVolumeId: volumeId, parameters: {} });
    expect(made.snapshot).toMatchObject({ snapshotId: `${volumeId}@snapshot-4d2a`, sourceVolumeId: volumeId, readyToUse: true });
    expect((await env.controller.createSnapshot({ name: "snapshot-4d2a", sourceVolumeId: volumeId, parameters: {} })).snapshot?.snapshotId).toBe(made.snapshot?.snapshotId);
    const snapshots = async (): Promise<string[]> => (await env.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-r", `${apps}/mysql`)).trim().split("\n").sort();
    expect(await snapshots()).toEqual([`${apps}/mysql@nightly-1`, `${apps}/mysql@snapshot-4d2a`]);
    expect(await code(env.controller.createSnapshot({ name: "nightly-1", sourceVolumeId: volumeId, parameters: {} }))).toBe(status.ALREADY_EXISTS);
    expect(await code(env.controller.deleteSnapshot({ snapshotId: `${volumeId}@nightly-1` }))).toBe(status.FAILED_PRECONDITION);
    expect(await code(env.controller.deleteSnapshot({ snapshotId: made.snapshot!.snapshotId }))).toBe(status.OK);
    expect(await code(env.controller.deleteSnapshot({ snapshotId: made.snapshot!.snapshotId }))).toBe(status.OK);
    expect(await snapshots()).toEqual([`${apps}/mysql@nightly-1`]);
  });

  it("adopts one dataset read-only into two namespaces; every mount of either is read-only, bind and SSHFS", async () => {
    expect(await run({ dataset: `${apps}/shared`, pvc: "team-a/shared", readOnly: true })).toBe(0);
    expect(await run({ dataset: `${apps}/shared`, pvc: "team-b/shared", readOnly: true })).toBe(0);
    expect(await refusal({ dataset: `${apps}/shared`, pvc: "team-c/shared" })).toMatch(/read-write adoption needs it alone/);
    const context = { poolHost: POOL_HOST, dataset: `${apps}/shared`, mountpoint: join(env.pool.mountRoot, "apps", "shared"), placement: "adopted" };
    // Even a request that does not ask for read-only gets it: the id says the adoption is read-only.
    const a = await mountOn(env.local, `${POOL_HOST}:${apps}/shared#adopted-ro-team-a`, context, "pod-ro-a", RWX);
    const b = await mountOn(bob, `${POOL_HOST}:${apps}/shared#adopted-ro-team-b`, context, "pod-ro-b", RO, true);
    expect(a.publishContext.readonly).toBe("true");
    // A read-only adoption changes nothing on the dataset, snapshots included.
    expect(await code(env.controller.createSnapshot({ name: "snapshot-ro", sourceVolumeId: `${POOL_HOST}:${apps}/shared#adopted-ro-team-a`, parameters: {} }))).toBe(status.INVALID_ARGUMENT);
    const mounts = await readMountInfo();
    for (const m of [a, b]) {
      const target = mountAt(mounts, m.targetPath);
      expect(target && isReadOnly(target), m.targetPath).toBe(true);
      expect(await readFile(join(m.targetPath, "README"), "utf8")).toBe("shared\n");
      await expect(writeFile(join(m.targetPath, "nope"), "x")).rejects.toThrow(/EROFS|read-only/i);
    }
  });

  it("DeleteVolume of an adopted volume destroys nothing, whatever asks; expansion is refused with INVALID_ARGUMENT", async () => {
    await run({ dataset: `${apps}/novix`, pvc: "apps/novix" });
    await writeFile(join(env.pool.mountRoot, "apps", "novix", "data"), "keep\n");
    const before = await env.zfs("list", "-H", "-o", "name", "-r", apps);
    for (const volumeId of [`${POOL_HOST}:${apps}/novix#adopted`, `${POOL_HOST}:${apps}/shared#adopted-ro-team-a`, `${POOL_HOST}:${apps}/novix#adopted-ro-x`]) {
      expect(await code(env.controller.deleteVolume({ volumeId })), volumeId).toBe(status.OK);
    }
    expect(await env.zfs("list", "-H", "-o", "name", "-r", apps)).toBe(before);
    expect(await readFile(join(env.pool.mountRoot, "apps", "novix", "data"), "utf8")).toBe("keep\n");
    expect(await mark(`${apps}/novix`)).toBe("read-write\tlocal");
    expect(await code(env.controller.controllerExpandVolume({ volumeId: `${POOL_HOST}:${apps}/novix#adopted`, capacityRange: { requiredBytes: String(1 << 30) } }))).toBe(status.INVALID_ARGUMENT);
    expect((await env.zfs("get", "-H", "-o", "value", "refquota", `${apps}/novix`)).trim()).toMatch(/^(none|0)$/);
  });

  it("an id the config does not allow, or a dataset without the adoption mark, is NOT_FOUND", async () => {
    expect(await code(env.controller.controllerGetVolume({ volumeId: `${POOL_HOST}:${env.pool.pool}/other#adopted` }))).toBe(status.NOT_FOUND);
    await env.zfs("create", `${apps}/unmarked`);
    expect(await code(env.controller.controllerGetVolume({ volumeId: `${POOL_HOST}:${apps}/unmarked#adopted` }))).toBe(status.NOT_FOUND);
    expect(await code(env.controller.controllerPublishVolume({ volumeId: `${POOL_HOST}:${apps}/unmarked#adopted`, nodeId: "bob", volumeCapability: RWX, readonly: false, volumeContext: {} }))).toBe(status.NOT_FOUND);
  });
});
