/**
 * The snapshot API between a copy-before-write filter and the `snapshot-access` node above it
 * (QEMU's `bdrv_co_preadv_snapshot`, `bdrv_co_snapshot_block_status`,
 * `bdrv_co_pdiscard_snapshot`): the frozen view of the source as it was when the filter
 * started, built from the clusters already copied to the target and those not yet changed on
 * the source.
 */
import type { BlockDevice, BlockExtent } from '../../block/block-device.js';

/** A device that offers a frozen view of its source. Ranges lie within the device's size. */
export interface SnapshotProvider {
  /**
   * Reads `length` bytes of the frozen view. Rejects with `IoError` errno `EACCES` ("Permission
   * denied") when part of the range is not in the view (outside the filter's bitmap, discarded,
   * or every range after a failed copy with `on-cbw-error: break-snapshot`).
   */
  snapshotRead(offset: number, length: number): Promise<Uint8Array>;
  /** Block status of the frozen view from `offset` on (the list may end early); errors as {@link snapshotRead}. */
  snapshotBlockStatus(offset: number, length: number): Promise<BlockExtent[]>;
  /**
   * Tells the filter that the whole clusters within the range are no longer needed: they leave
   * the view, are not copied any more, and are discarded on the target.
   */
  snapshotDiscard(offset: number, length: number): Promise<void>;
}

/** The snapshot API of `device`, if it has one (a copy-before-write filter's device does). */
export function snapshotProviderOf(device: BlockDevice): SnapshotProvider | undefined {
  const candidate = device as Partial<SnapshotProvider>;
  return typeof candidate.snapshotRead === 'function' && typeof candidate.snapshotBlockStatus === 'function' && typeof candidate.snapshotDiscard === 'function'
    ? (candidate as SnapshotProvider)
    : undefined;
}
