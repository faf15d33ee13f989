/**
 * `zcsi migrate` on real pools (issue 14, item 3): pool hosts alice and bob (zfs-fuse pools
 * behind their own sshd on the veth address), node carol in a network namespace (a real
 * `zcsi node` process, SSHFS), the controller over gRPC, and the API fake standing in for
 * Kubernetes: the PV, the pod that uses its claim, the VolumeAttachment. The test plays kubelet
 * and the external-attacher when the pod is deleted (unstage, ControllerUnpublish, the
 * VolumeAttachment goes) and the restarted pod's attach afterwards (ControllerPublish, stage).
 * Every check is on the real system: file checksums through the SSHFS mount and on the pool
 * host, `zfs get` of roles and epochs, the mount's source in /proc/self/mountinfo.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubeConfigFor, KubeEventSink } from "../../src/k8s/client.js";
import { KubeEventRecorder } from "../../src/k8s/events.js";
import { KubeVolumeWorkloads } from "../../src/k8s/kube-mobility.js";
import { Migrator, type MigrateResult } from "../../src/mobility/migrate.js";
import type { MoveStep } from "../../src/mobility/steps.js";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { createReplicationEngine } from "../../src/replication/engine.js";
import { VOLUME_DISCOVERY_PROPS, volumeJobs } from "../../src/replication/jobs.js";
import { moveWiring } from "../../src/roles/move-wiring.js";
import { connectPoolHosts } from "../../src/roles/pool-hosts.js";
import { systemClock } from "../../src/util/clock.js";
import { packageRoot } from "../../src/util/package.js";
import { VolumeHomes } from "../../src/volumes/homes.js";
import type { PoolHosts } from "../../src/volumes/hosts.js";
import { zcsiRejection as failure } from "../harness/fake-pool-host.js";
import { k8sFixture, startFakeApiServer, type FakeApiServer, type WireObject } from "../harness/fake-k8s.js";
import { RWX, startNodeEnv, uniqueName, type ExtraPoolHost, type NodeEnv, type RemoteNode, type TestVolume } from "../harness/node-env.js";

const MiB = 1024 * 1024;
const logger = pino({ level: process.env["ZCSI_TEST_LOG"] ?? "silent" });

let env: NodeEnv;
let bob: ExtraPoolHost;
let carol: RemoteNode;
let api: FakeApiServer;
let hosts: PoolHosts;

beforeAll(async () => {
  env = await startNodeEnv({ morePoolHosts: ["bob"], poolSizeMiB: 256 });
  bob = env.morePoolHosts[0]!;
  carol = await env.startRemoteNode("carol");
  api = await startFakeApiServer();
  hosts = connectPoolHosts(env.controllerConfig, logger);
}, 300_000);

afterAll(async () => {
  await hosts?.close();
  await api?.close();
  await env?.stop();
});

function migrator(afterStep?: (step: MoveStep) => Promise<void>): Migrator {
  const kc = kubeConfigFor(api.url, { skipTLSVerify: true });
  const homes = new VolumeHomes(hosts, logger);
  return new Migrator({
    hosts,
    homes,
    engine: createReplicationEngine(hosts, { logger }),
    ...moveWiring(kc, "zcsi-system", "migrate-test", hosts, logger),
    workloads: new KubeVolumeWorkloads(kc),
    driverName: env.controllerConfig.driverName,
    events: new KubeEventRecorder(new KubeEventSink(kc), { clock: systemClock, logger, component: "zcsi-migrate", instance: "test" }),
    clock: systemClock,
    logger,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    ...(afterStep && { afterStep }),
  });
}

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

async function code(p: Promise<unknown>): Promise<{ code: status; details: string }> {
  try {
    await p;
    return { code: status.OK, details: "" };
  } catch (err) {
    return { code: (err as ServiceError).code, details: (err as ServiceError).details };
  }
}


async function zfsGet(host: "alice" | "bob", dataset: string, property: string): Promise<string> {
  const r = await (host === "alice" ? env.pool : bob.pool).exec.run(["zfs", "get", "-H", "-o", "value", property, dataset]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

/** A volume on alice, replicated to bob, staged on carol over SSHFS and written there; its PV, pod and VolumeAttachment in the API fake. */
async function volumeInUse(prefix: string) {
  const name = uniqueName(prefix);
  const volume = await env.createVolume(name, 64 * MiB, { poolHost: "alice", replicateTo: "bob" });
  const staging = await carol.stagingPath(name);
  const attach = async (): Promise<Record<string, string>> => {
    const { publishContext } = await env.controller.controllerPublishVolume({ volumeId: volume.volumeId, nodeId: "carol", volumeCapability: RWX, readonly: false, volumeContext: volume.volumeContext });
    await carol.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext: volume.volumeContext, publishContext });
    return publishContext;
  };
  await attach();
  const files = new Map<string, string>();
  const write = async (file: string, bytes: number): Promise<void> => {
    const data = randomBytes(bytes);
    await writeFile(join(staging, file), data);
    files.set(file, sha256(data));
  };
  for (let i = 0; i < 4; i++) await write(`before-${i}.bin`, 2 * MiB);
  const pv = k8sFixture("pv");
  api.pvs.set(name, { ...pv, metadata: { ...pv.metadata, name }, spec: { ...(pv.spec as object), claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", name: `data-${name}`, namespace: "apps" } } } as WireObject);
  const pod = k8sFixture("pod-using-pvc");
  api.pods.set(`apps/${name}-0`, { ...pod, metadata: { ...pod.metadata, name: `${name}-0`, namespace: "apps" }, spec: { ...(pod.spec as object), nodeName: "carol", volumes: [{ name: "data", persistentVolumeClaim: { claimName: `data-${name}` } }] } } as WireObject);
  const va = k8sFixture("volumeattachment");
  api.volumeAttachments.set(`csi-${name}`, { ...va, metadata: { ...va.metadata, name: `csi-${name}` }, spec: { attacher: env.controllerConfig.driverName, nodeName: "carol", source: { persistentVolumeName: name } } } as WireObject);
  /** kubelet and the attacher when the pod goes: the pod's last write, unstage, ControllerUnpublish, the VolumeAttachment removed. */
  const detach = async (): Promise<void> => {
    await write("last-write.bin", 1 * MiB);
    await carol.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging });
    await env.controller.controllerUnpublishVolume({ volumeId: volume.volumeId, nodeId: "carol" });
    api.volumeAttachments.delete(`csi-${name}`);
  };
  /** Every file's checksum as read through carol's current mount. */
  const checksums = async (): Promise<Map<string, string>> => new Map(await Promise.all([...files.keys()].map(async (f) => [f, sha256(await readFile(join(staging, f)))] as const)));
  return { name, volume, staging, files, write, attach, detach, checksums };
}

