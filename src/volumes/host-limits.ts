import { invalidArgument } from "../errors.js";
import { compressionFamily, propertyLimits } from "../zfs/capabilities.js";
import type { PoolHost } from "./hosts.js";
import type { VolumeParameters } from "./parameters.js";

/**
 * Refuses, before anything is created, StorageClass properties the chosen host cannot honour
 * (zfs-fuse cannot compress with lz4 or zstd; recordsize is bounded per implementation):
 * INVALID_ARGUMENT naming the host and what it supports, from the capability probe (one
 * `zfs version` per host, cached). A host whose implementation is unknown is let through.
 */
export async function requireHostCanHonour(host: PoolHost, params: VolumeParameters): Promise<void> {
  const compression = params.zfsProperties["compression"];
  const recordsize = params.zfsProperties["recordsize"];
  if (compression === undefined && recordsize === undefined) return;
  const limits = propertyLimits(await host.zfs.capabilities());
  if (!limits) return;
  const name = host.config.name;
  if (compression !== undefined && !limits.compression.includes(compressionFamily(compression))) {
    throw invalidArgument(`parameter compression=${compression}: pool host ${name} runs ${limits.what}, which supports compression ${limits.compression.join(", ")} (gzip as gzip-1..9${limits.compression.includes("zstd") ? ", zstd as zstd-1..19 and zstd-fast" : ""})`);
  }
  if (recordsize !== undefined && BigInt(recordsize) > BigInt(limits.maxRecordsizeBytes)) {
    throw invalidArgument(`parameter recordsize=${recordsize}: pool host ${name} runs ${limits.what}, whose largest recordsize is ${limits.maxRecordsizeBytes} bytes (${limits.maxRecordsizeBytes / 1024}K)`);
  }
}
