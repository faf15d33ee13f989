import { internal } from "../errors.js";
import type { ExecResult, Executor } from "../exec/executor.js";
import {
  listColumns,
  zfsClone,
  zfsCreate,
  zfsDestroy,
  zfsGet,
  zfsInherit,
  zfsList,
  zfsMount,
  zfsProgram,
  zfsPromote,
  zfsRollback,
  zfsHold,
  zfsHolds,
  zfsReceive,
  zfsReceiveAbort,
  zfsRelease,
  zfsRename,
  zfsSend,
  zfsSendResume,
  zfsSet,
  zfsSnapshot,
  zfsUnmount,
  zfsVersion,
  zpoolList,
  ZPOOL_LIST_COLUMNS,
  type ListType,
  type Props,
  type SendFlags,
} from "./argv.js";
import { capabilitiesFromProbe, type Capabilities } from "./capabilities.js";
import { hasReason, isBusy, onlyMissingDatasets, zfsError, type ZfsReason } from "./errors.js";
import { validateDatasetOrSnapshot, validatePool } from "./names.js";
import { ListingTimeouts } from "./listing-timeout.js";
import { relay } from "./relay.js";
import type { Hold, PoolInfo, StreamedCommand, ZfsOptions } from "./types.js";

export type { Hold, PoolInfo, StreamedCommand, ZfsOptions } from "./types.js";
import { GetOutputParser, parseProgramOutput, parseRows, PropertyView, type PropertyMap } from "./parse.js";
import { retryWhileBusy } from "./retry.js";


const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A typed ZFS client over an Executor. Each method runs exactly one zfs/zpool command, except
 * where documented: `destroy`, `rename`, `promote` (busy retries; rename also remounts), `sendReceive` (two, streamed), `set` with several properties on zfs-fuse (one
 * call per property), `pool` (two commands), and the first `capabilities()` call (one probe,
 * then cached). Failures are classified by `zfs/errors.ts` into typed ZcsiErrors.
 */
export class Zfs {
  private capabilitiesPromise: Promise<Capabilities> | undefined;
  private readonly prefix: readonly string[];
  private readonly busyRetryBudgetMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly listingTimeouts: ListingTimeouts;

  constructor(
    readonly exec: Executor,
    private readonly options: ZfsOptions = {},
  ) {
    this.prefix = options.sudo ? ["sudo", "-n"] : [];
    this.busyRetryBudgetMs = options.busyRetryBudgetMs ?? 5000;
    this.sleep = options.sleep ?? defaultSleep;
    this.listingTimeouts = new ListingTimeouts({
      ...(options.listingTimeoutMs !== undefined && { floorMs: options.listingTimeoutMs }),
      ...(options.now !== undefined && { now: options.now }),
    });
  }

  /** Runs argv; returns the result whatever the exit code. `timeoutMs` overrides the client's per-command timeout. */
  private async runRaw(argv: readonly string[], expectedExitCodes?: readonly number[], options: { timeoutMs?: number; stdin?: string; onStdout?: (chunk: Buffer) => void } = {}): Promise<{ argv: readonly string[]; result: ExecResult }> {
    const full = [...this.prefix, ...argv];
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs;
    const { stdin, onStdout } = options;
    const result = await this.exec.run(full, { ...(timeoutMs !== undefined && { timeoutMs }), ...(expectedExitCodes && { expectedExitCodes }), ...(stdin !== undefined && { stdin }), ...(onStdout && { onStdout }) });
    return { argv: full, result };
  }

  /** Runs a listing (argv whose output grows with the datasets listed) with its own timeout (listing-timeout.ts). */
  private runListing(argv: readonly string[], expectedExitCodes?: readonly number[], onStdout?: (chunk: Buffer) => void): Promise<{ argv: readonly string[]; result: ExecResult }> {
    return this.listingTimeouts.run(argv.join("\0"), (timeoutMs) => this.runRaw(argv, expectedExitCodes, { timeoutMs, ...(onStdout && { onStdout }) }));
  }

  /** Runs argv; a non-zero exit becomes a classified error. */
  private async run(argv: readonly string[]): Promise<string> {
    const { argv: full, result } = await this.runRaw(argv);
    if (result.exitCode !== 0) throw zfsError(this.exec.host, full, result);
    return result.stdout;
  }

  /** Runs argv; true on success, false when it failed for one of `expected`; otherwise throws. */
  private async runUnless(argv: readonly string[], ...expected: readonly ZfsReason[]): Promise<boolean> {
    try {
      await this.run(argv);
      return true;
    } catch (err) {
      if (hasReason(err, ...expected)) return false;
      throw err;
    }
  }

  /** `zfs create -o k=v ... <dataset>`: one call with every property. */
  async create(dataset: string, props: Props = {}, opts: { parents?: boolean } = {}): Promise<void> {
    await this.run(zfsCreate(dataset, props, opts));
  }

