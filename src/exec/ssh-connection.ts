import { Socket } from "node:net";
import ssh2 from "ssh2";
import { errorMessage, unavailable, type ZcsiError } from "../errors.js";
import type { Logger } from "../log.js";
import { backoffDelay } from "../util/backoff.js";
import { systemClock, type Clock } from "../util/clock.js";
import type { Connection } from "./ssh-channel.js";
import { hostKeyAlgorithms, hostKeyMismatch, type PinnedKey } from "./ssh-keys.js";

// ssh2 is CommonJS: Node's ESM loader only offers its default export.
const { Client } = ssh2;

export interface ConnectorOptions {
  readonly address: string;
  readonly port: number;
  readonly user: string;
  readonly connectTimeoutMs?: number;
  readonly keepaliveIntervalMs?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Where the backoff reads the time (tests inject a manual clock). */
  readonly clock?: Clock;
}

/**
 * The one pooled SSH connection to a pool host: opened on first use, reused, opened again
 * after it drops. Failed attempts back off (250 ms doubling to 5 s); a call during backoff
 * fails at once with Unavailable naming the last failure and when the next attempt is.
 * Every failure names host and address:port, never key material.
 */
export class SshConnector {
  /** `#`-private so that logging or serialising the connector can never include it. */
  readonly #privateKey: Buffer;
  private connection?: Connection;
  private connecting?: Promise<Connection>;
  private failures = 0;
  private retryAt = 0;
  private lastFailure?: ZcsiError;
  private closed = false;
  /** Connection attempts made (successful or not). */
  connects = 0;

  constructor(
    private readonly target: string,
    private readonly options: ConnectorOptions,
    privateKey: Buffer,
    private readonly pinned: readonly PinnedKey[],
    private readonly log: Logger,
  ) {
    this.#privateKey = privateKey;
  }

  get(): Promise<Connection> {
    if (this.closed) return Promise.reject(unavailable(`${this.target}: the SSH executor was closed`));
    if (this.connection && !this.connection.lost) return Promise.resolve(this.connection);
    if (this.connecting) return this.connecting;
    const wait = this.retryAt - (this.options.clock ?? systemClock).now().getTime();
    if (wait > 0 && this.lastFailure) {
      return Promise.reject(unavailable(`${this.lastFailure.message}; next connection attempt in ${wait} ms`, { cause: this.lastFailure }));
    }
    const attempt = this.connect().then(
      (conn) => {
        this.connecting = undefined;
        this.failures = 0;
        this.lastFailure = undefined;
        if (this.closed) {
          conn.client.end();
          throw unavailable(`${this.target}: the SSH executor was closed`);
        }
        this.connection = conn;
        return conn;
      },
      (err: ZcsiError) => {
        this.connecting = undefined;
        const backoff = backoffDelay(this.failures, { initialMs: this.options.backoffInitialMs ?? 250, maxMs: this.options.backoffMaxMs ?? 5000 });
        this.failures += 1;
        this.retryAt = (this.options.clock ?? systemClock).now().getTime() + backoff;
        this.lastFailure = err;
        this.log.warn({ err: err.message, backoffMs: backoff }, "ssh connection failed");
        throw err;
      },
    );
    attempt.catch(() => undefined); // callers get the rejection; this only keeps it "handled"
    this.connecting = attempt;
    return attempt;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const conn = this.connection;
    this.connection = undefined;
    if (conn) await disconnect(conn);
    // A connection still being set up is ended by its own completion handler (it sees `closed`).
    await this.connecting?.catch(() => undefined);
  }

  private connect(): Promise<Connection> {
    this.connects += 1;
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const client = new Client();
      const conn: Connection = { client };
      let presented: Buffer | undefined;
      let settled = false;
      let ready = false;
      const fail = (err: ZcsiError): void => {
        if (settled) return;
        settled = true;
        client.destroy();
        reject(err);
      };
      // ssh2 does not disable Nagle: each small request/reply then waits on delayed ACKs
      // (measured ~5x slower for sequential commands). Our own socket lets us set it first.
      const socket = new Socket();
      socket.setNoDelay(true);
      socket.on("error", () => undefined); // ssh2 re-emits socket errors on the client, handled below

      client.on("ready", () => {
        if (settled) return;
        settled = true;
        ready = true;
        this.log.debug({ ms: Math.round(performance.now() - started) }, "ssh connected");
        resolve(conn);
      });
      client.on("error", (err: Error) => {
        if (!settled) return fail(this.connectError(err, presented));
        conn.lost ??= err;
        this.log.warn({ err: err.message }, "ssh connection error");
      });
      client.on("close", () => {
        if (ready && !conn.lost && !this.closed) this.log.warn("ssh connection closed by the server or network");
        conn.lost ??= new Error("connection closed");
        if (this.connection === conn) this.connection = undefined;
        fail(unavailable(`${this.target}: the server closed the connection during the SSH handshake`));
      });

      socket.connect({ host: this.options.address, port: this.options.port });
      try {
        client.connect({
          sock: socket,
          username: this.options.user,
          privateKey: this.#privateKey,
          hostVerifier: (key: Buffer): boolean => {
            const ok = this.pinned.some((pinned) => pinned.blob.equals(key));
            if (!ok) presented = Buffer.from(key);
            return ok;
          },
          algorithms: { serverHostKey: hostKeyAlgorithms(this.pinned) },
          readyTimeout: this.options.connectTimeoutMs ?? 10_000,
          keepaliveInterval: this.options.keepaliveIntervalMs ?? 15_000,
          keepaliveCountMax: 3,
        });
      } catch (err) {
        fail(unavailable(`${this.target}: cannot start SSH: ${errorMessage(err)}`, { cause: err }));
      }
    });
  }

  /**
   * One message per failure cause. A host key mismatch is Unavailable too, not
   * PermissionDenied: nothing the caller can do differently, the CO's retries are harmless,
   * and it clears once an operator fixes the pinned key.
   */
  private connectError(err: Error, presentedKey: Buffer | undefined): ZcsiError {
    if (presentedKey) return unavailable(`${this.target}: ${hostKeyMismatch(this.pinned, presentedKey)}`, { cause: err });
    const code = (err as NodeJS.ErrnoException).code;
    const level = (err as Error & { level?: string }).level;
    let what: string;
    if (code === "ECONNREFUSED") what = "connection refused (is sshd running and listening there?)";
    else if (code !== undefined) what = `cannot connect: ${code}`;
    else if (level === "client-timeout") what = `SSH handshake did not finish within ${this.options.connectTimeoutMs ?? 10_000} ms`;
    else if (level === "client-authentication") what = `public key authentication as ${this.options.user} failed (is the key in that user's authorized_keys?)`;
    else what = `SSH handshake failed: ${err.message}`;
    return unavailable(`${this.target}: ${what}`, { cause: err });
  }
}

function disconnect(conn: Connection): Promise<void> {
  return new Promise((resolve) => {
    const fallback = setTimeout(() => {
      conn.client.destroy();
      resolve();
    }, 1000);
    conn.client.once("close", () => {
      clearTimeout(fallback);
      resolve();
    });
    conn.client.end();
  });
}
