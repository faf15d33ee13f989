import { loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { join } from "node:path";
import type { ProtoGrpcType } from "../gen/csi.js";
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
