/**
 * The dirty bitmap layer: {@link DirtyBitmap} with QEMU's semantics, and its serializations
 * (the qcow2 bit layout, QEMU's debug SHA-256, bitback's compact form). No I/O.
 */
export { DirtyBitmap } from './dirty-bitmap.js';
export {
  MAX_GRANULARITY,
  MAX_GRANULES,
  MAX_NAME_BYTES,
  MIN_GRANULARITY,
  isValidGranularity,
  type BitmapExtent,
  type BitmapUse,
  type CopyOptions,
  type DirtyBitmapOptions,
  type DirtyExtent,
} from './bitmap-types.js';
export { BitmapFormatError, BitmapStateError } from './errors.js';
export { bytesAreClean, deserializeBytes, serializeBytes, serializedByteLength, sha256Qemu } from './serialize.js';
export { COMPACT_MAGIC, COMPACT_VERSION, CompactFlags, decodeCompact, encodeCompact } from './compact.js';
