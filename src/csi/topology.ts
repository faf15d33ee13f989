import type { Topology } from "../gen/csi/v1/Topology.js";
import type { TopologyRequirement__Output } from "../gen/csi/v1/TopologyRequirement.js";

/**
 * zcsi's topology (CSI spec, "Topology"; docs/topology.md). Every node that runs the zcsi node
 * plugin can mount every zcsi volume (bind mount on its pool host, SSHFS anywhere else), so:
 *
 * - NodeGetInfo reports two segments: `<driver>/node: <node name>` (where the node is;
 *   CreateVolume reads it from accessibility_requirements.preferred to place a volume on the
 *   pool host it names, see preferredNode) and `<driver>/access: any-node`, which every zcsi
 *   node carries.
 * - Every volume reports `accessible_topology = [{<driver>/access: any-node}]`: reachable from
 *   every node that carries the key. The external-provisioner turns that into a PV node
 *   affinity every zcsi node matches, and that keeps pods off nodes without the node plugin.
 *
 * Returning either field requires the VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability,
 * which the identity service advertises.
 */
export const ANY_NODE = "any-node";

/** `<driver name>/node`: a valid label key, since the driver name is a DNS subdomain. */
export function topologyKey(driverName: string): string {
  return `${driverName}/node`;
}

/** `<driver name>/access`: the key every zcsi node carries with the value ANY_NODE. */
export function accessKey(driverName: string): string {
  return `${driverName}/access`;
}

export function nodeTopology(driverName: string, nodeId: string): Topology {
  return { segments: { [topologyKey(driverName)]: nodeId, [accessKey(driverName)]: ANY_NODE } };
}

/** Where a zcsi volume can be mounted: on every zcsi node. */
export function volumeTopology(driverName: string): Topology[] {
  return [{ segments: { [accessKey(driverName)]: ANY_NODE } }];
}

/**
 * The node a pod was scheduled to, from CreateVolume's accessibility_requirements: the
 * `<driver>/node` of the first preferred topology. With delayed binding (WaitForFirstConsumer)
 * the external-provisioner (--feature-gates=Topology=true) puts the selected node's topology
 * first in `preferred`: alone with --strict-topology, ahead of every other node's without
 * (external-provisioner pkg/controller/topology.go, GenerateAccessibilityRequirements). Only
 * the first entry counts: the rest is every other node, in no meaningful order. With
 * Immediate binding the provisioner fills `preferred` too, rotated by a hash of the PVC name,
 * unless --immediate-topology=false (deploy/ sets it), which sends no requirements there.
 */
export function preferredNode(requirements: TopologyRequirement__Output | null | undefined, driverName: string): string | undefined {
  const node = requirements?.preferred[0]?.segments[topologyKey(driverName)];
  return node === undefined || node === "" ? undefined : node;
}
