import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeGeometry } from '../format/index.js';
import { compressedDescriptor, table64 } from '../format/testing/builder.js';
import { readL2Entry } from './l2-entry.js';

const COPIED = 1n << 63n;
const v3 = makeGeometry({ clusterBits: 16 });
const v2 = makeGeometry({ clusterBits: 16, version: 2 });
const extended = makeGeometry({ clusterBits: 16, extendedL2: true });

/** A one-cluster L2 table whose first entries are `words` (two words per extended entry). */
function table(words: bigint[], clusterSize = 65536): Uint8Array {
  const out = new Uint8Array(clusterSize);
  out.set(table64(words));
  return out;
}

test('readL2Entry() reads well-formed entries through the codec', () => {
  const t = table([0x50000n | COPIED, 0x60000n | 1n, 1n, 0n, compressedDescriptor(16, 0x70010n, 2n)]);
  assert.deepEqual(readL2Entry(t, 0, v3), { view: { type: 'normal', offset: 0x50000, copied: true }, problems: [] });
  assert.deepEqual(readL2Entry(t, 1, v3), { view: { type: 'zero-alloc', offset: 0x60000, copied: false }, problems: [] });
  assert.deepEqual(readL2Entry(t, 2, v3), { view: { type: 'zero-plain' }, problems: [] });
  assert.deepEqual(readL2Entry(t, 3, v3), { view: { type: 'unallocated' }, problems: [] });
  // 0x70010 is 16 bytes into its sector; 3 sectors are used.
  assert.deepEqual(readL2Entry(t, 4, v3), { view: { type: 'compressed', offset: 0x70010, length: 3 * 512 - 16 }, problems: [] });
});

test('readL2Entry() reports reserved bits and keeps the entry, as QEMU counts it', () => {
  const { view, problems } = readL2Entry(table([0x50000n | COPIED | 0x2n]), 0, v3);
  assert.deepEqual(view, { type: 'normal', offset: 0x50000, copied: true });
  assert.deepEqual(problems.map((p) => p.kind), ['invalid-entry']);
});

test('readL2Entry() reports an unaligned host offset and keeps it', () => {
  const { view, problems } = readL2Entry(table([0x50200n | COPIED]), 0, v3);
  assert.deepEqual(view, { type: 'normal', offset: 0x50200, copied: true });
  assert.deepEqual(problems.map((p) => p.kind), ['unaligned']);
  assert.match(problems[0]!.message, /data cluster offset 0x50200/);
});

test('readL2Entry() reports COPIED on a compressed cluster and still counts its bytes', () => {
  const { view, problems } = readL2Entry(table([compressedDescriptor(16, 0x70000n, 0n) | COPIED]), 0, v3);
  assert.deepEqual(view, { type: 'compressed', offset: 0x70000, length: 512 });
  assert.deepEqual(problems.map((p) => p.kind), ['invalid-entry']);
});

test('readL2Entry() treats bit 0 of a version 2 entry as QEMU does: a zero cluster, no problem', () => {
  assert.deepEqual(readL2Entry(table([0x50000n | 1n]), 0, v2), { view: { type: 'zero-alloc', offset: 0x50000, copied: false }, problems: [] });
});

test('readL2Entry() ignores COPIED on an unallocated entry, as QEMU does', () => {
  assert.deepEqual(readL2Entry(table([COPIED]), 0, v3), { view: { type: 'unallocated' }, problems: [] });
});

test('readL2Entry() reports subclusters both allocated and zero, and allocated subclusters without a cluster', () => {
  const both = readL2Entry(table([0x50000n | COPIED, (1n << 32n) | 1n]), 0, extended);
  assert.deepEqual(both.view, { type: 'normal', offset: 0x50000, copied: true });
  assert.deepEqual(both.problems.map((p) => p.kind), ['invalid-entry']);
  const orphan = readL2Entry(table([0n, 0b11n]), 0, extended);
  assert.deepEqual(orphan.view, { type: 'unallocated' });
  assert.deepEqual(orphan.problems.map((p) => p.kind), ['invalid-entry']);
});

test('readL2Entry() skips a compressed extended entry with a subcluster bitmap', () => {
  const { view, problems } = readL2Entry(table([compressedDescriptor(16, 0x70000n, 0n), 1n]), 0, extended);
  assert.deepEqual(view, { type: 'skip' });
  assert.deepEqual(problems.map((p) => p.kind), ['invalid-entry']);
});
