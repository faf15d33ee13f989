import { credentials, status, type Client, type ServiceError } from "@grpc/grpc-js";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import type { CreateVolumeResponse__Output } from "../../src/gen/csi/v1/CreateVolumeResponse.js";
import type { DeleteVolumeRequest } from "../../src/gen/csi/v1/DeleteVolumeRequest.js";
import type { DeleteVolumeResponse__Output } from "../../src/gen/csi/v1/DeleteVolumeResponse.js";
import type { ValidateVolumeCapabilitiesRequest } from "../../src/gen/csi/v1/ValidateVolumeCapabilitiesRequest.js";
import type { ValidateVolumeCapabilitiesResponse__Output } from "../../src/gen/csi/v1/ValidateVolumeCapabilitiesResponse.js";
import type { ListVolumesRequest } from "../../src/gen/csi/v1/ListVolumesRequest.js";
import type { ListVolumesResponse__Output } from "../../src/gen/csi/v1/ListVolumesResponse.js";
import type { GetCapacityRequest } from "../../src/gen/csi/v1/GetCapacityRequest.js";
import type { GetCapacityResponse__Output } from "../../src/gen/csi/v1/GetCapacityResponse.js";
import type { ControllerGetCapabilitiesRequest } from "../../src/gen/csi/v1/ControllerGetCapabilitiesRequest.js";
import type { ControllerGetCapabilitiesResponse__Output } from "../../src/gen/csi/v1/ControllerGetCapabilitiesResponse.js";
import type { ControllerExpandVolumeRequest } from "../../src/gen/csi/v1/ControllerExpandVolumeRequest.js";
import type { ControllerExpandVolumeResponse__Output } from "../../src/gen/csi/v1/ControllerExpandVolumeResponse.js";
import type { ControllerGetVolumeRequest } from "../../src/gen/csi/v1/ControllerGetVolumeRequest.js";
import type { ControllerGetVolumeResponse__Output } from "../../src/gen/csi/v1/ControllerGetVolumeResponse.js";
import type { ControllerModifyVolumeRequest } from "../../src/gen/csi/v1/ControllerModifyVolumeRequest.js";
import type { ControllerModifyVolumeResponse__Output } from "../../src/gen/csi/v1/ControllerModifyVolumeResponse.js";
import type { ControllerPublishVolumeRequest } from "../../src/gen/csi/v1/ControllerPublishVolumeRequest.js";
import type { ControllerPublishVolumeResponse__Output } from "../../src/gen/csi/v1/ControllerPublishVolumeResponse.js";
import type { ControllerUnpublishVolumeRequest } from "../../src/gen/csi/v1/ControllerUnpublishVolumeRequest.js";
import type { ControllerUnpublishVolumeResponse__Output } from "../../src/gen/csi/v1/ControllerUnpublishVolumeResponse.js";
import type { CreateSnapshotRequest } from "../../src/gen/csi/v1/CreateSnapshotRequest.js";
import type { CreateSnapshotResponse__Output } from "../../src/gen/csi/v1/CreateSnapshotResponse.js";
import type { DeleteSnapshotRequest } from "../../src/gen/csi/v1/DeleteSnapshotRequest.js";
import type { DeleteSnapshotResponse__Output } from "../../src/gen/csi/v1/DeleteSnapshotResponse.js";
import type { ListSnapshotsRequest } from "../../src/gen/csi/v1/ListSnapshotsRequest.js";
import type { ListSnapshotsResponse__Output } from "../../src/gen/csi/v1/ListSnapshotsResponse.js";
import type { GetSnapshotRequest } from "../../src/gen/csi/v1/GetSnapshotRequest.js";
import type { GetSnapshotResponse__Output } from "../../src/gen/csi/v1/GetSnapshotResponse.js";
import type { NodeStageVolumeRequest } from "../../src/gen/csi/v1/NodeStageVolumeRequest.js";
import type { NodeStageVolumeResponse__Output } from "../../src/gen/csi/v1/NodeStageVolumeResponse.js";
import type { NodeUnstageVolumeRequest } from "../../src/gen/csi/v1/NodeUnstageVolumeRequest.js";
import type { NodeUnstageVolumeResponse__Output } from "../../src/gen/csi/v1/NodeUnstageVolumeResponse.js";
import type { NodePublishVolumeRequest } from "../../src/gen/csi/v1/NodePublishVolumeRequest.js";
import type { NodePublishVolumeResponse__Output } from "../../src/gen/csi/v1/NodePublishVolumeResponse.js";
import type { NodeUnpublishVolumeRequest } from "../../src/gen/csi/v1/NodeUnpublishVolumeRequest.js";
import type { NodeUnpublishVolumeResponse__Output } from "../../src/gen/csi/v1/NodeUnpublishVolumeResponse.js";
import type { NodeGetVolumeStatsRequest } from "../../src/gen/csi/v1/NodeGetVolumeStatsRequest.js";
import type { NodeGetVolumeStatsResponse__Output } from "../../src/gen/csi/v1/NodeGetVolumeStatsResponse.js";
import type { NodeExpandVolumeRequest } from "../../src/gen/csi/v1/NodeExpandVolumeRequest.js";
import type { NodeExpandVolumeResponse__Output } from "../../src/gen/csi/v1/NodeExpandVolumeResponse.js";
import type { NodeGetCapabilitiesRequest } from "../../src/gen/csi/v1/NodeGetCapabilitiesRequest.js";
import type { NodeGetCapabilitiesResponse__Output } from "../../src/gen/csi/v1/NodeGetCapabilitiesResponse.js";
import type { NodeGetInfoRequest } from "../../src/gen/csi/v1/NodeGetInfoRequest.js";
import type { NodeGetInfoResponse__Output } from "../../src/gen/csi/v1/NodeGetInfoResponse.js";
import type { GetPluginInfoResponse__Output } from "../../src/gen/csi/v1/GetPluginInfoResponse.js";
import type { GetPluginCapabilitiesResponse__Output } from "../../src/gen/csi/v1/GetPluginCapabilitiesResponse.js";
import type { ProbeResponse__Output } from "../../src/gen/csi/v1/ProbeResponse.js";
import type { CreateVolumeGroupSnapshotRequest } from "../../src/gen/csi/v1/CreateVolumeGroupSnapshotRequest.js";
import type { CreateVolumeGroupSnapshotResponse__Output } from "../../src/gen/csi/v1/CreateVolumeGroupSnapshotResponse.js";
import type { DeleteVolumeGroupSnapshotRequest } from "../../src/gen/csi/v1/DeleteVolumeGroupSnapshotRequest.js";
import type { GetVolumeGroupSnapshotRequest } from "../../src/gen/csi/v1/GetVolumeGroupSnapshotRequest.js";
import type { GetVolumeGroupSnapshotResponse__Output } from "../../src/gen/csi/v1/GetVolumeGroupSnapshotResponse.js";
import type { GroupControllerGetCapabilitiesResponse__Output } from "../../src/gen/csi/v1/GroupControllerGetCapabilitiesResponse.js";
import { loadCsiProto } from "../../src/csi/proto.js";

