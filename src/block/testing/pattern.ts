/**
 * Deterministic test data for the conformance suite: a seeded pseudo-random generator (so a
 * failure can be replayed from its seed) and disk contents with data and zero runs.
 */

/** A seeded generator of 32-bit pseudo-random numbers (mulberry32); not for cryptography. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniformly distributed integer in `[0, bound)`; `bound` is a positive integer ≤ 2^32. */
  below(bound: number): number {
    return Math.floor(this.#next() * bound);
  }

  /** An integer in `[min, max]`. */
  between(min: number, max: number): number {
    return min + this.below(max - min + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.#next() < p;
  }

  /** `length` random bytes, none of them zero (so that written data never looks like a hole). */
  nonZeroBytes(length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = 1 + this.below(255);
    return bytes;
  }

  #next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/**
 * Disk contents of `size` bytes made of alternating runs of non-zero data and zeroes, of random
 * lengths from 1 byte to 192 KiB (so runs start and end both on and off 512-byte, 4 KiB and
 * 64 KiB boundaries). The first run is data; the device's last 64 KiB are zero.
 */
export function patternedContent(size: number, seed: number): Uint8Array {
  const random = new Random(seed);
  const content = new Uint8Array(size);
  let position = 0;
  let data = true;
  while (position < size - 65536) {
    const length = Math.min(size - 65536 - position, random.chance(0.3) ? random.between(1, 4096) : random.between(4096, 196608));
    if (data) content.set(random.nonZeroBytes(length), position);
    position += length;
    data = !data;
  }
  return content;
}
