import { readFileSync } from "node:fs";
import { DEFAULT_MAX_CONCURRENT_COMMANDS, MAX_SSH_CHANNELS, type Config } from "../config.js";
import { failedPrecondition } from "../errors.js";
import { InstrumentedExecutor } from "../exec/instrumented.js";
import { SshExecutor } from "../exec/ssh.js";
import type { Logger } from "../log.js";
import type { CommandMetrics } from "../metrics.js";
import { PoolHosts } from "../volumes/hosts.js";

export interface PoolHostsOptions {
  /** Where every command's duration goes (`zcsi_command_duration_seconds`); absent: logs only. */
  readonly commandMetrics?: CommandMetrics;
}

/** One pooled, instrumented SSH executor per configured pool host, bounded by its `maxConcurrentCommands`. */
export function connectPoolHosts(config: Config, logger: Logger, options: PoolHostsOptions = {}): PoolHosts {
  let privateKey: Buffer;
  try {
    privateKey = readFileSync(config.privateKeyFile);
  } catch (err) {
    // Name the file, never its content.
    throw failedPrecondition(`cannot read the SSH private key file ${config.privateKeyFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return new PoolHosts(
    config.poolHosts.map((host) => ({
      config: host,
      exec: new InstrumentedExecutor(
        new SshExecutor({
          host: host.name,
          address: host.address,
          port: host.port,
          user: host.user,
          privateKey,
          hostKeys: host.hostKeys,
          sudo: host.sudo,
          maxChannels: MAX_SSH_CHANNELS,
          maxCommands: host.maxConcurrentCommands ?? DEFAULT_MAX_CONCURRENT_COMMANDS,
          defaultTimeoutMs: config.commandTimeoutMs,
          logger,
        }),
        logger,
        options.commandMetrics,
      ),
    })),
    { timeoutMs: config.commandTimeoutMs, ...(config.listingTimeoutMs !== undefined && { listingTimeoutMs: config.listingTimeoutMs }) },
  );
}
