import { failedPrecondition, unavailable } from "../errors.js";
import type { Logger } from "../log.js";
import type { VolumeHomes } from "./homes.js";
import type { PoolHosts } from "./hosts.js";
import { formatVolumeId, parseVolumeId, type VolumeRef } from "./ids.js";
import { PROP } from "./properties.js";
import { toVolume, VOLUME_PROPS, type Volume } from "./volume.js";

/**
 * The volume born at `ref` as its home copy serves it, when the birth copy does not (a moved
 * volume: VolumeService.get). Its id stays the birth id; `ref` is the home copy; `birth` keeps
 * what volume_context says. Undefined when no copy serves it and every host answered (only
 * replicas are left: a deleted volume's, kept). `birthFailure`: why the birth host could not
 * be read, rethrown when no home is found either.
 */
export async function volumeAtHome(hosts: PoolHosts, homes: VolumeHomes, logger: Logger, ref: VolumeRef, birthFailure: unknown): Promise<Volume | undefined> {
  const volumeId = formatVolumeId(ref);
  const copies = await homes.find(volumeId, "get", VOLUME_PROPS);
  const { home } = copies;
  if (!home) {
    if (birthFailure !== undefined) throw birthFailure;
    if (copies.unknown.length > 0) throw unavailable(`volume ${volumeId} is not served by any pool host that answered; not reachable: ${copies.unknown.map((u) => `${u.host} (${u.reason})`).join(", ")}`);
    if (copies.live.length > 1 || copies.stale.length > 0) throw failedPrecondition(`volume ${volumeId} has no home: ${copies.problems.join("; ")}`);
    return undefined;
  }
  const host = hosts.get(home.host);
  const props = copies.homeProps;
  const volume = props && toVolume(host, home.dataset, props);
  if (!volume) throw failedPrecondition(`copy ${home.host}:${home.dataset} is the home of volume ${volumeId} but carries no ${PROP.csiName}; promote it with zcsi (docs/pool-host-lost.md)`);
  const birth = parseVolumeId(volumeId, hosts.configs);
  const mountpoint = `${birth.host.mountRoot === "/" ? "" : birth.host.mountRoot}/${birth.leaf}`;
  logger.debug({ op: "get", volumeId, poolHost: home.host, dataset: home.dataset, epoch: home.epoch }, "volume served by a copy other than its birth copy");
  return { ...volume, id: volumeId, birth: { poolHost: ref.poolHost, dataset: ref.dataset, mountpoint } };
}
