/**
 * Metadata lives with the data: zcsi's user properties on each dataset it creates
 * (zfsprops(7) "User Properties": `module:property`, inherited like native ones, so each is
 * read with its source and only a `local` value counts).
 */
export const PROP = {
  /** The CSI name the volume was created for; its presence marks a dataset as zcsi's. */
  csiName: "zcsi:csi-name",
  /** `creating` until every creation step is done, then `ready`. */
  state: "zcsi:state",
  /** Normalised StorageClass parameters, compared on a retried CreateVolume. */
  parameters: "zcsi:parameters",
  pvc: "zcsi:pvc",
  pv: "zcsi:pv",
} as const;

/**
 * The size limit is `refquota`, not `quota`: `quota` also counts snapshots, so a volume
 * with scheduled snapshots would run out of space while `df` inside the pod showed room.
 * `refquota` limits what the pod's files reference, which is what a PVC's size means.
 */
export const SIZE_PROPERTY = "refquota";

export type VolumeState = "creating" | "ready";
