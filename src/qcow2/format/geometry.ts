/**
 * The derived sizes of a qcow2 image: cluster size, entries per L2 table, subclusters, refcount
 * width, and the index arithmetic of spec "Cluster mapping" and "Host cluster management".
 *
 * Every codec of a table or entry takes a {@link Qcow2Geometry}; make one with
 * {@link geometryOf} from a decoded header or with {@link makeGeometry} when creating an image.
 */
import {
  DEFAULT_REFCOUNT_ORDER,
  EXTENDED_L2_ENTRY_SIZE,
  IncompatibleFeature,
  L2_ENTRY_SIZE,
  MAX_CLUSTER_BITS,
  MAX_REFCOUNT_ORDER,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  SUBCLUSTERS_PER_CLUSTER,
  TABLE_ENTRY_SIZE,
} from './constants.js';
import { checkInteger } from './bytes.js';
import { problem } from './errors.js';
import type { Qcow2Header } from './header.js';

/** Sizes derived from a header. All sizes in bytes unless the name says otherwise. */
export interface Qcow2Geometry {
  /** Header version, 2 or 3. */
  readonly version: number;
  /** log2 of the cluster size, 9..21. */
  readonly clusterBits: number;
  /** Cluster size in bytes. */
  readonly clusterSize: number;
  /** Extended L2 entries (incompatible bit 4): 128-bit L2 entries, 32 subclusters. */
  readonly extendedL2: boolean;
  /** External data file (incompatible bit 2): host offset 0 with COPIED is a valid cluster. */
  readonly externalDataFile: boolean;
  /** Bit 0 of a standard descriptor means "reads as zero" (version 3 without extended L2). */
  readonly zeroFlag: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  readonly l2EntrySize: number;
  /** Entries per L2 table (an L2 table is one cluster). */
  readonly l2Entries: number;
  /** log2 of `l2Entries`. */
  readonly l2Bits: number;
  /** Subclusters per cluster: 32 with extended L2, else 1. */
  readonly subclustersPerCluster: number;
  /** Subcluster size in bytes (the cluster size without extended L2). */
  readonly subclusterSize: number;
  /** 64-bit entries per cluster of an L1, refcount or bitmap table. */
  readonly tableEntriesPerCluster: number;
  /** log2 of the refcount width in bits, 0..6. */
  readonly refcountOrder: number;
  /** Refcount width in bits, 1..64. */
  readonly refcountBits: number;
  /** Refcounts per refcount block (a block is one cluster). */
  readonly refcountBlockEntries: number;
  /** x of the compressed descriptor: bits 0..x-1 hold the host offset (spec "Compressed Clusters Descriptor"). */
  readonly compressedOffsetBits: number;
  /** Width of the additional-sectors field of a compressed descriptor (bits x..61). */
  readonly compressedSectorBits: number;
}

/** Parameters of {@link makeGeometry}. */
export interface GeometryOptions {
  /** log2 of the cluster size, 9..21 (14..21 with extended L2). */
  clusterBits: number;
  /** Header version; default 3. */
  version?: number;
  /** Refcount order 0..6; default 4 (16-bit), the only value of version 2. */
  refcountOrder?: number;
  /** Extended L2 entries; default false. Version 3 only. */
  extendedL2?: boolean;
  /** External data file; default false. Version 3 only. */
  externalDataFile?: boolean;
}

/**
 * Builds a geometry from parameters. Throws `InvalidArgumentError` for combinations the
 * spec forbids (cluster bits out of range, extended L2 on version 2 or below 16 KiB clusters).
 */
