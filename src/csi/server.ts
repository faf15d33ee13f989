import { Server, ServerCredentials, status, type handleUnaryCall, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { existsSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname } from "node:path";
import { failedPrecondition, invalidArgument } from "../errors.js";
import { deadlineSignal, withCallSignal } from "../exec/call-context.js";
import type { Logger } from "../log.js";
import type { CsiMetrics } from "../metrics.js";
import type { ControllerHandlers } from "../gen/csi/v1/Controller.js";
import type { GroupControllerHandlers } from "../gen/csi/v1/GroupController.js";
import type { IdentityHandlers } from "../gen/csi/v1/Identity.js";
import type { NodeHandlers } from "../gen/csi/v1/Node.js";
import { toServiceError } from "./errors.js";
import { controllerDefinition, loadCsiProto } from "./proto.js";

/** Accepts `unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a bare absolute path. */
export function socketPathOf(endpoint: string): string {
  const path = endpoint.startsWith("unix://") ? endpoint.slice("unix://".length) : endpoint.startsWith("unix:") ? endpoint.slice(5) : endpoint;
  if (!path.startsWith("/")) throw invalidArgument(`endpoint ${JSON.stringify(endpoint)} must be unix:///absolute/path`);
  return path;
}

function isLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(socketPath);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/**
 * A socket file left by a crashed server is removed; a socket with a live server behind it
 * means a second instance: refuse rather than steal the endpoint from under kubelet.
 */
async function clearStaleSocket(socketPath: string): Promise<void> {
  if (!existsSync(socketPath)) return;
  if (!lstatSync(socketPath).isSocket()) throw failedPrecondition(`${socketPath} exists and is not a socket; refusing to replace it`);
  if (await isLive(socketPath)) throw failedPrecondition(`another server is already listening on ${socketPath}`);
  unlinkSync(socketPath);
}

/** Request fields worth a log line; never `secrets`. */
export interface RequestLabels {
  volumeId?: string;
  name?: string;
  snapshotId?: string;
}

/**
 * Wraps one async CSI call: logs one line per call (op, ids, duration, outcome) and maps
 * typed errors to gRPC status codes through csi/errors.ts.
 */
export function unary<Req, Res>(
  logger: Logger,
  op: string,
  handler: (request: Req) => Promise<Res>,
  labels: (request: Req) => RequestLabels = () => ({}),
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = process.hrtime.bigint();
    const fields = { op, ...labels(call.request) };
    // The call's deadline or cancellation reaches every command it starts: a command still
    // waiting for a slot on its pool host gives up instead of running after the caller left.
    const { signal, dispose } = deadlineSignal(call.getDeadline(), (onCancel) => call.on("cancelled", onCancel));
    withCallSignal(signal, () => handler(call.request))
      .finally(dispose)
      .then(
        (response) => {
          logger.info({ ...fields, durationMs: Number(process.hrtime.bigint() - started) / 1e6, code: "OK" }, `${op} ok`);
          callback(null, response);
        },
        (err: unknown) => {
          const mapped = toServiceError(err);
          const level = mapped.code === status.INTERNAL || mapped.code === status.UNAVAILABLE ? "error" : "warn";
          logger[level](
            { ...fields, durationMs: Number(process.hrtime.bigint() - started) / 1e6, code: status[mapped.code], err: mapped.details },
            `${op} failed`,
          );
          callback(mapped, null);
        },
      );
  };
}

export interface CsiServices {
  identity: IdentityHandlers;
  controller?: ControllerHandlers;
  groupController?: GroupControllerHandlers;
  node?: NodeHandlers;
}

export interface RunningServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

type AnyUnaryHandler = (call: { request: unknown }, callback: (err: { code?: number } | null, value?: unknown) => void) => void;

/**
 * Each unary handler of a service, timed into `zcsi_csi_operation_duration_seconds` under its
 * method name and the gRPC code it answered with (the code the caller sees, after csi/errors.ts).
 */
function measured<T extends object>(handlers: T, metrics: Pick<CsiMetrics, "observe"> | undefined): T {
  if (metrics === undefined) return handlers;
  const wrapped: Record<string, AnyUnaryHandler> = {};
  for (const [method, handler] of Object.entries(handlers as Record<string, AnyUnaryHandler>)) {
    wrapped[method] = (call, callback) => {
      const started = process.hrtime.bigint();
      handler(call, (err, value) => {
        const code = err ? (status[err.code ?? status.UNKNOWN] ?? "UNKNOWN") : "OK";
        metrics.observe(method, code, Number(process.hrtime.bigint() - started) / 1e9);
        callback(err, value);
      });
    };
  }
  return wrapped as T;
}

export async function startCsiServer(endpoint: string, services: CsiServices, logger: Logger, metrics?: Pick<CsiMetrics, "observe">): Promise<RunningServer> {
  const socketPath = socketPathOf(endpoint);
  mkdirSync(dirname(socketPath), { recursive: true });
  await clearStaleSocket(socketPath);
  const proto = loadCsiProto();
  const server = new Server();
  server.addService(proto.csi.v1.Identity.service, measured(services.identity, metrics) as unknown as UntypedServiceImplementation);
  if (services.controller) server.addService(controllerDefinition(proto), measured(services.controller, metrics));
  if (services.groupController) server.addService(proto.csi.v1.GroupController.service, measured(services.groupController, metrics));
  if (services.node) server.addService(proto.csi.v1.Node.service, measured(services.node, metrics));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  logger.info({ op: "serve", endpoint: `unix://${socketPath}` }, "CSI server listening");
  let closed = false;
  return {
    socketPath,
    close: async () => {
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve) => {
        // Let in-flight calls finish briefly, then cut the rest.
        const timer = setTimeout(() => server.forceShutdown(), 5_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (existsSync(socketPath)) unlinkSync(socketPath);
    },
  };
}
