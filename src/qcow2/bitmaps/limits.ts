/**
 * What a new persistent bitmap must satisfy before it is added to an image (QEMU's
 * `qcow2_co_can_store_new_dirty_bitmap` and `block-dirty-bitmap-add` checks), and the default
 * granularity.
 */
import { isValidGranularity } from '../../bitmap/index.js';
import { InvalidArgumentError, NotSupportedError, OutOfRangeError } from '../../errors.js';
import {
  MAX_BITMAPS,
  MAX_BITMAP_DATA_BYTES,
  MAX_BITMAP_DIRECTORY_BYTES,
  MAX_BITMAP_TABLE_ENTRIES,
  bitmapEntrySize,
  bitmapTableSizeFor,
  type Qcow2Geometry,
} from '../format/index.js';

/** Smallest default granularity: 4 KiB (QEMU `bdrv_get_default_bitmap_granularity`). */
const MIN_DEFAULT_GRANULARITY = 4096;
/** Largest default granularity: 64 KiB. */
const MAX_DEFAULT_GRANULARITY = 65536;

/** QEMU's default bitmap granularity in bytes: the cluster size clamped to 4 KiB .. 64 KiB. */
export function defaultGranularity(clusterSize: number): number {
  return Math.min(MAX_DEFAULT_GRANULARITY, Math.max(MIN_DEFAULT_GRANULARITY, clusterSize));
}

/** What {@link checkNewBitmap} needs to know about the image. */
export interface NewBitmapContext {
  /** The image's qcow2 version (bitmaps need 3). */
  version: number;
  geometry: Qcow2Geometry;
  /** Virtual size in bytes. */
  virtualSize: number;
  /** Bitmaps the directory holds now. */
  count: number;
  /** Bytes of the directory now (0 without one). */
  directoryBytes: number;
}

/**
 * Throws unless a bitmap `name` of `granularity` bytes may be stored in the image: version 3
 * (`NotSupportedError`, QEMU: "Cannot store dirty bitmaps in qcow2 v2 files"), a power of two
 * from 512 B to 2 GiB (`InvalidArgumentError`), at most 65535 bitmaps and a directory of at
 * most 64 MiB, a table within QEMU's limits (`OutOfRangeError`).
 */
export function checkNewBitmap(action: string, name: string, granularity: number, context: NewBitmapContext): void {
  if (context.version < 3) throw new NotSupportedError(action, 'Cannot store dirty bitmaps in qcow2 v2 files');
  if (!isValidGranularity(granularity)) {
    throw new InvalidArgumentError(action, `granularity ${granularity} is not a power of two from 512 to 2147483648`);
  }
  if (context.count >= MAX_BITMAPS) throw new OutOfRangeError(action, `the image already holds ${context.count} bitmaps, QEMU's limit`);
  const directoryBytes = context.directoryBytes + bitmapEntrySize({ name, extraData: new Uint8Array(0) });
  if (directoryBytes > MAX_BITMAP_DIRECTORY_BYTES) {
    throw new OutOfRangeError(action, `the bitmap directory would take ${directoryBytes} bytes, more than QEMU's limit of ${MAX_BITMAP_DIRECTORY_BYTES}`);
  }
  const tableSize = bitmapTableSizeFor(context.virtualSize, Math.log2(granularity), context.geometry);
  if (tableSize > MAX_BITMAP_TABLE_ENTRIES || tableSize * context.geometry.clusterSize > MAX_BITMAP_DATA_BYTES) {
    throw new OutOfRangeError(action, `a bitmap of ${context.virtualSize} bytes at granularity ${granularity} needs ${tableSize} clusters of data, more than QEMU stores`);
  }
}
