/**
 * `bitback image convert`: copies a disk into a new image of either format, sparse (ranges that
 * read as zero are not written, so a new image keeps them unallocated), with several requests in
 * flight, optionally compressed — what `qemu-img convert` does.
 */
import { rm } from 'node:fs/promises';
import { ExtentFlags, type BlockDevice } from '../block/block-device.js';
import { isZero } from '../block/is-zero.js';
import { forEachParallel } from '../block/parallel.js';
import { createImage, openImage, type CreateImageOptions } from './open-image.js';
import { type ImageFormat } from './info.js';

/** Bytes written between two background flushes of the target. */
const SYNC_INTERVAL = 64 * 1024 * 1024;

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
}

/** What a conversion did. */
export interface ConvertStats {
  virtualSize: number;
  /** Bytes read from the source (ranges it did not report as zero). */
  bytesRead: number;
  /** Bytes written to the target (non-zero data). */
  bytesWritten: number;
}

/** Writes `data` (at guest `offset`) to `target`, skipping runs of zero blocks of `granule` bytes. */
async function writeSparse(target: BlockDevice, offset: number, data: Uint8Array, granule: number): Promise<number> {
  let written = 0;
  let runStart = -1;
  // Blocks are aligned to the granule in guest offsets, so qcow2 clusters are never split.
  const first = offset - (offset % granule);
  for (let block = first; block < offset + data.length; block += granule) {
    const from = Math.max(block, offset) - offset;
    const to = Math.min(block + granule, offset + data.length) - offset;
    const zero = isZero(data.subarray(from, to));
    if (!zero && runStart < 0) runStart = from;
    if (zero && runStart >= 0) {
      await target.write(offset + runStart, data.subarray(runStart, from));
      written += from - runStart;
      runStart = -1;
    }
  }
  if (runStart >= 0) {
    await target.write(offset + runStart, data.subarray(runStart));
    written += data.length - runStart;
  }
  return written;
}

/** The data chunks of `source`: ranges it does not report as zero, cut at `chunk` bytes. */
async function* dataChunks(source: BlockDevice, chunk: number): AsyncGenerator<{ offset: number; length: number }> {
  for (let offset = 0; offset < source.size; ) {
    const extents = await source.blockStatus(offset, source.size - offset);
    for (const e of extents) {
      if ((e.flags & ExtentFlags.ZERO) === 0) {
        for (let at = e.offset; at < e.offset + e.length; ) {
          // Cut on chunk-aligned offsets so every request covers whole clusters where it can.
          const end = Math.min(e.offset + e.length, at - (at % chunk) + chunk);
          yield { offset: at, length: end - at };
          at = end;
        }
      }
      offset = e.offset + e.length;
    }
  }
}

/**
 * How to read `device` into a buffer: in place where the device can (raw files, qcow2 images),
 * else into a new buffer. The function resolves with the bytes, which may or may not be `target`.
 */
function reader(device: BlockDevice): (offset: number, target: Uint8Array) => Promise<Uint8Array> {
  const into = (device as { readInto?: unknown }).readInto;
  if (typeof into === 'function') {
    const readInto = into as (offset: number, target: Uint8Array) => Promise<void>;
    return async (offset, target) => {
      await readInto.call(device, offset, target);
      return target;
    };
  }
  return (offset, target) => device.read(offset, target.length);
}

/**
 * Converts the image at `sourcePath` into a new image at `targetPath` (which must not exist).
 * On failure the partly written target is removed.
 */
export async function convertImage(sourcePath: string, targetPath: string, options: ConvertOptions): Promise<ConvertStats> {
  const source = await openImage(sourcePath, { readOnly: true, ...(options.sourceFormat ? { format: options.sourceFormat } : {}) });
  const stats: ConvertStats = { virtualSize: source.device.size, bytesRead: 0, bytesWritten: 0 };
  let created = false;
  try {
    await createImage(targetPath, options.targetFormat, source.device.size, options.create ?? {});
    created = true;
    const target = await openImage(targetPath, { format: options.targetFormat, compress: options.compress ?? false });
    try {
      const chunk = options.chunk ?? 2 * 1024 * 1024;
      const parallel = Math.max(1, options.parallel ?? 8);
      const granule = options.targetFormat === 'qcow2' ? target.device.blockSize.preferred : 4096;
      const read = reader(source.device);
      // One buffer per request in flight, reused: memory stays bounded and nothing is left for the GC.
      const free: Uint8Array[] = [];
      let writing: Promise<void> = Promise.resolve();
      // Flush in the background every SYNC_INTERVAL bytes written, at most one flush at a time, so
      // that the kernel writes the data back while the copy goes on and the final flush (the
      // target must be durable) finds little left to do.
      let sinceSync = 0;
      let syncing: Promise<void> | undefined;
      let syncError: unknown;
      const backgroundSync = (written: number): void => {
        sinceSync += written;
        if (sinceSync < SYNC_INTERVAL || syncing !== undefined) return;
        sinceSync = 0;
        syncing = target.device.flush().then(
          () => { syncing = undefined; },
          (e: unknown) => { syncError ??= e; syncing = undefined; },
        );
      };
      await forEachParallel(dataChunks(source.device, chunk), parallel, async ({ offset, length }) => {
        const buffer = free.pop() ?? new Uint8Array(chunk);
        try {
          const data = await read(offset, buffer.subarray(0, length));
          stats.bytesRead += length;
          if (options.targetFormat === 'raw') {
            // In order, one at a time: parallel writes into one file only contend for its lock.
            const turn = writing.then(() => writeSparse(target.device, offset, data, granule));
            writing = turn.then(() => undefined, () => undefined);
            const written = await turn;
            stats.bytesWritten += written;
            backgroundSync(written);
          } else {
            const written = await writeSparse(target.device, offset, data, granule);
            stats.bytesWritten += written;
            backgroundSync(written);
          }
        } finally {
          free.push(buffer);
        }
        options.onProgress?.(offset + length, source.device.size);
      });
      await syncing;
      if (syncError !== undefined) throw syncError;
      await target.device.flush();
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
