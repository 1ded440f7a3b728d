/**
 * The bitmap directory (spec "Bitmap directory"): one variable-length entry per persistent
 * bitmap, `nb_bitmaps` entries in `bitmap_directory_size` bytes at the offset the bitmaps
 * extension gives.
 *
 * Entry layout: table offset (8), table size (4), flags (4), type (1), granularity bits (1),
 * name size (2), extra data size (4), extra data, name, zero padding to a multiple of 8.
 */
import {
  BITMAP_ENTRY_HEADER_SIZE,
  BitmapFlag,
  BitmapType,
  KNOWN_BITMAP_FLAGS,
  MAX_BITMAPS,
  MAX_BITMAP_DATA_BYTES,
  MAX_BITMAP_GRANULARITY_BITS,
  MAX_BITMAP_NAME,
  MAX_BITMAP_TABLE_ENTRIES,
  MIN_BITMAP_GRANULARITY_BITS,
  SPEC_MAX_BITMAP_GRANULARITY_BITS,
  TABLE_ENTRY_SIZE,
} from './constants.js';
import { SAFE_MAX, U32_MAX, align8, allZero, checkInteger, decodeUtf8, encodeUtf8, need, readU16, readU32, readU64, writeU16, writeU32, writeU64 } from './bytes.js';
import { problem, type Direction } from './errors.js';
import type { BitmapsExtension } from './extensions.js';
import type { Qcow2Geometry } from './geometry.js';

/** One persistent bitmap as the directory describes it. */
export interface BitmapDirectoryEntry {
  /** Unique, 1..1023 bytes of UTF-8. */
  name: string;
  /** Cluster-aligned offset of the bitmap table. */
  bitmapTableOffset: number;
  /** Entries in the bitmap table (= clusters of bitmap data). */
  bitmapTableSize: number;
  /** log2 of the granularity in bytes, 9..31. */
  granularityBits: number;
  /** Flag in_use: not saved correctly, so it may be inconsistent and must not be trusted. */
  inUse: boolean;
  /** Flag auto: the bitmap is enabled (records every write). */
  auto: boolean;
  /** Flag extra_data_compatible: unknown extra data may be ignored (and must be kept). */
  extraDataCompatible: boolean;
  /** Type-specific extra data (none is defined yet); usually empty. */
  extraData: Uint8Array;
}

/** What the directory is checked against. */
export interface BitmapDirectoryContext {
  geometry: Qcow2Geometry;
  /** The image's virtual size in bytes. */
  virtualSize: number;
}

/** Bytes of bitmap data for a disk: one bit per granule, rounded up to whole bytes. */
export function bitmapDataBytes(virtualSize: number, granularityBits: number): number {
  return Math.ceil(Math.ceil(virtualSize / 2 ** granularityBits) / 8);
}

/** Entries of the bitmap table of a disk (clusters of bitmap data). */
export function bitmapTableSizeFor(virtualSize: number, granularityBits: number, geometry: Qcow2Geometry): number {
  return Math.ceil(bitmapDataBytes(virtualSize, granularityBits) / geometry.clusterSize);
}

/** Size in bytes of one encoded directory entry. */
export function bitmapEntrySize(entry: Pick<BitmapDirectoryEntry, 'name' | 'extraData'>): number {
  return align8(BITMAP_ENTRY_HEADER_SIZE + entry.extraData.length + encodeUtf8(entry.name).length);
}

/**
 * Decodes and validates the bitmap directory at `bytes[offset]`.
 *
 * @param extension - `nbBitmaps` and `bitmapDirectorySize` from the bitmaps extension.
 * @param fileSize - when given, every bitmap table must lie within the file.
 * @throws Qcow2FormatError for entries that overrun the directory, reserved flags or types,
 *   empty or duplicate names, non-zero padding, bad table offsets, a table too small for the
 *   virtual size (unless in_use), a size that disagrees with the extension;
 *   Qcow2UnsupportedError for extra data without extra_data_compatible (the bitmap must not be
 *   used) and for QEMU's limits (granularity, name length, table size).
 */
