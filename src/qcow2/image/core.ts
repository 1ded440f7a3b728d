/**
 * The state of an open qcow2 image that the read, write, zeroing and block-status paths share,
 * and the small metadata operations they have in common: making an L2 table writable, freeing
 * what an L2 entry held, placing compressed data, refusing writes into metadata.
 *
 * Everything here that changes metadata runs under the image's lock in metadata or exclusive
 * mode (see rw-lock.ts).
 */
import type { BlockDevice } from '../../block/block-device.js';
import { BitbackError } from '../../errors.js';
import { compressedByteRange, type L2Entry, type Qcow2Geometry } from '../format/index.js';
import type { ClusterMap } from './cluster-map.js';
import type { InflatedCache } from './compression.js';
import { corruptImage } from './errors.js';
import type { ImageFile } from './image-file.js';
import type { Refcounts } from './refcounts.js';

/** A host byte range that guest data and L2 tables must never overlap. */
export interface ForbiddenRange {
  offset: number;
  length: number;
  what: string;
}

/** Where the next compressed cluster may go: the free tail of a partly used host cluster. */
export interface CompressedTail {
  /** The host cluster index. */
  cluster: number;
  /** Byte offset of the first free byte in the file. */
  next: number;
}

/** What every path of an open image needs. */
export interface ImageCore {
  /** The image's path, for messages. */
  readonly path: string;
  readonly file: ImageFile;
  readonly g: Qcow2Geometry;
  /** Virtual size in bytes. */
  readonly size: number;
  readonly map: ClusterMap;
  /** Present when the image is writable. */
  readonly refcounts: Refcounts | undefined;
  /** What unallocated clusters read from; undefined: zeroes. */
  readonly backing: BlockDevice | undefined;
  /** `compression_type` of the header (0 deflate, 1 zstd). */
  readonly compressionType: number;
  readonly inflated: InflatedCache;
  /** Store whole-cluster writes into unallocated clusters compressed when that is smaller. */
  compress: boolean;
  /** Host ranges of the header and the active L1 table (the refcount table comes from `refcounts`). */
  readonly fixed: readonly ForbiddenRange[];
  compressedTail: CompressedTail | undefined;
}

/** The refcounts of a writable image (the paths that change metadata only run on those). */
export function refcountsOf(core: ImageCore): Refcounts {
  if (core.refcounts === undefined) throw new BitbackError('INTERNAL', `change metadata of ${core.path}`, 'it is opened read-only');
  return core.refcounts;
}

/** Every host range that guest data must not be written to. */
export function forbiddenRanges(core: Pick<ImageCore, 'fixed' | 'refcounts' | 'g'>): ForbiddenRange[] {
  const ranges = [...core.fixed];
  if (core.refcounts !== undefined) {
    const { offset, clusters } = core.refcounts.table;
    ranges.push({ offset, length: clusters * core.g.clusterSize, what: 'the refcount table' });
  }
  return ranges;
}

/**
 * Refuses to write guest data to `[hostOffset, hostOffset + length)` when an L2 entry sends it
 * into the header, the L1 table or the refcount table (a corrupt image), before anything is
 * written.
 */
export function checkDataTarget(core: ImageCore, hostOffset: number, length: number, field: string): void {
  for (const range of forbiddenRanges(core)) {
    if (hostOffset < range.offset + range.length && range.offset < hostOffset + length) {
      throw corruptImage(core.path, field, `host offset ${hostOffset} points into ${range.what}`);
    }
  }
}

/**
 * Returns the offset of a writable L2 table for `l1Index`: the current one when its COPIED
 * flag says it is ours alone; otherwise a new one (empty, or a copy of the shared one) that is
 * counted, written, and then pointed to from the L1 table, before the shared table loses this
 * reference.
 */
export async function writableL2(core: ImageCore, l1Index: number): Promise<number> {
  const current = core.map.l1(l1Index);
  if (current.l2Offset !== 0 && current.copied) return current.l2Offset;
  const refcounts = refcountsOf(core);
  const cs = core.g.clusterSize;
  const [run] = await refcounts.allocateRuns(1);
  const offset = run!.start * cs;
  const table = current.l2Offset === 0 ? new Uint8Array(cs) : (await core.map.table(current.l2Offset)).slice();
  await core.map.writeTable(offset, table);
  await core.map.setL1(l1Index, { l2Offset: offset, copied: true });
  if (current.l2Offset !== 0) await refcounts.decrement(current.l2Offset / cs);
  return offset;
}

/** True when `entry` holds host clusters that must be released when it is replaced. */
export function holdsHostClusters(entry: L2Entry): boolean {
  return entry.kind === 'compressed' || ((entry.kind === 'normal' || entry.kind === 'zero') && entry.hostOffset !== 0);
}

/** Drops the references that a replaced L2 entry held (call after the new entry is written). */
export async function releaseEntry(core: ImageCore, entry: L2Entry): Promise<void> {
  const refcounts = refcountsOf(core);
  if (entry.kind === 'compressed') {
    const range = compressedByteRange(entry);
    await refcounts.decrementBytes(range.offset, range.length);
  } else if ((entry.kind === 'normal' || entry.kind === 'zero') && entry.hostOffset !== 0) {
    await refcounts.decrement(entry.hostOffset / core.g.clusterSize);
  }
}

/**
 * Finds `length` bytes (less than a cluster) for compressed data, counted before they are
 * used: in the free tail of the last cluster used for compressed data when it fits and its
 * refcount can grow, else at the start of a newly allocated cluster. Returns the byte offset.
 */
export async function allocateCompressedBytes(core: ImageCore, length: number): Promise<number> {
  const refcounts = refcountsOf(core);
  const cs = core.g.clusterSize;
  const tail = core.compressedTail;
  if (tail !== undefined && tail.next + length <= (tail.cluster + 1) * cs && (await refcounts.get(tail.cluster)) < refcounts.max) {
    await refcounts.increment(tail.cluster);
    const offset = tail.next;
    tail.next += length;
    return offset;
  }
  const [run] = await refcounts.allocateRuns(1);
  core.compressedTail = { cluster: run!.start, next: run!.start * cs + length };
  return run!.start * cs;
}
