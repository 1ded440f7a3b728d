/**
 * A read-only view of a device, as nbdkit's `--readonly` or QEMU's `read-only=on`.
 */
import { ReadOnlyError } from '../../errors.js';
import { type BlockDevice } from '../block-device.js';
import { BlockFilter, type FilterOptions } from './filter.js';

/**
 * Passes reads, `flush` and `blockStatus` through to the wrapped device and rejects `write`,
 * `writeZeroes` and `trim` with `ReadOnlyError` (after checking the range, so a range past the
 * end still rejects with `OutOfRangeError`); nothing reaches the inner device then.
 *
 * Capabilities are the inner device's with `readOnly` true and `canTrim`, `trimZeroes` and
 * `canFastZero` false. `close()` closes the inner device unless `closeInner: false`.
 */
export class ReadOnlyFilter extends BlockFilter {
  constructor(inner: BlockDevice, options: FilterOptions = {}) {
    super(
      inner,
      {
        name: 'read-only filter',
        size: inner.size,
        capabilities: { ...inner.capabilities, readOnly: true, canTrim: false, trimZeroes: false, canFastZero: false },
        blockSize: inner.blockSize,
      },
      options,
    );
  }

  protected override async doWrite(action: string): Promise<void> {
    throw new ReadOnlyError(action, 'the device is read-only');
  }

  protected override async doWriteZeroes(action: string): Promise<void> {
    throw new ReadOnlyError(action, 'the device is read-only');
  }

  protected override async doTrim(action: string): Promise<void> {
    throw new ReadOnlyError(action, 'the device is read-only');
  }
}
