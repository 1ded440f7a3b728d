import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBlockDevice } from '../memory-device.js';
import { testBlockDevice } from '../testing/conformance.js';
import { ReadOnlyFilter } from './read-only-filter.js';

testBlockDevice(
  'ReadOnlyFilter over a prefilled MemoryBlockDevice',
  async (size, { content }) => ({ device: new ReadOnlyFilter(MemoryBlockDevice.fromBytes(content!)) }),
  { readOnly: true },
);

describe('ReadOnlyFilter specifics', () => {
  test('its capabilities are the inner ones with readOnly set and trimming and fast zeroing off', () => {
    const inner = new MemoryBlockDevice(4096, { blockSize: { minimum: 512 } });
    const filter = new ReadOnlyFilter(inner);
    assert.deepEqual(filter.capabilities, {
      ...inner.capabilities,
      readOnly: true,
      canTrim: false,
      trimZeroes: false,
      canFastZero: false,
    });
    assert.equal(filter.size, 4096);
    assert.deepEqual(filter.blockSize, inner.blockSize);
  });

  test('refused writes never reach the inner device', async () => {
    const inner = new MemoryBlockDevice(8192);
    const filter = new ReadOnlyFilter(inner);
    await assert.rejects(filter.write(0, new Uint8Array(10).fill(1)), { code: 'READ_ONLY' });
    await assert.rejects(filter.writeZeroes(0, 8192, { mayTrim: true }), { code: 'READ_ONLY' });
    await assert.rejects(filter.trim(0, 8192), { code: 'READ_ONLY' });
    assert.equal(inner.allocatedBytes, 0);
    assert.deepEqual(await inner.blockStatus(0, 8192), await filter.blockStatus(0, 8192));
  });

  test('close closes the inner device, unless closeInner is false', async () => {
    const owned = new MemoryBlockDevice(4096);
    await new ReadOnlyFilter(owned).close();
    await assert.rejects(owned.read(0, 1), { code: 'CLOSED' });

    const kept = new MemoryBlockDevice(4096);
    await kept.write(0, new Uint8Array([42]));
    const filter = new ReadOnlyFilter(kept, { closeInner: false });
    await filter.close();
    await assert.rejects(filter.read(0, 1), { code: 'CLOSED' });
    assert.deepEqual(await kept.read(0, 1), new Uint8Array([42]));
  });
});
