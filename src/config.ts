import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { invalidArgument } from "./errors.js";

/** One host with a ZFS pool, reached over SSH. `name` equals its Kubernetes node name. */
export interface PoolHostConfig {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** Every dataset zcsi creates lives below this one (e.g. `tank/k8s`). */
  readonly parentDataset: string;
  /** Where the parent dataset's children are mounted on the pool host. */
  readonly mountRoot: string;
  /** Pinned host public key(s), OpenSSH `known_hosts`/`.pub` form: `ssh-ed25519 AAAA...`. */
  readonly hostKeys: readonly string[];
  /** Prefix zfs/zpool with `sudo -n` (for a non-root user without `zfs allow`). */
  readonly sudo: boolean;
  /**
   * Commands a process runs on this host at once; more wait their turn. zfs-fuse wedged
   * (every FUSE call hanging) under 10 concurrent `zfs create` into a pool of 1000 datasets.
   * parseConfig always sets it; absent (a config built by hand): DEFAULT_MAX_CONCURRENT_COMMANDS.
   */
  readonly maxConcurrentCommands?: number;
  /**
   * Datasets below these may be adopted as PVs (`zcsi adopt`, docs/coming-from-hostpath.md):
   * datasets zcsi did not create, which it then serves but never destroys. Empty by default:
   * nothing outside parentDataset is zcsi's to touch unless the operator lists it here.
   */
  readonly adoptRoots?: readonly string[];
}

/** Config `listingTimeoutMs` when absent (5 min): see zfs/listing-timeout.ts. */
export const DEFAULT_LISTING_TIMEOUT_MS = 300_000;

export interface Config {
  readonly driverName: string;
  readonly poolHosts: readonly PoolHostConfig[];
  /** Path of the SSH private key (a mounted Secret in a cluster). Never logged. */
  readonly privateKeyFile: string;
  /** Capacity used when a CreateVolume asks for none (CSI lets the plugin choose). */
  readonly defaultCapacityBytes: bigint;
  /** Per-command timeout for commands run on pool hosts. */
  readonly commandTimeoutMs: number;
  /**
   * The least time a listing gets (a `zfs get -d|-r` or `zfs list` under the parent, whose time
   * grows with the volume count): ListVolumes, ListSnapshots, the snapshotter's and the
   * replicator's discovery. It grows past this with what the host was seen to need
   * (zfs/listing-timeout.ts). Absent: DEFAULT_LISTING_TIMEOUT_MS.
   */
  readonly listingTimeoutMs?: number;
  /**
   * Whether ControllerGetCapabilities lists the alpha GET_SNAPSHOT (CSI v1.12). Off by default:
   * no sidecar deploy/ ships calls GetSnapshot (the external-snapshotter checks a snapshot with
   * ListSnapshots), and a sidecar built on csi-lib-utils < 0.21 crashes at start on a capability
   * its CSI spec version does not know (deploy/README.md, "Sidecar versions"). The RPC itself
   * answers either way.
   */
  readonly advertiseGetSnapshot?: boolean;
}

export const DEFAULT_DRIVER_NAME = "zfs.zcsi.dev";
export const DEFAULT_MAX_CONCURRENT_COMMANDS = 4;
/** SSH channels per pool host connection: below sshd's default MaxSessions (10), leaving room for an operator's session. */
export const MAX_SSH_CHANNELS = 8;
export const DEFAULT_CAPACITY_BYTES = 1n << 30n; // 1 GiB

// CSI driver names follow the DNS-1123 subdomain form (CSI spec, GetPluginInfo).
const DRIVER_NAME = /^(?=.{1,63}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const HOST_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}\$?$/;
const HOST_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|rsa-sha2-(256|512)) [A-Za-z0-9+/]+={0,2}( .*)?$/;

function field<T>(obj: Record<string, unknown>, key: string, where: string, check: (v: unknown) => v is T, what: string): T {
  const value = obj[key];
  if (!check(value)) throw invalidArgument(`config: ${where}.${key} must be ${what}`);
  return value;
}

