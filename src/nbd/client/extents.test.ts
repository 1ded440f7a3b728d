import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NbdProtocolError } from '../protocol/errors.js';
import { allocationExtents, placeExtents } from './extents.js';

test('placeExtents() skips what lies before the offset, cuts the one past the end and drops the rest', () => {
  const descriptors = [{ length: 512, flags: 3 }, { length: 1024, flags: 0 }, { length: 4096, flags: 1 }, { length: 512, flags: 2 }];
  assert.deepEqual(placeExtents(descriptors, 0, 600, 2000, 'test'), [
    { offset: 600, length: 936, flags: 0 },
    { offset: 1536, length: 464, flags: 1 },
  ]);
  assert.deepEqual(placeExtents(descriptors, 1000, 1000, 1200, 'test'), [{ offset: 1000, length: 200, flags: 3 }]);
  assert.throws(() => placeExtents([{ length: 100, flags: 0 }], 0, 100, 200, 'test'), NbdProtocolError);
});

test('allocationExtents() keeps HOLE and ZERO only and splits where the depth changes', () => {
  const base = [{ offset: 10, length: 90, flags: 0xff }, { offset: 100, length: 50, flags: 0 }];
  assert.deepEqual(allocationExtents(base), [{ offset: 10, length: 90, flags: 3 }, { offset: 100, length: 50, flags: 0 }]);
  const depth = [{ offset: 10, length: 40, flags: 2 }, { offset: 50, length: 80, flags: 1 }];
  assert.deepEqual(allocationExtents(base, depth), [
    { offset: 10, length: 40, flags: 3, depth: 2 },
    { offset: 50, length: 50, flags: 3, depth: 1 },
    { offset: 100, length: 30, flags: 0, depth: 1 },
  ]);
});
