/**
 * The container image, built from the Dockerfile with buildah (test/hosts/image/build.sh) and run
 * with podman the way deploy/ runs it:
 * - the controller as the image's non-root user (uid 1000), read-only root filesystem, no
 *   capabilities, with only the mounts deploy/base/controller.yaml gives it (config, SSH key
 *   Secret, socket dir), against a real pool host (zfs-fuse behind sshd);
 * - `zcsi status` run inside that container with no flags, as
 *   `kubectl exec deploy/zcsi-controller -c zcsi-controller -- zcsi status` does;
 * - the node plugin privileged, as root, with the node's network (here a network namespace
 *   standing in for another node), the host's PID namespace, /dev/fuse and the kubelet directory
 *   with Bidirectional (rshared) propagation, staging a volume over SSHFS.
 */
import { chmod, chown, copyFile, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountAt, readMountInfo } from "../../src/mount/mountinfo.js";
import { packageVersion } from "../../src/util/package.js";
import { CsiClient } from "../harness/csi-client.js";
import { POOL_HOST, RWX, startNodeEnv, uniqueName, waitFor, type NodeEnv } from "../harness/node-env.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { imageUnderTest, podman, podmanOk, runtimeFlags } from "../hosts/image/podman.js";

const MiB = 1024 * 1024;
/** The image's `node` user: Dockerfile USER, deploy/base/controller.yaml runAsUser/runAsGroup/fsGroup. */
const CONTROLLER_UID = 1000;
const local = new LocalExecutor();

let image: string;
let env: NodeEnv;
/** Host directories that stand in for the pod volumes of deploy/base. */
let dirs: { config: string; controllerKey: string; controllerCsi: string; serviceAccount: string; nodeKey: string; nodeCsi: string; nodeState: string; kubelet: string };
const containers: string[] = [];
let controller: CsiClient | undefined;

async function logsOf(name: string): Promise<string> {
  const r = await podman(["logs", name]);
  return r.stdout + r.stderr;
}

/** Starts a container and waits until its CSI socket answers Probe. */
async function startServing(name: string, runArgs: string[], socket: string): Promise<CsiClient> {
  containers.push(name);
  await podmanOk(["run", "-d", "--name", name, ...runtimeFlags(), ...runArgs]);
  const client = new CsiClient(`unix://${socket}`);
  try {
    await waitFor(`${name} to serve ${socket}`, async () => {
      const state = (await podmanOk(["inspect", "--format", "{{.State.Status}}", name])).trim();
      if (state !== "running") throw new Error(`${name} is ${state}: ${await logsOf(name)}`);
      return (await client.probe({})).ready?.value === true;
    }, 60_000);
  } catch (err) {
    client.close();
    throw new Error(`${String(err)}\n${await logsOf(name)}`);
  }
  return client;
}

function controllerRunArgs(name: string): string[] {
  return [
    "--user",
    `${CONTROLLER_UID}:${CONTROLLER_UID}`,
    "--read-only",
    // Kubernetes mounts no tmpfs on a read-only root; podman would (/tmp, /run, /var/tmp).
    "--read-only-tmpfs=false",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    // The controller pod's network reaches the pool hosts; here the pool host's sshd listens on
    // the host side of the test's veth pair.
    "--network",
    "host",
    "-v",
    `${dirs.config}:/etc/zcsi/config:ro`,
    "-v",
    `${dirs.controllerKey}:/etc/zcsi/ssh:ro`,
    "-v",
    `${dirs.controllerCsi}:/csi`,
    // What kubelet gives every pod of a ServiceAccount (automountServiceAccountToken): the
    // in-cluster config the operator commands find without a kubeconfig.
    "-v",
    `${dirs.serviceAccount}:/var/run/secrets/kubernetes.io/serviceaccount:ro`,
    "-e",
    "KUBERNETES_SERVICE_HOST=127.0.0.1",
    "-e",
    "KUBERNETES_SERVICE_PORT=6443",
    "-e",
    "ZCSI_CONFIG=/etc/zcsi/config/config.yaml",
    "-e",
    "ZCSI_LOG_LEVEL=info",
    image,
    "controller",
    "--endpoint=unix:///csi/csi.sock",
    `--driver-name=${name}.zcsi.dev`,
  ];
}

