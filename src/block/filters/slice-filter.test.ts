import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ExtentFlags } from '../block-device.js';
import { MemoryBlockDevice } from '../memory-device.js';
import { testBlockDevice } from '../testing/conformance.js';
import { SliceFilter } from './slice-filter.js';

const C = 64 * 1024;
/** The window starts off any 4 KiB or 64 KiB boundary, with a margin after it. */
const BEFORE = C + 511;
const AFTER = 3 * C + 7;
const OUTSIDE = 0xc3;

testBlockDevice('SliceFilter over a MemoryBlockDevice', async (size) => {
  const inner = new MemoryBlockDevice(BEFORE + size + AFTER);
  await inner.write(0, new Uint8Array(BEFORE).fill(OUTSIDE));
  await inner.write(BEFORE + size, new Uint8Array(AFTER).fill(OUTSIDE));
  return {
    device: new SliceFilter(inner, BEFORE, size, { closeInner: false }),
    // Whatever the test did through the slice, the bytes around it are untouched.
    async cleanup() {
      const before = await inner.read(0, BEFORE);
      const after = await inner.read(BEFORE + size, AFTER);
      await inner.close();
      assert.ok(before.every((b) => b === OUTSIDE), 'bytes before the slice are unchanged');
      assert.ok(after.every((b) => b === OUTSIDE), 'bytes after the slice are unchanged');
    },
  };
});

describe('SliceFilter specifics', () => {
  test('the constructor rejects a window that does not fit the inner device', () => {
    const inner = new MemoryBlockDevice(1000);
    assert.throws(() => new SliceFilter(inner, 1, 1000), { code: 'OUT_OF_RANGE' });
    assert.throws(() => new SliceFilter(inner, -1, 10), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new SliceFilter(inner, 0, 2.5), { code: 'INVALID_ARGUMENT' });
    assert.equal(new SliceFilter(inner, 1000, 0).size, 0);
  });

  test('byte x of the slice is byte offset + x of the inner device', async () => {
    const inner = new MemoryBlockDevice(10000);
    const slice = new SliceFilter(inner, 1234, 5000);
    await slice.write(10, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await inner.read(1244, 3), new Uint8Array([1, 2, 3]));
    await inner.write(1234 + 4999, new Uint8Array([9]));
    assert.deepEqual(await slice.read(4999, 1), new Uint8Array([9]));
    await assert.rejects(slice.read(4999, 2), { code: 'OUT_OF_RANGE' });
  });

  test('blockStatus extents are translated into the slice', async () => {
    const inner = new MemoryBlockDevice(4 * C);
    await inner.write(2 * C, new Uint8Array([1]));
    const slice = new SliceFilter(inner, C + 100, 2 * C);
    const HZ = ExtentFlags.HOLE | ExtentFlags.ZERO;
    assert.deepEqual(await slice.blockStatus(0, 2 * C), [
      { offset: 0, length: C - 100, flags: HZ },
      { offset: C - 100, length: C, flags: 0 },
      { offset: 2 * C - 100, length: 100, flags: HZ },
    ]);
  });
});
