/**
 * The small set of typed errors zcsi throws where a fact is known. Nothing below `csi/`
 * knows about gRPC: `csi/errors.ts` maps `kind` to a status code in one table.
 */
export type ErrorKind =
  | "InvalidArgument"
  | "NotFound"
  | "AlreadyExists"
  | "Aborted"
  | "Unavailable"
  | "OutOfRange"
  | "FailedPrecondition"
  | "ResourceExhausted"
  | "PermissionDenied"
  | "DeadlineExceeded"
  | "Unimplemented"
  | "Internal";

export class ZcsiError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = `${kind}Error`;
  }
}

const make =
  (kind: ErrorKind) =>
  (message: string, options?: { cause?: unknown }): ZcsiError =>
    new ZcsiError(kind, message, options);

export const invalidArgument = make("InvalidArgument");
export const notFound = make("NotFound");
export const alreadyExists = make("AlreadyExists");
export const aborted = make("Aborted");
export const unavailable = make("Unavailable");
export const outOfRange = make("OutOfRange");
export const failedPrecondition = make("FailedPrecondition");
export const resourceExhausted = make("ResourceExhausted");
export const permissionDenied = make("PermissionDenied");
export const deadlineExceeded = make("DeadlineExceeded");
export const unimplemented = make("Unimplemented");
export const internal = make("Internal");

export function isZcsiError(err: unknown, kind?: ErrorKind): err is ZcsiError {
  return err instanceof ZcsiError && (kind === undefined || err.kind === kind);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
