/**
 * A filter that records every write, zero-write and trim into dirty bitmaps — what QEMU's block
 * layer does for the enabled bitmaps of a node (block/io.c, `bdrv_co_write_req_finish`).
 *
 * As in QEMU, the bits are set when the request finishes, whether it succeeded or not: a failed
 * write may have changed part of the range, so it is marked dirty (conservative, never loses a
 * change). Bitmaps decide themselves whether they record (enabled, frozen with a successor): the
 * filter calls `recordWrite` on each.
 */
import { type BlockDevice, type BlockExtent, type WriteOptions, type WriteZeroesOptions } from './block-device.js';

/** What the filter needs of a bitmap (a `DirtyBitmap` satisfies it). */
export interface WriteRecorder {
  /** Records a write of `length` bytes at `offset` (bytes). */
  recordWrite(offset: number, length: number): void;
}

/** Wraps a device; writes through it are recorded into the attached bitmaps. */
export class DirtyTrackingFilter implements BlockDevice {
  readonly #inner: BlockDevice;
  readonly #recorders = new Set<WriteRecorder>();

  /**
   * @param inner - the device written to; closed by `close()`
   * @param recorders - bitmaps attached from the start; more can be attached with `attach`
   */
  constructor(inner: BlockDevice, recorders: Iterable<WriteRecorder> = []) {
    this.#inner = inner;
    for (const r of recorders) this.#recorders.add(r);
  }

  get size(): number {
    return this.#inner.size;
  }
  get capabilities(): BlockDevice['capabilities'] {
    return this.#inner.capabilities;
  }
  get blockSize(): BlockDevice['blockSize'] {
    return this.#inner.blockSize;
  }

  /** Starts recording writes into `recorder` (no effect if already attached). */
  attach(recorder: WriteRecorder): void {
    this.#recorders.add(recorder);
  }

  /** Stops recording into `recorder`. */
  detach(recorder: WriteRecorder): void {
    this.#recorders.delete(recorder);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#inner.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.#tracked(offset, data.length, () => this.#inner.write(offset, data, options));
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return this.#tracked(offset, length, () => this.#inner.writeZeroes(offset, length, options));
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.#tracked(offset, length, () => this.#inner.trim(offset, length, options));
  }

  flush(): Promise<void> {
    return this.#inner.flush();
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#inner.blockStatus(offset, length);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  async #tracked(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    let validRange = false;
    try {
      await op();
      validRange = true;
    } catch (e) {
      // A request rejected for its range never reached the device: nothing to record (and the
      // range could not be recorded anyway). Anything else may have written part of the range.
      const code = (e as { code?: unknown })?.code;
      validRange = code !== 'OUT_OF_RANGE' && code !== 'INVALID_ARGUMENT' && code !== 'READ_ONLY' && code !== 'CLOSED';
      throw e;
    } finally {
      if (validRange && length > 0) {
        for (const r of this.#recorders) r.recordWrite(offset, length);
      }
    }
  }
}
