import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeGeometry } from './geometry.js';
import {
  decodeRefcountTable,
  decodeRefcountTableEntry,
  encodeRefcountTable,
  getRefcount,
  maxRefcount,
  refcountLayoutFor,
  setRefcount,
} from './refcount.js';
import { alignedOffset, geometryArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { ByteBuilder, table64 } from './testing/builder.js';

const G64K = makeGeometry({ clusterBits: 16 });

/**
 * The spec's layout, written independently: entry `i` of width `bits` occupies bits
 * [i*bits, (i+1)*bits); below 8 bits they fill each byte from its least significant bit,
 * from 8 bits on each entry is a big-endian integer.
 */
function modelWrite(block: Uint8Array, index: number, bits: number, value: bigint): void {
  if (bits < 8) {
    const perByte = 8 / bits;
    const byte = Math.floor(index / perByte);
    const shift = (index % perByte) * bits;
    block[byte] = (block[byte]! & ~(((1 << bits) - 1) << shift)) | (Number(value) << shift);
    return;
  }
  const width = bits / 8;
  for (let k = 0; k < width; k++) block[index * width + k] = Number((value >> BigInt(8 * (width - 1 - k))) & 0xffn);
}

test('getRefcount() reads packed sub-byte refcounts from the least significant bit', () => {
  const order0 = new Uint8Array([0b10100001, 0b00000010]);
  assert.deepEqual([0, 1, 5, 7, 8, 9].map((i) => getRefcount(order0, i, 0)), [1, 0, 1, 1, 0, 1]);
  const order1 = new Uint8Array([0b11100100]);
  assert.deepEqual([0, 1, 2, 3].map((i) => getRefcount(order1, i, 1)), [0, 1, 2, 3]);
  const order2 = new Uint8Array([0x3a, 0xf0]);
  assert.deepEqual([0, 1, 2, 3].map((i) => getRefcount(order2, i, 2)), [0xa, 0x3, 0x0, 0xf]);
});

test('getRefcount() reads 8- to 64-bit refcounts as big-endian integers', () => {
  assert.equal(getRefcount(new Uint8Array([1, 0xfe]), 1, 3), 0xfe);
  assert.equal(getRefcount(new ByteBuilder().u16(1).u16(0x1234).build(), 1, 4), 0x1234);
  assert.equal(getRefcount(new ByteBuilder().u32(0).u32(0x89abcdef).build(), 1, 5), 0x89abcdef);
  assert.equal(getRefcount(new ByteBuilder().u64(0).u64(2n ** 53n - 1n).build(), 1, 6), 2 ** 53 - 1);
});

test('getRefcount() refuses a 64-bit refcount of 2^53 or more', () => {
  assertUnsupported(() => getRefcount(new ByteBuilder().u64(0).u64(2n ** 53n).build(), 1, 6), 'refcount_block[1]', /2\^53/);
});

test('getRefcount() rejects an index past the bytes given', () => {
  assertCorrupt(() => getRefcount(new Uint8Array(4), 2, 4), 'refcount_block[2]', /needs 2 bytes/);
  assertCorrupt(() => getRefcount(new Uint8Array(1), 8, 0), 'refcount_block[8]');
});

test('setRefcount() writes the spec layout and getRefcount() reads it back, for every width', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 6 }).chain((order) =>
        fc.tuple(
          fc.constant(order),
          fc.array(fc.tuple(fc.integer({ min: 0, max: (512 * 8) / 2 ** order - 1 }), fc.bigInt({ min: 0n, max: 2n ** BigInt(Math.min(2 ** order, 53)) - 1n })), {
            maxLength: 40,
          }),
        ),
      ),
      ([order, writes]) => {
        const bits = 2 ** order;
        const block = new Uint8Array(512);
        const model = new Uint8Array(512);
        const expected = new Map<number, number>();
        for (const [index, value] of writes) {
          setRefcount(block, index, order, Number(value));
          modelWrite(model, index, bits, value);
          expected.set(index, Number(value));
        }
        assert.deepEqual(block, model);
        for (const [index, value] of expected) assert.equal(getRefcount(block, index, order), value);
      },
    ),
    { numRuns: 300 },
  );
});

