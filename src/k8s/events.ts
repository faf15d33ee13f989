import { randomBytes } from "node:crypto";
import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import type { Clock } from "../util/clock.js";

/**
 * Kubernetes Events on PersistentVolumes (and Nodes), so `kubectl describe pv` shows why a
 * volume's snapshots or replication are failing, and `kubectl describe node` why a replication
 * job from that Node's annotations is. Behind small interfaces: the roles see EventRecorder, the client-node
 * part (client.ts) implements EventSink, and tests replace either.
 */

export interface PvEvent {
  readonly pvName: string;
  readonly type: "Normal" | "Warning";
  /** UpperCamelCase, e.g. `AutoSnapshotFailed`. */
  readonly reason: string;
  readonly message: string;
}

/** An Event on a Node: replication jobs from Node annotations have no PersistentVolume. */
export interface NodeEvent {
  readonly nodeName: string;
  readonly type: "Normal" | "Warning";
  readonly reason: string;
  readonly message: string;
}

/** What the snapshotter and replicator call. Never throws: an Event is a report, not part of the work. */
export interface EventRecorder {
  record(event: PvEvent): Promise<void>;
  /** Shown by `kubectl describe node`. Optional: recorders that only know PVs leave it out. */
  recordOnNode?(event: NodeEvent): Promise<void>;
}

/** A core/v1 Event as sent to the API (JSON wire form). */
export interface EventObject {
  readonly apiVersion: "v1";
  readonly kind: "Event";
  readonly metadata: { readonly name: string; readonly namespace: string };
  readonly involvedObject: { readonly apiVersion: "v1"; readonly kind: "PersistentVolume" | "Node"; readonly name: string; readonly uid?: string };
  readonly reason: string;
  readonly message: string;
  readonly type: "Normal" | "Warning";
  readonly count: number;
  readonly firstTimestamp: string;
  readonly lastTimestamp: string;
  readonly source: { readonly component: string };
  readonly reportingComponent: string;
  readonly reportingInstance: string;
}

/** The Kubernetes calls an EventRecorder needs (client.ts implements them with client-node). */
export interface EventSink {
  /** UID of the PV, or undefined when there is no such PV. */
  pvUid(name: string): Promise<string | undefined>;
  /** UID of the Node, or undefined when there is no such Node (needed only for Node events). */
  nodeUid?(name: string): Promise<string | undefined>;
  create(event: EventObject): Promise<void>;
}

/**
 * PersistentVolumes are cluster-scoped; their Events go to the `default` namespace, where
 * `kubectl describe pv` looks (it selects on involvedObject name, kind and uid: hence the uid).
 */
export const PV_EVENT_NAMESPACE = "default";
// The API server caps an Event message at 1 KiB in practice (it is truncated in describe output anyway).
const MAX_MESSAGE = 1024;

/** The Event object for `event`, pure (name suffix and uid passed in). */
export function pvEventObject(event: PvEvent, opts: { uid?: string; at: Date; component: string; instance: string; suffix: string }): EventObject {
  return eventObject("PersistentVolume", event.pvName, event, opts);
}

/** The Event object for an event on a Node; like PVs, Nodes are cluster-scoped and their Events go to `default`. */
export function nodeEventObject(event: NodeEvent, opts: { uid?: string; at: Date; component: string; instance: string; suffix: string }): EventObject {
  return eventObject("Node", event.nodeName, event, opts);
}

function eventObject(
  kind: "PersistentVolume" | "Node",
  name: string,
  event: { type: "Normal" | "Warning"; reason: string; message: string },
  opts: { uid?: string; at: Date; component: string; instance: string; suffix: string },
): EventObject {
  const at = opts.at.toISOString().replace(/\.[0-9]{3}Z$/, "Z");
  return {
    apiVersion: "v1",
    kind: "Event",
    // client-go names events <object>.<unique hex>; the API server only needs it unique.
    metadata: { name: `${name}.${opts.suffix}`, namespace: PV_EVENT_NAMESPACE },
    involvedObject: { apiVersion: "v1", kind, name, ...(opts.uid !== undefined && { uid: opts.uid }) },
    reason: event.reason,
    message: event.message.length > MAX_MESSAGE ? `${event.message.slice(0, MAX_MESSAGE - 1)}…` : event.message,
    type: event.type,
    count: 1,
    firstTimestamp: at,
    lastTimestamp: at,
    source: { component: opts.component },
    reportingComponent: opts.component,
    reportingInstance: opts.instance,
  };
}

export interface KubeEventRecorderOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  /** `source.component` / `reportingComponent`, e.g. `zcsi-snapshotter`. */
  readonly component: string;
  /** This replica (pod name). */
  readonly instance: string;
  /** The same (pv, reason, message) is recorded at most once per window. Default 10 minutes. */
  readonly repeatWindowMs?: number;
}

/**
 * Records Events through an EventSink. A failure that repeats every tick would flood the API
 * server (and bury other Events), so an identical event is suppressed for `repeatWindowMs`.
 */
export class KubeEventRecorder implements EventRecorder {
  private readonly lastSent = new Map<string, number>();
  private readonly repeatWindowMs: number;

  constructor(
    private readonly sink: EventSink,
    private readonly options: KubeEventRecorderOptions,
  ) {
    this.repeatWindowMs = options.repeatWindowMs ?? 10 * 60_000;
  }

  async record(event: PvEvent): Promise<void> {
    const now = this.options.clock.now();
    if (this.repeated(["PersistentVolume", event.pvName, event.type, event.reason, event.message], now)) return;
    try {
      const uid = await this.sink.pvUid(event.pvName);
      if (uid === undefined) {
        this.options.logger.info({ op: "event", pv: event.pvName, reason: event.reason }, "no such PersistentVolume; event not recorded");
        return;
      }
      const suffix = now.getTime().toString(16) + randomBytes(4).toString("hex");
      await this.sink.create(pvEventObject(event, { uid, at: now, component: this.options.component, instance: this.options.instance, suffix }));
    } catch (err) {
      this.options.logger.warn({ op: "event", pv: event.pvName, reason: event.reason, err: errorMessage(err) }, "recording a Kubernetes event failed");
    }
  }

  async recordOnNode(event: NodeEvent): Promise<void> {
    const now = this.options.clock.now();
    if (this.sink.nodeUid === undefined || this.repeated(["Node", event.nodeName, event.type, event.reason, event.message], now)) return;
    try {
      const uid = await this.sink.nodeUid(event.nodeName);
      if (uid === undefined) {
        this.options.logger.info({ op: "event", node: event.nodeName, reason: event.reason }, "no such Node; event not recorded");
        return;
      }
      const suffix = now.getTime().toString(16) + randomBytes(4).toString("hex");
      await this.sink.create(nodeEventObject(event, { uid, at: now, component: this.options.component, instance: this.options.instance, suffix }));
    } catch (err) {
      this.options.logger.warn({ op: "event", node: event.nodeName, reason: event.reason, err: errorMessage(err) }, "recording a Kubernetes event failed");
    }
  }

  /** True when the same event was sent within the window (and it is not sent again). */
  private repeated(identity: readonly string[], now: Date): boolean {
    const key = JSON.stringify(identity);
    const last = this.lastSent.get(key);
    if (last !== undefined && now.getTime() - last < this.repeatWindowMs) return true;
    for (const [k, t] of this.lastSent) if (now.getTime() - t >= this.repeatWindowMs) this.lastSent.delete(k);
    this.lastSent.set(key, now.getTime());
    return false;
  }
}
