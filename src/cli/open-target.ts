/**
 * Opens what a command names as a disk: an image file (raw or qcow2) or an NBD URI. The CLI is the
 * layer that may import every image layer, so the dispatch lives here.
 */
import { InvalidArgumentError } from '../errors.js';
import { isNbdUri } from '../nbd/protocol/uri.js';
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

/** Opens a disk named on the command line: an NBD URI (nbd://, nbd+unix://, nbds...) or an image file. */
export async function openTarget(spec: string, options: OpenTargetOptions = {}): Promise<BlockDevice> {
  if (isNbdUri(spec)) {
    if (options.format !== undefined && options.format !== 'raw') {
      throw new InvalidArgumentError(`open ${spec}`, `an NBD export is read as raw data; -f ${options.format} does not apply`);
    }
    // Loaded on demand: commands on image files do not pay for the NBD client.
    const { NbdClient } = await import('../nbd/client/index.js');
    return NbdClient.connect(spec, { readOnly: options.readOnly ?? false });
  }
  if (spec === '') throw new InvalidArgumentError('open disk', 'the file name is empty');
  const image = await openImage(spec, { readOnly: options.readOnly ?? false, ...(options.format ? { format: options.format } : {}) });
  return image.device;
}

/** Parses a `-f FORMAT` value. */
export const parseFormat = parseImageFormat;
