import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeGeometry } from './geometry.js';
import {
  compressedByteRange,
  compressedCluster,
  decodeL1Entry,
  decodeL1Table,
  decodeL2Entry,
  decodeL2Table,
  encodeL1Table,
  encodeL2Table,
  subclusterKind,
  writeL2Entry,
  type L2Entry,
} from './l1-l2.js';
import { writeBitmapTableEntry } from './bitmap-table.js';
import { writeRefcountTableEntry } from './refcount.js';
import { geometryArb, l1EntryArb, l2EntryArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { compressedDescriptor, table64 } from './testing/builder.js';

const COPIED = 1n << 63n;
const G64K = makeGeometry({ clusterBits: 16 });
const V2 = makeGeometry({ clusterBits: 16, version: 2 });
const EXT = makeGeometry({ clusterBits: 16, extendedL2: true });
const DATA_FILE = makeGeometry({ clusterBits: 16, externalDataFile: true });

/** One extended L2 entry: the standard word, then the bitmap word (zero bits high, allocation bits low). */
const ext = (word: bigint, zero: number, allocated: number): Uint8Array => table64([word, (BigInt(zero) << 32n) | BigInt(allocated)]);

test('decodeL1Entry() reads the L2 offset and the COPIED bit', () => {
  const table = table64([0n, 0x50000n | COPIED, 0x60000n, (2n ** 52n) | COPIED]);
  assert.deepEqual(decodeL1Table(table, 0, 4, G64K), [
    { l2Offset: 0, copied: false },
    { l2Offset: 0x50000, copied: true },
    { l2Offset: 0x60000, copied: false },
    { l2Offset: 2 ** 52, copied: true },
  ]);
  assert.deepEqual(encodeL1Table(decodeL1Table(table, 0, 4, G64K), G64K), table);
});

test('decodeL1Entry() rejects reserved bits, unaligned offsets and tables past the file', () => {
  assertCorrupt(() => decodeL1Entry(table64([0x50000n | 1n]), 0, G64K), 'l1[0]', /reserved/);
  assertCorrupt(() => decodeL1Entry(table64([0n, 0x50000n | (1n << 56n)]), 1, G64K), 'l1[1]', /reserved/);
  assertCorrupt(() => decodeL1Entry(table64([0x50000n | (1n << 62n)]), 0, G64K), 'l1[0]', /reserved/);
  assertCorrupt(() => decodeL1Entry(table64([0x50200n]), 0, G64K), 'l1[0]', /not aligned/);
  assertCorrupt(() => decodeL1Entry(table64([0x50000n]), 0, G64K, 0x5ffff), 'l1[0]', /past the end/);
  decodeL1Entry(table64([0x50000n]), 0, G64K, 0x60000);
  assertUnsupported(() => decodeL1Entry(table64([2n ** 53n]), 0, G64K), 'l1[0]', /2\^53/);
  assertCorrupt(() => decodeL1Table(table64([0n, 0n]), 0, 3, G64K), 'l1', /needs 24 bytes/);
});

test('decodeL1Table(encodeL1Table(x)) is x', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(l1EntryArb(g), { maxLength: 20 }))),
      ([g, entries]) => {
        assert.deepEqual(decodeL1Table(encodeL1Table(entries, g), 0, entries.length, g), entries);
      },
    ),
  );
});

test('decodeL2Entry() classifies standard entries', () => {
  const table = table64([0n, 1n, 0x70000n | 1n, 0x70000n | COPIED, 0x80000n, 0x90000n | 1n | COPIED]);
  assert.deepEqual(decodeL2Table(concatTable(table, G64K.clusterSize), 0, G64K).slice(0, 6), [
    { kind: 'unallocated' },
    { kind: 'zero', hostOffset: 0, copied: false },
    { kind: 'zero', hostOffset: 0x70000, copied: false },
    { kind: 'normal', hostOffset: 0x70000, copied: true },
    { kind: 'normal', hostOffset: 0x80000, copied: false },
    { kind: 'zero', hostOffset: 0x90000, copied: true },
  ]);
});

