import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasCode } from '../errors.js';
import { DirtyBitmap, granulesOf } from './dirty-bitmap.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function bitmap(size: number, granularity: number): DirtyBitmap {
  return new DirtyBitmap({ size, granularity, name: 'b0' });
}

/** The dirty runs as [offset, length] pairs. */
function dirty(b: DirtyBitmap, ...args: [number?, number?, number?]): [number, number][] {
  return [...b.dirtyExtents(...args)].map((e) => [e.offset, e.length]);
}

/** All runs as [offset, length, dirty] triples. */
function runs(b: DirtyBitmap, ...args: [number?, number?, number?]): [number, number, boolean][] {
  return [...b.extents(...args)].map((e) => [e.offset, e.length, e.dirty]);
}

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => hasCode(e, code as never), `expected a ${code} error`);
}

test('the constructor accepts every power-of-two granularity from 512 B to 2 GiB and nothing else', () => {
  for (let g = 512; g <= 2 * GiB; g *= 2) assert.equal(bitmap(10 * g + 1, g).granuleCount, 11);
  for (const g of [0, 256, 511, 1000, 4 * GiB, 1536, 512.5, NaN, -512]) {
    throwsCode(() => bitmap(1 * MiB, g), 'INVALID_ARGUMENT');
  }
});

test('the constructor rejects sizes that are not non-negative safe integers', () => {
  for (const size of [-1, 1.5, NaN, Infinity, 2 ** 53]) throwsCode(() => bitmap(size, 512), 'INVALID_ARGUMENT');
});

test('the constructor refuses more than 2^32 granules with OutOfRangeError and accepts exactly 2^32', () => {
  throwsCode(() => bitmap(2 ** 32 * 512 + 1, 512), 'OUT_OF_RANGE');
  const b = bitmap(2 ** 32 * 512, 512);
  assert.equal(b.granuleCount, 2 ** 32);
  assert.equal(granulesOf(b).allocatedPages, 0);
});

test('the constructor checks names: non-empty, at most 1023 UTF-8 bytes', () => {
  throwsCode(() => new DirtyBitmap({ size: 0, granularity: 512, name: '' }), 'INVALID_ARGUMENT');
  throwsCode(() => new DirtyBitmap({ size: 0, granularity: 512, name: 'é'.repeat(512) }), 'INVALID_ARGUMENT');
  assert.equal(new DirtyBitmap({ size: 0, granularity: 512, name: 'x'.repeat(1023) }).name?.length, 1023);
  assert.equal(new DirtyBitmap({ size: 0, granularity: 512 }).name, undefined);
});

test('a bitmap of size 0 has no granules, no extents and nothing to find', () => {
  const b = bitmap(0, 65536);
  assert.equal(b.granuleCount, 0);
  assert.equal(b.count(), 0);
  assert.equal(b.isEmpty(), true);
  assert.deepEqual(runs(b), []);
  assert.equal(b.nextDirty(0), -1);
  assert.equal(b.nextClean(0), -1);
  b.set(0, 0);
  b.recordWrite(0, 0);
  throwsCode(() => b.set(0, 1), 'OUT_OF_RANGE');
  throwsCode(() => b.get(0), 'OUT_OF_RANGE');
});

test('set() marks every granule the byte range overlaps, reset() clears every one', () => {
  const b = bitmap(8 * 512, 512);
  b.set(511, 2);
  assert.deepEqual(dirty(b), [[0, 1024]]);
  b.set(3 * 512 + 100, 1);
  assert.deepEqual(dirty(b), [[0, 1024], [1536, 512]]);
  b.set(2048, 0);
  assert.equal(b.count(), 3 * 512);
  b.reset(1000, 600);
  assert.deepEqual(dirty(b), [[0, 512]], 'granules 1..3 overlap [1000, 1600) and are cleared though only partly inside');
  b.set(0, 4096);
  b.reset(1024, 512);
  assert.deepEqual(dirty(b), [[0, 1024], [1536, 2560]]);
});

test('count() counts whole granules, also for a partial last granule (as QEMU reports)', () => {
  const b = bitmap(1000448, 65536);
  assert.equal(b.granuleCount, 16);
  b.set(1000448 - 512, 512);
  assert.equal(b.count(), 65536);
  assert.deepEqual(runs(b), [
    [0, 983040, false],
    [983040, 17408, true],
  ]);
  b.set(0, 1);
  assert.equal(b.count(), 2 * 65536);
});

test('get() reads the granule of any byte and rejects offsets outside [0, size)', () => {
  const b = bitmap(3000, 1024);
  b.set(2048, 1);
  assert.equal(b.get(2047), false);
  assert.equal(b.get(2048), true);
  assert.equal(b.get(2999), true);
  throwsCode(() => b.get(3000), 'OUT_OF_RANGE');
  throwsCode(() => b.get(-1), 'OUT_OF_RANGE');
  throwsCode(() => b.get(1.5), 'INVALID_ARGUMENT');
});

