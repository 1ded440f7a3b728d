import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { bitmapDirectorySize, bitmapFlags, bitmapTableSizeFor, decodeBitmapDirectory, encodeBitmapDirectory, type BitmapDirectoryContext } from './bitmap-directory.js';
import { makeGeometry } from './geometry.js';
import { bitmapDirectoryArb, geometryArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { bitmapEntryBytes, concat } from './testing/builder.js';

const G64K = makeGeometry({ clusterBits: 16 });
const GIB = 2 ** 30;
const CTX: BitmapDirectoryContext = { geometry: G64K, virtualSize: GIB };

function decode(dir: Uint8Array, nbBitmaps: number, fileSize?: number, context = CTX) {
  return decodeBitmapDirectory(dir, 0, { nbBitmaps, bitmapDirectorySize: dir.length }, context, fileSize);
}

test('decodeBitmapDirectory() reads every field of every entry', () => {
  const dir = concat(
    bitmapEntryBytes({ name: 'b0', tableOffset: 0x50000, tableSize: 1, flags: 2, granularityBits: 16 }),
    bitmapEntryBytes({ name: 'checkpoint-é', tableOffset: 0x60000, tableSize: 4, flags: 5, granularityBits: 9, extraData: new Uint8Array([1, 2, 3]) }),
  );
  assert.equal(dir.length, 32 + 40);
  assert.deepEqual(decode(dir, 2), [
    { name: 'b0', bitmapTableOffset: 0x50000, bitmapTableSize: 1, granularityBits: 16, inUse: false, auto: true, extraDataCompatible: false, extraData: new Uint8Array(0) },
    { name: 'checkpoint-é', bitmapTableOffset: 0x60000, bitmapTableSize: 4, granularityBits: 9, inUse: true, auto: false, extraDataCompatible: true, extraData: new Uint8Array([1, 2, 3]) },
  ]);
  assert.deepEqual(encodeBitmapDirectory(decode(dir, 2), CTX), dir);
});

test('decodeBitmapDirectory() starts at the given offset', () => {
  const entry = bitmapEntryBytes({ name: 'x', tableOffset: 0x50000, tableSize: 1 });
  const bytes = concat(new Uint8Array(24), entry);
  assert.equal(decodeBitmapDirectory(bytes, 24, { nbBitmaps: 1, bitmapDirectorySize: 32 }, CTX)[0]?.name, 'x');
});

test('decodeBitmapDirectory(encodeBitmapDirectory(x)) is x', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.integer({ min: 0, max: 2 ** 40 }).chain((size) => fc.tuple(fc.constant(g), fc.constant(size), bitmapDirectoryArb(g, size)))),
      ([geometry, virtualSize, entries]) => {
        const context = { geometry, virtualSize };
        const bytes = encodeBitmapDirectory(entries, context);
        assert.equal(bytes.length, bitmapDirectorySize(entries));
        assert.deepEqual(decodeBitmapDirectory(bytes, 0, { nbBitmaps: entries.length, bitmapDirectorySize: bytes.length }, context), entries);
      },
    ),
    { numRuns: 300 },
  );
});

test('bitmapTableSizeFor() is one entry per cluster of bitmap data', () => {
  // 1 GiB at 64 KiB granularity: 16384 bits = 2048 bytes, one 64 KiB cluster
  assert.equal(bitmapTableSizeFor(GIB, 16, G64K), 1);
  // 1 TiB at 512 bytes: 2^31 bits = 256 MiB of data = 4096 clusters
  assert.equal(bitmapTableSizeFor(2 ** 40, 9, G64K), 4096);
  assert.equal(bitmapTableSizeFor(2 ** 40 + 1, 9, G64K), 4097);
  assert.equal(bitmapTableSizeFor(0, 16, G64K), 0);
});

test('bitmapFlags() packs the flags as stored', () => {
  assert.equal(bitmapFlags({ inUse: true, auto: true, extraDataCompatible: false }), 3);
  assert.equal(bitmapFlags({ inUse: false, auto: false, extraDataCompatible: true }), 4);
});

test('decodeBitmapDirectory() rejects reserved flags and types', () => {
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, flags: 8 }), 1), 'bitmap_directory[0].flags', /0x8/);
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, type: 2 }), 1), 'bitmap_directory[0].type', /\b2\b/);
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, type: 0 }), 1), 'bitmap_directory[0].type');
});

test('decodeBitmapDirectory() refuses extra data that is not marked compatible', () => {
  const e = assertUnsupported(
    () => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, flags: 2, extraData: new Uint8Array(8) }), 1),
    'bitmap_directory[0].extra_data',
    /must not be used/,
  );
  assert.match(e.message, /'b'/);
});

test('decodeBitmapDirectory() checks names', () => {
  assertCorrupt(() => decode(bitmapEntryBytes({ name: '', tableOffset: 0x50000, tableSize: 1 }), 1), 'bitmap_directory[0].name', /empty/);
  assertUnsupported(() => decode(bitmapEntryBytes({ name: 'n'.repeat(1024), tableOffset: 0x50000, tableSize: 1 }), 1), 'bitmap_directory[0].name', /1023/);
  decode(bitmapEntryBytes({ name: 'n'.repeat(1023), tableOffset: 0x50000, tableSize: 1 }), 1);
  const dup = concat(bitmapEntryBytes({ name: 'same', tableOffset: 0x50000, tableSize: 1 }), bitmapEntryBytes({ name: 'same', tableOffset: 0x60000, tableSize: 1 }));
  assertCorrupt(() => decode(dup, 2), 'bitmap_directory[1].name', /'same' is used by an earlier bitmap/);
  const bad = bitmapEntryBytes({ name: 'ab', tableOffset: 0x50000, tableSize: 1 });
  bad[24] = 0xc3;
  assertCorrupt(() => decode(bad, 1), 'bitmap_directory[0].name', /UTF-8/);
});

