/**
 * Bit tricks on 32-bit words, shared by the bitmap's storage classes.
 *
 * Words are handled as signed 32-bit integers (what JavaScript's bitwise operators produce);
 * `Uint32Array` storage converts them back on write. A full word is therefore `-1`.
 */

/** Number of bits in one leaf word. */
export const WORD_BITS = 32;

/** A word with every bit set, as the bitwise operators see it. */
export const FULL_WORD = -1;

/** Index of the lowest set bit of `x` (0..31). `x` must not be 0. */
export function lowestBit(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/** Number of set bits of the 32-bit word `x`. */
export function popcount(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** A word with bits `lo..hi` set (inclusive, 0 <= lo <= hi <= 31). */
export function bitRange(lo: number, hi: number): number {
  return (-1 >>> (31 - hi)) & (-1 << lo);
}

/** A word with bits `from..31` set (0 <= from <= 31). */
export function bitsFrom(from: number): number {
  return -1 << from;
}
