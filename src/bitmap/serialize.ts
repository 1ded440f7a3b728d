/**
 * The bit layout of a dirty bitmap as qcow2 stores it (docs/interop/qcow2.rst, "Bitmaps",
 * "Bitmap table" and "bitmap data"): bit `i` (least significant first) of byte `j` is granule
 * `8j + i`. Pure: these functions read or write a bitmap and byte arrays, no I/O.
 *
 * Work goes in chunks given by a byte offset and length, so that a huge bitmap never needs one
 * buffer for all its bits: qcow2 stores the data in clusters, one table entry each.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';
import { WORD_BITS } from './bits.js';
import { granulesOf, type DirtyBitmap } from './dirty-bitmap.js';
import type { GranuleSet } from './granule-set.js';

/** Bytes of serialized data per leaf word. */
const WORD_BYTES = WORD_BITS / 8;

/** Chunk size for hashing: bounded memory whatever the bitmap size. */
const HASH_CHUNK_BYTES = 1 << 20;

/** Bytes of the serialized bitmap: `ceil(granuleCount / 8)`. */
export function serializedByteLength(bitmap: DirtyBitmap): number {
  return Math.ceil(bitmap.granuleCount / 8);
}

/**
 * Serializes bytes `[byteOffset, byteOffset + byteLength)` of the bitmap's data into a new
 * buffer that the caller owns. Bits past the last granule (and bytes past the end of the data,
 * e.g. the rest of a qcow2 cluster) are 0.
 *
 * @param byteOffset - a byte of the serialized data, at most `serializedByteLength(bitmap)`
 * @throws OutOfRangeError when `byteOffset` is past the data; InvalidArgumentError for non-integers
 */
export function serializeBytes(bitmap: DirtyBitmap, byteOffset: number, byteLength: number): Uint8Array {
  checkChunk('serialize', bitmap, byteOffset, byteLength);
  const out = new Uint8Array(byteLength);
  writeBytes(granulesOf(bitmap), byteOffset, out);
  return out;
}

/**
 * Replaces the granules that bytes `[byteOffset, byteOffset + bytes.length)` of the serialized
 * data describe with the bits of `bytes`. Bits past the last granule are ignored. `bytes` is only
 * read during the call.
 *
 * @param byteOffset - a byte of the serialized data, at most `serializedByteLength(bitmap)`
 * @throws OutOfRangeError when `byteOffset` is past the data; InvalidArgumentError for non-integers
 */
export function deserializeBytes(bitmap: DirtyBitmap, byteOffset: number, bytes: Uint8Array): void {
  checkChunk('deserialize', bitmap, byteOffset, bytes.length);
  const store = granulesOf(bitmap);
  const end = byteOffset + bytes.length;
  const firstWhole = Math.ceil(byteOffset / WORD_BYTES);
  const endWhole = Math.floor(end / WORD_BYTES);
  if (firstWhole >= endWhole) {
    writePartialWords(store, bytes, byteOffset, byteOffset, end);
    return;
  }
  writePartialWords(store, bytes, byteOffset, byteOffset, firstWhole * WORD_BYTES);
  // Whole words: clear them all at once (cheap where the bitmap is clean), then set the
  // non-zero ones, so that mostly clean data costs little.
  store.clearRange(Math.min(store.length, firstWhole * WORD_BITS), Math.min(store.length, endWhole * WORD_BITS));
  for (let w = firstWhole, i = firstWhole * WORD_BYTES - byteOffset; w < endWhole; w++, i += WORD_BYTES) {
    const value = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    if (value !== 0) store.writeWord(w, -1, value);
  }
  writePartialWords(store, bytes, byteOffset, endWhole * WORD_BYTES, end);
}

