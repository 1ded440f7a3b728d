import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap } from '../../bitmap/index.js';
import { DirtyTrackingFilter } from './dirty-tracking-filter.js';
import { MemoryBlockDevice } from '../memory-device.js';
import { FaultInjectionFilter } from './fault-injection-filter.js';
import { testBlockDevice } from '../testing/conformance.js';

const KiB = 1024;

testBlockDevice('DirtyTrackingFilter over memory', async (size) => ({
  device: new DirtyTrackingFilter(new MemoryBlockDevice(size), [new DirtyBitmap({ size, granularity: 4096 })]),
}));

test('writes, zero-writes and trims through the filter set the bits they touch', async () => {
  const size = 1024 * KiB;
  const bitmap = new DirtyBitmap({ size, granularity: 64 * KiB });
  const disk = new DirtyTrackingFilter(new MemoryBlockDevice(size), [bitmap]);
  await disk.write(65 * KiB, new Uint8Array(KiB).fill(1));
  await disk.writeZeroes(200 * KiB, 100 * KiB);
  await disk.trim(1000 * KiB, 24 * KiB);
  await disk.read(500 * KiB, 64 * KiB);
  await disk.flush();
  assert.deepEqual([...bitmap.dirtyExtents()], [
    { offset: 64 * KiB, length: 64 * KiB },
    { offset: 192 * KiB, length: 128 * KiB },
    { offset: 960 * KiB, length: 64 * KiB },
  ]);
});

test('a disabled bitmap records nothing; a frozen one sends writes to its successor', async () => {
  const size = 256 * KiB;
  const disabled = new DirtyBitmap({ size, granularity: 4096, enabled: false });
  const frozen = new DirtyBitmap({ size, granularity: 4096 });
  const disk = new DirtyTrackingFilter(new MemoryBlockDevice(size), [disabled, frozen]);
  await disk.write(0, new Uint8Array(10));
  const successor = frozen.createSuccessor();
  await disk.write(8192, new Uint8Array(10));
  assert.equal(disabled.count(), 0);
  assert.deepEqual([...frozen.dirtyExtents()], [{ offset: 0, length: 4096 }]);
  assert.deepEqual([...successor.dirtyExtents()], [{ offset: 8192, length: 4096 }]);
  frozen.reclaim();
  assert.equal(frozen.count(), 8192);
});

test('a write that fails in the device still marks its range dirty (it may have landed in part)', async () => {
  const size = 256 * KiB;
  const bitmap = new DirtyBitmap({ size, granularity: 4096 });
  const faulty = new FaultInjectionFilter(new MemoryBlockDevice(size), [{ operations: ['write'], errno: 'EIO' }]);
  const disk = new DirtyTrackingFilter(faulty, [bitmap]);
  await assert.rejects(disk.write(4096, new Uint8Array(4096)), { code: 'IO_ERROR' });
  assert.deepEqual([...bitmap.dirtyExtents()], [{ offset: 4096, length: 4096 }]);
});

test('a write refused for its range records nothing; detach stops recording', async () => {
  const size = 64 * KiB;
  const bitmap = new DirtyBitmap({ size, granularity: 4096 });
  const disk = new DirtyTrackingFilter(new MemoryBlockDevice(size), [bitmap]);
  await assert.rejects(disk.write(60 * KiB, new Uint8Array(8 * KiB)), { code: 'OUT_OF_RANGE' });
  assert.equal(bitmap.count(), 0);
  disk.detach(bitmap);
  await disk.write(0, new Uint8Array(1));
  assert.equal(bitmap.count(), 0);
  disk.attach(bitmap);
  await disk.write(0, new Uint8Array(1));
  assert.equal(bitmap.count(), 4096);
});