export function makeGeometry(options: GeometryOptions): Qcow2Geometry {
  const version = options.version ?? 3;
  const clusterBits = options.clusterBits;
  const refcountOrder = options.refcountOrder ?? DEFAULT_REFCOUNT_ORDER;
  const extendedL2 = options.extendedL2 ?? false;
  const externalDataFile = options.externalDataFile ?? false;
  checkInteger('encode', 'version', version, 2, 3);
  checkInteger('encode', 'cluster_bits', clusterBits, MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
  checkInteger('encode', 'refcount_order', refcountOrder, 0, MAX_REFCOUNT_ORDER);
  if (version === 2 && (refcountOrder !== DEFAULT_REFCOUNT_ORDER || extendedL2 || externalDataFile)) {
    throw problem('encode', 'version', 'version 2 has 16-bit refcounts and no extended L2 or external data file');
  }
  if (extendedL2 && clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw problem('encode', 'cluster_bits', `${clusterBits} is below ${MIN_CLUSTER_BITS_EXTENDED_L2}, the minimum with extended L2`);
  }
  return buildGeometry(version, clusterBits, refcountOrder, extendedL2, externalDataFile);
}

/**
 * The geometry of a decoded (hence validated) header. Does not validate again.
 */
export function geometryOf(
  header: Pick<Qcow2Header, 'version' | 'clusterBits' | 'refcountOrder' | 'incompatibleFeatures'>,
): Qcow2Geometry {
  return buildGeometry(
    header.version,
    header.clusterBits,
    header.refcountOrder,
    (header.incompatibleFeatures & IncompatibleFeature.EXTENDED_L2) !== 0n,
    (header.incompatibleFeatures & IncompatibleFeature.EXTERNAL_DATA_FILE) !== 0n,
  );
}

function buildGeometry(
  version: number,
  clusterBits: number,
  refcountOrder: number,
  extendedL2: boolean,
  externalDataFile: boolean,
): Qcow2Geometry {
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? EXTENDED_L2_ENTRY_SIZE : L2_ENTRY_SIZE;
  const subclustersPerCluster = extendedL2 ? SUBCLUSTERS_PER_CLUSTER : 1;
  const refcountBits = 2 ** refcountOrder;
  const compressedOffsetBits = 62 - (clusterBits - 8);
  return {
    version,
    clusterBits,
    clusterSize,
    extendedL2,
    externalDataFile,
    zeroFlag: version >= 3 && !extendedL2,
    l2EntrySize,
    l2Entries: clusterSize / l2EntrySize,
    l2Bits: clusterBits - Math.log2(l2EntrySize),
    subclustersPerCluster,
    subclusterSize: clusterSize / subclustersPerCluster,
    tableEntriesPerCluster: clusterSize / TABLE_ENTRY_SIZE,
    refcountOrder,
    refcountBits,
    refcountBlockEntries: (clusterSize * 8) / refcountBits,
    compressedOffsetBits,
    compressedSectorBits: 62 - compressedOffsetBits,
  };
}

/** Bytes covered by one L2 table (one L1 entry). */
export function bytesPerL2Table(geometry: Qcow2Geometry): number {
  return geometry.clusterSize * geometry.l2Entries;
}

/**
 * The number of L1 entries needed to map `virtualSize` bytes (QEMU `size_to_l1`): an image's
 * `l1_size` must be at least this.
 */
export function l1EntriesFor(virtualSize: number, geometry: Qcow2Geometry): number {
  return Math.ceil(virtualSize / bytesPerL2Table(geometry));
}

/** Number of clusters that `bytes` bytes occupy (rounded up). */
export function clustersFor(bytes: number, geometry: Qcow2Geometry): number {
  return Math.ceil(bytes / geometry.clusterSize);
}

/** Where a guest byte offset is mapped (spec "Cluster mapping"). */
export interface GuestLocation {
  /** Index into the L1 table. */
  l1Index: number;
  /** Index into the L2 table. */
  l2Index: number;
  /** Byte offset within the cluster. */
  offsetInCluster: number;
  /** Subcluster index within the cluster (always 0 without extended L2). */
  subcluster: number;
}

/** Splits a guest byte offset (a non-negative safe integer) into table indexes. */
export function locateGuestOffset(guestOffset: number, geometry: Qcow2Geometry): GuestLocation {
  const cluster = Math.floor(guestOffset / geometry.clusterSize);
  const offsetInCluster = guestOffset - cluster * geometry.clusterSize;
  return {
    l1Index: Math.floor(cluster / geometry.l2Entries),
    l2Index: cluster % geometry.l2Entries,
    offsetInCluster,
    subcluster: Math.floor(offsetInCluster / geometry.subclusterSize),
  };
}

/** Where the refcount of a host cluster lives (spec "Host cluster management"). */
export interface RefcountLocation {
  /** Index into the refcount table. */
  tableIndex: number;
  /** Index of the refcount within its refcount block. */
  blockIndex: number;
}

/** Locates the refcount of the host cluster that contains byte `hostOffset`. */
export function locateRefcount(hostOffset: number, geometry: Qcow2Geometry): RefcountLocation {
  const cluster = Math.floor(hostOffset / geometry.clusterSize);
  return {
    tableIndex: Math.floor(cluster / geometry.refcountBlockEntries),
    blockIndex: cluster % geometry.refcountBlockEntries,
  };
}
