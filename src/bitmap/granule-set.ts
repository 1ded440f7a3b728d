/**
 * The storage of a dirty bitmap: one bit per granule, indexed by granule number.
 *
 * Granules are grouped in pages of `2^pageShift` granules (32 Ki by default). A page that is
 * all clean costs nothing (no allocation) and a page that is all dirty is a shared marker, so a
 * huge, mostly clean bitmap is small in memory and dirtying a whole disk is cheap. Other pages
 * are {@link LeafPage}s. Two {@link BitTree}s over the page numbers say which pages have a set
 * bit and which have a clear one, so `nextSet` and `nextClear` cost O(levels), whatever the size.
 *
 * Internal to `src/bitmap/`: callers validate ranges before calling (end <= length, start <= end).
 */
import { BitTree } from './bit-tree.js';
import { WORD_BITS } from './bits.js';
import { LeafPage } from './leaf-page.js';

/** log2 of the granules per page used by bitmaps: 32 Ki granules, 4 KiB of leaf words. */
export const DEFAULT_PAGE_SHIFT = 15;

/** Marks a page whose granules are all set; never allocated per page, never mutated. */
const FULL = Symbol('full page');

/** What a page slot holds: nothing (all clean), the full marker, or leaf words. */
type Slot = LeafPage | typeof FULL | undefined;

/** One bit per granule, paged and lazily allocated; see the file comment. */
export class GranuleSet {
  /** Number of granules. */
  readonly length: number;
  /** Granules per page. */
  readonly pageBits: number;
  readonly #pageWords: number;
  #pages: Slot[];
  /** Pages with at least one set granule. */
  #dirtyPages: BitTree;
  /** Pages with at least one clear granule. */
  #cleanPages: BitTree;
  #count = 0;

  /**
   * @param length - number of granules (a non-negative integer, at most 2^32)
   * @param pageShift - log2 of granules per page, 5..15 (small values are for tests)
   */
  constructor(length: number, pageShift = DEFAULT_PAGE_SHIFT) {
    this.length = length;
    this.pageBits = 2 ** pageShift;
    this.#pageWords = this.pageBits / WORD_BITS;
    const pages = Math.ceil(length / this.pageBits);
    this.#pages = new Array<Slot>(pages).fill(undefined);
    this.#dirtyPages = new BitTree(pages);
    this.#cleanPages = new BitTree(pages, true);
  }

  /** Number of set granules. */
  get count(): number {
    return this.#count;
  }

  /** True when granule `g` (0 <= g < length) is set. */
  get(g: number): boolean {
    const p = Math.floor(g / this.pageBits);
    const slot = this.#pages[p];
    if (slot === undefined) return false;
    if (slot === FULL) return true;
    return slot.get(g - p * this.pageBits);
  }

  /** Sets granules `[start, end)`. */
  setRange(start: number, end: number): void {
    this.#applyRange(start, end, true);
  }

  /** Clears granules `[start, end)`. */
  clearRange(start: number, end: number): void {
    this.#applyRange(start, end, false);
  }

  /** The first set granule `>= from`, or -1 when there is none. */
  nextSet(from: number): number {
    if (from >= this.length) return -1;
    let p = Math.floor(from / this.pageBits);
    const slot = this.#pages[p];
    if (slot === FULL) return from;
    if (slot !== undefined) {
      const i = slot.nextSet(from - p * this.pageBits);
      if (i >= 0) return p * this.pageBits + i;
    }
    p = this.#dirtyPages.next(p + 1);
    if (p < 0) return -1;
    const next = this.#pages[p]!;
    return p * this.pageBits + (next === FULL ? 0 : next.nextSet(0));
  }

  /** The first clear granule `>= from`, or -1 when there is none before `length`. */
  nextClear(from: number): number {
    if (from >= this.length) return -1;
    let p = Math.floor(from / this.pageBits);
    const slot = this.#pages[p];
    if (slot === undefined) return from;
    if (slot !== FULL) {
      const i = slot.nextClear(from - p * this.pageBits);
      if (i >= 0) return this.#clearResult(p * this.pageBits + i);
    }
    p = this.#cleanPages.next(p + 1);
    if (p < 0) return -1;
    const next = this.#pages[p];
    if (next === undefined) return p * this.pageBits;
    // A page in #cleanPages is never FULL.
    return this.#clearResult(p * this.pageBits + (next as LeafPage).nextClear(0));
  }

