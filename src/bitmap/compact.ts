/**
 * The compact form of a dirty bitmap, used for bitback's own files (carry-over bitmaps in the
 * repository): a small header, the dirty runs in granules as varint pairs, a CRC-32 trailer.
 * Its size grows with the number of dirty runs, not with the disk. The layout is specified in
 * `docs/bitmap-compact-format.md`; every field below names its row there. Pure: no I/O.
 */
import { crc32 } from './crc32.js';
import { MAX_GRANULES, MAX_NAME_BYTES } from './bitmap-types.js';
import { DirtyBitmap, granulesOf } from './dirty-bitmap.js';
import { BitmapFormatError } from './errors.js';
import { ByteWriter, readVarint } from './varint.js';

/** `magic`: the ASCII bytes "BBBITMAP". */
export const COMPACT_MAGIC = new Uint8Array([0x42, 0x42, 0x42, 0x49, 0x54, 0x4d, 0x41, 0x50]);
/** `version`: the only version this code reads and writes. */
export const COMPACT_VERSION = 1;

/** `flags` bits. */
export const CompactFlags = {
  /** The bitmap records writes. */
  ENABLED: 1 << 0,
  /** The bitmap is persistent. */
  PERSISTENT: 1 << 1,
  /** The bitmap is inconsistent (never together with ENABLED). */
  INCONSISTENT: 1 << 2,
} as const;
const KNOWN_FLAGS = CompactFlags.ENABLED | CompactFlags.PERSISTENT | CompactFlags.INCONSISTENT;

/** Offsets of the fixed header fields. */
const OFFSET = { version: 8, flags: 9, granularityBits: 10, reserved: 11, size: 12, nameLength: 20, name: 22 } as const;
/** Bytes of the CRC-32 trailer. */
const TRAILER_BYTES = 4;
/** The shortest valid encoding: fixed header, an empty name, run count 0, trailer. */
const MIN_LENGTH = OFFSET.name + 1 + TRAILER_BYTES;
const MIN_GRANULARITY_BITS = 9;
const MAX_GRANULARITY_BITS = 31;

/**
 * Encodes `bitmap` (bits, size, granularity, name, and the enabled, persistent and inconsistent
 * flags; not the busy state nor a successor, which only live in a process) into a new buffer
 * that the caller owns. Its length is about 30 bytes plus the name plus up to 10 bytes per
 * dirty run.
 */
export function encodeCompact(bitmap: DirtyBitmap): Uint8Array {
  const out = new ByteWriter();
  out.append(COMPACT_MAGIC);
  out.byte(COMPACT_VERSION);
  out.byte(
    (bitmap.enabled ? CompactFlags.ENABLED : 0) |
      (bitmap.persistent ? CompactFlags.PERSISTENT : 0) |
      (bitmap.inconsistent ? CompactFlags.INCONSISTENT : 0),
  );
  out.byte(Math.log2(bitmap.granularity));
  out.byte(0);
  const size = bitmap.size;
  const high = Math.floor(size / 2 ** 32);
  const low = size % 2 ** 32;
  for (const word of [high, low]) for (let shift = 24; shift >= 0; shift -= 8) out.byte((word >>> shift) & 0xff);
  const name = new TextEncoder().encode(bitmap.name ?? '');
  out.byte(name.length >>> 8);
  out.byte(name.length & 0xff);
  out.append(name);

  const store = granulesOf(bitmap);
  const runs: number[] = [];
  let end = 0;
  for (let start = store.nextSet(0); start >= 0; start = store.nextSet(end)) {
    const clear = store.nextClear(start);
    runs.push(start - end);
    end = clear < 0 ? store.length : clear;
    runs.push(end - start);
    if (clear < 0) break;
  }
  out.varint(runs.length / 2);
  for (const value of runs) out.varint(value);

  const crc = crc32(out.view());
  for (let shift = 24; shift >= 0; shift -= 8) out.byte((crc >>> shift) & 0xff);
  return out.finish();
}

/**
 * Decodes a compact bitmap, validating every field. The returned bitmap is new and not busy.
 * Never allocates more than the bitmap itself (whose granule count is bounded by 2^32, with
 * lazily allocated pages), whatever lengths the input claims.
 *
 * @throws BitmapFormatError (code `CORRUPT`) naming the first field that is wrong
 */
