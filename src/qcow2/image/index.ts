/**
 * The qcow2 image as a `BlockDevice` ({@link Qcow2Image}), and the helpers other qcow2 tools
 * share with it: resolving and probing backing files, and naming the image in format errors.
 */
export {
  DEFAULT_L2_CACHE_BYTES,
  DEFAULT_REFCOUNT_CACHE_BYTES,
  Qcow2Image,
  type Qcow2ImageInfo,
  type Qcow2OpenOptions,
  type WriteListener,
} from './image.js';
export { Qcow2Internals } from './internals.js';
export { probeFormat, resolveBackingPath, type BackingFileInfo, type BackingFormat } from './backing.js';
export { corruptImage, withImagePath } from './errors.js';
