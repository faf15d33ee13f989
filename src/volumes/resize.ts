import { errorMessage, outOfRange, resourceExhausted } from "../errors.js";
import type { Logger } from "../log.js";
import { hasReason } from "../zfs/errors.js";
import type { PoolHost } from "./hosts.js";
import { sizeProperties } from "./size-modes.js";
import type { Volume } from "./volume.js";

/**
 * Sets a new size in the volume's size mode (size-modes.ts): its `refquota`, `quota`, the
 * recorded request of a thin volume, or `refquota` then `refreservation` of a reserved one.
 * Shrinking below what the volume already holds is OUT_OF_RANGE; growth that the pool's free
 * space (`available`: the parent's) cannot hold is RESOURCE_EXHAUSTED, and changes nothing.
 */
export async function resizeVolume(host: PoolHost, volume: Volume, bytes: bigint, available: () => Promise<bigint>, logger: Logger): Promise<Volume> {
  if (bytes < volume.usedBytes) throw outOfRange(`volume ${volume.id} already holds ${volume.usedBytes} bytes; cannot set its size to ${bytes}`);
  if (bytes > volume.capacityBytes) {
    const free = await available();
    if (bytes - volume.capacityBytes > free) throw resourceExhausted(`pool host ${host.config.name} has ${free} bytes available; growing ${volume.id} (sizeMode ${volume.sizeMode}) by ${bytes - volume.capacityBytes} does not fit`);
  }
  try {
    await host.zfs.set(volume.ref.dataset, sizeProperties(volume.sizeMode, bytes));
  } catch (err) {
    // A reserved volume whose refquota grew but whose refreservation did not: put the
    // refquota back, so a refused expansion leaves the volume as it was.
    if (volume.sizeMode === "reserved") {
      await host.zfs.set(volume.ref.dataset, { refquota: volume.capacityBytes.toString() }).catch((undo: unknown) =>
        logger.warn({ op: "ControllerExpandVolume", volumeId: volume.id, err: errorMessage(undo) }, "could not put the refquota back after a refused refreservation; the volume reads as its old size until an expansion succeeds"),
      );
    }
    if (hasReason(err, "outOfSpace")) throw resourceExhausted(`pool host ${host.config.name} cannot grow ${volume.id} (sizeMode ${volume.sizeMode}) to ${bytes} bytes: ${errorMessage(err)}`, { cause: err });
    throw err;
  }
  return { ...volume, capacityBytes: bytes };
}