test('decodeL2Entry() rejects reserved bits, unaligned offsets and COPIED without an offset', () => {
  assertCorrupt(() => decodeL2Entry(table64([0x70000n | 2n]), 0, G64K), 'l2[0]', /reserved/);
  assertCorrupt(() => decodeL2Entry(table64([0x70000n | (1n << 61n)]), 0, G64K), 'l2[0]', /reserved/);
  assertCorrupt(() => decodeL2Entry(table64([0n, 0x70200n]), 1, G64K), 'l2[1]', /host offset 459264 is not aligned/);
  assertCorrupt(() => decodeL2Entry(table64([0x70200n | 1n]), 0, G64K), 'l2[0]', /not aligned/);
  assertCorrupt(() => decodeL2Entry(table64([COPIED]), 0, G64K), 'l2[0]', /COPIED/);
  assertUnsupported(() => decodeL2Entry(table64([2n ** 54n]), 0, G64K), 'l2[0]', /2\^53/);
});

test('decodeL2Entry() treats bit 0 as reserved in version 2 images', () => {
  assertCorrupt(() => decodeL2Entry(table64([1n]), 0, V2), 'l2[0]', /reserved/);
  assert.deepEqual(decodeL2Entry(table64([0x70000n]), 0, V2), { kind: 'normal', hostOffset: 0x70000, copied: false });
});

test('decodeL2Entry() with a file size rejects data clusters that start past the end', () => {
  assertCorrupt(() => decodeL2Entry(table64([0x70000n]), 0, G64K, 0x70000), 'l2[0]', /past the end/);
  assert.equal(decodeL2Entry(table64([0x70000n]), 0, G64K, 0x70001).kind, 'normal');
  // a preallocated zero cluster may lie past the end
  assert.equal(decodeL2Entry(table64([0x70000n | 1n]), 0, G64K, 0x10000).kind, 'zero');
  // clusters of an external data file are not in this file
  assert.equal(decodeL2Entry(table64([0x70000n]), 0, DATA_FILE, 0x10000).kind, 'normal');
});

test('decodeL2Entry() reads host offset 0 with COPIED as a cluster of an external data file', () => {
  assert.deepEqual(decodeL2Entry(table64([COPIED]), 0, DATA_FILE), { kind: 'normal', hostOffset: 0, copied: true });
  assert.deepEqual(decodeL2Entry(table64([0n]), 0, DATA_FILE), { kind: 'unallocated' });
});

test('decodeL2Entry() decodes compressed descriptors for every cluster size', () => {
  fc.assert(
    fc.property(fc.integer({ min: 9, max: 21 }), fc.bigInt({ min: 1n, max: 2n ** 53n - 1n }), fc.bigInt({ min: 0n, max: 8191n }), (clusterBits, offset, sectors) => {
      const x = BigInt(62 - (clusterBits - 8));
      const hostOffset = (offset % 2n ** (x < 53n ? x : 53n)) | (1n << BigInt(clusterBits)); // never in the header cluster
      const additional = sectors % 2n ** BigInt(clusterBits - 8);
      const g = makeGeometry({ clusterBits });
      const entry = decodeL2Entry(table64([compressedDescriptor(clusterBits, hostOffset, additional)]), 0, g);
      assert.deepEqual(entry, { kind: 'compressed', hostOffset: Number(hostOffset), additionalSectors: Number(additional) });
    }),
  );
});

test('compressedByteRange() runs from the offset to the end of the last sector', () => {
  assert.deepEqual(compressedByteRange({ hostOffset: 0x10000, additionalSectors: 0 }), { offset: 0x10000, length: 512 });
  assert.deepEqual(compressedByteRange({ hostOffset: 0x10123, additionalSectors: 0 }), { offset: 0x10123, length: 512 - 0x123 });
  assert.deepEqual(compressedByteRange({ hostOffset: 0x10123, additionalSectors: 3 }), { offset: 0x10123, length: 4 * 512 - 0x123 });
});

