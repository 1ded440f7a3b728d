/**
 * Copying one `BlockDevice` onto another, sparse and parallel: the data path of `image convert`,
 * `nbd copy` and restores. Only ranges the source does not report as zero are read; zero blocks
 * are skipped when the target is known to read as zero, else zeroed with `writeZeroes`.
 */
import { ExtentFlags, type BlockDevice } from './block-device.js';
import { isZero } from './is-zero.js';
import { forEachParallel } from './parallel.js';
import { InvalidArgumentError } from '../errors.js';

/** Bytes written between two background flushes of the target. */
export const COPY_SYNC_INTERVAL = 64 * 1024 * 1024;

/** Options of {@link copyDevice}. */
export interface CopyOptions {
  /** The target reads as zero everywhere before the copy (a new image): zero ranges are skipped. */
  targetIsZero: boolean;
  /** Requests in flight. Default 8. */
  parallel?: number;
  /** Bytes per request (a power of two). Default 2 MiB. */
  chunk?: number;
  /** Zero blocks inside data are detected at this granularity (bytes). Default 4096. */
  granule?: number;
  /**
   * Write in source order, one write at a time (parallel reads still overlap). Parallel writes to
   * one raw file only contend for its lock; a qcow2 or NBD target takes them in parallel.
   */
  orderedWrites?: boolean;
  /** Flush the target in the background every this many bytes written. Default 64 MiB; 0: never. */
  syncInterval?: number;
  /** Flush the target at the end (default true: the copy is durable when the promise resolves). */
  flush?: boolean;
  /** Called after each chunk with the bytes of the source covered so far. */
  onProgress?: (done: number, total: number) => void;
}

/** What a copy did, in bytes. */
export interface CopyStats {
  size: number;
  /** Read from the source (ranges it did not report as zero). */
  bytesRead: number;
  /** Written to the target as data. */
  bytesWritten: number;
  /** Zeroed on the target with `writeZeroes` (0 when the target was known to be zero). */
  bytesZeroed: number;
}

/**
 * Copies all of `source` onto `target` (which must be at least as large). The target is flushed
 * at the end unless `flush: false`. Neither device is closed. On failure the target holds a
 * partial copy.
 *
 * @throws InvalidArgumentError when the target is smaller than the source; whatever the devices throw
 */
export async function copyDevice(source: BlockDevice, target: BlockDevice, options: CopyOptions): Promise<CopyStats> {
  if (target.size < source.size) {
    throw new InvalidArgumentError('copy a disk', `the target (${target.size} bytes) is smaller than the source (${source.size} bytes)`);
  }
  const stats: CopyStats = { size: source.size, bytesRead: 0, bytesWritten: 0, bytesZeroed: 0 };
  const chunk = options.chunk ?? 2 * 1024 * 1024;
  const parallel = Math.max(1, options.parallel ?? 8);
  const granule = options.granule ?? 4096;
  const syncInterval = options.syncInterval ?? COPY_SYNC_INTERVAL;
  const read = reader(source);
  // One buffer per request in flight, reused: memory stays bounded and nothing is left for the GC.
  const free: Uint8Array[] = [];
  let writing: Promise<void> = Promise.resolve();
  // Flush in the background every syncInterval bytes, at most one flush at a time, so that the
  // target writes the data back while the copy goes on and the final flush finds little to do.
  let sinceSync = 0;
  let syncing: Promise<void> | undefined;
  let syncError: unknown;
  const backgroundSync = (written: number): void => {
    sinceSync += written;
    if (syncInterval <= 0 || sinceSync < syncInterval || syncing !== undefined) return;
    sinceSync = 0;
    syncing = target.flush().then(
      () => { syncing = undefined; },
      (e: unknown) => { syncError ??= e; syncing = undefined; },
    );
  };
  const zero = async (offset: number, length: number): Promise<void> => {
    await target.writeZeroes(offset, length, { mayTrim: true });
    stats.bytesZeroed += length;
  };
  await forEachParallel(pieces(source, chunk), parallel, async (piece) => {
    if (piece.zero) {
      if (!options.targetIsZero) await zero(piece.offset, piece.length);
      options.onProgress?.(piece.offset + piece.length, source.size);
      return;
    }
    const buffer = free.pop() ?? new Uint8Array(chunk);
    try {
      const data = await read(piece.offset, buffer.subarray(0, piece.length));
      stats.bytesRead += piece.length;
      const write = (): Promise<number> => writeSparse(target, piece.offset, data, granule, options.targetIsZero ? undefined : zero);
      let written: number;
      if (options.orderedWrites === true) {
        const turn = writing.then(write);
        writing = turn.then(() => undefined, () => undefined);
        written = await turn;
      } else {
        written = await write();
      }
      stats.bytesWritten += written;
      backgroundSync(written);
    } finally {
      free.push(buffer);
    }
    options.onProgress?.(piece.offset + piece.length, source.size);
  });
  await syncing;
  if (syncError !== undefined) throw syncError;
  if (options.flush !== false) await target.flush();
  return stats;
}

/**
 * Writes `data` (at `offset`) to `target`, leaving out runs of zero blocks of `granule` bytes
 * (aligned on the device, so qcow2 clusters are never split); `zero`, when given, is called for
 * those runs. Returns the bytes written as data.
 */
async function writeSparse(target: BlockDevice, offset: number, data: Uint8Array, granule: number, zero?: (offset: number, length: number) => Promise<void>): Promise<number> {
  let written = 0;
  let dataStart = -1;
  let zeroStart = -1;
  const first = offset - (offset % granule);
  for (let block = first; block < offset + data.length; block += granule) {
    const from = Math.max(block, offset) - offset;
    const to = Math.min(block + granule, offset + data.length) - offset;
    // Data blocks rarely start or end with a zero byte: that check spares most of them the scan.
    const isZeroBlock = data[from] === 0 && data[to - 1] === 0 && isZero(data.subarray(from, to));
    if (isZeroBlock) {
      if (dataStart >= 0) {
        await target.write(offset + dataStart, data.subarray(dataStart, from));
        written += from - dataStart;
        dataStart = -1;
      }
      if (zeroStart < 0) zeroStart = from;
    } else {
      if (zeroStart >= 0) {
        if (zero) await zero(offset + zeroStart, from - zeroStart);
        zeroStart = -1;
      }
      if (dataStart < 0) dataStart = from;
    }
  }
  if (dataStart >= 0) {
    await target.write(offset + dataStart, data.subarray(dataStart));
    written += data.length - dataStart;
  }
  if (zeroStart >= 0 && zero) await zero(offset + zeroStart, data.length - zeroStart);
  return written;
}

/** The source cut into pieces of at most `chunk` bytes, each data or zero (by block status). */
async function* pieces(source: BlockDevice, chunk: number): AsyncGenerator<{ offset: number; length: number; zero: boolean }> {
  for (let offset = 0; offset < source.size; ) {
    const extents = await source.blockStatus(offset, source.size - offset);
    for (const e of extents) {
      const zero = (e.flags & ExtentFlags.ZERO) !== 0;
      // Zero ranges go in big pieces (one writeZeroes each); data is cut on chunk-aligned offsets
      // so that every request covers whole clusters where it can.
      const step = zero ? 1024 * 1024 * 1024 : chunk;
      for (let at = e.offset; at < e.offset + e.length; ) {
        const end = Math.min(e.offset + e.length, at - (at % step) + step);
        yield { offset: at, length: end - at, zero };
        at = end;
      }
      offset = e.offset + e.length;
    }
  }
}

/**
 * How to read `device` into a buffer: in place where the device can (raw files, qcow2 images, NBD),
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
