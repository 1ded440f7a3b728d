/**
 * L1 and L2 table entries (spec "Cluster mapping", "Standard Cluster Descriptor", "Compressed
 * Clusters Descriptor", "Extended L2 Entries").
 *
 * An L2 entry decodes to a tagged union ({@link L2Entry}) saying what a guest cluster is:
 * unallocated (read the backing file), zero, normal data at a host offset, or compressed.
 * Entries are addressed by index in a table (`bytes` is the table, entry `i` starts at
 * `i * entrySize`). Decoders validate and throw a `Qcow2FormatError` naming `l1[i]`/`l2[i]`.
 */
import { COMPRESSED_SECTOR_SIZE, TABLE_ENTRY_SIZE } from './constants.js';
import { SAFE_MAX, checkInteger, hex64, isUnsafe64, join64, high32, need, readU32, room, writeU32 } from './bytes.js';
import { problem, type Direction } from './errors.js';
import type { Qcow2Geometry } from './geometry.js';

/** A decoded L1 entry. */
export interface L1Entry {
  /** Cluster-aligned offset of the L2 table; 0 when the L2 table is not allocated. */
  l2Offset: number;
  /** COPIED (bit 63): the L2 table's refcount is exactly one (accurate in the active L1 only). */
  copied: boolean;
}

/**
 * Subcluster state of an extended L2 entry: two 32-bit masks, bit `i` for subcluster `i`.
 * A subcluster is never both allocated and zero.
 */
export interface Subclusters {
  /** Allocation bitmap (bits 0-31 of the second 64-bit word). */
  allocated: number;
  /** Reads-as-zero bitmap (bits 32-63 of the second 64-bit word). */
  zero: number;
}

/** Not allocated in this image: reads come from the backing file, or zeroes. */
export interface UnallocatedCluster {
  kind: 'unallocated';
  /** Extended L2 only (always present then): which subclusters read as zero. `allocated` is 0. */
  subclusters?: Subclusters;
}

/** Reads as zeroes (bit 0 of a standard descriptor; version 3 without extended L2). */
export interface ZeroCluster {
  kind: 'zero';
  /** A preallocated host cluster kept for later writes, or 0 for none. */
  hostOffset: number;
  copied: boolean;
}

/** Data at a host cluster. */
export interface NormalCluster {
  kind: 'normal';
  /** Cluster-aligned host offset (0 is valid only with an external data file). */
  hostOffset: number;
  /** COPIED (bit 63): the cluster's refcount is exactly one. */
  copied: boolean;
  /** Extended L2 only (always present then): per-subcluster state. */
  subclusters?: Subclusters;
}

/** Compressed data (bit 62). Compressed clusters have no COPIED bit and no subclusters. */
export interface CompressedCluster {
  kind: 'compressed';
  /** Byte offset of the compressed data in the file; usually not aligned. */
  hostOffset: number;
  /** 512-byte sectors used beyond the one containing `hostOffset`. */
  additionalSectors: number;
}

/** What an L2 entry says about a guest cluster. */
export type L2Entry = UnallocatedCluster | ZeroCluster | NormalCluster | CompressedCluster;

/** A byte range in the image file. */
export interface ByteRange {
  offset: number;
  length: number;
}

// ---------------------------------------------------------------------------------------------
// L1
// ---------------------------------------------------------------------------------------------

/**
 * Decodes entry `index` of an L1 table.
 * @param fileSize - when given, the L2 table must lie within the file.
 */
export function decodeL1Entry(table: Uint8Array, index: number, geometry: Qcow2Geometry, fileSize?: number): L1Entry {
  const field = `l1[${index}]`;
  const at = index * TABLE_ENTRY_SIZE;
  need(table, at, TABLE_ENTRY_SIZE, field);
  const hi = readU32(table, at);
  const lo = readU32(table, at + 4);
  if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) {
    throw problem('decode', field, `0x${hex64(hi, lo)} has reserved bits set`);
  }
  const l2Offset = offsetBits(hi, lo, field);
  checkTableOffset('decode', field, l2Offset, geometry, fileSize);
  return { l2Offset, copied: (hi & 0x80000000) !== 0 };
}

