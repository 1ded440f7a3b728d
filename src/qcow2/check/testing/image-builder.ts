/**
 * Test-only: builds small, valid qcow2 images byte by byte (STYLE rule 4: fixtures from a
 * builder), independently of the codecs under test, for the corrupt-image corpus to damage.
 *
 * Layout, one structure per cluster, in this order: header; refcount table; refcount block;
 * L1 table; L2 table; two data clusters; a cluster of compressed data; then optionally a
 * snapshot table and the snapshot's L1 table (sharing the active L2 table); then optionally a
 * bitmap directory, bitmap table and one cluster of bitmap data.
 */
import {
  ByteBuilder,
  bitmapEntryBytes,
  bitmapsExtensionBytes,
  compressedDescriptor,
  extensionBytes,
  headerCluster,
  snapshotEntryBytes,
  snapshotExtra,
  table64,
} from '../../format/testing/builder.js';

/** What to build. */
export interface BuildOptions {
  /** log2 of the cluster size; default 12 (4 KiB). */
  clusterBits?: number;
  /** log2 of the refcount width; default 4 (16 bits). */
  refcountOrder?: number;
  /** Virtual size in bytes; default 1 MiB. */
  size?: number;
  /** Add an internal snapshot sharing every cluster. */
  snapshot?: boolean;
  /** Add a persistent bitmap with one data cluster. */
  bitmap?: boolean;
}

/** Byte offsets of the structures in a built image. */
export interface BuiltLayout {
  clusterSize: number;
  refcountTable: number;
  refcountBlock: number;
  l1: number;
  l1Size: number;
  l2: number;
  data: [number, number];
  compressed: number;
  snapshotTable?: number;
  snapshotL1?: number;
  bitmapDirectory?: number;
  bitmapTable?: number;
  bitmapData?: number;
}

/** A built image. `bytes` is a new buffer the caller owns. */
export interface BuiltImage {
  bytes: Uint8Array;
  layout: BuiltLayout;
}

const COPIED = 1n << 63n;

/** Builds a consistent qcow2 version 3 image (qemu-img check finds nothing wrong with it). */
export function buildImage(options: BuildOptions = {}): BuiltImage {
  const clusterBits = options.clusterBits ?? 12;
  const cs = 2 ** clusterBits;
  const refcountOrder = options.refcountOrder ?? 4;
  const size = options.size ?? 1024 * 1024;
  const l1Size = Math.ceil(size / (cs * (cs / 8)));
  let next = 0;
  const take = (clusters = 1): number => {
    const at = next * cs;
    next += clusters;
    return at;
  };
  const header = take();
  const layout: BuiltLayout = {
    clusterSize: cs,
    refcountTable: take(),
    refcountBlock: take(),
    l1: 0,
    l1Size,
    l2: 0,
    data: [0, 0],
    compressed: 0,
  };
  layout.l1 = take(Math.ceil((l1Size * 8) / cs));
  layout.l2 = take();
  layout.data = [take(), take()];
  layout.compressed = take();
  if (options.snapshot === true) {
    layout.snapshotTable = take();
    layout.snapshotL1 = take(Math.ceil((l1Size * 8) / cs));
  }
  if (options.bitmap === true) {
    layout.bitmapDirectory = take();
    layout.bitmapTable = take();
    layout.bitmapData = take();
  }
  const out = new Uint8Array(next * cs);
  const shared = options.snapshot === true ? 2 : 1;
  const copied = shared === 1 ? COPIED : 0n;

  // L1 and L2 (spec "Cluster mapping"): two data clusters, a compressed one, a zero one.
  out.set(table64([BigInt(layout.l2) | copied]), layout.l1);
  const compressed = compressedDescriptor(clusterBits, BigInt(layout.compressed + 100), 0n);
  out.set(table64([BigInt(layout.data[0]) | copied, BigInt(layout.data[1]) | copied, compressed, 1n]), layout.l2);
  const refcounts = new Map<number, number>([
    [header, 1],
    [layout.refcountTable, 1],
    [layout.refcountBlock, 1],
    [layout.l1, 1],
    [layout.l2, shared],
    [layout.data[0], shared],
    [layout.data[1], shared],
    [layout.compressed, shared],
  ]);

  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  for (let k = 1; k < l1Clusters; k++) refcounts.set(layout.l1 + k * cs, 1);
  if (layout.snapshotTable !== undefined && layout.snapshotL1 !== undefined) {
    out.set(snapshotEntryBytes({ l1TableOffset: layout.snapshotL1, l1Size, extra: snapshotExtra(0n, BigInt(size), -1n) }), layout.snapshotTable);
    out.set(table64([BigInt(layout.l2)]), layout.snapshotL1);
    refcounts.set(layout.snapshotTable, 1);
    for (let k = 0; k < l1Clusters; k++) refcounts.set(layout.snapshotL1 + k * cs, 1);
  }
  const extensions: Uint8Array[] = [];
  if (layout.bitmapDirectory !== undefined && layout.bitmapTable !== undefined && layout.bitmapData !== undefined) {
    const entry = bitmapEntryBytes({ name: 'b0', tableOffset: layout.bitmapTable, tableSize: 1, granularityBits: 16 });
    out.set(entry, layout.bitmapDirectory);
    out.set(table64([BigInt(layout.bitmapData)]), layout.bitmapTable);
    out.fill(0xff, layout.bitmapData, layout.bitmapData + 2);
    extensions.push(extensionBytes(0x23852875, bitmapsExtensionBytes(1, entry.length, layout.bitmapDirectory)));
    refcounts.set(layout.bitmapDirectory, 1).set(layout.bitmapTable, 1).set(layout.bitmapData, 1);
  }

  out.set(
    headerCluster({
      header: {
        clusterBits,
        size,
        l1Size,
        l1TableOffset: layout.l1,
        refcountTableOffset: layout.refcountTable,
        refcountTableClusters: 1,
        nbSnapshots: layout.snapshotTable === undefined ? 0 : 1,
        snapshotsOffset: layout.snapshotTable ?? 0,
        autoclearFeatures: layout.bitmapDirectory === undefined ? 0n : 1n,
        refcountOrder,
      },
      extensions,
    }),
    0,
  );
  // Refcount table and block (spec "Host cluster management").
  out.set(table64([BigInt(layout.refcountBlock)]), layout.refcountTable);
  const bits = 2 ** refcountOrder;
  for (const [offset, count] of refcounts) writeRefcount(out, layout.refcountBlock, offset / cs, bits, Math.min(count, 2 ** bits - 1));
  return { bytes: out, layout };
}

/** Writes refcount `index` of the block at `block`: packed LSB first below 8 bits, big-endian from 8. */
function writeRefcount(out: Uint8Array, block: number, index: number, bits: number, value: number): void {
  if (bits < 8) {
    const bit = index * bits;
    out[block + (bit >> 3)] = out[block + (bit >> 3)]! | (value << (bit & 7));
    return;
  }
  const bytes = new ByteBuilder().u64(BigInt(value)).build().subarray(8 - bits / 8);
  out.set(bytes, block + (index * bits) / 8);
}

/** A copy of `bytes` with a big-endian integer of `width` bytes (1, 2, 4, 8) written at `offset`. */
export function withInteger(bytes: Uint8Array, offset: number, width: 1 | 2 | 4 | 8, value: bigint | number): Uint8Array {
  const b = new ByteBuilder().u64(BigInt.asUintN(64, BigInt(value))).build().subarray(8 - width);
  const out = bytes.slice();
  out.set(b, offset);
  return out;
}