test('decodeBitmapDirectory() rejects non-zero padding', () => {
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, padding: 0xee }), 1), 'bitmap_directory[0]', /padding/);
});

test('decodeBitmapDirectory() checks granularity against what QEMU supports', () => {
  const withBits = (granularityBits: number) => bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 64, granularityBits });
  assertUnsupported(() => decode(withBits(8), 1), 'bitmap_directory[0].granularity_bits', /\b8\b/);
  assertUnsupported(() => decode(withBits(32), 1), 'bitmap_directory[0].granularity_bits', /\b32\b/);
  assertCorrupt(() => decode(withBits(64), 1), 'bitmap_directory[0].granularity_bits', /0\.\.63/);
  assert.equal(decode(withBits(9), 1)[0]?.granularityBits, 9);
  assert.equal(decode(withBits(31), 1)[0]?.granularityBits, 31);
});

test('decodeBitmapDirectory() checks the bitmap table offset and size', () => {
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50200, tableSize: 1 }), 1), 'bitmap_directory[0].bitmap_table_offset', /multiple of the cluster size/);
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0, tableSize: 1 }), 1), 'bitmap_directory[0].bitmap_table_offset');
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 0 }), 1), 'bitmap_directory[0].bitmap_table_size', /is 0/);
  assertUnsupported(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 8193 }), 1), 'bitmap_directory[0].bitmap_table_size', /limits/);
  assertCorrupt(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 2 }), 1, 0x5000f), 'bitmap_directory[0].bitmap_table_offset', /past the end/);
  decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 2 }), 1, 0x50010);
  assertUnsupported(() => decode(bitmapEntryBytes({ name: 'b', tableOffset: 2n ** 62n, tableSize: 1 }), 1), 'bitmap_directory[0].bitmap_table_offset', /2\^53/);
});

test('decodeBitmapDirectory() rejects a table too small for the disk unless the bitmap is in use', () => {
  // 2 TiB at 64 KiB granularity: 2^25 bits = 4 MiB of data = 64 clusters
  const context = { geometry: G64K, virtualSize: 2 ** 41 };
  const small = (flags: number) => bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 63, flags, granularityBits: 16 });
  assertCorrupt(() => decode(small(2), 1, undefined, context), 'bitmap_directory[0].bitmap_table_size', /64 needed/);
  assert.equal(decode(small(1), 1, undefined, context)[0]?.inUse, true);
  decode(bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 64, granularityBits: 16 }), 1, undefined, context);
});

test('decodeBitmapDirectory() rejects sizes that disagree with the extension', () => {
  const one = bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1 });
  assertCorrupt(() => decodeBitmapDirectory(concat(one, new Uint8Array(8)), 0, { nbBitmaps: 1, bitmapDirectorySize: 40 }, CTX), 'bitmap_directory', /take 32 bytes but the extension says 40/);
  assertCorrupt(() => decodeBitmapDirectory(one, 0, { nbBitmaps: 2, bitmapDirectorySize: 32 }, CTX), 'bitmap_directory[1]', /no room/);
  assertCorrupt(() => decodeBitmapDirectory(one, 0, { nbBitmaps: 1, bitmapDirectorySize: 40 }, CTX), 'bitmap_directory', /needs 40 bytes but only 32/);
  const long = bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, nameSize: 9 });
  assertCorrupt(() => decode(long, 1), 'bitmap_directory[0]', /runs past the 32-byte directory/);
  const huge = bitmapEntryBytes({ name: 'b', tableOffset: 0x50000, tableSize: 1, extraDataSize: 0xffffffff });
  assertCorrupt(() => decode(huge, 1), 'bitmap_directory[0]', /4294967295 bytes of extra data/);
  assertUnsupported(() => decodeBitmapDirectory(one, 0, { nbBitmaps: 65536, bitmapDirectorySize: 32 }, CTX), 'bitmap_directory', /65535/);
});

test('encodeBitmapDirectory() refuses what the decoder would reject', () => {
  const base = { name: 'b', bitmapTableOffset: 0x50000, bitmapTableSize: 1, granularityBits: 16, inUse: false, auto: true, extraDataCompatible: false, extraData: new Uint8Array(0) };
  assertInvalidArgument(() => encodeBitmapDirectory([], CTX), /1\.\.65535/);
  assertInvalidArgument(() => encodeBitmapDirectory([{ ...base, name: '' }], CTX), /empty/);
  assertInvalidArgument(() => encodeBitmapDirectory([base, base], CTX), /earlier bitmap/);
  assertInvalidArgument(() => encodeBitmapDirectory([{ ...base, granularityBits: 40 }], CTX), /granularity/);
  assertInvalidArgument(() => encodeBitmapDirectory([{ ...base, extraData: new Uint8Array(1) }], CTX), /extra data/);
  assertInvalidArgument(() => encodeBitmapDirectory([{ ...base, bitmapTableOffset: 0x100 }], CTX), /bitmap_table_offset/);
  assertInvalidArgument(() => encodeBitmapDirectory([{ ...base, bitmapTableSize: 0 }], { geometry: G64K, virtualSize: 2 ** 41 }), /bitmap_table_size/);
});
