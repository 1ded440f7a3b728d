/**
 * Byte ranges in flight that other requests wait for (QEMU's block/reqlist.c): block-copy's
 * tasks (a write to a cluster being copied waits for the copy), and the snapshot reads of a
 * copy-before-write filter (a write waits until no snapshot reader reads the old data of its
 * clusters from the source).
 *
 * JavaScript runs one piece of code at a time, so the checks and changes of one synchronous
 * stretch are what QEMU's `CoMutex` sections are; only the waits yield.
 */

/** One range in flight; made by {@link RequestList.add}. */
export interface RangeRequest {
  readonly offset: number;
  /** Bytes; may shrink (see {@link RequestList.shrink}). */
  readonly length: number;
}

interface Entry extends RangeRequest {
  length: number;
  waiters: Array<() => void>;
}

/** See the module comment. */
export class RequestList {
  readonly #entries = new Set<Entry>();

  /** How many requests are in flight. */
  get size(): number {
    return this.#entries.size;
  }

  /** Registers `[offset, offset + length)` as in flight. */
  add(offset: number, length: number): RangeRequest {
    const entry: Entry = { offset, length, waiters: [] };
    this.#entries.add(entry);
    return entry;
  }

  /** Ends a request and wakes those waiting for it. */
  remove(request: RangeRequest): void {
    const entry = request as Entry;
    this.#entries.delete(entry);
    this.#wake(entry);
  }

  /** Gives back the tail of a request (`0 < length <=` its length) and wakes those waiting for it. */
  shrink(request: RangeRequest, length: number): void {
    const entry = request as Entry;
    entry.length = length;
    this.#wake(entry);
  }

  /** The first request in flight that overlaps `[offset, offset + length)`, if any. */
  findConflict(offset: number, length: number): RangeRequest | undefined {
    for (const entry of this.#entries) {
      if (entry.offset < offset + length && offset < entry.offset + entry.length) return entry;
    }
    return undefined;
  }

  /**
   * Waits until one overlapping request has ended or shrunk; resolves `false` at once (without
   * yielding to other code first) when none overlaps, `true` after a wait.
   */
  waitOne(offset: number, length: number): Promise<boolean> | false {
    const conflict = this.findConflict(offset, length) as Entry | undefined;
    if (conflict === undefined) return false;
    return new Promise<boolean>((resolve) => conflict.waiters.push(() => resolve(true)));
  }

  /** Waits until no request in flight overlaps `[offset, offset + length)`. */
  async waitAll(offset: number, length: number): Promise<void> {
    for (;;) {
      const waited = this.waitOne(offset, length);
      if (waited === false) return;
      await waited;
    }
  }

  #wake(entry: Entry): void {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const wake of waiters) wake();
  }
}
