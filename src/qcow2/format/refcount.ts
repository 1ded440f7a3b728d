/**
 * Refcount table entries and refcount blocks (spec "Host cluster management").
 *
 * A refcount block is one cluster of `refcountBlockEntries` refcounts, each `2^refcount_order`
 * bits wide: for widths of 8 bits and more, big-endian integers; for 1, 2 and 4 bits, packed
 * in bytes with entry 0 in the least significant bits (spec: "bit 0 means the least
 * significant bit"; QEMU `get_refcount_ro0..2`).
 */
import { MAX_REFCOUNT_ORDER, TABLE_ENTRY_SIZE } from './constants.js';
import { SAFE_MAX, checkInteger, hex64, high32, isUnsafe64, join64, need, readU32, room, writeU32 } from './bytes.js';
import { problem } from './errors.js';
import type { Qcow2Geometry } from './geometry.js';

// ---------------------------------------------------------------------------------------------
// refcount table
// ---------------------------------------------------------------------------------------------

/**
 * Decodes entry `index` of a refcount table: the cluster-aligned offset of a refcount block,
 * or 0 when the block is not allocated (all its refcounts are 0).
 * @param fileSize - when given, the block must lie within the file.
 */
export function decodeRefcountTableEntry(table: Uint8Array, index: number, geometry: Qcow2Geometry, fileSize?: number): number {
  const field = `refcount_table[${index}]`;
  const at = index * TABLE_ENTRY_SIZE;
  need(table, at, TABLE_ENTRY_SIZE, field);
  const hi = readU32(table, at);
  const lo = readU32(table, at + 4);
  if ((lo & 0x1ff) !== 0) throw problem('decode', field, `0x${hex64(hi, lo)} has reserved bits 0-8 set`);
  if (isUnsafe64(hi)) throw problem('decode', field, `offset 0x${hex64(hi, lo)} is 2^53 or more`, true);
  const offset = join64(hi, lo);
  if (offset % geometry.clusterSize !== 0) {
    throw problem('decode', field, `offset ${offset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  if (fileSize !== undefined && offset !== 0 && offset + geometry.clusterSize > fileSize) {
    throw problem('decode', field, `the refcount block at ${offset} runs past the end of the ${fileSize}-byte file`);
  }
  return offset;
}

/** Writes a refcount block offset (cluster-aligned, or 0) as entry `index` of a refcount table. */
export function writeRefcountTableEntry(table: Uint8Array, index: number, blockOffset: number, geometry: Qcow2Geometry): void {
  const field = `refcount_table[${index}]`;
  room(table, index * TABLE_ENTRY_SIZE, TABLE_ENTRY_SIZE, field);
  checkInteger('encode', field, blockOffset, 0, SAFE_MAX);
  if (blockOffset % geometry.clusterSize !== 0) {
    throw problem('encode', field, `offset ${blockOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  writeU32(table, index * TABLE_ENTRY_SIZE, high32(blockOffset));
  writeU32(table, index * TABLE_ENTRY_SIZE + 4, blockOffset >>> 0);
}

/** Decodes `count` refcount table entries at `bytes[offset]`. Checks the length before allocating. */
export function decodeRefcountTable(bytes: Uint8Array, offset: number, count: number, geometry: Qcow2Geometry, fileSize?: number): number[] {
  need(bytes, offset, count * TABLE_ENTRY_SIZE, 'refcount_table');
  const table = bytes.subarray(offset, offset + count * TABLE_ENTRY_SIZE);
  const offsets: number[] = [];
  for (let i = 0; i < count; i++) offsets.push(decodeRefcountTableEntry(table, i, geometry, fileSize));
  return offsets;
}

/** Encodes refcount block offsets into a new buffer of `blockOffsets.length * 8` bytes. */
export function encodeRefcountTable(blockOffsets: readonly number[], geometry: Qcow2Geometry): Uint8Array {
  const out = new Uint8Array(blockOffsets.length * TABLE_ENTRY_SIZE);
  blockOffsets.forEach((o, i) => writeRefcountTableEntry(out, i, o, geometry));
  return out;
}

// ---------------------------------------------------------------------------------------------
// refcount blocks
// ---------------------------------------------------------------------------------------------

/** The largest refcount of a width (2^bits - 1), capped at 2^53 - 1 for 64-bit refcounts. */
export function maxRefcount(refcountOrder: number): number {
  checkInteger('encode', 'refcount_order', refcountOrder, 0, MAX_REFCOUNT_ORDER);
  return Math.min(2 ** 2 ** refcountOrder - 1, SAFE_MAX);
}

/**
 * Reads refcount `index` of a refcount block (`block` holds the block, or any prefix of it).
 *
 * @throws Qcow2FormatError when the block is too short for `index`; Qcow2UnsupportedError for
 *   a 64-bit refcount of 2^53 or more.
 */
export function getRefcount(block: Uint8Array, index: number, refcountOrder: number): number {
  const bits = 2 ** refcountOrder;
  const start = Math.floor((index * bits) / 8);
  const width = bits < 8 ? 1 : bits / 8;
  // the field name is only built for an error: this runs for every cluster of a check
  if (!(start >= 0 && start + width <= block.length)) need(block, start, width, `refcount_block[${index}]`);
  if (bits < 8) {
    const bit = index * bits;
    return (block[bit >>> 3]! >>> (bit & 7)) & ((1 << bits) - 1);
  }
  const at = (index * bits) / 8;
  switch (bits) {
    case 8:
      return block[at]!;
    case 16:
      return (block[at]! << 8) | block[at + 1]!;
    case 32:
      return readU32(block, at);
    default: {
      const hi = readU32(block, at);
      const lo = readU32(block, at + 4);
      if (isUnsafe64(hi)) throw problem('decode', `refcount_block[${index}]`, `refcount 0x${hex64(hi, lo)} is 2^53 or more`, true);
      return join64(hi, lo);
    }
  }
}

/**
 * Sets refcount `index` of a refcount block in place.
 * @throws InvalidArgumentError when `value` does not fit the width or `index` the block.
 */
export function setRefcount(block: Uint8Array, index: number, refcountOrder: number, value: number): void {
  const bits = 2 ** refcountOrder;
  const field = `refcount_block[${index}]`;
  checkInteger('encode', field, value, 0, maxRefcount(refcountOrder));
  checkInteger('encode', `${field} index`, index, 0, (block.length * 8) / bits - 1);
  if (bits < 8) {
    const bit = index * bits;
    const mask = ((1 << bits) - 1) << (bit & 7);
    block[bit >>> 3] = (block[bit >>> 3]! & ~mask) | (value << (bit & 7));
    return;
  }
  const at = (index * bits) / 8;
  switch (bits) {
    case 8:
      block[at] = value;
      return;
    case 16:
      block[at] = value >>> 8;
      block[at + 1] = value & 0xff;
      return;
    case 32:
      writeU32(block, at, value);
      return;
    default:
      writeU32(block, at, high32(value));
      writeU32(block, at + 4, value >>> 0);
  }
}

// ---------------------------------------------------------------------------------------------
// sizing
// ---------------------------------------------------------------------------------------------

/** The refcount structures needed for an image. */
export interface RefcountLayout {
  /** Refcount blocks needed. */
  blocks: number;
  /** Clusters of the refcount table needed to point to `blocks` blocks. */
  tableClusters: number;
  /** The clusters covered: the other clusters plus `blocks` plus `tableClusters`. */
  totalClusters: number;
}

/**
 * How many refcount blocks and refcount table clusters cover an image of `clusters` clusters
 * (everything but the refcount structures themselves), given that the refcount blocks and
 * table need refcounts too. Returns the smallest such layout: the fixed point of
 * `blocks = ceil((clusters + blocks + table) / refcountBlockEntries)`,
 * `table = ceil(blocks / tableEntriesPerCluster)`.
 */
export function refcountLayoutFor(clusters: number, geometry: Qcow2Geometry): RefcountLayout {
  checkInteger('encode', 'clusters', clusters, 0, SAFE_MAX);
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const nextBlocks = Math.ceil((clusters + blocks + tableClusters) / geometry.refcountBlockEntries);
    const nextTable = Math.ceil(nextBlocks / geometry.tableEntriesPerCluster);
    if (nextBlocks === blocks && nextTable === tableClusters) break;
    blocks = nextBlocks;
    tableClusters = nextTable;
  }
  return { blocks, tableClusters, totalClusters: clusters + blocks + tableClusters };
}
