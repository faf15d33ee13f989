import type { Logger } from "../log.js";
import type { PoolHost } from "../volumes/hosts.js";
import { PROP, REPLICATION_SNAPSHOT_PREFIX } from "../volumes/properties.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import { replicatedThrough, statesAfter, statesToDrop, tagsToRelease, type JobState } from "./bookkeeping.js";
import { jobStates, readSide, userProperties, type Side } from "./sides.js";
import type { DatasetRef } from "./types.js";

/**
 * The replicator's commands on a source's holds and records outside a run: releaseHolds (one
 * job's, or all jobs' of a source) and zcsi:replicated-through, which a run's finish sets too.
 * What to release and record is decided in bookkeeping.ts.
 */

export async function releaseJobHolds(src: PoolHost, source: DatasetRef, jobId: string | undefined, logger: Logger): Promise<void> {
  const log = logger.child({ op: "release-holds", poolHost: source.host, dataset: source.dataset, ...(jobId !== undefined && { jobId }) });
  const [side, props] = await Promise.all([readSide(src, source.dataset, []), userProperties(src, source.dataset)]);
  if (!side.exists) return;
  const states = jobStates(props);
  const tags = tagsToRelease(states, jobId);
  const held = side.snapshots.filter((s) => s.userrefs > 0);
  let released = 0;
  for (const snap of held) {
    for (const tag of tags) {
      if (await src.zfs.release(tag, `${source.dataset}@${snap.name}`)) released++;
    }
  }
  // Without per-job state we cannot name every tag (zfs-fuse cannot list holds): on OpenZFS,
  // `zfs holds` names them, so any zcsi-repl-* tag left is released too.
  if (jobId === undefined && held.length > 0 && (await src.zfs.capabilities()).implementation === "openzfs") {
    const holds = await src.zfs.holds(held.map((s) => `${source.dataset}@${s.name}`));
    for (const h of holds) {
      if (h.tag.startsWith(REPLICATION_SNAPSHOT_PREFIX) && (await src.zfs.release(h.tag, h.snapshot))) released++;
    }
  }
  const drop = statesToDrop(states, jobId);
  for (const property of drop) await src.zfs.inherit(source.dataset, property);
  await applyReplicatedThrough(src, source.dataset, side, statesAfter(states, { drop }), props);
  log.info({ released }, "released replication holds");
}

/** Sets or clears zcsi:replicated-through (bookkeeping.replicatedThrough) from what was read. */
export async function applyReplicatedThrough(src: PoolHost, dataset: string, side: Side, states: readonly JobState[], props: Side["props"]): Promise<void> {
  const change = replicatedThrough(side.snapshots, states, ownUserPropertyValue(props?.get(PROP.replicatedThrough)));
  if (change.kind === "clear") await src.zfs.inherit(dataset, PROP.replicatedThrough);
  else if (change.kind === "set") await src.zfs.set(dataset, { [PROP.replicatedThrough]: change.guid });
}