  /**
   * `zfs destroy [-r] [-d] <name>`. NotFound passes through (callers decide idempotency).
   *
   * "dataset is busy" is retried (see withBusyRetry): zfs-fuse answers it for ~50-100 ms after
   * `zfs create` (measured: 5 of 5 immediate destroys), real hosts while a process still holds
   * the mount. Before each retry of a filesystem we `zfs unmount` it (without -f), so the retry
   * does not race the mount again; an unmount that is itself busy just counts as a busy
   * attempt. We do not unmount before the first attempt: a long-lived volume's destroy then
   * costs one command, not two.
   */
  async destroy(name: string, opts: { recursive?: boolean; deferred?: boolean } = {}): Promise<void> {
    const argv = zfsDestroy(name, opts);
    const beforeRetry = name.includes("@") ? undefined : () => this.unmountUnlessBusy(name);
    await this.withBusyRetry(() => this.run(argv), beforeRetry);
  }

  private async unmountUnlessBusy(dataset: string): Promise<void> {
    try {
      await this.unmount(dataset);
    } catch (err) {
      if (!isBusy(err)) throw err;
    }
  }

  /** See retry.ts: "busy" retried with backoff within this client's budget. */
  private withBusyRetry(attempt: () => Promise<unknown>, beforeRetry?: () => Promise<void>): Promise<void> {
    return retryWhileBusy(attempt, { budgetMs: this.busyRetryBudgetMs, sleep: this.sleep, ...(beforeRetry && { beforeRetry }) });
  }

  /**
   * `zfs get -Hp -o name,property,value,source [-r|-d N] <props> <names...>`: one call for any
   * number of datasets and properties. Values are exact (`-p`). Unset user properties come back
   * as value `-` with source `-` (see parse.userPropertyValue).
   *
   * A missing name fails the whole call with NotFound (zfs still prints the others); with
   * `missingOk`, names that do not exist are just absent from the map. The map is in zfs's
   * output order, which is sorted by name (`batch10` before `batch2`), not argument order.
   */
  async get(
    names: readonly string[],
    props: readonly string[],
    opts: { recursive?: boolean; depth?: number; missingOk?: boolean } = {},
  ): Promise<PropertyMap> {
    // With missingOk, "does not exist" (exit 1) is an answer the caller expects, not a warning.
    // With -d or -r the output grows with the datasets below: a listing, with its own timeout.
    const listing = opts.recursive === true || opts.depth !== undefined;
    const argv0 = zfsGet(names, props, opts);
    const expected = opts.missingOk ? [1] : undefined;
    const parser = new GetOutputParser(); // parsed as it arrives: a listing's output is never held whole
    const onStdout = (chunk: Buffer): void => parser.write(chunk);
    const { argv, result } = await (listing ? this.runListing(argv0, expected, onStdout) : this.runRaw(argv0, expected, { onStdout }));
    if (result.exitCode !== 0) {
      if (!(opts.missingOk && result.exitCode === 1 && onlyMissingDatasets(result.stderr))) {
        throw zfsError(this.exec.host, argv, result);
      }
    }
    parser.write(result.stdout); // what an executor that does not stream returned
    return parser.end();
  }

  /**
   * `zfs list -H -o name,<props> -t <type> -r|-d N <root>`: one call. Rows are keyed by column;
   * `name` is always present. The root itself is included when it matches the type (as zfs
   * does). depth undefined lists the whole tree (-r). Values are as zfs prints them WITHOUT -p
   * (zfs-fuse has none): sizes are human-readable here; read numbers with get().
   */
  async list(
    root: string,
    opts: { type?: ListType; depth?: number; props: readonly string[] },
  ): Promise<Array<Record<string, string>>> {
    const { argv, result } = await this.runListing(zfsList(root, { ...opts, recursive: true }));
    if (result.exitCode !== 0) throw zfsError(this.exec.host, argv, result);
    return parseRows(result.stdout, listColumns(opts.props));
  }

  /**
   * `zfs set k=v ... <name>`. One call for all properties where the CLI allows it (OpenZFS);
   * zfs-fuse takes one assignment per call, so there it is one call per property, in order,
   * stopping at the first failure (earlier properties stay set: not atomic). A single property
   * never needs the capability probe.
   */
  async set(name: string, props: Props): Promise<void> {
    const entries = Object.entries(props);
    zfsSet(name, props); // validate everything before running anything
    if (entries.length === 1 || (await this.capabilities()).multiPropertySet) {
      await this.run(zfsSet(name, props));
      return;
    }
    for (const [k, v] of entries) await this.run(zfsSet(name, { [k]: v }));
  }

