import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeHeader, encodeHeader, featuresOf, newHeader } from './header.js';
import { headerArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { DEFAULT_HEADER, extensionBytes, featureTableBytes, headerBytes, headerCluster, patched } from './testing/builder.js';

const FILE = 0x100000; // a file size that holds every default table

test('decodeHeader() reads every field of a version 3 header', () => {
  const trailing = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 9, 8, 7, 6, 5, 4, 3, 2]);
  const bytes = headerBytes({
    backingFileOffset: 0x200,
    backingFileSize: 10,
    clusterBits: 14,
    size: 3 * 2 ** 30 + 512,
    l1Size: 200,
    l1TableOffset: 0x8000,
    refcountTableOffset: 0x4000,
    refcountTableClusters: 3,
    nbSnapshots: 2,
    snapshotsOffset: 0xc000,
    incompatibleFeatures: 0b11001n,
    compatibleFeatures: 0x8000000000000001n,
    autoclearFeatures: 0x4000000000000001n,
    refcountOrder: 5,
    headerLength: 120,
    compressionType: 1,
    trailing,
  });
  const h = decodeHeader(bytes);
  assert.deepEqual(h, {
    version: 3,
    backingFileOffset: 0x200,
    backingFileSize: 10,
    clusterBits: 14,
    size: 3 * 2 ** 30 + 512,
    cryptMethod: 0,
    l1Size: 200,
    l1TableOffset: 0x8000,
    refcountTableOffset: 0x4000,
    refcountTableClusters: 3,
    nbSnapshots: 2,
    snapshotsOffset: 0xc000,
    incompatibleFeatures: 0b11001n,
    compatibleFeatures: 0x8000000000000001n,
    autoclearFeatures: 0x4000000000000001n,
    refcountOrder: 5,
    headerLength: 120,
    compressionType: 1,
    trailingBytes: trailing,
  });
  assert.deepEqual(encodeHeader(h), bytes);
});

test('decodeHeader() gives a version 2 header the implied version 3 values', () => {
  const bytes = headerBytes({ version: 2, clusterBits: 12, size: 2 ** 20, l1Size: 1, l1TableOffset: 0x3000, refcountTableOffset: 0x1000 });
  assert.equal(bytes.length, 72);
  const h = decodeHeader(bytes);
  assert.equal(h.version, 2);
  assert.equal(h.headerLength, 72);
  assert.equal(h.refcountOrder, 4);
  assert.equal(h.incompatibleFeatures, 0n);
  assert.equal(h.compressionType, 0);
  assert.equal(h.trailingBytes.length, 0);
  assert.deepEqual(encodeHeader(h), bytes);
});

test('decodeHeader() of a 104-byte version 3 header has no compression type field', () => {
  const bytes = headerBytes({ headerLength: 104 });
  assert.equal(bytes.length, 104);
  const h = decodeHeader(bytes);
  assert.equal(h.compressionType, 0);
  assert.equal(h.trailingBytes.length, 0);
  assert.deepEqual(encodeHeader(h), bytes);
});

test('decodeHeader() keeps unknown trailing header fields and encodeHeader() writes them back', () => {
  const trailing = Uint8Array.from({ length: 23 }, (_, i) => i + 1);
  const bytes = headerBytes({ headerLength: 128, trailing });
  const h = decodeHeader(bytes);
  assert.deepEqual(h.trailingBytes, trailing);
  assert.deepEqual(encodeHeader(h), bytes);
});

test('decodeHeader() does not keep a reference to the input bytes', () => {
  const bytes = headerBytes({ headerLength: 120, trailing: new Uint8Array(15).fill(3) });
  const h = decodeHeader(bytes);
  bytes.fill(0);
  assert.deepEqual(h.trailingBytes, new Uint8Array(15).fill(3));
});

test('decodeHeader(encodeHeader(h)) is h for any valid header', () => {
  fc.assert(
    fc.property(headerArb, (h) => {
      assert.deepEqual(decodeHeader(encodeHeader(h)), h);
    }),
    { numRuns: 300 },
  );
});

test('newHeader() fills in QEMU defaults that encode and decode', () => {
  const h = newHeader({ clusterBits: 16, size: 2 ** 30, l1Size: 2, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1 });
  assert.equal(h.version, 3);
  assert.equal(h.headerLength, 112);
  assert.equal(h.trailingBytes.length, 7);
  assert.deepEqual(encodeHeader(h), headerBytes());
  const v2 = newHeader({ version: 2, clusterBits: 16, size: 2 ** 30, l1Size: 2, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1 });
  assert.deepEqual(encodeHeader(v2), headerBytes({ version: 2 }));
});

