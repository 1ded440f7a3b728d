import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Coverage } from './coverage.js';

test('Coverage.add() accepts exactly the ranges that overlap nothing added before, in any order', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1, max: 40 })), { maxLength: 40 }), (ranges) => {
      const coverage = new Coverage();
      const taken = new Uint8Array(260);
      for (const [start, length] of ranges) {
        const free = taken.subarray(start, start + length).every((b) => b === 0);
        assert.equal(coverage.add(start, start + length), free, `add(${start}, ${start + length})`);
        if (free) taken.fill(1, start, start + length);
      }
      assert.equal(coverage.total, taken.reduce((n, b) => n + b, 0));
    }),
  );
});

test('Coverage merges adjacent ranges, so in-order chunks and a gap filled last both end as one range', () => {
  const coverage = new Coverage();
  assert.ok(coverage.add(0, 10));
  assert.ok(coverage.add(20, 30));
  assert.ok(coverage.add(10, 20));
  assert.equal(coverage.total, 30);
  assert.equal(coverage.add(29, 31), false);
  assert.equal(coverage.add(0, 1), false);
  assert.ok(coverage.add(30, 31));
});
