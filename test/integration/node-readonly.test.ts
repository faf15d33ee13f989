import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ZcsiError } from "../../src/errors.js";
import type { ExecOptions, ExecResult, Executor } from "../../src/exec/executor.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { Mounter } from "../../src/mount/mounter.js";
import { isReadOnly, mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { VolumeMounts, type NodeVolume } from "../../src/mount/volume-mounts.js";
import { POOL_HOST, RWX, SFTP_SERVER, startNodeEnv, uniqueName, type NodeEnv } from "../harness/node-env.js";

/**
 * Read-only is enforced or the publish fails (issue 13 item 2): a failure between the bind and
 * the read-only remount leaves nothing mounted at the target, and when even that cleanup
 * fails the error says so instead of being dropped.
 */

/** Runs commands locally, except those `fails` picks, which exit 32 as a failing mount(8) would. */
class FailingExecutor implements Executor {
  readonly host = POOL_HOST;
  private readonly inner = new LocalExecutor({ host: POOL_HOST });
  fails: (argv: readonly string[]) => boolean = () => false;

  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    if (this.fails(argv)) return { stdout: "", stderr: `${argv[0]}: injected failure`, exitCode: 32 };
    return this.inner.run(argv, options);
  }

  stream(argv: readonly string[]): ReturnType<Executor["stream"]> {
    return this.inner.stream(argv);
  }

  async close(): Promise<void> {}
}

const isRemount = (argv: readonly string[]): boolean => argv[0] === "mount" && (argv[2] ?? "").startsWith("remount");
const isUmount = (argv: readonly string[]): boolean => argv[0] === "umount";

let env: NodeEnv;
let stateDir: string;
const exec = new FailingExecutor();
let mounts: VolumeMounts;

beforeAll(async () => {
  env = await startNodeEnv();
  stateDir = await mkdtemp(join(tmpdir(), "zcsi-ro-state-"));
  const logger = pino({ level: "silent" });
  mounts = new VolumeMounts(
    env.nodeConfig.poolHosts,
    new Mounter(exec, logger),
    { nodeId: POOL_HOST, stateDir, privateKeyFile: env.nodeKeyPath, sudoPath: "/usr/bin/sudo", sftpServerPath: SFTP_SERVER, probeTimeoutMs: 10_000 },
    logger,
  );
  await mounts.init();
}, 180_000);

afterAll(async () => {
  await env?.stop();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
}, 180_000);

async function stagedVolume(): Promise<{ volume: NodeVolume; stagingPath: string; targetPath: string }> {
  const name = uniqueName("ro");
  const created = await env.createVolume(name, 16 << 20);
  const host = env.nodeConfig.poolHosts[0]!;
  const volume: NodeVolume = { id: created.volumeId, host, dataset: created.dataset, mountpoint: created.mountpoint, local: true };
  const stagingPath = await env.local.stagingPath(name);
  exec.fails = () => false;
  await mounts.stage(volume, stagingPath, {});
  return { volume, stagingPath, targetPath: await env.local.targetPath(name) };
}

async function rejection(promise: Promise<unknown>): Promise<ZcsiError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ZcsiError) return err;
    throw err;
  }
  throw new Error("expected the call to fail");
}

describe("read-only publish", () => {
  it("when the read-only remount fails, the call fails and nothing stays mounted at the target", async () => {
    const { volume, stagingPath, targetPath } = await stagedVolume();
    exec.fails = isRemount;
    const err = await rejection(mounts.publish(volume, stagingPath, targetPath, { readOnly: true, bindFlags: [] }));
    expect(err.message).toMatch(/remount of .* failed: mount: injected failure/);
    expect(mountAt(await readMountInfo(), targetPath)).toBeUndefined();
    // With the remount working again, the retry publishes read-only.
    exec.fails = () => false;
    expect(await mounts.publish(volume, stagingPath, targetPath, { readOnly: true, bindFlags: [] })).toBe("published");
    const published = mountAt(await readMountInfo(), targetPath);
    expect(published && isReadOnly(published)).toBe(true);
  });

  it("when the remount and the cleanup unmount both fail, the error says both and that a read-write bind is left", async () => {
    const { volume, stagingPath, targetPath } = await stagedVolume();
    exec.fails = (argv) => isRemount(argv) || isUmount(argv);
    const err = await rejection(mounts.publish(volume, stagingPath, targetPath, { readOnly: true, bindFlags: [] }));
    expect(err.kind).toBe("Internal");
    expect(err.message).toMatch(/remount of .* failed: mount: injected failure/);
    expect(err.message).toMatch(/removing its bind failed too \(unmount of .* failed: umount: injected failure/);
    expect(err.message).toContain(`${targetPath} still holds a read-write bind`);
    // What the message says is what the mount table shows; then clean up for real.
    const left = mountAt(await readMountInfo(), targetPath);
    expect(left && isReadOnly(left)).toBe(false);
    exec.fails = () => false;
    await mounts.unpublish(volume, targetPath);
    expect(mountAt(await readMountInfo(), targetPath)).toBeUndefined();
  });
});

describe("node /metrics", () => {
  it("serves zcsi_command_duration_seconds for the mount commands of a stage and publish", async () => {
    const name = uniqueName("metrics");
    const volume = await env.createVolume(name, 16 << 20);
    const stagingTargetPath = await env.local.stagingPath(name);
    const targetPath = await env.local.targetPath(name);
    await env.local.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath, volumeCapability: RWX, volumeContext: volume.volumeContext });
    await env.local.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath, targetPath, volumeCapability: RWX, volumeContext: volume.volumeContext, readonly: true });
    const port = env.local.server.metricsPort;
    expect(port).toBeGreaterThan(0);
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toMatch(/^zcsi_command_duration_seconds_count\{host="alice",command="mount",outcome="ok"\} [1-9]\d*$/m);
    await env.local.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath });
    await env.local.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath });
  });
});