  /**
   * The 32 granules `32w .. 32w + 31` as an unsigned word, bit `b` = granule `32w + b`.
   * Bits past `length` are 0.
   */
  word(w: number): number {
    const p = Math.floor(w / this.#pageWords);
    const slot = this.#pages[p];
    if (slot === undefined) return 0;
    if (slot !== FULL) return slot.words[w - p * this.#pageWords] ?? 0;
    const valid = Math.min(WORD_BITS, this.length - w * WORD_BITS);
    if (valid <= 0) return 0;
    return valid === WORD_BITS ? 0xffffffff : 2 ** valid - 1;
  }

  /**
   * Replaces the bits of word `w` selected by `mask` with those of `value` (bit `b` = granule
   * `32w + b`). Bits past `length` are ignored.
   */
  writeWord(w: number, mask: number, value: number): void {
    const first = w * WORD_BITS;
    if (first >= this.length) return;
    const valid = this.length - first;
    mask |= 0;
    if (valid < WORD_BITS) mask &= 2 ** valid - 1;
    const p = Math.floor(w / this.#pageWords);
    const slot = this.#pages[p];
    if ((mask & value) === mask && slot === FULL) return;
    if ((mask & value) === 0 && slot === undefined) return;
    const page = this.#leafPage(p);
    this.#count += page.writeWord(w - p * this.#pageWords, mask, value);
    this.#settle(p, page);
  }

  /** Clears every granule. */
  clear(): void {
    this.#pages.fill(undefined);
    this.#dirtyPages.clear();
    this.#cleanPages.fill();
    this.#count = 0;
  }

  /** ORs `other` (same length and page size) into this set. */
  orFrom(other: GranuleSet): void {
    for (let p = other.#dirtyPages.next(0); p >= 0; p = other.#dirtyPages.next(p + 1)) {
      const src = other.#pages[p]!;
      const dst = this.#pages[p];
      if (dst === FULL) continue;
      if (src === FULL) this.#setSlot(p, FULL);
      else if (dst === undefined) this.#setSlot(p, src.clone());
      else {
        this.#count += dst.orPage(src);
        this.#settle(p, dst);
      }
    }
  }

  /** Clears every granule that is set in `other` (same length and page size). */
  andNotFrom(other: GranuleSet): void {
    for (let p = other.#dirtyPages.next(0); p >= 0; p = other.#dirtyPages.next(p + 1)) {
      const src = other.#pages[p]!;
      if (this.#pages[p] === undefined) continue;
      if (src === FULL) this.#setSlot(p, undefined);
      else {
        const dst = this.#leafPage(p);
        this.#count += dst.andNotPage(src);
        this.#settle(p, dst);
      }
    }
  }

  /** An independent copy. */
  clone(): GranuleSet {
    const copy = new GranuleSet(this.length, Math.log2(this.pageBits));
    copy.#pages = this.#pages.map((slot) => (slot instanceof LeafPage ? slot.clone() : slot));
    copy.#dirtyPages = this.#dirtyPages.clone();
    copy.#cleanPages = this.#cleanPages.clone();
    copy.#count = this.#count;
    return copy;
  }

  /** Moves the contents of `other` (same length and page size) into this set; `other` ends up empty. */
  take(other: GranuleSet): void {
    this.#pages = other.#pages;
    this.#dirtyPages = other.#dirtyPages;
    this.#cleanPages = other.#cleanPages;
    this.#count = other.#count;
    const pages = this.#pages.length;
    other.#pages = new Array<Slot>(pages).fill(undefined);
    other.#dirtyPages = new BitTree(pages);
    other.#cleanPages = new BitTree(pages, true);
    other.#count = 0;
  }

  /** Number of leaf pages allocated (neither all clean nor all dirty); for tests and diagnostics. */
  get allocatedPages(): number {
    let n = 0;
    for (const slot of this.#pages) if (slot instanceof LeafPage) n++;
    return n;
  }

  #pageLength(p: number): number {
    return Math.min(this.pageBits, this.length - p * this.pageBits);
  }

  /** A granule found clear in a page: padding past `length` does not count. */
  #clearResult(g: number): number {
    return g < this.length ? g : -1;
  }

  #applyRange(start: number, end: number, set: boolean): void {
    if (start >= end) return;
    const firstPage = Math.floor(start / this.pageBits);
    const lastPage = Math.floor((end - 1) / this.pageBits);
    for (let p = firstPage; p <= lastPage; p++) {
      const base = p * this.pageBits;
      const length = this.#pageLength(p);
      const from = Math.max(start, base) - base;
      const to = Math.min(end, base + length) - base;
      const slot = this.#pages[p];
      if (from === 0 && to === length) {
        this.#setSlot(p, set ? FULL : undefined);
      } else if (slot !== (set ? FULL : undefined)) {
        const page = this.#leafPage(p);
        this.#count += set ? page.setRange(from, to) : page.clearRange(from, to);
        this.#settle(p, page);
      }
    }
  }

  /** The leaf page of page `p`, allocated (from the clean or full state) if needed. */
  #leafPage(p: number): LeafPage {
    const slot = this.#pages[p];
    if (slot instanceof LeafPage) return slot;
    // The last page gets only the words it needs, so that small bitmaps stay small.
    const length = this.#pageLength(p);
    const words = Math.ceil(length / WORD_BITS);
    const page = slot === FULL ? LeafPage.filled(words, length) : new LeafPage(words);
    this.#pages[p] = page;
    return page;
  }

  /** After `page` (now the slot of `p`) changed: collapse it if uniform and update the page index. */
  #settle(p: number, page: LeafPage): void {
    const length = this.#pageLength(p);
    if (page.count === 0) this.#pages[p] = undefined;
    else if (page.count === length) this.#pages[p] = FULL;
    this.#dirtyPages.assign(p, page.count > 0);
    this.#cleanPages.assign(p, page.count < length);
  }

  /** Replaces the slot of page `p` with a uniform state or a page, keeping the count and index. */
  #setSlot(p: number, slot: Slot): void {
    const length = this.#pageLength(p);
    this.#count += slotCount(slot, length) - slotCount(this.#pages[p], length);
    this.#pages[p] = slot;
    if (slot instanceof LeafPage) {
      this.#settle(p, slot);
      return;
    }
    this.#dirtyPages.assign(p, slot === FULL);
    this.#cleanPages.assign(p, slot === undefined);
  }
}

function slotCount(slot: Slot, length: number): number {
  if (slot === undefined) return 0;
  if (slot === FULL) return length;
  return slot.count;
}
