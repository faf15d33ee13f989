import { status, type ServiceError } from "@grpc/grpc-js";
import { isZcsiError, type ErrorKind } from "../errors.js";

/** The one table from zcsi's typed errors to gRPC status codes (CSI spec, "Error Scheme"). */
const CODES: Record<ErrorKind, status> = {
  InvalidArgument: status.INVALID_ARGUMENT,
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  Aborted: status.ABORTED,
  Unavailable: status.UNAVAILABLE,
  OutOfRange: status.OUT_OF_RANGE,
  FailedPrecondition: status.FAILED_PRECONDITION,
  ResourceExhausted: status.RESOURCE_EXHAUSTED,
  PermissionDenied: status.PERMISSION_DENIED,
  DeadlineExceeded: status.DEADLINE_EXCEEDED,
  Unimplemented: status.UNIMPLEMENTED,
  Internal: status.INTERNAL,
};

export function toServiceError(err: unknown): Partial<ServiceError> & { code: status; details: string } {
  if (isZcsiError(err)) return { code: CODES[err.kind], details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: status.INTERNAL, details: `internal error: ${message}` };
}
