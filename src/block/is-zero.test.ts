import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isZero } from './is-zero.js';

test('isZero() agrees with a byte-by-byte check, at any length and offset in the buffer', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 200_000 }), fc.integer({ min: 0, max: 7 }), fc.option(fc.nat()), (length, start, dirty) => {
      const bytes = new Uint8Array(length + start + 1).fill(1);
      bytes.fill(0, start, start + length);
      if (dirty !== null && length > 0) bytes[start + (dirty % length)] = 0x80;
      const view = bytes.subarray(start, start + length);
      assert.equal(isZero(view), view.every((b) => b === 0));
    }),
    { numRuns: 200 },
  );
});
