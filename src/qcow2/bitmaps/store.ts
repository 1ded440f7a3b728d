/**
 * Writing bitmaps into an image and freeing what they used, in the image's ordering rules
 * (docs/qcow2-image.md): clusters are counted before anything points to them, data is written
 * before the table that points to it, the table before the directory, the directory before the
 * header; references are removed before their clusters are freed. A process killed at any
 * point leaves at worst leaked clusters.
 *
 * Everything here runs inside `internals.exclusive`.
 * @internal
 */
import { bytesAreClean, serializeBytes, serializedByteLength, type DirtyBitmap } from '../../bitmap/index.js';
import {
  Qcow2FormatError,
  Qcow2UnsupportedError,
  TABLE_ENTRY_SIZE,
  bitmapTableSizeFor,
  decodeBitmapTableEntry,
  encodeBitmapTable,
  type BitmapTableEntry,
} from '../format/index.js';
import type { Qcow2Internals } from '../image/index.js';
import type { StoredTable } from './stored.js';

/** Table entries read at once when freeing: bounded memory for huge tables. */
const TABLE_CHUNK_ENTRIES = 65536;

/** Entries of the table of a bitmap of `bitmap`'s size and granularity (at least 1, as the spec requires). */
function tableSizeOf(internals: Qcow2Internals, bitmap: DirtyBitmap): number {
  return Math.max(1, bitmapTableSizeFor(bitmap.size, Math.log2(bitmap.granularity), internals.geometry));
}

/**
 * Writes the bits of `bitmap` into newly allocated data clusters (a clean cluster is table
 * entry 0 and gets none), then its table into new clusters. Returns the new table (owned).
 * The bitmap is only read; nothing points to the new clusters yet (leaks until a directory does).
 */
export async function writeBitmap(internals: Qcow2Internals, bitmap: DirtyBitmap): Promise<StoredTable> {
  const cs = internals.geometry.clusterSize;
  const dataBytes = serializedByteLength(bitmap);
  const size = tableSizeOf(internals, bitmap);
  const entries: BitmapTableEntry[] = new Array<BitmapTableEntry>(size).fill({ kind: 'zeroes' });
  const dirty = (i: number): boolean => i * cs < dataBytes && !bytesAreClean(bitmap, i * cs, Math.min(cs, dataBytes - i * cs));
  for (let i = 0; i < size; ) {
    if (!dirty(i)) {
      i++;
      continue;
    }
    // A run of dirty clusters goes into contiguous host clusters, written at once.
    let end = i + 1;
    while (end < size && dirty(end)) end++;
    const host = await internals.allocateClusters(end - i);
    await internals.writeHost(host, serializeBytes(bitmap, i * cs, (end - i) * cs));
    for (let k = i; k < end; k++) entries[k] = { kind: 'data', hostOffset: host + (k - i) * cs };
    i = end;
  }
  return writeTable(internals, entries);
}

/**
 * Writes an all-zero table for `bitmap` into new clusters: what an inconsistent bitmap gets
 * when its old table cannot be trusted (it stays listed, in use, pointing to nothing).
 */
export function writeEmptyTable(internals: Qcow2Internals, bitmap: DirtyBitmap): Promise<StoredTable> {
  return writeTable(internals, new Array<BitmapTableEntry>(tableSizeOf(internals, bitmap)).fill({ kind: 'zeroes' }));
}

async function writeTable(internals: Qcow2Internals, entries: readonly BitmapTableEntry[]): Promise<StoredTable> {
  const cs = internals.geometry.clusterSize;
  const clusters = Math.ceil((entries.length * TABLE_ENTRY_SIZE) / cs);
  const bytes = new Uint8Array(clusters * cs); // the rest of the last cluster is zero
  bytes.set(encodeBitmapTable(entries, internals.geometry));
  const offset = await internals.allocateClusters(clusters);
  await internals.writeHost(offset, bytes);
  return { offset, size: entries.length, owned: true };
}

/**
 * Writes `bytes` (a bitmap directory) into newly allocated clusters and returns their offset.
 * `bytes` is borrowed until the promise settles.
 */
export async function writeDirectory(internals: Qcow2Internals, bytes: Uint8Array): Promise<number> {
  const cs = internals.geometry.clusterSize;
  const clusters = Math.ceil(bytes.length / cs);
  const padded = new Uint8Array(clusters * cs);
  padded.set(bytes);
  const offset = await internals.allocateClusters(clusters);
  await internals.writeHost(offset, padded);
  return offset;
}

/**
 * Frees the data clusters of a table nothing points to any more, then the table itself.
 * Tables that are not `owned` are left alone (leaked). A table whose entries do not decode is
 * leaked whole rather than risk freeing a cluster that belongs to something else.
 */
export async function freeTable(internals: Qcow2Internals, table: StoredTable): Promise<void> {
  if (!table.owned) return;
  const cs = internals.geometry.clusterSize;
  const data: number[] = [];
  for (let first = 0; first < table.size; first += TABLE_CHUNK_ENTRIES) {
    const count = Math.min(TABLE_CHUNK_ENTRIES, table.size - first);
    const bytes = await internals.readHost(table.offset + first * TABLE_ENTRY_SIZE, count * TABLE_ENTRY_SIZE);
    for (let i = 0; i < count; i++) {
      let entry: BitmapTableEntry;
      try {
        entry = decodeBitmapTableEntry(bytes, i, internals.geometry);
      } catch (e) {
        if (e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError) return;
        throw e;
      }
      if (entry.kind === 'data') data.push(entry.hostOffset);
    }
  }
  // A cluster listed twice is freed once: dropping a reference it does not hold could free
  // something else.
  const clusters = [...new Set(data)].sort((a, b) => a - b);
  for (let i = 0; i < clusters.length; ) {
    let end = i + 1;
    while (end < clusters.length && clusters[end] === clusters[end - 1]! + cs) end++;
    await internals.freeClusters(clusters[i]!, end - i);
    i = end;
  }
  await internals.freeClusters(table.offset, Math.ceil((table.size * TABLE_ENTRY_SIZE) / cs));
}

/** Frees the clusters of a directory of `size` bytes at `offset`. */
export function freeDirectory(internals: Qcow2Internals, offset: number, size: number): Promise<void> {
  return internals.freeClusters(offset, Math.ceil(size / internals.geometry.clusterSize));
}