  /** `zfs inherit [-r] <property> <name>`. Native quota-like properties cannot be inherited (InvalidArgument). */
  async inherit(name: string, property: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.run(zfsInherit(name, property, opts));
  }

  /**
   * `zfs rename [-p] <from> <to>`. zfs-fuse refuses to rename a MOUNTED filesystem with
   * "dataset is busy" for as long as it stays mounted (measured; OpenZFS unmounts and remounts
   * by itself). So on "busy" a filesystem is unmounted (without -f) and the rename retried with
   * backoff; after a rename that needed the unmount, `zfs mount <to>` mounts it again (only the
   * renamed dataset: children unmounted with it stay unmounted). Cost on zfs-fuse: 4 commands
   * (rename, unmount, rename, mount); on OpenZFS: 1. Snapshots are retried without unmounting.
   */
  async rename(from: string, to: string, opts: { parents?: boolean } = {}): Promise<void> {
    const argv = zfsRename(from, to, opts);
    let unmounted = false;
    const beforeRetry = from.includes("@")
      ? undefined
      : async () => {
          await this.unmountUnlessBusy(from);
          unmounted = true;
        };
    try {
      await this.withBusyRetry(() => this.run(argv), beforeRetry);
    } catch (err) {
      // Leave things as we found them: a failed rename must not leave the volume unmounted.
      if (unmounted) await this.mount(from).catch(() => undefined);
      throw err;
    }
    if (unmounted) await this.mount(to);
  }

  /** `zfs snapshot [-r] -o k=v ... <dataset@snap>...` (several names: Capabilities.multiSnapshot). */
  async snapshot(snapshot: string | readonly string[], props: Props = {}, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.run(zfsSnapshot(snapshot, props, opts));
  }

  /** `zfs clone -o k=v ... <snapshot> <target>`. */
  async clone(snapshot: string, target: string, props: Props = {}, opts: { parents?: boolean } = {}): Promise<void> {
    await this.run(zfsClone(snapshot, target, props, opts));
  }

  /**
   * `zfs send <snapshot> | zfs receive -u <target>` on this host, without a shell: two streamed
   * commands (two SSH channels, or two processes) whose stdout/stdin this process joins, with
   * flow control end to end. Argv only, so no name ever meets a shell.
   *
   * Both exit codes count: a send that fails after writing part of a stream can leave a
   * receive that reads a clean EOF, and that must not pass for a copy. When the receive fails
   * first, the send is killed so it cannot block forever on a full pipe. The error named is
   * the root cause: that of whichever end failed first.
   *
   * A failed receive of a full stream normally removes what it created, but callers that need
   * certainty (a half-received dataset must never become a volume) destroy `target` themselves.
   * No timeout: a copy takes as long as the data needs.
   */
  async sendReceive(snapshot: string, target: string): Promise<void> {
    const recv = await this.startReceive(target);
    let send: StreamedCommand;
    try {
      send = await this.startSend(snapshot);
    } catch (err) {
      recv.stream.stdin.end();
      recv.stream.kill();
      await recv.stream.done.catch(() => undefined);
      throw err;
    }
    await relay(send, recv);
  }

  private async start(argv: readonly string[]): Promise<StreamedCommand> {
    const full = [...this.prefix, ...argv];
    const stream = await this.exec.stream(full);
    const host = this.exec.host;
    return { host, argv: full, stream, failure: (result) => zfsError(host, full, result) };
  }

  /** Starts `zfs send [-i <from>] <snapshot>` (see argv.zfsSend); the stream is its stdout. */
  startSend(snapshot: string, opts: { incrementalFrom?: string } & SendFlags = {}): Promise<StreamedCommand> {
    return this.start(zfsSend(snapshot, opts));
  }

  /** Starts `zfs send -t <token>`: the rest of an interrupted resumable receive. */
  startSendResume(token: string): Promise<StreamedCommand> {
    return this.start(zfsSendResume(token));
  }

  /** Starts `zfs receive -u [-s] [-o k=v] <dataset>`; the stream goes to its stdin. */
  startReceive(dataset: string, opts: { resumable?: boolean; props?: Props } = {}): Promise<StreamedCommand> {
    return this.start(zfsReceive(dataset, opts));
  }

  /** `zfs receive -A <dataset>`: drops the partial state of an interrupted resumable receive. */
  async receiveAbort(dataset: string): Promise<void> {
    await this.run(zfsReceiveAbort(dataset));
  }

  /**
   * `zfs hold <tag> <snapshot>`. Idempotent: a tag already on the snapshot ("tag already
   * exists on this dataset") is success, so a retried run does not fail on its own hold.
   */
  async hold(tag: string, snapshot: string): Promise<void> {
    await this.runUnless(zfsHold(tag, [snapshot]), "tagExists");
  }

