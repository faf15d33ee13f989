import { notFound } from "../errors.js";
import { parseVolumeId } from "./ids.js";
import type { PoolHosts } from "./hosts.js";

/**
 * Where a volume is served from: its pool host, dataset and mountpoint, and the epoch of that
 * copy (each promotion increments it).
 */
export interface VolumeHome {
  readonly host: string;
  readonly dataset: string;
  readonly mountpoint: string;
  readonly epoch: number;
}

/**
 * TEMPORARY home resolution, until VolumeService.resolveHome of issue 14 item 2 (the home
 * recorded in ZFS on every copy) replaces it: the birth host the volume id names is the home,
 * at epoch 1, once its dataset is known to exist (NotFound otherwise; a host that cannot answer
 * throws what the zfs client throws, Unavailable). One `zfs get`.
 */
export async function birthHome(hosts: PoolHosts, volumeId: string): Promise<VolumeHome> {
  const ref = parseVolumeId(volumeId, hosts.configs);
  const host = hosts.get(ref.poolHost);
  const props = (await host.zfs.get([ref.dataset], ["mountpoint"], { missingOk: true })).get(ref.dataset);
  if (!props) throw notFound(`volume ${volumeId} does not exist (no dataset ${ref.dataset} on ${ref.poolHost})`);
  const mountpoint = props.get("mountpoint")?.value;
  const fallback = `${ref.host.mountRoot === "/" ? "" : ref.host.mountRoot}/${ref.leaf}`;
  return { host: ref.poolHost, dataset: ref.dataset, mountpoint: mountpoint?.startsWith("/") ? mountpoint : fallback, epoch: 1 };
}
