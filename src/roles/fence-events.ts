import type { EventRecorder } from "../k8s/events.js";
import type { FenceListener } from "../volumes/homes.js";

/**
 * A `CopyFenced` Warning Event on the volume's PV each time a zcsi component fences a stale
 * primary (volumes/homes.ts), so `kubectl describe pv` says that the host came back with a
 * copy the volume no longer uses, and that it is kept. Undefined without an EventRecorder.
 */
export function fenceEvents(events: EventRecorder | undefined): FenceListener | undefined {
  if (events === undefined) return undefined;
  return async (f) => {
    if (f.pv === undefined) return;
    await events.record({
      pvName: f.pv,
      type: "Warning",
      reason: "CopyFenced",
      message: `stale copy ${f.host}:${f.dataset} of ${f.volumeId} (primary at epoch ${f.epoch}: ${f.reason}) fenced (readonly); kept, never served: zcsi resync ${f.volumeId} --host ${f.host} makes it a replica`,
    });
  };
}
