/**
 * Write-behind for a file that a copy fills once: each written range starts its writeback at
 * once, and once more than a window of bytes waits, the oldest ranges are waited for and dropped
 * from the page cache. This is how nbdcopy writes files (sync_file_range, then
 * POSIX_FADV_DONTNEED). Two gains: the final fdatasync finds almost nothing left to write, and
 * the copy reuses a few MiB of page cache instead of filling gigabytes of it, which costs a page
 * fault per page on a fresh VM and evicts what other programs cache.
 *
 * Needs the native addon (sync_file_range and posix_fadvise are not in Node.js); without it
 * {@link WriteBehind.create} returns undefined and writes go to the page cache as usual.
 */
import { type NativeAddon, nativeAddon } from './native.js';

/** Bytes of written data allowed to wait for writeback before a write waits for the oldest. */
export const WRITE_BEHIND_WINDOW = 16 * 1024 * 1024;

/** Write-behind state of one open file; see the module comment. */
export class WriteBehind {
  readonly #writeBack: NativeAddon['writeBack'];
  readonly #fd: number;
  readonly #window: number;
  /** Ranges whose writeback was started, oldest first. */
  readonly #ranges: Array<{ offset: number; length: number } | undefined> = [];
  #head = 0;
  #pending = 0;
  #failure: unknown;

  private constructor(writeBack: NativeAddon['writeBack'], fd: number, window: number) {
    this.#writeBack = writeBack;
    this.#fd = fd;
    this.#window = window;
  }

  /**
   * Write-behind for the open file `fd` (which must stay open while calls are in flight), with
   * at most `window` bytes waiting; undefined when the native addon (or its `writeBack`) is
   * missing. `addon` is for tests.
   */
  static create(fd: number, window = WRITE_BEHIND_WINDOW, addon: Pick<NativeAddon, 'writeBack'> | undefined = nativeAddon()): WriteBehind | undefined {
    if (addon === undefined || typeof addon.writeBack !== 'function') return undefined;
    return new WriteBehind(addon.writeBack.bind(addon), fd, window);
  }

  /**
   * Writes `data` at `offset` (borrowed until the promise settles), starts its writeback and,
   * past the window, waits for the oldest ranges to be written back and drops them from the page
   * cache; all in one trip to the thread pool. Resolves when that is done (the wait is the copy's
   * backpressure). Rejects with the system error (an Error with an errno `code`); a failed
   * writeback sticks (see {@link failure}).
   */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run(data, offset, data.length);
  }

  /** Like {@link write}, for `[offset, offset + length)` written by other means. */
  written(offset: number, length: number): Promise<void> {
    return this.#run(null, offset, length);
  }

  async #run(data: Uint8Array | null, offset: number, length: number): Promise<void> {
    if (length === 0) return;
    this.#ranges.push({ offset, length });
    this.#pending += length;
    let evictOffset = 0;
    let evictLength = 0;
    if (this.#pending > this.#window) {
      // The oldest range, merged with the ranges that continue it while over the window.
      const first = this.#take();
      evictOffset = first.offset;
      evictLength = first.length;
      while (this.#pending > this.#window && this.#ranges[this.#head]?.offset === evictOffset + evictLength) {
        evictLength += this.#take().length;
      }
    }
    try {
      await this.#writeBack(this.#fd, data, offset, length, evictOffset, evictLength);
    } catch (e) {
      // A failed writeback (sync_file_range) loses data written earlier, and fdatasync may not
      // report it again: it sticks. A failed pwrite is only this write's failure.
      if ((e as NodeJS.ErrnoException).syscall === 'sync_file_range') this.#failure ??= e;
      throw e;
    }
  }

  /** The first writeback failure, if any: a flush must fail with it, since the data may not be on disk. */
  get failure(): unknown {
    return this.#failure;
  }

  #take(): { offset: number; length: number } {
    const range = this.#ranges[this.#head]!;
    this.#ranges[this.#head++] = undefined;
    this.#pending -= range.length;
    if (this.#head > 1024 && this.#head * 2 > this.#ranges.length) {
      this.#ranges.splice(0, this.#head);
      this.#head = 0;
    }
    return range;
  }
}
