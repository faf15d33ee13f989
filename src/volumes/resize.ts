import { errorMessage, outOfRange, resourceExhausted } from "../errors.js";
import type { Logger } from "../log.js";
import { hasReason } from "../zfs/errors.js";
import type { PoolHost } from "./hosts.js";
import { recordsizeOf, sizeProperties, spaceNeeded } from "./size-modes.js";
import type { Volume } from "./volume.js";

/**
 * Sets a new size in the volume's size mode (size-modes.ts): its `refquota`, `quota`, the
 * recorded request of a thin volume, or `reservation`, `refquota` then `refreservation` of a
 * reserved one (size-modes.ts reservedHeadroom).
 * Shrinking below what the volume already holds is OUT_OF_RANGE; growth that the pool's free
 * space (`available`: the parent's) cannot hold is RESOURCE_EXHAUSTED, and changes nothing.
 */
export async function resizeVolume(host: PoolHost, volume: Volume, bytes: bigint, available: () => Promise<bigint>, logger: Logger): Promise<Volume> {
  if (bytes < volume.usedBytes) throw outOfRange(`volume ${volume.id} already holds ${volume.usedBytes} bytes; cannot set its size to ${bytes}`);
  if (bytes > volume.capacityBytes) {
    const free = await available();
    const recordsize = recordsizeOf(volume.parameters);
    const growth = spaceNeeded(volume.sizeMode, bytes, recordsize) - spaceNeeded(volume.sizeMode, volume.capacityBytes, recordsize);
    if (growth > free) throw resourceExhausted(`pool host ${host.config.name} has ${free} bytes available; growing ${volume.id} (sizeMode ${volume.sizeMode}) by ${growth} does not fit`);
  }
  try {
    await host.zfs.set(volume.ref.dataset, sizeProperties(volume.sizeMode, bytes, recordsizeOf(volume.parameters)));
  } catch (err) {
    // A reserved volume whose reservation or refquota grew but whose refreservation did not:
    // put them back, so a refused expansion leaves the volume as it was (a pool host that sets
    // one property per command may have stopped after either).
    if (volume.sizeMode === "reserved") {
      const before = sizeProperties("reserved", volume.capacityBytes, recordsizeOf(volume.parameters));
      await host.zfs.set(volume.ref.dataset, { refquota: before.refquota!, reservation: before.reservation! }).catch((undo: unknown) =>
        logger.warn({ op: "ControllerExpandVolume", volumeId: volume.id, err: errorMessage(undo) }, "could not put the refquota and reservation back after a refused expansion; the volume reads as its old size until an expansion succeeds"),
      );
    }
    if (hasReason(err, "outOfSpace")) throw resourceExhausted(`pool host ${host.config.name} cannot grow ${volume.id} (sizeMode ${volume.sizeMode}) to ${bytes} bytes: ${errorMessage(err)}`, { cause: err });
    throw err;
  }
  return { ...volume, capacityBytes: bytes };
}