test('setRefcount() refuses values wider than the refcount and indexes past the block', () => {
  assertInvalidArgument(() => setRefcount(new Uint8Array(8), 0, 0, 2), /refcount_block\[0\]/);
  assertInvalidArgument(() => setRefcount(new Uint8Array(8), 0, 4, 65536), /0\.\.65535/);
  assertInvalidArgument(() => setRefcount(new Uint8Array(8), 4, 4, 1), /index/);
  assertInvalidArgument(() => setRefcount(new Uint8Array(8), 0, 4, -1), /refcount_block/);
});

test('maxRefcount() is 2^bits - 1, capped at 2^53 - 1', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(maxRefcount), [1, 3, 15, 255, 65535, 0xffffffff, Number.MAX_SAFE_INTEGER]);
  assertInvalidArgument(() => maxRefcount(7), /refcount_order/);
});

test('decodeRefcountTableEntry() reads block offsets and rejects reserved bits, misalignment and the end of file', () => {
  const table = table64([0x20000n, 0n, 2n ** 52n + 0x10000n]);
  assert.deepEqual(decodeRefcountTable(table, 0, 3, G64K), [0x20000, 0, 2 ** 52 + 0x10000]);
  assertCorrupt(() => decodeRefcountTableEntry(table64([0x20000n | 0x100n]), 0, G64K), 'refcount_table[0]', /reserved/);
  assertCorrupt(() => decodeRefcountTableEntry(table64([0n, 0x20200n]), 1, G64K), 'refcount_table[1]', /not aligned/);
  assertCorrupt(() => decodeRefcountTableEntry(table64([0x20000n]), 0, G64K, 0x2ffff), 'refcount_table[0]', /past the end/);
  assertUnsupported(() => decodeRefcountTableEntry(table64([1n << 63n]), 0, G64K), 'refcount_table[0]', /2\^53/);
  assertCorrupt(() => decodeRefcountTable(table, 8, 3, G64K), 'refcount_table', /needs 24 bytes but only 16/);
});

test('decodeRefcountTable(encodeRefcountTable(x)) is x', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(fc.oneof(fc.constant(0), alignedOffset(g.clusterSize)), { maxLength: 30 }))),
      ([g, offsets]) => {
        assert.deepEqual(decodeRefcountTable(encodeRefcountTable(offsets, g), 0, offsets.length, g), offsets);
      },
    ),
  );
  assertInvalidArgument(() => encodeRefcountTable([0x20100], G64K), /not aligned/);
});

test('refcountLayoutFor() counts the refcount structures themselves', () => {
  // 64 KiB clusters, 16-bit refcounts: 32768 refcounts per block, 8192 blocks per table cluster
  assert.deepEqual(refcountLayoutFor(3, G64K), { blocks: 1, tableClusters: 1, totalClusters: 5 });
  assert.deepEqual(refcountLayoutFor(32766, G64K), { blocks: 1, tableClusters: 1, totalClusters: 32768 });
  assert.deepEqual(refcountLayoutFor(32767, G64K), { blocks: 2, tableClusters: 1, totalClusters: 32770 });
  assert.deepEqual(refcountLayoutFor(0, G64K), { blocks: 0, tableClusters: 0, totalClusters: 0 });
  // 512-byte clusters, 64-bit refcounts: 64 refcounts per block, 64 blocks per table cluster
  const tiny = makeGeometry({ clusterBits: 9, refcountOrder: 6 });
  assert.deepEqual(refcountLayoutFor(62, tiny), { blocks: 1, tableClusters: 1, totalClusters: 64 });
  assert.deepEqual(refcountLayoutFor(63, tiny), { blocks: 2, tableClusters: 1, totalClusters: 66 });
});

test('refcountLayoutFor() returns the smallest layout that covers itself', () => {
  fc.assert(
    fc.property(geometryArb, fc.integer({ min: 1, max: 2 ** 40 }), (g, clusters) => {
      const { blocks, tableClusters, totalClusters } = refcountLayoutFor(clusters, g);
      assert.equal(totalClusters, clusters + blocks + tableClusters);
      assert.ok(blocks * g.refcountBlockEntries >= totalClusters, 'the blocks cover every cluster');
      assert.ok(tableClusters * g.tableEntriesPerCluster >= blocks, 'the table points to every block');
      assert.equal(tableClusters, Math.ceil(blocks / g.tableEntriesPerCluster));
      // one block fewer, with the table it would need, would not cover the image
      const fewer = blocks - 1;
      assert.ok(fewer * g.refcountBlockEntries < clusters + fewer + Math.ceil(fewer / g.tableEntriesPerCluster));
    }),
    { numRuns: 300 },
  );
});