type Callback = (err: ServiceError | null, response?: unknown) => void;

function rpc<Req, Res>(client: Client, method: string): (request: Req) => Promise<Res> {
  const fn = (client as unknown as Record<string, (req: Req, cb: Callback) => void>)[method];
  if (typeof fn !== "function") throw new TypeError(`no RPC ${method} on this client`);
  return (request) => new Promise<Res>((resolve, reject) => fn.call(client, request, (err, res) => (err ? reject(err) : resolve(res as Res))));
}

/**
 * A real gRPC client for a CSI endpoint, on the same proto as the server: what the demo,
 * the tests and `zcsi status` use to talk to a driver like kubelet and the sidecars do.
 */
export class CsiClient {
  private readonly clients: Client[];
  readonly getPluginInfo: (r: object) => Promise<GetPluginInfoResponse__Output>;
  readonly getPluginCapabilities: (r: object) => Promise<GetPluginCapabilitiesResponse__Output>;
  readonly probe: (r: object) => Promise<ProbeResponse__Output>;
  readonly createVolume: (r: CreateVolumeRequest) => Promise<CreateVolumeResponse__Output>;
  readonly deleteVolume: (r: DeleteVolumeRequest) => Promise<DeleteVolumeResponse__Output>;
  readonly validateVolumeCapabilities: (r: ValidateVolumeCapabilitiesRequest) => Promise<ValidateVolumeCapabilitiesResponse__Output>;
  readonly listVolumes: (r: ListVolumesRequest) => Promise<ListVolumesResponse__Output>;
  readonly getCapacity: (r: GetCapacityRequest) => Promise<GetCapacityResponse__Output>;
  readonly controllerGetCapabilities: (r: ControllerGetCapabilitiesRequest) => Promise<ControllerGetCapabilitiesResponse__Output>;
  readonly controllerExpandVolume: (r: ControllerExpandVolumeRequest) => Promise<ControllerExpandVolumeResponse__Output>;
  readonly controllerGetVolume: (r: ControllerGetVolumeRequest) => Promise<ControllerGetVolumeResponse__Output>;
  readonly controllerModifyVolume: (r: ControllerModifyVolumeRequest) => Promise<ControllerModifyVolumeResponse__Output>;
  readonly controllerPublishVolume: (r: ControllerPublishVolumeRequest) => Promise<ControllerPublishVolumeResponse__Output>;
  readonly controllerUnpublishVolume: (r: ControllerUnpublishVolumeRequest) => Promise<ControllerUnpublishVolumeResponse__Output>;
  readonly createSnapshot: (r: CreateSnapshotRequest) => Promise<CreateSnapshotResponse__Output>;
  readonly deleteSnapshot: (r: DeleteSnapshotRequest) => Promise<DeleteSnapshotResponse__Output>;
  readonly listSnapshots: (r: ListSnapshotsRequest) => Promise<ListSnapshotsResponse__Output>;
  readonly getSnapshot: (r: GetSnapshotRequest) => Promise<GetSnapshotResponse__Output>;
  readonly nodeStageVolume: (r: NodeStageVolumeRequest) => Promise<NodeStageVolumeResponse__Output>;
  readonly nodeUnstageVolume: (r: NodeUnstageVolumeRequest) => Promise<NodeUnstageVolumeResponse__Output>;
  readonly nodePublishVolume: (r: NodePublishVolumeRequest) => Promise<NodePublishVolumeResponse__Output>;
  readonly nodeUnpublishVolume: (r: NodeUnpublishVolumeRequest) => Promise<NodeUnpublishVolumeResponse__Output>;
  readonly nodeGetVolumeStats: (r: NodeGetVolumeStatsRequest) => Promise<NodeGetVolumeStatsResponse__Output>;
  readonly nodeExpandVolume: (r: NodeExpandVolumeRequest) => Promise<NodeExpandVolumeResponse__Output>;
  readonly nodeGetCapabilities: (r: NodeGetCapabilitiesRequest) => Promise<NodeGetCapabilitiesResponse__Output>;
  readonly nodeGetInfo: (r: NodeGetInfoRequest) => Promise<NodeGetInfoResponse__Output>;
  readonly groupControllerGetCapabilities: (r: object) => Promise<GroupControllerGetCapabilitiesResponse__Output>;
  readonly createVolumeGroupSnapshot: (r: CreateVolumeGroupSnapshotRequest) => Promise<CreateVolumeGroupSnapshotResponse__Output>;
  readonly deleteVolumeGroupSnapshot: (r: DeleteVolumeGroupSnapshotRequest) => Promise<object>;
  readonly getVolumeGroupSnapshot: (r: GetVolumeGroupSnapshotRequest) => Promise<GetVolumeGroupSnapshotResponse__Output>;

