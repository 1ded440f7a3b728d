import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesPerL2Table, clustersFor, geometryOf, l1EntriesFor, locateGuestOffset, locateRefcount, makeGeometry } from './geometry.js';
import { assertInvalidArgument } from './testing/assertions.js';

test('makeGeometry() derives the table sizes of the spec', () => {
  const g = makeGeometry({ clusterBits: 16 });
  assert.equal(g.clusterSize, 65536);
  assert.equal(g.l2EntrySize, 8);
  assert.equal(g.l2Entries, 8192);
  assert.equal(g.l2Bits, 13);
  assert.equal(g.subclustersPerCluster, 1);
  assert.equal(g.subclusterSize, 65536);
  assert.equal(g.tableEntriesPerCluster, 8192);
  assert.equal(g.refcountBits, 16);
  assert.equal(g.refcountBlockEntries, 32768);
  assert.equal(g.zeroFlag, true);
  // spec "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8)
  assert.equal(g.compressedOffsetBits, 54);
  assert.equal(g.compressedSectorBits, 8);
  assert.equal(bytesPerL2Table(g), 2 ** 29);

  const ext = makeGeometry({ clusterBits: 21, extendedL2: true, refcountOrder: 6 });
  assert.equal(ext.l2EntrySize, 16);
  assert.equal(ext.l2Entries, 2 ** 17);
  assert.equal(ext.l2Bits, 17);
  assert.equal(ext.subclustersPerCluster, 32);
  assert.equal(ext.subclusterSize, 65536);
  assert.equal(ext.zeroFlag, false);
  assert.equal(ext.refcountBlockEntries, 2 ** 18);
  assert.equal(ext.compressedOffsetBits, 49);

  const tiny = makeGeometry({ clusterBits: 9, version: 2 });
  assert.equal(tiny.zeroFlag, false);
  assert.equal(tiny.compressedOffsetBits, 61);
  assert.equal(tiny.compressedSectorBits, 1);
});

test('makeGeometry() refuses combinations the spec forbids', () => {
  assertInvalidArgument(() => makeGeometry({ clusterBits: 8 }), /cluster_bits/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 22 }), /cluster_bits/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 13, extendedL2: true }), /extended L2/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 16, refcountOrder: 7 }), /refcount_order/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 16, version: 2, refcountOrder: 3 }), /version 2/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 16, version: 2, extendedL2: true }), /version 2/);
  assertInvalidArgument(() => makeGeometry({ clusterBits: 16, version: 4 }), /version/);
});

test('geometryOf() reads the feature bits of a header', () => {
  const g = geometryOf({ version: 3, clusterBits: 14, refcountOrder: 2, incompatibleFeatures: 0b10100n });
  assert.equal(g.extendedL2, true);
  assert.equal(g.externalDataFile, true);
  assert.equal(g.refcountBits, 4);
  assert.equal(g.l2Entries, 1024);
});

test('l1EntriesFor() and clustersFor() round up', () => {
  const g = makeGeometry({ clusterBits: 16 });
  assert.equal(l1EntriesFor(0, g), 0);
  assert.equal(l1EntriesFor(1, g), 1);
  assert.equal(l1EntriesFor(2 ** 29, g), 1);
  assert.equal(l1EntriesFor(2 ** 29 + 1, g), 2);
  assert.equal(clustersFor(65536, g), 1);
  assert.equal(clustersFor(65537, g), 2);
});

test('locateGuestOffset() splits an offset into L1 index, L2 index, offset and subcluster', () => {
  const g = makeGeometry({ clusterBits: 16 });
  // spec "Cluster mapping": l2_index = (offset / cluster_size) % l2_entries
  assert.deepEqual(locateGuestOffset(3 * 2 ** 29 + 5 * 65536 + 1234, g), { l1Index: 3, l2Index: 5, offsetInCluster: 1234, subcluster: 0 });
  const ext = makeGeometry({ clusterBits: 16, extendedL2: true });
  assert.deepEqual(locateGuestOffset(2 ** 28 + 65536 + 6 * 2048 + 7, ext), { l1Index: 1, l2Index: 1, offsetInCluster: 6 * 2048 + 7, subcluster: 6 });
  assert.deepEqual(locateGuestOffset(2 ** 50 + 65535, g), { l1Index: 2 ** 21, l2Index: 0, offsetInCluster: 65535, subcluster: 0 });
});

test('locateRefcount() finds the refcount table and block index of a host offset', () => {
  const g = makeGeometry({ clusterBits: 16 }); // 32768 refcounts per block
  assert.deepEqual(locateRefcount(0, g), { tableIndex: 0, blockIndex: 0 });
  assert.deepEqual(locateRefcount(32769 * 65536 + 10, g), { tableIndex: 1, blockIndex: 1 });
  const rc1 = makeGeometry({ clusterBits: 9, refcountOrder: 0 }); // 4096 refcounts per block
  assert.deepEqual(locateRefcount(4096 * 512 * 7 + 512 * 3, rc1), { tableIndex: 7, blockIndex: 3 });
});
