/**
 * Opens what a command names as a disk: an image file (raw or qcow2) now, NBD URIs when the NBD
 * layer lands. The CLI is the layer that may import every image layer, so the dispatch lives here.
 */
import { InvalidArgumentError, NotSupportedError } from '../errors.js';
import { type BlockDevice } from '../block/block-device.js';
import { openImage, parseImageFormat } from '../qcow2/open-image.js';
import { type ImageFormat } from '../qcow2/info.js';

/** Options of {@link openTarget}. */
export interface OpenTargetOptions {
  /** Force a format instead of probing the file's first bytes. */
  format?: ImageFormat;
  /** Open for reading only. */
  readOnly?: boolean;
}

/** Opens a disk named on the command line. NBD URIs are refused until the NBD layer exists. */
export async function openTarget(spec: string, options: OpenTargetOptions = {}): Promise<BlockDevice> {
  if (/^nbds?(\+unix)?:\/\//.test(spec)) {
    throw new NotSupportedError(`open ${spec}`, 'NBD URIs are not supported yet');
  }
  if (spec === '') throw new InvalidArgumentError('open disk', 'the file name is empty');
  const image = await openImage(spec, { readOnly: options.readOnly ?? false, ...(options.format ? { format: options.format } : {}) });
  return image.device;
}

/** Parses a `-f FORMAT` value. */
export const parseFormat = parseImageFormat;
