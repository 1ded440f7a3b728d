/**
 * Compressed clusters (spec "Compressed Clusters Descriptor"): inflating them for reads, and
 * deflating full clusters for the compressed write path.
 *
 * QEMU's "zlib" compression type is raw deflate (no zlib header) with a 4 KiB window
 * (`windowBits` -12 in `qcow2-threads.c`); data we write must use a window no larger, or QEMU
 * cannot inflate it. Inflation accepts any window.
 */
import { promisify } from 'node:util';
import { constants, deflateRaw, inflateRaw } from 'node:zlib';
import { NotSupportedError } from '../../errors.js';
import { CompressionType, compressedByteRange, type CompressedCluster } from '../format/index.js';
import { corruptImage } from './errors.js';
import type { ImageFile } from './image-file.js';

const inflateRawAsync = promisify(inflateRaw);
const deflateRawAsync = promisify(deflateRaw);

/** The deflate window QEMU uses (and the largest it can inflate), as log2 bytes. */
export const QEMU_DEFLATE_WINDOW_BITS = 12;

/**
 * Reads and inflates the compressed cluster `entry` of the image in `file`.
 *
 * @param field - the L2 entry, for messages
 * @returns a new buffer of exactly `clusterSize` bytes
 * @throws NotSupportedError for zstd; Qcow2FormatError when the data does not inflate to a
 *   whole cluster
 */
export async function inflateCluster(
  file: ImageFile,
  entry: CompressedCluster,
  clusterSize: number,
  compressionType: number,
  field: string,
): Promise<Uint8Array> {
  if (compressionType !== CompressionType.DEFLATE) {
    throw new NotSupportedError(`read compressed cluster ${field} of ${file.path}`, 'zstd compression is not supported (only deflate)');
  }
  const range = compressedByteRange(entry);
  const input = await file.read(range.offset, range.length);
  let output: Uint8Array;
  try {
    // Decompression stops once it has a cluster: the last sector may hold unrelated bytes.
    output = await inflateRawAsync(input, { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
  } catch (e) {
    throw corruptImage(file.path, field, `the compressed data at ${entry.hostOffset} does not inflate: ${(e as Error).message}`);
  }
  if (output.length < clusterSize) {
    throw corruptImage(file.path, field, `the compressed data at ${entry.hostOffset} inflates to ${output.length} bytes, not a ${clusterSize}-byte cluster`);
  }
  return new Uint8Array(output.buffer, output.byteOffset, clusterSize);
}

/** Raw-deflates one cluster the way QEMU does. Returns a new buffer. */
export async function deflateCluster(data: Uint8Array): Promise<Uint8Array> {
  return deflateRawAsync(data, { windowBits: QEMU_DEFLATE_WINDOW_BITS, memLevel: 9 });
}

/**
 * A one-entry cache of the last inflated cluster, keyed by where its compressed data starts,
 * so that small sequential reads of one compressed cluster inflate it once. Must be cleared
 * whenever a host cluster is freed (its bytes may be reused).
 */
export class InflatedCache {
  #hostOffset = -1;
  #data: Uint8Array | undefined;

  /** The inflated cluster whose compressed data starts at `hostOffset`, if cached. */
  get(hostOffset: number): Uint8Array | undefined {
    return hostOffset === this.#hostOffset ? this.#data : undefined;
  }

  /** Keeps `data` (not copied: callers must not change it) for `hostOffset`. */
  set(hostOffset: number, data: Uint8Array): void {
    this.#hostOffset = hostOffset;
    this.#data = data;
  }

  /** Forgets the cached cluster. */
  clear(): void {
    this.#hostOffset = -1;
    this.#data = undefined;
  }
}
