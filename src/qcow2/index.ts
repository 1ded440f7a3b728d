/**
 * qcow2 images: the pure codecs of the on-disk format (`format/`), the image as a
 * `BlockDevice` (`image/`), and image creation.
 */
export * from './format/index.js';
export * from './image/index.js';
export { createQcow2, type CreateQcow2Options } from './create.js';