function nodeRunArgs(): string[] {
  return [
    "--privileged",
    "--user",
    "0",
    // hostNetwork of node "bob": the network namespace that stands in for another machine.
    "--network",
    `ns:${env.netns.path}`,
    "--pid",
    "host",
    "-v",
    "/dev/fuse:/dev/fuse",
    "-v",
    `${dirs.kubelet}:${dirs.kubelet}:rshared`,
    "-v",
    `${dirs.nodeState}:/var/lib/zcsi/node`,
    "-v",
    `${dirs.nodeCsi}:/csi`,
    "-v",
    `${dirs.config}:/etc/zcsi/config:ro`,
    "-v",
    `${dirs.nodeKey}:/etc/zcsi/node-ssh:ro`,
    "-e",
    "ZCSI_CONFIG=/etc/zcsi/config/config.yaml",
    "-e",
    "ZCSI_PRIVATE_KEY_FILE=/etc/zcsi/node-ssh/id_ed25519",
    "-e",
    "NODE_NAME=bob",
    image,
    "node",
    "--endpoint=unix:///csi/csi.sock",
    "--node-id=bob",
    "--state-dir=/var/lib/zcsi/node",
  ];
}

beforeAll(async () => {
  image = await imageUnderTest();
  env = await startNodeEnv();
  const d = (name: string): string => join(env.dir, name);
  dirs = { config: d("config"), controllerKey: d("controller-ssh"), controllerCsi: d("controller-csi"), serviceAccount: d("serviceaccount"), nodeKey: d("node-ssh"), nodeCsi: d("node-csi"), nodeState: d("node-state"), kubelet: d("kubelet") };
  for (const dir of Object.values(dirs)) await mkdir(dir, { recursive: true, mode: 0o755 });
  // The ConfigMap of deploy/base/config.yaml, for the test's pool host.
  const poolHost = { name: POOL_HOST, address: env.netns.hostAddress, port: env.sshd.port, user: env.sshd.user, sudo: true, parentDataset: env.parent, mountRoot: env.mountRoot, hostKey: env.sshd.hostKeyLine };
  await writeFile(join(dirs.config, "config.yaml"), JSON.stringify({ privateKeyFile: "/etc/zcsi/ssh/id_ed25519", commandTimeoutMs: 20_000, poolHosts: [poolHost] }));
  // The controller's key Secret: defaultMode 0440, group fsGroup 1000.
  await copyFile(env.sshd.privateKeyPath, join(dirs.controllerKey, "id_ed25519"));
  await chown(join(dirs.controllerKey, "id_ed25519"), 0, CONTROLLER_UID);
  await chmod(join(dirs.controllerKey, "id_ed25519"), 0o440);
  // The socket emptyDir, group-owned by fsGroup with the setgid bit, as kubelet makes it.
  await chown(dirs.controllerCsi, 0, CONTROLLER_UID);
  await chmod(dirs.controllerCsi, 0o2775);
  // The projected service-account volume (a token that is never used here: see the status test).
  for (const [file, text] of [["token", "test-token"], ["namespace", "zcsi"], ["ca.crt", ""]] as const) await writeFile(join(dirs.serviceAccount, file), text, { mode: 0o644 });
  // The node's SFTP-only key Secret: defaultMode 0400, root.
  await copyFile(env.nodeKeyPath, join(dirs.nodeKey, "id_ed25519"));
  await chmod(join(dirs.nodeKey, "id_ed25519"), 0o400);
  // /var/lib/kubelet is a shared mount on a node (Bidirectional propagation needs one).
  for (const argv of [["mount", "--bind", dirs.kubelet, dirs.kubelet], ["mount", "--make-rshared", dirs.kubelet]]) {
    const r = await local.run(argv, { timeoutMs: 10_000 });
    if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
  }
}, 1_800_000);

afterAll(async () => {
  controller?.close();
  for (const name of containers) await podman(["rm", "--force", "--time", "0", name]);
  // env.stop() unmounts everything below its dir (the kubelet dir and the SSHFS mounts in it).
  await env?.stop();
});

