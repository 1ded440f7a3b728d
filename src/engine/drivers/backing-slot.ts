/**
 * The backing of a qcow2 node that can be set after the node opened (`blockdev-add ... backing:
 * null`, then `blockdev-snapshot` makes another node its backing). Reads come from the current
 * backing node, zero past its end or when there is none; the slot is never written.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints } from '../../block/block-device.js';
import { ExtentFlags } from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { ReadOnlyError } from '../../errors.js';

/** See the module comment. */
export class BackingSlot implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities = {
    readOnly: true,
    canFlush: false,
    canFua: false,
    canTrim: false,
    trimZeroes: false,
    canFastZero: false,
    canBlockStatus: true,
    multiConn: true,
  };
  readonly blockSize: BlockSizeConstraints = { minimum: 1, preferred: 65536, maximum: 1 << 30 };
  #target: BlockDevice | undefined;

  /** @param size - the overlay's size */
  constructor(size: number) {
    this.size = size;
  }

  /** The backing now, if any. */
  get target(): BlockDevice | undefined {
    return this.#target;
  }

  /** Sets (or clears) the backing. */
  set(target: BlockDevice | undefined): void {
    this.#target = target;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange('read backing', this.size, offset, length);
    const target = this.#target;
    const inside = target === undefined ? 0 : Math.max(0, Math.min(length, target.size - offset));
    if (inside === length && target !== undefined) return target.read(offset, length);
    const out = new Uint8Array(length);
    if (inside > 0 && target !== undefined) out.set(await target.read(offset, inside), 0);
    return out;
  }

  async write(): Promise<void> {
    throw new ReadOnlyError('write to a backing file', 'a backing file is only read');
  }

  async writeZeroes(): Promise<void> {
    throw new ReadOnlyError('write to a backing file', 'a backing file is only read');
  }

  async trim(): Promise<void> {}

  async flush(): Promise<void> {}

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    checkRange('block status of backing', this.size, offset, length);
    const target = this.#target;
    if (target === undefined || offset >= target.size) return [{ offset, length, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 0 }];
    const extents = await target.blockStatus(offset, Math.min(length, target.size - offset));
    return extents;
  }

  async close(): Promise<void> {}
}
