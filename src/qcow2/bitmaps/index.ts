/**
 * Persistent dirty bitmaps in qcow2 images (spec "Bitmaps extension"): {@link Qcow2Bitmaps}
 * loads them from an open image, records its writes and stores them back on close, and runs
 * the operations of `qemu-img bitmap` and QMP's `block-dirty-bitmap-*`. See docs/qcow2-bitmaps.md.
 */
export {
  Qcow2Bitmaps,
  type AddBitmapOptions,
  type AttachBitmapsOptions,
  type OpenBitmapsOptions,
  type Qcow2BitmapInfo,
  type Qcow2BitmapsMode,
} from './qcow2-bitmaps.js';
export { BitmapExistsError } from './errors.js';
export { defaultGranularity } from './limits.js';
