/**
 * The block layer: the `BlockDevice` interface, the memory and raw-file devices, and filters.
 * The conformance suite (`testing/conformance.js`) is imported by path, by tests only.
 */
export {
  ExtentFlags,
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from './block-device.js';
export { checkRange } from './range.js';
export { isZero } from './is-zero.js';
export { MEMORY_CHUNK_SIZE, MemoryBlockDevice, type MemoryBlockDeviceOptions } from './memory-device.js';
export {
  ALL_PERMISSIONS,
  BlockPermission,
  ImageLock,
  LOCK_PERM_BASE,
  LOCK_SHARED_BASE,
  PERMISSION_NAMES,
  defaultImagePermissions,
  holdImageLock,
  lockImageFile,
  permissionNames,
  requestedPermissions,
  type HeldImageLock,
  type ImageAccess,
  type ImageLockOptions,
  type ImagePermissions,
  type LockingMode,
  type PreparedLockChange,
} from './image-lock.js';
export { ImageLockedError, type LockHolder } from './image-lock-error.js';
export { findLockHolders } from './image-lock-holders.js';
export {
  RawFileDevice,
  createRawFile,
  type CreateRawFileOptions,
  type RawFileOpenOptions,
} from './raw-file-device.js';
export { BlockFilter, type FilterOptions, type FilterShape } from './filters/filter.js';
export { ReadOnlyFilter } from './filters/read-only-filter.js';
export { SliceFilter } from './filters/slice-filter.js';
export {
  FAULT_OPERATIONS,
  FaultInjectionFilter,
  type ByteRange,
  type FaultOperation,
  type FaultRule,
} from './filters/fault-injection-filter.js';
export { DirtyTrackingFilter, type WriteRecorder } from './filters/dirty-tracking-filter.js';
