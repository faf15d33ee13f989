import { LocalExecutor } from "./exec/local.js";
import type { CsiClient } from "./csi/client.js";

/**
 * `zcsi demo`: a throwaway pool host on this machine (a file-backed zfs-fuse pool behind a
 * real sshd), the real controller on a unix socket, and a real gRPC client walking a volume's
 * life. Needs root, zfs-fuse, sshd and sshfs (scripts/setup.sh installs them).
 */
const MiB = 1024 * 1024;
const local = new LocalExecutor();

function say(step: string, detail = ""): void {
  console.log(`\n== ${step}${detail ? `\n   ${detail.split("\n").join("\n   ")}` : ""}`);
}

async function zfsGet(dataset: string, props: string): Promise<string> {
  const r = await local.run(["zfs", "get", "-H", "-o", "property,value", props, dataset]);
  return r.stdout.trim();
}

export async function runDemo(options: { keep: boolean }): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the demo mounts filesystems and starts sshd: run it as root (sudo bash scripts/demo.sh)");
  // The lab pieces are the test harness's: the demo exercises exactly what the tests do.
  const { startControllerEnv } = await import("../test/harness/controller.js");
  say("Setting up a throwaway pool host", "zfs-fuse pool on a sparse file, sshd on a free loopback port with a fresh host key");
  const env = await startControllerEnv({ poolSizeMiB: 512 });
  const host = env.hosts[0];
  if (!host) throw new Error("no pool host");
  const client: CsiClient = env.client;
  try {
    console.log(`   pool host "alice": pool ${host.pool.pool}, parent dataset ${host.parent}, sshd ${host.sshd.address}:${host.sshd.port} (host key pinned)`);
    console.log(`   controller: ${env.endpoint}`);

    const info = await client.getPluginInfo({});
    const probe = await client.probe({});
    say("Identity", `${info.name} ${info.vendorVersion}, ready=${String(probe.ready?.value)}`);

    const created = await client.createVolume({
      name: "pvc-demo",
      capacityRange: { requiredBytes: String(64 * MiB) },
      volumeCapabilities: [{ mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      parameters: { compression: "lzjb", atime: "off" },
    });
    const volume = created.volume;
    if (!volume) throw new Error("CreateVolume returned no volume");
    const dataset = volume.volumeContext["dataset"] ?? "";
    say("CreateVolume pvc-demo (64 MiB, compression=lzjb)", `volume_id ${volume.volumeId}\nvolume_context ${JSON.stringify(volume.volumeContext)}\non the pool host:\n${await zfsGet(dataset, "refquota,compression,atime,zcsi:csi-name,zcsi:state")}`);

    const again = await client.createVolume({ name: "pvc-demo", capacityRange: { requiredBytes: String(64 * MiB) }, volumeCapabilities: [{ mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" } }], parameters: { compression: "lzjb", atime: "off" } });
    say("CreateVolume pvc-demo again (a retry)", `same volume_id: ${String(again.volume?.volumeId === volume.volumeId)}`);

    const listed = await client.listVolumes({ maxEntries: 10 });
    say("ListVolumes", listed.entries.map((e) => `${e.volume?.volumeId}  ${e.volume?.capacityBytes} bytes  abnormal=${String(e.status?.volumeCondition?.abnormal)}`).join("\n"));

    const capacity = await client.getCapacity({});
    say("GetCapacity", `${capacity.availableCapacity} bytes available under ${host.parent}`);

    const expanded = await client.controllerExpandVolume({ volumeId: volume.volumeId, capacityRange: { requiredBytes: String(128 * MiB) } });
    say("ControllerExpandVolume to 128 MiB", `capacity ${expanded.capacityBytes}, node expansion required: ${String(expanded.nodeExpansionRequired)}\non the pool host: ${await zfsGet(dataset, "refquota")}`);

    await client.deleteVolume({ volumeId: volume.volumeId });
    const gone = await local.run(["zfs", "list", "-H", "-o", "name", dataset]);
    say("DeleteVolume", gone.exitCode === 0 ? `dataset still there?! ${gone.stdout}` : `dataset ${dataset} is gone (${gone.stderr.trim()})`);
    await client.deleteVolume({ volumeId: volume.volumeId });
    say("DeleteVolume again (a retry)", "OK: deleting what is already gone succeeds, as the CSI spec asks");
  } finally {
    if (options.keep) {
      say("Leaving everything running (--keep)", `controller at ${env.endpoint}; press Ctrl-C to clean up`);
      await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
    }
    say("Cleaning up", "controller, sshd, pool and temp files");
    await env.stop();
  }
  console.log("\nDemo finished.");
}
