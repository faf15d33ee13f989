import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { KubeEventSink, kubeConfigFor, KubeLeaseStore } from "../../src/k8s/client.js";
import { KubeEventRecorder, pvEventObject, type EventObject, type EventSink } from "../../src/k8s/events.js";
import { LeaderElector } from "../../src/k8s/lease.js";
import { silentLogger } from "../../src/log.js";
import { k8sFixture, ManualClock, startFakeApiServer, type FakeApiServer } from "../harness/fake-k8s.js";

const PV_NAME = "pvc-3f6b1c2e-8d4a-4f7b-9c1e-2a5d6e7f8a9b";
const PV_UID = "9d2e4c6a-1b3f-4e5d-8a7c-6b5a4d3c2e1f";

describe("pvEventObject", () => {
  it("builds a core/v1 Event that kubectl describe pv finds", () => {
    const event = pvEventObject(
      { pvName: PV_NAME, type: "Warning", reason: "AutoSnapshotFailed", message: "taking tank/k8s/x@zcsi-auto-2026-11-22T0100Z failed: out of space" },
      { uid: PV_UID, at: new Date("2026-11-22T01:00:12.345Z"), component: "zcsi-snapshotter", instance: "zcsi-controller-7c9d6b5f4-abcde", suffix: "187a" },
    );
    expect(event).toEqual({
      apiVersion: "v1",
      kind: "Event",
      metadata: { name: `${PV_NAME}.187a`, namespace: "default" },
      involvedObject: { apiVersion: "v1", kind: "PersistentVolume", name: PV_NAME, uid: PV_UID },
      reason: "AutoSnapshotFailed",
      message: "taking tank/k8s/x@zcsi-auto-2026-11-22T0100Z failed: out of space",
      type: "Warning",
      count: 1,
      firstTimestamp: "2026-11-22T01:00:12Z",
      lastTimestamp: "2026-11-22T01:00:12Z",
      source: { component: "zcsi-snapshotter" },
      reportingComponent: "zcsi-snapshotter",
      reportingInstance: "zcsi-controller-7c9d6b5f4-abcde",
    });
  });
});

class FakeSink implements EventSink {
  readonly created: EventObject[] = [];
  failCreate = false;
  constructor(private readonly uids: Record<string, string>) {}
  async pvUid(name: string): Promise<string | undefined> {
    return this.uids[name];
  }
  async create(event: EventObject): Promise<void> {
    if (this.failCreate) throw new Error("HTTP 403: events is forbidden");
    this.created.push(event);
  }
}

describe("KubeEventRecorder", () => {
  const event = { pvName: PV_NAME, type: "Warning" as const, reason: "AutoSnapshotPruneFailed", message: "destroying x failed" };

  it("records once per window for a repeating failure", async () => {
    const sink = new FakeSink({ [PV_NAME]: PV_UID });
    const clock = new ManualClock("2026-11-22T01:00:00Z");
    const recorder = new KubeEventRecorder(sink, { clock, logger: silentLogger, component: "zcsi-snapshotter", instance: "me", repeatWindowMs: 600_000 });
    await recorder.record(event);
    clock.advance(60_000);
    await recorder.record(event);
    await recorder.record({ ...event, message: "another failure" });
    expect(sink.created.map((e) => e.message)).toEqual(["destroying x failed", "another failure"]);
    clock.advance(540_000);
    await recorder.record(event);
    expect(sink.created).toHaveLength(3);
    expect(sink.created[0]?.involvedObject.uid).toBe(PV_UID);
  });

  it("skips a PV that does not exist and never throws", async () => {
    const sink = new FakeSink({});
    const recorder = new KubeEventRecorder(sink, { clock: new ManualClock(0), logger: silentLogger, component: "c", instance: "i" });
    await recorder.record(event);
    expect(sink.created).toEqual([]);
    const failing = new FakeSink({ [PV_NAME]: PV_UID });
    failing.failCreate = true;
    await expect(new KubeEventRecorder(failing, { clock: new ManualClock(0), logger: silentLogger, component: "c", instance: "i" }).record(event)).resolves.toBeUndefined();
  });
});

