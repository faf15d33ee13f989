import { pino, type Logger } from "pino";

export type { Logger };

/**
 * One JSON object per line on stdout. Fields that could ever carry secrets are redacted by
 * path as a second line of defence: the first is never passing them to a logger at all.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: options.name ?? "zcsi",
    level: options.level ?? process.env.ZCSI_LOG_LEVEL ?? "info",
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ["secrets", "*.secrets", "privateKey", "*.privateKey", "passphrase", "*.passphrase"],
      censor: "[redacted]",
    },
  });
}

/** A logger that drops everything: for unit tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: "silent" });