/** Replaces the granules of serialized bytes `[from, to)` (`bytes[0]` is byte `byteOffset`), word by word. */
function writePartialWords(store: GranuleSet, bytes: Uint8Array, byteOffset: number, from: number, to: number): void {
  let pos = from;
  while (pos < to) {
    // Gather the bytes of one leaf word; mask marks the bits this chunk describes.
    const w = Math.floor(pos / WORD_BYTES);
    const wordEnd = Math.min(to, (w + 1) * WORD_BYTES);
    let mask = 0;
    let value = 0;
    for (; pos < wordEnd; pos++) {
      const shift = (pos % WORD_BYTES) * 8;
      mask |= 0xff << shift;
      value |= bytes[pos - byteOffset]! << shift;
    }
    store.writeWord(w, mask, value);
  }
}

/**
 * True when bytes `[byteOffset, byteOffset + byteLength)` of the serialized data would all be 0
 * (qcow2 then stores the cluster as table entry 0). Uses the bitmap's hierarchy: O(log size).
 *
 * @throws OutOfRangeError when `byteOffset` is past the data; InvalidArgumentError for non-integers
 */
export function bytesAreClean(bitmap: DirtyBitmap, byteOffset: number, byteLength: number): boolean {
  checkChunk('check', bitmap, byteOffset, byteLength);
  const store = granulesOf(bitmap);
  const next = store.nextSet(byteOffset * 8);
  return next < 0 || next >= (byteOffset + byteLength) * 8;
}

/**
 * The SHA-256 (lowercase hex) that QEMU's `x-debug-block-dirty-bitmap-sha256` reports: the hash
 * of the bitmap's leaf level as `max(1, ceil(granules / 64))` 64-bit little-endian words, the last
 * one zero-padded. That is the qcow2 byte layout padded with zeroes to a multiple of 8 bytes.
 */
export function sha256Qemu(bitmap: DirtyBitmap): string {
  const store = granulesOf(bitmap);
  const total = Math.max(1, Math.ceil(bitmap.granuleCount / 64)) * 8;
  const hash = createHash('sha256');
  const chunk = new Uint8Array(Math.min(total, HASH_CHUNK_BYTES));
  for (let pos = 0; pos < total; pos += chunk.length) {
    const part = total - pos < chunk.length ? chunk.subarray(0, total - pos) : chunk;
    part.fill(0);
    writeBytes(store, pos, part);
    hash.update(part);
  }
  return hash.digest('hex');
}

/** Writes serialized bytes starting at `byteOffset` into `out` (zeroed), skipping clean words. */
function writeBytes(store: GranuleSet, byteOffset: number, out: Uint8Array): void {
  const end = byteOffset + out.length;
  const firstWord = Math.floor(byteOffset / WORD_BYTES);
  const endWord = Math.ceil(end / WORD_BYTES);
  let w = firstWord;
  while (w < endWord) {
    // Jump to the next word that has a set granule.
    const next = store.nextSet(w * WORD_BITS);
    if (next < 0) return;
    w = Math.floor(next / WORD_BITS);
    if (w >= endWord) return;
    const word = store.word(w);
    const base = w * WORD_BYTES;
    const from = Math.max(base, byteOffset);
    const to = Math.min(base + WORD_BYTES, end);
    for (let pos = from; pos < to; pos++) out[pos - byteOffset] = word >>> ((pos - base) * 8);
    w += 1;
  }
}

function checkChunk(verb: string, bitmap: DirtyBitmap, byteOffset: number, byteLength: number): void {
  const action = `${verb} bitmap data${bitmap.name === undefined ? '' : ` of '${bitmap.name}'`}`;
  if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength)) {
    throw new InvalidArgumentError(action, `range ${byteOffset}+${byteLength} is not made of integers`);
  }
  const dataLength = serializedByteLength(bitmap);
  if (byteOffset < 0 || byteLength < 0 || byteOffset > dataLength) {
    throw new OutOfRangeError(action, `range ${byteOffset}+${byteLength} does not start within the ${dataLength} bytes of data`);
  }
}
