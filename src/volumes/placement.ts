/**
 * Which pool host a new volume goes to (docs/placement.md). A pure choice over what
 * VolumeService.lookup learnt (each answering host's free space), so every rule is unit-tested:
 *
 * 1. `pod-node`: the node the pod was scheduled to (WaitForFirstConsumer: the first entry of
 *    CreateVolume's accessibility_requirements.preferred names it) when that node is a pool
 *    host, is not one of the volume's replication targets, answers, and has room for the
 *    volume. The pod then gets a bind mount instead of SSHFS.
 * 2. `storage-class`: the StorageClass `poolHost`, as before (its own capacity check follows).
 * 3. `most-free`: the answering host with the most free space that is not a replication target.
 *
 * A clone or restore lives with its source (`content-source`), which the caller decides.
 */

export const PLACEMENT_REASONS = ["pod-node", "storage-class", "most-free", "content-source"] as const;
export type PlacementReason = (typeof PLACEMENT_REASONS)[number];

export interface PlacementInput {
  /** Every configured pool host, in config order (the tie-break of `most-free`). */
  readonly hosts: readonly string[];
  /** Free bytes under the parent dataset of each host that answered. */
  readonly free: ReadonlyMap<string, bigint>;
  readonly capacityBytes: bigint;
  /** The node name the pod was scheduled to, if the request carried one. */
  readonly preferredNode?: string;
  /** StorageClass `poolHost`. */
  readonly poolHost?: string;
  /** StorageClass `replicateTo`: never the volume's own host. */
  readonly exclude: readonly string[];
}

export interface PlacementChoice {
  /** The chosen host; undefined when no host that may hold the volume answered. */
  readonly host: string | undefined;
  readonly reason: PlacementReason;
  /** Why the pod's node was not taken, when there was one. */
  readonly preferredSkipped?: string;
}

/** Why `node` cannot hold the volume, or undefined when it can. */
function whyNot(node: string, input: PlacementInput): string | undefined {
  if (!input.hosts.includes(node)) return "not a pool host";
  if (input.exclude.includes(node)) return "a replication target of the volume (replicateTo)";
  const free = input.free.get(node);
  if (free === undefined) return "not answering";
  if (free < input.capacityBytes) return `${free} bytes free, ${input.capacityBytes} requested`;
  return undefined;
}

export function choosePlacement(input: PlacementInput): PlacementChoice {
  const preferred = input.preferredNode;
  const skipped = preferred === undefined ? undefined : whyNot(preferred, input);
  if (preferred !== undefined && skipped === undefined) return { host: preferred, reason: "pod-node" };
  const note = skipped === undefined ? {} : { preferredSkipped: skipped };
  if (input.poolHost !== undefined) return { host: input.poolHost, reason: "storage-class", ...note };
  let best: [string, bigint] | undefined;
  for (const name of input.hosts) {
    const free = input.free.get(name);
    if (free === undefined || input.exclude.includes(name)) continue;
    if (best === undefined || free > best[1]) best = [name, free];
  }
  return { host: best?.[0], reason: "most-free", ...note };
}

/**
 * The choice as one line, for the volume context (`kubectl describe pv`) and zcsi:placement:
 * `pod-node`, or e.g. `most-free (pod's node worker-1: not a pool host)`.
 */
export function describePlacement(choice: PlacementChoice, preferredNode: string | undefined): string {
  return choice.preferredSkipped === undefined ? choice.reason : `${choice.reason} (pod's node ${preferredNode}: ${choice.preferredSkipped})`;
}
