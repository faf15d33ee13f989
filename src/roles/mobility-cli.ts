import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { DEFAULT_NAMESPACE, mobilityContext, runFailover, runResync } from "./mobility.js";

/** The flags of `zcsi failover` and `zcsi resync` (cli.ts parses them). */
export interface MobilityFlags {
  readonly volumeIds: readonly string[];
  readonly to?: string | undefined;
  readonly host?: string | undefined;
  readonly force?: boolean | undefined;
  readonly resume?: boolean | undefined;
  readonly namespace?: string | undefined;
  readonly "discard-diverged"?: boolean | undefined;
}

/** Loads the kubeconfig and pool hosts, runs the command, closes the connections. Resolves to the exit code. */
export async function runMobilityCommand(command: "failover" | "resync", config: Config, logger: Logger, flags: MobilityFlags, write: (text: string) => void): Promise<number> {
  const { loadKubeConfig } = await import("../k8s/client.js");
  const namespace = flags.namespace ?? process.env.POD_NAMESPACE ?? DEFAULT_NAMESPACE;
  const ctx = await mobilityContext(config, loadKubeConfig(), namespace, logger);
  try {
    if (command === "resync") return await runResync(ctx, { volumeIds: flags.volumeIds, host: flags.host, discardDiverged: flags["discard-diverged"] === true, resume: flags.resume === true }, write);
    return await runFailover(ctx, { volumeIds: flags.volumeIds, ...(flags.host !== undefined && { host: flags.host }), ...(flags.to !== undefined && { to: flags.to }), force: flags.force === true, resume: flags.resume === true }, write);
  } finally {
    await ctx.close();
  }
}
