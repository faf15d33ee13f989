import { internal } from "../errors.js";
import type { DatasetProperties, PropertyMap } from "../zfs/parse.js";
import { OWN_SOURCE } from "../zfs/parse.js";
import { PROP } from "./properties.js";
import { SNAPSHOT_PROPS } from "./snapshots.js";

/**
 * DeleteSnapshot in ONE command on OpenZFS: a channel program (zfs-program(8)) that reads what
 * the lookup `zfs get` reads and destroys (`defer`, as `zfs destroy -d`) only a live CSI
 * snapshot of a zcsi volume, all in one txg, so nothing can change between the check and the
 * destroy. The ZFS CLI has no conditional destroy; this is one.
 *
 * The rule it enforces before destroying is the `csi`, not scheduled, case of
 * classifySnapshot (snapshots.ts): the dataset carries its own zcsi:csi-name, the snapshot its
 * own zcsi:csi-snapshot-name, a zcsi:group-members mark (if any) lists the dataset, and the
 * snapshot is not already deferred. It returns the properties it read, and the caller answers
 * from them with classifySnapshot itself (absent, deleted, scheduled, not a CSI snapshot), so
 * the answer has one source; a unit test runs both rules over the same cases.
 *
 * The snapshot name and the property names arrive as `argv`, never as Lua source.
 * `zfs.sync.destroy` does not unmount a snapshot that is mounted under `.zfs/snapshot` (the
 * CLI's destroy ioctl does): that is EBUSY here, and the caller retries with `zfs destroy -d`.
 */
export const DELETE_SNAPSHOT_PROGRAM = `-- zcsi DeleteSnapshot (src/volumes/delete-snapshot-program.ts says why and how).
-- argv: <dataset>@<snapshot>, the volume mark, the CSI snapshot mark, the group mark, then
-- the other user properties to report.
local argv = (...)["argv"]
local snapshot = argv[1]
local dataset = string.sub(snapshot, 1, string.find(snapshot, "@", 1, true) - 1)
local leaf = string.match(dataset, "[^/]*$")
if not zfs.exists(snapshot) then
  return { exists = false }
end
-- Only a value set on the dataset itself counts: its setpoint is the dataset's own name (an
-- inherited value names an ancestor, a received one "$recvd").
local function own(name, property)
  local value, setpoint = zfs.get_prop(name, property)
  if value == nil or value == "" or value == "-" or setpoint ~= name then
    return nil
  end
  return value
end
local snapshotProps, datasetProps = {}, {}
for i = 2, #argv do
  snapshotProps[argv[i]] = own(snapshot, argv[i])
  datasetProps[argv[i]] = own(dataset, argv[i])
end
local deferred = zfs.get_prop(snapshot, "defer_destroy")
snapshotProps["defer_destroy"] = tostring(deferred)
snapshotProps["creation"] = tostring(zfs.get_prop(snapshot, "creation"))
snapshotProps["referenced"] = tostring(zfs.get_prop(snapshot, "referenced"))
local members = snapshotProps[argv[4]]
local member = members == nil or string.find("," .. members .. ",", "," .. leaf .. ",", 1, true) ~= nil
local result = { exists = true, snapshot = snapshotProps, dataset = datasetProps, destroyed = false, error = 0 }
if datasetProps[argv[2]] ~= nil and snapshotProps[argv[3]] ~= nil and member and tostring(deferred) ~= "on" then
  local err = zfs.sync.destroy{snapshot, defer = true}
  result.error = err
  result.destroyed = err == 0
end
return result
`;

/**
 * argv for the program: the snapshot, then the user properties of a snapshot lookup
 * (SNAPSHOT_PROPS), the three it decides on first, in the order the script reads them.
 */
export function deleteSnapshotProgramArgs(snapshot: string): string[] {
  const deciding: string[] = [PROP.csiName, PROP.snapshotName, PROP.groupMembers];
  return [snapshot, ...deciding, ...SNAPSHOT_PROPS.filter((p) => p.includes(":") && !deciding.includes(p))];
}

export interface DeleteSnapshotOutcome {
  /** What the program read, shaped as a `zfs get` of the dataset and the snapshot (own values only). */
  readonly all: PropertyMap;
  readonly destroyed: boolean;
  /** The errno of `zfs.sync.destroy` when it was tried and failed; 0 otherwise. */
  readonly error: number;
}

function stringMap(value: unknown, what: string): DatasetProperties {
  if (value === undefined) return new Map();
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw internal(`zfs program (DeleteSnapshot): ${what} is not an object`);
  const props: DatasetProperties = new Map();
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") throw internal(`zfs program (DeleteSnapshot): ${what}.${k} is not a string`);
    // Native properties are read-only here (source `-`, as `zfs get` prints them); user properties are own values.
    props.set(k, { value: v, source: k.includes(":") ? OWN_SOURCE : "-" });
  }
  return props;
}

/** Reads the program's return value (from `zfs program -j`) for `snapshot`. */
export function parseDeleteSnapshotResult(snapshot: string, returned: unknown): DeleteSnapshotOutcome {
  if (typeof returned !== "object" || returned === null) throw internal(`zfs program (DeleteSnapshot): unexpected result ${JSON.stringify(returned)}`);
  const r = returned as Record<string, unknown>;
  if (typeof r["exists"] !== "boolean") throw internal(`zfs program (DeleteSnapshot): result has no "exists": ${JSON.stringify(returned)}`);
  const all: PropertyMap = new Map();
  if (!r["exists"]) return { all, destroyed: false, error: 0 };
  const error = r["error"];
  if (typeof error !== "number" || typeof r["destroyed"] !== "boolean") throw internal(`zfs program (DeleteSnapshot): unexpected result ${JSON.stringify(returned)}`);
  all.set(snapshot.slice(0, snapshot.indexOf("@")), stringMap(r["dataset"], "dataset"));
  all.set(snapshot, stringMap(r["snapshot"], "snapshot"));
  return { all, destroyed: r["destroyed"], error };
}