describe("the client-node adapters against an API server (loopback fake serving the fixtures)", () => {
  let api: FakeApiServer;
  beforeAll(async () => {
    api = await startFakeApiServer();
  });
  afterAll(async () => {
    await api.close();
  });

  it("KubeLeaseStore: 404 → absent, create, conflict, replace with resourceVersion and MicroTime", async () => {
    api.lease = undefined;
    const store = new KubeLeaseStore(kubeConfigFor(api.url, { token: "test-token", skipTLSVerify: true }), "zcsi-system", "zcsi-snapshotter");
    expect(await store.get()).toBeUndefined();
    const at = new Date("2026-11-22T01:00:00.123Z");
    const created = await store.create({ holderIdentity: "me", leaseDurationSeconds: 15, acquireTime: at, renewTime: at, leaseTransitions: 0 });
    expect(created.resourceVersion).toBe("2000");
    const post = api.requests.find((r) => r.method === "POST");
    expect(post?.path).toBe("/apis/coordination.k8s.io/v1/namespaces/zcsi-system/leases");
    expect(post?.body).toMatchObject({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "zcsi-snapshotter", namespace: "zcsi-system" },
      spec: { holderIdentity: "me", leaseDurationSeconds: 15, acquireTime: "2026-11-22T01:00:00.123000Z", renewTime: "2026-11-22T01:00:00.123000Z", leaseTransitions: 0 },
    });
    await expect(store.create({ holderIdentity: "me" })).rejects.toSatisfy((e: unknown) => isZcsiError(e, "AlreadyExists"));

    api.lease = k8sFixture("lease-held-by-other");
    const read = await store.get();
    expect(read?.spec.holderIdentity).toBe("zcsi-controller-7c9d6b5f4-x2k9p");
    expect(read?.spec.renewTime?.toISOString()).toBe("2026-11-22T01:00:00.402Z");
    // Someone writes in between: our replace carries the old resourceVersion → 409 → Aborted.
    api.lease = k8sFixture("lease-held-by-other-renewed");
    await expect(store.replace(read!, { holderIdentity: "me" })).rejects.toSatisfy((e: unknown) => isZcsiError(e, "Aborted") && /the object has been modified/.test((e as Error).message));
    const fresh = await store.get();
    const updated = await store.replace(fresh!, { holderIdentity: "me", leaseDurationSeconds: 15, acquireTime: at, renewTime: at, leaseTransitions: 4 });
    expect(updated.resourceVersion).toBe("1048220");
    const put = api.requests.filter((r) => r.method === "PUT").at(-1);
    expect(put?.path).toBe("/apis/coordination.k8s.io/v1/namespaces/zcsi-system/leases/zcsi-snapshotter");
    expect(put?.body).toMatchObject({ metadata: { resourceVersion: "1048219", labels: { "app.kubernetes.io/name": "zcsi" } }, spec: { holderIdentity: "me", leaseTransitions: 4 } });
  });

  it("LeaderElector over KubeLeaseStore takes a released Lease", async () => {
    api.lease = k8sFixture("lease-released");
    const clock = new ManualClock("2026-11-22T01:03:12Z");
    const e = new LeaderElector({ store: new KubeLeaseStore(kubeConfigFor(api.url, { skipTLSVerify: true }), "zcsi-system", "zcsi-snapshotter"), identity: "me", clock, logger: silentLogger });
    expect(await e.tryAcquireOrRenew()).toBe(true);
    expect(api.lease?.spec).toMatchObject({ holderIdentity: "me", leaseTransitions: 4, renewTime: "2026-11-22T01:03:12.000000Z" });
  });

  it("KubeEventSink: looks up the PV uid and posts the Event to the default namespace", async () => {
    api.pvs.set(PV_NAME, k8sFixture("pv"));
    const sink = new KubeEventSink(kubeConfigFor(api.url, { skipTLSVerify: true }));
    expect(await sink.pvUid("pvc-00000000-0000-0000-0000-000000000000")).toBeUndefined();
    const clock = new ManualClock("2026-11-22T01:00:12Z");
    const recorder = new KubeEventRecorder(sink, { clock, logger: silentLogger, component: "zcsi-snapshotter", instance: "zcsi-controller-7c9d6b5f4-abcde" });
    await recorder.record({ pvName: PV_NAME, type: "Warning", reason: "AutoSnapshotFailed", message: "taking a snapshot failed" });
    const post = api.requests.filter((r) => r.method === "POST" && r.path === "/api/v1/namespaces/default/events");
    expect(post).toHaveLength(1);
    expect(post[0]?.body).toMatchObject({
      metadata: { namespace: "default" },
      involvedObject: { apiVersion: "v1", kind: "PersistentVolume", name: PV_NAME, uid: PV_UID },
      reason: "AutoSnapshotFailed",
      type: "Warning",
      count: 1,
      source: { component: "zcsi-snapshotter" },
      reportingComponent: "zcsi-snapshotter",
      reportingInstance: "zcsi-controller-7c9d6b5f4-abcde",
    });
    const body = post[0]?.body as { firstTimestamp: string; metadata: { name: string } };
    expect(new Date(body.firstTimestamp).toISOString()).toBe("2026-11-22T01:00:12.000Z");
    expect(body.metadata.name.startsWith(`${PV_NAME}.`)).toBe(true);
  });
});
