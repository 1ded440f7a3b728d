/**
 * Test-only: a seeded mutation fuzzer for qcow2 images. It finds the metadata of a valid image
 * with the format codecs, then damages copies of it (bit flips, boundary values written over
 * table entries, zeroed or swapped metadata clusters, truncation). Every mutation is a
 * function of one 32-bit seed, so a failure is replayed from the seed alone.
 */
import {
  decodeBitmapDirectory,
  decodeImageHeader,
  decodeL1Table,
  decodeRefcountTable,
  decodeSnapshotTable,
  featuresOf,
  geometryOf,
} from '../../format/index.js';

/** A small, fast PRNG (mulberry32): deterministic for a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of iteration `n` of a run seeded with `seed` (iteration 0 uses `seed` itself). */
export function iterationSeed(seed: number, n: number): number {
  return (seed + Math.imul(n, 0x9e3779b9)) >>> 0;
}

/** A byte range of the file. */
export interface Range {
  offset: number;
  length: number;
}

/**
 * The metadata of a valid image: header cluster, refcount table and blocks, L1 tables (active
 * and snapshots'), the L2 tables they point to, the snapshot table, the bitmap directory and
 * tables. Ranges are clipped to the file.
 */
export function metadataRanges(bytes: Uint8Array): Range[] {
  const { header, extensions } = decodeImageHeader(bytes, bytes.length);
  const g = geometryOf(header);
  const cs = g.clusterSize;
  const ranges: Range[] = [{ offset: 0, length: cs }];
  const add = (offset: number, length: number): void => {
    const end = Math.min(bytes.length, offset + length);
    if (offset < end) ranges.push({ offset, length: end - offset });
  };
  add(header.refcountTableOffset, header.refcountTableClusters * cs);
  for (const block of decodeRefcountTable(bytes, header.refcountTableOffset, (header.refcountTableClusters * cs) / 8, g, bytes.length)) {
    if (block !== 0) add(block, cs);
  }
  const l1Tables = [{ offset: header.l1TableOffset, size: header.l1Size }];
  if (header.nbSnapshots > 0) {
    // QEMU does not write the padding of the last entry: the file may end before it.
    const padded = new Uint8Array(bytes.length + 8);
    padded.set(bytes);
    const table = decodeSnapshotTable(padded, header.snapshotsOffset, header.nbSnapshots, g, bytes.length);
    add(header.snapshotsOffset, table.byteLength);
    for (const s of table.entries) l1Tables.push({ offset: s.l1TableOffset, size: s.l1Size });
  }
  for (const { offset, size } of l1Tables) {
    add(offset, size * 8);
    for (const entry of decodeL1Table(bytes, offset, size, g, bytes.length)) if (entry.l2Offset !== 0) add(entry.l2Offset, cs);
  }
  const bitmaps = extensions.bitmaps;
  if (bitmaps !== undefined && featuresOf(header).bitmaps) {
    add(bitmaps.bitmapDirectoryOffset, bitmaps.bitmapDirectorySize);
    const dir = decodeBitmapDirectory(bytes, bitmaps.bitmapDirectoryOffset, bitmaps, { geometry: g, virtualSize: header.size }, bytes.length);
    for (const entry of dir) add(entry.bitmapTableOffset, entry.bitmapTableSize * 8);
  }
  return ranges;
}

/** A mutated copy and what was done, for the failure message. */
export interface Mutation {
  bytes: Uint8Array;
  description: string[];
}

/**
 * Applies 1 to 3 random mutations (chosen by `seed`) to a copy of `bytes`, inside `ranges`
 * (the metadata) except for truncation, which cuts the whole file.
 */
export function mutate(bytes: Uint8Array, ranges: readonly Range[], clusterSize: number, seed: number): Mutation {
  const random = prng(seed);
  const int = (n: number): number => Math.floor(random() * n);
  let out = bytes.slice();
  const description: string[] = [];
  const somewhere = (): number => {
    const r = ranges[int(ranges.length)]!;
    return r.offset + int(r.length);
  };
  const count = 1 + int(3);
  for (let m = 0; m < count; m++) {
    switch (int(5)) {
      case 0: {
        const flips = 1 + int(8);
        for (let k = 0; k < flips; k++) {
          const at = somewhere();
          out[at]! ^= 1 << int(8);
          description.push(`flip a bit at ${at}`);
        }
        break;
      }
      case 1: {
        const at = somewhere() & ~7;
        const values = [0n, (1n << 64n) - 1n, 1n << 53n, 1n << 63n, 1n << 62n, BigInt(out.length), BigInt(out.length + clusterSize), BigInt(int(out.length)), BigInt(int(Math.ceil(out.length / clusterSize)) * clusterSize) | (1n << 63n), BigInt(int(2 ** 32)) << 32n];
        const value = values[int(values.length)]!;
        new DataView(out.buffer, out.byteOffset, out.length).setBigUint64(Math.min(at, out.length - 8), value);
        description.push(`write 0x${value.toString(16)} at ${at}`);
        break;
      }
      case 2: {
        const r = ranges[int(ranges.length)]!;
        out.fill(0, r.offset, r.offset + r.length);
        description.push(`zero ${r.length} bytes at ${r.offset}`);
        break;
      }
      case 3: {
        const from = ranges[int(ranges.length)]!;
        const to = ranges[int(ranges.length)]!;
        const length = Math.min(from.length, to.length);
        out.copyWithin(to.offset, from.offset, from.offset + length);
        description.push(`copy ${length} bytes from ${from.offset} to ${to.offset}`);
        break;
      }
      default: {
        const length = int(out.length);
        out = out.slice(0, length);
        description.push(`truncate to ${length} bytes`);
        break;
      }
    }
    if (out.length < 8) break;
  }
  return { bytes: out, description };
}
