/**
 * The blkdebug events a format node fires on its `file` child in QEMU 7.2, for a format driver
 * that reads its child through the graph (`raw`): `read_aio` before each read
 * (block/raw-format.c `raw_co_preadv`), `write_aio` before each write (`raw_co_pwritev`; not
 * for zero-writes or discards), and on a flush of the format node (block/io.c `bdrv_co_flush`)
 * `flush_to_os`, then `flush_to_disk` only when something was written through the format node
 * since its last successful flush. Events reach the child only when it is a blkdebug node.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { fireBlkdebugEvent } from './blkdebug-device.js';

/**
 * Wraps a format node's edge to its `file` child and fires the events above on it; every request
 * is passed on unchanged. `close` does nothing (the child belongs to the graph).
 */
export class FormatDebugEvents implements BlockDevice {
  readonly #file: BlockDevice;
  readonly #readOnly: () => boolean;
  #writeGen = 0;
  #flushedGen = 0;
  #flushQueue: Promise<void> = Promise.resolve();

  /**
   * @param file - the format node's edge to its `file` child
   * @param readOnly - whether the format node is read-only now (QEMU does not flush those)
   */
  constructor(file: BlockDevice, readOnly: () => boolean = () => false) {
    this.#file = file;
    this.#readOnly = readOnly;
  }

  get size(): number {
    return this.#file.size;
  }

  get capabilities(): BlockCapabilities {
    return this.#file.capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    return this.#file.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    fireBlkdebugEvent(this.#file, 'read_aio');
    return this.#file.read(offset, length);
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    fireBlkdebugEvent(this.#file, 'write_aio');
    try {
      await this.#file.write(offset, data, options);
    } finally {
      this.#writeGen++;
    }
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    try {
      await this.#file.writeZeroes(offset, length, options);
    } finally {
      this.#writeGen++;
    }
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    try {
      await this.#file.trim(offset, length, options);
    } finally {
      this.#writeGen++;
    }
  }

  flush(): Promise<void> {
    const run = this.#flushQueue.then(() => this.#flushOnce());
    this.#flushQueue = run.catch(() => undefined);
    return run;
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#file.blockStatus(offset, length);
  }

  async close(): Promise<void> {}

  async #flushOnce(): Promise<void> {
    if (this.#readOnly()) return;
    const gen = this.#writeGen;
    fireBlkdebugEvent(this.#file, 'flush_to_os');
    if (this.#flushedGen !== gen) fireBlkdebugEvent(this.#file, 'flush_to_disk');
    await this.#file.flush();
    this.#flushedGen = gen;
  }
}
