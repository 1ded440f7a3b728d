/**
 * `bitback image compare A B`: are two disks' contents identical, and if not, where do they
 * first differ — what `qemu-img compare` answers. Ranges that both disks report as zero are
 * skipped without reading.
 */
import { ExtentFlags, type BlockDevice } from '../block/block-device.js';

/** Options of {@link compareDevices}. */
export interface CompareOptions {
  /** Images of different sizes are different (`qemu-img compare -s`). Default: the larger one's tail must read as zero. */
  strict?: boolean;
}

/** The answer of {@link compareDevices}. */
export interface CompareResult {
  identical: boolean;
  /** First differing byte offset, when the contents differ. */
  offset?: number;
  /** Why they differ: content, or size under `strict`. */
  reason?: 'content' | 'size';
}

/** Bytes compared per read. */
const CHUNK = 1024 * 1024;

/** Index of the first byte where `a` and `b` differ, or -1. Both have the same length. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const A = Buffer.from(a.buffer, a.byteOffset, a.length);
  const B = Buffer.from(b.buffer, b.byteOffset, b.length);
  if (A.equals(B)) return -1;
  // Narrow down by blocks so that the byte loop runs over 4 KiB at most.
  for (let start = 0; start < A.length; start += 4096) {
    const end = Math.min(start + 4096, A.length);
    if (A.subarray(start, end).equals(B.subarray(start, end))) continue;
    for (let i = start; i < end; i++) if (A[i] !== B[i]) return i;
  }
  return -1;
}

/** The first extent of `device` at `offset` (at most `length` bytes). */
async function firstExtent(device: BlockDevice, offset: number, length: number): Promise<{ length: number; zero: boolean }> {
  const [extent] = await device.blockStatus(offset, length);
  if (extent === undefined) return { length, zero: false };
  return { length: Math.min(extent.length, length), zero: (extent.flags & ExtentFlags.ZERO) !== 0 };
}

/** First offset in `[from, to)` of `device` that does not read as zero, or -1. */
async function firstNonZero(device: BlockDevice, from: number, to: number): Promise<number> {
  for (let pos = from; pos < to; ) {
    const extent = await firstExtent(device, pos, to - pos);
    if (!extent.zero) {
      const end = pos + extent.length;
      for (let at = pos; at < end; at += CHUNK) {
        const data = await device.read(at, Math.min(CHUNK, end - at));
        const i = data.findIndex((b) => b !== 0);
        if (i >= 0) return at + i;
      }
    }
    pos += extent.length;
  }
  return -1;
}

/** Compares two disks byte for byte. Neither is modified. */
export async function compareDevices(a: BlockDevice, b: BlockDevice, options: CompareOptions = {}): Promise<CompareResult> {
  if (options.strict && a.size !== b.size) return { identical: false, offset: Math.min(a.size, b.size), reason: 'size' };
  const common = Math.min(a.size, b.size);
  for (let pos = 0; pos < common; ) {
    const [ea, eb] = await Promise.all([firstExtent(a, pos, common - pos), firstExtent(b, pos, common - pos)]);
    const n = Math.max(1, Math.min(ea.length, eb.length));
    if (!(ea.zero && eb.zero)) {
      // Read the next chunk of both while comparing the current one.
      let pending = Promise.all([a.read(pos, Math.min(CHUNK, n)), b.read(pos, Math.min(CHUNK, n))]);
      for (let at = pos; at < pos + n; ) {
        const len = Math.min(CHUNK, pos + n - at);
        const [da, db] = await pending;
        const nextAt = at + len;
        if (nextAt < pos + n) pending = Promise.all([a.read(nextAt, Math.min(CHUNK, pos + n - nextAt)), b.read(nextAt, Math.min(CHUNK, pos + n - nextAt))]);
        const i = firstDifference(da, db);
        if (i >= 0) {
          if (nextAt < pos + n) await pending.catch(() => undefined);
          return { identical: false, offset: at + i, reason: 'content' };
        }
        at = nextAt;
      }
    }
    pos += n;
  }
  const larger = a.size > b.size ? a : b;
  const tail = await firstNonZero(larger, common, larger.size);
  return tail < 0 ? { identical: true } : { identical: false, offset: tail, reason: 'content' };
}
