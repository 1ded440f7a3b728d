/**
 * One page of leaf words of a bitmap: a fixed number of 32-bit words (bit `b` of word `w` is
 * granule `32w + b` of the page) with two summaries over the words, "not zero" and "not full",
 * so that the next set and the next clear bit are both found without scanning the page.
 * Pages are allocated only where a bitmap is neither all clean nor all dirty (see GranuleSet).
 *
 * Indices are granules relative to the start of the page. Mutators return how much the number
 * of set bits changed, so that the owner can keep a running count.
 */
import { BitTree } from './bit-tree.js';
import { bitRange, bitsFrom, FULL_WORD, lowestBit, popcount, WORD_BITS } from './bits.js';

/** Leaf words of one page with "not zero" and "not full" summaries; see the file comment. */
export class LeafPage {
  /** The leaf words. Bits past the owner's last granule stay 0. */
  readonly words: Uint32Array;
  /** Number of set bits in `words`. */
  count = 0;
  /** Words that are not 0. */
  readonly #nonZero: BitTree;
  /** Words that are not all ones. */
  readonly #nonFull: BitTree;

  /** An all-clean page of `wordCount` words. */
  constructor(wordCount: number) {
    this.words = new Uint32Array(wordCount);
    this.#nonZero = new BitTree(wordCount);
    this.#nonFull = new BitTree(wordCount, true);
  }

  /** A page whose first `bits` granules are set and the rest clear. */
  static filled(wordCount: number, bits: number): LeafPage {
    const page = new LeafPage(wordCount);
    page.setRange(0, bits);
    return page;
  }

  /** True when granule `i` is set. */
  get(i: number): boolean {
    return (this.words[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  /** Sets granules `[start, end)`; returns the number of bits newly set. */
  setRange(start: number, end: number): number {
    return this.#applyRange(start, end, true);
  }

  /** Clears granules `[start, end)`; returns the change in the number of set bits (<= 0). */
  clearRange(start: number, end: number): number {
    return this.#applyRange(start, end, false);
  }

  /** The first set granule `>= from`, or -1. */
  nextSet(from: number): number {
    let w = from >>> 5;
    if (w >= this.words.length) return -1;
    const masked = this.words[w]! & bitsFrom(from & 31);
    if (masked !== 0) return w * WORD_BITS + lowestBit(masked);
    w = this.#nonZero.next(w + 1);
    return w < 0 ? -1 : w * WORD_BITS + lowestBit(this.words[w]!);
  }

  /** The first clear granule `>= from` (padding bits count as clear), or -1. */
  nextClear(from: number): number {
    let w = from >>> 5;
    if (w >= this.words.length) return -1;
    const masked = ~this.words[w]! & bitsFrom(from & 31);
    if (masked !== 0) return w * WORD_BITS + lowestBit(masked);
    w = this.#nonFull.next(w + 1);
    return w < 0 ? -1 : w * WORD_BITS + lowestBit(~this.words[w]!);
  }

  /** Replaces the bits of word `w` selected by `mask` with those of `value`; returns the delta. */
  writeWord(w: number, mask: number, value: number): number {
    const old = this.words[w]! | 0;
    return this.#store(w, old, (old & ~mask) | (value & mask));
  }

  /** ORs `src` (a page of the same shape) into this page; returns the delta. */
  orPage(src: LeafPage): number {
    let delta = 0;
    for (let w = src.#nonZero.next(0); w >= 0; w = src.#nonZero.next(w + 1)) {
      const old = this.words[w]! | 0;
      delta += this.#store(w, old, old | src.words[w]!);
    }
    return delta;
  }

  /** Clears in this page every bit set in `src` (a page of the same shape); returns the delta. */
  andNotPage(src: LeafPage): number {
    let delta = 0;
    for (let w = src.#nonZero.next(0); w >= 0; w = src.#nonZero.next(w + 1)) {
      const old = this.words[w]! | 0;
      delta += this.#store(w, old, old & ~src.words[w]!);
    }
    return delta;
  }

  /** An independent copy. */
  clone(): LeafPage {
    const copy = new LeafPage(this.words.length);
    copy.words.set(this.words);
    copy.count = this.count;
    for (let w = this.#nonZero.next(0); w >= 0; w = this.#nonZero.next(w + 1)) {
      copy.#nonZero.add(w);
      if ((this.words[w]! | 0) === FULL_WORD) copy.#nonFull.delete(w);
    }
    return copy;
  }

  #applyRange(start: number, end: number, set: boolean): number {
    if (start >= end) return 0;
    const first = start >>> 5;
    const last = (end - 1) >>> 5;
    let delta = 0;
    for (let w = first; w <= last; w++) {
      const lo = w === first ? start & 31 : 0;
      const hi = w === last ? (end - 1) & 31 : 31;
      const mask = bitRange(lo, hi);
      const old = this.words[w]! | 0;
      delta += this.#store(w, old, set ? old | mask : old & ~mask);
    }
    return delta;
  }

  /** Writes word `w` (old value `old`, int32) as `now`, keeping the count and summaries. */
  #store(w: number, old: number, now: number): number {
    now |= 0;
    if (now === old) return 0;
    this.words[w] = now;
    if (old === 0) this.#nonZero.add(w);
    else if (now === 0) this.#nonZero.delete(w);
    if (old === FULL_WORD) this.#nonFull.add(w);
    else if (now === FULL_WORD) this.#nonFull.delete(w);
    const delta = popcount(now) - popcount(old);
    this.count += delta;
    return delta;
  }
}
