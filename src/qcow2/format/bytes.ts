/**
 * Big-endian field access for the qcow2 codecs (spec: "All numbers in qcow2 are stored in Big
 * Endian byte order"). Internal to `qcow2/format/`; not exported from the index.
 *
 * 64-bit values are handled as two unsigned 32-bit halves, so that decoding a table of 64-bit
 * entries costs no bigint per entry. Offsets and sizes become JavaScript numbers and must stay
 * below 2^53; larger values are reported as unsupported rather than silently rounded.
 * @internal
 */
import { InvalidArgumentError } from '../../errors.js';
import { problem, truncated, type Direction } from './errors.js';

const TWO_32 = 0x1_0000_0000;
/** The high half of any value >= 2^53 has one of these bits set. */
const HIGH_UNSAFE = 0xffe00000;

/** Reads an unsigned 16-bit big-endian integer. The caller has checked the bounds. */
export function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

/** Reads an unsigned 32-bit big-endian integer. The caller has checked the bounds. */
export function readU32(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0;
}

/**
 * Reads an unsigned 64-bit big-endian integer as a number. Values of 2^53 or more throw an
 * unsupported error naming `field` (they would be rounded otherwise).
 */
export function readU64(bytes: Uint8Array, offset: number, field: string): number {
  const hi = readU32(bytes, offset);
  const lo = readU32(bytes, offset + 4);
  if ((hi & HIGH_UNSAFE) !== 0) {
    throw problem('decode', field, `value 0x${hex64(hi, lo)} is 2^53 or more, which is not supported`, true);
  }
  return hi * TWO_32 + lo;
}

/** Reads an unsigned 64-bit big-endian integer as a bigint. */
export function readU64Big(bytes: Uint8Array, offset: number): bigint {
  return (BigInt(readU32(bytes, offset)) << 32n) | BigInt(readU32(bytes, offset + 4));
}

/** Writes an unsigned 16-bit big-endian integer. */
export function writeU16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 8) & 0xff;
  bytes[offset + 1] = value & 0xff;
}

/** Writes an unsigned 32-bit big-endian integer. */
export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 24) & 0xff;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}

/** Writes a non-negative safe integer as an unsigned 64-bit big-endian integer. */
export function writeU64(bytes: Uint8Array, offset: number, value: number): void {
  writeU32(bytes, offset, Math.floor(value / TWO_32));
  writeU32(bytes, offset + 4, value >>> 0);
}

/** Writes a bigint in 0..2^64-1 as an unsigned 64-bit big-endian integer. */
export function writeU64Big(bytes: Uint8Array, offset: number, value: bigint): void {
  writeU32(bytes, offset, Number((value >> 32n) & 0xffffffffn));
  writeU32(bytes, offset + 4, Number(value & 0xffffffffn));
}

/** Joins two 32-bit halves; the caller ensures the result is below 2^53. */
export function join64(hi: number, lo: number): number {
  return hi * TWO_32 + lo;
}

/** The high 32 bits of a non-negative safe integer. */
export function high32(value: number): number {
  return Math.floor(value / TWO_32);
}

/** True when a value given as two halves is 2^53 or more. */
export function isUnsafe64(hi: number): boolean {
  return (hi & HIGH_UNSAFE) !== 0;
}

/** 16 hex digits of a 64-bit value given as two halves (for messages). */
export function hex64(hi: number, lo: number): string {
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

/** Rounds up to a multiple of 8. */
export function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** True when every byte of `bytes[start, end)` is zero. */
export function allZero(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * Throws a truncation error (the data claims more than was given) unless
 * `bytes[offset, offset + length)` exists, and an argument error when `offset` is not a
 * non-negative integer (the caller passed it).
 */
export function need(bytes: Uint8Array, offset: number, length: number, field: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InvalidArgumentError(`decode qcow2 ${field}`, `offset ${offset} is not a non-negative integer`);
  }
  if (offset + length > bytes.length) throw truncated(field, length, Math.max(0, bytes.length - offset));
}

/** Throws an argument error unless an entry of `length` bytes fits at `offset` of `bytes`. */
export function room(bytes: Uint8Array, offset: number, length: number, field: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > bytes.length) {
    throw new InvalidArgumentError(`encode qcow2 ${field}`, `${length} bytes at ${offset} do not fit in the ${bytes.length} bytes given`);
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Decodes a UTF-8 string; invalid UTF-8 is a format error naming `field`. */
export function decodeUtf8(bytes: Uint8Array, field: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw problem('decode', field, 'is not valid UTF-8');
  }
}

/** Encodes a string as UTF-8. */
export function encodeUtf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/**
 * Checks that an encoder input is an integer in `[min, max]`.
 */
export function checkInteger(direction: Direction, field: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw problem(direction, field, `${String(value)} is not an integer in ${min}..${max}`);
  }
}

/** Largest value of an unsigned 32-bit field. */
export const U32_MAX = 0xffffffff;
/** Largest value of an unsigned 16-bit field. */
export const U16_MAX = 0xffff;
/** Largest value this codec handles in a 64-bit size or offset field. */
export const SAFE_MAX = Number.MAX_SAFE_INTEGER;
