/**
 * Zero detection for byte ranges: how devices without allocation knowledge (raw files) find the
 * runs they may report as `ZERO`, and how the memory device avoids allocating chunks for zeroes.
 */
import { Buffer } from 'node:buffer';

/** Compared against in slices; never handed out, so nobody can write into it. */
const ZEROES = new Uint8Array(64 * 1024);

/**
 * Returns true when every byte of `data` is zero (true for an empty array). Borrows `data` for the
 * duration of the call only. Runs as `memcmp` against a zero buffer, 64 KiB at a time.
 */
export function isZero(data: Uint8Array): boolean {
  for (let start = 0; start < data.length; start += ZEROES.length) {
    const n = Math.min(ZEROES.length, data.length - start);
    if (Buffer.compare(data.subarray(start, start + n), ZEROES.subarray(0, n)) !== 0) return false;
  }
  return true;
}