test('compressedCluster() counts the additional sectors and refuses what does not fit', () => {
  assert.deepEqual(compressedCluster(0x10123, 512 - 0x123, G64K), { kind: 'compressed', hostOffset: 0x10123, additionalSectors: 0 });
  assert.deepEqual(compressedCluster(0x10123, 512 - 0x122, G64K), { kind: 'compressed', hostOffset: 0x10123, additionalSectors: 1 });
  assert.deepEqual(compressedCluster(0x10000, 65536, G64K), { kind: 'compressed', hostOffset: 0x10000, additionalSectors: 127 });
  // 512-byte clusters have a 1-bit sector count
  const g512 = makeGeometry({ clusterBits: 9 });
  assert.equal(compressedCluster(0x1000, 1024, g512).additionalSectors, 1);
  assertInvalidArgument(() => compressedCluster(0x1001, 1024, g512), /additionalSectors/);
  assertInvalidArgument(() => compressedCluster(0x1000, 0, g512), /length/);
  assertInvalidArgument(() => compressedCluster(0x1000, 100, DATA_FILE), /external data file/);
});

test('decodeL2Entry() rejects invalid compressed entries', () => {
  assertCorrupt(() => decodeL2Entry(table64([compressedDescriptor(16, 0x10000n, 1n) | COPIED]), 0, G64K), 'l2[0]', /COPIED/);
  assertCorrupt(() => decodeL2Entry(table64([compressedDescriptor(16, 0x10000n, 1n)]), 0, DATA_FILE), 'l2[0]', /external data file/);
  // with 512-byte clusters the offset field has 61 bits; bits 56..60 must be zero
  assertCorrupt(() => decodeL2Entry(table64([compressedDescriptor(9, 1n << 57n, 0n)]), 0, makeGeometry({ clusterBits: 9 })), 'l2[0]', /above 55/);
  assertUnsupported(() => decodeL2Entry(table64([compressedDescriptor(9, 1n << 54n, 0n)]), 0, makeGeometry({ clusterBits: 9 })), 'l2[0]', /2\^53/);
  assertCorrupt(() => decodeL2Entry(table64([compressedDescriptor(16, 0x10000n, 1n)]), 0, G64K, 0x10000), 'l2[0]', /past the end/);
  assertCorrupt(() => decodeL2Entry(table64([compressedDescriptor(16, 0xffffn, 1n)]), 0, G64K), 'l2[0]', /header cluster/);
  // compressed data may end past the end of the file: only its start is checked
  assert.equal(decodeL2Entry(table64([compressedDescriptor(16, 0x10000n, 100n)]), 0, G64K, 0x10001).kind, 'compressed');
});

test('decodeL2Entry() reads extended L2 entries with their subcluster bitmaps', () => {
  const table = concatTable(
    [ext(0x70000n | COPIED, 0x0000ff00, 0x000000ff), ext(0n, 0xffffffff, 0), ext(0x80000n, 0, 0), ext(compressedDescriptor(16, 0x12345n, 2n), 0, 0)],
    EXT.clusterSize,
  );
  const entries = decodeL2Table(table, 0, EXT);
  assert.equal(entries.length, 4096);
  assert.deepEqual(entries.slice(0, 5), [
    { kind: 'normal', hostOffset: 0x70000, copied: true, subclusters: { allocated: 0xff, zero: 0xff00 } },
    { kind: 'unallocated', subclusters: { allocated: 0, zero: 0xffffffff } },
    { kind: 'normal', hostOffset: 0x80000, copied: false, subclusters: { allocated: 0, zero: 0 } },
    { kind: 'compressed', hostOffset: 0x12345, additionalSectors: 2 },
    { kind: 'unallocated', subclusters: { allocated: 0, zero: 0 } },
  ]);
  assert.deepEqual(encodeL2Table(entries, EXT), table);
  assert.deepEqual([0, 7, 8, 15, 16, 31].map((i) => subclusterKind(entries[0]!, i)), ['normal', 'normal', 'zero', 'zero', 'unallocated', 'unallocated']);
  assert.equal(subclusterKind(entries[1]!, 31), 'zero');
  assert.equal(subclusterKind(entries[3]!, 5), 'compressed');
});

