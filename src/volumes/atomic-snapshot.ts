import { alreadyExists, isZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import type { PoolHost } from "./hosts.js";
import { PROP } from "./properties.js";

/** The value of zcsi:group-members for these member datasets (direct children of one parent). */
export function groupMembersValue(datasets: readonly string[]): string {
  return [...new Set(datasets.map((d) => d.slice(d.lastIndexOf("/") + 1)))].sort().join(",");
}

/**
 * Snapshots `datasets` (all direct children of the host's parentDataset) as `<dataset>@<name>`
 * in ONE `zfs snapshot`, so every member is taken in the same txg (write-order consistent, as
 * CSI asks of a group snapshot). Every snapshot gets `props` plus zcsi:group-members.
 *
 * - OpenZFS (Capabilities.multiSnapshot): `zfs snapshot -o ... a@name b@name c@name`.
 * - zfs-fuse takes one name per `zfs snapshot`; its only atomic form for several datasets is
 *   `zfs snapshot -r <parent>@name`, which also snapshots every other dataset below the parent.
 *   Those non-member snapshots are then destroyed, the parent's last (so a retry after a crash
 *   sees the parent's one and finishes the cleanup). Only snapshots carrying this exact
 *   zcsi:group-members mark are destroyed: a snapshot of that name zcsi did not make would have
 *   failed the recursive snapshot (a name already taken anywhere below the parent fails it
 *   whole, nothing made), and is never touched. Costs 1 + (datasets below the parent) commands.
 *
 * A name already taken on a member is ALREADY_EXISTS (nothing made).
 */
export async function snapshotTogether(host: PoolHost, datasets: readonly string[], name: string, props: Readonly<Record<string, string>>, logger: Logger): Promise<void> {
  const parent = host.config.parentDataset;
  const members = groupMembersValue(datasets);
  const all = { ...props, [PROP.groupMembers]: members };
  try {
    if (datasets.length === 1 || (await host.zfs.capabilities()).multiSnapshot) {
      await host.zfs.snapshot(datasets.map((d) => `${d}@${name}`), all);
      return;
    }
    await host.zfs.snapshot(`${parent}@${name}`, all, { recursive: true });
  } catch (err) {
    if (isZcsiError(err, "AlreadyExists")) throw alreadyExists(`a snapshot named ${name} already exists below ${parent} on ${host.config.name}; use another name`);
    throw err;
  }
  await destroyNonMembers(host, datasets, name, logger);
}

/**
 * zfs-fuse's recursive form: destroys `<dataset>@<name>` below the parent for every dataset
 * that is not a member and whose snapshot carries the members' mark. One `zfs get -r`, then
 * one destroy each. True when there was anything to clean.
 */
export async function destroyNonMembers(host: PoolHost, datasets: readonly string[], name: string, logger: Logger): Promise<boolean> {
  const parent = host.config.parentDataset;
  const members = groupMembersValue(datasets);
  const found = await host.zfs.get([parent], [PROP.groupMembers], { recursive: true });
  const keep = new Set(datasets.map((d) => `${d}@${name}`));
  const leftovers = [...found.entries()]
    .filter(([n, props]) => n.endsWith(`@${name}`) && !keep.has(n) && ownUserPropertyValue(props.get(PROP.groupMembers)) === members)
    .map(([n]) => n)
    // Deepest first, the parent's own last: its presence tells a retry the cleanup is unfinished.
    .sort((a, b) => b.split("/").length - a.split("/").length);
  for (const leftover of leftovers) {
    try {
      await host.zfs.destroy(leftover);
    } catch (err) {
      if (!isZcsiError(err, "NotFound")) throw err;
    }
  }
  if (leftovers.length > 0) logger.debug({ op: "SnapshotTogether", poolHost: host.config.name, snapshot: name, destroyed: leftovers.length }, "recursive group snapshot: non-members' snapshots destroyed");
  return leftovers.length > 0;
}
