import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirtyBitmap } from '../../bitmap/index.js';
import { ExtentFlags } from '../../block/block-device.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { IoError } from '../../errors.js';
import { BlockCopyState } from './block-copy.js';
import { CopyBeforeWriteFilter, type CopyBeforeWriteInit } from './copy-before-write-filter.js';
import { ControlledDevice } from './testing/controlled-device.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const C = 64 * KiB;
const SIZE = 4 * MiB;

/** A source whose every byte is 0x5a except the first cluster (unwritten), a target, and a filter over them. */
async function setup(options: Partial<CopyBeforeWriteInit> & { bitmap?: DirtyBitmap } = {}) {
  const source = new ControlledDevice(new MemoryBlockDevice(SIZE));
  await source.write(C, new Uint8Array(SIZE - C).fill(0x5a));
  source.log.length = 0;
  const target = new ControlledDevice(new MemoryBlockDevice(SIZE));
  const state = new BlockCopyState({ source, target, clusterSize: C, ...(options.bitmap !== undefined ? { bitmap: options.bitmap } : {}) });
  const filter = new CopyBeforeWriteFilter({ name: 'cbw', file: source, target, state, ...options });
  return { source, target, state, filter };
}

const filled = (length: number, byte: number): Uint8Array => new Uint8Array(length).fill(byte);

test('a write through the filter first copies the old data of its clusters; the snapshot shows the old data, the source the new', async () => {
  const { source, target, filter } = await setup();
  await filter.write(MiB + 100, filled(200, 0x77));
  assert.deepEqual(target.requests('write'), [{ operation: 'write', offset: MiB, length: C }]);
  assert.deepEqual(await target.read(MiB, C), filled(C, 0x5a));
  assert.deepEqual((await source.read(MiB + 100, 200))[0], 0x77);
  assert.deepEqual(await filter.snapshotRead(MiB, C), filled(C, 0x5a));
  assert.deepEqual(await filter.read(MiB + 100, 1), new Uint8Array([0x77]));
  assert.equal(filter.doneBitmap.count(), C);
  await filter.write(MiB, filled(C, 0x78));
  assert.equal(target.requests('write').length, 1, 'a cluster was copied twice');
});

test('zero-writes and discards copy before they change the source too', async () => {
  const { target, filter } = await setup();
  await filter.writeZeroes(2 * MiB, C);
  await filter.trim(3 * MiB, 2 * C);
  assert.deepEqual(
    target.requests('write').map((r) => [r.offset, r.length]),
    [
      [2 * MiB, C],
      [3 * MiB, 2 * C],
    ],
  );
  assert.deepEqual(await filter.snapshotRead(3 * MiB, 2 * C), filled(2 * C, 0x5a));
});

test('many concurrent writes to the same clusters copy each cluster once, and the snapshot keeps the data from before them all', async () => {
  const { source, target, filter } = await setup();
  const before = await source.read(0, SIZE);
  const writes: Array<Promise<void>> = [];
  for (let i = 0; i < 200; i++) {
    const offset = ((i * 7919) % (SIZE / 4096)) * 4096 - (i % 3) * 100;
    const at = Math.max(0, offset);
    writes.push(filter.write(at, filled(Math.min(3 * 4096, SIZE - at), i & 0xff)));
  }
  const reads = [filter.snapshotRead(0, SIZE), filter.snapshotRead(MiB - 10, 2 * C)];
  await Promise.all(writes);
  const [whole, part] = await Promise.all(reads);
  assert.deepEqual(whole, before);
  assert.deepEqual(part, before.subarray(MiB - 10, MiB - 10 + 2 * C));
  assert.deepEqual(await filter.snapshotRead(0, SIZE), before);
  const copied = target.requests('write').concat(target.requests('writeZeroes'));
  const clusters = copied.flatMap((r) => Array.from({ length: r.length / C }, (_, k) => r.offset / C + k));
  assert.equal(new Set(clusters).size, clusters.length, 'a cluster was copied twice');
});

test('a write to a cluster that a snapshot read is reading from the source waits until that read has ended', async () => {
  const { source, target, filter } = await setup();
  source.hold('read');
  const reading = filter.snapshotRead(MiB, C);
  const held = await source.nextHeld();
  source.unhold('read');
  let written = false;
  const writing = filter.write(MiB, filled(C, 0x99)).then(() => (written = true));
  // The write's copy has read the source and written the target; now it waits for the reader.
  while (target.requests('write').length < 1) await new Promise((resolve) => setImmediate(resolve));
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(written, false);
  assert.equal(source.requests('write').length, 0, 'the write reached the source while the snapshot read it');
  held.release();
  assert.deepEqual(await reading, filled(C, 0x5a));
  await writing;
  assert.deepEqual(await filter.snapshotRead(MiB, C), filled(C, 0x5a));
});

test('with on-cbw-error break-guest-write, a failed copy fails the write and leaves the source as it was', async () => {
  const { source, target, filter } = await setup();
  target.hold('write');
  const writing = filter.write(MiB, filled(C, 0x77));
  (await target.nextHeld()).fail(new IoError('write', 'No space left on device', 'ENOSPC'));
  await assert.rejects(writing, { errno: 'ENOSPC' });
  assert.deepEqual(await source.read(MiB, C), filled(C, 0x5a));
  target.unhold('write');
  await filter.write(MiB, filled(C, 0x77));
  assert.deepEqual(await filter.snapshotRead(MiB, C), filled(C, 0x5a));
});

