import type { Config } from "../config.js";
import { silentLogger } from "../log.js";
import { collectStatus, renderStatus } from "../status/status.js";
import { connectPoolHosts } from "./pool-hosts.js";

/**
 * `zcsi status`: reads the pool hosts straight from ZFS over SSH (no Kubernetes API, no CSI
 * socket, so it works when the cluster does not) and writes the report. Resolves to the exit
 * code: 1 when a pool host could not be read in full, for scripts and probes.
 */
export async function runStatusRole(config: Config, output: "text" | "json", write: (text: string) => void): Promise<number> {
  const hosts = connectPoolHosts(config, silentLogger);
  try {
    const status = await collectStatus(hosts);
    write(renderStatus(status, output));
    return status.hosts.some((h) => h.errors.length > 0) ? 1 : 0;
  } finally {
    await hosts.close();
  }
}
