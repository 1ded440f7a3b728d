import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool, MAX_POOLED, MIN_POOLED } from './buffer-pool.js';

const MiB = 1024 * 1024;

test('BufferPool.take() returns exactly the bytes asked for, in distinct memory while they are out', (t) => {
  const pool = new BufferPool(64 * MiB, 1000);
  t.after(() => pool.clear());
  const sizes = [1, 512, MIN_POOLED, MIN_POOLED + 1, 256 * 1024, MAX_POOLED, MAX_POOLED + 1];
  const out = sizes.map((size) => pool.take(size));
  out.forEach((buffer, i) => assert.equal(buffer.length, sizes[i]));
  assert.equal(new Set(out.map((b) => b.buffer)).size, out.length);
});

test('BufferPool gives a returned buffer out again for a request of its size class', (t) => {
  const pool = new BufferPool(64 * MiB, 1000);
  t.after(() => pool.clear());
  const first = pool.take(200 * 1024);
  pool.give(first);
  assert.equal(pool.freeBytes, 256 * 1024);
  const second = pool.take(256 * 1024);
  assert.equal(second.buffer, first.buffer);
  assert.equal(pool.freeBytes, 0);
  // Another class does not get it.
  pool.give(second);
  assert.notEqual(pool.take(128 * 1024).buffer, first.buffer);
});

test('BufferPool does not keep buffers past MAX_POOLED, nor more free bytes than its bound', (t) => {
  const pool = new BufferPool(3 * MIN_POOLED, 1000);
  t.after(() => pool.clear());
  pool.give(pool.take(MAX_POOLED + 1));
  assert.equal(pool.freeBytes, 0);
  const buffers = [pool.take(MIN_POOLED), pool.take(MIN_POOLED), pool.take(MIN_POOLED), pool.take(MIN_POOLED)];
  for (const b of buffers) pool.give(b);
  assert.equal(pool.freeBytes, 3 * MIN_POOLED);
});

test('BufferPool drops its free buffers once none was taken for its idle time', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const pool = new BufferPool(64 * MiB, 1000);
  t.after(() => pool.clear());
  pool.give(pool.take(MIN_POOLED));
  t.mock.timers.tick(999);
  pool.give(pool.take(MIN_POOLED)); // in use during the first period: kept
  t.mock.timers.tick(1);
  assert.equal(pool.freeBytes, MIN_POOLED);
  t.mock.timers.tick(1000);
  assert.equal(pool.freeBytes, 0);
});
