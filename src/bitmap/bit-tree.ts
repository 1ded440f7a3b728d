/**
 * A fixed-size set of small integers with a summary hierarchy, in the manner of QEMU's HBitmap:
 * level 0 holds one bit per member; in each level above, bit `i` says "word `i` of the level
 * below is not zero". Finding the next member after any position costs a few word reads per
 * level (at most 32^levels positions are covered), never a scan word by word.
 *
 * Used for the page index of a bitmap and for the word index inside each leaf page.
 */
import { bitsFrom, lowestBit, WORD_BITS } from './bits.js';

/** A set of integers `0 .. length - 1` with "any member below" summaries; see the file comment. */
export class BitTree {
  /** Number of members the set can hold: indices `0 .. length - 1`. */
  readonly length: number;
  /** `#levels[0]` are the members; `#levels[k + 1]` summarizes the words of `#levels[k]`. */
  readonly #levels: Uint32Array[];

  /**
   * @param length - capacity in bits (a non-negative integer below 2^32)
   * @param filled - start with every index `0 .. length - 1` a member
   */
  constructor(length: number, filled = false) {
    this.length = length;
    const levels: Uint32Array[] = [];
    let words = Math.max(1, Math.ceil(length / WORD_BITS));
    for (;;) {
      levels.push(new Uint32Array(words));
      if (words === 1) break;
      words = Math.ceil(words / WORD_BITS);
    }
    this.#levels = levels;
    if (filled) this.fill();
  }

  /** True when `i` is a member. */
  has(i: number): boolean {
    return (this.#levels[0]![Math.floor(i / WORD_BITS)]! & (1 << i % WORD_BITS)) !== 0;
  }

  /** Adds `i` (0 <= i < length). */
  add(i: number): void {
    for (const words of this.#levels) {
      const w = Math.floor(i / WORD_BITS);
      const old = words[w]!;
      words[w] = old | (1 << i % WORD_BITS);
      // The levels above already know that this word is not zero.
      if (old !== 0) return;
      i = w;
    }
  }

  /** Removes `i` (0 <= i < length). */
  delete(i: number): void {
    for (const words of this.#levels) {
      const w = Math.floor(i / WORD_BITS);
      const now = words[w]! & ~(1 << i % WORD_BITS);
      words[w] = now;
      // Only a word that became zero changes the level above.
      if (now !== 0) return;
      i = w;
    }
  }

  /** Adds or removes `i` so that membership equals `member`. */
  assign(i: number, member: boolean): void {
    if (member) this.add(i);
    else this.delete(i);
  }

  /** The smallest member `>= from`, or -1 when there is none. */
  next(from: number): number {
    if (from >= this.length) return -1;
    const levels = this.#levels;
    let level = 0;
    let i = from;
    // Climb until some word at this level has a set bit at or after position i.
    for (;;) {
      const words = levels[level]!;
      const w = Math.floor(i / WORD_BITS);
      if (w >= words.length) return -1;
      const masked = words[w]! & bitsFrom(i % WORD_BITS);
      if (masked !== 0) {
        i = w * WORD_BITS + lowestBit(masked);
        break;
      }
      level += 1;
      if (level === levels.length) return -1;
      i = w + 1;
    }
    // Descend along the lowest set bits.
    while (level > 0) {
      level -= 1;
      i = i * WORD_BITS + lowestBit(levels[level]![i]!);
    }
    return i;
  }

  /** Makes every index `0 .. length - 1` a member. */
  fill(): void {
    let bits = this.length;
    for (const words of this.#levels) {
      words.fill(0);
      const whole = Math.floor(bits / WORD_BITS);
      words.fill(0xffffffff, 0, whole);
      if (bits % WORD_BITS !== 0) words[whole] = (1 << bits % WORD_BITS) - 1;
      bits = Math.ceil(bits / WORD_BITS);
    }
  }

  /** Removes every member. */
  clear(): void {
    for (const words of this.#levels) words.fill(0);
  }

  /** An independent copy. */
  clone(): BitTree {
    const copy = new BitTree(this.length);
    this.#levels.forEach((words, k) => copy.#levels[k]!.set(words));
    return copy;
  }
}