describe("the image", () => {
  it("prints the package version with `zcsi --version`", async () => {
    const r = await podmanOk(["run", "--rm", ...runtimeFlags(), image, "--version"]);
    expect(r.trim()).toBe(packageVersion);
  });

  it("runs the controller as uid 1000 on a read-only root, answering CreateVolume on its socket with a dataset on the pool host", async () => {
    const name = uniqueName("zcsi-image-ctl");
    controller = await startServing(name, controllerRunArgs(name), join(dirs.controllerCsi, "csi.sock"));
    // The process serving the socket: the image's user, not root.
    const pid = Number((await podmanOk(["inspect", "--format", "{{.State.Pid}}", name])).trim());
    const uids = (await readFile(`/proc/${pid}/status`, "utf8")).match(/^Uid:\s+(\d+)\s+(\d+)/m);
    expect(uids?.slice(1, 3)).toEqual([String(CONTROLLER_UID), String(CONTROLLER_UID)]);
    expect((await stat(join(dirs.controllerCsi, "csi.sock"))).uid).toBe(CONTROLLER_UID);

    const volumeName = uniqueName("pvc-image");
    const res = await controller.createVolume({ name: volumeName, capacityRange: { requiredBytes: String(32 * MiB) }, volumeCapabilities: [RWX] });
    expect(res.volume?.volumeId).toBe(`${POOL_HOST}:${env.parent}/${volumeName}`);
    expect((await env.zfs("get", "-H", "-o", "value", "refquota", `${env.parent}/${volumeName}`)).trim()).toBe("32M");
  });

  it("runs the operator commands inside the controller container with no flags: config and key from the pod's mounts", async () => {
    const name = containers.find((c) => c.startsWith("zcsi-image-ctl"));
    if (!name) throw new Error("the controller container did not start");
    // What `kubectl -n zcsi exec deploy/zcsi-controller -c zcsi-controller -- zcsi status` runs.
    const status = await podman(["exec", name, "zcsi", "status"]);
    expect(status.stderr).toBe("");
    expect(status.exitCode).toBe(0);
    expect(status.stdout).toContain(POOL_HOST);
    expect(status.stdout).toMatch(/pvc-image-[0-9a-f]{6}/);
    // failover loads the in-cluster config and the pool hosts; a volume already served by the
    // host asked for needs no Kubernetes call, so this shows the command runs here, not the API.
    const volumeId = status.stdout.match(/pvc-image-[0-9a-f]{6}/)?.[0];
    const failover = await podman(["exec", name, "zcsi", "failover", `${POOL_HOST}:${env.parent}/${volumeId}`, "--to", POOL_HOST]);
    expect(failover.stdout).toContain("already served by alice");
    expect(failover.exitCode).toBe(0);
  });

  it("runs the node privileged: stages over SSHFS from inside the container; the mount is the host's, stays when the container stops, and serves again from the next container", async () => {
    const volume = await env.createVolume(uniqueName("pvc-image-node"), 32 * MiB);
    const first = uniqueName("zcsi-image-node");
    const node = await startServing(first, nodeRunArgs(), join(dirs.nodeCsi, "csi.sock"));
    const staging = join(dirs.kubelet, "plugins", "globalmount");
    await mkdir(staging, { recursive: true });
    try {
      await node.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    } finally {
      node.close();
    }
    // Made inside the container, seen in this (the host's) mount namespace: propagation works.
    const staged = mountAt(await readMountInfo(), staging);
    expect(staged).toMatchObject({ fsType: "fuse.sshfs", source: `${env.sshd.user}@${env.netns.hostAddress}:${volume.mountpoint}` });
    await writeFile(join(staging, "from-the-host.txt"), "through the container's sshfs\n");
    expect(await readFile(join(volume.mountpoint, "from-the-host.txt"), "utf8")).toBe("through the container's sshfs\n");

    // The container stops as kubelet stops it: SIGTERM to its init (tini, then zcsi), and when
    // that exits the runtime kills what is left in the container with SIGKILL. Without systemd
    // on the host (these machines) sshfs is among those (docs/node.md, "Surviving restarts"):
    // the mount stays in the host's mount table, and the next plugin's start-up scan repairs it.
    await podmanOk(["kill", "--signal", "TERM", first]);
    await waitFor(`${first} to exit`, async () => (await podmanOk(["inspect", "--format", "{{.State.Status}}", first])).trim() === "exited");
    await podmanOk(["rm", first]);
    expect(mountAt(await readMountInfo(), staging)).toMatchObject({ fsType: "fuse.sshfs", source: staged?.source });

    const nextName = uniqueName("zcsi-image-node");
    const next = await startServing(nextName, nodeRunArgs(), join(dirs.nodeCsi, "csi.sock"));
    next.close();
    // sshfs died with the first container (SIGKILL: no unmount), so the start-up scan remounted it.
    const repair = (await logsOf(nextName))
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l["op"] === "repair" && "checked" in l);
    expect(repair).toMatchObject({ launcher: "detached", checked: 1, repaired: [volume.volumeId], failed: [] });
    expect(mountAt(await readMountInfo(), staging)).toMatchObject({ fsType: "fuse.sshfs", source: staged?.source });
    expect(await readFile(join(staging, "from-the-host.txt"), "utf8")).toBe("through the container's sshfs\n");
  });
});
