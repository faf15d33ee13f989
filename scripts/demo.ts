import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LocalExecutor } from "../src/exec/local.js";
import { parseMountInfo } from "../src/mount/mountinfo.js";

/**
 * The demo (`bash scripts/demo.sh [--keep]`): a throwaway pool host on this machine (a file-backed zfs-fuse pool behind a
 * real sshd), the real controller and node plugins on unix sockets (one node is the pool host,
 * one is a "remote" node in a network namespace), and a real gRPC client walking a volume's
 * life: create → mount on the pool host → write → move to the other node (SSHFS) → read →
 * snapshot → overwrite → restore (read the old content back) → expand → delete. Needs root (scripts/setup.sh installs the packages).
 */
const MiB = 1024 * 1024;
const local = new LocalExecutor();
const RWX = { mount: { fsType: "", mountFlags: [] as string[] }, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" as const } };

function say(step: string, detail = ""): void {
  console.log(`\n== ${step}${detail ? `\n   ${detail.split("\n").join("\n   ")}` : ""}`);
}

async function zfsGet(dataset: string, props: string): Promise<string> {
  const r = await local.run(["zfs", "get", "-H", "-o", "property,value", props, dataset]);
  return r.stdout.trim();
}

async function mountOf(path: string): Promise<string> {
  const m = parseMountInfo(await readFile("/proc/self/mountinfo", "utf8")).find((e) => e.mountPoint === path);
  return m ? `${m.fsType} from ${m.source}` : "not mounted";
}

async function runDemo(options: { keep: boolean }): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the demo mounts filesystems and starts sshd: run it as root (bash scripts/demo.sh)");
  // The lab pieces are the test harness's: the demo exercises exactly what the tests do.
  const { startNodeEnv } = await import("../test/harness/node-env.js");
  say("Setting up", "a zfs-fuse pool on a sparse file, sshd with a fresh pinned host key, the controller,\na node plugin on the pool host (alice) and one in a network namespace (bob)");
  const env = await startNodeEnv({ poolSizeMiB: 512 });
  try {
    const controller = env.controller;
    const alice = env.local;
    const info = await controller.getPluginInfo({});
    say("Identity", `${info.name} ${info.vendorVersion}, ready=${String((await controller.probe({})).ready?.value)}`);

    const request = { name: "pvc-demo", capacityRange: { requiredBytes: String(64 * MiB) }, volumeCapabilities: [RWX], parameters: { compression: "lzjb", atime: "off" } };
    const volume = (await controller.createVolume(request)).volume;
    if (!volume) throw new Error("CreateVolume returned no volume");
    const dataset = volume.volumeContext["dataset"] ?? "";
    const mountpoint = volume.volumeContext["mountpoint"] ?? "";
    say("CreateVolume pvc-demo (64 MiB, compression=lzjb)", `volume_id ${volume.volumeId}\nvolume_context ${JSON.stringify(volume.volumeContext)}\non the pool host:\n${await zfsGet(dataset, "refquota,compression,atime,zcsi:csi-name,zcsi:state")}`);
    const again = await controller.createVolume(request);
    say("CreateVolume pvc-demo again (a retry)", `same volume_id: ${String(again.volume?.volumeId === volume.volumeId)}`);

    // A pod on the pool host: bind mount.
    const aliceStaging = await alice.stagingPath("pvc-demo");
    const aliceTarget = await alice.targetPath("pod-a");
    await alice.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    await alice.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging, targetPath: aliceTarget, volumeCapability: RWX, volumeContext: volume.volumeContext, readonly: false });
    await writeFile(join(aliceTarget, "hello.txt"), "written by a pod on alice\n");
    say("Pod on alice (the pool host): stage + publish, write hello.txt", `target ${aliceTarget}: ${await mountOf(aliceTarget)}\non the dataset's own mountpoint: ${(await readFile(join(mountpoint, "hello.txt"), "utf8")).trim()}`);

    await alice.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: aliceTarget });
    await alice.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: aliceStaging });
    say("The pod moves: unpublish + unstage on alice", `target now: ${await mountOf(aliceTarget)}`);

    // The same pod on another node: SSHFS from the pool host.
    const bob = await env.startRemoteNode("bob");
    const bobStaging = await bob.stagingPath("pvc-demo");
    const bobTarget = await bob.targetPath("pod-a");
    await bob.client.nodeStageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging, volumeCapability: RWX, volumeContext: volume.volumeContext });
    await bob.client.nodePublishVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging, targetPath: bobTarget, volumeCapability: RWX, volumeContext: volume.volumeContext, readonly: false });
    const seen = (await readFile(join(bobTarget, "hello.txt"), "utf8")).trim();
    await writeFile(join(bobTarget, "from-bob.txt"), "written by the pod after it moved to bob\n");
    const stats = await bob.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: bobTarget });
    const bytes = stats.usage.find((u) => u.unit === "BYTES");
    say(
      "Pod on bob (another node, in a network namespace): stage + publish over SSHFS",
      `staging ${bobStaging}: ${await mountOf(bobStaging)}\nhello.txt reads: ${seen}\nfrom-bob.txt on the pool host: ${(await readFile(join(mountpoint, "from-bob.txt"), "utf8")).trim()}\nNodeGetVolumeStats: total ${bytes?.total} bytes, used ${bytes?.used}, abnormal=${String(stats.volumeCondition?.abnormal)}`,
    );

    // VolumeSnapshot, then a PVC restored from it.
    const snap = (await controller.createSnapshot({ name: "snapshot-demo", sourceVolumeId: volume.volumeId, parameters: {} })).snapshot;
    if (!snap) throw new Error("CreateSnapshot returned no snapshot");
    await writeFile(join(bobTarget, "hello.txt"), "overwritten after the snapshot\n");
    const restored = (
      await controller.createVolume({
        name: "pvc-demo-restored",
        capacityRange: { requiredBytes: String(64 * MiB) },
        volumeCapabilities: [RWX],
        parameters: {},
        volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
      })
    ).volume;
    if (!restored) throw new Error("CreateVolume from the snapshot returned no volume");
    const restoredStaging = await alice.stagingPath("pvc-demo-restored");
    const restoredTarget = await alice.targetPath("pod-r");
    await alice.client.nodeStageVolume({ volumeId: restored.volumeId, stagingTargetPath: restoredStaging, volumeCapability: RWX, volumeContext: restored.volumeContext });
    await alice.client.nodePublishVolume({ volumeId: restored.volumeId, stagingTargetPath: restoredStaging, targetPath: restoredTarget, volumeCapability: RWX, volumeContext: restored.volumeContext, readonly: false });
    say(
      "CreateSnapshot, overwrite hello.txt, then CreateVolume from the snapshot (zfs clone)",
      `snapshot_id ${snap.snapshotId}, size ${snap.sizeBytes} bytes, ready=${String(snap.readyToUse)}\n` +
        `the original's hello.txt now: ${(await readFile(join(bobTarget, "hello.txt"), "utf8")).trim()}\n` +
        `restored volume ${restored.volumeId}, mounted for a pod on alice; its hello.txt: ${(await readFile(join(restoredTarget, "hello.txt"), "utf8")).trim()}`,
    );
    await alice.client.nodeUnpublishVolume({ volumeId: restored.volumeId, targetPath: restoredTarget });
    await alice.client.nodeUnstageVolume({ volumeId: restored.volumeId, stagingTargetPath: restoredStaging });
    await controller.deleteVolume({ volumeId: restored.volumeId });
    await controller.deleteSnapshot({ snapshotId: snap.snapshotId });
    say("DeleteVolume (restored) and DeleteSnapshot", "the restored clone and the snapshot are gone");

    const expanded = await controller.controllerExpandVolume({ volumeId: volume.volumeId, capacityRange: { requiredBytes: String(128 * MiB) } });
    const after = await bob.client.nodeGetVolumeStats({ volumeId: volume.volumeId, volumePath: bobTarget });
    say("ControllerExpandVolume to 128 MiB (online)", `capacity ${expanded.capacityBytes}; pool host ${await zfsGet(dataset, "refquota")}; bob's pod now sees total ${after.usage.find((u) => u.unit === "BYTES")?.total} bytes`);

    await bob.client.nodeUnpublishVolume({ volumeId: volume.volumeId, targetPath: bobTarget });
    await bob.client.nodeUnstageVolume({ volumeId: volume.volumeId, stagingTargetPath: bobStaging });
    const listed = await controller.listVolumes({ maxEntries: 10 });
    say("ListVolumes", listed.entries.map((e) => `${e.volume?.volumeId}  ${e.volume?.capacityBytes} bytes  abnormal=${String(e.status?.volumeCondition?.abnormal)}`).join("\n"));

    await controller.deleteVolume({ volumeId: volume.volumeId });
    const gone = await local.run(["zfs", "list", "-H", "-o", "name", dataset]);
    say("DeleteVolume", gone.exitCode === 0 ? `dataset still there?! ${gone.stdout}` : `dataset ${dataset} is gone`);
    await controller.deleteVolume({ volumeId: volume.volumeId });
    say("DeleteVolume again (a retry)", "OK: deleting what is already gone succeeds, as the CSI spec asks");
    if (options.keep) {
      say("Leaving everything running (--keep)", "press Ctrl-C to clean up");
      await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
    }
  } finally {
    say("Cleaning up", "node plugins, mounts, network namespace, controller, sshd, pool and temp files");
    await env.stop();
  }
  console.log("\nDemo finished.");
}

runDemo({ keep: process.argv.slice(2).includes("--keep") }).catch((err: unknown) => {
  console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
