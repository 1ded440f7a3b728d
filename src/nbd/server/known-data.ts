/**
 * Byte ranges of an export that BLOCK_STATUS lately reported as data (allocated, not reading as
 * zero), so that a structured READ inside one can skip asking the device's block status.
 * Clients that copy a disk (nbdcopy, qemu-img convert, bitback) ask BLOCK_STATUS first and then
 * read only the data it showed: asking again for every READ costs the device a second lookup
 * of the same mapping.
 *
 * The record never has to be exact: sending a range as data is always a correct READ reply,
 * only a less sparse one if the range was zeroed since by someone else. Ranges this server
 * writes, zeroes or trims are forgotten, and ranges that read as zero are never recorded, so
 * no hole is ever sent as data that this server knows of, and no data is ever sent as a hole.
 */

/** Ranges kept at most; past this the record starts over (it is only a hint). */
export const MAX_KNOWN_RANGES = 4096;

/** Disjoint, non-adjacent byte ranges `[start, end)`, sorted. */
export class KnownData {
  #starts: number[] = [];
  #ends: number[] = [];

  /** Records `[from, to)` as data. */
  add(from: number, to: number): void {
    if (!(to > from)) return;
    // Ranges i..j-1 overlap or touch [from, to): they merge with it.
    const i = firstAtLeast(this.#ends, from);
    const j = firstAbove(this.#starts, to);
    const start = i < j ? Math.min(from, this.#starts[i]!) : from;
    const end = i < j ? Math.max(to, this.#ends[j - 1]!) : to;
    if (this.#starts.length - (j - i) + 1 > MAX_KNOWN_RANGES) {
      this.#starts = [start];
      this.#ends = [end];
      return;
    }
    this.#starts.splice(i, j - i, start);
    this.#ends.splice(i, j - i, end);
  }

  /** Whether all of `[from, to)` (non-empty) lies in one recorded range. */
  covers(from: number, to: number): boolean {
    const i = firstAbove(this.#starts, from) - 1;
    return i >= 0 && this.#ends[i]! >= to;
  }

  /** Forgets whatever was recorded of `[from, to)`. */
  forget(from: number, to: number): void {
    if (!(to > from)) return;
    // Ranges i..j-1 overlap [from, to); what they hold outside it stays.
    const i = firstAbove(this.#ends, from);
    const j = firstAtLeast(this.#starts, to);
    if (i >= j) return;
    const starts: number[] = [];
    const ends: number[] = [];
    if (this.#starts[i]! < from) {
      starts.push(this.#starts[i]!);
      ends.push(from);
    }
    if (this.#ends[j - 1]! > to) {
      starts.push(to);
      ends.push(this.#ends[j - 1]!);
    }
    this.#starts.splice(i, j - i, ...starts);
    this.#ends.splice(i, j - i, ...ends);
  }

  /** The recorded ranges, in order (for tests and diagnostics). */
  ranges(): Array<{ start: number; end: number }> {
    return this.#starts.map((start, i) => ({ start, end: this.#ends[i]! }));
  }
}

/** Index of the first value `>= x` in ascending `values` (their length when none). */
function firstAtLeast(values: readonly number[], x: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (values[mid]! < x) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** Index of the first value `> x` in ascending `values` (their length when none). */
function firstAbove(values: readonly number[], x: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (values[mid]! <= x) low = mid + 1;
    else high = mid;
  }
  return low;
}
