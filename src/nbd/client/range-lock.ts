/**
 * Exclusive locks on byte ranges, for servers whose minimum block size forces the client to
 * read-modify-write partial blocks: two writes that share a block (even without sharing a byte)
 * must not interleave their read and their write, or one would undo the other.
 */
export class RangeLock {
  readonly #held: Array<{ start: number; end: number; released: Promise<void> }> = [];

  /**
   * Waits until no held range overlaps `[start, end)`, then holds it. Resolves with the function
   * that releases it (call it exactly once). Waiters are not ordered: a lock is fair enough for
   * the few partial blocks that need it.
   */
  async acquire(start: number, end: number): Promise<() => void> {
    for (;;) {
      const blocker = this.#held.find((h) => h.start < end && start < h.end);
      if (blocker === undefined) break;
      await blocker.released;
    }
    let release!: () => void;
    const entry = { start, end, released: new Promise<void>((resolve) => (release = resolve)) };
    this.#held.push(entry);
    return () => {
      const i = this.#held.indexOf(entry);
      if (i >= 0) this.#held.splice(i, 1);
      release();
    };
  }
}
