import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeBitmapTable, decodeBitmapTableEntry, encodeBitmapTable, writeBitmapTableEntry, type BitmapTableEntry } from './bitmap-table.js';
import { makeGeometry } from './geometry.js';
import { bitmapTableEntryArb, geometryArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { table64 } from './testing/builder.js';

const G64K = makeGeometry({ clusterBits: 16 });

test('decodeBitmapTable() reads all-zeroes, all-ones and data clusters', () => {
  const table = table64([0n, 1n, 0x70000n, 2n ** 52n]);
  assert.deepEqual(decodeBitmapTable(table, 0, 4, G64K), [{ kind: 'zeroes' }, { kind: 'ones' }, { kind: 'data', hostOffset: 0x70000 }, { kind: 'data', hostOffset: 2 ** 52 }]);
  assert.deepEqual(encodeBitmapTable(decodeBitmapTable(table, 0, 4, G64K), G64K), table);
});

test('decodeBitmapTableEntry() rejects reserved bits, bit 0 with an offset, misalignment and the end of file', () => {
  assertCorrupt(() => decodeBitmapTableEntry(table64([2n]), 0, G64K), 'bitmap_table[0]', /reserved/);
  assertCorrupt(() => decodeBitmapTableEntry(table64([0n, 1n << 56n]), 1, G64K), 'bitmap_table[1]', /reserved/);
  assertCorrupt(() => decodeBitmapTableEntry(table64([1n << 63n]), 0, G64K), 'bitmap_table[0]', /reserved/);
  assertCorrupt(() => decodeBitmapTableEntry(table64([0x70000n | 1n]), 0, G64K), 'bitmap_table[0]', /bit 0 is set together with the offset/);
  assertCorrupt(() => decodeBitmapTableEntry(table64([0x70200n]), 0, G64K), 'bitmap_table[0]', /not aligned/);
  assertCorrupt(() => decodeBitmapTableEntry(table64([0x70000n]), 0, G64K, 0x7ffff), 'bitmap_table[0]', /past the end/);
  assertUnsupported(() => decodeBitmapTableEntry(table64([2n ** 54n]), 0, G64K), 'bitmap_table[0]', /2\^53/);
  assertCorrupt(() => decodeBitmapTable(table64([0n]), 0, 2, G64K), 'bitmap_table', /needs 16 bytes/);
});

test('decodeBitmapTable(encodeBitmapTable(x)) is x', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(bitmapTableEntryArb(g), { maxLength: 30 }))),
      ([g, entries]) => {
        assert.deepEqual(decodeBitmapTable(encodeBitmapTable(entries, g), 0, entries.length, g), entries);
      },
    ),
  );
});

test('writeBitmapTableEntry() refuses unaligned or zero data offsets', () => {
  const t = new Uint8Array(8);
  assertInvalidArgument(() => writeBitmapTableEntry(t, 0, { kind: 'data', hostOffset: 0x70200 }, G64K), /not aligned/);
  assertInvalidArgument(() => writeBitmapTableEntry(t, 0, { kind: 'data', hostOffset: 0 }, G64K), /hostOffset/);
  assertInvalidArgument(() => writeBitmapTableEntry(t, 0, { kind: 'nope' } as unknown as BitmapTableEntry, G64K), /unknown kind/);
});