test('with on-cbw-error break-snapshot, a failed copy lets the write through and every later snapshot read fails with EACCES', async () => {
  const { source, target, filter } = await setup({ onCbwError: 'break-snapshot' });
  assert.deepEqual(await filter.snapshotRead(4 * C, C), filled(C, 0x5a));
  target.hold('write');
  const writing = filter.write(2 * MiB, filled(C, 0x77));
  (await target.nextHeld()).fail(new IoError('write', 'No space left on device', 'ENOSPC'));
  await writing;
  target.unhold('write');
  assert.deepEqual(await source.read(2 * MiB, C), filled(C, 0x77));
  assert.equal(filter.snapshotError?.errno, 'ENOSPC');
  await assert.rejects(filter.snapshotRead(4 * C, C), { errno: 'EACCES', reason: 'Permission denied' });
  await assert.rejects(filter.snapshotBlockStatus(0, C), { errno: 'EACCES' });
  await filter.write(3 * MiB, filled(C, 1));
  assert.equal(target.requests('write').length, 1, 'the filter copied after the snapshot broke');
});

test('a copy that takes longer than cbw-timeout fails the write with ETIMEDOUT, goes on in the background, and closing waits for it', async () => {
  let fire: () => void = () => assert.fail('no timer');
  let cancelled = 0;
  const { target, filter, state } = await setup({
    timeoutMs: 5000,
    setTimer: (ms, f) => {
      assert.equal(ms, 5000);
      fire = f;
      return () => cancelled++;
    },
  });
  await filter.write(0, filled(10, 1));
  assert.equal(cancelled, 1);
  target.hold('write');
  const writing = filter.write(MiB, filled(C, 0x77));
  const held = await target.nextHeld();
  fire();
  await assert.rejects(writing, { errno: 'ETIMEDOUT', reason: 'Connection timed out' });
  let closed = false;
  const closing = filter.close().then(() => (closed = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(closed, false);
  held.release();
  await closing;
  assert.equal(state.dirtyBytes, SIZE - 2 * C);
});

test('with a bitmap, the snapshot holds only its clusters: reads elsewhere fail with EACCES, and writes elsewhere copy nothing', async () => {
  const bitmap = new DirtyBitmap({ size: SIZE, granularity: 4 * KiB, name: 'b0' });
  bitmap.set(MiB + 4 * KiB, 4 * KiB);
  const { target, filter } = await setup({ bitmap });
  assert.deepEqual(await filter.snapshotRead(MiB, C), filled(C, 0x5a));
  await assert.rejects(filter.snapshotRead(MiB, C + 1), { errno: 'EACCES' });
  await assert.rejects(filter.snapshotRead(0, 512), { errno: 'EACCES' });
  await filter.write(0, filled(3 * MiB, 1));
  assert.deepEqual(target.requests('write'), [{ operation: 'write', offset: MiB, length: C }]);
  assert.deepEqual(await filter.snapshotRead(MiB + 100, 100), filled(100, 0x5a));
});

test('a snapshot discard takes whole clusters out of the view and out of the copy, and discards them on the target', async () => {
  const { target, filter, state } = await setup();
  await filter.snapshotDiscard(MiB + 100, 3 * C);
  assert.deepEqual(target.requests('trim'), [{ operation: 'trim', offset: MiB + C, length: 2 * C }]);
  await assert.rejects(filter.snapshotRead(MiB + C, 1), { errno: 'EACCES' });
  assert.deepEqual(await filter.snapshotRead(MiB, C), filled(C, 0x5a));
  assert.equal(state.copyBitmap.get(MiB + C), false);
  await filter.snapshotDiscard(10, 100);
  assert.equal(target.requests('trim').length, 1);
  await filter.write(MiB, filled(4 * C, 2));
  assert.deepEqual(
    target.requests('write').map((r) => [r.offset, r.length]),
    [
      [MiB, C],
      [MiB + 3 * C, C],
    ],
  );
});

test('snapshot block status comes from the target for copied clusters and from the source for the others', async () => {
  const { filter } = await setup();
  await filter.write(0, filled(2 * C, 3));
  assert.deepEqual(await filter.blockStatus(0, 2 * C), [{ offset: 0, length: 2 * C, flags: 0 }]);
  assert.deepEqual(await filter.snapshotBlockStatus(0, 4 * C), [
    { offset: 0, length: C, flags: ExtentFlags.ZERO },
    { offset: C, length: C, flags: 0 },
  ]);
  assert.deepEqual(await filter.snapshotBlockStatus(2 * C, 2 * C), [{ offset: 2 * C, length: 2 * C, flags: 0 }]);
});

test('requests outside the filter are refused, and a closed filter refuses everything', async () => {
  const { filter } = await setup();
  await assert.rejects(filter.write(SIZE, filled(1, 1)), { code: 'OUT_OF_RANGE' });
  await assert.rejects(filter.snapshotRead(SIZE - 1, 2), { code: 'OUT_OF_RANGE' });
  await filter.close();
  await assert.rejects(filter.read(0, 1), { code: 'CLOSED' });
  await assert.rejects(filter.snapshotRead(0, 1), { code: 'CLOSED' });
});