test('featuresOf() names each known feature bit', () => {
  const h = decodeHeader(headerBytes({ l1Size: 4, incompatibleFeatures: 0b10110n, compatibleFeatures: 1n, autoclearFeatures: 3n }), FILE);
  assert.deepEqual(featuresOf(h), {
    dirty: false,
    corrupt: true,
    externalDataFile: true,
    compressionType: false,
    extendedL2: true,
    lazyRefcounts: true,
    bitmaps: true,
    rawExternalData: true,
  });
  assert.deepEqual(featuresOf({ incompatibleFeatures: 0b01001n, compatibleFeatures: 0n, autoclearFeatures: 0n }), {
    dirty: true,
    corrupt: false,
    externalDataFile: false,
    compressionType: true,
    extendedL2: false,
    lazyRefcounts: false,
    bitmaps: false,
    rawExternalData: false,
  });
});

test('decodeHeader() rejects a bad magic', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ magic: 0x514649fa })), 'header.magic', /0x514649fa/);
});

test('decodeHeader() refuses versions other than 2 and 3 as unsupported', () => {
  for (const version of [0, 1, 4, 0xffffffff]) {
    assertUnsupported(() => decodeHeader(headerBytes({ version })), 'header.version', new RegExp(`version ${version}`));
  }
});

test('decodeHeader() rejects input shorter than the header', () => {
  const full = headerBytes();
  for (const length of [0, 3, 4, 7, 8, 71, 103, 111]) {
    assertCorrupt(() => decodeHeader(full.subarray(0, length)), /^header/, /needs \d+ bytes/);
  }
  assertCorrupt(() => decodeHeader(headerBytes({ version: 2 }).subarray(0, 71)), 'header');
});

test('decodeHeader() checks cluster_bits against 9..21', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ clusterBits: 8 })), 'header.cluster_bits', /\b8\b/);
  assertCorrupt(() => decodeHeader(headerBytes({ clusterBits: 0 })), 'header.cluster_bits');
  assertUnsupported(() => decodeHeader(headerBytes({ clusterBits: 22 })), 'header.cluster_bits', /\b22\b/);
  assertUnsupported(() => decodeHeader(headerBytes({ clusterBits: 0xffffffff })), 'header.cluster_bits');
});

test('decodeHeader() checks header_length bounds and alignment', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ headerLength: 96 })), 'header.header_length', /96/);
  assertCorrupt(() => decodeHeader(headerBytes({ headerLength: 108 })), 'header.header_length', /multiple of 8/);
  assertCorrupt(() => decodeHeader(headerBytes({ clusterBits: 9, size: 512, l1Size: 1, l1TableOffset: 0x400, refcountTableOffset: 0x200, headerLength: 520 })), 'header.header_length', /cluster size/);
  assertCorrupt(() => decodeHeader(patched(headerBytes(), 100, [0xff, 0xff, 0xff, 0xf8])), 'header.header_length', /4294967288/);
});

test('decodeHeader() names unknown incompatible feature bits', () => {
  const e = assertUnsupported(() => decodeHeader(headerBytes({ incompatibleFeatures: (1n << 5n) | (1n << 40n) | 1n })), 'header.incompatible_features');
  assert.match(e.message, /bit 5\b/);
  assert.match(e.message, /bit 40\b/);
  assert.doesNotMatch(e.message, /bit 0\b/);
});

test('decodeHeader() takes names for unknown incompatible bits from the feature name table', () => {
  const cluster = headerCluster({
    header: { incompatibleFeatures: 1n << 7n },
    extensions: [extensionBytes(0x6803f857, featureTableBytes([{ type: 0, bit: 7, name: 'frobnication' }, { type: 1, bit: 7, name: 'other' }]))],
  });
  assertUnsupported(() => decodeHeader(cluster), 'header.incompatible_features', /bit 7 'frobnication'/);
});

test('decodeHeader() rejects refcount_order above 6', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ refcountOrder: 7 })), 'header.refcount_order', /\b7\b/);
});

test('decodeHeader() checks table offsets for cluster alignment', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ l1TableOffset: 0x30200 })), 'header.l1_table_offset', /0x30200|197120/);
  assertCorrupt(() => decodeHeader(headerBytes({ refcountTableOffset: 0x10008 })), 'header.refcount_table_offset');
  assertCorrupt(() => decodeHeader(headerBytes({ nbSnapshots: 1, snapshotsOffset: 0x20001 })), 'header.snapshots_offset');
  assertCorrupt(() => decodeHeader(headerBytes({ nbSnapshots: 0, snapshotsOffset: 0x20001 })), 'header.snapshots_offset');
});

