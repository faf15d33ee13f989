import { loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { join } from "node:path";
import type { ProtoGrpcType } from "../gen/csi.js";
import type { ControllerDefinition } from "../gen/csi/v1/Controller.js";
import { packageRoot } from "../util/package.js";

/**
 * The options the generated types in src/gen assume. `longs: String` keeps int64 byte
 * counts exact (a JS number loses precision above 2^53); `defaults` fills absent fields.
 */
export const PROTO_OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true } as const;

export function loadCsiProto(): ProtoGrpcType {
  const definition = loadSync(join(packageRoot, "proto", "csi.proto"), PROTO_OPTIONS);
  return loadPackageDefinition(definition) as unknown as ProtoGrpcType;
}

/** Entries serialized at a time by `slicedEntries`: a page's worth. */
const SERIALIZE_SLICE = 100;

/**
 * A response serializer for a reply with a long repeated `entries` field (ListVolumes,
 * ListSnapshots without max_entries) that encodes it `SERIALIZE_SLICE` entries at a time and
 * joins the bytes. protobufjs copies the whole reply into message objects and queues every
 * field before writing (proto-loader's fromObject + encode): for 10,000 volumes that held
 * ~35 MB at once, above the reply itself (bench/listing-memory.ts). Protobuf defines the
 * concatenation of two encodings as their merge, repeated fields appended
 * (https://protobuf.dev/programming-guides/encoding/#last-one-wins), so the bytes are the same
 * message; the other fields go with the last slice, once.
 */
export function slicedEntries<R extends { readonly entries?: readonly unknown[] | null }>(serialize: (reply: R) => Buffer): (reply: R) => Buffer {
  return (reply) => {
    const entries = reply.entries ?? [];
    if (entries.length <= SERIALIZE_SLICE) return serialize(reply);
    const parts: Buffer[] = [];
    let at = 0;
    for (; at + SERIALIZE_SLICE < entries.length; at += SERIALIZE_SLICE) parts.push(serialize({ entries: entries.slice(at, at + SERIALIZE_SLICE) } as unknown as R));
    parts.push(serialize({ ...reply, entries: entries.slice(at) }));
    return Buffer.concat(parts);
  };
}

/** The Controller service as the server registers it: ListVolumes and ListSnapshots replies serialized in slices (slicedEntries). */
export function controllerDefinition(proto: ProtoGrpcType): ControllerDefinition {
  const service = proto.csi.v1.Controller.service;
  return {
    ...service,
    ListVolumes: { ...service.ListVolumes, responseSerialize: slicedEntries(service.ListVolumes.responseSerialize) },
    ListSnapshots: { ...service.ListSnapshots, responseSerialize: slicedEntries(service.ListSnapshots.responseSerialize) },
  };
}
