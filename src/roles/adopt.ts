import { stringify } from "yaml";
import type { Config } from "../config.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import { adoptedPvName, adoptionObjects, type AdoptionApi, type PvSummary } from "../k8s/adopt.js";
import { adoptionProblem, formatAdoptedId, isAdoptedId, NAMESPACE, parseAdoptedId } from "../volumes/adopted-ids.js";
import { adoptedSize, adoptionMark, AdoptedVolumes, toAdoptedVolume, unservable } from "../volumes/adopted.js";
import { modifyVolume, planModification } from "../volumes/modify.js";
import { ownUserPropertyValue } from "../zfs/parse.js";
import type { PoolHosts } from "../volumes/hosts.js";
import { PROP } from "../volumes/properties.js";

/**
 * `zcsi adopt DATASET --pvc NAMESPACE/NAME [--host H] [--read-only] [--dry-run]`: serves a
 * dataset zcsi did not create as a PV bound to a new PVC (docs/coming-from-hostpath.md).
 * Checks, in order, before anything changes: the config allows the dataset (adoptRoots), it
 * is a mounted filesystem on its pool host, and no other PV uses it (one read-write adoption,
 * or read-only ones in different namespaces). Then: the adoption mark on the dataset (the
 * controller serves an adopted id only while it is there), the PV, the PVC. Each step is
 * idempotent, so running the command again finishes an adoption that stopped half-way.
 */

export interface AdoptFlags {
  readonly dataset: string | undefined;
  readonly pvc: string | undefined;
  readonly host?: string | undefined;
  readonly readOnly?: boolean | undefined;
  readonly dryRun?: boolean | undefined;
  readonly storageClass?: string | undefined;
  /** `--snapshot-schedule`: the StorageClass parameter snapshotSchedule, for this dataset. */
  readonly snapshotSchedule?: string | undefined;
  /** `--replicate-to HOST[,HOST]`: the StorageClass parameter replicateTo. */
  readonly replicateTo?: string | undefined;
  /** `--replication-interval`: the StorageClass parameter replicationInterval (needs --replicate-to). */
  readonly replicationInterval?: string | undefined;
}

/** The flags that set mutable parameters, as a ModifyVolume's mutable_parameters map. */
export function adoptParameters(flags: AdoptFlags): Record<string, string> {
  return {
    ...(flags.snapshotSchedule !== undefined && { snapshotSchedule: flags.snapshotSchedule }),
    ...(flags.replicateTo !== undefined && { replicateTo: flags.replicateTo }),
    ...(flags.replicationInterval !== undefined && { replicationInterval: flags.replicationInterval }),
  };
}

export interface AdoptDeps {
  readonly hosts: PoolHosts;
  readonly api: AdoptionApi;
  readonly logger: Logger;
}

const CLAIM_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function parseClaim(text: string | undefined): { namespace: string; name: string } {
  const [namespace = "", name = "", ...rest] = (text ?? "").split("/");
  if (rest.length > 0 || !NAMESPACE.test(namespace) || !CLAIM_NAME.test(name)) throw invalidArgument(`--pvc must be NAMESPACE/NAME (Kubernetes names), got ${JSON.stringify(text ?? "")}`);
  return { namespace, name };
}

/** The pool host: --host, else the one host whose adoptRoots allow the dataset. */
function chooseHost(config: Config, dataset: string, wanted: string | undefined): string {
  if (wanted !== undefined) {
    if (!config.poolHosts.some((h) => h.name === wanted)) throw invalidArgument(`--host ${wanted} is not a pool host in the config (have: ${config.poolHosts.map((h) => h.name).join(", ")})`);
    return wanted;
  }
  if (config.poolHosts.length === 1) return config.poolHosts[0]?.name ?? "";
  const allowing = config.poolHosts.filter((h) => adoptionProblem(h, dataset) === undefined);
  if (allowing.length === 1) return allowing[0]?.name ?? "";
  throw invalidArgument(`say which pool host holds ${dataset} with --host (${allowing.length === 0 ? "no pool host's adoptRoots allow it" : `the adoptRoots of ${allowing.map((h) => h.name).join(", ")} allow it`})`);
}