export function decodeBitmapDirectory(
  bytes: Uint8Array,
  offset: number,
  extension: Pick<BitmapsExtension, 'nbBitmaps' | 'bitmapDirectorySize'>,
  context: BitmapDirectoryContext,
  fileSize?: number,
): BitmapDirectoryEntry[] {
  const size = extension.bitmapDirectorySize;
  if (extension.nbBitmaps > MAX_BITMAPS) throw problem('decode', 'bitmap_directory', `${extension.nbBitmaps} bitmaps exceed QEMU's limit of ${MAX_BITMAPS}`, true);
  need(bytes, offset, size, 'bitmap_directory');
  const dir = bytes.subarray(offset, offset + size);
  const entries: BitmapDirectoryEntry[] = [];
  const names = new Set<string>();
  let at = 0;
  for (let i = 0; i < extension.nbBitmaps; i++) {
    const field = `bitmap_directory[${i}]`;
    if (at + BITMAP_ENTRY_HEADER_SIZE > size) {
      throw problem('decode', field, `starts at ${at} but the ${size}-byte directory has no room for its ${BITMAP_ENTRY_HEADER_SIZE}-byte header`);
    }
    const flags = readU32(dir, at + 12);
    const type = dir[at + 16]!;
    const nameSize = readU16(dir, at + 18);
    const extraSize = readU32(dir, at + 20);
    const end = at + BITMAP_ENTRY_HEADER_SIZE + extraSize + nameSize;
    if (align8(end) > size) throw problem('decode', field, `with ${extraSize} bytes of extra data and a ${nameSize}-byte name it runs past the ${size}-byte directory`);
    if ((flags & ~KNOWN_BITMAP_FLAGS) !== 0) throw problem('decode', `${field}.flags`, `0x${flags.toString(16)} has reserved bits set`);
    if (type !== BitmapType.DIRTY_TRACKING) throw problem('decode', `${field}.type`, `${type} is not 1 (dirty tracking bitmap)`);
    if (!allZero(dir, end, align8(end))) throw problem('decode', field, 'its padding is not zero');
    const nameStart = at + BITMAP_ENTRY_HEADER_SIZE + extraSize;
    const entry: BitmapDirectoryEntry = {
      name: decodeUtf8(dir.subarray(nameStart, nameStart + nameSize), `${field}.name`),
      bitmapTableOffset: readU64(dir, at, `${field}.bitmap_table_offset`),
      bitmapTableSize: readU32(dir, at + 8),
      granularityBits: dir[at + 17]!,
      inUse: (flags & BitmapFlag.IN_USE) !== 0,
      auto: (flags & BitmapFlag.AUTO) !== 0,
      extraDataCompatible: (flags & BitmapFlag.EXTRA_DATA_COMPATIBLE) !== 0,
      extraData: dir.slice(at + BITMAP_ENTRY_HEADER_SIZE, nameStart),
    };
    checkEntry('decode', field, entry, nameSize, context, fileSize);
    if (names.has(entry.name)) throw problem('decode', `${field}.name`, `'${entry.name}' is used by an earlier bitmap`);
    names.add(entry.name);
    entries.push(entry);
    at = align8(end);
  }
  if (at !== size) {
    throw problem('decode', 'bitmap_directory', `its ${extension.nbBitmaps} entries take ${at} bytes but the extension says ${size}`);
  }
  return entries;
}

/**
 * Encodes a bitmap directory into a new buffer of {@link bitmapDirectorySize} bytes. The
 * bitmaps extension then says `nbBitmaps: entries.length`, `bitmapDirectorySize: bytes.length`.
 * @throws InvalidArgumentError for entries `decodeBitmapDirectory` would refuse.
 */
export function encodeBitmapDirectory(entries: readonly BitmapDirectoryEntry[], context: BitmapDirectoryContext): Uint8Array {
  if (entries.length === 0 || entries.length > MAX_BITMAPS) {
    throw problem('encode', 'bitmap_directory', `${entries.length} bitmaps: a directory holds 1..${MAX_BITMAPS}`);
  }
  const names = new Set<string>();
  const encodedNames = entries.map((e, i) => {
    const name = encodeUtf8(e.name);
    checkEntry('encode', `bitmap_directory[${i}]`, e, name.length, context);
    if (names.has(e.name)) throw problem('encode', `bitmap_directory[${i}].name`, `'${e.name}' is used by an earlier bitmap`);
    names.add(e.name);
    return name;
  });
  const out = new Uint8Array(bitmapDirectorySize(entries));
  let at = 0;
  entries.forEach((e, i) => {
    const name = encodedNames[i]!;
    writeU64(out, at, e.bitmapTableOffset);
    writeU32(out, at + 8, e.bitmapTableSize);
    writeU32(out, at + 12, bitmapFlags(e));
    out[at + 16] = BitmapType.DIRTY_TRACKING;
    out[at + 17] = e.granularityBits;
    writeU16(out, at + 18, name.length);
    writeU32(out, at + 20, e.extraData.length);
    out.set(e.extraData, at + BITMAP_ENTRY_HEADER_SIZE);
    out.set(name, at + BITMAP_ENTRY_HEADER_SIZE + e.extraData.length);
    at += align8(BITMAP_ENTRY_HEADER_SIZE + e.extraData.length + name.length);
  });
  return out;
}

