import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirtyBitmap } from '../../bitmap/index.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { IoError } from '../../errors.js';
import { BlockCopyState, copyClusterSize } from './block-copy.js';
import { ControlledDevice } from './testing/controlled-device.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const C = 64 * KiB;

/** A source of 4 MiB whose every byte is `fill`, and an empty target. */
async function pair(fill = 0x5a): Promise<{ source: ControlledDevice; target: ControlledDevice }> {
  const source = new ControlledDevice(new MemoryBlockDevice(4 * MiB));
  await source.write(0, new Uint8Array(4 * MiB).fill(fill));
  source.log.length = 0;
  return { source, target: new ControlledDevice(new MemoryBlockDevice(4 * MiB)) };
}

test('copyClusterSize() takes the target cluster size, at least 64 KiB, and 64 KiB when the target has none', () => {
  assert.equal(copyClusterSize(undefined), 64 * KiB);
  assert.equal(copyClusterSize(4 * KiB), 64 * KiB);
  assert.equal(copyClusterSize(2 * MiB), 2 * MiB);
});

test('copy() copies each dirty cluster of the range once; copying again copies nothing', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  assert.equal(state.dirtyBytes, 4 * MiB);
  await state.copy(C, 2 * C);
  assert.deepEqual(target.requests('write'), [{ operation: 'write', offset: C, length: 2 * C }]);
  assert.deepEqual(await target.read(C, 2 * C), new Uint8Array(2 * C).fill(0x5a));
  assert.equal(state.dirtyBytes, 4 * MiB - 2 * C);
  await state.copy(0, 4 * C);
  assert.deepEqual(
    target.requests('write').map((r) => [r.offset, r.length]),
    [
      [C, 2 * C],
      [0, C],
      [3 * C, C],
    ],
  );
});

test('copy() splits a long run into tasks of 1 MiB', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  await state.copy(0, 3 * MiB);
  assert.deepEqual(
    target.requests('write').map((r) => r.length),
    [MiB, MiB, MiB],
  );
});

test('a run that reads as zero on the source is written to the target as zeroes', async () => {
  const source = new ControlledDevice(new MemoryBlockDevice(MiB));
  await source.write(2 * C, new Uint8Array(C).fill(1));
  const target = new ControlledDevice(new MemoryBlockDevice(MiB));
  await target.write(0, new Uint8Array(MiB).fill(9));
  const state = new BlockCopyState({ source, target, clusterSize: C });
  await state.copy(0, MiB);
  assert.deepEqual(
    target.log.filter((r) => r.operation !== 'write' || r.length !== MiB).map((r) => [r.operation, r.offset, r.length]),
    [
      ['writeZeroes', 0, 2 * C],
      ['write', 2 * C, C],
      ['writeZeroes', 3 * C, MiB - 3 * C],
    ],
  );
  assert.deepEqual(await target.read(0, 2 * C), new Uint8Array(2 * C));
});

test('only the clusters overlapping dirty granules of the given bitmap are copied', async () => {
  const { source, target } = await pair();
  const bitmap = new DirtyBitmap({ size: 4 * MiB, granularity: 4 * KiB, name: 'b0' });
  bitmap.set(4 * KiB, 4 * KiB);
  bitmap.set(3 * MiB, 300 * KiB);
  const state = new BlockCopyState({ source, target, clusterSize: C, bitmap });
  assert.equal(state.dirtyBytes, 6 * C);
  await state.copy(0, 4 * MiB);
  assert.deepEqual(
    target.requests('write').map((r) => [r.offset, r.length]),
    [
      [0, C],
      [3 * MiB, 5 * C],
    ],
  );
});

test('a bitmap that is busy or of another size is refused with QEMU\'s texts', async () => {
  const { source, target } = await pair();
  const busy = new DirtyBitmap({ size: 4 * MiB, granularity: C, name: 'b0' });
  busy.setBusy(true);
  assert.throws(() => new BlockCopyState({ source, target, clusterSize: C, bitmap: busy }), {
    reason: "Bitmap 'b0' is currently in use by another operation and cannot be used",
  });
  const small = new DirtyBitmap({ size: MiB, granularity: C, name: 's' });
  assert.throws(() => new BlockCopyState({ source, target, clusterSize: C, bitmap: small }), {
    reason: "Bitmaps are of different sizes (destination size is 4194304, source size is 1048576) and can't be merged",
  });
});