const isString = (v: unknown): v is string => typeof v === "string" && v.length > 0;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function parsePoolHost(raw: unknown, index: number): PoolHostConfig {
  const where = `poolHosts[${index}]`;
  if (!isObject(raw)) throw invalidArgument(`config: ${where} must be an object`);
  const name = field(raw, "name", where, isString, "a non-empty string (the Kubernetes node name)");
  if (!HOST_NAME.test(name)) throw invalidArgument(`config: ${where}.name ${JSON.stringify(name)} is not a valid node name`);
  const address = field(raw, "address", where, isString, "a host name or IP address");
  const port = raw.port === undefined ? 22 : Number(raw.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidArgument(`config: ${where}.port must be 1..65535`);
  const user = raw.user === undefined ? "root" : field(raw, "user", where, isString, "a user name");
  if (!USER_NAME.test(user)) throw invalidArgument(`config: ${where}.user ${JSON.stringify(user)} is not a valid user name`);
  const parentDataset = field(raw, "parentDataset", where, isString, "a dataset name such as tank/k8s").replace(/\/+$/, "");
  if (!/^[A-Za-z][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)+$/.test(parentDataset) || parentDataset.split("/").some((c) => c === "." || c === "..")) {
    // The parent must be below the pool root: zcsi never creates datasets directly in a pool.
    throw invalidArgument(`config: ${where}.parentDataset ${JSON.stringify(parentDataset)} must be a dataset below a pool, e.g. tank/k8s`);
  }
  const mountRoot = field(raw, "mountRoot", where, isString, "an absolute path");
  if (!mountRoot.startsWith("/") || mountRoot.split("/").includes("..")) throw invalidArgument(`config: ${where}.mountRoot must be an absolute path`);
  const keys = raw.hostKeys ?? raw.hostKey;
  const hostKeys = (Array.isArray(keys) ? keys : [keys]).map((k) => (typeof k === "string" ? k.trim() : k));
  if (hostKeys.length === 0 || !hostKeys.every((k): k is string => typeof k === "string" && HOST_KEY.test(k))) {
    throw invalidArgument(`config: ${where}.hostKey must be the pool host's public key ("ssh-ed25519 AAAA..."); zcsi never connects without a pinned host key`);
  }
  const sudo = raw.sudo === undefined ? false : raw.sudo === true;
  const maxConcurrentCommands = raw.maxConcurrentCommands === undefined ? DEFAULT_MAX_CONCURRENT_COMMANDS : raw.maxConcurrentCommands;
  if (typeof maxConcurrentCommands !== "number" || !Number.isInteger(maxConcurrentCommands) || maxConcurrentCommands < 1 || maxConcurrentCommands > MAX_SSH_CHANNELS) {
    throw invalidArgument(`config: ${where}.maxConcurrentCommands must be an integer from 1 to ${MAX_SSH_CHANNELS} (the SSH channels zcsi opens per host), got ${JSON.stringify(maxConcurrentCommands)}`);
  }
  const adoptRoots = parseAdoptRoots(raw.adoptRoots, where, parentDataset);
  return { name, address, port, user, parentDataset, mountRoot: mountRoot.replace(/\/+$/, "") || "/", hostKeys, sudo, maxConcurrentCommands, adoptRoots };
}

const DATASET_NAME = /^[A-Za-z][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)*$/;

/** `adoptRoots`: dataset names (a pool's name allowed: its datasets may be adopted, never the pool itself), none overlapping parentDataset. */
function parseAdoptRoots(raw: unknown, where: string, parentDataset: string): string[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw invalidArgument(`config: ${where}.adoptRoots must be a list of dataset names`);
  return raw.map((root: unknown, i) => {
    const name = typeof root === "string" ? root.replace(/\/+$/, "") : "";
    if (!DATASET_NAME.test(name) || name.split("/").some((c) => c === "." || c === "..")) throw invalidArgument(`config: ${where}.adoptRoots[${i}] must be a dataset name such as tank/apps`);
    // Inside the parent every dataset is zcsi's own volume (or a replica): adopting one would hand it out twice.
    if (name === parentDataset || name.startsWith(`${parentDataset}/`)) throw invalidArgument(`config: ${where}.adoptRoots[${i}] ${name} is inside parentDataset ${parentDataset}, whose datasets zcsi creates itself`);
    return name;
  });
}

/** Validates a parsed config document. Every problem names the field. */
export function parseConfig(raw: unknown, overrides: Partial<Record<"driverName" | "privateKeyFile", string>> = {}): Config {
  if (!isObject(raw)) throw invalidArgument("config: the document must be an object");
  const driverName = overrides.driverName ?? (raw.driverName === undefined ? DEFAULT_DRIVER_NAME : String(raw.driverName));
  if (!DRIVER_NAME.test(driverName)) throw invalidArgument(`config: driverName ${JSON.stringify(driverName)} must be a DNS subdomain of at most 63 characters`);
  if (!Array.isArray(raw.poolHosts) || raw.poolHosts.length === 0) throw invalidArgument("config: poolHosts must list at least one pool host");
  const poolHosts = raw.poolHosts.map(parsePoolHost);
  const names = new Set<string>();
  for (const host of poolHosts) {
    if (names.has(host.name)) throw invalidArgument(`config: pool host ${host.name} is listed twice`);
    names.add(host.name);
  }
  const privateKeyFile = overrides.privateKeyFile ?? (typeof raw.privateKeyFile === "string" ? raw.privateKeyFile : "");
  if (!privateKeyFile) throw invalidArgument("config: privateKeyFile (or --private-key-file) is required");
  let defaultCapacityBytes = DEFAULT_CAPACITY_BYTES;
  if (raw.defaultCapacityBytes !== undefined) {
    const text = String(raw.defaultCapacityBytes);
    if (!/^[1-9][0-9]*$/.test(text)) throw invalidArgument("config: defaultCapacityBytes must be a positive integer");
    defaultCapacityBytes = BigInt(text);
  }
  const commandTimeoutMs = raw.commandTimeoutMs === undefined ? 60_000 : Number(raw.commandTimeoutMs);
  if (!Number.isInteger(commandTimeoutMs) || commandTimeoutMs < 100) throw invalidArgument("config: commandTimeoutMs must be an integer >= 100");
  const listingTimeoutMs = raw.listingTimeoutMs === undefined ? Math.max(DEFAULT_LISTING_TIMEOUT_MS, commandTimeoutMs) : Number(raw.listingTimeoutMs);
  if (!Number.isInteger(listingTimeoutMs) || listingTimeoutMs < commandTimeoutMs) throw invalidArgument(`config: listingTimeoutMs must be an integer >= commandTimeoutMs (${commandTimeoutMs})`);
  if (raw.advertiseGetSnapshot !== undefined && typeof raw.advertiseGetSnapshot !== "boolean") throw invalidArgument("config: advertiseGetSnapshot must be true or false");
  const advertiseGetSnapshot = raw.advertiseGetSnapshot === true;
  return { driverName, poolHosts, privateKeyFile, defaultCapacityBytes, commandTimeoutMs, listingTimeoutMs, advertiseGetSnapshot };
}

export function loadConfig(path: string, overrides: Parameters<typeof parseConfig>[1] = {}): Config {
  const text = readFileSync(path, "utf8");
  return parseConfig(parseYaml(text) as unknown, overrides);
}
