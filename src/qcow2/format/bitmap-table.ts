/**
 * Bitmap table entries (spec "Bitmap table"): one 64-bit entry per cluster of bitmap data.
 * Bits 9-55 are the cluster-aligned host offset of the data; with offset 0 the cluster is not
 * allocated and bit 0 says whether it reads as all zeroes (0) or all ones (1).
 */
import { TABLE_ENTRY_SIZE } from './constants.js';
import { SAFE_MAX, checkInteger, hex64, high32, isUnsafe64, join64, need, readU32, room, writeU32 } from './bytes.js';
import { problem } from './errors.js';
import type { Qcow2Geometry } from './geometry.js';

/** What one cluster of bitmap data is. */
export type BitmapTableEntry =
  | { kind: 'zeroes' }
  | { kind: 'ones' }
  | {
      kind: 'data';
      /** Cluster-aligned host offset of the bitmap data cluster. */
      hostOffset: number;
    };

/**
 * Decodes entry `index` of a bitmap table.
 * @param fileSize - when given, a data cluster must lie within the file.
 * @throws Qcow2FormatError for reserved bits, bit 0 set with an offset, an unaligned offset.
 */
export function decodeBitmapTableEntry(table: Uint8Array, index: number, geometry: Qcow2Geometry, fileSize?: number): BitmapTableEntry {
  const field = `bitmap_table[${index}]`;
  const at = index * TABLE_ENTRY_SIZE;
  need(table, at, TABLE_ENTRY_SIZE, field);
  const hi = readU32(table, at);
  const lo = readU32(table, at + 4);
  if ((hi & 0xff000000) !== 0 || (lo & 0x1fe) !== 0) throw problem('decode', field, `0x${hex64(hi, lo)} has reserved bits set`);
  const high = hi & 0x00ffffff;
  if (isUnsafe64(high)) throw problem('decode', field, `offset in 0x${hex64(hi, lo)} is 2^53 or more`, true);
  const hostOffset = join64(high, (lo & 0xfffffe00) >>> 0);
  if (hostOffset === 0) return (lo & 1) !== 0 ? { kind: 'ones' } : { kind: 'zeroes' };
  if ((lo & 1) !== 0) throw problem('decode', field, `bit 0 is set together with the offset ${hostOffset}`);
  if (hostOffset % geometry.clusterSize !== 0) {
    throw problem('decode', field, `offset ${hostOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  if (fileSize !== undefined && hostOffset + geometry.clusterSize > fileSize) {
    throw problem('decode', field, `the data cluster at ${hostOffset} runs past the end of the ${fileSize}-byte file`);
  }
  return { kind: 'data', hostOffset };
}

/** Writes `entry` as entry `index` of a bitmap table (in place). */
export function writeBitmapTableEntry(table: Uint8Array, index: number, entry: BitmapTableEntry, geometry: Qcow2Geometry): void {
  const at = index * TABLE_ENTRY_SIZE;
  const field = `bitmap_table[${index}]`;
  room(table, at, TABLE_ENTRY_SIZE, field);
  switch (entry.kind) {
    case 'zeroes':
      writeU32(table, at, 0);
      writeU32(table, at + 4, 0);
      return;
    case 'ones':
      writeU32(table, at, 0);
      writeU32(table, at + 4, 1);
      return;
    case 'data':
      checkInteger('encode', `${field}.hostOffset`, entry.hostOffset, 1, SAFE_MAX);
      if (entry.hostOffset % geometry.clusterSize !== 0) {
        throw problem('encode', `${field}.hostOffset`, `${entry.hostOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
      }
      writeU32(table, at, high32(entry.hostOffset));
      writeU32(table, at + 4, entry.hostOffset >>> 0);
      return;
    default: {
      const never: never = entry;
      throw problem('encode', field, `unknown kind ${String((never as { kind: unknown }).kind)}`);
    }
  }
}

/** Decodes `count` bitmap table entries at `bytes[offset]`. Checks the length before allocating. */
export function decodeBitmapTable(bytes: Uint8Array, offset: number, count: number, geometry: Qcow2Geometry, fileSize?: number): BitmapTableEntry[] {
  need(bytes, offset, count * TABLE_ENTRY_SIZE, 'bitmap_table');
  const table = bytes.subarray(offset, offset + count * TABLE_ENTRY_SIZE);
  const entries: BitmapTableEntry[] = [];
  for (let i = 0; i < count; i++) entries.push(decodeBitmapTableEntry(table, i, geometry, fileSize));
  return entries;
}

/** Encodes bitmap table entries into a new buffer of `entries.length * 8` bytes. */
export function encodeBitmapTable(entries: readonly BitmapTableEntry[], geometry: Qcow2Geometry): Uint8Array {
  const out = new Uint8Array(entries.length * TABLE_ENTRY_SIZE);
  entries.forEach((e, i) => writeBitmapTableEntry(out, i, e, geometry));
  return out;
}
