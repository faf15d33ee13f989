import { pino, type Logger } from "pino";

export type { Logger };

/**
 * One JSON object per line on stdout (on stderr with `fd: 2`: commands whose stdout is their
 * report, migrate and drain). Fields that could ever carry secrets are redacted by path as a
 * second line of defence: the first is never passing them to a logger at all.
 */
export function createLogger(options: { level?: string; name?: string; fd?: 1 | 2 } = {}): Logger {
  const settings = {
    name: options.name ?? "zcsi",
    level: options.level ?? process.env.ZCSI_LOG_LEVEL ?? "info",
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ["secrets", "*.secrets", "privateKey", "*.privateKey", "passphrase", "*.passphrase"],
      censor: "[redacted]",
    },
  };
  return options.fd === 2 ? pino(settings, pino.destination({ fd: 2, sync: true })) : pino(settings);
}

/** A logger that drops everything: for unit tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: "silent" });