test('nextDirty() and nextClean() return the offset itself or the next granule start, or -1', () => {
  const b = bitmap(10 * 512 - 7, 512);
  b.set(1024, 1024);
  assert.equal(b.nextDirty(0), 1024);
  assert.equal(b.nextDirty(1500), 1500);
  assert.equal(b.nextDirty(2048), -1);
  assert.equal(b.nextClean(1024), 2048);
  assert.equal(b.nextClean(100), 100);
  assert.equal(b.nextDirty(b.size), -1);
  b.set(0, b.size);
  assert.equal(b.nextClean(0), -1);
  assert.equal(b.nextClean(b.size), -1);
  throwsCode(() => b.nextDirty(b.size + 1), 'OUT_OF_RANGE');
});

test('runs that cross word, summary-level and page boundaries are found whole', () => {
  const g = 512;
  const b = bitmap(100_000 * g, g);
  // granule 31..32 crosses a word, 1023..1024 a summary word, 32767..32768 a leaf page.
  for (const first of [31, 1023, 32767, 65535]) b.set(first * g, 2 * g);
  assert.deepEqual(dirty(b), [
    [31 * g, 2 * g],
    [1023 * g, 2 * g],
    [32767 * g, 2 * g],
    [65535 * g, 2 * g],
  ]);
  assert.equal(b.nextDirty(33 * g), 1023 * g);
  assert.equal(b.nextDirty(1025 * g), 32767 * g);
  b.set(0, 99_000 * g);
  assert.equal(b.nextClean(0), 99_000 * g);
  b.reset(40_000 * g, 1);
  assert.equal(b.nextClean(0), 40_000 * g);
  assert.equal(b.nextDirty(40_000 * g), 40_001 * g);
});

test('extents() covers the range exactly with alternating runs, clamped to a partial range', () => {
  const b = bitmap(5000, 512);
  b.set(600, 1);
  b.set(4999, 1);
  assert.deepEqual(runs(b), [
    [0, 512, false],
    [512, 512, true],
    [1024, 3584, false],
    [4608, 392, true],
  ]);
  assert.deepEqual(runs(b, 700, 400), [
    [700, 324, true],
    [1024, 76, false],
  ]);
  assert.deepEqual(runs(b, 4700), [[4700, 300, true]]);
  assert.deepEqual(runs(b, 5000), []);
  assert.deepEqual(runs(b, 100, 0), []);
});

test('maxLength splits longer runs and leaves shorter ones alone', () => {
  const b = bitmap(10 * 4096, 4096);
  b.set(4096, 3 * 4096);
  assert.deepEqual(runs(b, 0, b.size, 5000), [
    [0, 4096, false],
    [4096, 5000, true],
    [9096, 5000, true],
    [14096, 2288, true],
    [16384, 5000, false],
    [21384, 5000, false],
    [26384, 5000, false],
    [31384, 5000, false],
    [36384, 4576, false],
  ]);
  assert.deepEqual(dirty(b, 0, b.size, 8192), [
    [4096, 8192],
    [12288, 4096],
  ]);
  throwsCode(() => b.extents(0, b.size, 0), 'INVALID_ARGUMENT');
  throwsCode(() => b.dirtyExtents(0, b.size, 1.5), 'INVALID_ARGUMENT');
});

test('extents() and dirtyExtents() check their arguments when called, not when iterated', () => {
  const b = bitmap(4096, 512);
  throwsCode(() => b.extents(0, 4097), 'OUT_OF_RANGE');
  throwsCode(() => b.dirtyExtents(-1), 'OUT_OF_RANGE');
  throwsCode(() => b.extents(0.5), 'INVALID_ARGUMENT');
});

test('range methods reject non-integers with InvalidArgumentError and out-of-range values with OutOfRangeError', () => {
  const b = bitmap(4096, 512);
  for (const call of [(o: number, l: number) => b.set(o, l), (o: number, l: number) => b.reset(o, l), (o: number, l: number) => b.recordWrite(o, l)]) {
    throwsCode(() => call(0.5, 1), 'INVALID_ARGUMENT');
    throwsCode(() => call(0, NaN), 'INVALID_ARGUMENT');
    throwsCode(() => call(-512, 512), 'OUT_OF_RANGE');
    throwsCode(() => call(0, -1), 'OUT_OF_RANGE');
    throwsCode(() => call(4000, 97), 'OUT_OF_RANGE');
    call(4000, 96);
  }
});

test('granularity 2 GiB: one granule covers a small disk, offsets beyond 2^32 work', () => {
  const small = bitmap(5000, 2 * GiB);
  assert.equal(small.granuleCount, 1);
  small.set(4999, 1);
  assert.equal(small.count(), 2 * GiB);
  assert.deepEqual(runs(small), [[0, 5000, true]]);
  const big = bitmap(8 * 1024 * GiB, 2 * GiB);
  big.set(5 * GiB, 1);
  assert.deepEqual(dirty(big), [[4 * GiB, 2 * GiB]]);
  assert.equal(big.nextDirty(0), 4 * GiB);
});

