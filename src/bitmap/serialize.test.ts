import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { hasCode } from '../errors.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { bytesAreClean, deserializeBytes, serializeBytes, serializedByteLength, sha256Qemu } from './serialize.js';

/** A bitmap at 512 B granularity with the given granules set. */
function withGranules(granules: number, dirty: number[]): DirtyBitmap {
  const b = new DirtyBitmap({ size: granules * 512, granularity: 512 });
  for (const g of dirty) b.set(g * 512, 1);
  return b;
}

function dirtyGranules(b: DirtyBitmap): number[] {
  const out: number[] = [];
  for (const e of b.dirtyExtents()) for (let o = e.offset; o < e.offset + e.length; o += b.granularity) out.push(o / b.granularity);
  return out;
}

test('serializedByteLength() is ceil(granules / 8)', () => {
  assert.equal(serializedByteLength(withGranules(0, [])), 0);
  assert.equal(serializedByteLength(withGranules(8, [])), 1);
  assert.equal(serializedByteLength(withGranules(9, [])), 2);
  assert.equal(serializedByteLength(new DirtyBitmap({ size: 1000448, granularity: 65536 })), 2);
});

test('serializeBytes() puts granule 8j+i in bit i of byte j', () => {
  const b = withGranules(40, [0, 9, 31, 32]);
  assert.deepEqual(serializeBytes(b, 0, 5), new Uint8Array([0x01, 0x02, 0x00, 0x80, 0x01]));
  assert.deepEqual(serializeBytes(b, 3, 2), new Uint8Array([0x80, 0x01]));
  assert.deepEqual(serializeBytes(b, 1, 0), new Uint8Array([]));
});

test('serializeBytes() leaves bits past the last granule and bytes past the data at 0', () => {
  const b = withGranules(10, []);
  b.set(0, b.size);
  assert.deepEqual(serializeBytes(b, 0, 6), new Uint8Array([0xff, 0x03, 0, 0, 0, 0]));
  assert.deepEqual(serializeBytes(b, 2, 3), new Uint8Array([0, 0, 0]));
});

test('the chunk functions reject offsets past the data and non-integers', () => {
  const b = withGranules(10, []);
  for (const fn of [
    (o: number, l: number) => serializeBytes(b, o, l),
    (o: number, l: number) => bytesAreClean(b, o, l),
    (o: number, l: number) => deserializeBytes(b, o, new Uint8Array(Number.isInteger(l) && l >= 0 ? l : 0)),
  ]) {
    assert.throws(() => fn(3, 1), (e: unknown) => hasCode(e, 'OUT_OF_RANGE'));
    assert.throws(() => fn(-1, 1), (e: unknown) => hasCode(e, 'OUT_OF_RANGE'));
    assert.throws(() => fn(0.5, 1), (e: unknown) => hasCode(e, 'INVALID_ARGUMENT'));
  }
  assert.throws(() => serializeBytes(b, 0, -1), (e: unknown) => hasCode(e, 'OUT_OF_RANGE'));
});

test('deserializeBytes() replaces exactly the granules its bytes describe', () => {
  const b = withGranules(64, []);
  b.set(0, 24 * 512);
  deserializeBytes(b, 1, new Uint8Array([0x81]));
  assert.deepEqual(dirtyGranules(b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 18, 19, 20, 21, 22, 23]);
  // bytes 3..6 straddle the first and second leaf words
  deserializeBytes(b, 3, new Uint8Array([0x01, 0x80, 0x00, 0x10]));
  assert.deepEqual(dirtyGranules(b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 39, 52]);
});

test('deserializeBytes() ignores bits past the last granule', () => {
  const b = withGranules(10, []);
  deserializeBytes(b, 0, new Uint8Array([0xff, 0xff, 0xff]));
  assert.equal(b.count(), 10 * 512);
  assert.deepEqual(serializeBytes(b, 0, 2), new Uint8Array([0xff, 0x03]));
});

test('serializing in chunks and deserializing them into a fresh bitmap gives the same bits', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 5000 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 300 })), { maxLength: 8 }),
      fc.integer({ min: 1, max: 100 }),
      (granules, ranges, chunk) => {
        const a = withGranules(granules, []);
        for (const [start, len] of ranges) {
          const s = start % (granules + 1);
          a.set(s * 512, Math.min(len, granules - s) * 512);
        }
        const b = withGranules(granules, []);
        b.set(0, b.size);
        const total = serializedByteLength(a);
        for (let pos = 0; pos < total; pos += chunk) {
          const bytes = serializeBytes(a, pos, chunk);
          assert.equal(bytesAreClean(a, pos, chunk), bytes.every((x) => x === 0));
          deserializeBytes(b, pos, bytes);
        }
        assert.deepEqual([...b.extents()], [...a.extents()]);
      },
    ),
    { numRuns: 100 },
  );
});

test('bytesAreClean() sees one dirty granule anywhere in the chunk, and nothing past the data', () => {
  const b = withGranules(1 << 20, [300_000]);
  assert.equal(bytesAreClean(b, 0, 37_500), true);
  assert.equal(bytesAreClean(b, 0, 37_501), false);
  assert.equal(bytesAreClean(b, 37_500, 1), false);
  assert.equal(bytesAreClean(b, 37_501, 100_000), true);
  assert.equal(bytesAreClean(b, serializedByteLength(b), 65536), true);
});

test('sha256Qemu() hashes at least one 64-bit word, zero-padded', () => {
  const zeroWord = createHash('sha256').update(new Uint8Array(8)).digest('hex');
  assert.equal(sha256Qemu(withGranules(0, [])), zeroWord);
  assert.equal(sha256Qemu(withGranules(64, [])), zeroWord);
  assert.equal(sha256Qemu(withGranules(65, [])), createHash('sha256').update(new Uint8Array(16)).digest('hex'));
  const words = new Uint8Array(16);
  words[8] = 0x01; // granule 64
  assert.equal(sha256Qemu(withGranules(65, [64])), createHash('sha256').update(words).digest('hex'));
});

test('sha256Qemu() equals what QEMU 7.2 reported for the same writes', () => {
  // x-debug-block-dirty-bitmap-sha256 after `write 0 1` and `write 999936 512` on a
  // 1,000,448-byte qcow2 image with a 64 KiB bitmap (QEMU 7.2.22, recorded once by hand;
  // test/e2e/bitmap-qemu.test.ts checks this and more against a live QEMU).
  const b = new DirtyBitmap({ size: 1000448, granularity: 65536 });
  b.recordWrite(0, 1);
  b.recordWrite(999936, 512);
  assert.equal(sha256Qemu(b), 'ff1a03bec701df63f26cac64b4e0bb6009b26158b441e2131a79d72c76ba390a');
});