  constructor(endpoint: string) {
    const address = endpoint.startsWith("unix:") ? endpoint : `unix://${endpoint}`;
    const proto = loadCsiProto();
    const creds = credentials.createInsecure();
    const identity = new proto.csi.v1.Identity(address, creds);
    const controller = new proto.csi.v1.Controller(address, creds);
    const node = new proto.csi.v1.Node(address, creds);
    const group = new proto.csi.v1.GroupController(address, creds);
    this.clients = [identity, controller, node, group];
    this.groupControllerGetCapabilities = rpc(group, "GroupControllerGetCapabilities");
    this.createVolumeGroupSnapshot = rpc(group, "CreateVolumeGroupSnapshot");
    this.deleteVolumeGroupSnapshot = rpc(group, "DeleteVolumeGroupSnapshot");
    this.getVolumeGroupSnapshot = rpc(group, "GetVolumeGroupSnapshot");
    this.getPluginInfo = rpc(identity, "GetPluginInfo");
    this.getPluginCapabilities = rpc(identity, "GetPluginCapabilities");
    this.probe = rpc(identity, "Probe");
    this.createVolume = rpc(controller, "CreateVolume");
    this.deleteVolume = rpc(controller, "DeleteVolume");
    this.validateVolumeCapabilities = rpc(controller, "ValidateVolumeCapabilities");
    this.listVolumes = rpc(controller, "ListVolumes");
    this.getCapacity = rpc(controller, "GetCapacity");
    this.controllerGetCapabilities = rpc(controller, "ControllerGetCapabilities");
    this.controllerExpandVolume = rpc(controller, "ControllerExpandVolume");
    this.controllerGetVolume = rpc(controller, "ControllerGetVolume");
    this.controllerModifyVolume = rpc(controller, "ControllerModifyVolume");
    this.controllerPublishVolume = rpc(controller, "ControllerPublishVolume");
    this.controllerUnpublishVolume = rpc(controller, "ControllerUnpublishVolume");
    this.createSnapshot = rpc(controller, "CreateSnapshot");
    this.deleteSnapshot = rpc(controller, "DeleteSnapshot");
    this.listSnapshots = rpc(controller, "ListSnapshots");
    this.getSnapshot = rpc(controller, "GetSnapshot");
    this.nodeStageVolume = rpc(node, "NodeStageVolume");
    this.nodeUnstageVolume = rpc(node, "NodeUnstageVolume");
    this.nodePublishVolume = rpc(node, "NodePublishVolume");
    this.nodeUnpublishVolume = rpc(node, "NodeUnpublishVolume");
    this.nodeGetVolumeStats = rpc(node, "NodeGetVolumeStats");
    this.nodeExpandVolume = rpc(node, "NodeExpandVolume");
    this.nodeGetCapabilities = rpc(node, "NodeGetCapabilities");
    this.nodeGetInfo = rpc(node, "NodeGetInfo");
  }

  /** The node service's client, for RPCs added by the node role. */
  get nodeClient(): Client {
    return this.clients[2] as Client;
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

/** The gRPC code and details a call ended with (OK and "" when it succeeded): what spec tests assert on. */
export async function failure(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: number; details: string };
  }
  return { code: status.OK, details: "" };
}

/** The gRPC status a call ends with: OK, or the code it was rejected with. */
export async function grpcCode(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return status.OK;
  } catch (err) {
    return (err as { code?: number }).code;
  }
}