test('a 1 TiB bitmap at 512 B dirtied whole and then partly cleaned allocates only the edge pages', () => {
  const b = bitmap(1024 * GiB, 512);
  b.set(0, b.size);
  assert.equal(b.count(), 1024 * GiB);
  b.reset(100 * GiB + 512, 10 * GiB);
  assert.equal(granulesOf(b).allocatedPages, 2);
  assert.deepEqual(dirty(b), [
    [0, 100 * GiB + 512],
    [110 * GiB + 512, 914 * GiB - 512],
  ]);
  assert.equal(b.count(), 1014 * GiB);
});

test('merge() with equal granularity is a plain OR', () => {
  const a = bitmap(64 * KiB, 4096);
  const b = bitmap(64 * KiB, 4096);
  a.set(0, 4096);
  b.set(8192, 8192);
  a.merge(b);
  assert.deepEqual(dirty(a), [
    [0, 4096],
    [8192, 8192],
  ]);
  assert.deepEqual(dirty(b), [[8192, 8192]], 'the source is unchanged');
  a.merge(a);
  assert.equal(a.count(), 3 * 4096);
});

test('merge() of a finer bitmap into a coarser one marks whole granules', () => {
  const coarse = bitmap(100_000, 65536);
  const fine = bitmap(100_000, 512);
  fine.set(70_000, 1);
  coarse.merge(fine);
  assert.deepEqual(dirty(coarse), [[65536, 100_000 - 65536]]);
  assert.equal(coarse.count(), 65536);
});

test('merge() of a coarser bitmap into a finer one marks every granule it covers, up to the size', () => {
  const coarse = bitmap(100_000, 65536);
  const fine = bitmap(100_000, 512);
  coarse.set(70_000, 1);
  fine.merge(coarse);
  assert.deepEqual(dirty(fine), [[65536, 100_000 - 65536]]);
  assert.equal(fine.count(), Math.ceil((100_000 - 65536) / 512) * 512);
});

test('merge() and andNot() refuse bitmaps of another size', () => {
  const a = bitmap(4096, 512);
  const b = bitmap(4608, 512);
  throwsCode(() => a.merge(b), 'INVALID_ARGUMENT');
  throwsCode(() => a.andNot(b), 'INVALID_ARGUMENT');
});

test('andNot() with equal granularity clears exactly the granules set in the other bitmap', () => {
  const a = bitmap(16 * 512, 512);
  const copied = bitmap(16 * 512, 512);
  a.set(0, 8 * 512);
  copied.set(2 * 512, 3 * 512);
  a.andNot(copied);
  assert.deepEqual(dirty(a), [
    [0, 1024],
    [2560, 1536],
  ]);
  a.andNot(a);
  assert.equal(a.isEmpty(), true);
});

test('andNot() clears a granule only when the other bitmap covers all its bytes', () => {
  const target = bitmap(10_000, 4096);
  const fine = bitmap(10_000, 512);
  target.set(0, target.size);
  fine.set(512, 8192 - 512);
  target.andNot(fine);
  assert.deepEqual(dirty(target), [[0, 4096], [8192, 10_000 - 8192]], 'granule 0 lacks bytes 0..511; granule 1 is covered');
  fine.set(8192, 10_000 - 8192);
  target.andNot(fine);
  assert.deepEqual(dirty(target), [[0, 4096]], 'the partial last granule is covered up to the size');
});

test('andNot() of a coarser bitmap clears every granule its dirty granules cover', () => {
  const target = bitmap(10_000, 512);
  const coarse = bitmap(10_000, 4096);
  target.set(0, target.size);
  coarse.set(5000, 1);
  target.andNot(coarse);
  assert.deepEqual(dirty(target), [
    [0, 4096],
    [8192, 10_000 - 8192],
  ]);
});

test('clear() empties the bitmap', () => {
  const b = bitmap(1 * MiB, 512);
  b.set(0, b.size);
  b.clear();
  assert.equal(b.isEmpty(), true);
  assert.deepEqual(runs(b), [[0, 1 * MiB, false]]);
});

test('copy() is independent, named as asked, enabled and not persistent by default', () => {
  const b = new DirtyBitmap({ size: 1 * MiB, granularity: 4096, name: 'b0', persistent: true, enabled: false });
  b.set(4096, 1);
  const c = b.copy('c');
  assert.equal(c.name, 'c');
  assert.equal(c.enabled, true);
  assert.equal(c.persistent, false);
  assert.equal(c.busy, false);
  assert.deepEqual(dirty(c), [[4096, 4096]]);
  c.set(0, 1);
  b.reset(4096, 1);
  assert.deepEqual(dirty(c), [[0, 8192]]);
  assert.deepEqual(dirty(b), []);
  const d = b.copy(undefined, { enabled: false, persistent: true });
  assert.equal(d.name, undefined);
  assert.equal(d.enabled, false);
  assert.equal(d.persistent, true);
});