test('a copy of clusters already being copied waits for that copy instead of copying again', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  target.hold('write');
  const first = state.copy(0, 2 * C);
  const held = await target.nextHeld();
  assert.deepEqual([held.offset, held.length], [0, 2 * C]);
  let secondDone = false;
  const second = state.copy(C, C).then(() => (secondDone = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(secondDone, false, 'the second copy returned before the data it needs was on the target');
  assert.equal(state.isCopying(C, 1), true);
  held.release();
  await Promise.all([first, second]);
  assert.equal(target.requests('write').length, 1);
  assert.equal(state.inFlightBytes, 0);
});

test('when a copy fails, its clusters are dirty again and a caller that waited for it copies them itself', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  target.hold('write');
  const first = state.copy(0, C);
  const held = await target.nextHeld();
  const second = state.copy(0, C);
  target.unhold('write');
  held.fail(new IoError('write', 'disk full', 'ENOSPC'));
  await assert.rejects(first, { errno: 'ENOSPC' });
  await second;
  assert.equal(target.requests('write').length, 2);
  assert.equal(state.dirtyBytes, 4 * MiB - C);
  assert.deepEqual(await target.read(0, C), new Uint8Array(C).fill(0x5a));
});

test('a failed copy reports the error and leaves the clusters to copy', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  target.hold('write');
  const call = state.copy(0, C);
  (await target.nextHeld()).fail(new IoError('write', 'broken', 'EIO'));
  await assert.rejects(call, { errno: 'EIO' });
  assert.equal(state.dirtyBytes, 4 * MiB);
  assert.equal(state.inFlightBytes, 0);
});

test('an aborted call starts no new task and returns once its tasks have ended', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  target.hold('write');
  const abort = new AbortController();
  const call = state.copy(0, 4 * MiB, { signal: abort.signal, maxWorkers: 1 });
  const held = await target.nextHeld();
  abort.abort();
  target.unhold('write');
  held.release();
  await call;
  assert.equal(target.requests('write').length, 1);
  assert.equal(state.dirtyBytes, 3 * MiB);
});

test('beforeTask() is awaited before each task with its length, and reset() takes clusters out of the copy', async () => {
  const { source, target } = await pair();
  const state = new BlockCopyState({ source, target, clusterSize: C });
  state.reset(MiB, MiB);
  const lengths: number[] = [];
  const copied: number[] = [];
  state.progress = { copied: (bytes) => copied.push(bytes) };
  await state.copy(0, 4 * MiB, { beforeTask: (bytes) => void lengths.push(bytes), maxChunk: 2 * MiB });
  assert.deepEqual(lengths, [MiB, MiB, MiB]);
  assert.deepEqual(copied, [MiB, MiB, MiB]);
  assert.deepEqual(
    target.requests('write').map((r) => r.offset),
    [0, 2 * MiB, 3 * MiB],
  );
});

test('with skipUnallocated, clusters the source does not allocate are skipped, and resetUnallocated() finds them', async () => {
  const source = new ControlledDevice(new MemoryBlockDevice(MiB));
  await source.write(C, new Uint8Array(C).fill(3));
  const target = new ControlledDevice(new MemoryBlockDevice(MiB));
  const state = new BlockCopyState({ source, target, clusterSize: C });
  assert.deepEqual(await state.resetUnallocated(0), { allocated: false, bytes: C });
  assert.deepEqual(await state.resetUnallocated(C), { allocated: true, bytes: C });
  state.skipUnallocated = true;
  await state.copy(0, MiB);
  assert.deepEqual(
    target.log.map((r) => [r.operation, r.offset, r.length]),
    [['write', C, C]],
  );
  assert.equal(state.dirtyBytes, 0);
});

test('the last partial cluster of a source whose size is not a multiple of the cluster size is copied', async () => {
  const size = MiB + 1000;
  const source = new MemoryBlockDevice(size);
  await source.write(MiB, new Uint8Array(1000).fill(7));
  const target = new ControlledDevice(new MemoryBlockDevice(size));
  const state = new BlockCopyState({ source, target, clusterSize: C });
  await state.copy(MiB, C);
  assert.deepEqual(target.requests('write'), [{ operation: 'write', offset: MiB, length: 1000 }]);
  assert.equal(state.dirtyBytes, MiB);
  await assert.rejects(state.copy(1000, C), { code: 'INVALID_ARGUMENT' });
});
