/**
 * Pure codecs of the qcow2 on-disk format (QEMU `docs/interop/qcow2.rst`). No I/O: decoders
 * take bytes (plus an offset or a table index), encoders return bytes or write into a buffer
 * the caller owns. See `docs/qcow2.md` for what is covered and what is refused.
 */
export * from './constants.js';
export { Qcow2FormatError, Qcow2UnsupportedError } from './errors.js';
export {
  bytesPerL2Table,
  clustersFor,
  geometryOf,
  l1EntriesFor,
  locateGuestOffset,
  locateRefcount,
  makeGeometry,
  type GeometryOptions,
  type GuestLocation,
  type Qcow2Geometry,
  type RefcountLocation,
} from './geometry.js';
export { decodeHeader, encodeHeader, featuresOf, newHeader, type NewHeaderFields, type Qcow2Features, type Qcow2Header } from './header.js';
export {
  decodeHeaderExtensions,
  encodeHeaderExtensions,
  type BitmapsExtension,
  type EncryptionExtension,
  type ExtensionContext,
  type FeatureName,
  type HeaderExtensions,
  type UnknownExtension,
} from './extensions.js';
export { decodeImageHeader, encodeImageHeader, readBackingFileName, type Qcow2ImageHeader } from './image-header.js';
export {
  compressedByteRange,
  compressedCluster,
  decodeL1Entry,
  decodeL1Table,
  decodeL2Entry,
  decodeL2Table,
  encodeL1Table,
  encodeL2Table,
  subclusterKind,
  writeL1Entry,
  writeL2Entry,
  type ByteRange,
  type CompressedCluster,
  type L1Entry,
  type L2Entry,
  type NormalCluster,
  type Subclusters,
  type UnallocatedCluster,
  type ZeroCluster,
} from './l1-l2.js';
export {
  decodeRefcountTable,
  decodeRefcountTableEntry,
  encodeRefcountTable,
  getRefcount,
  maxRefcount,
  refcountLayoutFor,
  setRefcount,
  writeRefcountTableEntry,
  type RefcountLayout,
} from './refcount.js';
export {
  bitmapDataBytes,
  bitmapDirectorySize,
  bitmapEntrySize,
  bitmapFlags,
  bitmapTableSizeFor,
  decodeBitmapDirectory,
  encodeBitmapDirectory,
  type BitmapDirectoryContext,
  type BitmapDirectoryEntry,
} from './bitmap-directory.js';
export {
  decodeBitmapTable,
  decodeBitmapTableEntry,
  encodeBitmapTable,
  writeBitmapTableEntry,
  type BitmapTableEntry,
} from './bitmap-table.js';
export {
  decodeSnapshotTable,
  encodeSnapshotTable,
  newSnapshotEntry,
  snapshotEntryLength,
  snapshotTableSize,
  snapshotVmStateSize,
  type NewSnapshotFields,
  type SnapshotEntry,
  type SnapshotTable,
} from './snapshot-table.js';
