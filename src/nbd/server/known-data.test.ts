import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { Random } from '../../block/testing/pattern.js';
import { NBD_CMD_BLOCK_STATUS, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES } from '../protocol/index.js';
import { KnownData, MAX_KNOWN_RANGES } from './known-data.js';
import { GatedDevice } from './testing/gated-device.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { type RawClient } from './testing/raw-client.js';
import { readReplyData, replyError } from './testing/replies.js';

test('KnownData agrees with a byte model over random adds and forgets, and keeps its ranges merged', () => {
  const SIZE = 200;
  for (let seed = 1; seed <= 40; seed++) {
    const random = new Random(seed);
    const known = new KnownData();
    const model = new Uint8Array(SIZE);
    for (let step = 0; step < 60; step++) {
      const from = random.below(SIZE);
      const to = from + random.below(SIZE - from + 1);
      if (random.chance(0.6)) {
        known.add(from, to);
        model.fill(1, from, to);
      } else {
        known.forget(from, to);
        model.fill(0, from, to);
      }
      const ranges = known.ranges();
      const expected = new Uint8Array(SIZE);
      for (const r of ranges) expected.fill(1, r.start, r.end);
      assert.deepEqual(expected, model, `seed ${seed} step ${step}`);
      ranges.forEach((r, i) => {
        assert.ok(r.end > r.start);
        if (i > 0) assert.ok(r.start > ranges[i - 1]!.end, 'ranges are disjoint and not adjacent');
      });
      const a = random.below(SIZE);
      const b = a + 1 + random.below(SIZE - a);
      assert.equal(known.covers(a, b), model.subarray(a, b).every((x) => x === 1), `covers(${a}, ${b}) at seed ${seed} step ${step}`);
    }
  }
});

test('KnownData starts over instead of growing past MAX_KNOWN_RANGES', () => {
  const known = new KnownData();
  for (let i = 0; i < MAX_KNOWN_RANGES; i++) known.add(i * 10, i * 10 + 5);
  assert.equal(known.ranges().length, MAX_KNOWN_RANGES);
  known.add(1e9, 1e9 + 5);
  assert.deepEqual(known.ranges(), [{ start: 1e9, end: 1e9 + 5 }]);
  // A range that merges with existing ones does not count as a new one.
  known.add(1e9 + 5, 1e9 + 8);
  assert.deepEqual(known.ranges(), [{ start: 1e9, end: 1e9 + 8 }]);
});

describe('NbdServer and the ranges it knows to be data', () => {
  const MiB = 1 << 20;
  let t: TestServer;
  let device: GatedDevice;
  const content = Uint8Array.from({ length: MiB }, (_, i) => (i % 251) + 1);

  before(async () => {
    const inner = new MemoryBlockDevice(4 * MiB);
    await inner.write(MiB, content);
    device = new GatedDevice(inner);
    t = await startTestServer([{ name: '', device }]);
  });
  after(() => t.close());

  async function client(): Promise<RawClient> {
    const c = await t.connect();
    await c.hello();
    await c.negotiate({ structured: true, contexts: ['base:allocation'] });
    return c;
  }

  test('a READ within a range that BLOCK_STATUS reported as data asks the device no block status', async () => {
    const c = await client();
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4 * MiB })).errno, 0);
    const asked = device.started.blockStatus;
    const { data, chunks } = readReplyData(await c.call({ type: NBD_CMD_READ, offset: MiB + 4096, length: 256 * 1024 }), MiB + 4096, 256 * 1024);
    assert.deepEqual(chunks, [{ kind: 'data', offset: MiB + 4096, length: 256 * 1024 }]);
    assert.deepEqual(data, content.subarray(4096, 4096 + 256 * 1024));
    assert.equal(device.started.blockStatus, asked);
    // A READ that reaches past the data asks, and gets its hole.
    const across = readReplyData(await c.call({ type: NBD_CMD_READ, offset: 2 * MiB - 4096, length: 8192 }), 2 * MiB - 4096, 8192);
    assert.deepEqual(across.chunks.map((k) => k.kind), ['data', 'hole']);
    assert.equal(device.started.blockStatus, asked + 1);
  });

  test('a READ on another connection to the export asks no block status either', async () => {
    const c = await client();
    await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: MiB, length: MiB });
    const asked = device.started.blockStatus;
    const other = await client();
    const { chunks } = readReplyData(await other.call({ type: NBD_CMD_READ, offset: MiB + 512 * 1024, length: 64 * 1024 }), MiB + 512 * 1024, 64 * 1024);
    assert.deepEqual(chunks.map((k) => k.kind), ['data']);
    assert.equal(device.started.blockStatus, asked);
  });

  test('a range zeroed or trimmed through the server reads as holes again', async () => {
    const c = await client();
    await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4 * MiB });
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, offset: MiB, length: 128 * 1024 })).errno, 0);
    assert.equal(replyError(await c.call({ type: NBD_CMD_TRIM, offset: MiB + 768 * 1024, length: 256 * 1024 })).errno, 0);
    for (const [offset, length] of [[MiB, 128 * 1024], [MiB + 768 * 1024, 256 * 1024]] as const) {
      const { data, chunks } = readReplyData(await c.call({ type: NBD_CMD_READ, offset, length }), offset, length);
      assert.deepEqual(chunks, [{ kind: 'hole', offset, length }]);
      assert.deepEqual(data, new Uint8Array(length));
    }
  });
});