test('decodeHeader() rejects tables at offset 0, inside the header cluster', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ l1TableOffset: 0 })), 'header.l1_table_offset', /overlap/);
  assertCorrupt(() => decodeHeader(headerBytes({ refcountTableOffset: 0 })), 'header.refcount_table_offset');
  assertCorrupt(() => decodeHeader(headerBytes({ nbSnapshots: 3, snapshotsOffset: 0 })), 'header.snapshots_offset');
  decodeHeader(headerBytes({ l1Size: 0, size: 0, l1TableOffset: 0 }));
});

test('decodeHeader() with a file size rejects tables past the end of the file', () => {
  decodeHeader(headerBytes(), 0x40000);
  assertCorrupt(() => decodeHeader(headerBytes(), 0x30008), 'header.l1_table_offset', /past the end/);
  assertCorrupt(() => decodeHeader(headerBytes({ refcountTableOffset: 0x40000 }), 0x40000), 'header.refcount_table_offset', /past the end/);
  assertCorrupt(() => decodeHeader(headerBytes({ nbSnapshots: 2, snapshotsOffset: 0x40000 }), 0x40040), 'header.snapshots_offset', /past the end/);
  assertCorrupt(() => decodeHeader(headerBytes({ backingFileOffset: 0x200, backingFileSize: 10 }), 0x205), 'header.backing_file_offset', /past the end/);
});

test('decodeHeader() rejects an L1 table too small for the virtual size', () => {
  // 64 KiB clusters: one L1 entry maps 512 MiB
  assertCorrupt(() => decodeHeader(headerBytes({ size: 2 ** 29 + 1, l1Size: 1 })), 'header.l1_size', /2 needed/);
  decodeHeader(headerBytes({ size: 2 ** 29, l1Size: 1 }));
  // with extended L2 entries, an L2 table has half as many entries
  assertCorrupt(() => decodeHeader(headerBytes({ size: 2 ** 29, l1Size: 1, incompatibleFeatures: 16n })), 'header.l1_size', /2 needed/);
});

test('decodeHeader() refuses sizes beyond QEMU limits and 2^53', () => {
  assertUnsupported(() => decodeHeader(headerBytes({ size: 2n ** 53n })), 'header.size', /2\^53/);
  assertUnsupported(() => decodeHeader(headerBytes({ size: 2n ** 64n - 1n })), 'header.size');
  // 512-byte clusters: at most 2^22 L1 entries of 32 KiB each, 128 GiB
  assertUnsupported(() => decodeHeader(headerBytes({ clusterBits: 9, size: 2 ** 37 + 1, l1Size: 2 ** 22, l1TableOffset: 0x400, refcountTableOffset: 0x200 })), 'header.size', /32 MiB/);
  assertUnsupported(() => decodeHeader(headerBytes({ l1Size: 2 ** 22 + 1 })), 'header.l1_size', /32 MiB/);
  assertUnsupported(() => decodeHeader(headerBytes({ l1TableOffset: 2n ** 60n })), 'header.l1_table_offset', /2\^53/);
  assertUnsupported(() => decodeHeader(headerBytes({ refcountTableClusters: 129 })), 'header.refcount_table_clusters', /8 MiB/);
  assertUnsupported(() => decodeHeader(headerBytes({ nbSnapshots: 65537, snapshotsOffset: 0x50000 })), 'header.nb_snapshots', /65536/);
});

test('decodeHeader() rejects an image without a refcount table', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ refcountTableClusters: 0 })), 'header.refcount_table_clusters', /no refcount table/);
});

test('decodeHeader() refuses encrypted images as unsupported', () => {
  assertUnsupported(() => decodeHeader(headerBytes({ cryptMethod: 1 })), 'header.crypt_method', /AES/);
  assertUnsupported(() => decodeHeader(headerBytes({ cryptMethod: 2 })), 'header.crypt_method', /LUKS/);
  assertCorrupt(() => decodeHeader(headerBytes({ cryptMethod: 3 })), 'header.crypt_method', /\b3\b/);
});