export function decodeCompact(bytes: Uint8Array): DirtyBitmap {
  if (bytes.length < COMPACT_MAGIC.length || COMPACT_MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new BitmapFormatError('magic', 'the data does not start with "BBBITMAP"');
  }
  if (bytes.length <= OFFSET.version) throw new BitmapFormatError('version', 'the data ends before the version');
  if (bytes[OFFSET.version] !== COMPACT_VERSION) {
    throw new BitmapFormatError('version', `version ${bytes[OFFSET.version]} is not supported (only ${COMPACT_VERSION})`);
  }
  if (bytes.length < MIN_LENGTH) {
    throw new BitmapFormatError('length', `${bytes.length} bytes are fewer than the ${MIN_LENGTH} of the smallest bitmap`);
  }
  const body = bytes.length - TRAILER_BYTES;
  const stored = readU32(bytes, body);
  const actual = crc32(bytes, 0, body);
  if (stored !== actual) {
    throw new BitmapFormatError('crc32', `stored 0x${hex8(stored)} but the data has 0x${hex8(actual)}`);
  }

  const flags = bytes[OFFSET.flags]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new BitmapFormatError('flags', `unknown bits 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
  const enabled = (flags & CompactFlags.ENABLED) !== 0;
  const inconsistent = (flags & CompactFlags.INCONSISTENT) !== 0;
  if (enabled && inconsistent) throw new BitmapFormatError('flags', 'an inconsistent bitmap cannot be enabled');
  const bits = bytes[OFFSET.granularityBits]!;
  if (bits < MIN_GRANULARITY_BITS || bits > MAX_GRANULARITY_BITS) {
    throw new BitmapFormatError('granularity_bits', `${bits} is not within ${MIN_GRANULARITY_BITS}..${MAX_GRANULARITY_BITS}`);
  }
  if (bytes[OFFSET.reserved] !== 0) throw new BitmapFormatError('reserved', `is ${bytes[OFFSET.reserved]}, not 0`);
  const high = readU32(bytes, OFFSET.size);
  const size = high * 2 ** 32 + readU32(bytes, OFFSET.size + 4);
  if (high >= 2 ** 21) throw new BitmapFormatError('size', `0x${hex8(high)}${hex8(size % 2 ** 32)} is not a safe integer`);
  const granularity = 2 ** bits;
  const granules = Math.ceil(size / granularity);
  if (granules > MAX_GRANULES) {
    throw new BitmapFormatError('size', `${size} bytes make ${granules} granules of ${granularity}, more than ${MAX_GRANULES}`);
  }

  const nameLength = (bytes[OFFSET.nameLength]! << 8) | bytes[OFFSET.nameLength + 1]!;
  if (nameLength > MAX_NAME_BYTES) throw new BitmapFormatError('name_length', `${nameLength} is more than ${MAX_NAME_BYTES}`);
  let pos = OFFSET.name + nameLength;
  if (pos > body) throw new BitmapFormatError('name', `${nameLength} bytes run past the end of the data`);
  let name: string | undefined;
  if (nameLength > 0) {
    try {
      name = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(OFFSET.name, pos));
    } catch (e) {
      throw new BitmapFormatError('name', 'is not valid UTF-8', undefined, { cause: e });
    }
  }

  const count = readVarint(bytes, pos, body, 'run_count');
  pos = count.next;
  // Runs are separated by at least one clean granule.
  if (count.value > Math.ceil(granules / 2)) {
    throw new BitmapFormatError('run_count', `${count.value} runs cannot fit in ${granules} granules`);
  }
  const bitmap = new DirtyBitmap({ size, granularity, name, enabled, inconsistent, persistent: (flags & CompactFlags.PERSISTENT) !== 0 });
  const store = granulesOf(bitmap);
  let end = 0;
  for (let i = 0; i < count.value; i++) {
    const gap = readVarint(bytes, pos, body, 'runs');
    const length = readVarint(bytes, gap.next, body, 'runs');
    pos = length.next;
    if (i > 0 && gap.value === 0) throw new BitmapFormatError('runs', `run ${i} follows the previous one without a gap`);
    if (length.value === 0) throw new BitmapFormatError('runs', `run ${i} is empty`);
    const start = end + gap.value;
    end = start + length.value;
    if (end > granules) throw new BitmapFormatError('runs', `run ${i} ends at granule ${end}, past the ${granules} granules`);
    store.setRange(start, end);
  }
  if (pos !== body) throw new BitmapFormatError('runs', `${body - pos} bytes follow the last run`);
  return bitmap;
}

function readU32(bytes: Uint8Array, pos: number): number {
  return ((bytes[pos]! << 24) | (bytes[pos + 1]! << 16) | (bytes[pos + 2]! << 8) | bytes[pos + 3]!) >>> 0;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}
