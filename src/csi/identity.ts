import type { IdentityHandlers } from "../gen/csi/v1/Identity.js";
import type { PluginCapability } from "../gen/csi/v1/PluginCapability.js";
import type { Logger } from "../log.js";
import { packageVersion } from "../util/package.js";
import { unary } from "./server.js";

export interface IdentityOptions {
  readonly driverName: string;
  /** Plugin services this process serves (the controller role adds CONTROLLER_SERVICE). */
  readonly controller: boolean;
  /** Reasons the plugin is not ready; an empty list means ready. Never throws. */
  readonly readiness: () => Promise<string[]>;
}

export function identityHandlers(options: IdentityOptions, logger: Logger): IdentityHandlers {
  // VOLUME_ACCESSIBILITY_CONSTRAINTS: NodeGetInfo and every volume report topology, which the
  // spec allows only with this capability (see topology.ts: a volume is reachable from every node).
  const common: PluginCapability[] = [{ service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } }, { volumeExpansion: { type: "ONLINE" } }];
  // GROUP_CONTROLLER_SERVICE: the controller serves group snapshots too (csi/group-controller.ts).
  const controller: PluginCapability[] = [{ service: { type: "CONTROLLER_SERVICE" } }, { service: { type: "GROUP_CONTROLLER_SERVICE" } }];
  const capabilities: PluginCapability[] = options.controller ? [...controller, ...common] : common;
  return {
    GetPluginInfo: unary(logger, "GetPluginInfo", async () => ({ name: options.driverName, vendorVersion: packageVersion })),
    GetPluginCapabilities: unary(logger, "GetPluginCapabilities", async () => ({ capabilities })),
    Probe: unary(logger, "Probe", async () => {
      const problems = await options.readiness();
      // CSI spec, Probe: report not-ready rather than fail, so the reason is in our logs and
      // the caller's liveness logic decides what to do with it.
      for (const problem of problems) logger.warn({ op: "Probe", problem }, "not ready");
      return { ready: { value: problems.length === 0 } };
    }),
  };
}