test('decodeHeader() ties compression_type to its feature bit', () => {
  assert.equal(decodeHeader(headerBytes({ incompatibleFeatures: 8n, compressionType: 1 })).compressionType, 1);
  assertCorrupt(() => decodeHeader(headerBytes({ incompatibleFeatures: 8n, compressionType: 0 })), 'header.compression_type', /feature bit is set/);
  assertCorrupt(() => decodeHeader(headerBytes({ incompatibleFeatures: 8n, headerLength: 104 })), 'header.compression_type');
  assertCorrupt(() => decodeHeader(headerBytes({ compressionType: 1 })), 'header.compression_type', /bit is clear/);
  assertUnsupported(() => decodeHeader(headerBytes({ incompatibleFeatures: 8n, compressionType: 2 })), 'header.compression_type', /\b2\b/);
});

test('decodeHeader() recognizes extended L2 entries and requires 16 KiB clusters for them', () => {
  const h = decodeHeader(headerBytes({ clusterBits: 14, incompatibleFeatures: 16n, size: 2 ** 20, l1Size: 1, l1TableOffset: 0xc000, refcountTableOffset: 0x4000 }));
  assert.equal(featuresOf(h).extendedL2, true);
  assertCorrupt(() => decodeHeader(headerBytes({ clusterBits: 13, incompatibleFeatures: 16n, size: 2 ** 20, l1Size: 1, l1TableOffset: 0x6000, refcountTableOffset: 0x2000 })), 'header.cluster_bits', /extended L2/);
});

test('decodeHeader() recognizes the external data file bits', () => {
  assert.equal(featuresOf(decodeHeader(headerBytes({ incompatibleFeatures: 4n, autoclearFeatures: 2n }))).rawExternalData, true);
  assertCorrupt(() => decodeHeader(headerBytes({ autoclearFeatures: 2n })), 'header.autoclear_features', /external data file bit/);
  assertCorrupt(() => decodeHeader(headerBytes({ incompatibleFeatures: 4n, autoclearFeatures: 2n, backingFileOffset: 0x200, backingFileSize: 4 })), 'header.autoclear_features', /backing file/);
});

test('decodeHeader() checks where the backing file name is stored', () => {
  assertCorrupt(() => decodeHeader(headerBytes({ backingFileOffset: 0x20, backingFileSize: 4 })), 'header.backing_file_offset', /inside/);
  assertCorrupt(() => decodeHeader(headerBytes({ backingFileOffset: 0x200, backingFileSize: 1024 })), 'header.backing_file_size', /1023/);
  assertCorrupt(() => decodeHeader(headerBytes({ backingFileOffset: 0xfff0, backingFileSize: 17 })), 'header.backing_file_offset', /first cluster/);
  decodeHeader(headerBytes({ backingFileOffset: 0xfff0, backingFileSize: 16 }));
  // without a backing file the size field is meaningless and not checked
  decodeHeader(headerBytes({ backingFileOffset: 0, backingFileSize: 5000 }));
});

test('decodeHeader() of a version 2 header does not read the bytes after its 72', () => {
  const bytes = headerBytes({ version: 3, incompatibleFeatures: 1n });
  bytes[7] = 2;
  assert.equal(decodeHeader(bytes).incompatibleFeatures, 0n);
});

test('encodeHeader() refuses headers that decodeHeader would reject', () => {
  const good = decodeHeader(headerBytes());
  assertInvalidArgument(() => encodeHeader({ ...good, clusterBits: 8 }), /cluster_bits/);
  assertInvalidArgument(() => encodeHeader({ ...good, version: 4 }), /version/);
  assertInvalidArgument(() => encodeHeader({ ...good, headerLength: 120 }), /trailing_bytes/);
  assertInvalidArgument(() => encodeHeader({ ...good, l1TableOffset: 0x30001 }), /l1_table_offset/);
  assertInvalidArgument(() => encodeHeader({ ...good, incompatibleFeatures: 1n << 63n }), /incompatible/);
  assertInvalidArgument(() => encodeHeader({ ...good, size: -1 }), /size/);
  assertInvalidArgument(() => encodeHeader({ ...good, size: 0.5 }), /size/);
  assertInvalidArgument(() => encodeHeader({ ...good, compatibleFeatures: 1n << 64n }), /compatibleFeatures/);
  assertInvalidArgument(() => encodeHeader({ ...good, cryptMethod: 2 }), /encrypted/);
  assertInvalidArgument(() => encodeHeader({ ...good, version: 2 }), /version 2/);
  assertInvalidArgument(() => encodeHeader({ ...good, headerLength: 104, trailingBytes: new Uint8Array(0), compressionType: 1, incompatibleFeatures: 8n }), /compression/);
});

test('the builder default header is valid', () => {
  const h = decodeHeader(headerBytes(), FILE);
  assert.equal(h.size, Number(DEFAULT_HEADER.size));
});
