import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import type { TopologyRequirement } from "../../src/gen/csi/v1/TopologyRequirement.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";

/**
 * Locality (docs/placement.md): with WaitForFirstConsumer the external-provisioner names the
 * node the pod was scheduled to first in accessibility_requirements.preferred, and
 * CreateVolume puts the volume on that node's pool host when it has room. Two real pool hosts,
 * `alice` (with less free space: a reservation outside zcsi's parent takes half its pool) and
 * `bob`; each case checks where the dataset really is and what it records.
 */

const MiB = 1n << 20n;
const DRIVER = "zfs.zcsi.dev";
let env: ControllerEnv;

beforeAll(async () => {
  env = await startControllerEnv({ hostNames: ["alice", "bob"], poolSizeMiB: 512 });
  const alice = env.hosts[0]!;
  const r = await env.zfs("create", "-o", "reservation=240M", `${alice.pool.pool}/filler`);
  if (r.exitCode !== 0) throw new Error(`zfs create filler: ${r.stderr}`);
});
afterAll(async () => {
  await env?.stop();
});

const host = (name: string) => env.hosts.find((h) => h.name === name)!;
const exists = async (dataset: string): Promise<boolean> => (await env.zfs("list", "-H", "-o", "name", dataset)).exitCode === 0;
const free = async (name: string): Promise<bigint> => BigInt((await env.zfs("get", "-Hp", "-o", "value", "available", host(name).parent)).stdout.trim());
const placementProp = async (dataset: string): Promise<string> => (await env.zfs("get", "-H", "-o", "value,source", "zcsi:placement", dataset)).stdout.trim();

/** The topology the provisioner sends with delayed binding: every node, the selected one first. */
function scheduledTo(node: string): TopologyRequirement {
  const term = (n: string) => ({ segments: { [`${DRIVER}/node`]: n, [`${DRIVER}/access`]: "any-node" } });
  const nodes = ["alice", "bob", "worker-1"];
  return { requisite: nodes.map(term), preferred: [node, ...nodes.filter((n) => n !== node)].map(term) };
}

function req(name: string, bytes: bigint, extra: Partial<CreateVolumeRequest> = {}): CreateVolumeRequest {
  return {
    name,
    capacityRange: { requiredBytes: bytes.toString() },
    volumeCapabilities: [{ mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } }],
    parameters: {},
    ...extra,
  };
}

describe("CreateVolume placement", () => {
  it("without a preference puts the volume on the host with the most free space", async () => {
    expect(await free("bob")).toBeGreaterThan(await free("alice"));
    const res = await env.client.createVolume(req("pvc-place-none", 64n * MiB));
    const dataset = `${host("bob").parent}/pvc-place-none`;
    expect(res.volume?.volumeId).toBe(`bob:${dataset}`);
    expect(res.volume?.volumeContext.placement).toBe("most-free");
    expect(await placementProp(dataset)).toBe("most-free\tlocal");
  });

  it("puts the volume on the pool host the pod was scheduled to, over the StorageClass poolHost and the most free host", async () => {
    const res = await env.client.createVolume(req("pvc-place-pod", 64n * MiB, { accessibilityRequirements: scheduledTo("alice"), parameters: { poolHost: "bob" } }));
    const dataset = `${host("alice").parent}/pvc-place-pod`;
    expect(res.volume?.volumeId).toBe(`alice:${dataset}`);
    expect(res.volume?.volumeContext).toEqual({ poolHost: "alice", dataset, mountpoint: `${host("alice").mountRoot}/pvc-place-pod`, placement: "pod-node" });
    expect(await placementProp(dataset)).toBe("pod-node\tlocal");
    expect(await exists(`${host("bob").parent}/pvc-place-pod`)).toBe(false);
    // Every node can still mount it: the placement changes where the data is, not who may reach it.
    expect(res.volume?.accessibleTopology).toEqual([{ segments: { [`${DRIVER}/access`]: "any-node" } }]);
    // The choice and its reason are logged.
    const chosen = (await env.logs()).find((l) => l.msg === "pool host chosen" && l.leaf === "pvc-place-pod");
    expect(chosen).toMatchObject({ op: "CreateVolume", poolHost: "alice", reason: "pod-node", preferredNode: "alice" });
  });

  it("a retry returns the volume where it is, with the same placement, whatever node it names", async () => {
    const res = await env.client.createVolume(req("pvc-place-pod", 64n * MiB, { accessibilityRequirements: scheduledTo("bob"), parameters: { poolHost: "bob" } }));
    expect(res.volume?.volumeId).toBe(`alice:${host("alice").parent}/pvc-place-pod`);
    expect(res.volume?.volumeContext.placement).toBe("pod-node");
    expect(await exists(`${host("bob").parent}/pvc-place-pod`)).toBe(false);
  });

  it("falls back to the most free host when the pod's pool host lacks room for the volume, and says why", async () => {
    const aliceFree = await free("alice");
    const bytes = aliceFree + 16n * MiB; // more than alice has, less than bob has
    expect(await free("bob")).toBeGreaterThan(bytes);
    const res = await env.client.createVolume(req("pvc-place-full", bytes, { accessibilityRequirements: scheduledTo("alice") }));
    const dataset = `${host("bob").parent}/pvc-place-full`;
    expect(res.volume?.volumeId).toBe(`bob:${dataset}`);
    const expected = `most-free (pod's node alice: ${aliceFree} bytes free, ${bytes} requested)`;
    expect(res.volume?.volumeContext.placement).toBe(expected);
    expect(await placementProp(dataset)).toBe(`${expected}\tlocal`);
    expect(await exists(`${host("alice").parent}/pvc-place-full`)).toBe(false);
  });

  it("falls back to the StorageClass poolHost when the pod's node is not a pool host", async () => {
    const res = await env.client.createVolume(req("pvc-place-worker", 64n * MiB, { accessibilityRequirements: scheduledTo("worker-1"), parameters: { poolHost: "alice" } }));
    expect(res.volume?.volumeId).toBe(`alice:${host("alice").parent}/pvc-place-worker`);
    expect(res.volume?.volumeContext.placement).toBe("storage-class (pod's node worker-1: not a pool host)");
  });

  it("never places a volume on the pod's node when that node is to hold its replica", async () => {
    const res = await env.client.createVolume(req("pvc-place-repl", 64n * MiB, { accessibilityRequirements: scheduledTo("bob"), parameters: { replicateTo: "bob" } }));
    expect(res.volume?.volumeId).toBe(`alice:${host("alice").parent}/pvc-place-repl`);
    expect(res.volume?.volumeContext.placement).toBe("most-free (pod's node bob: a replication target of the volume (replicateTo))");
    expect(await exists(`${host("bob").parent}/pvc-place-repl`)).toBe(false);
  });
});
