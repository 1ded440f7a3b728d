/**
 * Opening and creating image files of either format bitback handles (raw, qcow2) as
 * `BlockDevice`s. Commands that take a file name (`io`, `image convert`, `image compare`, ...)
 * open it through here.
 */
import { type BlockDevice } from '../block/block-device.js';
import { type ImageLockOptions } from '../block/image-lock.js';
import { RawFileDevice, createRawFile } from '../block/raw-file-device.js';
import { InvalidArgumentError } from '../errors.js';
import { createQcow2, type CreateQcow2Options } from './create.js';
import { Qcow2Bitmaps } from './bitmaps/index.js';
import { Qcow2Image, type Qcow2OpenOptions } from './image/index.js';
import { probeImageFormat, type ImageFormat } from './info.js';

/** Options of {@link openImage}. */
export interface OpenImageOptions {
  /** The format; probed from the file's first bytes when omitted. */
  format?: ImageFormat;
  readOnly?: boolean;
  /** qcow2 only: store whole-cluster writes compressed (backup targets). */
  compress?: boolean;
  /** QEMU's image locks (src/block/image-lock.ts): `forceShare` is qemu-img's -U. */
  lock?: ImageLockOptions;
}

/** An opened image and what it is. */
export interface OpenedImage {
  device: BlockDevice;
  format: ImageFormat;
  /** Files in the backing chain including this one (1 for raw and for qcow2 without backing). */
  chainLength: number;
}

/** Parses a format name given on the command line. */
export function parseImageFormat(text: string): ImageFormat {
  if (text === 'raw' || text === 'qcow2') return text;
  throw new InvalidArgumentError(`use image format '${text}'`, 'the formats are raw and qcow2');
}

/** Opens an image file (raw or qcow2, its backing chain followed). */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<OpenedImage> {
  const format = options.format ?? (await probeImageFormat(path));
  if (format === 'raw') {
    return { device: await RawFileDevice.open(path, { readOnly: options.readOnly ?? false, ...(options.lock ? { lock: options.lock } : {}) }), format, chainLength: 1 };
  }
  const image = await openQcow2Tracking(path, { readOnly: options.readOnly ?? false, compress: options.compress ?? false, ...(options.lock ? { lock: options.lock } : {}) });
  return { device: image, format, chainLength: 1 + image.backingChain.length };
}

/**
 * Opens a qcow2 image; when writable, its persistent bitmaps are loaded and record every write
 * (stored back when the image closes), as QEMU and qemu-io do. Without this, a write would only
 * make the bitmaps inconsistent (the image clears their auto-clear bit before its first change).
 */
export async function openQcow2Tracking(path: string, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
  const image = await Qcow2Image.open(path, options);
  if (!image.capabilities.readOnly && image.info.version >= 3) {
    try {
      await Qcow2Bitmaps.attach(image, { mode: 'track' });
    } catch (e) {
      await image.close().catch(() => undefined);
      throw e;
    }
  }
  return image;
}

/** Options of {@link createImage}. */
export type CreateImageOptions = Omit<CreateQcow2Options, 'size'>;

/**
 * Creates an empty image of `size` bytes. The file must not exist. For raw, only the size is
 * used (a sparse file); for qcow2, every option of `createQcow2`.
 */
export async function createImage(path: string, format: ImageFormat, size: number | undefined, options: CreateImageOptions = {}): Promise<void> {
  if (format === 'raw') {
    if (size === undefined) throw new InvalidArgumentError(`create raw image ${path}`, 'a size is required');
    if (options.backingFile !== undefined) throw new InvalidArgumentError(`create raw image ${path}`, 'a raw image cannot have a backing file');
    await createRawFile(path, size);
    return;
  }
  await createQcow2(path, { ...options, ...(size !== undefined ? { size } : {}) });
}
