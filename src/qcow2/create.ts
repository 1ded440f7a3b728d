/**
 * Creating a qcow2 image the way `qemu-img create -f qcow2` lays it out: the header cluster
 * (header, backing format and feature name table extensions, backing file name), the refcount
 * table, the refcount blocks, the L1 table; with `preallocation: 'metadata'` every L2 table
 * too, each followed by the (sparse) data clusters it maps.
 */
import { createNewFile } from '../block/new-file.js';
import { stat, unlink, type FileHandle } from 'node:fs/promises';
import { BitbackError, InvalidArgumentError, NotFoundError, fromSystemError } from '../errors.js';
import { isPowerOfTwo } from '../block/block-size.js';
import {
  FeatureType,
  TABLE_ENTRY_SIZE,
  encodeImageHeader,
  encodeRefcountTable,
  l1EntriesFor,
  makeGeometry,
  newHeader,
  refcountLayoutFor,
  setRefcount,
  writeL1Entry,
  writeL2Entry,
  type FeatureName,
  type HeaderExtensions,
  type Qcow2Geometry,
} from './format/index.js';
import { probeFormat, resolveBackingPath, type BackingFormat } from './image/backing.js';
import { Qcow2Image } from './image/image.js';

/** Options of {@link createQcow2}. */
export interface CreateQcow2Options {
  /**
   * Virtual size in bytes, rounded up to a multiple of 512 as QEMU does. Default: the backing
   * file's size (then `backingFile` is required).
   */
  size?: number;
  /** Cluster size in bytes, a power of two from 512 to 2 MiB. Default 65536. */
  clusterSize?: number;
  /** Refcount width in bits, a power of two from 1 to 64 (16 for compat 0.10). Default 16. */
  refcountBits?: number;
  /** The backing file name, stored as given; a relative name is relative to the new image's directory. */
  backingFile?: string;
  /** The backing file's format, stored in the header. Default: probed from the file. */
  backingFormat?: BackingFormat;
  /** `1.1`: version 3 (default); `0.10`: version 2. */
  compat?: '1.1' | '0.10';
  /** `metadata`: allocate every L2 table and data cluster (data left sparse). Default `off`. */
  preallocation?: 'off' | 'metadata';
}

/**
 * The feature name table QEMU writes into version 3 images (block/qcow2.c
 * `qcow2_update_header`), only with clusters larger than 4 KiB: its 392 bytes would leave too
 * little room for a backing file name in a small first cluster.
 */
const FEATURE_NAMES: readonly FeatureName[] = [
  { type: FeatureType.INCOMPATIBLE, bit: 0, name: 'dirty bit' },
  { type: FeatureType.INCOMPATIBLE, bit: 1, name: 'corrupt bit' },
  { type: FeatureType.INCOMPATIBLE, bit: 2, name: 'external data file' },
  { type: FeatureType.INCOMPATIBLE, bit: 3, name: 'compression type' },
  { type: FeatureType.INCOMPATIBLE, bit: 4, name: 'extended L2 entries' },
  { type: FeatureType.COMPATIBLE, bit: 0, name: 'lazy refcounts' },
  { type: FeatureType.AUTOCLEAR, bit: 0, name: 'bitmaps' },
  { type: FeatureType.AUTOCLEAR, bit: 1, name: 'raw external data' },
];

/** The feature name table is written only with clusters larger than this (bytes). */
const FEATURE_NAMES_MIN_CLUSTER = 4096;

/** QEMU rounds every virtual size up to whole 512-byte sectors. */
const SECTOR = 512;

/**
 * Creates a qcow2 image at `path`, which must not exist (`ALREADY_EXISTS` otherwise; a partly
 * written file is removed on failure). The file is synced before the promise resolves.
 *
 * @throws InvalidArgumentError for sizes, cluster sizes and widths out of range or that QEMU
 *   could not open; NotFoundError when the backing file does not exist
 */