function bobDataset(volume: TestVolume): string {
  return `${bob.parent}/${volume.dataset.split("/").pop()}`;
}

describe("zcsi migrate VOLUME --to bob", () => {
  it("moves a volume in use to bob: the pod restarted, every file identical, writes after land on bob, replication runs bob → alice", async () => {
    const v = await volumeInUse("pvc-mig");
    let refusedWhileMoving: { code: status; details: string } | undefined;
    api.onPodDeleted = async () => {
      // The restarted pod's attach while the volume moves: refused, retried by the attacher.
      refusedWhileMoving = await code(env.controller.controllerPublishVolume({ volumeId: v.volume.volumeId, nodeId: "carol", volumeCapability: RWX, readonly: false, volumeContext: v.volume.volumeContext }));
      await v.detach();
    };
    const result: MigrateResult = await migrator().migrate(v.volume.volumeId, "bob", { pollMs: 100 });
    api.onPodDeleted = undefined;

    expect(refusedWhileMoving).toEqual({ code: status.UNAVAILABLE, details: expect.stringContaining("is moving to bob") });
    expect(result).toMatchObject({ to: `bob:${bobDataset(v.volume)}`, epoch: 2, restartedPods: [`apps/${v.name}-0`], resumed: false });
    expect(result.finalBytes).toBeGreaterThan(1 * MiB); // the pod's last write went in the final increment
    expect(result.downtimeMs).toBeGreaterThan(0);
    expect(api.pods.has(`apps/${v.name}-0`)).toBe(false);
    // ZFS says who is home.
    expect(await zfsGet("bob", bobDataset(v.volume), "zcsi:role")).toBe("primary");
    expect(await zfsGet("bob", bobDataset(v.volume), "zcsi:epoch")).toBe("2");
    expect(await zfsGet("alice", v.volume.dataset, "zcsi:role")).toBe("replica");
    expect(await zfsGet("alice", v.volume.dataset, "zcsi:replica-of")).toBe(`bob:${bobDataset(v.volume)}`);
    expect(await zfsGet("alice", v.volume.dataset, "zcsi:moving")).toBe("-");
    expect(await zfsGet("bob", bobDataset(v.volume), "zcsi:moving")).toBe("-");
    // The Event on the PV.
    const event = api.requests.find((r) => r.method === "POST" && r.path.endsWith("/events") && (r.body as { reason?: string }).reason === "VolumeMigrated");
    expect((event?.body as { message: string; involvedObject: { name: string } }).involvedObject.name).toBe(v.name);

    // The restarted pod attaches: to bob now, over SSHFS from bob's sshd; every file identical.
    const context = await v.attach();
    expect(context).toMatchObject({ poolHost: "bob", dataset: bobDataset(v.volume), epoch: "2" });
    expect(mountAt(await readMountInfo(), v.staging)).toMatchObject({ fsType: "fuse.sshfs", source: `${bob.sshd.user}@${env.netns.hostAddress}:${context.mountpoint}` });
    expect(await v.checksums()).toEqual(v.files);
    await v.write("after.bin", 1 * MiB);
    expect(sha256(await readFile(join(context.mountpoint!, "after.bin")))).toBe(v.files.get("after.bin"));

    // Replication runs the other way: the replicator's discovery finds bob → alice, and it runs.
    const bobConfig = env.controllerConfig.poolHosts.find((h) => h.name === "bob")!;
    const discovered = volumeJobs(bobConfig, await hosts.get("bob").zfs.get([bob.parent], VOLUME_DISCOVERY_PROPS, { depth: 1 }), env.controllerConfig.poolHosts);
    const job = discovered.jobs.find((j) => j.job.source.dataset === bobDataset(v.volume))?.job;
    expect(job).toMatchObject({ source: { host: "bob" }, target: { host: "alice", dataset: v.volume.dataset } });
    const run = await createReplicationEngine(hosts, { logger }).replicate(job!);
    expect(run.action).toBe("incremental");
    expect(await zfsGet("alice", `${v.volume.dataset}@${run.snapshot}`, "guid")).toBe(await zfsGet("bob", `${bobDataset(v.volume)}@${run.snapshot}`, "guid"));

    await carol.client.nodeUnstageVolume({ volumeId: v.volume.volumeId, stagingTargetPath: v.staging });
    await env.controller.controllerUnpublishVolume({ volumeId: v.volume.volumeId, nodeId: "carol" });
  });

  it.each(["detached", "promoted"] as const)("killed after step %s, a rerun finishes the move: one primary, all data", async (killAt) => {
    const v = await volumeInUse(`pvc-kill-${killAt}`);
    api.onPodDeleted = () => v.detach();
    const kill = async (step: MoveStep): Promise<void> => {
      if (step === killAt) throw new Error(`killed after ${step}`);
    };
    await expect(migrator(kill).migrate(v.volume.volumeId, "bob", { pollMs: 100 })).rejects.toThrow(`killed after ${killAt}`);
    api.onPodDeleted = undefined;
    // Meanwhile: exactly one live primary, and no attach anywhere (the restarted pod waits).
    const between = await new VolumeHomes(hosts, logger).find(v.volume.volumeId);
    expect(between.live).toHaveLength(1);
    expect((await code(env.controller.controllerPublishVolume({ volumeId: v.volume.volumeId, nodeId: "carol", volumeCapability: RWX, readonly: false, volumeContext: v.volume.volumeContext }))).code).toBe(status.UNAVAILABLE);

    const result = await migrator().migrate(v.volume.volumeId, "bob", { pollMs: 100 });
    expect(result).toMatchObject({ epoch: 2, resumed: true });
    const after = await new VolumeHomes(hosts, logger).find(v.volume.volumeId);
    expect(after.live.map((c) => c.host)).toEqual(["bob"]);
    expect(after.replicas.map((c) => c.host)).toEqual(["alice"]);
    const context = await v.attach();
    expect(context.poolHost).toBe("bob");
    expect(await v.checksums()).toEqual(v.files);
    await carol.client.nodeUnstageVolume({ volumeId: v.volume.volumeId, stagingTargetPath: v.staging });
    await env.controller.controllerUnpublishVolume({ volumeId: v.volume.volumeId, nodeId: "carol" });
  });

  it("refuses a host that is not configured, the current home and an unknown volume, and changes nothing", async () => {
    const volume = await env.createVolume(uniqueName("pvc-refuse"), 32 * MiB, { poolHost: "alice" });
    const m = migrator();
    expect(await failure(m.migrate(volume.volumeId, "dave"))).toMatchObject({ kind: "InvalidArgument", message: expect.stringContaining('"dave"') });
    expect(await failure(m.migrate(volume.volumeId, "alice"))).toMatchObject({ kind: "InvalidArgument", message: expect.stringContaining("already lives on alice") });
    expect(await failure(m.migrate(`alice:${env.parent}/pvc-nothing-here`, "bob"))).toMatchObject({ kind: "NotFound" });
    expect(await zfsGet("alice", volume.dataset, "zcsi:moving")).toBe("-");
    expect(await zfsGet("alice", volume.dataset, "zcsi:role")).toBe("primary");
    expect((await bob.pool.exec.run(["zfs", "list", bobDataset(volume)])).exitCode).not.toBe(0);
  });

  it("the CLI: zcsi migrate prints the downtime and the final increment's bytes; zcsi drain alice moves what is left there", async () => {
    const one = await env.createVolume(uniqueName("pvc-cli"), 32 * MiB, { poolHost: "alice" });
    const two = await env.createVolume(uniqueName("pvc-cli"), 32 * MiB, { poolHost: "alice" });
    await writeFile(join(one.mountpoint, "data.txt"), "moved by the CLI\n");
    const configPath = join(env.dir, "migrate-config.json");
    const { privateKeyFile, poolHosts, commandTimeoutMs } = env.controllerConfig;
    await writeFile(configPath, JSON.stringify({ privateKeyFile, poolHosts, commandTimeoutMs }));
    // The fake API server through a kubeconfig, as `kubectl` would find it.
    const kubeconfig = join(env.dir, "kubeconfig.yaml");
    await writeFile(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: ${api.url}\n    insecure-skip-tls-verify: true\n` +
        `users:\n- name: fake\n  user:\n    token: fake\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n`,
    );
    const zcsi = (...args: string[]) =>
      promisify(execFile)(process.execPath, ["--import", "tsx", join(packageRoot, "src", "cli.ts"), ...args, "--config", configPath, "--lease-namespace", "zcsi-system"], {
        cwd: packageRoot,
        env: { ...process.env, KUBECONFIG: kubeconfig, ZCSI_LOG_LEVEL: "warn" },
        timeout: 120_000,
      });
    const migrated = await zcsi("migrate", one.volumeId, "--to", "bob");
    expect(migrated.stdout).toMatch(new RegExp(`^migrated ${one.volumeId}: alice:\\S+ -> bob:${bobDataset(one)} \\(epoch 2\\)\n  downtime \\(attaches blocked -> released\\): [0-9.]+ s\n  final increment: [0-9]+ bytes\n  pods restarted: none\n$`));
    expect(await readFile(join(bob.mountRoot, one.dataset.split("/").pop()!, "data.txt"), "utf8")).toBe("moved by the CLI\n");

    const refused = await zcsi("migrate", one.volumeId, "--to", "dave").catch((err: { code: number; stderr: string }) => err);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('no pool host named "dave"') });

    const drained = await zcsi("drain", "alice", "--parallel", "2");
    expect(drained.stdout).toContain(`migrated ${two.volumeId}`);
    expect(drained.stdout).toMatch(/drained alice: [0-9]+ moved, 0 not moved\n$/);
    const left = await new VolumeHomes(hosts, logger).find(two.volumeId);
    expect(left.home?.host).toBe("bob");
    expect(api.leases.size).toBe(0); // every move Lease released
  });
});
