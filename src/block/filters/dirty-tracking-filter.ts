/**
 * A filter that records every write, zero-write and trim into dirty bitmaps — what QEMU's block
 * layer does for the enabled bitmaps of a node (block/io.c, `bdrv_co_write_req_finish`).
 *
 * As in QEMU, the bits are set when the request finishes, whether it succeeded or not: a failed
 * write may have changed part of the range, so it is marked dirty (conservative, never loses a
 * change). Bitmaps decide themselves whether they record (enabled, frozen with a successor): the
 * filter calls `recordWrite` on each.
 */
import { type BlockDevice, type WriteOptions, type WriteZeroesOptions } from '../block-device.js';
import { BlockFilter, type FilterOptions } from './filter.js';

/** What the filter needs of a bitmap (a `DirtyBitmap` satisfies it). */
export interface WriteRecorder {
  /** Records a write of `length` bytes at `offset` (bytes). */
  recordWrite(offset: number, length: number): void;
}

/** Error codes with which a request is refused before it can change anything. */
const UNCHANGED = new Set(['OUT_OF_RANGE', 'INVALID_ARGUMENT', 'READ_ONLY', 'CLOSED']);

/**
 * Wraps a device; writes, zero-writes and trims through it are recorded into the attached
 * bitmaps. Reads, flush and block status pass through. `close()` closes the inner device unless
 * `closeInner: false`.
 */
export class DirtyTrackingFilter extends BlockFilter {
  readonly #recorders = new Set<WriteRecorder>();

  /**
   * @param inner - the device written to
   * @param recorders - bitmaps attached from the start; more can be attached with `attach`
   */
  constructor(inner: BlockDevice, recorders: Iterable<WriteRecorder> = [], options: FilterOptions = {}) {
    super(
      inner,
      { name: 'dirty tracking filter', size: inner.size, capabilities: inner.capabilities, blockSize: inner.blockSize },
      options,
    );
    for (const r of recorders) this.#recorders.add(r);
  }

  /** Starts recording writes into `recorder` (no effect if already attached). */
  attach(recorder: WriteRecorder): void {
    this.#recorders.add(recorder);
  }

  /** Stops recording into `recorder`. */
  detach(recorder: WriteRecorder): void {
    this.#recorders.delete(recorder);
  }

  protected override doWrite(_action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    return this.#tracked(offset, data.length, () => this.inner.write(offset, data, options));
  }

  protected override doWriteZeroes(_action: string, offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    return this.#tracked(offset, length, () => this.inner.writeZeroes(offset, length, options));
  }

  protected override doTrim(_action: string, offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.#tracked(offset, length, () => this.inner.trim(offset, length, options));
  }

  async #tracked(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    let record = true;
    try {
      await op();
    } catch (e) {
      // Refused before reaching the data: nothing changed. Anything else may have written part.
      record = !UNCHANGED.has((e as { code?: string })?.code ?? '');
      throw e;
    } finally {
      if (record && length > 0) {
        for (const r of this.#recorders) r.recordWrite(offset, length);
      }
    }
  }
}