/**
 * Which PV, if any, stands in the way. The dataset counts as used by a PV whose handle or
 * volumeAttributes name it (zcsi's own or adopted), or whose hostPath/local path is its
 * mountpoint. The PV this very adoption would create (same handle, same claim) is not in the
 * way: it is a retry. Read-only adoptions share the dataset with each other, never with a writer.
 */
export function conflictingPv(pvs: readonly PvSummary[], want: { volumeId: string; poolHost: string; dataset: string; mountpoint: string; readOnly: boolean; namespace: string; claim: string }): { conflict?: string; existing?: PvSummary } {
  let existing: PvSummary | undefined;
  for (const pv of pvs) {
    const handle = pv.volumeHandle ?? "";
    const adoptedHere = isAdoptedId(handle) && handle.startsWith(`${want.poolHost}:${want.dataset}#`);
    const named = adoptedHere || (pv.poolHost === want.poolHost && pv.dataset === want.dataset) || handle === `${want.poolHost}:${want.dataset}`;
    const byPath = pv.path !== undefined && pv.path === want.mountpoint;
    if (!named && !byPath) continue;
    if (handle === want.volumeId) {
      if (pv.claim?.namespace === want.namespace && pv.claim.name === want.claim) {
        existing = pv;
        continue;
      }
      return { conflict: `PV ${pv.name} already adopts it for ${pv.claim ? `${pv.claim.namespace}/${pv.claim.name}` : "no claim"}` };
    }
    const reader = adoptedHere && pv.readOnly && handle.includes("#adopted-ro-");
    if (want.readOnly && reader) continue;
    return { conflict: `PV ${pv.name} already uses it${reader ? " (read-only; a read-write adoption needs it alone)" : ""}${byPath ? ` (path ${pv.path})` : ""}` };
  }
  return existing ? { existing } : {};
}