  /**
   * `zfs release <tag> <snapshot>`, one snapshot per call (a multi-snapshot release fails as a
   * whole when one lacks the tag). Returns false when the tag was not there: already released.
   */
  async release(tag: string, snapshot: string): Promise<boolean> {
    return await this.runUnless(zfsRelease(tag, [snapshot]), "noSuchTag");
  }

  /** `zfs holds -H <snapshots...>` (OpenZFS; zfs-fuse lacks it: Unimplemented/Internal there). */
  async holds(snapshots: readonly string[]): Promise<Hold[]> {
    const stdout = await this.run(zfsHolds(snapshots));
    return parseRows(stdout, ["snapshot", "tag", "timestamp"], "zfs holds").map((r) => ({ snapshot: r.snapshot ?? "", tag: r.tag ?? "" }));
  }

  /** `zfs promote <clone>`; FailedPrecondition when it is not a clone; "busy" retried like rename. */
  async promote(dataset: string): Promise<void> {
    const argv = zfsPromote(dataset);
    await this.withBusyRetry(() => this.run(argv));
  }

  async rollback(snapshot: string, opts: { destroyNewer?: boolean } = {}): Promise<void> {
    await this.run(zfsRollback(snapshot, opts));
  }

  /** `zfs mount <dataset>`; already mounted is success ("filesystem already mounted"). */
  async mount(dataset: string): Promise<void> {
    await this.runUnless(zfsMount(dataset), "alreadyMounted");
  }

  /** `zfs unmount <dataset>`; already unmounted is success ("not currently mounted"). */
  async unmount(dataset: string): Promise<void> {
    await this.runUnless(zfsUnmount(dataset), "notMounted");
  }

  /** One `zfs get -H... type <name>`; true when it exists (dataset or snapshot). */
  async exists(name: string): Promise<boolean> {
    validateDatasetOrSnapshot(name);
    return await this.runUnless(zfsGet([name], ["type"]), "notFound");
  }

  /**
   * Pool health and exact space: TWO commands, run concurrently. zfs-fuse's zpool has neither
   * `list -p` nor `get -H`, so `zpool list -H` gives health only (its sizes are rounded, `250M`),
   * and the exact numbers come from `zfs get -Hp used,available <pool>` on the root dataset.
   * These are dataset-level numbers (after metadata and slop reservations): exactly what volumes
   * can use, which is what GetCapacity must report; raw vdev size would overstate it.
   */
  async pool(name: string): Promise<PoolInfo> {
    validatePool(name);
    const [zpoolOut, props] = await Promise.all([this.run(zpoolList(name)), this.get([name], ["used", "available"])]);
    const rows = parseRows(zpoolOut, ZPOOL_LIST_COLUMNS, "zpool list");
    const row = rows.find((r) => r.name === name);
    if (rows.length !== 1 || row === undefined) throw internal(`${this.exec.host}: zpool list ${name}: expected one row for ${name}, got ${rows.length}`);
    const root = PropertyView.of(props, name, this.exec.host);
    const allocatedBytes = root.integer("used");
    const freeBytes = root.integer("available");
    return { name, health: row.health ?? "", sizeBytes: allocatedBytes + freeBytes, freeBytes, allocatedBytes };
  }

  /**
   * `zfs program -j <pool> - <args...>`, `script` on stdin: one command, checks and changes in
   * one txg (argv.zfsProgram); returns the script's return value. A host that refuses channel
   * programs (permission denied: not root, no sudo; unsupported) is remembered: its
   * `capabilities().channelPrograms` is false from then on, and callers keep to their CLI path.
   */
  async program(pool: string, script: string, args: readonly string[]): Promise<unknown> {
    const { argv, result } = await this.runRaw(zfsProgram(pool, args), undefined, { stdin: script });
    if (result.exitCode === 0) return parseProgramOutput(this.exec.host, result.stdout);
    const err = zfsError(this.exec.host, argv, result);
    if (hasReason(err, "permissionDenied", "unsupported")) this.capabilitiesPromise = this.capabilities().then((caps) => ({ ...caps, channelPrograms: false }));
    throw err;
  }

  /** Probed once per client with `zfs version` (see capabilities.ts), then cached. A failed probe is not cached. */
  capabilities(): Promise<Capabilities> {
    if (this.capabilitiesPromise === undefined) {
      const probe = this.probe();
      this.capabilitiesPromise = probe;
      probe.catch(() => {
        if (this.capabilitiesPromise === probe) this.capabilitiesPromise = undefined;
      });
    }
    return this.capabilitiesPromise;
  }

  private async probe(): Promise<Capabilities> {
    const { argv, result } = await this.runRaw(zfsVersion());
    const found = capabilitiesFromProbe(result);
    if (found === undefined) throw zfsError(this.exec.host, argv, result);
    return found;
  }
}
