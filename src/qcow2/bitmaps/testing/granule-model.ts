/**
 * Test-only: what a dirty bitmap should say, computed independently of `DirtyBitmap` — a plain
 * set of dirty granule numbers and the byte extents it makes. Not part of the public API.
 */

/** A dirty bitmap as a set of granule numbers. */
export class GranuleModel {
  readonly size: number;
  readonly granularity: number;
  readonly dirty = new Set<number>();

  constructor(size: number, granularity: number) {
    this.size = size;
    this.granularity = granularity;
  }

  /** Marks every granule that bytes `[offset, offset + length)` touch. */
  write(offset: number, length: number): void {
    if (length === 0) return;
    const last = Math.floor((offset + length - 1) / this.granularity);
    for (let g = Math.floor(offset / this.granularity); g <= last; g++) this.dirty.add(g);
  }

  /** ORs `other` in: each granule here that overlaps a dirty byte of `other`. */
  merge(other: GranuleModel): void {
    for (const extent of other.extents()) this.write(extent.offset, extent.length);
  }

  /** Maximal dirty byte runs, in order, clamped to the size. */
  extents(): Array<{ offset: number; length: number }> {
    const granules = [...this.dirty].sort((a, b) => a - b);
    const runs: Array<{ offset: number; length: number }> = [];
    for (const g of granules) {
      const start = g * this.granularity;
      const end = Math.min(this.size, start + this.granularity);
      const last = runs[runs.length - 1];
      if (last !== undefined && last.offset + last.length === start) last.length = end - last.offset;
      else runs.push({ offset: start, length: end - start });
    }
    return runs;
  }

  /** Dirty bytes as QEMU counts them: dirty granules × granularity. */
  count(): number {
    return this.dirty.size * this.granularity;
  }
}

/** A small deterministic PRNG (mulberry32), so that failures reproduce. */
export function prng(seed: number): (bound: number) => number {
  return (bound) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * bound);
  };
}
