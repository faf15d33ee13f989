import { readFileSync } from "node:fs";
import type { Config } from "../config.js";
import { failedPrecondition } from "../errors.js";
import { InstrumentedExecutor } from "../exec/instrumented.js";
import { SshExecutor } from "../exec/ssh.js";
import type { Logger } from "../log.js";
import { PoolHosts } from "../volumes/hosts.js";

/** One pooled, instrumented SSH executor per configured pool host. */
export function connectPoolHosts(config: Config, logger: Logger): PoolHosts {
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
          defaultTimeoutMs: config.commandTimeoutMs,
          logger,
        }),
        logger,
      ),
    })),
    { timeoutMs: config.commandTimeoutMs },
  );
}
