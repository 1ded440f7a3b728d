/**
 * How QEMU 7.2's generic block layer (block/io.c) cuts zero-writes and discards for a node's
 * limits before the driver sees them, for the `blkdebug` device: each piece reaches blkdebug's
 * driver function, and its rules, on its own. No I/O: the pieces go to callbacks.
 */
import { IoError, NotSupportedError } from '../../errors.js';

/** The limits a blkdebug node imposes (bytes; 0: none). */
export interface BlkdebugLimits {
  /** Request alignment (`align`; 1 when not given), a power of two. */
  align: number;
  maxTransfer: number;
  optWriteZero: number;
  maxWriteZero: number;
  optDiscard: number;
  maxDiscard: number;
}

/** QEMU's largest bounce buffer for zero-writes done as writes (`MAX_BOUNCE_BUFFER`, 16 MiB). */
const MAX_BOUNCE_BUFFER = 32768 * 512;

/** `value` rounded down to a multiple of `alignment`. */
export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

/** `value` rounded up to a multiple of `alignment`. */
export function alignUp(value: number, alignment: number): number {
  return alignDown(value + alignment - 1, alignment);
}

/** A failure QEMU reads as ENOTSUP. */
export function isNotSupported(e: unknown): boolean {
  return e instanceof NotSupportedError || (e instanceof IoError && (e.errno === 'ENOTSUP' || e.errno === 'EOPNOTSUPP'));
}

/** Where the pieces of a zero-write go. */
export interface ZeroWriteTargets {
  /** The driver's zero-write of one piece; rejecting with ENOTSUP asks for the fallback. */
  zero(offset: number, bytes: number): Promise<void>;
  /** The fallback: a write of `bytes` zeroes. */
  write(offset: number, bytes: number): Promise<void>;
}

/**
 * `bdrv_co_do_pwrite_zeroes`: `[offset, offset + bytes)` cut at the zero alignment (the larger
 * of `opt-write-zero` and `align`: an unaligned head piece, the aligned bulk in pieces of at most
 * `max-write-zero`, an unaligned tail piece). A piece the driver refuses with ENOTSUP is written
 * as zeroes (at most a bounce buffer's worth), unless `fast`: then the error stands. Stops at the
 * first failure.
 */
export async function cutZeroWrite(offset: number, bytes: number, limits: BlkdebugLimits, fast: boolean, to: ZeroWriteTargets): Promise<void> {
  const alignment = Math.max(limits.optWriteZero, limits.align);
  const maxZeroes = alignDown(limits.maxWriteZero === 0 ? Number.MAX_SAFE_INTEGER : limits.maxWriteZero, alignment);
  const maxBounce = limits.maxTransfer === 0 ? MAX_BOUNCE_BUFFER : Math.min(limits.maxTransfer, MAX_BOUNCE_BUFFER);
  let head = offset % alignment;
  const tail = (offset + bytes) % alignment;
  while (bytes > 0) {
    let num = bytes;
    if (head > 0) {
      num = Math.min(bytes, maxBounce, alignment - head);
      head = (head + num) % alignment;
    } else if (tail > 0 && num > alignment) {
      num -= tail;
    }
    num = Math.min(num, maxZeroes);
    try {
      await to.zero(offset, num);
    } catch (e) {
      if (!isNotSupported(e) || fast) throw e;
      num = Math.min(num, maxBounce);
      await to.write(offset, num);
    }
    offset += num;
    bytes -= num;
  }
}

/**
 * `bdrv_co_pdiscard` (after its "discard=ignore" and driver checks): `[offset, offset + bytes)`
 * cut at the discard alignment (the larger of `opt-discard` and `align`) in pieces of at most
 * `max-discard`; a piece the driver refuses with ENOTSUP is skipped, any other error stands.
 */
export async function cutDiscard(offset: number, bytes: number, limits: BlkdebugLimits, discard: (offset: number, bytes: number) => Promise<void>): Promise<void> {
  const { align } = limits;
  const alignment = Math.max(limits.optDiscard, align);
  const maxPiece = alignDown(limits.maxDiscard === 0 ? Number.MAX_SAFE_INTEGER : limits.maxDiscard, alignment);
  let head = offset % alignment;
  let tail = (offset + bytes) % alignment;
  while (bytes > 0) {
    let num = bytes;
    if (head > 0) {
      num = Math.min(bytes, alignment - head);
      if (num % align !== 0) num %= align;
      head = (head + num) % alignment;
    } else if (tail > 0) {
      if (num > alignment) {
        num -= tail;
      } else if (tail % align !== 0 && tail > align) {
        tail %= align;
        num -= tail;
      }
    }
    num = Math.min(num, maxPiece);
    try {
      await discard(offset, num);
    } catch (e) {
      if (!isNotSupported(e)) throw e;
    }
    offset += num;
    bytes -= num;
  }
}
