import { hostname } from "node:os";
import { KubeEventSink, loadKubeConfig } from "../k8s/client.js";
import { KubeEventRecorder, type EventRecorder } from "../k8s/events.js";
import type { Logger } from "../log.js";
import { systemClock } from "../util/clock.js";

/**
 * The controller's Event recorder, from the pod's ServiceAccount (elsewhere $KUBECONFIG): the
 * `zcsi-controller` ClusterRole grants events create and persistentvolumes get
 * (deploy/base/rbac-controller.yaml). Kept out of roles/controller.ts so that the controller
 * without Kubernetes (the demo, tests) never loads the client.
 */
export function controllerEvents(logger: Logger): EventRecorder {
  return new KubeEventRecorder(new KubeEventSink(loadKubeConfig()), { clock: systemClock, logger, component: "zcsi-controller", instance: process.env.POD_NAME || `${hostname()}-${process.pid}` });
}
