import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ExtentFlags } from './block-device.js';
import { MEMORY_CHUNK_SIZE, MemoryBlockDevice } from './memory-device.js';
import { testBlockDevice } from './testing/conformance.js';

const C = MEMORY_CHUNK_SIZE;
const HOLE_ZERO = ExtentFlags.HOLE | ExtentFlags.ZERO;

testBlockDevice('MemoryBlockDevice', async (size) => ({ device: new MemoryBlockDevice(size) }));

testBlockDevice(
  'MemoryBlockDevice read-only',
  async (size, { content }) => ({ device: MemoryBlockDevice.fromBytes(content!, { readOnly: true }) }),
  { readOnly: true },
);

describe('MemoryBlockDevice specifics', () => {
  test('the constructor rejects a negative or fractional size and bad block sizes', () => {
    assert.throws(() => new MemoryBlockDevice(-1), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new MemoryBlockDevice(1.5), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new MemoryBlockDevice(C, { blockSize: { preferred: 3000 } }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new MemoryBlockDevice(C, { blockSize: { minimum: 8192, preferred: 4096 } }), {
      code: 'INVALID_ARGUMENT',
    });
    assert.deepEqual(new MemoryBlockDevice(C, { blockSize: { minimum: 512 } }).blockSize.minimum, 512);
  });

  test('blockStatus reports unwritten chunks as HOLE|ZERO, zero-written ones as ZERO, the rest as data', async () => {
    const device = new MemoryBlockDevice(8 * C);
    await device.write(C + 10, new Uint8Array([1]));
    await device.write(3 * C, new Uint8Array(100));
    await device.writeZeroes(5 * C, 2 * C);
    assert.deepEqual(await device.blockStatus(0, 8 * C), [
      { offset: 0, length: C, flags: HOLE_ZERO },
      { offset: C, length: C, flags: 0 },
      { offset: 2 * C, length: C, flags: HOLE_ZERO },
      { offset: 3 * C, length: C, flags: ExtentFlags.ZERO },
      { offset: 4 * C, length: C, flags: HOLE_ZERO },
      { offset: 5 * C, length: 2 * C, flags: ExtentFlags.ZERO },
      { offset: 7 * C, length: C, flags: HOLE_ZERO },
    ]);
    assert.deepEqual(await device.blockStatus(C + 5, 2), [{ offset: C + 5, length: 2, flags: 0 }]);
    assert.equal(device.allocatedBytes, C);
  });

  test('trim and writeZeroes with mayTrim free whole chunks and zero partial ones', async () => {
    const device = new MemoryBlockDevice(4 * C + 100);
    await device.write(0, new Uint8Array(4 * C + 100).fill(7));
    assert.equal(device.allocatedBytes, 4 * C + 100);
    await device.trim(C - 1, C + 2);
    assert.equal(device.allocatedBytes, 3 * C + 100, 'the chunk wholly inside the range is freed');
    await device.writeZeroes(3 * C, C + 100, { mayTrim: true });
    assert.equal(device.allocatedBytes, 2 * C, 'the last, short chunk counts as whole');
    const data = await device.read(0, 4 * C + 100);
    const expected = new Uint8Array(4 * C + 100);
    expected.fill(7, 0, C - 1);
    expected.fill(7, 2 * C + 1, 3 * C);
    assert.deepEqual(data, expected);
    assert.deepEqual(await device.blockStatus(0, 4 * C + 100), [
      { offset: 0, length: C, flags: 0 },
      { offset: C, length: C, flags: HOLE_ZERO },
      { offset: 2 * C, length: C, flags: 0 },
      { offset: 3 * C, length: C + 100, flags: HOLE_ZERO },
    ]);
  });

  test('writeZeroes without mayTrim keeps the range allocated but frees its memory', async () => {
    const device = new MemoryBlockDevice(3 * C);
    await device.write(0, new Uint8Array(3 * C).fill(1));
    await device.writeZeroes(10, 3 * C - 10);
    assert.equal(device.allocatedBytes, C);
    assert.deepEqual(await device.blockStatus(0, 3 * C), [
      { offset: 0, length: C, flags: 0 },
      { offset: C, length: 2 * C, flags: ExtentFlags.ZERO },
    ]);
  });

  test('blockStatus and trim of a sparse 1 TiB device see only the one chunk written', async () => {
    const tib = 2 ** 40;
    const device = new MemoryBlockDevice(tib);
    assert.deepEqual(await device.blockStatus(0, tib), [{ offset: 0, length: tib, flags: HOLE_ZERO }]);
    await device.write(tib / 2 + 1, new Uint8Array([9]));
    assert.deepEqual(await device.blockStatus(1, tib - 1), [
      { offset: 1, length: tib / 2 - 1, flags: HOLE_ZERO },
      { offset: tib / 2, length: C, flags: 0 },
      { offset: tib / 2 + C, length: tib / 2 - C, flags: HOLE_ZERO },
    ]);
    await device.trim(0, tib);
    assert.equal(device.allocatedBytes, 0);
  });

  test('fromBytes copies the data and leaves all-zero chunks unallocated', async () => {
    const bytes = new Uint8Array(3 * C);
    bytes[2 * C + 5] = 4;
    const device = MemoryBlockDevice.fromBytes(bytes);
    bytes[2 * C + 5] = 0;
    assert.equal(device.allocatedBytes, C);
    assert.equal((await device.read(2 * C + 5, 1))[0], 4);
  });

  test('write rejects data that is not a Uint8Array', async () => {
    const device = new MemoryBlockDevice(C);
    await assert.rejects(device.write(0, 'text' as unknown as Uint8Array), { code: 'INVALID_ARGUMENT' });
    assert.equal(device.allocatedBytes, 0);
  });

  test('close drops the data', async () => {
    const device = new MemoryBlockDevice(C);
    await device.write(0, new Uint8Array([1]));
    await device.close();
    assert.equal(device.allocatedBytes, 0);
  });
});
