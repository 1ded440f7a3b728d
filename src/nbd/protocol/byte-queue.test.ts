import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ByteQueue } from './byte-queue.js';

test('ByteQueue.take() and peekU32() see the bytes in order across any chunking', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 9 }), { maxLength: 10 }), fc.array(fc.integer({ min: 1, max: 7 }), { maxLength: 20 }), (chunks, takes) => {
    const q = new ByteQueue();
    const all = chunks.flatMap((c) => [...c]);
    for (const c of chunks) q.push(c);
    let at = 0;
    for (const n of takes) {
      if (q.length >= 4) {
        const expected = ((all[at]! << 24) | (all[at + 1]! << 16) | (all[at + 2]! << 8) | all[at + 3]!) >>> 0;
        assert.equal(q.peekU32(), expected);
      }
      if (n > q.length) break;
      assert.deepEqual([...q.take(n)], all.slice(at, at + n));
      at += n;
    }
    assert.deepEqual([...q.takeAll()], all.slice(at));
  }));
});

test('ByteQueue.skip() and takeInto() stop at what is queued', () => {
  const q = new ByteQueue();
  q.push(new Uint8Array([1, 2, 3]));
  q.push(new Uint8Array([4, 5]));
  assert.equal(q.skip(2), 2);
  const into = new Uint8Array(5);
  assert.equal(q.takeInto(into, 1, 10), 3);
  assert.deepEqual([...into], [0, 3, 4, 5, 0]);
  assert.equal(q.skip(5), 0);
  assert.throws(() => q.take(1), RangeError);
});
