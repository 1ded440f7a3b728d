/**
 * Decodes a whole qcow2 file with the codecs, the way an image reader will, and counts the
 * references to every host cluster the way `qemu-img check` does, so that golden tests can
 * compare the stored refcounts with the structures that point to clusters. Test-only.
 */
import assert from 'node:assert/strict';
import { decodeBitmapDirectory, type BitmapDirectoryEntry } from '../bitmap-directory.js';
import { decodeBitmapTable, type BitmapTableEntry } from '../bitmap-table.js';
import { geometryOf, type Qcow2Geometry } from '../geometry.js';
import { decodeImageHeader, type Qcow2ImageHeader } from '../image-header.js';
import { compressedByteRange, decodeL1Table, decodeL2Table, type L1Entry, type L2Entry } from '../l1-l2.js';
import { decodeRefcountTable, getRefcount } from '../refcount.js';
import { decodeSnapshotTable, type SnapshotEntry } from '../snapshot-table.js';

/** One L1 table with its L2 tables, by L1 index. */
export interface Mapping {
  l1: L1Entry[];
  l2: Map<number, L2Entry[]>;
}

/** Everything decoded from an image file. */
export interface WalkedImage {
  image: Qcow2ImageHeader;
  geometry: Qcow2Geometry;
  active: Mapping;
  snapshots: SnapshotEntry[];
  snapshotMappings: Mapping[];
  bitmaps: BitmapDirectoryEntry[];
  bitmapTables: BitmapTableEntry[][];
  /** The stored refcount of host cluster `i`. */
  refcount(cluster: number): number;
  /** Every host cluster with a non-zero stored refcount, and that refcount. */
  storedRefcounts(): Map<number, number>;
  /** References to each host cluster, counted from the metadata (qemu-img check's way). */
  references: Map<number, number>;
}

/** Decodes everything in `file` (the whole image file). */
export function walkImage(file: Uint8Array): WalkedImage {
  const fileSize = file.length;
  const image = decodeImageHeader(file, fileSize);
  const { header } = image;
  const g = geometryOf(header);
  const references = new Map<number, number>();
  const ref = (offset: number, length: number): void => {
    if (length === 0) return;
    const first = Math.floor(offset / g.clusterSize);
    const last = Math.floor((offset + length - 1) / g.clusterSize);
    for (let c = first; c <= last; c++) references.set(c, (references.get(c) ?? 0) + 1);
  };
  ref(0, g.clusterSize);

  const refcountTable = decodeRefcountTable(file, header.refcountTableOffset, header.refcountTableClusters * g.tableEntriesPerCluster, g, fileSize);
  ref(header.refcountTableOffset, header.refcountTableClusters * g.clusterSize);
  for (const block of refcountTable) ref(block, block === 0 ? 0 : g.clusterSize);

  const readMapping = (l1Offset: number, l1Size: number): Mapping => {
    const l1 = decodeL1Table(file, l1Offset, l1Size, g, fileSize);
    ref(l1Offset, l1Size * 8);
    const l2 = new Map<number, L2Entry[]>();
    l1.forEach((e, i) => {
      if (e.l2Offset === 0) return;
      const entries = decodeL2Table(file, e.l2Offset, g, fileSize);
      l2.set(i, entries);
      ref(e.l2Offset, g.clusterSize);
      for (const entry of entries) {
        if (g.externalDataFile) continue; // data clusters live in the data file
        if (entry.kind === 'normal' || (entry.kind === 'zero' && entry.hostOffset !== 0)) ref(entry.hostOffset, g.clusterSize);
        if (entry.kind === 'compressed') {
          const range = compressedByteRange(entry);
          ref(range.offset, range.length);
        }
      }
    });
    return { l1, l2 };
  };
  const active = readMapping(header.l1TableOffset, header.l1Size);

  const snapshots = decodeSnapshotTable(file, header.snapshotsOffset, header.nbSnapshots, g, fileSize);
  ref(header.snapshotsOffset, snapshots.byteLength);
  const snapshotMappings = snapshots.entries.map((s) => readMapping(s.l1TableOffset, s.l1Size));

  let bitmaps: BitmapDirectoryEntry[] = [];
  const bitmapTables: BitmapTableEntry[][] = [];
  const ext = image.extensions.bitmaps;
  if (ext !== undefined) {
    bitmaps = decodeBitmapDirectory(file, ext.bitmapDirectoryOffset, ext, { geometry: g, virtualSize: header.size }, fileSize);
    ref(ext.bitmapDirectoryOffset, ext.bitmapDirectorySize);
    for (const b of bitmaps) {
      const table = decodeBitmapTable(file, b.bitmapTableOffset, b.bitmapTableSize, g, fileSize);
      bitmapTables.push(table);
      ref(b.bitmapTableOffset, b.bitmapTableSize * 8);
      for (const t of table) if (t.kind === 'data') ref(t.hostOffset, g.clusterSize);
    }
  }

  const refcount = (cluster: number): number => {
    const tableIndex = Math.floor(cluster / g.refcountBlockEntries);
    const block = refcountTable[tableIndex] ?? 0;
    if (block === 0) return 0;
    return getRefcount(file.subarray(block, block + g.clusterSize), cluster % g.refcountBlockEntries, g.refcountOrder);
  };
  return {
    image,
    geometry: g,
    active,
    snapshots: snapshots.entries,
    snapshotMappings,
    bitmaps,
    bitmapTables,
    refcount,
    storedRefcounts: () => {
      const stored = new Map<number, number>();
      refcountTable.forEach((block, tableIndex) => {
        if (block === 0) return;
        const bytes = file.subarray(block, block + g.clusterSize);
        for (let i = 0; i < g.refcountBlockEntries; i++) {
          const n = getRefcount(bytes, i, g.refcountOrder);
          if (n !== 0) stored.set(tableIndex * g.refcountBlockEntries + i, n);
        }
      });
      return stored;
    },
    references,
  };
}

/** The L2 entry mapping guest cluster `cluster`, or undefined when its L2 table is not allocated. */
export function l2EntryOf(mapping: Mapping, cluster: number, g: Qcow2Geometry): L2Entry | undefined {
  return mapping.l2.get(Math.floor(cluster / g.l2Entries))?.[cluster % g.l2Entries];
}

/** Asserts that every cluster's stored refcount equals the references the metadata makes to it. */
export function assertRefcountsConsistent(w: WalkedImage): void {
  const sorted = (m: Map<number, number>) => new Map([...m].sort((a, b) => a[0] - b[0]));
  assert.deepEqual(sorted(w.storedRefcounts()), sorted(w.references));
}