test('decodeL2Entry() rejects inconsistent extended L2 entries', () => {
  assertCorrupt(() => decodeL2Entry(ext(0x70000n, 0x1, 0x1), 0, EXT), 'l2[0]', /both allocated and zero/);
  assertCorrupt(() => decodeL2Entry(ext(0n, 0, 0x80000000), 0, EXT), 'l2[0]', /allocated but the cluster has no host offset/);
  assertCorrupt(() => decodeL2Entry(ext(compressedDescriptor(16, 0x12345n, 2n), 0, 1), 0, EXT), 'l2[0]', /compressed cluster has a non-zero subcluster bitmap/);
  assertCorrupt(() => decodeL2Entry(ext(0x70000n | 1n, 0, 0), 0, EXT), 'l2[0]', /reserved/);
  assertCorrupt(() => decodeL2Entry(ext(0n, 0, 0).subarray(0, 12), 0, EXT), 'l2[0]', /needs 16 bytes/);
});

test('decodeL2Entry(writeL2Entry(x)) is x for every geometry', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(l2EntryArb(g), { minLength: 1, maxLength: 16 }))),
      ([g, entries]) => {
        const table = new Uint8Array(entries.length * g.l2EntrySize);
        entries.forEach((e, i) => writeL2Entry(table, i, e, g));
        entries.forEach((e, i) => assert.deepEqual(decodeL2Entry(table, i, g), e));
      },
    ),
    { numRuns: 500 },
  );
});

test('writeL2Entry() refuses entries the geometry cannot hold', () => {
  const t = new Uint8Array(16);
  const w = (e: L2Entry, g = G64K) => writeL2Entry(t, 0, e, g);
  assertInvalidArgument(() => w({ kind: 'zero', hostOffset: 0, copied: false }, V2), /version 3/);
  assertInvalidArgument(() => w({ kind: 'zero', hostOffset: 0, copied: false }, EXT), /subclusters/);
  assertInvalidArgument(() => w({ kind: 'normal', hostOffset: 0x70200, copied: true }), /not aligned/);
  assertInvalidArgument(() => w({ kind: 'normal', hostOffset: 0, copied: true }), /hostOffset/);
  assertInvalidArgument(() => w({ kind: 'normal', hostOffset: 0x70000, copied: true, subclusters: { allocated: 1, zero: 0 } }), /extended L2/);
  assertInvalidArgument(() => w({ kind: 'normal', hostOffset: 0x70000, copied: true, subclusters: { allocated: 1, zero: 1 } }, EXT), /both allocated and zero/);
  assertInvalidArgument(() => w({ kind: 'unallocated', subclusters: { allocated: 1, zero: 0 } }, EXT), /allocated subclusters/);
  assertInvalidArgument(() => w({ kind: 'compressed', hostOffset: 0xffff, additionalSectors: 0 }), /hostOffset/);
  assertInvalidArgument(() => w({ kind: 'compressed', hostOffset: 0x10200, additionalSectors: 256 }), /additionalSectors/);
  assertInvalidArgument(() => w({ kind: 'bogus' } as unknown as L2Entry), /unknown kind/);
  assertInvalidArgument(() => encodeL2Table(new Array(8193).fill({ kind: 'unallocated' }), G64K), /do not fit/);
});

/** `entries` (one buffer or several) padded with zeroes to a whole table. */
function concatTable(entries: Uint8Array | Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const e of Array.isArray(entries) ? entries : [entries]) {
    out.set(e, at);
    at += e.length;
  }
  return out;
}

test('table codecs refuse indexes outside the table instead of reading or writing nothing', () => {
  const table = new Uint8Array(16);
  assertInvalidArgument(() => decodeL2Entry(table, -1, G64K), /offset -8 is not a non-negative integer/);
  assertInvalidArgument(() => writeL2Entry(table, 2, { kind: 'unallocated' }, G64K), /do not fit in the 16 bytes/);
  assertInvalidArgument(() => writeL2Entry(table, -1, { kind: 'unallocated' }, G64K), /do not fit/);
  assertInvalidArgument(() => writeL2Entry(table, 1, { kind: 'unallocated', subclusters: { allocated: 0, zero: 0 } }, EXT), /do not fit/);
  assertInvalidArgument(() => writeRefcountTableEntry(table, 2, 0, G64K), /do not fit/);
  assertInvalidArgument(() => writeBitmapTableEntry(table, 2, { kind: 'zeroes' }, G64K), /do not fit/);
});
