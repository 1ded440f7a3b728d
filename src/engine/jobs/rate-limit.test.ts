import assert from 'node:assert/strict';
import test from 'node:test';
import { BLOCK_JOB_SLICE_NS, RateLimit } from './rate-limit.js';

const MiB = 1024 * 1024;

function limiter(start = 5_000_000_000): { limit: RateLimit; clock: { now: number } } {
  const clock = { now: start };
  return { limit: new RateLimit(() => clock.now), clock };
}

test('RateLimit with speed 0 never delays', () => {
  const { limit } = limiter();
  limit.setSpeed(0);
  assert.equal(limit.sliceQuota, 0);
  assert.equal(limit.calculateDelay(10 * MiB), 0);
});

test('RateLimit quota is speed times the 100 ms slice, truncated, and at least 1 byte', () => {
  const { limit } = limiter();
  limit.setSpeed(MiB);
  assert.equal(limit.sliceQuota, 104857); // 1048576 × 0.1 = 104857.6
  limit.setSpeed(5);
  assert.equal(limit.sliceQuota, 1); // 0.5 → at least 1
  limit.setSpeed(1000, 1_000_000_000);
  assert.equal(limit.sliceQuota, 1000);
});

test('RateLimit lets chunks through while the slice quota lasts, then delays to the end of the stretched slice', () => {
  const { limit, clock } = limiter();
  limit.setSpeed(640 * 1024); // quota 65536 per 100 ms
  assert.equal(limit.sliceQuota, 65536);
  assert.equal(limit.calculateDelay(16384), 0); // 16 KiB of 64 KiB
  assert.equal(limit.calculateDelay(16384), 0);
  clock.now += 10_000_000; // 10 ms into the slice
  // 96 KiB dispatched = 1.5 quotas: the slice ends 150 ms after its start, 140 ms from now.
  assert.equal(limit.calculateDelay(65536), 140_000_000);
});

test('RateLimit charges a chunk bigger than the quota after the fact, one delay for the whole chunk', () => {
  const { limit } = limiter();
  limit.setSpeed(MiB); // quota 104857
  // One 1 MiB chunk: 1048576 / 104857 ≈ 10.00005 slices of 100 ms, in ns, truncated.
  const expected = Math.trunc((MiB / 104857) * BLOCK_JOB_SLICE_NS);
  assert.equal(limit.calculateDelay(MiB), expected);
});

test('RateLimit starts a fresh slice once the stretched one is over', () => {
  const { limit, clock } = limiter();
  limit.setSpeed(MiB);
  const first = limit.calculateDelay(MiB);
  clock.now += first + 1; // past the stretched slice
  assert.equal(limit.calculateDelay(1000), 0);
  clock.now += 1;
  // Still inside the new slice: 1000 + 1 MiB dispatched from its start.
  const expected = Math.trunc(((1000 + MiB) / 104857) * BLOCK_JOB_SLICE_NS) - 1;
  assert.equal(limit.calculateDelay(MiB), expected);
});

test('RateLimit keeps counting within a slice when the speed changes', () => {
  const { limit } = limiter();
  limit.setSpeed(MiB);
  assert.equal(limit.calculateDelay(50_000), 0);
  limit.setSpeed(200 * 1024); // quota 20480: the 50 000 bytes already dispatched exceed it
  const expected = Math.trunc(((50_000 + 1) / 20480) * BLOCK_JOB_SLICE_NS);
  assert.equal(limit.calculateDelay(1), expected);
});
