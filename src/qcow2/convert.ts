/**
 * `bitback image convert`: copies a disk into a new image of either format, sparse (ranges that
 * read as zero are not written, so a new image keeps them unallocated), with several requests in
 * flight, optionally compressed — what `qemu-img convert` does.
 */
import { rm } from 'node:fs/promises';
import { copyDevice } from '../block/copy.js';
import { type ImageLockOptions } from '../block/image-lock.js';
import { createImage, openImage, type CreateImageOptions } from './open-image.js';
import { type ImageFormat } from './info.js';

/** Options of {@link convertImage}. */
export interface ConvertOptions {
  /** Source format; probed when omitted. */
  sourceFormat?: ImageFormat;
  /** Target format. */
  targetFormat: ImageFormat;
  /** Store clusters compressed (qcow2 targets only). */
  compress?: boolean;
  /** Creation options of a qcow2 target (cluster size, refcount width, compat). */
  create?: Omit<CreateImageOptions, 'backingFile' | 'backingFormat'>;
  /** Requests in flight. Default 8. */
  parallel?: number;
  /** Bytes per request. Default 2 MiB. */
  chunk?: number;
  /** Called after each chunk with the bytes of the source covered so far. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Read the source even while another process writes it (qemu-img convert -U): its locks
   * share everything. By default the source is locked as qemu-img convert locks it: no other
   * process may write or resize it meanwhile, raw or qcow2. Default false.
   */
  forceShare?: boolean;
}

/** What a conversion did. */
export interface ConvertStats {
  virtualSize: number;
  /** Bytes read from the source (ranges it did not report as zero). */
  bytesRead: number;
  /** Bytes written to the target (non-zero data). */
  bytesWritten: number;
}

/**
 * Converts the image at `sourcePath` into a new image at `targetPath` (which must not exist).
 * On failure the partly written target is removed.
 */
export async function convertImage(sourcePath: string, targetPath: string, options: ConvertOptions): Promise<ConvertStats> {
  // qemu-img convert opens its source with BDRV_O_NO_SHARE: nobody may change it during the copy.
  const lock: ImageLockOptions = options.forceShare === true ? { forceShare: true } : { noShare: true };
  const source = await openImage(sourcePath, { readOnly: true, lock, ...(options.sourceFormat ? { format: options.sourceFormat } : {}) });
  const stats: ConvertStats = { virtualSize: source.device.size, bytesRead: 0, bytesWritten: 0 };
  let created = false;
  try {
    await createImage(targetPath, options.targetFormat, source.device.size, options.create ?? {});
    created = true;
    const target = await openImage(targetPath, { format: options.targetFormat, compress: options.compress ?? false });
    try {
      const copied = await copyDevice(source.device, target.device, {
        targetIsZero: true,
        parallel: options.parallel ?? 8,
        chunk: options.chunk ?? 2 * 1024 * 1024,
        granule: options.targetFormat === 'qcow2' ? target.device.blockSize.preferred : 4096,
        // In order, one at a time into a raw file: parallel writes into one file only contend for its lock.
        orderedWrites: options.targetFormat === 'raw',
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
      stats.bytesRead = copied.bytesRead;
      stats.bytesWritten = copied.bytesWritten;
    } finally {
      await target.device.close();
    }
  } catch (e) {
    if (created) await rm(targetPath, { force: true });
    throw e;
  } finally {
    await source.device.close();
  }
  return stats;
}
