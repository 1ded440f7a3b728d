/**
 * A window onto part of a device, as nbdkit's `offset` filter: byte `x` of the slice is byte
 * `offset + x` of the inner device.
 */
import { type BlockDevice, type BlockExtent, type WriteOptions, type WriteZeroesOptions } from '../block-device.js';
import { checkRange } from '../range.js';
import { BlockFilter, type FilterOptions } from './filter.js';

/**
 * Presents `length` bytes of `inner` starting at byte `offset` as a device of size `length`.
 * Requests are checked against the slice and translated; nothing outside the window is ever
 * read or written. Capabilities and block sizes are the inner device's (the block sizes are
 * only exact when `offset` is a multiple of the inner `blockSize.preferred`).
 * `close()` closes the inner device unless `closeInner: false`.
 */
export class SliceFilter extends BlockFilter {
  /** Start of the window in the inner device, in bytes. */
  readonly offset: number;

  /**
   * @throws InvalidArgumentError when `offset` or `length` is not a non-negative integer, and
   *   OutOfRangeError when the window ends past the inner device's size
   */
  constructor(inner: BlockDevice, offset: number, length: number, options: FilterOptions = {}) {
    checkRange('create slice filter', inner.size, offset, length);
    super(
      inner,
      { name: `slice ${offset}+${length}`, size: length, capabilities: inner.capabilities, blockSize: inner.blockSize },
      options,
    );
    this.offset = offset;
  }

  protected override doRead(action: string, offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(this.offset + offset, length);
  }

  protected override doWrite(action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    return this.inner.write(this.offset + offset, data, options);
  }

  protected override doWriteZeroes(
    action: string,
    offset: number,
    length: number,
    options: WriteZeroesOptions,
  ): Promise<void> {
    return this.inner.writeZeroes(this.offset + offset, length, options);
  }

  protected override doTrim(action: string, offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.inner.trim(this.offset + offset, length, options);
  }

  protected override async doBlockStatus(action: string, offset: number, length: number): Promise<BlockExtent[]> {
    const extents = await this.inner.blockStatus(this.offset + offset, length);
    return extents.map((extent) => ({ ...extent, offset: extent.offset - this.offset }));
  }
}