export async function createQcow2(path: string, options: CreateQcow2Options): Promise<void> {
  const action = `create qcow2 image ${path}`;
  const { geometry, version } = checkOptions(action, options);
  const backingFormat = options.backingFile === undefined ? undefined : options.backingFormat ?? (await probeFormat(resolveBackingPath(path, options.backingFile), action));
  const size = roundUp(options.size ?? (await backingSize(action, path, options.backingFile, backingFormat)), SECTOR);
  const layout = planLayout(geometry, size, options.preallocation === 'metadata');
  const extensions: HeaderExtensions = {};
  if (backingFormat !== undefined) extensions.backingFormat = backingFormat;
  if (version === 3 && geometry.clusterSize > FEATURE_NAMES_MIN_CLUSTER) extensions.featureNames = [...FEATURE_NAMES];
  let headerCluster: Uint8Array;
  try {
    headerCluster = encodeImageHeader({
      header: newHeader({
        version,
        clusterBits: geometry.clusterBits,
        size,
        l1Size: layout.l1Size,
        l1TableOffset: layout.l1Offset,
        refcountTableOffset: layout.tableOffset,
        refcountTableClusters: layout.tableClusters,
        refcountOrder: geometry.refcountOrder,
      }),
      extensions,
      ...(options.backingFile === undefined ? {} : { backingFile: options.backingFile }),
    });
  } catch (e) {
    if (e instanceof BitbackError) throw new InvalidArgumentError(action, e.reason, { cause: e });
    throw e;
  }

  const handle = await createNewFile(path, action);
  try {
    await writeImage(handle, geometry, layout, headerCluster);
    await handle.sync();
    await handle.close();
  } catch (e) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw fromSystemError(action, e);
  }
}

interface Layout {
  l1Size: number;
  l1Offset: number;
  tableOffset: number;
  tableClusters: number;
  /** Number of refcount blocks, contiguous from `blocksOffset`. */
  blocks: number;
  blocksOffset: number;
  /** Clusters in use, all with refcount 1: `[0, usedClusters)`. */
  usedClusters: number;
  /** Preallocated L2 tables, one per L1 entry (0 without preallocation), from `l2sOffset`. */
  l2Tables: number;
  l2sOffset: number;
  /** Number of guest clusters. */
  guestClusters: number;
}

function checkOptions(action: string, options: CreateQcow2Options): { geometry: Qcow2Geometry; version: number } {
  const { size, clusterSize = 65536, refcountBits = 16, compat = '1.1', preallocation = 'off' } = options;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) throw new InvalidArgumentError(action, `size ${size} is not a non-negative integer`);
  if (size === undefined && options.backingFile === undefined) throw new InvalidArgumentError(action, 'a size is needed when there is no backing file');
  if (!isPowerOfTwo(clusterSize) || clusterSize < 512 || clusterSize > 2 * 1024 * 1024) {
    throw new InvalidArgumentError(action, `cluster size ${clusterSize} is not a power of two from 512 to 2 MiB`);
  }
  if (!isPowerOfTwo(refcountBits) || refcountBits > 64) throw new InvalidArgumentError(action, `refcount width ${refcountBits} is not a power of two from 1 to 64`);
  if (compat !== '1.1' && compat !== '0.10') throw new InvalidArgumentError(action, `compat '${String(compat)}' is not 1.1 or 0.10`);
  if (compat === '0.10' && refcountBits !== 16) throw new InvalidArgumentError(action, 'compat 0.10 (version 2) images have 16-bit refcounts');
  if (preallocation !== 'off' && preallocation !== 'metadata') throw new InvalidArgumentError(action, `preallocation '${String(preallocation)}' is not off or metadata`);
  if (options.backingFormat !== undefined && options.backingFile === undefined) throw new InvalidArgumentError(action, 'a backing format needs a backing file');
  if (options.backingFormat !== undefined && options.backingFormat !== 'raw' && options.backingFormat !== 'qcow2') {
    throw new InvalidArgumentError(action, `backing format '${String(options.backingFormat)}' is not raw or qcow2`);
  }
  if (options.backingFile !== undefined && preallocation !== 'off') {
    throw new InvalidArgumentError(action, 'preallocation cannot be combined with a backing file (as in QEMU without extended L2)');
  }
  const version = compat === '0.10' ? 2 : 3;
  return { geometry: makeGeometry({ clusterBits: Math.log2(clusterSize), version, refcountOrder: Math.log2(refcountBits) }), version };
}

