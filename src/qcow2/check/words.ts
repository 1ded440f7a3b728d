/**
 * Raw 64-bit big-endian words, for the places where the check must look at an entry the way
 * QEMU does after the format codecs refused it (reserved bits set, unaligned offsets...).
 * @internal
 */

/** The big-endian 64-bit word at `bytes[at]` as `[high 32 bits, low 32 bits]`, unsigned. */
export function word64(bytes: Uint8Array, at: number): [number, number] {
  const hi = ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
  const lo = ((bytes[at + 4]! << 24) | (bytes[at + 5]! << 16) | (bytes[at + 6]! << 8) | bytes[at + 7]!) >>> 0;
  return [hi, lo];
}

/** The big-endian 64-bit word at `bytes[at]` as a bigint. */
export function word64Big(bytes: Uint8Array, at: number): bigint {
  const [hi, lo] = word64(bytes, at);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** Bits 9-55 of a word (`L1E_OFFSET_MASK`, `L2E_OFFSET_MASK`) as a number; exact below 2^53. */
export function offsetBits(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 0x1_0000_0000 + ((lo & 0xfffffe00) >>> 0);
}

/** Writes the 64-bit word `[hi, lo]` big-endian at `bytes[at]`. */
export function writeWord64(bytes: Uint8Array, at: number, hi: number, lo: number): void {
  bytes[at] = hi >>> 24;
  bytes[at + 1] = (hi >>> 16) & 0xff;
  bytes[at + 2] = (hi >>> 8) & 0xff;
  bytes[at + 3] = hi & 0xff;
  bytes[at + 4] = lo >>> 24;
  bytes[at + 5] = (lo >>> 16) & 0xff;
  bytes[at + 6] = (lo >>> 8) & 0xff;
  bytes[at + 7] = lo & 0xff;
}
