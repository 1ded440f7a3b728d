/**
 * Reading and validating the metadata of an image at open: the first cluster (header,
 * extensions, backing file name), the active L1 table and, for writing, the refcount table.
 *
 * Nothing is allocated in proportion to a size the file claims before that size has been
 * checked against QEMU's limits and the file's length (the header decoder does both).
 */
import { NotSupportedError } from '../../errors.js';
import {
  HeaderOffset,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  TABLE_ENTRY_SIZE,
  decodeHeader,
  decodeImageHeader,
  decodeL1Table,
  decodeRefcountTable,
  featuresOf,
  geometryOf,
  type L1Entry,
  type Qcow2Geometry,
  type Qcow2ImageHeader,
} from '../format/index.js';
import type { BlockDevice } from '../../block/block-device.js';
import { ClusterMap } from './cluster-map.js';
import { InflatedCache } from './compression.js';
import { forbiddenRanges, type ForbiddenRange, type ImageCore } from './core.js';
import { corruptImage } from './errors.js';
import type { ImageFile } from './image-file.js';
import { Refcounts, type RefcountTableState } from './refcounts.js';

/** The metadata of an image as read at open. */
export interface LoadedMetadata {
  image: Qcow2ImageHeader;
  geometry: Qcow2Geometry;
  l1: L1Entry[];
  /** Header cluster and active L1 table. */
  fixed: ForbiddenRange[];
  /** Present when the image is opened for writing. */
  refcountTable?: RefcountTableState;
}

/**
 * Reads and validates the metadata of `file`.
 *
 * @throws Qcow2FormatError / Qcow2UnsupportedError from the codecs and for overlapping
 *   structures; NotSupportedError for external data files, and for writing images with
 *   extended L2 entries, the dirty bit or the corrupt bit set.
 */
export async function loadMetadata(file: ImageFile, readOnly: boolean): Promise<LoadedMetadata> {
  const head = await file.read(0, Math.min(file.size, 512));
  const clusterBits = head.length >= 24 ? new DataView(head.buffer).getUint32(HeaderOffset.CLUSTER_BITS) : 0;
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) decodeHeader(head, file.size); // throws the precise error
  const first = await file.read(0, Math.min(file.size, 2 ** clusterBits));
  const image = decodeImageHeader(first, file.size);
  const { header } = image;
  const features = featuresOf(header);
  const action = `open qcow2 image ${file.path}`;
  if (features.externalDataFile || image.extensions.externalDataFile !== undefined) {
    throw new NotSupportedError(action, 'it keeps its data in an external data file, which is not supported');
  }
  if (!readOnly) {
    if (features.extendedL2) throw new NotSupportedError(action, 'writing images with extended L2 entries (subclusters) is not supported; open it read-only');
    if (features.dirty) throw new NotSupportedError(action, 'its dirty bit is set (refcounts may be wrong); repair it with qemu-img check -r all first');
    if (features.corrupt) throw new NotSupportedError(action, 'it is marked corrupt; repair it with qemu-img check -r all first');
  }
  const geometry = geometryOf(header);
  const cs = geometry.clusterSize;
  const l1Bytes = await file.read(header.l1TableOffset, header.l1Size * TABLE_ENTRY_SIZE);
  const l1 = decodeL1Table(l1Bytes, 0, header.l1Size, geometry, file.size);
  const fixed: ForbiddenRange[] = [
    { offset: 0, length: cs, what: 'the header' },
    { offset: header.l1TableOffset, length: header.l1Size * TABLE_ENTRY_SIZE, what: 'the L1 table' },
  ];
  const tableRange: ForbiddenRange = {
    offset: header.refcountTableOffset,
    length: header.refcountTableClusters * cs,
    what: 'the refcount table',
  };
  if (overlaps(fixed[1]!, tableRange)) {
    throw corruptImage(file.path, 'header.refcount_table_offset', `the refcount table at ${tableRange.offset} overlaps the L1 table at ${header.l1TableOffset}`);
  }
  const loaded: LoadedMetadata = { image, geometry, l1, fixed };
  if (!readOnly) {
    const bytes = await file.read(tableRange.offset, tableRange.length);
    const entries = decodeRefcountTable(bytes, 0, tableRange.length / TABLE_ENTRY_SIZE, geometry, file.size);
    entries.forEach((offset, i) => {
      if (offset === 0) return;
      for (const range of [...fixed, tableRange]) {
        if (overlaps(range, { offset, length: cs })) {
          throw corruptImage(file.path, `refcount_table[${i}]`, `the refcount block at ${offset} overlaps ${range.what}`);
        }
      }
    });
    loaded.refcountTable = { offset: tableRange.offset, clusters: header.refcountTableClusters, entries };
  }
  return loaded;
}

function overlaps(a: { offset: number; length: number }, b: { offset: number; length: number }): boolean {
  return a.length > 0 && b.length > 0 && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** What {@link buildCore} needs besides the metadata. */
export interface CoreOptions {
  backing: BlockDevice | undefined;
  /** Byte budgets of the caches; each keeps at least {@link MIN_CACHED_TABLES} tables. */
  l2CacheBytes: number;
  refcountCacheBytes: number;
  compress: boolean;
}

/** Fewest tables each cache keeps, whatever the byte budget. */
export const MIN_CACHED_TABLES = 2;

/** Assembles the state of an open image from its loaded metadata. */
export function buildCore(path: string, file: ImageFile, meta: LoadedMetadata, options: CoreOptions): ImageCore {
  const g = meta.geometry;
  const cs = g.clusterSize;
  const fixed = meta.fixed;
  const fixedClusters = fixed.map((r) => {
    const start = Math.floor(r.offset / cs);
    return { start, count: Math.ceil((r.offset + r.length) / cs) - start, what: r.what };
  });
  const refcounts =
    meta.refcountTable === undefined
      ? undefined
      : new Refcounts(file, g, meta.refcountTable, Math.max(MIN_CACHED_TABLES, Math.floor(options.refcountCacheBytes / cs)), () => fixedClusters);
  const forbidden = (): ForbiddenRange[] => forbiddenRanges({ fixed, refcounts, g });
  const { header } = meta.image;
  const map = new ClusterMap(file, g, header.l1TableOffset, meta.l1, Math.max(MIN_CACHED_TABLES, Math.floor(options.l2CacheBytes / cs)), forbidden);
  return {
    path,
    file,
    g,
    size: header.size,
    map,
    refcounts,
    backing: options.backing,
    compressionType: header.compressionType,
    inflated: new InflatedCache(),
    compress: options.compress,
    fixed,
    compressedTail: undefined,
  };
}
