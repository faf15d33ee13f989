import { invalidArgument } from "../errors.js";

/**
 * ZFS names, validated before they reach an argv (zfsconcepts(7) "Naming"; zpool-create(8)).
 *
 * zcsi is deliberately stricter than ZFS: ZFS (OpenZFS ≥ 0.8) also allows spaces in names,
 * and `%` appears in internal names (`%recv`, clone swaps). We accept neither, so a name we
 * build or receive is always one harmless argv word and one `-H` output column. We also refuse
 * a leading `-` on every component, not only the first, so no name can ever read as an option.
 */

/** ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL. */
export const MAX_NAME_LENGTH = 255;
/** zfsprops(7) "User Properties": names are at most 256 characters. */
export const MAX_USER_PROPERTY_NAME_LENGTH = 256;

const COMPONENT = /^[A-Za-z0-9_.:-]+$/;
const POOL_START = /^[A-Za-z]/;
// zpool-create(8): "mirror", "raidz", "draid", "spare" and "log" are reserved, as are names
// beginning with mirror, raidz, draid and spare; pool_namecheck also refuses c[0-9]... (disk names).
const RESERVED_POOL = /^(mirror|raidz|draid|spare).*$|^log$|^c[0-9]/;
// zfsprops(7): "lowercase letters, numbers, and the punctuation characters colon, dash,
// period and underscore"; must contain a colon; cannot begin with a dash.
const USER_PROPERTY = /^[a-z0-9:._-]+$/;

function describe(name: unknown): string {
  if (typeof name !== "string") return `(${typeof name})`;
  return JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
}

function fail(what: string, name: unknown, why: string): never {
  throw invalidArgument(`invalid ${what} name ${describe(name)}: ${why}`);
}

function checkComponent(what: string, name: string, component: string, label: string): void {
  if (component.length === 0) fail(what, name, `empty ${label} (leading, trailing or doubled separator)`);
  if (component === "." || component === "..") fail(what, name, `${label} "${component}" is not allowed`);
  if (component.startsWith("-")) fail(what, name, `${label} ${describe(component)} starts with "-"`);
  if (!COMPONENT.test(component)) {
    const bad = [...component].find((c) => !COMPONENT.test(c)) ?? "";
    fail(what, name, `${label} ${describe(component)} contains ${JSON.stringify(bad)}; allowed are A-Z a-z 0-9 _ . : -`);
  }
}

function checkString(what: string, name: unknown): asserts name is string {
  if (typeof name !== "string") fail(what, name, "not a string");
  if (name.length === 0) fail(what, name, "empty");
  if (name.length > MAX_NAME_LENGTH) fail(what, name, `${name.length} characters, the limit is ${MAX_NAME_LENGTH}`);
}

/** A pool name: one component starting with a letter, not a reserved vdev keyword. */
export function validatePool(name: string): string {
  checkString("pool", name);
  if (name.includes("/") || name.includes("@")) fail("pool", name, 'a pool name has no "/" or "@"');
  checkComponent("pool", name, name, "pool name");
  if (!POOL_START.test(name)) fail("pool", name, "a pool name must start with a letter");
  if (RESERVED_POOL.test(name)) fail("pool", name, "reserved by zpool (vdev keyword or disk-like name)");
  return name;
}

/** A filesystem or volume: `pool[/component]*`. Returns the name so it can be used inline. */
export function validateDataset(name: string): string {
  checkString("dataset", name);
  if (name.includes("@")) fail("dataset", name, 'contains "@" (that is a snapshot name)');
  if (name.includes("#")) fail("dataset", name, 'contains "#" (that is a bookmark name)');
  const components = name.split("/");
  components.forEach((c, i) => checkComponent("dataset", name, c, i === 0 ? "pool component" : "component"));
  if (!POOL_START.test(name)) fail("dataset", name, "the pool component must start with a letter");
  return name;
}

/** A snapshot: `dataset@snap` with exactly one `@` and a snap component from the same charset. */
export function validateSnapshot(name: string): string {
  checkString("snapshot", name);
  const at = name.indexOf("@");
  if (at < 0) fail("snapshot", name, 'no "@" (expected dataset@snapshot)');
  if (name.indexOf("@", at + 1) >= 0) fail("snapshot", name, 'more than one "@"');
  const dataset = name.slice(0, at);
  const snap = name.slice(at + 1);
  try {
    validateDataset(dataset);
  } catch (e) {
    fail("snapshot", name, `dataset part: ${e instanceof Error ? e.message : String(e)}`);
  }
  checkComponent("snapshot", name, snap, "snapshot component");
  return name;
}

/** Either a dataset or a snapshot (what `zfs get`, `zfs set`, `zfs destroy` accept). */
export function validateDatasetOrSnapshot(name: string): string {
  return typeof name === "string" && name.includes("@") ? validateSnapshot(name) : validateDataset(name);
}

/** A user property name such as `zcsi:name` (zfsprops(7) "User Properties"). */
export function validateUserProperty(name: string): string {
  const what = "user property";
  if (typeof name !== "string") fail(what, name, "not a string");
  if (name.length === 0) fail(what, name, "empty");
  if (name.length > MAX_USER_PROPERTY_NAME_LENGTH) {
    fail(what, name, `${name.length} characters, the limit is ${MAX_USER_PROPERTY_NAME_LENGTH}`);
  }
  if (!name.includes(":")) fail(what, name, 'must contain ":" (module:property)');
  if (name.startsWith("-")) fail(what, name, 'starts with "-"');
  if (!USER_PROPERTY.test(name)) {
    const bad = [...name].find((c) => !USER_PROPERTY.test(c)) ?? "";
    fail(what, name, `contains ${JSON.stringify(bad)}; allowed are a-z 0-9 : . _ -`);
  }
  return name;
}

/** The dataset part of a snapshot name (`tank/a@s` → `tank/a`), or the name itself. */
export function datasetOf(name: string): string {
  const at = name.indexOf("@");
  return at < 0 ? name : name.slice(0, at);
}

/** The pool a dataset or snapshot lives in (`tank/a@s` → `tank`). */
export function poolOf(name: string): string {
  return datasetOf(name).split("/")[0] ?? name;
}

/** The parent dataset, or undefined for a pool's root dataset. */
export function parentOf(dataset: string): string | undefined {
  const slash = dataset.lastIndexOf("/");
  return slash < 0 ? undefined : dataset.slice(0, slash);
}

/**
 * True only when `child` is a strict descendant of `parent`, compared component by component:
 * `tank/k8s/a` is below `tank/k8s`, `tank/k8s2` is not, and nothing is below itself.
 * A snapshot is below the datasets above its own dataset, and below its own dataset.
 */
export function isBelow(parent: string, child: string): boolean {
  if (parent.length === 0 || parent.includes("@")) return false;
  const childDataset = datasetOf(child);
  if (child.includes("@") && childDataset === parent) return true;
  return childDataset.startsWith(`${parent}/`) && childDataset.length > parent.length + 1;
}