/** Size in bytes of the encoded directory of `entries`. */
export function bitmapDirectorySize(entries: readonly Pick<BitmapDirectoryEntry, 'name' | 'extraData'>[]): number {
  return entries.reduce((sum, e) => sum + bitmapEntrySize(e), 0);
}

function checkEntry(
  direction: Direction,
  field: string,
  e: BitmapDirectoryEntry,
  nameSize: number,
  { geometry, virtualSize }: BitmapDirectoryContext,
  fileSize?: number,
): void {
  if (direction === 'encode') {
    checkInteger(direction, `${field}.bitmapTableOffset`, e.bitmapTableOffset, 0, SAFE_MAX);
    checkInteger(direction, `${field}.bitmapTableSize`, e.bitmapTableSize, 0, U32_MAX);
    checkInteger(direction, `${field}.granularityBits`, e.granularityBits, 0, 255);
    checkInteger(direction, `${field}.extraData.length`, e.extraData.length, 0, U32_MAX);
  }
  if (nameSize === 0) throw problem(direction, `${field}.name`, 'is empty');
  if (nameSize > MAX_BITMAP_NAME) throw problem(direction, `${field}.name`, `${nameSize} bytes exceed QEMU's limit of ${MAX_BITMAP_NAME}`, true);
  const g = e.granularityBits;
  if (g > SPEC_MAX_BITMAP_GRANULARITY_BITS) throw problem(direction, `${field}.granularity_bits`, `${g} is not in 0..63`);
  if (g < MIN_BITMAP_GRANULARITY_BITS || g > MAX_BITMAP_GRANULARITY_BITS) {
    throw problem(direction, `${field}.granularity_bits`, `${g} is outside ${MIN_BITMAP_GRANULARITY_BITS}..${MAX_BITMAP_GRANULARITY_BITS}, what QEMU supports`, true);
  }
  if (e.extraData.length > 0 && !e.extraDataCompatible) {
    throw problem(direction, `${field}.extra_data`, `'${e.name}' has ${e.extraData.length} bytes of extra data that are not marked compatible, so it must not be used`, true);
  }
  const tableField = `${field}.bitmap_table_offset`;
  if (e.bitmapTableOffset === 0 || e.bitmapTableOffset % geometry.clusterSize !== 0) {
    throw problem(direction, tableField, `${e.bitmapTableOffset} is not a non-zero multiple of the cluster size ${geometry.clusterSize}`);
  }
  const sizeField = `${field}.bitmap_table_size`;
  if (e.bitmapTableSize === 0) throw problem(direction, sizeField, 'is 0');
  if (e.bitmapTableSize > MAX_BITMAP_TABLE_ENTRIES || e.bitmapTableSize * geometry.clusterSize > MAX_BITMAP_DATA_BYTES) {
    throw problem(direction, sizeField, `${e.bitmapTableSize} clusters of bitmap data exceed QEMU's limits`, true);
  }
  const needed = bitmapTableSizeFor(virtualSize, g, geometry);
  if (!e.inUse && e.bitmapTableSize < needed) {
    throw problem(direction, sizeField, `${e.bitmapTableSize} clusters cannot hold a bitmap of ${virtualSize} bytes at granularity 2^${g} (${needed} needed)`);
  }
  if (fileSize !== undefined && e.bitmapTableOffset + e.bitmapTableSize * TABLE_ENTRY_SIZE > fileSize) {
    throw problem(direction, tableField, `the table at ${e.bitmapTableOffset} (${e.bitmapTableSize} entries) runs past the end of the ${fileSize}-byte file`);
  }
}

/** The bitmap directory entry flags as they are stored (for tools that print them). */
export function bitmapFlags(entry: Pick<BitmapDirectoryEntry, 'inUse' | 'auto' | 'extraDataCompatible'>): number {
  return (entry.inUse ? BitmapFlag.IN_USE : 0) | (entry.auto ? BitmapFlag.AUTO : 0) | (entry.extraDataCompatible ? BitmapFlag.EXTRA_DATA_COMPATIBLE : 0);
}