async function backingSize(action: string, path: string, backingFile: string | undefined, format: BackingFormat | undefined): Promise<number> {
  const resolved = resolveBackingPath(path, backingFile!);
  if (format === 'qcow2') {
    const image = await Qcow2Image.open(resolved, { readOnly: true, backing: 'none' });
    const size = image.size;
    await image.close();
    return size;
  }
  try {
    return (await stat(resolved)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(action, `backing file ${resolved} does not exist`, { cause: e });
    throw fromSystemError(action, e);
  }
}

/**
 * Header, refcount table, refcount blocks, L1 table, then (preallocated) each L2 table followed
 * by the data clusters it maps. Only counts: nothing is allocated here, so that a size QEMU
 * would refuse is refused (by the header encoder) before any memory is spent on it.
 */
function planLayout(g: Qcow2Geometry, size: number, preallocate: boolean): Layout {
  const cs = g.clusterSize;
  const l1Size = l1EntriesFor(size, g);
  const l1Clusters = Math.ceil((l1Size * TABLE_ENTRY_SIZE) / cs);
  const guestClusters = Math.ceil(size / cs);
  const l2Tables = preallocate ? l1Size : 0;
  const dataClusters = preallocate ? guestClusters : 0;
  const refcounts = refcountLayoutFor(1 + l1Clusters + l2Tables + dataClusters, g);
  const l1Cluster = 1 + refcounts.tableClusters + refcounts.blocks;
  return {
    l1Size,
    l1Offset: l1Size === 0 ? 0 : l1Cluster * cs,
    tableOffset: cs,
    tableClusters: refcounts.tableClusters,
    blocks: refcounts.blocks,
    blocksOffset: (1 + refcounts.tableClusters) * cs,
    usedClusters: refcounts.totalClusters,
    l2Tables,
    l2sOffset: (l1Cluster + l1Clusters) * cs,
    guestClusters,
  };
}

/** Host offset of preallocated L2 table `t`; its data clusters follow it. */
function l2Offset(g: Qcow2Geometry, layout: Layout, t: number): number {
  return layout.l2sOffset + t * (1 + g.l2Entries) * g.clusterSize;
}

async function writeImage(handle: FileHandle, g: Qcow2Geometry, layout: Layout, headerCluster: Uint8Array): Promise<void> {
  const cs = g.clusterSize;
  await writeAll(handle, headerCluster, 0);
  const table = new Array<number>(layout.tableClusters * g.tableEntriesPerCluster).fill(0);
  for (let j = 0; j < layout.blocks; j++) table[j] = layout.blocksOffset + j * cs;
  await writeAll(handle, encodeRefcountTable(table, g), layout.tableOffset);
  const E = g.refcountBlockEntries;
  for (let j = 0; j < layout.blocks; j++) {
    const block = new Uint8Array(cs);
    for (let c = j * E; c < Math.min(layout.usedClusters, (j + 1) * E); c++) setRefcount(block, c - j * E, g.refcountOrder, 1);
    await writeAll(handle, block, layout.blocksOffset + j * cs);
  }
  if (layout.l1Size === 0) return;
  const l1 = new Uint8Array(layout.l1Size * TABLE_ENTRY_SIZE);
  for (let t = 0; t < layout.l2Tables; t++) writeL1Entry(l1, t, { l2Offset: l2Offset(g, layout, t), copied: true }, g);
  await writeAll(handle, l1, layout.l1Offset);
  for (let t = 0; t < layout.l2Tables; t++) {
    const l2 = new Uint8Array(cs);
    const first = l2Offset(g, layout, t) + cs;
    const entries = Math.min(g.l2Entries, layout.guestClusters - t * g.l2Entries);
    for (let i = 0; i < entries; i++) writeL2Entry(l2, i, { kind: 'normal', hostOffset: first + i * cs, copied: true }, g);
    await writeAll(handle, l2, l2Offset(g, layout, t));
  }
  if (layout.l2Tables > 0) await handle.truncate(layout.usedClusters * cs);
}

async function writeAll(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
