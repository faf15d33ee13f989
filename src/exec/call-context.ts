import { AsyncLocalStorage } from "node:async_hooks";

const callSignal = new AsyncLocalStorage<AbortSignal>();

/**
 * Runs `work` with `signal` as the signal of the call it serves (a gRPC call's cancellation or
 * deadline). Every command `work` starts, however deep below (volumes → zfs → exec), gives up
 * *waiting* for a slot on its pool host once the signal fires: a command that never started
 * cannot leave anything half done. A command already running is not cut by it (its own
 * timeout still applies), so a `zfs create` either ran or did not.
 *
 * The CSI server wraps each call: `withCallSignal(signalOf(call), () => handler(request))`.
 */
export function withCallSignal<T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> {
  return callSignal.run(signal, work);
}

/** The signal of the call being served, if any (see `withCallSignal`). */
export function currentCallSignal(): AbortSignal | undefined {
  return callSignal.getStore();
}

/**
 * A signal that fires when the call is cancelled or its deadline (a Date or epoch ms, as
 * grpc-js's `call.getDeadline()` gives it; Infinity: none) passes. `dispose` clears the timer.
 */
export function deadlineSignal(deadline: Date | number, cancelled?: (onCancel: () => void) => void): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  const timer = Number.isFinite(at) ? setTimeout(() => controller.abort(new Error("the call's deadline passed")), Math.max(0, at - Date.now())) : undefined;
  cancelled?.(() => controller.abort(new Error("the call was cancelled")));
  return { signal: controller.signal, dispose: () => clearTimeout(timer) };
}