/** Writes `entry` as entry `index` of an L1 table (in place). */
export function writeL1Entry(table: Uint8Array, index: number, entry: L1Entry, geometry: Qcow2Geometry): void {
  const field = `l1[${index}]`;
  room(table, index * TABLE_ENTRY_SIZE, TABLE_ENTRY_SIZE, field);
  checkInteger('encode', `${field}.l2Offset`, entry.l2Offset, 0, SAFE_MAX);
  checkTableOffset('encode', field, entry.l2Offset, geometry);
  writeWord(table, index * TABLE_ENTRY_SIZE, high32(entry.l2Offset) | (entry.copied ? 0x80000000 : 0), entry.l2Offset >>> 0);
}

/** Decodes `count` L1 entries starting at `bytes[offset]`. Checks the length before allocating. */
export function decodeL1Table(bytes: Uint8Array, offset: number, count: number, geometry: Qcow2Geometry, fileSize?: number): L1Entry[] {
  need(bytes, offset, count * TABLE_ENTRY_SIZE, 'l1');
  const table = bytes.subarray(offset, offset + count * TABLE_ENTRY_SIZE);
  const entries: L1Entry[] = [];
  for (let i = 0; i < count; i++) entries.push(decodeL1Entry(table, i, geometry, fileSize));
  return entries;
}

/** Encodes L1 entries into a new buffer of `entries.length * 8` bytes. */
export function encodeL1Table(entries: readonly L1Entry[], geometry: Qcow2Geometry): Uint8Array {
  const out = new Uint8Array(entries.length * TABLE_ENTRY_SIZE);
  entries.forEach((e, i) => writeL1Entry(out, i, e, geometry));
  return out;
}

// ---------------------------------------------------------------------------------------------
// L2
// ---------------------------------------------------------------------------------------------

/**
 * Decodes and classifies entry `index` of an L2 table (standard or extended, per `geometry`).
 *
 * @param fileSize - when given, a normal cluster and the start of compressed data must lie in
 *   the file (not checked with an external data file, whose clusters are elsewhere).
 * @throws Qcow2FormatError for reserved bits, an unaligned host offset, COPIED on a compressed
 *   cluster, inconsistent subcluster bitmaps; Qcow2UnsupportedError for offsets >= 2^53.
 */
