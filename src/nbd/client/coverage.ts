/**
 * The byte ranges that the chunks of one structured READ reply have covered so far, to check
 * that they cover the request exactly once (proto.md "Structured reply types": data and hole
 * chunks MUST NOT overlap and, on success, cover the whole request).
 *
 * Ranges are kept sorted and merged, so chunks that arrive in order (the usual case) keep one
 * range; a server that scatters chunks costs a binary search and an insert per chunk.
 */
export class Coverage {
  /** Sorted, disjoint, non-adjacent half-open ranges: starts[i] < ends[i] < starts[i + 1]. */
  readonly #starts: number[] = [];
  readonly #ends: number[] = [];
  #total = 0;

  /** Bytes covered so far. */
  get total(): number {
    return this.#total;
  }

  /**
   * Adds `[start, end)` (start < end). Returns false, changing nothing, when it overlaps a range
   * already covered.
   */
  add(start: number, end: number): boolean {
    const starts = this.#starts;
    const ends = this.#ends;
    // Index of the first range whose start is >= `start`.
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! < start) lo = mid + 1;
      else hi = mid;
    }
    const before = lo - 1;
    if (before >= 0 && ends[before]! > start) return false;
    if (lo < starts.length && starts[lo]! < end) return false;
    this.#total += end - start;
    const joinsBefore = before >= 0 && ends[before] === start;
    const joinsAfter = lo < starts.length && starts[lo] === end;
    if (joinsBefore && joinsAfter) {
      ends[before] = ends[lo]!;
      starts.splice(lo, 1);
      ends.splice(lo, 1);
    } else if (joinsBefore) {
      ends[before] = end;
    } else if (joinsAfter) {
      starts[lo] = start;
    } else {
      starts.splice(lo, 0, start);
      ends.splice(lo, 0, end);
    }
    return true;
  }
}
