import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { copyDevice } from './copy.js';
import { type BlockDevice } from './block-device.js';
import { MemoryBlockDevice } from './memory-device.js';

const SIZE = 1 << 20;

/** A source with data runs, zero-filled data blocks and holes, from a list of writes. */
async function sourceFrom(writes: Array<{ offset: number; length: number; value: number }>): Promise<MemoryBlockDevice> {
  const source = new MemoryBlockDevice(SIZE);
  for (const w of writes) await source.write(w.offset, new Uint8Array(w.length).fill(w.value));
  return source;
}

const writesArb = fc.array(
  fc.record({ offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: 200_000 }), value: fc.integer({ min: 0, max: 3 }) })
    .map((w) => ({ ...w, length: Math.min(w.length, SIZE - w.offset) })),
  { maxLength: 8 },
);

test('copyDevice() makes a dirty target equal to the source, zeroing what the source has as zero', async () => {
  await fc.assert(fc.asyncProperty(writesArb, fc.integer({ min: 1, max: 6 }), fc.boolean(), async (writes, parallel, ordered) => {
    const source = await sourceFrom(writes);
    const target = MemoryBlockDevice.fromBytes(new Uint8Array(SIZE).fill(0xee));
    const stats = await copyDevice(source, target, { targetIsZero: false, parallel, chunk: 64 * 1024, orderedWrites: ordered });
    assert.deepEqual(await target.read(0, SIZE), await source.read(0, SIZE));
    assert.equal(stats.size, SIZE);
    assert.equal(stats.bytesWritten + stats.bytesZeroed, SIZE, 'every byte was written or zeroed');
  }), { numRuns: 40 });
});

test('copyDevice() onto a zero target writes only non-zero blocks', async () => {
  const source = await sourceFrom([{ offset: 8192, length: 4096, value: 7 }, { offset: 65536, length: 8192, value: 0 }]);
  const target = new MemoryBlockDevice(SIZE);
  const stats = await copyDevice(source, target, { targetIsZero: true, chunk: 64 * 1024 });
  assert.equal(stats.bytesWritten, 4096);
  assert.equal(stats.bytesZeroed, 0);
  assert.deepEqual(await target.read(0, SIZE), await source.read(0, SIZE));
});

test('copyDevice() refuses a target smaller than the source', async () => {
  await assert.rejects(copyDevice(new MemoryBlockDevice(SIZE), new MemoryBlockDevice(SIZE - 1), { targetIsZero: true }), /smaller than the source/);
});

test('copyDevice() writes a block whose first and last bytes are zero but whose middle is not', async () => {
  // Regression guard for the quick zero check: only a block that is zero throughout is skipped.
  const source = new MemoryBlockDevice(SIZE);
  await source.write(8192 + 1, new Uint8Array(4094).fill(9));
  await source.write(65536 + 2000, new Uint8Array(1).fill(1));
  const target = new MemoryBlockDevice(SIZE);
  const stats = await copyDevice(source, target, { targetIsZero: true, chunk: 64 * 1024, granule: 4096 });
  assert.deepEqual(await target.read(0, SIZE), await source.read(0, SIZE));
  assert.equal(stats.bytesWritten, 2 * 4096);
});

test('copyDevice() reads into its own buffers when the source has readInto, and the data is the source\'s', async () => {
  const source = await sourceFrom([{ offset: 4096, length: 300_000, value: 5 }, { offset: 700_000, length: 70_000, value: 6 }]);
  let intoCalls = 0;
  const readInto = async (offset: number, target: Uint8Array): Promise<void> => {
    intoCalls++;
    target.set(await source.read(offset, target.length));
  };
  const withInto: BlockDevice & { readInto: typeof readInto } = {
    size: source.size,
    capabilities: source.capabilities,
    blockSize: source.blockSize,
    blockStatus: (offset, length) => source.blockStatus(offset, length),
    read: () => assert.fail('read() is not used when readInto() exists'),
    readInto,
    write: () => assert.fail('the source is not written'),
    writeZeroes: () => assert.fail('the source is not written'),
    trim: () => assert.fail('the source is not written'),
    flush: async () => {},
    close: async () => {},
  };
  const target = new MemoryBlockDevice(SIZE);
  await copyDevice(withInto, target, { targetIsZero: true, chunk: 64 * 1024, parallel: 3 });
  assert.ok(intoCalls > 0);
  assert.deepEqual(await target.read(0, SIZE), await source.read(0, SIZE));
});
