import { describe, expect, it } from "vitest";
import { failedOverValue, readFailedOver } from "../../src/volumes/failed-over.js";

describe("the zcsi:failed-over record", () => {
  it("reads back who was failed over from and when, as written by a failover", () => {
    const at = "2026-12-04T03:00:00.000Z";
    const value = failedOverValue("alice:tank/k8s/pvc-1", 3, at, { name: "tank/k8s/pvc-1@zcsi-repl-1", createdAt: new Date("2026-12-04T02:59:00Z") });
    expect(JSON.parse(value)).toEqual({ from: "alice:tank/k8s/pvc-1", epoch: 3, at, lastSnapshot: "tank/k8s/pvc-1@zcsi-repl-1", lastSnapshotAt: "2026-12-04T02:59:00.000Z" });
    expect(readFailedOver(value)).toEqual({ from: "alice:tank/k8s/pvc-1", at: Date.parse(at) / 1000 });
  });

  it("leaves out what it cannot read, and has nothing for no record or broken JSON", () => {
    expect(readFailedOver(failedOverValue(undefined, 2, "2026-12-04T03:00:00Z", undefined))).toEqual({ at: Date.parse("2026-12-04T03:00:00Z") / 1000 });
    expect(readFailedOver(JSON.stringify({ from: "alice", at: "yesterday" }))).toEqual({ from: "alice" });
    expect(readFailedOver(JSON.stringify({ from: 7, at: 5 }))).toEqual({});
    expect(readFailedOver("{")).toBeUndefined();
    expect(readFailedOver("null")).toBeUndefined();
    expect(readFailedOver(undefined)).toBeUndefined();
  });
});