export function decodeL2Entry(table: Uint8Array, index: number, geometry: Qcow2Geometry, fileSize?: number): L2Entry {
  const at = index * geometry.l2EntrySize;
  if (!(at >= 0 && at + geometry.l2EntrySize <= table.length)) need(table, at, geometry.l2EntrySize, `l2[${index}]`);
  const hi = readU32(table, at);
  const lo = readU32(table, at + 4);
  const copied = (hi & 0x80000000) !== 0;
  const fileLimit = geometry.externalDataFile ? undefined : fileSize;
  // Fast path for the two common standard entries, before any field name is built (this runs
  // for every entry of every table read): all zero, and a valid normal cluster. Anything else
  // takes the full path below, which also produces the errors.
  if (!geometry.extendedL2 && (hi & 0x7f000000) === 0 && (lo & 0x1ff) === 0) {
    if (hi === 0 && lo === 0) return { kind: 'unallocated' };
    const high = hi & 0x00ffffff;
    const hostOffset = join64(high, lo);
    if (!isUnsafe64(high) && hostOffset !== 0 && hostOffset % geometry.clusterSize === 0 && (fileLimit === undefined || hostOffset < fileLimit)) {
      return { kind: 'normal', hostOffset, copied };
    }
  }
  const field = `l2[${index}]`;

  if ((hi & 0x40000000) !== 0) {
    if (geometry.extendedL2 && (readU32(table, at + 8) !== 0 || readU32(table, at + 12) !== 0)) {
      throw problem('decode', field, 'a compressed cluster has a non-zero subcluster bitmap');
    }
    return decodeCompressed(hi, lo, copied, field, geometry, fileLimit);
  }
  if ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0 || (!geometry.zeroFlag && (lo & 1) !== 0)) {
    throw problem('decode', field, `0x${hex64(hi, lo)} has reserved bits set`);
  }
  const hostOffset = offsetBits(hi, lo, field);
  if (hostOffset % geometry.clusterSize !== 0) {
    throw problem('decode', field, `host offset ${hostOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  if ((lo & 1) !== 0) return { kind: 'zero', hostOffset, copied };

  const subclusters = geometry.extendedL2 ? { allocated: readU32(table, at + 12), zero: readU32(table, at + 8) } : undefined;
  if (subclusters !== undefined && (subclusters.allocated & subclusters.zero) !== 0) {
    throw problem('decode', field, `subclusters 0x${((subclusters.allocated & subclusters.zero) >>> 0).toString(16)} are marked both allocated and zero`);
  }
  if (hostOffset === 0 && !(copied && geometry.externalDataFile)) {
    if (copied) throw problem('decode', field, 'COPIED is set on an unallocated cluster');
    if (subclusters !== undefined && subclusters.allocated !== 0) {
      throw problem('decode', field, `subclusters 0x${subclusters.allocated.toString(16)} are allocated but the cluster has no host offset`);
    }
    return subclusters === undefined ? { kind: 'unallocated' } : { kind: 'unallocated', subclusters };
  }
  if (fileLimit !== undefined && hostOffset >= fileLimit) {
    throw problem('decode', field, `host offset ${hostOffset} is past the end of the ${fileLimit}-byte file`);
  }
  return subclusters === undefined ? { kind: 'normal', hostOffset, copied } : { kind: 'normal', hostOffset, copied, subclusters };
}

function decodeCompressed(hi: number, lo: number, copied: boolean, field: string, geometry: Qcow2Geometry, fileSize?: number): CompressedCluster {
  if (copied) throw problem('decode', field, 'COPIED is set on a compressed cluster');
  if (geometry.externalDataFile) throw problem('decode', field, 'compressed clusters are not allowed with an external data file');
  const highBits = geometry.compressedOffsetBits - 32; // offset bits held in `hi`
  const descriptor = hi & 0x3fffffff;
  const offsetHigh = descriptor & ((1 << highBits) - 1);
  if (offsetHigh >= 1 << 24) throw problem('decode', field, `compressed host offset 0x${hex64(offsetHigh, lo)} has bits above 55 set`);
  if (isUnsafe64(offsetHigh)) throw problem('decode', field, `compressed host offset 0x${hex64(offsetHigh, lo)} is 2^53 or more`, true);
  const hostOffset = join64(offsetHigh, lo);
  if (hostOffset < geometry.clusterSize) throw problem('decode', field, `compressed data at ${hostOffset} lies in the header cluster`);
  if (fileSize !== undefined && hostOffset >= fileSize) {
    throw problem('decode', field, `compressed data at ${hostOffset} starts past the end of the ${fileSize}-byte file`);
  }
  return { kind: 'compressed', hostOffset, additionalSectors: descriptor >>> highBits };
}

/** Writes `entry` as entry `index` of an L2 table (in place), standard or extended per `geometry`. */
export function writeL2Entry(table: Uint8Array, index: number, entry: L2Entry, geometry: Qcow2Geometry): void {
  const field = `l2[${index}]`;
  const at = index * geometry.l2EntrySize;
  room(table, at, geometry.l2EntrySize, field);
  let hi: number;
  let lo: number;
  let subclusters: Subclusters = { allocated: 0, zero: 0 };
  switch (entry.kind) {
    case 'unallocated':
      hi = 0;
      lo = 0;
      subclusters = checkSubclusters(field, entry.subclusters, geometry);
      if (subclusters.allocated !== 0) throw problem('encode', field, 'an unallocated cluster cannot have allocated subclusters');
      break;
    case 'zero':
      if (!geometry.zeroFlag) throw problem('encode', field, 'zero clusters need version 3 without extended L2 (use subclusters)');
      checkHostOffset(field, entry.hostOffset, geometry, true);
      hi = high32(entry.hostOffset) | (entry.copied ? 0x80000000 : 0);
      lo = (entry.hostOffset >>> 0) | 1;
      break;
    case 'normal':
      checkHostOffset(field, entry.hostOffset, geometry, geometry.externalDataFile && entry.copied);
      subclusters = checkSubclusters(field, entry.subclusters, geometry);
      hi = high32(entry.hostOffset) | (entry.copied ? 0x80000000 : 0);
      lo = entry.hostOffset >>> 0;
      break;
    case 'compressed':
      [hi, lo] = compressedWords(field, entry, geometry);
      break;
    default: {
      const never: never = entry;
      throw problem('encode', field, `unknown kind ${String((never as { kind: unknown }).kind)}`);
    }
  }
  writeWord(table, at, hi, lo);
  if (geometry.extendedL2) writeWord(table, at + 8, subclusters.zero, subclusters.allocated);
}

/** Decodes a whole L2 table (`geometry.l2Entries` entries) starting at `bytes[offset]`. */
export function decodeL2Table(bytes: Uint8Array, offset: number, geometry: Qcow2Geometry, fileSize?: number): L2Entry[] {
  need(bytes, offset, geometry.clusterSize, 'l2');
  const table = bytes.subarray(offset, offset + geometry.clusterSize);
  const entries: L2Entry[] = [];
  for (let i = 0; i < geometry.l2Entries; i++) entries.push(decodeL2Entry(table, i, geometry, fileSize));
  return entries;
}

/**
 * Encodes L2 entries into a new one-cluster buffer; entries past `entries.length` are
 * unallocated. At most `geometry.l2Entries` entries.
 */
export function encodeL2Table(entries: readonly L2Entry[], geometry: Qcow2Geometry): Uint8Array {
  if (entries.length > geometry.l2Entries) {
    throw problem('encode', 'l2', `${entries.length} entries do not fit in a table of ${geometry.l2Entries}`);
  }
  const out = new Uint8Array(geometry.clusterSize);
  entries.forEach((e, i) => writeL2Entry(out, i, e, geometry));
  return out;
}

/**
 * The effective state of subcluster `subcluster` (0..31) of a cluster; without extended L2
 * pass 0 and get the cluster's kind. In an extended entry, an allocated subcluster is
 * `normal`, a zero one `zero`, any other `unallocated` (read from the backing file).
 */
export function subclusterKind(entry: L2Entry, subcluster: number): L2Entry['kind'] {
  if (entry.kind === 'compressed' || entry.kind === 'zero' || entry.subclusters === undefined) return entry.kind;
  const bit = 2 ** subcluster;
  if ((entry.subclusters.zero & bit) !== 0) return 'zero';
  if ((entry.subclusters.allocated & bit) !== 0) return 'normal';
  return 'unallocated';
}

/**
 * The bytes to read for a compressed cluster: from `hostOffset` to the end of its last sector
 * (QEMU `qcow2_parse_compressed_l2_entry`). The range may run past the end of the file; read
 * what exists (decompression stops once it has a whole cluster).
 */
export function compressedByteRange(entry: Pick<CompressedCluster, 'hostOffset' | 'additionalSectors'>): ByteRange {
  const firstSector = Math.floor(entry.hostOffset / COMPRESSED_SECTOR_SIZE);
  const end = (firstSector + 1 + entry.additionalSectors) * COMPRESSED_SECTOR_SIZE;
  return { offset: entry.hostOffset, length: end - entry.hostOffset };
}

/**
 * The entry for `length` bytes of compressed data at `hostOffset`.
 * @throws InvalidArgumentError when the data spans more sectors than the descriptor can count.
 */
export function compressedCluster(hostOffset: number, length: number, geometry: Qcow2Geometry): CompressedCluster {
  checkInteger('encode', 'length', length, 1, SAFE_MAX);
  const sectors = Math.ceil(((hostOffset % COMPRESSED_SECTOR_SIZE) + length) / COMPRESSED_SECTOR_SIZE);
  const entry: CompressedCluster = { kind: 'compressed', hostOffset, additionalSectors: sectors - 1 };
  compressedWords('compressed', entry, geometry);
  return entry;
}

function compressedWords(field: string, entry: CompressedCluster, geometry: Qcow2Geometry): [number, number] {
  if (geometry.externalDataFile) throw problem('encode', field, 'compressed clusters are not allowed with an external data file');
  const maxOffset = Math.min(2 ** geometry.compressedOffsetBits, 2 ** 56) - 1;
  checkInteger('encode', `${field}.hostOffset`, entry.hostOffset, geometry.clusterSize, Math.min(maxOffset, SAFE_MAX));
  checkInteger('encode', `${field}.additionalSectors`, entry.additionalSectors, 0, 2 ** geometry.compressedSectorBits - 1);
  const highBits = geometry.compressedOffsetBits - 32;
  return [(0x40000000 | (entry.additionalSectors << highBits) | high32(entry.hostOffset)) >>> 0, entry.hostOffset >>> 0];
}

function checkSubclusters(field: string, subclusters: Subclusters | undefined, geometry: Qcow2Geometry): Subclusters {
  if (!geometry.extendedL2) {
    if (subclusters !== undefined) throw problem('encode', field, 'subclusters need extended L2 entries');
    return { allocated: 0, zero: 0 };
  }
  const s = subclusters ?? { allocated: 0, zero: 0 };
  checkInteger('encode', `${field}.subclusters.allocated`, s.allocated, 0, 0xffffffff);
  checkInteger('encode', `${field}.subclusters.zero`, s.zero, 0, 0xffffffff);
  if ((s.allocated & s.zero) !== 0) throw problem('encode', field, 'a subcluster cannot be both allocated and zero');
  return s;
}

function checkHostOffset(field: string, hostOffset: number, geometry: Qcow2Geometry, zeroAllowed: boolean): void {
  checkInteger('encode', `${field}.hostOffset`, hostOffset, zeroAllowed ? 0 : 1, Math.min(2 ** 56 - 1, SAFE_MAX));
  if (hostOffset % geometry.clusterSize !== 0) {
    throw problem('encode', `${field}.hostOffset`, `${hostOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
}

// ---------------------------------------------------------------------------------------------
// shared
// ---------------------------------------------------------------------------------------------

/** Bits 9-55 of an entry as a number; >= 2^53 is unsupported. */
function offsetBits(hi: number, lo: number, field: string): number {
  const high = hi & 0x00ffffff;
  if (isUnsafe64(high)) throw problem('decode', field, `offset in 0x${hex64(hi, lo)} is 2^53 or more`, true);
  return join64(high, (lo & 0xfffffe00) >>> 0);
}

/** A cluster-aligned table offset (0 = none) that must lie in the file. */
function checkTableOffset(direction: Direction, field: string, offset: number, geometry: Qcow2Geometry, fileSize?: number): void {
  if (offset % geometry.clusterSize !== 0) {
    throw problem(direction, field, `offset ${offset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  if (offset >= 2 ** 56) throw problem(direction, field, `offset ${offset} does not fit in bits 9-55`);
  if (fileSize !== undefined && offset !== 0 && offset + geometry.clusterSize > fileSize) {
    throw problem(direction, field, `the table at ${offset} runs past the end of the ${fileSize}-byte file`);
  }
}

function writeWord(bytes: Uint8Array, at: number, hi: number, lo: number): void {
  writeU32(bytes, at, hi >>> 0);
  writeU32(bytes, at + 4, lo >>> 0);
}