export async function adopt(config: Config, flags: AdoptFlags, deps: AdoptDeps, write: (text: string) => void): Promise<number> {
  const dataset = (flags.dataset ?? "").replace(/\/+$/, "");
  if (dataset === "") throw invalidArgument("usage: zcsi adopt DATASET --pvc NAMESPACE/NAME [--host H] [--read-only] [--snapshot-schedule S] [--replicate-to HOST[,HOST]] [--dry-run]");
  const claim = parseClaim(flags.pvc);
  const readOnly = flags.readOnly === true;
  const parameters = adoptParameters(flags);
  const asked = Object.keys(parameters).length > 0;
  if (readOnly && asked) throw invalidArgument("--snapshot-schedule, --replicate-to and --replication-interval change the dataset; a read-only adoption changes nothing on it (set them on its read-write adoption)");
  const poolHost = chooseHost(config, dataset, flags.host);
  const volumeId = formatAdoptedId(poolHost, dataset, { readOnly, namespace: claim.namespace });
  const ref = parseAdoptedId(volumeId, config.poolHosts); // the config's rules: NotFound names the problem
  const adopted = new AdoptedVolumes(deps.hosts);
  const props = await adopted.read(ref, [PROP.pv]);
  if (!props) throw notFound(`dataset ${dataset} does not exist on pool host ${poolHost}`);
  const problem = unservable(dataset, props);
  if (problem !== undefined) throw failedPrecondition(`cannot adopt: ${problem}`);
  const mountpoint = props.get("mountpoint")?.value ?? "";
  const { conflict, existing } = conflictingPv(await deps.api.listPvs(), { volumeId, poolHost, dataset, mountpoint, readOnly, namespace: claim.namespace, claim: claim.name });
  if (conflict !== undefined) throw failedPrecondition(`cannot adopt ${poolHost}:${dataset}: ${conflict}; nothing was changed`);
  const { pv, pvc } = adoptionObjects({
    driverName: config.driverName,
    volumeId,
    poolHost,
    dataset,
    mountpoint,
    namespace: claim.namespace,
    claimName: claim.name,
    readOnly,
    capacityBytes: adoptedSize(dataset, props).capacityBytes,
    storageClassName: flags.storageClass ?? "",
  });
  // Validated like a StorageClass's parameters (modify.ts) before anything changes; the stored
  // ones of an earlier adoption count, as in a ModifyVolume.
  const asVolume = toAdoptedVolume({ ...ref, readOnly: false }, new Map([...props, [PROP.adopted, { value: "read-write", source: "local" }]]));
  if (asked && asVolume) planModification(asVolume, parameters, deps.hosts.names);
  if (flags.dryRun === true) {
    write(`${stringify(pv)}---\n${stringify(pvc)}`);
    return 0;
  }
  const log = { op: "adopt", volumeId, poolHost, dataset };
  const mark = readOnly ? "read-only" : "read-write";
  // A read-only adoption never downgrades the mark of a read-write one (the PV check above
  // refused that case; this keeps a retry or a race from weakening it).
  const pvName = adoptedPvName(volumeId, dataset);
  if (adoptionMark(props) !== mark && !(readOnly && adoptionMark(props) === "read-write")) await deps.hosts.get(poolHost).zfs.set(dataset, { [PROP.adopted]: mark });
  // The read-write adoption's PV, as on zcsi's volumes: the snapshotter's and the replicator's Events and annotations go there.
  if (!readOnly && ownUserPropertyValue(props.get(PROP.pv)) !== pvName) await deps.hosts.get(poolHost).zfs.set(dataset, { [PROP.pv]: pvName });
  if (asked && asVolume) {
    await modifyVolume(deps.hosts.get(poolHost), asVolume, parameters, deps.hosts.names, deps.logger);
    deps.logger.info({ ...log, parameters }, "snapshot schedule / replication set on the adopted dataset");
  }
  if (!existing) {
    await deps.api.createPv(pv);
    deps.logger.info({ ...log, pv: pvName }, "PersistentVolume created");
  }
  const bound = await deps.api.pvcVolumeName(claim.namespace, claim.name);
  if (bound === undefined) {
    await deps.api.createPvc(claim.namespace, pvc);
    deps.logger.info({ ...log, pvc: `${claim.namespace}/${claim.name}` }, "PersistentVolumeClaim created");
  } else if (bound !== pvName) {
    throw alreadyExists(`PVC ${claim.namespace}/${claim.name} exists and is bound to ${bound || "no PV yet"}, not ${pvName}; delete it or choose another name (PV ${pvName} stays, claimed for that name)`);
  }
  const extras = Object.entries(parameters).map(([k, v]) => `${k}=${v}`).join(", ");
  write(`adopted ${poolHost}:${dataset}${readOnly ? " read-only" : ""}${extras ? ` with ${extras}` : ""} as PV ${pvName}, claimed by PVC ${claim.namespace}/${claim.name} (volume ${volumeId})\n`);
  return 0;
}

/** Wiring for cli.ts: the config's pool hosts, the kubeconfig (in-cluster in the controller pod). */
export async function runAdoptCommand(config: Config, flags: AdoptFlags, logger: Logger, write: (text: string) => void): Promise<number> {
  const { connectPoolHosts } = await import("./pool-hosts.js");
  const { loadKubeConfig } = await import("../k8s/client.js");
  const { KubeAdoptionApi } = await import("../k8s/kube-adopt.js");
  const hosts = connectPoolHosts(config, logger);
  try {
    // A refusal throws: cli.ts prints it on stderr and exits 1, and nothing was changed.
    return await adopt(config, flags, { hosts, api: new KubeAdoptionApi(loadKubeConfig()), logger }, write);
  } finally {
    await hosts.close();
  }
}
